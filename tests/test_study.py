"""The study layer in-process: conditional search space under every sampler, packs, pruning
inside a pack, grid coverage, and continuing a random study without replaying it."""

from __future__ import annotations

import csv
import math
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import torch
from optuna.trial import TrialState

from conftest import TEST_IMAGES, study_toml
from lrsweep.search import (ask, heartbeats, loop, pack_run, provenance, pruning, sampling,
                            spec, takeover, work)
from lrsweep.store import leases, optuna_private, storage
from lrsweep.train import device
from lrsweep.numbers import short
from lrsweep.store.records import trial_curves


def run(tmp_path, fashion_dir, text, **kwargs):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    summary = loop.run(spec.parse(text, source="test.toml"), storage=url, device="cpu",
                        data_dir=str(fashion_dir), **kwargs)
    return summary, optuna.load_study(study_name=summary.name, storage=url)


CONDITIONAL = """
exponent = { low = 0.5, high = 2.0 }
warmup_steps = [0, 1]
"""


@pytest.mark.parametrize("sampler", ["tpe", "random", "gp", "cmaes"])
def test_each_sampler_suggests_only_what_the_scheduler_uses(tmp_path, fashion_dir, sampler):
    text = study_toml(f"cond-{sampler}", sampler=sampler, trials=6,
                      scheduler='["constant", "poly"]', extra=CONDITIONAL,
                      base_lr="{ low = 0.01, high = 0.5, log = true }")
    summary, stored = run(tmp_path, fashion_dir, text, pack=3)
    assert summary.finished == 6 and summary.new == 6
    for t in stored.trials:
        assert t.state == TrialState.COMPLETE
        assert 0.01 <= t.params["base_lr"] <= 0.5 and t.params["warmup_steps"] in (0, 1)
        if t.params["scheduler"] == "poly":
            assert 0.5 <= t.params["exponent"] <= 2.0
            assert t.user_attrs["schedule"]["exponent"] == t.params["exponent"]
        else:
            assert "exponent" not in t.params and "exponent" not in t.user_attrs["schedule"]
        assert t.user_attrs["pack_size"] == 3
        assert t.user_attrs["parameters"] == 61_706  # LeNet's, for reports that show sizes


def test_grid_runs_every_distinct_point_once_across_packs(tmp_path, fashion_dir):
    text = study_toml("grid", scheduler='["constant", "inverse_power"]', seed="[0, 1]",
                      extra="exponent = [0.5, 1.0]", epochs=1)
    summary, stored = run(tmp_path, fashion_dir, text, pack=4)
    points = sorted((t.params["seed"], t.params["scheduler"], t.params.get("exponent"))
                    for t in stored.trials)
    expected = ([(s, "constant", None) for s in (0, 1)]
                + [(s, "inverse_power", e) for s in (0, 1) for e in (0.5, 1.0)])
    assert points == sorted(expected)
    assert summary.finished == 6
    # The first pack holds seed 0's three points: one shared batch, as the grid intends.
    assert {t.params["seed"] for t in stored.trials[:3]} == {0}


def test_pruning_inside_a_pack_masks_only_the_pruned_trial(tmp_path, fashion_dir, monkeypatch):
    def prune_trial_1_when_asked(self, study, trial, everyone):
        return trial.number == 1

    monkeypatch.setattr(pruning.LockstepMedianPruner, "decide", prune_trial_1_when_asked)
    text = study_toml("pruned", scheduler='["constant", "sqrt", "cosine"]', pruner="median",
                      epochs=3)
    summary, stored = run(tmp_path, fashion_dir, text, pack=3)
    by_number = {t.number: t for t in stored.trials}
    assert by_number[1].state == TrialState.PRUNED
    # Asked first after epoch 1: no trial is judged on its first epoch (pruning.AFTER_WARMUP).
    assert list(by_number[1].intermediate_values) == [0, 1]
    assert len(trial_curves(by_number[1])["val_acc"]) == 2
    for n in (0, 2):
        assert by_number[n].state == TrialState.COMPLETE
        assert list(by_number[n].intermediate_values) == [0, 1, 2]
    assert summary.finished == 3


def test_no_trial_is_pruned_inside_its_own_warmup(tmp_path, fashion_dir, monkeypatch):
    asked = {}

    def prune_whenever_asked(self, study, trial, everyone):
        asked.setdefault(trial.number, []).append(trial.last_step)
        return True

    monkeypatch.setattr(pruning.LockstepMedianPruner, "decide", prune_whenever_asked)
    text = study_toml("grace", scheduler='"constant"', pruner="median", epochs=6,
                      extra="warmup_steps = [0, 3]")
    _, stored = run(tmp_path, fashion_dir, text, pack=2)
    for t in stored.trials:
        first = 1 + t.params["warmup_steps"]  # epochs 0–2 warm up; then one more epoch
        assert asked[t.number] == [first], t.params
        assert t.state == TrialState.PRUNED and max(t.intermediate_values) == first


