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

Optuna's successive halving (inside its HyperbandPruner) writes a trial's value into a rung
when it judges the trial, and compares it with the values written before: in a pack the first
trial judged at a rung passes it alone, whatever its pack-mates reported; and a trial first
judged after its warmup enters every rung it passed with the value of the epoch it is judged
at, later and higher than the rung's own epoch, raising the bar for the trials judged there
after it. `LockstepHyperbandPruner` keeps Optuna's brackets and rungs and writes nothing: a
rung's competitors are the values every trial of the bracket reported at the rung's epoch.
"""

from __future__ import annotations

import binascii
import math

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from lrsweep.search.spec import StudySpec
from lrsweep.train.trials import TrialConfig

AFTER_WARMUP = 1    # epochs a trial trains past its warmup before a pruner may judge it
STARTUP_PEERS = 5   # trials that must have reached an epoch before anyone is judged at it
PEERS = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
REDUCTION_FACTOR = 3  # successive halving keeps the best third at each rung (Optuna's default)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    if spec.study.pruner == "median":
        return LockstepMedianPruner(n_startup_trials=STARTUP_PEERS)
    if spec.study.pruner == "hyperband":
        return LockstepHyperbandPruner(max_resource=spec.train.epochs)  # rungs in epochs
    return optuna.pruners.NopPruner()


def judged_from(config: TrialConfig, steps_per_epoch: int) -> int:
    """The first epoch (0-based) at which a pruner may judge the trial: the epoch after the
    one in which its lag and warmup end, plus AFTER_WARMUP. Schedules count epochs or steps
    (`unit`); a warmup of W steps ends in epoch ⌈W / steps_per_epoch⌉ − 1."""
    schedule = config.schedule
    units = schedule.lag + schedule.warmup_steps
    per_epoch = 1 if config.unit == "epoch" else steps_per_epoch
    return math.ceil(units / per_epoch) + AFTER_WARMUP


class LockstepPruner(optuna.pruners.BasePruner):
    """A pruner that decides from the trials' reported values alone (it writes nothing), so
    that a pack's verdicts can be made from one read of the study (`judge`)."""

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.decide(study, trial, study.get_trials(deepcopy=False, states=PEERS))

    def decide(self, study: optuna.Study, trial: FrozenTrial,
               everyone: list[FrozenTrial]) -> bool:
        """Whether to prune `trial`, given the study's trials in a PEERS state."""
        raise NotImplementedError


class LockstepMedianPruner(LockstepPruner):
    """Optuna's MedianPruner (a trial's best value so far against the median of the others'
    values at its last step) with every other trial as a peer, complete, pruned or running,
    once at least `n_startup_trials` of them reached the step. A trial whose values are all
    NaN is pruned; other trials' NaN are left out."""

    def __init__(self, n_startup_trials: int = STARTUP_PEERS) -> None:
        if n_startup_trials < 1:
            raise ValueError(f"n_startup_trials = {n_startup_trials} must be ≥ 1")
        self.n_startup_trials = n_startup_trials

    def decide(self, study: optuna.Study, trial: FrozenTrial,
               everyone: list[FrozenTrial]) -> bool:
        step = trial.last_step
        if step is None:
            return False
        values = [v for v in trial.intermediate_values.values() if not math.isnan(v)]
        if not values:
            return True
        maximize = study.direction == StudyDirection.MAXIMIZE
        best = max(values) if maximize else min(values)
        peers = _values_at(step, [t for t in everyone if t.number != trial.number])
        if len(peers) < self.n_startup_trials:
            return False
        median = _median(peers)
        return best < median if maximize else best > median


