"""Tests for lrsweep.spec, the study-file parser.

Valid files and their defaults, the conditional grid, canonical() and sha256, one
parametrised table of invalid files (each must give a one-line SpecError naming the file
and the key), load(), every shipped study file, and the module doctest.
"""

from __future__ import annotations

import doctest
import json
import math
import re
import warnings
from pathlib import Path

import pytest

from lrsweep import schedules
from lrsweep.report.status import reproduce_options
from lrsweep.search import spec
from lrsweep.search.spec import Choice, Fixed, Range, SpecError

SRC = "my-study.toml"  # distinctive, so a message that names the file is easy to spot
REPO_ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted((REPO_ROOT / "studies").glob("*.toml"))
BENCHMARK_STUDIES = sorted((REPO_ROOT / "results" / "benchmarks").glob("*.toml"))

BASE = {"study": {"name": "t"}, "train": {}, "space": {"scheduler": "constant"}}


def _value(v) -> str:
    """A Python value as a TOML literal (json's strings and numbers are valid TOML)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


def toml_text(study=None, train=None, space=None, extra: str = "") -> str:
    """A minimal valid study file with overrides merged in; an override of None drops the key."""
    parts = []
    for section, override in (("study", study), ("train", train), ("space", space)):
        table = {**BASE[section], **(override or {})}
        parts.append(f"[{section}]")
        parts += [f"{k} = {_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(parts) + "\n" + extra


def parse(**sections) -> spec.StudySpec:
    return spec.parse(toml_text(**sections), source=SRC)


# --- valid files ---------------------------------------------------------------------------

def test_defaults():
    s = parse()
    assert s.study == spec.StudySettings(name="t", metric="val_acc", trials=20, sampler="tpe",
                                         pruner="none")
    assert s.train == spec.TrainSettings(epochs=30, batch_size=256, validation=10_000,
                                         subset=0, unit="epoch")
    assert s.dimension("scheduler") == Fixed("constant")
    assert s.dimension("base_lr") == Fixed(0.1)
    assert s.dimension("seed") == Fixed(0)
    # constant takes no max_update, so none is invented for it
    assert s.dimension("max_update") is None
    assert s.direction == "maximize"
    assert s.source == SRC and s.text == toml_text()


def test_study_name_is_stripped():
    assert parse(study={"name": "  padded  "}).study.name == "padded"


@pytest.mark.parametrize("scheduler", ["cosine", "poly"])
def test_max_update_defaults_to_epochs(scheduler):
    s = parse(train={"epochs": 12}, space={"scheduler": scheduler})
    assert s.dimension("max_update") == Fixed(12)


def test_max_update_default_when_only_one_listed_scheduler_takes_it():
    s = parse(train={"epochs": 7}, space={"scheduler": ["constant", "cosine"]})
    assert s.dimension("max_update") == Fixed(7)


@pytest.mark.parametrize("train, horizon", [
    ({"epochs": 3}, 3 * math.ceil(50_000 / 256)),                      # 50k left after 10k held out
    ({"epochs": 3, "subset": 1000, "batch_size": 300}, 3 * 4),         # a partial last batch counts
    ({"epochs": 2, "validation": 0, "batch_size": 1000}, 2 * 60),
])
def test_max_update_default_counts_steps_when_unit_is_step(train, horizon):
    study = {"metric": "train_acc"} if train.get("validation") == 0 else {}
    s = parse(study=study, train={**train, "unit": "step"}, space={"scheduler": "cosine"})
    assert s.train.horizon == horizon
    assert s.dimension("max_update") == Fixed(horizon)


def test_explicit_max_update_is_kept():
    s = parse(space={"scheduler": "cosine", "max_update": 50})
    assert s.dimension("max_update") == Fixed(50)


def test_scalar_list_table_become_fixed_choice_range():
    s = parse(space={"scheduler": ["cosine", "poly"], "base_lr": {"low": 0.01, "high": 1.0,
                                                                  "log": True},
                     "final_lr": [0.0, 0.01], "exponent": 1.5,
                     "warmup_steps": {"low": 0, "high": 5}, "max_update": {"low": 10, "high": 30},
                     "seed": {"low": 0, "high": 9}})
    assert s.dimension("scheduler") == Choice(("cosine", "poly"))
    assert s.schedulers == ("cosine", "poly")
    assert s.dimension("base_lr") == Range(0.01, 1.0, log=True, integer=False)
    assert s.dimension("final_lr") == Choice((0.0, 0.01))
    assert s.dimension("exponent") == Fixed(1.5)
    # these three are counts, so optuna must be asked for ints, not floats
    assert s.dimension("warmup_steps") == Range(0, 5, log=False, integer=True)
    assert s.dimension("max_update") == Range(10, 30, log=False, integer=True)
    assert s.dimension("seed") == Range(0, 9, log=False, integer=True)


def test_range_log_defaults_to_false():
    assert parse(space={"base_lr": {"low": 0.1, "high": 0.5}}).dimension("base_lr").log is False


def test_milestones_flat_list_is_one_value():
    s = parse(space={"scheduler": "multistep", "milestones": [4, 6]})
    dim = s.dimension("milestones")
    assert isinstance(dim, Fixed)
    # study.py json-decodes milestones before building the schedule
    assert json.loads(dim.value) == [4, 6]


def test_milestones_list_of_lists_is_a_choice():
    s = parse(space={"scheduler": "multistep", "milestones": [[4, 6], [10]]})
    dim = s.dimension("milestones")
    assert isinstance(dim, Choice)
    assert [json.loads(v) for v in dim.values] == [[4, 6], [10]]


@pytest.mark.parametrize("metric, direction", [
    ("val_acc", "maximize"), ("train_acc", "maximize"),
    ("val_loss", "minimize"), ("train_loss", "minimize"),
])
def test_direction_follows_metric(metric, direction):
    assert parse(study={"metric": metric}).direction == direction


def test_train_metric_allows_no_validation():
    s = parse(study={"metric": "train_loss"}, train={"validation": 0})
    assert s.train.validation == 0 and s.train.train_images == 60_000


def test_keys_for_lists_only_what_the_scheduler_uses():
    s = parse(space={"scheduler": ["constant", "poly"], "exponent": [0.5, 1.0]})
    assert "exponent" not in s.keys_for("constant")
    assert "max_update" not in s.keys_for("constant")
    assert {"exponent", "max_update", "base_lr", "seed"} <= set(s.keys_for("poly"))


@pytest.mark.parametrize("path", STUDIES + BENCHMARK_STUDIES, ids=lambda p: p.name)
def test_shipped_study_file_parses(path):
    s = spec.load(path)
    assert s.study.name
    assert s.study.trials >= 1


def test_studies_are_shipped():
    # guards the parametrised test above against silently collecting nothing
    assert STUDIES, "no studies/*.toml found"


# --- the conditional grid ------------------------------------------------------------------

def grid_spec(**study) -> spec.StudySpec:
    return parse(study={"sampler": "grid", **study},
                 space={"scheduler": ["constant", "inverse_power", "poly"],
                        "exponent": [0.5, 1.0], "seed": [0, 1]})


def test_grid_skips_axes_a_scheduler_does_not_take():
    points = grid_spec().grid()
    assert len(points) == 2 * (1 + 2 + 2)  # per seed: constant once, the others per exponent
    assert all("exponent" not in p for p in points if p["scheduler"] == "constant")
    assert all("exponent" in p for p in points if p["scheduler"] != "constant")
    assert len({json.dumps(p, sort_keys=True) for p in points}) == len(points)


def test_grid_has_seed_outermost():
    # a study stopped half-way must have every configuration at seed 0
    points = grid_spec().grid()
    half = len(points) // 2
    assert {p["seed"] for p in points[:half]} == {0}
    assert {p["seed"] for p in points[half:]} == {1}
    strip = [{k: v for k, v in p.items() if k != "seed"} for p in points]
    assert strip[:half] == strip[half:]


def test_grid_trials_default_to_grid_size():
    assert grid_spec().study.trials == 10


def test_grid_trials_below_grid_size_allowed():
    assert grid_spec(trials=4).study.trials == 4


def test_grid_trials_above_grid_size_rejected():
    with pytest.raises(SpecError) as info:
        grid_spec(trials=11)
    msg = str(info.value)
    assert SRC in msg and "trials" in msg and "10" in msg and "\n" not in msg


def test_grid_with_fixed_scheduler_and_seed_is_one_point():
    s = parse(study={"sampler": "grid"}, space={"scheduler": "cosine"})
    assert s.grid() == [{}]
    assert s.study.trials == 1


def test_non_grid_sampler_keeps_default_trials():
    s = parse(space={"scheduler": ["constant", "sqrt"]})
    assert s.study.trials == 20


# --- canonical() and sha256 ----------------------------------------------------------------

LAYOUT_A = """
[study]
name = "c"
trials = 5
[train]
epochs = 10
[space]
scheduler = ["constant", "cosine"]
base_lr = { low = 0.01, high = 1.0, log = true }
seed = [0, 1]
"""

LAYOUT_B = """# the same study, laid out differently
[space]
seed   = [ 0, 1 ]            # repeats
base_lr = {high=1.0, log=true, low=0.01}
scheduler = [
    "constant",
    "cosine",
]