def test_a_trial_at_its_last_epoch_is_told_complete_not_judged(tmp_path, fashion_dir,
                                                             monkeypatch):
    # Pruning at the last epoch saves nothing: a trial that trained all its epochs is stored
    # complete, with its final value, even where the pruner would have said "prune".
    asked = []

    def prune_whenever_asked(self, study, trial, everyone):
        asked.append((trial.number, trial.last_step))
        return True

    monkeypatch.setattr(pruning.LockstepMedianPruner, "decide", prune_whenever_asked)
    text = study_toml("last", scheduler='["constant", "cosine"]', pruner="median", epochs=3,
                      base_lr="[0.05, 0.1]")
    _, stored = run(tmp_path, fashion_dir, text, pack=2)
    # Judged at epoch 1 (after the first), pruned there; never asked at epoch 2, the last.
    assert sorted(asked) == [(n, 1) for n in range(4)]
    text = text.replace("epochs = 3", "epochs = 2").replace('name = "last"', 'name = "two"')
    asked.clear()
    _, stored = run(tmp_path, fashion_dir, text, pack=2)
    assert asked == []  # epoch 1 is the first judged and the last: nobody is judged
    assert [t.state for t in stored.trials] == [TrialState.COMPLETE] * 4
    assert all(list(t.intermediate_values) == [0, 1] for t in stored.trials)


@pytest.mark.parametrize("metric", ["val_loss", "val_acc"])
def test_a_trial_whose_loss_blew_up_is_told_the_worst_value_by_a_loss(tmp_path, fashion_dir,
                                                                     monkeypatch, metric):
    # The engine calls a trial non-finite when its train loss or test NLL left every range;
    # its validation loss may still come out finite (and low). Told by a loss, it ranks last;
    # told by an accuracy, it keeps the accuracy it reached (at chance: last anyway).
    from lrsweep.train import engine

    def blown_up(result, *args):
        result.status, result.diverged = "diverged", "nonfinite"

    monkeypatch.setattr(engine, "_judge", blown_up)
    text = study_toml("blown", scheduler='"constant"', sampler="random", trials=1).replace(
        'pruner = "none"', f'pruner = "none"\nmetric = "{metric}"')
    _, study = run(tmp_path, fashion_dir, text)
    (trial,) = study.trials
    reached = trial_curves(trial)[metric][-1]
    assert trial.user_attrs["outcome"] == "non-finite" and math.isfinite(reached)
    assert trial.value == (math.inf if metric == "val_loss" else reached)


def test_pack_mates_are_each_others_peers_when_none_has_completed(tmp_path, fashion_dir):
    # Optuna's median pruner waits for complete trials: one pack of six would never be
    # pruned. In lockstep the trial that cannot learn (rate 1e-5) is cut at its first judging.
    text = study_toml("lockstep", scheduler='"constant"', pruner="median", epochs=4,
                      base_lr="[1e-5, 0.1, 0.2, 0.3, 0.4, 0.5]")
    _, stored = run(tmp_path, fashion_dir, text, pack=6)
    slow = next(t for t in stored.trials if t.params["base_lr"] == 1e-5)
    assert slow.state == TrialState.PRUNED and max(slow.intermediate_values) == 1
    assert sum(t.state == TrialState.COMPLETE for t in stored.trials) >= 3


def test_hyperband_in_a_pack_prunes_at_its_rungs_from_the_epochs_values(tmp_path, fashion_dir):
    # Six trials in one pack, two brackets (rungs at epochs 1 and 3, and 3; the last epoch, 4,
    # is no rung, where a verdict would save nothing): each verdict is the pruner's reading of
    # the store at that epoch, made once every pack-mate reported.
    text = study_toml("hyperband", scheduler='"constant"', pruner="hyperband", epochs=5,
                      base_lr="[1e-5, 0.1, 0.2, 0.3, 0.4, 0.5]")
    pruner = pruning.make_pruner(spec.parse(text, source="test.toml"))
    assert isinstance(pruner, pruning.LockstepHyperbandPruner) and pruner.max_resource == 5
    _, stored = run(tmp_path, fashion_dir, text, pack=6)
    everyone = stored.get_trials(deepcopy=False)
    for t in everyone:
        verdicts = [pruner.decide(stored, _until(t, step), everyone)
                    for step in sorted(t.intermediate_values) if step < 4]
        expected = TrialState.PRUNED if any(verdicts) else TrialState.COMPLETE
        assert t.state == expected, (t.number, verdicts)
        assert verdicts[-1] == (t.state == TrialState.PRUNED)  # it stopped at its first "prune"
        if t.state == TrialState.PRUNED:
            bracket = pruner.bracket(stored.study_name, t.number)
            assert pruner.is_rung(bracket, max(t.intermediate_values))
    slow = next(t for t in everyone if t.params["base_lr"] == 1e-5)
    assert slow.state == TrialState.PRUNED
    assert sum(t.state == TrialState.PRUNED for t in everyone) >= 2


def _until(trial, step):
    """The trial as it stood after reporting `step`."""
    values = {s: v for s, v in trial.intermediate_values.items() if s <= step}
    return optuna.trial.FrozenTrial(
        number=trial.number, state=TrialState.RUNNING, value=None, values=None,
        datetime_start=None, datetime_complete=None, params=trial.params,
        distributions=trial.distributions, user_attrs={}, system_attrs={},
        intermediate_values=values, trial_id=optuna_private.trial_id(trial))


def test_continuing_a_random_study_does_not_replay_its_draws(tmp_path, fashion_dir):
    text = study_toml("random", sampler="random", trials=2, scheduler='"constant"', epochs=1,
                      base_lr="{ low = 0.01, high = 0.5 }")
    run(tmp_path, fashion_dir, text, pack=1)
    _, stored = run(tmp_path, fashion_dir, text.replace("trials = 2", "trials = 4"), pack=1)
    rates = [t.params["base_lr"] for t in stored.trials]
    assert len(rates) == 4 and len(set(rates)) == 4


def test_default_pack_size_on_the_cpu_is_the_measured_best():
    assert device.default_pack_size(torch.device("cpu")) == 4


