"""Issue #19, input validation: input that passed validation and then crashed the run (a
sampler seed past numpy's range, names no store or file system takes, rates that overflow),
a metric changed under --allow-changed, the metric's name never given to Optuna, BOM-prefixed
files, `--set` errors blaming the file and no way to remove a key, an empty IDX file."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from conftest import REPO, study_toml, write_idx
from lrsweep import names
from lrsweep.search import spec
from lrsweep.search.provenance import create_or_load, load_stored_spec
from lrsweep.search.sampling import make_sampler
from lrsweep.search.space import distributions, suggest, trial_config
from lrsweep.search.spec import SpecError
from lrsweep.store.storage import open_storage
from lrsweep.train import data

SRC = "edge.toml"
FLOAT32_MAX = 3.4028234663852886e38


def parse(text: str = "", *overrides: str, **kwargs) -> spec.StudySpec:
    return spec.parse(text or study_toml("edge"), source=SRC, overrides=overrides, **kwargs)


# --- 1. the sampler's seed ----------------------------------------------------------------

def test_a_sampler_seed_whose_later_seeds_leave_numpys_range_is_refused():
    with pytest.raises(SpecError, match=r"\[study\] sampler_seed: at most 2147483647"):
        parse("", "study.sampler_seed=4294967295")


@pytest.mark.parametrize("sampler", ["random", "tpe", "gp", "cmaes"])
def test_the_largest_sampler_seed_still_seeds_after_two_billion_trials(sampler):
    s = parse(study_toml("edge", sampler=sampler, trials=8), "study.sampler_seed=2147483647")
    made, study = make_sampler(s), optuna.create_study()
    rate = FloatDistribution(0.01, 1.0, log=True)
    for number in (0, 7, 2**31):  # a trial's draws are seeded by sampler_seed and its number
        trial = FrozenTrial(number=number, state=TrialState.RUNNING, value=None,
                            datetime_start=None, datetime_complete=None, params={},
                            distributions={}, user_attrs={}, system_attrs={},
                            intermediate_values={}, trial_id=number)
        assert 0.01 <= made.sample_independent(study, trial, "base_lr", rate) <= 1.0


def test_a_stored_study_past_the_seed_bound_is_read_but_not_run():
    attrs = {"study_file": study_toml("old", sampler="random", trials=8),
             "study_overrides": ["study.sampler_seed=4294967295"]}
    assert spec.from_stored(attrs, source="stored").study.sampler_seed == 4294967295
    with pytest.raises(SpecError, match="sampler_seed: at most"):
        spec.from_stored(attrs, source="stored", to_run=True)


# --- 2. study names -----------------------------------------------------------------------

@pytest.mark.parametrize("name, message", [
    ("n" * 129, "129 characters; at most 128"),
    ("a\\u0000b", "U+0000"),          # PostgreSQL refuses a NUL in text
    ("a\\tb", "U+0009"),
    ("a\\u202eb", "U+202E"),          # a right-to-left override: looks like another name
])
def test_names_no_store_or_terminal_takes_are_refused_in_one_line(name, message):
    with pytest.raises(SpecError) as info:
        parse(study_toml("x").replace('name = "x"', f'name = "{name}"'))
    text = str(info.value)
    assert "[study] name:" in text and message in text and "\n" not in text


def test_the_longest_name_is_accepted():
    assert parse("", "study.name=" + "n" * 128).study.name == "n" * 128


@pytest.mark.parametrize("name", ["../../escape", "..", ".", "/etc/passwd", "a/b", "-rf",
                                  "n" * 300, "é" * 200, "a\x00b", "name with spaces", ".hidden"])
def test_any_name_becomes_one_safe_folder_name(name):
    folder = names.folder_name(name)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", folder), folder
    assert len(folder.encode()) <= 100
    assert (Path("results") / folder).parent == Path("results")


def test_safe_names_keep_their_folder_and_unsafe_ones_never_share_one():
    assert names.folder_name("ex1-fixed-lr") == "ex1-fixed-lr"
    assert names.folder_name("quickstart.v2") == "quickstart.v2"
    assert names.folder_name("a b") != names.folder_name("a_b") == "a_b"
    assert names.folder_name("a/b") != names.folder_name("a b")


def synthetic_study(url: str, name: str) -> None:
    """A stored lrsweep study of two trials (a name from before names were checked)."""
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.set_user_attr("study_file", study_toml(name, sampler="random", trials=2))
    study.set_user_attr("study_overrides", [])
    for seed, value in enumerate([0.7, 0.8]):
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=value, params={"scheduler": "constant"},
            distributions={"scheduler": CategoricalDistribution(["constant", "cosine"])},
            user_attrs={"lr": [0.1, 0.1], "train_loss": [2.0, 1.0], "train_acc": [0.5, 0.7],
                        "val_loss": [1.5, 1.2], "val_acc": [value / 2, value],
                        "test_acc": [value / 2, value], "epoch_seconds": [1.0, 1.0],
                        "seed": seed, "diverged": None, "pack_size": 1, "device": "cpu"},
            intermediate_values={0: value / 2, 1: value}))


@pytest.mark.parametrize("name", ["../../escape", "n" * 300])
def test_report_writes_inside_results_whatever_the_stored_name(tmp_path, monkeypatch, name):
    from lrsweep.report import render
    url = f"sqlite:///{tmp_path / 's.db'}"
    synthetic_study(url, name)
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    written = render.write_report(name, url)
    assert written.markdown.resolve().parent.parent == work / "results"
    assert written.markdown.is_file()
    assert not (tmp_path / "a" / "escape").exists() and not (tmp_path / "escape").exists()


# --- 3. rates that overflow ----------------------------------------------------------------

def largest_rate(s: spec.StudySpec, params: dict) -> float:
    schedule = trial_config(s, params).schedule
    return max(schedule(t) for t in range(s.train.horizon))


@pytest.mark.parametrize("key, extra, params", [
    ("factor", "factor = {}", {"scheduler": "factor"}),
    ("gamma", "milestones = [0, 1]\ngamma = {}", {"scheduler": "multistep"}),
])
def test_growth_is_bounded_where_the_rate_leaves_float32(key, extra, params):
    text = study_toml("edge", scheduler=f'"{params["scheduler"]}"', extra=extra.format("1e300"),
                      epochs=3)
    with pytest.raises(SpecError) as info:
        parse(text)
    message = str(info.value)
    assert f"[space] {key}: 1e+300" in message
    limit = float(re.search(rf"{key} must be at most (\S+)$", message).group(1))
    # The bound it states follows the math: just inside it every rate is finite and fits.
    inside = parse(study_toml("edge", scheduler=f'"{params["scheduler"]}"',
                              extra=extra.format(repr(limit)), epochs=3))
    assert math.isfinite(largest_rate(inside, params))
    assert largest_rate(inside, params) <= FLOAT32_MAX
    with pytest.raises(SpecError):
        parse(study_toml("edge", scheduler=f'"{params["scheduler"]}"',
                         extra=extra.format(repr(limit * 1.01)), epochs=3))


@pytest.mark.parametrize("override", ["space.base_lr=1e39", "space.base_lr=[0.1, 1e300]"])
def test_a_rate_float32_cannot_hold_is_refused(override):
    with pytest.raises(SpecError, match=r"\[space\] base_lr: a rate is at most 1e\+38"):
        parse("", override)


def test_a_run_table_is_bounded_like_the_space():
    text = """
