"""Read studies from the store into pandas: one row a study, a trial, or a trial's epoch.

    >>> from lrsweep.report import read
    >>> read.studies_frame("sqlite:///results/lrsweep.db")       # doctest: +SKIP
    >>> read.trials_frame("quickstart", "sqlite:///results/lrsweep.db")  # doctest: +SKIP
"""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.trial import TrialState

from lrsweep.outcomes import OUTCOMES, loss_bound
from lrsweep.search import spec as spec_mod
from lrsweep.search.surplus import SURPLUS_ATTR
from lrsweep.store import leases
from lrsweep.store.records import CURVES, trial_curves
from lrsweep.store.failures import hide_passwords
from lrsweep.store.storage import StorageError, load_study, open_storage, study_names

FINAL_CURVES = tuple(c for c in CURVES  # a trial's row
                     if c not in ("lr", "epoch_seconds", "pack_trials"))


def studies_frame(url: str) -> pd.DataFrame:
    """One row per study in the store: its trials counted by outcome, in the words of the
    reports (`STUDY_COUNTS`: complete, never learned, collapsed, non-finite, pruned), and by
    state where they have none (fail: crashed; running: a worker holds them; interrupted:
    none does), and the best value."""
    from lrsweep.report.outcome_counts import outcome_column  # imports this module
    rdb = open_storage(url, create=False)
    rows = []
    for name in study_names(rdb):
        study = optuna.load_study(study_name=name, storage=rdb)
        trials = asked_within_total(study)
        outcomes = outcome_column(pd.DataFrame(
            [_outcome_row(t, state) for t, state in zip(trials, leases.state_names(study, trials))],
            columns=["state", "outcome", "train_acc", "classes"]))
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = (max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min)(
            (t.value for t in complete), default=None)
        rows.append({"study": name, **{c: int((outcomes == c).sum()) for c in STUDY_COUNTS},
                     "best": best, "direction": study.direction.name.lower(),
                     "last": max((t.datetime_start for t in trials if t.datetime_start),
                                 default=None)})
    return pd.DataFrame(rows, columns=["study", *STUDY_COUNTS, "best", "direction", "last"])


# `ls`'s counts: a finished trial's outcome (lrsweep.outcomes, as every report counts them),
# else its state (waiting: enqueued through Optuna, not yet asked).
STUDY_COUNTS = (*OUTCOMES, "fail", "running", "interrupted", "waiting")


def _outcome_row(trial: optuna.trial.FrozenTrial, state: str) -> dict:
    """What `outcome_column` needs of a trial: its state as the tables name it, its recorded
    outcome, and where none was recorded (stores before 2026-11-30) its last train accuracy
    and its classes."""
    recorded = trial.user_attrs.get("outcome")
    train_acc = [None] if recorded else trial_curves(trial).get("train_acc") or [None]
    return {"state": _with_divergence(trial, state), "outcome": recorded,
            "train_acc": train_acc[-1], "classes": trial.user_attrs.get("classes", 10)}


def _with_divergence(trial: optuna.trial.FrozenTrial, state: str) -> str:
    """A trial's state as the tables show it: "diverged (KIND)" for a diverged one (Optuna
    holds it as COMPLETE). Stores trained before the loss bound (2026-11-30) called a trial
    whose loss had blown past it "collapsed" once its accuracy fell; the engine now judges
    the bound first (engine._judge), and so does every table: it is non-finite."""
    kind = trial.user_attrs.get("diverged")
    if kind == "collapsed" and _beyond_loss_bound(trial):
        kind = "nonfinite"
    return f"diverged ({kind})" if kind else state


def _beyond_loss_bound(trial: optuna.trial.FrozenTrial) -> bool:
    curves = trial_curves(trial)
    bound = loss_bound(trial.user_attrs.get("classes", 10))
    last = [c[-1] for c in (curves.get("train_loss"), curves.get("test_nll")) if c]
    return any(v is not None and not v <= bound for v in last)  # NaN compares False


def stored_study_file(study: optuna.Study, name: str, url: str,
                      why: str = "") -> spec_mod.StudySpec:
    """The study file lrsweep stored with study `name`; a study lrsweep did not make (no file
    stored) is refused, `why` saying what the caller needs the file for."""
    shown = hide_passwords(url)
    spec = spec_mod.from_stored(study.user_attrs, source=f"{name} (stored in {shown})")
    if spec is None:
        raise StorageError(f"study {name!r} in {shown} was not made by lrsweep (no stored study "
                           f"file){why}")
    return spec