@pytest.mark.parametrize("free_gib, batch, expected", [
    (80, 256, 256),    # an empty 80 GB GPU: the cap
    (8, 256, 25),      # 2 GiB of a quarter / 80 MiB a trial
    (80, 4096, 16),    # 20 GiB / (16 × 80 MiB): big batches, fewer trials
    (80, 32, 256),     # small batches keep the batch-256 estimate
    (0.01, 256, 1),    # a nearly full GPU still trains one
])
def test_default_pack_size_on_a_gpu_follows_free_memory_and_batch(monkeypatch, free_gib, batch,
                                                                   expected):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free_gib * 2**30, 2**40))
    assert device.default_pack_size(torch.device("cuda"), batch) == expected


def test_packs_of_patches_hold_fewer_trials_on_a_gpu(monkeypatch):
    # Their forward saves 4.6× what grouped convolutions save: 20 GiB hold 60 trials, not 256.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (80 * 2**30, 2**40))
    monkeypatch.setenv(device.CONVOLUTIONS_ENV, "patches")
    assert device.default_pack_size(torch.device("cuda")) == 60


def test_a_pack_smaller_than_one_is_refused(tmp_path, fashion_dir):
    with pytest.raises(spec.SpecError, match="--pack 0"):
        run(tmp_path, fashion_dir, study_toml("nopack"), pack=0)
    assert not (tmp_path / "store.db").exists()


RUNS = """
[study]
name = "runs"

[train]
epochs = 3
validation = 200
subset = 400
batch_size = 64

[space]
seed = [0, 1]
final_lr = 0.01

[[run]]
label = "flat"
scheduler = "constant"
base_lr = 0.2
book = { test_acc = [0.9, 0.8] }

[[run]]
label = "cosine late"
scheduler = "cosine"
base_lr = 0.3
max_update = 2
lag = 1

[[run]]
label = "cosine warm"
scheduler = "cosine"
base_lr = 0.3
warmup_steps = 1
"""


def test_runs_train_each_listed_configuration_per_seed(tmp_path, fashion_dir):
    summary, stored = run(tmp_path, fashion_dir, RUNS, pack=4)
    assert summary.finished == 6
    got = sorted((t.params["seed"], t.params["run"]) for t in stored.trials)
    assert got == [(s, r) for s in (0, 1) for r in ("cosine late", "cosine warm", "flat")]
    lr = {t.params["run"]: trial_curves(t)["lr"] for t in stored.trials}
    assert lr["flat"] == pytest.approx([0.2, 0.2, 0.2])
    # lag 1: epoch 0 at base_lr, then the cosine 0.3 → 0.01 over 2 epochs from its own start
    assert lr["cosine late"] == pytest.approx([0.3, 0.3, 0.155])
    # warmup from 0 for one epoch, then cosine over the remaining 2 of max_update = epochs = 3
    assert lr["cosine warm"] == pytest.approx([0.0, 0.3, 0.155])
    flat = next(t for t in stored.trials if t.params["run"] == "flat")
    assert flat.params["lag"] == 0 and "max_update" not in flat.params  # constant takes none


def test_sgd_and_sgld_trials_of_one_study_train_in_separate_packs(tmp_path, fashion_dir):
    text = study_toml("langevin", scheduler='"inverse_power"', seed="[0, 1]",
                      extra='optimizer = ["sgd", "sgld"]\nexponent = 0.55', epochs=2)
    text = text.replace("[train]", "[train]\nburn_in = 1")
    summary, stored = run(tmp_path, fashion_dir, text, pack=4)
    assert summary.finished == 4
    packs = {}
    for t in stored.trials:
        packs.setdefault(t.system_attrs[takeover.PACK_ATTR][0], set()).add(t.params["optimizer"])
    assert sorted(map(sorted, packs.values())) == [["sgd"], ["sgld"]]  # a pack of each
    for t in stored.trials:
        sgld = t.params["optimizer"] == "sgld"
        assert ("avg_test_acc" in t.user_attrs) == sgld
        assert len(trial_curves(t)["test_nll"]) == 2
        if sgld:
            assert trial_curves(t)["samples"] == [0.0, 1.0]


