"""One pack of trials, from its lease to its trials told: the pack's members recorded (so
that a takeover regroups them), trained by the engine with their intermediate values reported
(pruning) and their state checkpointed each epoch, then each trial's curves, weights and value
stored and told to Optuna.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from lrsweep.search.interrupt import StopAfterEpoch
from lrsweep.search.space import suggest, trial_config
from lrsweep.search.spec import StudySpec
from lrsweep.search.takeover import PACK_ATTR, pack_name
from lrsweep.store import optuna_private
from lrsweep.store.artifacts import WEIGHTS_MIMETYPE, write_artifact
from lrsweep.store.records import AVERAGED_CURVES, CURVES, record_trial, set_system_attrs
from lrsweep.train import engine
from lrsweep.train.checkpoint import BackgroundWriter, Checkpoints, state_dict_bytes
from lrsweep.train.data import Splits
from lrsweep.train.device import describe_device
from lrsweep.train.trials import (AVERAGING, EpochMetrics, PackState, Resume, TrialConfig,
                                  TrialResult)

OWNER_ATTR = "lrsweep_owner"      # host:pid of the process that holds its lease
_OWNER = f"{platform.node()}:{os.getpid()}"


class Progress:
    """What `run` tells about its work; this base shows nothing, the command line renders it."""

    def start(self, spec: StudySpec, done: int) -> None: ...
    def resumed(self, number: int, epochs_done: int) -> None: ...
    def stopping(self) -> None: ...
    def waiting(self, running: int) -> None: ...
    def pack_started(self, trials: list[tuple[int, dict[str, Any]]], epochs: int) -> None: ...
    def pack_epoch(self, metrics: dict[int, EpochMetrics]) -> None: ...
    def trial_finished(self, number: int, state: str, value: float | None,
                       best: float | None) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Work:
    """What every pack of one run shares."""

    spec: StudySpec
    study: optuna.Study
    splits: Splits
    device: Any                      # the torch.device it trains on
    progress: Progress
    checkpoints: Checkpoints
    artifacts: optuna.artifacts.FileSystemArtifactStore


def run_pack(work: Work, name: str | None, trials: list[optuna.Trial],
             resumes: list[Resume | None]) -> None:
    """Train `trials` as one pack and tell each of them. `name` is the pack's checkpoint
    name when it is taken over, None for a new pack. A crash fails the trials; a Ctrl-C
    leaves them to be continued from the last epoch's checkpoint."""
    spec, study = work.spec, work.study
    ids = [optuna_private.trial_id(t) for t in trials]
    attrs: dict[str, Any] = {OWNER_ATTR: _OWNER}  # the lease's holder, beside its heartbeat
    if name is None:  # a new pack: remember who trains together, for a takeover
        name = pack_name(optuna_private.frozen_trial(study, ids[0]))
        attrs[PACK_ATTR] = ids
    set_system_attrs(study, ids, attrs)
    params = [suggest(spec, t) for t in trials]
    configs = [trial_config(spec, p) for p in params]
    work.progress.pack_started([(t.number, p) for t, p in zip(trials, params)],
                               spec.train.epochs)
    checkpoint = BackgroundWriter(work.checkpoints, study.study_name, name, ids)
    results = _train(work, trials, configs, resumes, checkpoint)
    _tell_all(work, trials, results)
    checkpoint.remove()