[study]
name = "r"
[train]
epochs = 3
[space]
seed = 0
[[run]]
label = "grows"
scheduler = "factor"
factor = 1e300
"""
    with pytest.raises(SpecError, match=r"\[\[run\]\] 'grows' factor: 1e\+300 makes the rate"):
        parse(text)


# --- 4, 5. the metric is the study's, and Optuna knows its name ----------------------------

def test_allow_changed_cannot_change_the_metric(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    rdb = open_storage(url)
    create_or_load(parse(study_toml("m", trials=2)), rdb, url, False)
    losses = parse(study_toml("m", trials=2), "study.metric=val_loss")
    with pytest.raises(SpecError, match=r"optimizes val_acc \(maximize\), not val_loss "
                                        r"\(minimize\).*even with --allow-changed.*new \[study\] "
                                        "name"):
        create_or_load(losses, rdb, url, True)
    study = optuna.load_study(study_name="m", storage=url)
    assert "val_loss" not in study.user_attrs["study_file"]
    assert study.user_attrs["study_overrides"] == []
    # Other changes still go through with --allow-changed.
    create_or_load(parse(study_toml("m", trials=2), "train.epochs=3"), rdb, url, True)


LOG_RATES = "{ low = 0.01, high = 1.0, log = true }"


def study_with_a_trial(tmp_path, text, finished=True):
    """A study made from `text`, with one trial drawn as lrsweep draws them."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    rdb = open_storage(url)
    study = create_or_load(parse(text), rdb, url, False)
    trial = study.ask()
    suggest(parse(text), trial)
    if finished:
        study.tell(trial, 0.5)
    return url, rdb, study


