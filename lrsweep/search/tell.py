"""A finished trial into the store: its curves, weights and intermediate values recorded with
it, then its value (or its pruning) told to Optuna."""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import TrialState

from lrsweep.search.interrupt import NotWritten
from lrsweep.search.spec import StudySpec
from lrsweep.store import optuna_private
from lrsweep.store.artifacts import WEIGHTS_MIMETYPE, write_artifact
from lrsweep.outcomes import outcome
from lrsweep.store.records import AVERAGED_CURVES, CURVES, record_trial, split_curves
from lrsweep.train.checkpoint import state_dict_bytes
from lrsweep.train.device import describe_device
from lrsweep.train.precision import describe as describe_precision
from lrsweep.train.trials import AVERAGING, TrialResult


class Teller:
    """Tells a pack's trials as they finish, keeping the study's best value up to date (read
    when the pack begins, then from each trial told and what the store says before each)."""

    def __init__(self, spec: StudySpec, study: optuna.Study, device: Any, classes: int,
                 artifacts: optuna.artifacts.FileSystemArtifactStore) -> None:
        self.spec, self.study, self.device, self.classes = spec, study, device, classes
        self.artifacts = artifacts
        try:
            self.best: float | None = study.best_value
        except ValueError:  # no completed trial yet
            self.best = None

    def saw(self, best: float | None) -> None:
        """A value the study now holds (one just told, or the best read from the store, other
        workers' included): the best is the better of it and the best so far."""
        if best is not None:
            better = min if self.spec.direction == "minimize" else max
            self.best = best if self.best is None else better(self.best, best)

    def tell(self, trial: optuna.Trial, result: TrialResult) -> tuple[str, float | None]:
        """Record and tell one trial; returns its outcome (complete, pruned, diverged) and
        its value (None when pruned)."""
        spec, study = self.spec, self.study
        metric, prunes = spec.study.metric, spec.study.pruner != "none"
        curve = [getattr(m, metric) for m in result.epochs]
        # With a pruner the values were reported epoch by epoch; without, they go in now.
        intermediate = {} if prunes else {e: v for e, v in enumerate(curve) if math.isfinite(v)}
        # Curves exact in a system attribute, shown as one-line sparklines (split_curves).
        shown, curves = split_curves(user_attrs(result, self.device, self.classes))
        record_trial(study, trial, shown, intermediate,
                     {**curves, **self._write_weights(trial, result)})
        if result.status == "pruned":
            optuna_private.tell(study, trial, state=TrialState.PRUNED)
            return "pruned", None
        value = curve[-1]
        # A diverged trial is a result: the worst one. A non-finite one's loss blew up
        # (outcomes.loss_bound) even where its last evaluation came out finite: by a loss it
        # ranks last, as in the report, not ahead of trials that learned.
        blew_up = result.diverged == "nonfinite" and spec.direction == "minimize"
        if not math.isfinite(value) or blew_up:
            value = math.inf if spec.direction == "minimize" else -math.inf
        optuna_private.tell(study, trial, value)
        self.saw(value)
        return ("diverged" if result.status == "diverged" else "complete"), value

    def _write_weights(self, trial: optuna.Trial, result: TrialResult) -> dict[str, str]:
        """The trained weights as an Optuna artifact of the trial (`lrsweep export` reads it):
        the file is written here, the system attribute returned is recorded with the trial."""
        name = f"{result.config.model}-{self.study.study_name}-trial-{trial.number}.pt"
        try:  # before anything is recorded: a full disk leaves the trial running, resumable
            return write_artifact(self.study, trial, self.artifacts, name,
                                  state_dict_bytes(result.state_dict), WEIGHTS_MIMETYPE)
        except OSError as error:
            raise NotWritten(f"the weights of trial {trial.number}", error) from error


def user_attrs(result: TrialResult, device: Any, classes: int) -> dict[str, Any]:
    """A trial's curves (one value an epoch) and what it trained on, as user attributes."""
    averaging = result.config.optimizer in AVERAGING  # the posterior average's too
    field = {"epoch_seconds": "seconds"}  # the EpochMetrics field behind a curve's name
    attrs: dict[str, Any] = {
        name: [float(getattr(m, field.get(name, name))) for m in result.epochs]
        for name in CURVES if averaging or name not in AVERAGED_CURVES}
    if averaging:
        attrs["samples"] = [float(m.samples) for m in result.epochs]
    # JSON has no NaN: a missing value (no validation set, a diverged loss) is stored as null.
    attrs = {k: [v if math.isfinite(v) else None for v in vs] for k, vs in attrs.items()}
    last_acc = result.epochs[-1].train_acc if result.epochs else None
    attrs.update(seed=result.config.seed, diverged=result.diverged, status=result.status,
                 outcome=outcome(result.status, result.diverged, last_acc, classes),
                 schedule=result.config.schedule.as_dict(), device=describe_device(device),
                 pack_size=result.pack_size, classes=classes, parameters=result.parameters,
                 precision=describe_precision(result.config.precision, device),
                 convolutions=result.convolutions)
    return attrs