[train]
epochs=10

[study]
trials = 5
name = "c"
"""


def test_canonical_ignores_layout_comments_and_key_order():
    a, b = spec.parse(LAYOUT_A, source="a.toml"), spec.parse(LAYOUT_B, source="b.toml")
    assert a.canonical() == b.canonical()
    assert a.sha256 != b.sha256  # the file's text did change


def test_canonical_ignore_trials():
    a = spec.parse(LAYOUT_A)
    b = spec.parse(LAYOUT_A.replace("trials = 5", "trials = 9"))
    assert a.canonical() != b.canonical()
    assert a.canonical(ignore_trials=True) == b.canonical(ignore_trials=True)


def test_canonical_sees_a_changed_epochs():
    a = spec.parse(LAYOUT_A)
    b = spec.parse(LAYOUT_A.replace("epochs = 10", "epochs = 11"))
    assert a.canonical(ignore_trials=True) != b.canonical(ignore_trials=True)


def test_sha256_is_of_the_text():
    s = spec.parse(LAYOUT_A)
    assert s.sha256 == spec.parse(LAYOUT_A).sha256
    assert len(s.sha256) == 64


# --- invalid files -------------------------------------------------------------------------

def _log_range(low, high):
    return {"low": low, "high": high, "log": True}


# (id, toml_text overrides, fragments the message must contain besides the file's name)
ERRORS = [
    # unknown keys, with a suggestion for a near miss
    ("section-near-miss", dict(extra="[spaces]\nx = 1\n"), ["'spaces'", "did you mean 'space'"]),
    ("section-unknown", dict(extra="[optimizer]\nx = 1\n"), ["'optimizer'"]),
    ("study-near-miss", dict(study={"sampelr": "tpe"}), ["[study]", "'sampelr'",
                                                          "did you mean 'sampler'"]),
    ("train-near-miss", dict(train={"epoch": 5}), ["[train]", "'epoch'",
                                                    "did you mean 'epochs'"]),
    ("space-near-miss", dict(space={"scheduler": None, "shceduler": "constant"}),
     ["[space]", "'shceduler'", "did you mean 'scheduler'"]),
    ("space-unknown", dict(space={"momentum": 0.9}), ["[space]", "'momentum'"]),
    # schedulers
    ("scheduler-near-miss", dict(space={"scheduler": "cosin"}),
     ["scheduler", '"cosin"', 'did you mean "cosine"']),
    ("scheduler-unknown-in-list", dict(space={"scheduler": ["constant", "cyclic"]}),
     ["scheduler", '"cyclic"']),
    ("scheduler-not-string", dict(space={"scheduler": 3}), ["scheduler"]),
    ("scheduler-missing", dict(space={"scheduler": None}), ["scheduler", "required"]),
    ("scheduler-range", dict(space={"scheduler": {"low": 1, "high": 2}}), ["scheduler", "range"]),
    # base_lr
    ("base_lr-zero", dict(space={"base_lr": 0}), ["base_lr", "> 0"]),
    ("base_lr-negative", dict(space={"base_lr": -0.1}), ["base_lr", "> 0"]),
    ("base_lr-string", dict(space={"base_lr": "0.1"}), ["base_lr", 'got "0.1"']),
    ("base_lr-bool", dict(space={"base_lr": True}), ["base_lr", "got true"]),  # as TOML writes it
    ("exponent-string", dict(space={"scheduler": "poly", "exponent": "2"}),
     ["exponent", 'got "2"']),
    ("base_lr-zero-in-list", dict(space={"base_lr": [0.1, 0.0]}), ["base_lr", "> 0"]),
    ("base_lr-zero-range-low", dict(space={"base_lr": {"low": 0.0, "high": 1.0}}),
     ["base_lr", "low"]),
    # ranges
    ("range-inverted", dict(space={"base_lr": {"low": 1.0, "high": 0.1}}), ["base_lr", "below"]),
    ("range-empty", dict(space={"base_lr": {"low": 0.1, "high": 0.1}}), ["base_lr", "below"]),
    ("range-log-zero", dict(space={"scheduler": "cosine", "final_lr": _log_range(0.0, 0.1)}),
     ["final_lr", "log"]),
    ("range-log-int-zero", dict(space={"warmup_steps": _log_range(0, 3)}), ["warmup_steps", "log"]),
    ("range-unknown-field", dict(space={"base_lr": {"low": 0.1, "high": 1.0, "step": 0.1}}),
     ["base_lr", "'step'"]),
    ("range-no-high", dict(space={"base_lr": {"low": 0.1}}), ["base_lr", "high"]),
    ("range-log-not-bool", dict(space={"base_lr": {"low": 0.1, "high": 1.0, "log": 1}}),
     ["base_lr", "log"]),
    ("range-int-key-float", dict(space={"seed": {"low": 0.5, "high": 3}}), ["seed"]),
    ("range-milestones", dict(space={"scheduler": "multistep",
                                     "milestones": {"low": 1, "high": 5}}), ["milestones", "range"]),
    # lists
    ("list-empty", dict(space={"base_lr": []}), ["base_lr", "empty"]),
    ("list-repeat", dict(space={"base_lr": [0.1, 0.3, 0.1]}), ["base_lr", "repeats"]),
    ("list-repeat-seed", dict(space={"seed": [0, 1, 0]}), ["seed", "repeats"]),
    ("list-repeat-scheduler", dict(space={"scheduler": ["constant", "constant"]}),
     ["scheduler", "repeats"]),
    # milestones are a list already, so their choice is a list of lists; a repeat is as
    # useless there (duplicate grid points) as in any other list
    ("list-repeat-milestones", dict(space={"scheduler": "multistep",
                                           "milestones": [[4, 6], [10], [4, 6]]}),
     ["milestones", "repeats"]),
    ("list-repeat-milestones-reordered", dict(space={"scheduler": "multistep",
                                                     "milestones": [[4, 6], [6, 4]]}),
     ["milestones", "repeats"]),
    ("milestones-empty", dict(space={"scheduler": "multistep", "milestones": []}), ["milestones"]),
    ("milestones-negative", dict(space={"scheduler": "multistep", "milestones": [-1, 4]}),
     ["milestones"]),
    ("milestones-float", dict(space={"scheduler": "multistep", "milestones": [1.5]}),
     ["milestones"]),
    # warmup and horizon
    ("warmup-equals-epochs", dict(train={"epochs": 5}, space={"warmup_steps": 5}),
     ["warmup_steps", "5"]),
    ("warmup-choice-too-long", dict(train={"epochs": 5}, space={"warmup_steps": [0, 6]}),
     ["warmup_steps"]),
    ("warmup-range-too-long", dict(train={"epochs": 5},
                                   space={"warmup_steps": {"low": 0, "high": 5}}), ["warmup_steps"]),
    ("warmup-steps-unit", dict(train={"epochs": 1, "subset": 512, "unit": "step"},
                               space={"warmup_steps": 2}), ["warmup_steps", "steps"]),
    ("warmup-negative", dict(space={"warmup_steps": -1}), ["warmup_steps"]),
    ("max_update-equals-warmup", dict(space={"scheduler": "cosine", "max_update": 3,
                                             "warmup_steps": 3}), ["max_update", "warmup_steps"]),
    ("max_update-choice-below-warmup", dict(space={"scheduler": "cosine", "max_update": [2, 20],
                                                   "warmup_steps": 2}), ["max_update"]),
    ("max_update-zero", dict(space={"scheduler": "cosine", "max_update": 0}), ["max_update"]),
    ("warmup_begin_lr-negative", dict(space={"warmup_begin_lr": -0.1}), ["warmup_begin_lr"]),
    # conditional parameters
    ("param-no-scheduler-takes", dict(space={"scheduler": "cosine", "exponent": 1.0}),
     ["exponent", "cosine"]),
    ("param-none-in-list-takes", dict(space={"scheduler": ["constant", "sqrt"], "gamma": 0.5}),
     ["gamma"]),
    ("required-milestones", dict(space={"scheduler": "multistep"}), ["milestones", "multistep"]),
    ("required-factor", dict(space={"scheduler": "factor"}), ["factor", "required"]),
    ("required-exponent", dict(space={"scheduler": ["constant", "inverse_power"]}),
     ["exponent", "inverse_power"]),
    ("bad-gamma", dict(space={"scheduler": "multistep", "milestones": [2], "gamma": 0}),
     ["gamma"]),
    # [study]
    ("val_acc-without-validation", dict(train={"validation": 0}), ["metric", "validation"]),
    ("val_loss-without-validation", dict(study={"metric": "val_loss"}, train={"validation": 0}),
     ["metric", "validation"]),
    ("metric-unknown", dict(study={"metric": "test_acc"}), ["metric", '"test_acc"']),
    ("sampler-unknown", dict(study={"sampler": "bayes"}), ["sampler", '"bayes"']),
    ("pruner-unknown", dict(study={"pruner": "asha"}), ["pruner", '"asha"']),
    ("trials-zero", dict(study={"trials": 0}), ["trials"]),
    ("trials-float", dict(study={"trials": 2.5}), ["trials"]),
    ("trials-bool", dict(study={"trials": True}), ["trials"]),
    ("sampler_seed-negative", dict(study={"sampler_seed": -1}), ["sampler_seed"]),
    ("description-not-string", dict(study={"description": 5}), ["description"]),
    ("name-missing", dict(study={"name": None}), ["name"]),
    ("name-empty", dict(study={"name": ""}), ["name"]),
    ("name-blank", dict(study={"name": "   "}), ["name"]),
    ("name-not-string", dict(study={"name": 5}), ["name"]),
    # [train]
    ("unit-unknown", dict(train={"unit": "batch"}), ["unit", '"batch"']),
    ("epochs-zero", dict(train={"epochs": 0}), ["epochs"]),
    ("epochs-float", dict(train={"epochs": 2.5}), ["epochs"]),
    ("batch_size-zero", dict(train={"batch_size": 0}), ["batch_size"]),
    ("validation-negative", dict(train={"validation": -1}), ["validation"]),
    ("validation-all", dict(train={"validation": 60_000}), ["validation", "60000"]),
    ("validation-over", dict(train={"validation": 70_000}), ["validation"]),
    ("subset-negative", dict(train={"subset": -1}), ["subset"]),
    ("subset-too-large", dict(train={"subset": 50_001}), ["subset", "50000"]),
    ("test-subset-too-large", dict(train={"test_subset": 20_000}),
     ["[train] test_subset = 20000 exceeds the 10000 test images"]),
    ("subset-too-large-no-validation", dict(study={"metric": "train_acc"},
                                            train={"validation": 0, "subset": 60_001}),
     ["subset"]),
]


def assert_one_line_naming(exc: SpecError, *fragments: str) -> None:
    msg = str(exc)
    assert "\n" not in msg, msg
    assert SRC in msg, msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


@pytest.mark.parametrize("overrides, fragments", [e[1:] for e in ERRORS],
                         ids=[e[0] for e in ERRORS])
def test_invalid_file(overrides, fragments):
    with pytest.raises(SpecError) as info:
        parse(**overrides)
    assert_one_line_naming(info.value, *fragments)


@pytest.mark.parametrize("text, fragments", [
    ('[study]\nname = "x"\nepochs = \n', ["invalid TOML", "line 3"]),
    ('[study]\nname = "x\n', ["invalid TOML", "line 2"]),
    ('study = "x"\n[space]\nscheduler = "constant"\n', ["[study]", "table"]),
    ('[space]\nscheduler = "constant"\n', ["[study]", "name"]),          # no [study] at all
    ('[study]\nname = "x"\n', ["[space]", "scheduler"]),                  # no [space] at all
], ids=["bad-value", "unterminated-string", "section-not-table", "no-study", "no-space"])
def test_invalid_text(text, fragments):
    with pytest.raises(SpecError) as info:
        spec.parse(text, source=SRC)
    assert_one_line_naming(info.value, *fragments)


def test_spec_error_is_a_value_error():
    # callers that only know ValueError (e.g. the CLI's generic handler) still catch it
    assert issubclass(SpecError, ValueError)


def test_grid_sampler_rejects_a_range():
    # The grid sampler enumerates lists only; a range has no grid points, so
    # ConditionalGridSampler would fail at the first trial ("not on the grid point").
    # That belongs in the study file's validation, with a one-line SpecError.
    with pytest.raises(SpecError) as info:
        parse(study={"sampler": "grid"},
              space={"scheduler": "constant", "base_lr": {"low": 0.01, "high": 1.0}})
    assert_one_line_naming(info.value, "base_lr", "range")


# --- load() --------------------------------------------------------------------------------

def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(SpecError) as info:
        spec.load(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg


def test_load_sets_source_and_text(tmp_path):
    path = tmp_path / "s.toml"
    text = toml_text(space={"scheduler": ["constant", "cosine"]})
    path.write_text(text, encoding="utf-8")
    s = spec.load(path)
    assert s.source == str(path)
    assert s.text == text
    assert s.canonical() == spec.parse(text).canonical()


def test_a_search_with_nothing_to_search_is_warned_of(tmp_path):
    # Its trials would all be one configuration and seed: the same numbers trained again.
    path = tmp_path / "s.toml"
    fixed = '[study]\nname = "s"\nsampler = "random"\n[space]\nscheduler = "constant"\n'
    path.write_text(fixed + 'base_lr = 0.1\nseed = [3]\n')
    with pytest.warns(UserWarning, match=r"s.toml: \[space\] fixes every value, so the 20 "
                                         "trials sampler 'random' asks are one configuration"):
        spec.load(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for varied in ('base_lr = [0.1, 0.3]\n', 'base_lr = { low = 0.1, high = 0.3 }\n',
                       'base_lr = 0.1\nseed = [0, 1]\n'):
            path.write_text(fixed + varied)
            spec.load(path)
        path.write_text(fixed + 'base_lr = 0.1\n')
        spec.load(path, ["study.trials=1"])  # one trial asked: nothing repeated
        path.write_text(fixed.replace("random", "grid") + 'base_lr = 0.1\n')
        assert spec.load(path).study.trials == 1
    assert [str(w.message) for w in caught] == []


def test_load_errors_name_the_path(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(toml_text(train={"epoch": 5}), encoding="utf-8")
    with pytest.raises(SpecError) as info:
        spec.load(path)
    assert str(path) in str(info.value) and "epochs" in str(info.value)


def test_load_undecodable_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[study]\nname = "caf\xe9"\n')
    with pytest.raises(SpecError) as info:
        spec.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# --- registry coupling and the doctest -----------------------------------------------------

def test_every_schedule_parameter_is_a_space_key():
    # a parameter added to the registry must become a valid [space] key without editing spec
    for name in schedules.names():
        assert set(schedules.parameters(name)) <= set(spec.SCHEDULE_KEYS) | set(spec.GENERIC_KEYS)


def test_module_doctest():
    result = doctest.testmod(spec)
    assert result.attempted > 0
    assert result.failed == 0


# --- --set overrides -----------------------------------------------------------------------

def test_overrides_replace_and_add_keys_as_toml_values():
    s = spec.parse(toml_text(), source=SRC, overrides=(
        "train.epochs=7", "study.name=small-run", "space.seed=[0, 1]", "train.unit=step",
        "space.base_lr = 0.5"))
    assert s.train.epochs == 7 and s.train.unit == "step"
    assert s.study.name == "small-run"  # a bare word is a string
    assert s.dimension("seed") == Choice((0, 1))
    assert s.dimension("base_lr") == Fixed(0.5)
    assert s.overrides[0] == "train.epochs=7"
    assert reproduce_options(s.overrides, 1, 1).startswith(
        " --set train.epochs=7 --set study.name=small-run --set 'space.seed=[0, 1]'")


def test_overrides_change_the_canonical_form_and_keep_the_text():
    plain = parse()
    changed = spec.parse(toml_text(), source=SRC, overrides=("train.epochs=3",))
    assert changed.text == plain.text
    assert changed.canonical() != plain.canonical()


def test_override_is_validated_like_the_file():
    with pytest.raises(SpecError, match=r"my-study.toml: --set train.epochs=0: \[train\] epochs: must be a whole"):
        spec.parse(toml_text(), source=SRC, overrides=("train.epochs=0",))
    # An unknown key is blamed on the --set that named it, not on the whole chain of them.
    with pytest.raises(SpecError, match=re.escape(
            f"{SRC}: --set train.subst=10: [train] unknown key 'subst'; did you mean 'subset'")):
        spec.parse(toml_text(), source=SRC, overrides=("train.epochs=3", "train.subst=10"))
    with pytest.raises(SpecError, match=re.escape(
            f"{SRC}: --set train.epochs.x=1: [train] unknown key 'epochs.x'")):
        spec.parse(toml_text(), source=SRC, overrides=("train.epochs=3", "train.epochs.x=1"))


@pytest.mark.parametrize("override, fragment", [
    ("trainepochs=3", "--set trainepochs=3: expected section.key=value"),
    ("train.epochs", "--set train.epochs: expected section.key=value"),
    ("tran.epochs=3", "unknown section 'tran'; did you mean 'train'?"),
    ("=3", "expected section.key=value"),
    # values of the wrong kind or size
    ('study.metric=["val_acc"]', "[study] metric: one of val_acc, val_loss, train_acc, "
                                 'train_loss, not a list (["val_acc"])'),
    ('train.model=["lenet","resnet18"]', "[train] model: one of lenet, resnet18, not a list "
     '(["lenet", "resnet18"]); several models are a choice in [space]: model = [...]'),
    ('study.name=["a","b"]', '[study] name: a non-empty string is required, got ["a", "b"]'),
    ("study.metric=[val_acc,val_loss]", "not a TOML value (invalid value); a list, table or "
     "quoted string is written whole, its strings quoted"),
    ("study.metric={ a = 1 }", "[study] metric: {a = 1} is not one of val_acc"),
    ("space.seed=9223372036854775807", "[space] seed: a seed is at most 4294967295"),
    ("space.seed=[0, 4294967296]", "a seed is at most 4294967295 (2**32 - 1), got 4294967296"),
    ("train.epochs=99999999999999999999999", "[train] epochs: at most 100,000, got 9999"),
    ("space.warmup_begin_lr=-1", "[space] warmup_begin_lr: must be a number ≥ 0, got -1"),
    ("space.base_lr=0", "[space] base_lr: must be a number > 0, got 0"),
    # TOML that does not parse is said to be so, not read as the word it spells
    ("space.seed=[0,1", "--set space.seed=[0,1: not a TOML value (unclosed array)"),
    ("study.name='it", "--set study.name='it: not a TOML value (expected \"'\")"),
    ('space.milestones={a=1', "not a TOML value (unclosed inline table)"),
])
def test_a_bad_override_is_one_line_naming_the_file(override, fragment):
    with pytest.raises(SpecError) as info:
        spec.parse(toml_text(), source=SRC, overrides=(override,))
    assert fragment in str(info.value) and str(info.value).startswith(SRC)


def test_the_largest_seed_is_accepted():
    parsed = spec.parse(toml_text(), source=SRC, overrides=("space.seed=4294967295",))
    assert parsed.dimension("seed").value == 4294967295


def test_from_stored_applies_the_stored_overrides():
    attrs = {"study_file": toml_text(), "study_overrides": ["train.epochs=4"]}
    assert spec.from_stored(attrs, source="stored").train.epochs == 4
    assert spec.from_stored({}, source="stored") is None


# --- [[run]] tables ------------------------------------------------------------------------

RUNS = '''
[study]
name = "r"
[train]
epochs = 10
[space]
seed = [0, 1]
final_lr = 0.01
[[run]]
label = "a"
scheduler = "constant"
base_lr = 0.3
book = { test_acc = [0.88, 0.89], train_loss = 0.15 }
[[run]]
label = "b"
scheduler = "cosine"
base_lr = 0.3
lag = 1
[[run]]
label = "c"
scheduler = "cosine"
base_lr = 0.5
warmup_steps = 2
max_update = 8
'''


def test_runs_are_completed_and_crossed_with_the_seeds():
    s = spec.parse(RUNS, source=SRC)
    assert s.study.sampler == "grid" and s.study.trials == 6
    a, b, c = s.runs
    assert dict(a.values) == {"scheduler": "constant", "base_lr": 0.3, "warmup_steps": 0,
                              "warmup_begin_lr": 0.0, "lag": 0, "optimizer": "sgd"}
    assert dict(a.book) == {"test_acc": (0.88, 0.89), "train_loss": (0.15,)}
    # shared [space] values and the trial length fill what a run leaves out
    assert dict(b.values)["final_lr"] == 0.01 and dict(b.values)["max_update"] == 10
    assert dict(c.values)["max_update"] == 8
    assert s.dimension("run") == Choice(("a", "b", "c"))
    assert s.dimension("base_lr") == Choice((0.3, 0.5))
    assert s.dimension("final_lr") == Fixed(0.01)
    grid = s.grid()
    assert [(p["seed"], p["run"]) for p in grid] == [(0, "a"), (0, "b"), (0, "c"),
                                                      (1, "a"), (1, "b"), (1, "c")]
    assert grid[1] == {"seed": 0, "run": "b", "scheduler": "cosine", "base_lr": 0.3,
                       "warmup_steps": 0, "lag": 1, "max_update": 10}
    assert "max_update" not in grid[0]  # the constant run does not take it


def test_runs_change_the_canonical_form():
    s = spec.parse(RUNS, source=SRC)
    assert spec.parse(RUNS.replace("lag = 1", "lag = 0"), source=SRC).canonical() != s.canonical()
    assert spec.parse(RUNS + "\n# a comment\n", source=SRC).canonical() == s.canonical()


@pytest.mark.parametrize("old, new, fragment", [
    ('label = "b"', 'label = "a"', "[[run]] 'a': two runs have this label"),
    ('label = "b"\n', "", "[[run]] #2 label: a non-empty string is required"),
    ('label = "b"', 'label = "b\\nc"', "[[run]] #2 label: holds U+000A (a control character)"),
    ('label = "b"', 'label = "b\\u200bc"', "label: holds U+200B (zero width space)"),
    ('label = "b"', f'label = "{"b" * 257}"', "label: 257 characters; at most 256"),
    ('lag = 1', 'lag = 1\nexponent = 2.0', '[[run]] \'b\' exponent: scheduler "cosine" does not take it'),
    ('lag = 1', 'lag = 1\nseed = 3', "[[run]] 'b' seed: seeds are shared by every run"),
    ('lag = 1', 'lag = 1\nbase_rl = 3', "unknown key 'base_rl'; did you mean 'base_lr'?"),
    ('lag = 1', 'lag = 10', "[[run]] 'b' lag: 10 must be below the trial's 10 epochs"),
    ('epochs = 10', 'epochs = 1', "[[run]] 'b' lag: 1 must be below the trial's 1 epoch"),
    ('base_lr = 0.5', 'base_lr = [0.5, 0.6]', "[[run]] 'c' base_lr: one value here"),
    ('base_lr = 0.5', 'base_lr = -1', "[[run]] 'c' base_lr: must be a number > 0"),
    ('scheduler = "constant"', 'scheduler = "constnt"', 'did you mean "constant"?'),
    ('scheduler = "constant"', 'scheduler = "multistep"', "milestones: required by scheduler"),
    ('test_acc = [0.88, 0.89]', 'test_ac = 0.9', "book: unknown metric 'test_ac'"),
    ('test_acc = [0.88, 0.89]', 'test_acc = "high"', "book test_acc: a number or a list"),
    ('test_acc = [0.88, 0.89]', 'test_acc = [0.88, 89.0]', "book test_acc: 89.0 is not between 0 and 1"),
    ('train_loss = 0.15', 'train_loss = -0.15', "book train_loss: -0.15 is not at least 0"),
    ('seed = [0, 1]', 'seed = { low = 0, high = 3 }', "[space] seed: with [[run]] tables"),
    ('final_lr = 0.01', 'final_lr = [0.01, 0.1]', "[space] final_lr: one value here"),
    ('name = "r"', 'name = "r"\nsampler = "tpe"', "need sampler = \"grid\""),
])
def test_invalid_runs(old, new, fragment):
    assert old in RUNS
    with pytest.raises(SpecError) as info:
        spec.parse(RUNS.replace(old, new, 1), source=SRC)
    message = str(info.value)
    assert fragment in message and message.startswith(SRC) and "\n" not in message


def test_chapter_study_lists_the_chapters_five_runs_with_the_books_numbers():
    s = spec.load(Path(__file__).resolve().parents[1] / "studies" / "chapter.toml")
    assert s.train.validation == 0 and s.train.subset == 0 and s.train.epochs == 30
    printed = {r.label: dict(r.book) for r in s.runs if r.book}
    assert len(printed) == 5
    assert printed["constant 0.3"]["test_acc"] == (0.877, 0.889)
    multistep = next(r for r in s.runs if r.label.startswith("multistep 0.5, as printed"))
    assert dict(multistep.values)["base_lr"] == 0.125  # the rate it really trained at


def test_optimizer_is_a_space_key_and_sgld_settings_live_in_train():
    s = parse(train={"epochs": 5, "burn_in": 2, "thin": 2, "prior_precision": 0.5},
              space={"optimizer": ["sgd", "sgld"]})
    assert s.dimension("optimizer") == Choice(("sgd", "sgld"))
    assert (s.train.burn_in, s.train.thin, s.train.prior_precision) == (2, 2, 0.5)
    assert "optimizer" in s.keys_for("constant")


@pytest.mark.parametrize("train, space, fragment", [
    ({}, {"optimizer": "adam"}, '[space] optimizer: "adam" is not one of sgd, sgld'),
    ({}, {"optimizer": {"low": 0, "high": 1}}, "[space] optimizer: a range makes no sense"),
    ({"epochs": 3, "burn_in": 3}, {}, "[train] burn_in = 3 leaves no epoch to sample in 3"),
    ({"thin": 0}, {}, "[train] thin: must be a whole number ≥ 1"),
    ({"prior_precision": -1}, {}, "[train] prior_precision: must be a number ≥ 0"),
])
def test_invalid_optimizer_settings(train, space, fragment):
    with pytest.raises(SpecError) as info:
        parse(train=train, space=space)
    assert fragment in str(info.value) and str(info.value).startswith(SRC)


def test_model_and_dataset_settings():
    s = parse(train={"model": "resnet18", "dataset": "imagefolder:/data/imagenet",
                     "image_size": 64})
    assert s.train.folder == "/data/imagenet" and s.train.model == "resnet18"
    assert parse().train.folder is None and parse().train.dataset == "fashion-mnist"


def test_model_as_a_space_dimension():
    s = parse(space={"model": ["lenet", "resnet18"], "scheduler": ["cosine", "constant"]},
              study={"sampler": "grid"})
    assert s.models == ("lenet", "resnet18")
    assert s.dimension("model") == Choice(("lenet", "resnet18"))
    assert len(s.grid()) == 4
    assert parse().models == ("lenet",)  # [train] model when the space has none
    assert parse(train={"model": "resnet18"}).models == ("resnet18",)
    assert parse(space={"model": "resnet18"}).models == ("resnet18",)


def test_a_run_table_may_name_its_model_and_others_keep_the_default():
    text = toml_text(study={"sampler": "grid"}, space={"scheduler": None}) + (
        '[[run]]\nlabel = "small"\nscheduler = "constant"\n'
        '[[run]]\nlabel = "large"\nscheduler = "constant"\nmodel = "resnet18"\n')
    s = spec.parse(text, source=SRC)
    values = {run.label: dict(run.values) for run in s.runs}
    assert values["large"]["model"] == "resnet18" and values["small"]["model"] == "lenet"
    assert s.models == ("lenet", "resnet18")
    assert "model" not in dict(parse().space)  # studies that never name one store no model


@pytest.mark.parametrize("train, space, fragment", [
    ({"model": "vgg"}, {}, '[train] model: "vgg" is not one of lenet, resnet18'),
    ({}, {"model": ["lenet", "vgg"]}, '[space] model: "vgg" is not one of lenet, resnet18'),
    ({}, {"model": {"low": 1, "high": 2}}, "[space] model: a range makes no sense here"),
    ({"model": "lenet"}, {"model": ["lenet", "resnet18"]},
     "[space] model: the model is also set in [train]"),
    ({}, {"model": ["lenet", "resnet18"], "optimizer": "sgld"},
     'SGLD trials train the packed LeNet only, not model = "resnet18"'),
    ({"test_subset": -1}, {}, "[train] test_subset: must be a whole number ≥ 0"),
    ({"dataset": "imagenet"}, {}, '[train] dataset: "imagenet" is neither'),
    ({"dataset": "imagefolder:"}, {}, '[train] dataset: "imagefolder:" is neither'),
    ({"image_size": 4}, {}, "[train] image_size: must be a whole number ≥ 8"),
    ({"dataset": "imagefolder:/x", "unit": "step"}, {}, "needs subset"),
    ({"model": "resnet18"}, {"optimizer": ["sgd", "sgld"]}, "SGLD trials train the packed"),
    ({"model": "resnet18"}, {"optimizer": ["sgd", "sgld_without_noise"]},
     "SGLD and sgld_without_noise trials train the packed LeNet only"),
])
def test_invalid_model_settings(train, space, fragment):
    with pytest.raises(SpecError) as info:
        parse(train=train, space=space)
    assert fragment in str(info.value) and str(info.value).startswith(SRC)