@pytest.mark.parametrize("old, new, refused", [
    ({"seed": "[0, 1]"}, {"seed": "[0, 1, 2]"},
     r"its trials drew \[space\] seed from the choices \[0, 1\], this file from the choices "
     r"\[0, 1, 2\]; a study keeps .*even with --allow-changed: give this file a new \[study\]"),
    ({"base_lr": LOG_RATES}, {"base_lr": LOG_RATES.replace("true", "false")},
     r"\[space\] base_lr from numbers in \[0.01, 1.0\] on a log scale, this file from numbers "
     r"in \[0.01, 1.0\];"),
    ({"base_lr": LOG_RATES}, {"base_lr": "[0.1, 0.5]"},
     r"on a log scale, this file from the choices \[0.1, 0.5\]"),
    ({"base_lr": LOG_RATES}, {"base_lr": LOG_RATES.replace("0.01", "0.05")}, None),
    ({"seed": "[0, 1]"}, {"seed": "1"}, None),  # a fixed value is not drawn
], ids=["a-seed-added", "log-scale-dropped", "range-to-list", "range-narrowed", "list-to-value"])
def test_allow_changed_refuses_what_optuna_would_refuse_before_storing_the_file(
        tmp_path, old, new, refused):
    # The oracle is Optuna itself: what is refused fails its first suggestion, what is allowed
    # draws. Refused at the first suggestion, the new file had been stored and a trial left
    # running: the study could not be continued by either file.
    text = study_toml("c", sampler="random", trials=3, **old)
    url, rdb, _ = study_with_a_trial(tmp_path, text)
    changed = parse(study_toml("c", sampler="random", trials=3, **new))
    if refused:
        with pytest.raises(SpecError, match=refused):
            create_or_load(changed, rdb, url, True)
        study = optuna.load_study(study_name="c", storage=url)
        assert study.user_attrs["study_file"] == text
        assert "study_file_previous" not in study.user_attrs
        with pytest.raises(ValueError, match="Cannot set different|dynamic value space"):
            suggest(changed, study.ask())
    else:
        study = create_or_load(changed, rdb, url, True)
        assert suggest(changed, study.ask())
        assert study.user_attrs["study_file_previous"] == text


@pytest.mark.parametrize("scheduler, seed, extra, drawn", [
    ('["constant", "cosine"]', "[0, 1]", "", {"scheduler", "base_lr", "seed"}),
    ('"cosine"', "{ low = 1, high = 100, log = true }", "warmup_steps = { low = 0, high = 1 }",
     {"base_lr", "seed", "warmup_steps"}),  # whole numbers, one on a log scale
])
def test_the_distributions_checked_are_those_a_trial_draws(scheduler, seed, extra, drawn):
    s = parse(study_toml("d", sampler="random", scheduler=scheduler, base_lr=LOG_RATES,
                         seed=seed, extra=extra))
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(0)).ask()
    suggest(s, trial)
    assert set(trial.distributions) == drawn
    assert trial.distributions == {k: distributions(s)[k] for k in drawn}


def test_allow_changed_refuses_trials_begun_under_the_stored_file_until_they_finish(tmp_path):
    # Continued under new settings, an interrupted trial was stored as if trained under them
    # from its first epoch (its curves said otherwise).
    text = study_toml("u", sampler="random", trials=3)
    url, rdb, study = study_with_a_trial(tmp_path, text, finished=False)
    changed = parse(study_toml("u", sampler="random", trials=3, epochs=3))
    with pytest.raises(SpecError, match=r"trial #0 began under its stored file and not "
                                        r"finished, running in a worker or interrupted \(.*\): "
                                        r".*\(`lrsweep resume u` on the same store\), or give "
                                        r"this file"):
        create_or_load(changed, rdb, url, True)
    assert optuna.load_study(study_name="u", storage=url).user_attrs["study_file"] == text
    study.tell(0, 0.5)  # finished: the change goes through
    create_or_load(changed, rdb, url, True)
    assert optuna.load_study(study_name="u", storage=url).user_attrs["study_file"] != text