def write_folder(root, classes=3, per_class=6, mode="RGB", size=16):
    from PIL import Image
    for split, count in (("train", per_class), ("val", 2)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.new(mode, (size, size), (40 * c + i, 200 - 40 * c, 90)
                          if mode == "RGB" else 40 * c + i).save(folder / f"{i}.png")
    return root


def test_exercise_3_runs_resnet18_on_an_image_folder(tmp_path):
    folder = write_folder(tmp_path / "images")
    path = Path(__file__).resolve().parents[1] / "studies" / "ex3_cosine_large.toml"
    small = spec.load(path, [f"train.dataset=imagefolder:{folder}", "train.image_size=16",
                             "train.epochs=2", "train.validation=3", "train.batch_size=4",
                             "space.seed=[0]", "space.base_lr=[0.1]", "space.model=\"resnet18\"",
                             "space.milestones=[1]", "study.trials=4"])
    url = f"sqlite:///{tmp_path / 'store.db'}"
    summary = loop.run(small, storage=url, device="cpu", pack=2)
    stored = optuna.load_study(study_name=summary.name, storage=url)
    assert summary.finished == 4
    assert sorted(t.params["scheduler"] for t in stored.trials) == [
        "constant", "cosine", "multistep", "poly"]
    for t in stored.trials:  # --pack 2 asks for looped packs of two
        assert t.state == TrialState.COMPLETE and len(trial_curves(t)["test_acc"]) == 2
        assert t.user_attrs["pack_size"] == 2


def test_exercise_3_trains_both_models_on_the_same_data_in_separate_packs(tmp_path, fashion_dir):
    path = Path(__file__).resolve().parents[1] / "studies" / "ex3_cosine_large.toml"
    small = spec.load(path, ["train.epochs=2", "train.validation=40", "train.subset=64",
                             "train.test_subset=50", "train.batch_size=32", "space.seed=[0]",
                             "space.base_lr=[0.1]", "space.milestones=[1]"])
    url = f"sqlite:///{tmp_path / 'store.db'}"
    summary = loop.run(small, storage=url, device="cpu", data_dir=str(fashion_dir))
    stored = optuna.load_study(study_name=summary.name, storage=url)
    assert summary.finished == 8
    assert sorted((t.params["model"], t.params["scheduler"]) for t in stored.trials) == sorted(
        (m, s) for m in ("lenet", "resnet18") for s in ("constant", "cosine", "multistep", "poly"))
    for t in stored.trials:  # LeNets packed; ResNets (a looped pack) one at a time
        assert t.state == TrialState.COMPLETE
        assert (t.user_attrs["pack_size"] == 1) == (t.params["model"] == "resnet18")
        assert len(trial_curves(t)["test_acc"]) == 2  # on test_subset's 50 images:
        assert all(abs(a * 50 - round(a * 50)) < 1e-6 for a in trial_curves(t)["test_acc"])
        weights = optuna.artifacts.get_all_artifact_meta(t, storage=stored._storage)
        assert weights[0].filename.startswith(t.params["model"] + "-")


def test_lenet_on_a_colour_folder_is_refused_before_the_store(tmp_path):
    folder = write_folder(tmp_path / "images")
    text = study_toml("colour", scheduler='"constant"').replace(
        "[train]", f'[train]\ndataset = "imagefolder:{folder}"').replace(
        "validation = 200", "validation = 3").replace("subset = 400", "subset = 0").replace(
        f"test_subset = {TEST_IMAGES}", "test_subset = 0")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with pytest.raises(Exception, match=r"^c.toml: \[train\] dataset = 'imagefolder:.*': 3 "
                                        "classes of 3×28×28 images; LeNet takes 10 classes of "
                                        "1×28×28"):
        loop.run(spec.parse(text, source="c.toml"), storage=url, device="cpu")
    missing = text.replace(str(folder), str(tmp_path / "absent"))
    with pytest.raises(Exception, match=r"^c.toml: \[train\] dataset = 'imagefolder:.*absent'"
                                        r": .*absent: no such folder$"):
        loop.run(spec.parse(missing, source="c.toml"), storage=url, device="cpu")
    # Given by --set, the error names that --set, as every override's error does.
    with pytest.raises(Exception, match=r"^c.toml: --set train.dataset=imagefolder:.*absent: "
                                        r".*absent: no such folder$"):
        loop.run(spec.parse(text, source="c.toml", overrides=(
            f"train.dataset=imagefolder:{tmp_path / 'absent'}",)), storage=url, device="cpu")
    # A size the folder cannot give is blamed on that size's setting, not on the dataset.
    with pytest.raises(Exception, match=r"^c.toml: --set train.validation=90: .*validation = "
                                        "90 must be"):
        loop.run(spec.parse(text, source="c.toml", overrides=("train.validation=90",)),
                 storage=url, device="cpu")
    with pytest.raises(Exception, match=r"^c.toml: \[train\] subset: .*subset = 5000 exceeds"):
        loop.run(spec.parse(text.replace("\nsubset = 0", "\nsubset = 5000"), source="c.toml"),
                 storage=url, device="cpu")
    assert not (tmp_path / "store.db").exists()


def test_exercise_5_runs_at_a_tiny_scale(tmp_path, fashion_dir):
    path = Path(__file__).resolve().parents[1] / "studies" / "ex5_sgld.toml"
    small = spec.load(path, ["train.epochs=2", "train.burn_in=1", "train.subset=400",
                             "train.validation=200", "space.seed=[0]",
                             "space.exponent=[0.55]"])
    url = f"sqlite:///{tmp_path / 'store.db'}"
    summary = loop.run(small, storage=url, device="cpu", data_dir=str(fashion_dir))
    assert summary.finished == 3  # SGD, SGLD and SGLD without noise
    from lrsweep.report import render
    text = render.write_report(summary.name, url, tmp_path / "report").markdown.read_text()
    assert "## Exercise 5: optimization and sampling (SGLD)" in text
    assert "Posterior average minus the no-noise average" in text


def test_the_stored_commit_says_when_the_package_differs_from_it(tmp_path, monkeypatch):
    import subprocess
    package = tmp_path / "repo" / "lrsweep"
    (package / "search").mkdir(parents=True)
    (package / "search" / "provenance.py").write_text("x = 1\n")
    (package / "schedules.py").write_text("y = 1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path / "repo")]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "one"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    monkeypatch.setattr(provenance, "__file__", str(package / "search" / "provenance.py"))
    assert provenance.git_commit() == head
    (package / "schedules.py").write_text("y = 2\n")  # any file of the package, not only ours
    assert provenance.git_commit() == head + "-dirty"


# --- leases of claimed and asked trials --------------------------------------------------------

def abandoned(tmp_path, text, packs, unstarted=0):
    """A study whose first worker asked trials (grouped into `packs`, lists of indices; then
    `unstarted` more, in no pack yet) and stopped before training them, its leases handed
    back: the next worker's to claim."""
    parsed = spec.parse(text, source="test.toml")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    rdb = storage.open_storage(url)
    first = provenance.create_or_load(parsed, rdb, url, allow_changed=False)
    first.sampler = sampling.make_sampler(parsed)
    ids = [first.ask()._trial_id for _ in range(sum(map(len, packs)) + unstarted)]
    for members in packs:
        for i in members:
            first._storage.set_trial_system_attr(ids[i], takeover.PACK_ATTR, [ids[j] for j in members])
    leases.record_heartbeats(first, ids)
    leases.release_trials(first, ids)
    return parsed, url


def test_a_claimed_trial_trains_its_own_grid_point(tmp_path, fashion_dir):
    # Asked (its grid point taken) but killed before its first suggestion: the claimer must
    # suggest from the grid too, or the point is skipped and another one runs twice.
    text = study_toml("orphan-grid", scheduler='["constant", "sqrt", "cosine"]', seed="[0, 1]",
                      epochs=1)
    parsed, url = abandoned(tmp_path, text, packs=[[0]])
    loop.run(parsed, storage=url, device="cpu", data_dir=str(fashion_dir), pack=6)
    stored = optuna.load_study(study_name="orphan-grid", storage=url)
    points = sorted((t.params["seed"], t.params["scheduler"]) for t in stored.trials)
    assert points == sorted((s, n) for s in (0, 1) for n in ("constant", "sqrt", "cosine"))


def test_trials_asked_but_never_trained_are_taken_over_in_packs(tmp_path, fashion_dir):
    # Their worker died while asking a pack: no pack recorded for them, no checkpoint. They
    # used to be taken over one by one (a GPU-sized pack of them, trained solo).
    text = study_toml("unstarted", scheduler='["constant", "sqrt", "cosine"]', epochs=1)
    parsed, url = abandoned(tmp_path, text, packs=[], unstarted=3)
    loop.run(parsed, storage=url, device="cpu", data_dir=str(fashion_dir), pack=2)
    stored = optuna.load_study(study_name="unstarted", storage=url)
    assert [t.state for t in stored.trials] == [TrialState.COMPLETE] * 3
    assert [t.user_attrs["pack_size"] for t in stored.trials] == [2, 2, 1]
    assert sorted(t.params["scheduler"] for t in stored.trials) == ["constant", "cosine", "sqrt"]


def test_a_trial_asked_into_a_taken_over_pack_is_continued_with_it_after_a_second_stop(
        tmp_path, fashion_dir):
    # It used to be recorded in no pack: a second takeover trained it again from epoch 1, its
    # epochs in the pack's checkpoint ignored.
    text = study_toml("twice", scheduler='["constant", "sqrt", "cosine"]', epochs=3)
    parsed, url = abandoned(tmp_path, text, packs=[[0]])

    class StopAfterTheFirstEpoch(work.Progress):
        def __init__(self):
            self.resumed_at = {}

        def resumed(self, number, epochs_done):
            self.resumed_at[number] = epochs_done

        def pack_epoch(self, metrics, epochs):
            if set(metrics) == {0, 1}:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: stops once the epoch is on disk

    with pytest.raises(KeyboardInterrupt):
        loop.run(parsed, storage=url, device="cpu", data_dir=str(fashion_dir), pack=2,
                 progress=StopAfterTheFirstEpoch())
    again = StopAfterTheFirstEpoch()
    again.pack_epoch = lambda metrics, epochs: None
    loop.run(parsed, storage=url, device="cpu", data_dir=str(fashion_dir), pack=2, progress=again)
    assert again.resumed_at == {0: 1, 1: 1}
    trials = optuna.load_study(study_name="twice", storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3


def rival_looks_while_the_first_pack_trains(monkeypatch, url, then=None):
    """While the worker's first pack trains past the grace period, a rival worker claims what
    is stale (and hands it on to `then`): the list of its claims."""
    monkeypatch.setattr(leases, "GRACE_SECONDS", 2)
    monkeypatch.setattr(heartbeats, "HEARTBEAT_SECONDS", 0.3)
    rival = optuna.load_study(study_name="two-packs", storage=storage.open_storage(url))
    seen = []
    run_pack = pack_run.PackRun.run

    def slow_first_pack(self):
        if not seen:
            time.sleep(3)
            seen.append(leases.claim_stale_trials(rival, takeover.PACK_ATTR, one_pack=True))
            if then:
                then(rival, seen[0])
        return run_pack(self)

    monkeypatch.setattr(pack_run.PackRun, "run", slow_first_pack)
    return seen


def test_claimed_trials_keep_their_lease_while_another_pack_trains(tmp_path, fashion_dir,
                                                                   monkeypatch):
    # A dead worker's pack and a trial it asked into no pack yet: both are claimed, and the
    # trial waiting its turn stays held, not taken by a rival as stale.
    text = study_toml("two-packs", scheduler='["constant", "sqrt"]', epochs=1)
    parsed, url = abandoned(tmp_path, text, packs=[[0]], unstarted=1)
    seen = rival_looks_while_the_first_pack_trains(monkeypatch, url)
    summary = loop.run(parsed, storage=url, device="cpu", data_dir=str(fashion_dir), pack=1)
    assert seen == [[]] and summary.finished == 2


def test_another_dead_workers_pack_is_left_to_a_rival(tmp_path, fashion_dir, monkeypatch):
    # Two dead workers' packs: a worker takes one, so that a rival can take the other at once
    # instead of waiting while the first trains both in turn.
    text = study_toml("two-packs", scheduler='["constant", "sqrt"]', epochs=1)
    parsed, url = abandoned(tmp_path, text, packs=[[0], [1]])
    second = optuna.load_study(study_name="two-packs", storage=url).trials[1]._trial_id
    # The rival dies at once: its claim lapses, and the worker takes that pack over too.
    seen = rival_looks_while_the_first_pack_trains(monkeypatch, url, then=leases.release_trials)
    summary = loop.run(parsed, storage=url, device="cpu", data_dir=str(fashion_dir), pack=2)
    assert seen == [[second]] and summary.finished == 2


def test_a_failing_heartbeat_is_retried_not_given_up(tmp_path, monkeypatch):
    monkeypatch.setattr(heartbeats, "HEARTBEAT_SECONDS", 0.05)
    calls = []

    def flaky(store, ids):
        calls.append(list(ids))
        if len(calls) == 2:  # the first beat from the thread fails (a locked file, say)
            locked = sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("database is locked"))
            # wrapped as Optuna wraps every failed commit; the warning gives the driver's words
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit. This typically happens due to "
                "invalid data in the commit, e.g. exceeding max length.") from locked

    monkeypatch.setattr(heartbeats, "record_heartbeats", flaky)
    with pytest.warns(UserWarning, match=r"heartbeat not recorded \(OperationalError: .*database "
                                         r"is locked.*\); retrying"):
        with heartbeats.Leases(None, [7]):
            time.sleep(0.5)
    assert len(calls) >= 4 and all(ids == [7] for ids in calls)


class RunningCounter(optuna.samplers.RandomSampler):
    """Counts the running trials the way TPE's constant liar sees them: through the study's
    per-trial cache of its trials."""

    def __init__(self):
        super().__init__(seed=0)
        self.seen = []

    def before_trial(self, study_, trial):
        running = study_._get_trials(deepcopy=False, states=(TrialState.RUNNING,),
                                     use_cache=True)
        self.seen.append(len(running))


def test_a_packs_asks_take_enqueued_trials_first_and_samplers_see_the_pack(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    sampler = RunningCounter()
    opened = optuna.create_study(storage=storage.open_storage(url), study_name="s",
                                 sampler=sampler)
    opened.enqueue_trial({"x": 0.25})
    with heartbeats.Leases(opened, []) as leases:
        trials = ask.ask_pack(opened, 3, leases)
    # Each ask sees the pack's earlier members running (a stale cache would show 1, 1, 1).
    assert sampler.seen == [1, 2, 3]
    assert trials[0].suggest_float("x", 0, 1) == 0.25  # the enqueued one, taken first
    stored = opened.get_trials(deepcopy=False)
    assert [t.state for t in stored] == [TrialState.RUNNING] * 3  # popped, not asked anew
    from optuna.storages._rdb import models

    beats = models.TrialHeartbeatModel.__table__
    with optuna_private.tables(opened)[0].engine.connect() as conn:
        leased = conn.execute(sqlalchemy.select(beats.c.trial_id)).scalars().all()
    assert sorted(leased) == sorted(t._trial_id for t in trials)  # each one leased


def test_a_trial_that_found_every_grid_point_taken_is_the_surplus_not_one_holding_a_point(
        tmp_path):
    # Two workers race for the last grid point: A's trial is numbered first, but B's claims
    # the point before A's looks. The total must keep B's (else that point never runs) and
    # fail A's, which holds no point (it used to get a copy of another's: run twice).
    from lrsweep.search.sampling import ConditionalGridSampler
    from lrsweep.search.surplus import within_total

    points = [{"seed": 0}, {"seed": 1}]
    rdb = storage.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    workers = [optuna.create_study(study_name="g", storage=rdb, load_if_exists=True,
                                   sampler=ConditionalGridSampler(points)) for _ in range(3)]
    first, a, b = workers
    done = first.ask()
    done.suggest_categorical("seed", [0, 1])
    first.tell(done, 0.5)  # point 0 is done: one left
    study_id = optuna_private.study_id(first)
    id_a, id_b = rdb.create_new_trial(study_id), rdb.create_new_trial(study_id)
    trial_b = optuna.Trial(b, id_b)  # B claims the last point first
    trial_a = optuna.Trial(a, id_a)  # A finds every point taken
    assert within_total(b, [trial_b], 2) == [trial_b]
    assert within_total(a, [trial_a], 2) == []
    states = {t.number: t.state for t in first.get_trials()}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.FAIL, 2: TrialState.RUNNING}
    assert trial_b.suggest_categorical("seed", [0, 1]) == 1  # the last point, once


def test_allow_changed_keeps_every_study_file_and_says_which_trials_trained_under_which(
        tmp_path, fashion_dir):
    # Two edits: the store had kept only the file before the last one, so the first file's
    # trials said nothing of how they trained, and reports and rerun took them for the last.
    from lrsweep.report import render, rerun
    url = f"sqlite:///{tmp_path / 'store.db'}"
    files = [spec.parse(study_toml("hist", scheduler='"constant"', sampler="random",
                                   epochs=epochs, trials=trials), source="h.toml")
             for epochs, trials in ((2, 1), (3, 2), (4, 3))]
    for file in files:
        loop.run(file, storage=url, device="cpu", allow_changed=True, data_dir=str(fashion_dir))
    study = optuna.load_study(study_name="hist", storage=url)
    assert set(spec.stored_files(study.user_attrs)) == {f.identity for f in files}
    assert [f"{t.number}:{t.system_attrs[spec.STUDY_FILE_ATTR]}" for t in study.trials] == [
        f"{n}:{f.identity}" for n, f in enumerate(files)]
    assert [len(trial_curves(t)["val_acc"]) for t in study.trials] == [2, 3, 4]
    text = render.write_report("hist", url, tmp_path / "out").markdown.read_text()
    assert ("4 epochs per trial" in text and "**The study file was changed during the study** "
            "(`--allow-changed`): 2 trial(s) (#0, #1) were trained under an earlier one") in text
    # Ranked and counted at the current file's scale only, as rerun ranks: trial #2 alone.
    assert "the intervals, tests and figures leave them out (as `rerun` does)" in text
    configs = list(csv.DictReader((tmp_path / "out" / "configs.csv").open()))
    assert [(row["val_acc_n"], row["seeds"]) for row in configs] == [("1", "1")]
    assert float(configs[0]["val_acc_mean"]) == trial_curves(study.trials[2])["val_acc"][-1]
    assert "# 2 trial(s) trained under an earlier study file of hist" in rerun.best_study_file(
        "hist", url)


# --- a study file changed while workers run ----------------------------------------------------

def test_two_runs_storing_their_files_at_once_both_keep_theirs(tmp_path, monkeypatch):
    # The files were one user attribute, read and written whole: of two runs that read it
    # before either wrote, the second erased the first's file.
    files = [spec.parse(study_toml("twofiles", epochs=epochs), source=f"{epochs}.toml")
             for epochs in (1, 2, 3)]
    url = f"sqlite:///{tmp_path / 'store.db'}"
    study = provenance.create_or_load(files[0], storage.open_storage(url), url, False)
    read_before_either_wrote = study.user_attrs
    monkeypatch.setattr(optuna.Study, "user_attrs",
                        property(lambda self: read_before_either_wrote))
    provenance._remember(study, files[1])
    provenance._remember(study, files[2])
    monkeypatch.undo()
    assert set(spec.stored_files(study.user_attrs)) == {f.identity for f in files}


def test_a_trial_names_its_study_file_from_the_moment_it_takes_a_slot(tmp_path, fashion_dir):
    # Named only when told, a trial taken over by a worker running another file was stored
    # as that file's, its first epochs trained under the first.
    parsed = spec.parse(study_toml("named", scheduler='"constant"', sampler="random", epochs=1,
                                   trials=2), source="named.toml")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    seen = {}

    class Watch(work.Progress):
        def trial_started(self, number, params):
            trial = optuna.load_study(study_name="named", storage=url).trials[number]
            seen[number] = (trial.state, trial.system_attrs.get(spec.STUDY_FILE_ATTR))

    loop.run(parsed, storage=url, device="cpu", data_dir=str(fashion_dir), pack=1,
             progress=Watch())
    assert seen == {n: (TrialState.RUNNING, parsed.identity) for n in (0, 1)}


def begun_under_an_earlier_file(tmp_path, first, second):
    """The race `--allow-changed` leaves open: `second` replaced the stored `first` in an
    instant when no trial ran, then `first`'s worker asked a pack of two trials, took them
    into its slots, and died."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    rdb = storage.open_storage(url)
    study = provenance.create_or_load(first, rdb, url, allow_changed=False)
    provenance.create_or_load(second, rdb, url, allow_changed=True)
    study.sampler = sampling.make_sampler(first)
    ids = [study.ask()._trial_id for _ in range(2)]
    for i in ids:
        study._storage.set_trial_system_attr(i, takeover.PACK_ATTR, [ids[0]])
        study._storage.set_trial_system_attr(i, spec.STUDY_FILE_ATTR, first.identity)
    leases.record_heartbeats(study, ids)
    leases.release_trials(study, ids)
    return url, study


def test_a_takeover_fails_trials_begun_under_a_file_that_trains_otherwise(tmp_path, fashion_dir):
    first, second = (spec.parse(study_toml("edited", scheduler='["constant", "sqrt"]',
                                           epochs=epochs), source=f"{epochs}.toml")
                     for epochs in (1, 2))
    url, study = begun_under_an_earlier_file(tmp_path, first, second)
    checkpoints = takeover.checkpoints_for(url)
    left = checkpoints.path("edited", takeover.pack_name(study.trials[0]))
    left.parent.mkdir(parents=True, exist_ok=True)
    left.write_bytes(b"their epochs under the first file")
    summary = loop.run(second, storage=url, device="cpu", data_dir=str(fashion_dir), pack=2)
    trials = optuna.load_study(study_name="edited", storage=url).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2 + [TrialState.COMPLETE] * 2
    assert all(second.identity in t.system_attrs[takeover.ABANDONED_ATTR] for t in trials[:2])
    # Each grid point trained anew, under the file the study now holds.
    assert sorted(t.params["scheduler"] for t in trials[2:]) == ["constant", "sqrt"]
    assert [(t.system_attrs[spec.STUDY_FILE_ATTR], len(trial_curves(t)["val_acc"]))
            for t in trials[2:]] == [(second.identity, 2)] * 2
    assert summary.finished == 2 and not left.exists()
    # Failed, they trained nothing a report could count under the earlier file.
    from lrsweep.report.read import trained_under_earlier_files
    assert trained_under_earlier_files(optuna.load_study(study_name="edited", storage=url),
                                       second) == set()


def test_a_trial_its_slow_worker_tells_during_the_takeover_is_left_as_told(tmp_path):
    first, second = (spec.parse(study_toml("slow", scheduler='["constant", "sqrt"]',
                                           epochs=epochs), source=f"{epochs}.toml")
                     for epochs in (1, 2))
    url, study = begun_under_an_earlier_file(tmp_path, first, second)
    study.tell(study.trials[0].number, 0.5)  # its worker was slow, not dead
    notes = []
    taker = work.Work(second, study, None, "cpu", type("Notes", (work.Progress,), {
        "note": lambda self, line: notes.append(line)})(), takeover.checkpoints_for(url),
        None, 2, 1, None)
    assert takeover.fail_begun_otherwise(taker, [t._trial_id for t in study.trials]) == []
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert notes == ["trial(s) #1 of another worker began under a study file that trains "
                     "otherwise than this one (the study was continued with --allow-changed "
                     "since): failed, and new trials take their place"]


@pytest.mark.parametrize("listed", [True, False])
def test_a_takeover_continues_trials_begun_under_a_file_that_trains_alike(tmp_path, fashion_dir,
                                                                           listed):
    # Unlisted: a file the store does not keep (a study stored before lrsweep kept its files):
    # nothing says it trained otherwise.
    text = study_toml("commented", scheduler='["constant", "sqrt"]', epochs=1)
    first = spec.parse(text, source="first.toml")
    second = spec.parse("# only a comment added\n" + text, source="second.toml")
    url, study = begun_under_an_earlier_file(tmp_path, first, second)
    if not listed:
        for trial in study.trials:
            study._storage.set_trial_system_attr(trial._trial_id, spec.STUDY_FILE_ATTR,
                                                 "0123456789abcdef")
    loop.run(second, storage=url, device="cpu", data_dir=str(fashion_dir), pack=2)
    trials = optuna.load_study(study_name="commented", storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2


def test_a_run_stops_asking_once_another_run_changed_the_study_file(tmp_path, fashion_dir):
    # The edit is refused while a trial runs, but a pack of one leaves an instant between
    # telling a trial and asking the next: the old file's run went on asking under it.
    first, second = (spec.parse(study_toml("moved", scheduler='"constant"', sampler="random",
                                           epochs=epochs, trials=3), source=f"{epochs}.toml")
                     for epochs in (1, 2))
    url = f"sqlite:///{tmp_path / 'store.db'}"

    class EditAfterTheFirstTrial(work.Progress):
        def trial_finished(self, number, state, value, best, done):
            if number == 0:
                provenance.create_or_load(second, storage.open_storage(url), url,
                                          allow_changed=True)

    with pytest.raises(spec.SpecError, match="another run has continued study .moved. meanwhile.*"
                                             "`lrsweep resume moved`"):
        loop.run(first, storage=url, device="cpu", data_dir=str(fashion_dir), pack=1,
                 progress=EditAfterTheFirstTrial())
    study = optuna.load_study(study_name="moved", storage=url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    loop.run(second, storage=url, device="cpu", data_dir=str(fashion_dir))
    curves = [len(trial_curves(t)["val_acc"]) for t in optuna.load_study(
        study_name="moved", storage=url).trials]
    assert curves == [1, 2, 2]


def test_a_worker_follows_the_study_file_another_run_stored(tmp_path, fashion_dir, monkeypatch,
                                                            capsys):
    # `worker NAME` works on the stored study: when another run replaces its file, it goes on
    # under the new one (`run FILE`, above, stops: its file is the user's).
    from lrsweep import cli, progress
    first, second = (spec.parse(study_toml("followed", scheduler='"constant"', sampler="random",
                                           epochs=epochs, trials=3), source=f"{epochs}.toml")
                     for epochs in (1, 2))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    provenance.create_or_load(first, storage.open_storage(url), url, allow_changed=False)

    class EditAfterTheFirstTrial(work.Progress):
        def trial_finished(self, number, state, value, best, done):
            if number == 0:
                provenance.create_or_load(second, storage.open_storage(url), url,
                                          allow_changed=True)

    monkeypatch.setattr(progress, "for_console", lambda console: EditAfterTheFirstTrial())
    cli.worker(name="followed", storage=url, device="cpu", data_dir=str(fashion_dir), pack=1)
    curves = [len(trial_curves(t)["val_acc"]) for t in optuna.load_study(
        study_name="followed", storage=url).trials]
    assert curves == [1, 2, 2]
    assert ("study followed: another run changed its study file (--allow-changed); continuing "
            "under the new one") in capsys.readouterr().err


def test_a_told_trial_is_counted_with_every_workers_finished_trials(tmp_path, fashion_dir):
    # Another worker's trial ends while this run's pack trains, after this run's last ask:
    # the lines telling this run's trials count it too (they counted only their own).
    import io

    from rich.console import Console

    from lrsweep import progress
    the_spec = spec.parse(study_toml("counted", scheduler='"constant"', sampler="random",
                                     epochs=2, trials=3), source="test.toml")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    provenance.create_or_load(the_spec, storage.open_storage(url), url, allow_changed=False)
    elsewhere = optuna.load_study(study_name="counted", storage=url)
    other = elsewhere.ask()  # running in another worker: this run asks the other two

    class OtherWorkerEnds(progress.PlainProgress):
        def pack_epoch(self, metrics, epochs):
            super().pack_epoch(metrics, epochs)
            if elsewhere.trials[other.number].state == TrialState.RUNNING:
                elsewhere.tell(other, 0.5)

    printed = io.StringIO()
    loop.run(the_spec, storage=url, device="cpu", data_dir=str(fashion_dir), pack=2,
             progress=OtherWorkerEnds(Console(file=printed, width=200)))
    told = [line.split("[")[1] for line in printed.getvalue().splitlines() if " done, " in line]
    # And the best shown is the store's: the other worker's 0.5 unless this run's is higher.
    values = [t.value for t in optuna.load_study(study_name="counted", storage=url).trials]
    assert told == [f"2/3 done, best {short(max(values[:2]))}]",
                    f"3/3 done, best {short(max(values))}]"], told