def _train(work: Work, trials: list[optuna.Trial], configs: list[TrialConfig],
           resumes: list[Resume | None], checkpoint: BackgroundWriter) -> list[TrialResult]:
    """The engine's run of the pack: each epoch's values reported for pruning, the pack's
    state checkpointed on a thread; a Ctrl-C stops once that epoch is on disk."""
    metric, progress = work.spec.study.metric, work.progress
    prunes = work.spec.study.pruner != "none"

    def on_epoch(metrics: dict[int, EpochMetrics]) -> list[int]:
        progress.pack_epoch({trials[i].number: m for i, m in metrics.items()})
        if not prunes:  # without a pruner nobody reads them now: stored once, at the end
            return []
        stop = []
        for i, m in metrics.items():
            value = getattr(m, metric)
            if math.isfinite(value):
                trials[i].report(value, m.epoch)
                if trials[i].should_prune():
                    stop.append(i)
        return stop

    def on_states(state: PackState) -> None:
        checkpoint.save(state)
        if ctrl_c.requested:
            checkpoint.wait()  # the epoch is safe on disk: now stop
            raise KeyboardInterrupt

    try:  # the caller holds the leases (`Leases`), and hands them back on a Ctrl-C
        with StopAfterEpoch(progress) as ctrl_c:
            results = engine.train_pack(configs, work.splits, on_epoch=on_epoch,
                                        on_states=on_states, resume=resumes)
        checkpoint.wait()  # a failed write of the last epoch fails the pack, as any crash
    except KeyboardInterrupt:
        # A second Ctrl-C came mid-epoch: the last finished epoch's write still lands (should
        # it fail, the epoch before it is on disk).
        with contextlib.suppress(Exception):
            checkpoint.wait()
        raise  # the last epochs are checkpointed: the next run continues from them
    except BaseException:
        # A crash is no interruption: the trials fail, and a re-run trains them anew.
        for trial in trials:
            work.study.tell(trial, state=TrialState.FAIL)
        checkpoint.remove()
        raise
    return results


def _tell_all(work: Work, trials: list[optuna.Trial], results: list[TrialResult]) -> None:
    """Each trial's curves, weights and intermediate values stored, then its value told."""
    spec, study = work.spec, work.study
    metric, prunes = spec.study.metric, spec.study.pruner != "none"
    # The best value so far, read once a pack (not once a trial: a store read each) and
    # brought up to date with the pack's own results as Optuna's best_value would be.
    best = _best(study)
    better = min if spec.direction == "minimize" else max
    for trial, result in zip(trials, results):
        curve = [getattr(m, metric) for m in result.epochs]
        intermediate = {} if prunes else {e: v for e, v in enumerate(curve) if math.isfinite(v)}
        record_trial(study, trial, _user_attrs(result, work.device, work.splits.classes),
                     intermediate, _write_weights(work, trial, result))
        if result.status == "pruned":
            optuna_private.tell(study, trial, state=TrialState.PRUNED)
            value, state = None, "pruned"
        else:
            value = curve[-1]
            if not math.isfinite(value):  # a diverged trial is a result: the worst one
                value = math.inf if spec.direction == "minimize" else -math.inf
            optuna_private.tell(study, trial, value)
            state = "diverged" if result.status == "diverged" else "complete"
            best = value if best is None else better(best, value)
        work.progress.trial_finished(trial.number, state, value, best)


def _write_weights(work: Work, trial: optuna.Trial, result: TrialResult
                   ) -> dict[str, str]:
    """The trained weights as an Optuna artifact of the trial (`lrsweep export` reads it):
    the file is written here, the system attribute returned is recorded with the trial."""
    name = f"{result.config.model}-{work.study.study_name}-trial-{trial.number}.pt"
    return write_artifact(work.study, trial, work.artifacts, name,
                          state_dict_bytes(result.state_dict), WEIGHTS_MIMETYPE)


def _user_attrs(result: TrialResult, device: Any, classes: int
                ) -> dict[str, Any]:
    averaging = result.config.optimizer in AVERAGING  # the posterior average's too
    field = {"epoch_seconds": "seconds"}  # the EpochMetrics field behind a curve's name
    attrs: dict[str, Any] = {
        name: [float(getattr(m, field.get(name, name))) for m in result.epochs]
        for name in CURVES if averaging or name not in AVERAGED_CURVES}
    if averaging:
        attrs["samples"] = [float(m.samples) for m in result.epochs]
    # JSON has no NaN: a missing value (no validation set, a diverged loss) is stored as null.
    attrs = {k: [v if math.isfinite(v) else None for v in vs] for k, vs in attrs.items()}
    attrs.update(seed=result.config.seed, diverged=result.diverged, status=result.status,
                 schedule=result.config.schedule.as_dict(), device=describe_device(device),
                 pack_size=result.pack_size, classes=classes, parameters=result.parameters)
    return attrs


def _best(study: optuna.Study) -> float | None:
    try:
        return study.best_value
    except ValueError:  # no completed trial yet
        return None