def test_a_new_study_names_its_metric_for_optuna(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = create_or_load(parse(study_toml("m"), "study.metric=val_loss"), open_storage(url),
                           url, False)
    assert optuna.load_study(study_name="m", storage=url).metric_names == ["val_loss"]
    assert study.metric_names == ["val_loss"]


def test_a_stored_study_without_the_name_gets_it_from_the_next_writer(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    synthetic_study(url, "old")
    assert optuna.load_study(study_name="old", storage=url).metric_names is None
    stored = load_stored_spec("old", url)
    create_or_load(stored, open_storage(url), url, False)
    assert optuna.load_study(study_name="old", storage=url).metric_names == ["val_acc"]


# --- 6. a byte-order mark ------------------------------------------------------------------

def test_a_bom_prefixed_file_is_the_same_study(tmp_path):
    text = study_toml("bom")
    plain, marked = tmp_path / "plain.toml", tmp_path / "marked.toml"
    plain.write_text(text, encoding="utf-8")
    marked.write_bytes(b"\xef\xbb\xbf" + text.encode())
    a, b = spec.load(plain), spec.load(marked)
    assert b.text == a.text and not b.text.startswith("\ufeff")
    assert b.sha256 == a.sha256 and b.canonical() == a.canonical()
    assert spec.parse("\ufeff" + text).sha256 == a.sha256  # stored text, or a string


# --- 7. --set: its errors, and removing a key ----------------------------------------------

def test_an_override_error_names_the_override():
    with pytest.raises(SpecError) as info:
        parse("", "study.name=ok", "train.epochs=0")
    assert str(info.value) == (f"{SRC}: --set train.epochs=0: [train] epochs: must be a whole "
                               "number ≥ 1, got 0")


def test_an_error_the_overrides_cause_together_names_them():
    with pytest.raises(SpecError, match=re.escape(f"{SRC} with --set train.validation=0: "
                                                  '[study] metric = "val_acc" needs')):
        parse("", "train.validation=0")


def test_a_file_error_is_still_the_files():
    broken = study_toml("x").replace("epochs = 2", "epochs = 0")
    with pytest.raises(SpecError, match=rf"^{SRC}: \[train\] epochs"):
        parse(broken, "study.trials=1")


def test_the_quickstart_narrows_to_one_schedule():
    path = REPO / "studies" / "quickstart.toml"
    with pytest.raises(SpecError) as info:
        spec.load(path, ["space.scheduler=cosine"])
    message = str(info.value)  # every key to remove at once, as flags to paste
    assert message.endswith("(on the command line: --set space.factor= --set space.milestones= "
                            "--set space.gamma=)")
    narrowed = spec.load(path, ["space.scheduler=cosine", "space.factor=", "space.milestones=",
                                "space.gamma="])
    assert narrowed.schedulers == ("cosine",) and narrowed.study.trials == 2
    assert narrowed.dimension("factor") is None
    # The removals are stored with the study and read back the same.
    attrs = {"study_file": narrowed.text, "study_overrides": list(narrowed.overrides)}
    assert spec.from_stored(attrs, source="s").canonical() == narrowed.canonical()


def test_removing_a_key_that_is_not_there_is_an_error():
    with pytest.raises(SpecError, match=r"--set space.bas_lr=: \[space\] has no key 'bas_lr' "
                                        "to remove; did you mean 'base_lr'"):
        parse("", "space.bas_lr=")


def test_an_empty_string_is_still_written_as_toml():
    assert parse("", 'study.description=""').study.description == ""


# --- 8. an IDX file with no images ---------------------------------------------------------

def test_an_idx_file_of_zero_images_is_a_data_error(tmp_path):
    for part, n in (("train", 0), ("t10k", 20)):
        write_idx(tmp_path / f"{part}-images-idx3-ubyte.gz", np.zeros((n, 28, 28)))
        write_idx(tmp_path / f"{part}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte.gz: holds no images"):
        data.read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    with pytest.raises(data.DataError, match="holds no images"):
        data.load("cpu", data_dir=tmp_path, validation=0, download=False)