class LockstepHyperbandPruner(LockstepPruner):
    """Hyperband (Li et al., 2018) laid out as Optuna's HyperbandPruner lays it out, judged
    in lockstep. Bracket b runs successive halving with rungs at the steps
    min_resource · η^(b + r), r = 0, 1, …; trials go to brackets by Optuna's own rule (its
    CRC-32 of study name and trial number over the brackets' budgets), so a trial has the
    bracket Optuna would give it, on any worker and after any resume. At a rung a trial is
    compared with the value at that same step of every trial of its bracket that reached it,
    complete, pruned or running (itself included), and kept if among the best
    max(1, ⌊n / η⌋) of those n; at other steps it is not judged. A trial whose grace covers a
    rung is not judged there (pack_run): it goes on to the next."""

    def __init__(self, max_resource: int, min_resource: int = 1,
                 reduction_factor: int = REDUCTION_FACTOR) -> None:
        if min_resource < 1 or max_resource < min_resource:
            raise ValueError(f"resources must satisfy 1 ≤ min_resource ({min_resource}) ≤ "
                             f"max_resource ({max_resource})")
        if reduction_factor < 2:
            raise ValueError(f"reduction_factor = {reduction_factor} must be ≥ 2")
        self.min_resource, self.max_resource = min_resource, max_resource
        self.reduction_factor = reduction_factor
        # Optuna's HyperbandPruner: its number of brackets, and each one's share of trials
        # (bracket b stops early from rung b; the most aggressive bracket takes the most).
        n = math.floor(math.log(max_resource / min_resource, reduction_factor)) + 1
        self.budgets = [math.ceil(n * reduction_factor ** (n - 1 - b) / (n - b))
                        for b in range(n)]

    def bracket(self, study_name: str, number: int) -> int:
        """The bracket of trial `number` (Optuna's `_get_bracket_id`)."""
        n = binascii.crc32(f"{study_name}_{number}".encode()) % sum(self.budgets)
        for bracket, budget in enumerate(self.budgets):
            n -= budget
            if n < 0:
                return bracket
        raise AssertionError("unreachable: n < sum of the budgets")

    def is_rung(self, bracket: int, step: int) -> bool:
        """Whether `step` is one of the bracket's rungs."""
        rung = self.min_resource * self.reduction_factor ** bracket
        while rung < step:
            rung *= self.reduction_factor
        return rung == step

    def decide(self, study: optuna.Study, trial: FrozenTrial,
               everyone: list[FrozenTrial]) -> bool:
        step = trial.last_step
        bracket = self.bracket(study.study_name, trial.number)
        if step is None or not self.is_rung(bracket, step):
            return False
        value = trial.intermediate_values[step]
        if math.isnan(value):
            return True
        rivals = [t for t in everyone if t.number != trial.number
                  and self.bracket(study.study_name, t.number) == bracket]
        competing = sorted(_values_at(step, rivals) + [value],
                           reverse=study.direction == StudyDirection.MAXIMIZE)
        kept = max(1, len(competing) // self.reduction_factor)
        worst_kept = competing[kept - 1]
        if study.direction == StudyDirection.MAXIMIZE:
            return value < worst_kept
        return value > worst_kept


def judge(study: optuna.Study, trials: list[optuna.Trial]) -> list[bool]:
    """Whether to prune each of a pack's trials, all of whose values for the epoch are in the
    store. A lockstep pruner reads the study once for them all: each `should_prune` reads
    every running trial with its values, 0.13 s a call with 100 running on SQLite (13 s an
    epoch for a pack of 100; results/benchmarks/search-quality.py found it). Other pruners
    are asked trial by trial, as Optuna asks them."""
    pruner = study.pruner
    if not isinstance(pruner, LockstepPruner):
        return [trial.should_prune() for trial in trials]
    everyone = study.get_trials(deepcopy=False, states=PEERS)
    by_number = {t.number: t for t in everyone}
    return [pruner.decide(study, by_number[trial.number], everyone) for trial in trials]


def _values_at(step: int, trials: list[FrozenTrial]) -> list[float]:
    """The trials' values at `step`, for those that reported one that is not NaN."""
    return [t.intermediate_values[step] for t in trials
            if step in t.intermediate_values and not math.isnan(t.intermediate_values[step])]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
