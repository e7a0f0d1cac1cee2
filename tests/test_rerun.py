"""`lrsweep rerun`: the best configurations of a stored study become a valid [[run]] study file
with the original training settings and N seeds."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from conftest import study_toml
from lrsweep.report import rerun
from lrsweep.search import spec
from lrsweep.store.storage import StorageError

SEARCH = study_toml("search", sampler="random", trials=5, epochs=4,
                    scheduler='["constant", "poly"]',
                    base_lr="{ low = 0.01, high = 1.0, log = true }",
                    extra="exponent = { low = 0.5, high = 2.0 }\nwarmup_steps = [0, 1]")


@pytest.fixture
def searched(tmp_path):
    return search_study(f"sqlite:///{tmp_path / 's.db'}")


def search_study(url: str, file_of=lambda value: None) -> str:
    """A study like a search's: four trials; `file_of(value)`, the identity of the study
    file each trial trained under (None: unrecorded, as before it was)."""
    study = optuna.create_study(study_name="search", storage=url, direction="maximize")
    study.set_user_attr("study_file", SEARCH)
    dists = {"scheduler": CategoricalDistribution(["constant", "poly"]),
             "base_lr": FloatDistribution(0.01, 1.0, log=True),
             "exponent": FloatDistribution(0.5, 2.0),
             "warmup_steps": CategoricalDistribution([0, 1])}
    for params, value, state, seed in [
        ({"scheduler": "poly", "base_lr": 0.31, "exponent": 1.5, "warmup_steps": 1}, 0.88,
         TrialState.COMPLETE, 0),
        ({"scheduler": "constant", "base_lr": 0.1, "warmup_steps": 0}, 0.85, TrialState.COMPLETE,
         0),
        ({"scheduler": "constant", "base_lr": 0.9, "warmup_steps": 0}, 0.60, TrialState.COMPLETE,
         1),
        ({"scheduler": "poly", "base_lr": 0.5, "exponent": 0.7, "warmup_steps": 0}, 0.95,
         TrialState.PRUNED, 3),  # pruned: not a finished configuration, but its seed trained
    ]:
        used = {k: dists[k] for k in params}
        file = file_of(value)
        study.add_trial(create_trial(state=state, params=params, distributions=used,
                                     value=value if state == TrialState.COMPLETE else None,
                                     user_attrs={"seed": seed}, system_attrs={} if file is None
                                     else {spec.STUDY_FILE_ATTR: file}))
    return url


def test_the_best_configurations_become_runs_over_seeds(searched):
    text = rerun.best_study_file("search", searched, top=2, seeds=3)
    parsed = spec.parse(text, source="written")
    assert parsed.study.name == "search-best" and parsed.study.trials == 6
    assert parsed.train == spec.parse(SEARCH, source="s").train  # the original [train], all
    first, second = parsed.runs
    assert dict(first.values)["scheduler"] == "poly"
    assert dict(first.values)["base_lr"] == 0.31 and dict(first.values)["exponent"] == 1.5
    assert dict(first.values)["warmup_steps"] == 1
    assert dict(second.values)["scheduler"] == "constant"
    assert dict(second.values)["base_lr"] == 0.1
    assert first.label.startswith("#1 ") and second.label.startswith("#2 ")
    assert "val_acc 0.8800 over 1 trial(s) in search" in text
    assert f"# The 2 best configurations of study 'search' ({searched}), re-run over 3 seeds" \
        in text
    # The command in its header runs it into the store it came from, as pasted.
    assert (f"#   lrsweep run THIS_FILE --storage {searched} && lrsweep report search-best "
            f"--storage {searched}") in text
    # Seeds the search never trained: the seed a winner won on would flatter it.
    assert parsed.dimension("seed").values == (4, 5, 6)


def test_top_larger_than_the_study_keeps_what_there_is(searched):
    parsed = spec.parse(rerun.best_study_file("search", searched, top=10, seeds=1,
                                              new_name="again"), source="written")
    assert parsed.study.name == "again" and len(parsed.runs) == 3
    assert "# written by `lrsweep rerun search --top 10 --seeds 1 --name again`" in \
        rerun.best_study_file("search", searched, top=10, seeds=1, new_name="again")
    one = rerun.best_study_file("search", searched, top=1, seeds=1)
    assert "# The best configuration of study 'search'" in one and "over 1 seed each" in one


def test_a_best_configuration_whose_seed_never_learned_says_so(searched):
    # Ranked by the metric alone (a loss at chance can be the lowest of a tiny study's), so
    # its note in the file says how its seeds failed.
    study = optuna.load_study(study_name="search", storage=searched)
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, params={"scheduler": "constant", "base_lr": 0.02},
        distributions={"scheduler": CategoricalDistribution(["constant", "poly"]),
                       "base_lr": FloatDistribution(0.01, 1.0, log=True)},
        value=0.9, user_attrs={"seed": 2, "outcome": "never learned"}))
    text = rerun.best_study_file("search", searched, top=2, seeds=1)
    first, second = (line for line in text.splitlines() if line.startswith("label = "))
    assert first.endswith("val_acc 0.9000 over 1 trial(s) in search; failed: 1 never learned")
    assert second.endswith("val_acc 0.8800 over 1 trial(s) in search")


def test_a_rerun_named_as_a_study_another_file_made_is_refused_before_it_is_run(searched):
    text = rerun.best_study_file("search", searched, top=1, seeds=2)
    made = optuna.create_study(study_name="search-best", storage=searched, direction="maximize")
    made.set_user_attr("study_file", text)  # as `lrsweep run` on the written file stores it
    assert rerun.best_study_file("search", searched, top=1, seeds=2) == text  # continues it
    with pytest.raises(spec.SpecError, match="the re-run's name 'search-best': a study of that "
                                             "name in .* was made from another file; give the "
                                             "re-run another name with --name"):
        rerun.best_study_file("search", searched, top=2, seeds=2)
    assert "[[run]]" in rerun.best_study_file("search", searched, top=2, seeds=2, new_name="b")


def test_a_rerun_of_a_rerun_keeps_one_rank_in_its_labels():
    assert rerun._label(1, "#2 scheduler=cosine base_lr=0.3") == "#1 scheduler=cosine base_lr=0.3"
    assert rerun._label(2, "scheduler=cosine") == "#2 scheduler=cosine"


def test_trials_told_under_an_earlier_study_file_are_not_ranked(tmp_path):
    # After --allow-changed: the best trial trained under another file (fewer epochs, say), so
    # the [train] written (the current file's) would not re-run it.
    current = spec.parse(SEARCH, source="s").identity
    url = search_study(f"sqlite:///{tmp_path / 'a.db'}",
                       lambda value: "an-older-file" if value == 0.88 else current)
    text = rerun.best_study_file("search", url, top=1, seeds=1)
    assert "# 1 trial(s) trained under an earlier study file of search" in text
    (best,) = spec.parse(text, source="written").runs
    assert dict(best.values)["scheduler"] == "constant" and dict(best.values)["base_lr"] == 0.1
    # A file that differs in a comment only trains alike: its trials are ranked.
    commented = spec.parse(SEARCH + "# a comment\n", source="s")
    url = search_study(f"sqlite:///{tmp_path / 'c.db'}", lambda value: commented.identity)
    optuna.load_study(study_name="search", storage=url).set_user_attr(spec.STUDY_FILES_ATTR, {
        commented.identity: {"text": commented.text, "overrides": []}})
    assert "earlier study file" not in rerun.best_study_file("search", url, top=1, seeds=1)
    # Nor does one that chooses trials otherwise (sampler, its seed, pruner, description):
    # each trial trains as it would have under the current file.
    chosen = spec.parse(SEARCH.replace('sampler = "random"', 'sampler = "tpe"\nsampler_seed = 3'
                                       '\ndescription = "tried"').replace(
        'pruner = "none"', 'pruner = "median"'), source="s")
    assert chosen.identity != commented.identity and chosen.study.pruner == "median"
    url = search_study(f"sqlite:///{tmp_path / 'd.db'}", lambda value: chosen.identity)
    optuna.load_study(study_name="search", storage=url).set_user_attr(spec.STUDY_FILES_ATTR, {
        chosen.identity: {"text": chosen.text, "overrides": []}})
    assert "earlier study file" not in rerun.best_study_file("search", url, top=1, seeds=1)
    # A fixed value of the space is part of how a trial trains.
    fixed = spec.parse(SEARCH + "final_lr = 0.001\n", source="s")
    assert not spec.stored_trains_like({"text": fixed.text}, spec.parse(SEARCH, source="s"))
    older = search_study(f"sqlite:///{tmp_path / 'b.db'}", lambda value: "an-older-file")
    with pytest.raises(StorageError, match="every finished trial trained under an earlier "
                                           "study file"):
        rerun.best_study_file("search", older)


def test_a_name_with_no_room_for_best_asks_for_one_before_reading_the_store(tmp_path):
    with pytest.raises(spec.SpecError, match=r"the re-run's name 's{125}-best': 130 "
                                             "characters; at most 128; give it one with --name"):
        rerun.best_study_file("s" * 125, f"sqlite:///{tmp_path / 'absent.db'}")
    assert not (tmp_path / "absent.db").exists()


def test_a_study_without_complete_trials_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    optuna.create_study(study_name="empty", storage=url).set_user_attr("study_file", SEARCH)
    with pytest.raises(StorageError, match="no finished trial"):
        rerun.best_study_file("empty", url)


def test_cli_writes_the_file_and_refuses_to_overwrite(lrsweep_cli, tmp_path, searched):
    first = lrsweep_cli("rerun", "search", "--storage", searched, "--top", "1")
    assert first.returncode == 0, first.stderr
    path = tmp_path / "studies" / "search_best.toml"
    assert spec.load(path).study.trials == 5  # one configuration × the default 5 seeds
    again = lrsweep_cli("rerun", "search", "--storage", searched)
    assert again.returncode == 2 and "exists; choose another --out" in again.stderr


def test_a_seed_count_past_the_limit_is_one_line_and_writes_nothing(lrsweep_cli, tmp_path,
                                                                    searched):
    # --seeds 5000000000 had built a list of every seed and been killed for memory
    proc = lrsweep_cli("rerun", "search", "--storage", searched, "--seeds", "5000000000")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert "--seeds 5000000000: at most 100,000" in line
    assert not (tmp_path / "studies").exists()


def test_a_long_configuration_is_shortened_to_a_label_the_written_file_accepts():
    # A search over many dimensions names a configuration past a label's limit; the rank
    # in front keeps shortened labels apart.
    labels = [rerun._label(rank, "base_lr=0.1, " * 40) for rank in (1, 2)]
    assert [len(label) for label in labels] == [spec.MAX_LABEL] * 2
    assert labels[0].startswith("#1 base_lr=0.1, ") and labels[0].endswith("…")
    runs = "".join(f'[[run]]\nlabel = "{label}"\nscheduler = "constant"\n' for label in labels)
    parsed = spec.parse(f'[study]\nname = "r"\nsampler = "grid"\n[space]\nseed = 0\n{runs}')
    assert [run.label for run in parsed.runs] == labels
    assert rerun._label(3, "constant") == "#3 constant"
