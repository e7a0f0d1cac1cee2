"""What optuna-dashboard shows of a store: curves as one short line each (exact values kept
where reports read them, old stores read as before), and seeds kept out of importances."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3

import optuna
import pandas as pd
import pytest

from lrsweep import numbers
from lrsweep.report import importance, read
from lrsweep.search import spec
from lrsweep.store import records, storage
from conftest import REPO, study_toml

CURVES = {"lr": [0.1] * 3, "train_loss": [2.3, 1.1234567890123, 0.5],
          "val_acc": [0.10009999573230743, 0.5, None], "epoch_seconds": [1.7979, 1.25, 1.24]}
OTHER = {"seed": 3, "diverged": "nonfinite", "status": "diverged", "pack_size": 2,
         "schedule": {"name": "constant", "base_lr": 0.1}}


def store_one_trial(url: str, *, old_form: bool) -> None:
    """A trial written as tell.py writes it today (split), or as stores before it hold it."""
    study = optuna.create_study(storage=storage.open_storage(url), study_name="s",
                                direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    trial = study.ask()
    trial.suggest_float("base_lr", 0.01, 1.0, log=True)
    attrs = {**CURVES, **OTHER}
    user, system = (attrs, {}) if old_form else records.split_curves(attrs)
    records.record_trial(study, trial, user, {0: 0.1, 1: 0.5}, system)
    study.tell(trial, 0.5)


def test_curves_are_one_short_line_for_the_dashboard_and_exact_for_reports(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    store_one_trial(url, old_form=False)
    trial = optuna.load_study(study_name="s", storage=url).trials[0]
    for name in CURVES:  # what the dashboard shows: no space its table could wrap at
        shown = trial.user_attrs[name]
        assert isinstance(shown, str) and " " not in shown and len(shown) <= 20, shown
    assert trial.user_attrs["train_loss"] == "2.3\u00a0█▃▁\u00a00.5"
    assert trial.user_attrs["val_acc"] == "0.1\u00a0▁█·\u00a0–"  # a missing value
    assert {k: trial.user_attrs[k] for k in OTHER} == OTHER  # the rest as it was
    assert records.trial_curves(trial) == CURVES  # exact, null included, for reports
    assert records.CURVES_ATTR not in trial.user_attrs


def test_a_stored_trial_reads_the_same_in_either_form(tmp_path):
    old, new = (f"sqlite:///{tmp_path / f'{form}.db'}" for form in ("old", "new"))
    store_one_trial(old, old_form=True)
    store_one_trial(new, old_form=False)
    for frame in (read.trials_frame, read.curves_frame):
        before, after = frame("s", old), frame("s", new)
        assert before.equals(after), frame.__name__
    trials = read.trials_frame("s", new)
    assert trials.loc[0, "train_loss"] == 0.5 and trials.loc[0, "epochs"] == 3
    assert trials.loc[0, "val_acc_curve"] == CURVES["val_acc"]
    assert trials.loc[0, "seconds"] == pytest.approx(sum(CURVES["epoch_seconds"]) / 2)


def test_a_trial_is_charged_its_share_of_each_epoch_of_its_pack(tmp_path):
    # Three epochs shared by 2, 1 and 1 trials of a pack of 2 slots (pack_size 2): the pack
    # was full for the first only. Before the count was kept, every epoch is shared by 2.
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=storage.open_storage(url), study_name="s")
    for shares in ([2.0, 1.0, 1.0], None):
        trial = study.ask()
        counted = {"pack_trials": shares} if shares else {}
        user, system = records.split_curves({**CURVES, **counted, **OTHER})
        records.record_trial(study, trial, user, {0: 0.1}, system)
        study.tell(trial, 0.5)
    seconds = read.trials_frame("s", url)["seconds"].tolist()
    assert seconds == pytest.approx([1.7979 / 2 + 1.25 + 1.24, sum(CURVES["epoch_seconds"]) / 2])


def test_the_committed_ex1_store_reads_as_before():
    """results/ex1-fixed-lr holds curves as user-attribute lists: read exactly as before the
    curves moved (the digests are those of read.py before, on this file)."""
    url = f"sqlite:///{REPO / 'results/ex1-fixed-lr/ex1-fixed-lr.db'}"
    study = storage.load_study("ex1-fixed-lr", url)
    for t in study.trials:
        assert records.trial_curves(t) == {k: v for k, v in t.user_attrs.items()
                                           if k in records.STORED_CURVES}
        assert len(records.trial_curves(t)["val_acc"]) == 30
    digests = {"trials_frame":
               "5c4ba4a7feec31a855f230eda4384844c398ffd513be9036549163840fc1e0fc",
               "curves_frame":
               "4743aeb298eef41602af14ac707c2b3cd974c8bfd8b265ed6d0bd646c02c82e9"}
    for name, digest in digests.items():
        frame = getattr(read, name)("ex1-fixed-lr", url, study=study)
        # A curve kept since (2026-12-03), which this store's trials lack: an empty column.
        assert frame.get("pack_trials", pd.Series(dtype=object)).isna().all()
        frame = frame.drop(columns="pack_trials", errors="ignore")
        assert hashlib.sha256(frame.to_csv().encode()).hexdigest() == digest, name


def test_a_long_curve_is_shown_in_thirty_bars_and_a_flat_one_mid_height():
    shown = numbers.sparkline([float(e) for e in range(200)])
    first, bars, last = shown.split("\u00a0")
    assert (first, len(bars), last) == ("0", 30, "199")
    assert bars[0] == "▁" and bars[-1] == "█" and list(bars) == sorted(bars)
    assert numbers.sparkline([0.01] * 4) == "0.01\u00a0▄▄▄▄\u00a00.01"
    assert numbers.sparkline([]) == ""
    assert records.split_curves({"seed": 1}) == ({"seed": 1}, {})  # no curve, no attribute


def test_the_split_form_survives_optunas_api_path(tmp_path, monkeypatch):
    """The fallback writer (no RDB tables) stores the same two halves."""
    monkeypatch.setattr(records.optuna_private, "tables", lambda study: None)
    url = f"sqlite:///{tmp_path / 'api.db'}"
    store_one_trial(url, old_form=False)
    trial = optuna.load_study(study_name="s", storage=url).trials[0]
    assert records.trial_curves(trial) == CURVES
    with sqlite3.connect(tmp_path / "api.db") as conn:  # one row, not one a curve
        keys = [k for (k,) in conn.execute("SELECT key FROM trial_system_attributes")]
    assert keys == [records.CURVES_ATTR]
    assert json.loads(json.dumps(CURVES)) == records.trial_curves(trial)


def test_importances_leave_out_the_seed(tmp_path):
    """A searched study that also repeats seeds: the seed's noise is no hyperparameter."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    study = optuna.create_study(direction="maximize")
    rng = random.Random(0)
    dists = {"scheduler": CategoricalDistribution(["constant", "cosine"]),
             "base_lr": FloatDistribution(0.01, 1.0, log=True),
             "seed": CategoricalDistribution([0, 1, 2])}
    for _ in range(30):
        params = {"scheduler": rng.choice(["constant", "cosine"]),
                  "base_lr": 10 ** rng.uniform(-2, 0), "seed": rng.choice([0, 1, 2])}
        value = 0.9 - 0.05 * abs(params["base_lr"] - 0.1) + 0.2 * params["seed"]  # seed: noise
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  value=value))
    searched = spec.parse(study_toml("j", sampler="random", trials=30, seed="[0, 1, 2]",
                                     base_lr="{ low = 0.01, high = 1.0, log = true }"),
                          source="j.toml")
    section = importance.importance(study, searched, "val_acc", tmp_path)
    assert set(section.table["dimension"]) == {"base_lr", "scheduler"}
    assert "seed" not in section.paragraphs[0]
