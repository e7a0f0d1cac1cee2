"""Pruning in lockstep: a trial is judged against every trial that reached the same epoch,
running ones included, and never before its own warmup has ended.

Optuna's MedianPruner compares a trial only with COMPLETE trials. A pack trains its trials
side by side, so none of them is complete while the others are judged: a pack of 100 (a GPU's)
was never pruned at all, and on a CPU the first packs were judged against a handful of
finished trials only. `LockstepMedianPruner` takes the median of every trial's value at the
step, whatever its state; the study loop reports all of a pack's values for an epoch before it
asks any of them whether to stop (`pack_run`), so pack-mates count for each other.

A trial inside its warmup (or its lag) trains at a rate on its way up, and its early accuracy
says nothing of where it will end: in the reduced-scale joint search the median pruner cut
near-twins of the winner at epochs 3 and 4 of a 10-epoch warmup. `judged_from` is the first
epoch at which a trial may be judged: its warmup's end, plus one epoch for every pruner
(`AFTER_WARMUP`, the pruners' own warm-up, which the pruners below therefore leave at 0).
"""

from __future__ import annotations

import math

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from lrsweep.search.spec import StudySpec
from lrsweep.train.trials import TrialConfig

AFTER_WARMUP = 1    # epochs a trial trains past its warmup before a pruner may judge it
STARTUP_PEERS = 5   # trials that must have reached an epoch before anyone is judged at it
PEERS = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    if spec.study.pruner == "median":
        return LockstepMedianPruner(n_startup_trials=STARTUP_PEERS)
    if spec.study.pruner == "hyperband":
        # Optuna's successive halving is asynchronous already: a rung's competitors are every
        # trial that reached it, running or not. Rungs in epochs, from the first.
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.train.epochs)
    return optuna.pruners.NopPruner()


def judged_from(config: TrialConfig, steps_per_epoch: int) -> int:
    """The first epoch (0-based) at which a pruner may judge the trial: the epoch after the
    one in which its lag and warmup end, plus AFTER_WARMUP. Schedules count epochs or steps
    (`unit`); a warmup of W steps ends in epoch ⌈W / steps_per_epoch⌉ − 1."""
    schedule = config.schedule
    units = schedule.lag + schedule.warmup_steps
    per_epoch = 1 if config.unit == "epoch" else steps_per_epoch
    return math.ceil(units / per_epoch) + AFTER_WARMUP


class LockstepMedianPruner(optuna.pruners.BasePruner):
    """Optuna's MedianPruner (a trial's best value so far against the median of the others'
    values at its last step) with every other trial as a peer, complete, pruned or running,
    once at least `n_startup_trials` of them reached the step. A trial whose values are all
    NaN is pruned; other trials' NaN are left out."""

    def __init__(self, n_startup_trials: int = STARTUP_PEERS) -> None:
        if n_startup_trials < 1:
            raise ValueError(f"n_startup_trials = {n_startup_trials} must be ≥ 1")
        self.n_startup_trials = n_startup_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.decide(study.direction, trial,
                           study.get_trials(deepcopy=False, states=PEERS))

    def decide(self, direction: StudyDirection, trial: FrozenTrial,
               everyone: list[FrozenTrial]) -> bool:
        """`prune` given the study's trials, read once for a whole pack (`judge`)."""
        step = trial.last_step
        if step is None:
            return False
        values = [v for v in trial.intermediate_values.values() if not math.isnan(v)]
        if not values:
            return True
        maximize = direction == StudyDirection.MAXIMIZE
        best = max(values) if maximize else min(values)
        peers = [t.intermediate_values[step] for t in everyone
                 if t.number != trial.number and step in t.intermediate_values
                 and not math.isnan(t.intermediate_values[step])]
        if len(peers) < self.n_startup_trials:
            return False
        median = _median(peers)
        return best < median if maximize else best > median


def judge(study: optuna.Study, trials: list[optuna.Trial]) -> list[bool]:
    """Whether to prune each of a pack's trials, all of whose values for the epoch are in the
    store. The lockstep pruner reads the study once for them all: each `should_prune` reads
    every running trial with its values, 0.13 s a call with 100 running on SQLite (13 s an
    epoch for a pack of 100; results/benchmarks/search-quality.py found it). Other pruners
    are asked trial by trial, as Optuna asks them."""
    pruner = study.pruner
    if not isinstance(pruner, LockstepMedianPruner):
        return [trial.should_prune() for trial in trials]
    everyone = study.get_trials(deepcopy=False, states=PEERS)
    by_number = {t.number: t for t in everyone}
    return [pruner.decide(study.direction, by_number[trial.number], everyone)
            for trial in trials]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