def trials_frame(name: str, url: str, *, study: optuna.Study | None = None) -> pd.DataFrame:
    """One row per trial: state, objective, parameters, final curve values, epochs, time."""
    study = study or load_study(name, url)  # a caller that has it loaded saves a read
    rows = []
    trials = asked_within_total(study)
    for t, state in zip(trials, leases.state_names(study, trials)):
        attrs, curves = t.user_attrs, trial_curves(t)  # curves: either form a store holds
        row = {"trial": t.number, "state": _with_divergence(t, state), "value": t.value}
        row.update({k: v for k, v in t.params.items()})
        row["seed"] = attrs.get("seed", t.params.get("seed"))
        for key in FINAL_CURVES:
            curve = curves.get(key) or []
            row[key] = curve[-1] if curve else None
        row["val_acc_curve"] = curves.get("val_acc") or []
        row["classes"] = attrs.get("classes", 10)  # stores before it was kept: Fashion-MNIST
        # A trial's curves are stored when it ends: one still training (or handed back) has
        # trained epochs its checkpoint knows and the store does not, so none are claimed.
        trained = len(curves.get("lr") or [])
        row["epochs"] = None if state in ("running", "interrupted") and not trained else trained
        if "outcome" in attrs:  # recorded from 2026-11-30 on; report.outcome_counts derives it
            row["outcome"] = attrs["outcome"]
        # The model's trainable parameters, stored as `parameters` (from 2026-11-29 on; earlier
        # stores lack it); a frame's column beside the searched parameters says it is a count.
        if "parameters" in attrs:
            row["param_count"] = attrs["parameters"]
        row["seconds"] = (None if row["epochs"] is None  # its time is not stored yet either
                          else _share_of_pack_time(curves, attrs.get("pack_size", 1)))
        rows.append(row)
    # A study without trials still has the columns, so every reader can select from it.
    frame = pd.DataFrame(rows, columns=None if rows else TRIAL_COLUMNS)
    frame.attrs["direction"] = study.direction.name.lower()
    return frame


def asked_within_total(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's trials less those a worker asked beyond the total while another counted
    (`search.surplus`): failed at once and never trained, they are no trial of the study's,
    and no table or report counts them (Optuna's own tools list them, as FAIL)."""
    return [t for t in study.get_trials(deepcopy=False) if not t.system_attrs.get(SURPLUS_ATTR)]


def _share_of_pack_time(curves: dict[str, list], pack_size: int) -> float:
    """A trial's seconds: each epoch, its pack's time shared by the trials trained in it.
    An epoch trained before that count was kept (stores before 2026-12-03; 0 or none) shares
    it among all the pack's slots, which charges a trial of a pack not full too little."""
    seconds = [s if s is not None else 0.0 for s in curves.get("epoch_seconds") or []]
    counts = (curves.get("pack_trials") or []) + [None] * len(seconds)
    shared = sum(s / n for s, n in zip(seconds, counts) if n)
    return shared + sum(s for s, n in zip(seconds, counts) if not n) / pack_size


TRIAL_COLUMNS = ("trial", "state", "outcome", "value", "seed", *FINAL_CURVES, "val_acc_curve",
                 "classes", "epochs", "seconds")


def trained_under_earlier_files(study: optuna.Study, current: spec_mod.StudySpec,
                                trials: list[optuna.trial.FrozenTrial] | None = None
                                ) -> set[int]:
    """The numbers of the finished (complete or pruned) trials trained under a study file
    that trains otherwise than `current` (a study continued with --allow-changed): each
    trial's file, from the study's stored files, parsed now and compared with `current` as
    parsed now, so that comments, the trial total and a newer lrsweep's defaults make no
    difference. A trial stored before files were recorded counts as the current file's.
    `trials`: the study's, when the caller has read them (their system attributes hold the
    curves: a large study's read is not free)."""
    files = spec_mod.stored_files(study.user_attrs)
    same = {current.identity: True}
    earlier = set()
    for trial in study.get_trials(deepcopy=False) if trials is None else trials:
        file = trial.system_attrs.get(spec_mod.STUDY_FILE_ATTR)
        if file is None or trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        if file not in same:
            same[file] = spec_mod.stored_trains_like(files.get(file), current)
        if not same[file]:
            earlier.add(trial.number)
    return earlier


def curves_frame(name: str, url: str, *, study: optuna.Study | None = None) -> pd.DataFrame:
    """One row per trial and epoch: the trial's state (as `trials_frame` names it), parameters
    and per-epoch curves."""
    study = study or load_study(name, url)  # a caller that has it loaded saves a read
    rows = []
    trials = asked_within_total(study)
    for t, state in zip(trials, leases.state_names(study, trials)):
        attrs, curves = t.user_attrs, trial_curves(t)
        shown = _with_divergence(t, state)
        diverged = shown.removeprefix("diverged (")[:-1] if shown != state else None
        for epoch in range(len(curves.get("lr") or [])):
            row = {"trial": t.number, "state": shown, "value": t.value,
                   "seed": attrs.get("seed"), "diverged": diverged, **t.params,
                   "epoch": epoch}
            row.update({key: (curves.get(key) or [None] * (epoch + 1))[epoch] for key in CURVES})
            rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else
                        ("trial", "state", "value", "seed", "diverged", "epoch", *CURVES))
