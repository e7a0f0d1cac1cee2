"""Optuna samplers from a study file, and the grid sampler for conditional spaces.

Optuna's GridSampler takes the Cartesian product of every axis, so a constant-rate trial
would be repeated once per decay exponent it never uses. ConditionalGridSampler walks the
spec's distinct points instead (`StudySpec.grid()`), each once.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from lrsweep.search.spec import StudySpec
from lrsweep.store import optuna_private
from lrsweep.search.trial_seeds import TrialSeededSampler
from lrsweep.store.grid_claims import GRID_POINT_ATTR, claim, holders


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The study file's sampler. Random draws are seeded per trial, by `sampler_seed` and the
    trial's number (`trial_seeds`): workers sharing a study draw different trials, and a
    resumed study does not replay the draws of its first session."""
    name = spec.study.sampler
    if name == "grid":
        return ConditionalGridSampler(spec.grid())
    return TrialSeededSampler(_SAMPLERS[name], spec.study.sampler_seed)


_SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    # GP and CMA-ES search the dimensions every trial has; a scheduler's own (exponent, …)
    # go to their independent (random) sampler, as the README says, not warned of per trial.
    "gp": lambda seed: optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False),
    # CMA-ES has no categorical axes; those go to its independent (random) sampler.
    "cmaes": lambda seed: optuna.samplers.CmaEsSampler(seed=seed,
                                                       warn_independent_sampling=False),
    # constant_liar: trials running in other workers count as pending, not as free points.
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, constant_liar=True),
}


# Trials an adaptive sampler (TPE, GP, CMA-ES) has running at once, however wide the pack:
# each suggestion sees every trial told before it, and the running ones as pending (TPE's
# constant liar). Measured with results/benchmarks/search-quality.py (README, "Slots"), 60
# sampler seeds: 8 in flight found configurations below sequential TPE's by 0.0009 [0.0001,
# 0.0018], on about the same trial-epochs; 32 spent a quarter fewer and found worse, by 0.0023
# [0.0013, 0.0033] against 8 (an earlier 20 seeds could not tell 32 from 8, and 32 had been
# the default). Grid and random studies fill every slot, so a GPU's wide packs stay wide.
ADAPTIVE_IN_FLIGHT = 8


def in_flight(spec: StudySpec, width: int) -> int:
    """How many of a pack's `width` slots may hold trials at once: all of them for grid and
    random studies (their suggestions learn nothing), ADAPTIVE_IN_FLIGHT for the others."""
    if spec.study.sampler in ("grid", "random"):
        return width
    return min(width, ADAPTIVE_IN_FLIGHT)


class ConditionalGridSampler(optuna.samplers.BaseSampler):
    """Each of a list of grid points once, in order; a point a trial failed on is retried.

    On an RDB store a point is claimed atomically (a row with a unique key in the study's
    system attributes), so workers asking at the same moment never take the same point. A
    trial asked when every point is taken (workers racing for the last ones) gets none:
    `surplus.within_total` fails it untrained."""

    def __init__(self, points: list[dict[str, Any]]) -> None:
        self._points = points
        # The point of each trial this sampler began, by trial id: sample_independent is given
        # a trial whose system attributes are read from the store on first use (one full
        # trial read per parameter; a GPU-sized pack of 100 spent ~0.5 s in them).
        self._assigned: dict[int, dict[str, Any]] = {}
        # Who holds which point (sorted JSON → trial id), read at this sampler's first trial
        # and kept up to date with its own claims: a pack's asks share one read. A point
        # another worker claimed since is found out by its claim failing.
        self._holders: dict[str, int] | None = None

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial_id = optuna_private.trial_id(trial)
        if GRID_POINT_ATTR in trial.system_attrs:
            self._assigned[trial_id] = trial.system_attrs[GRID_POINT_ATTR]
            return
        if "fixed_params" in trial.system_attrs:
            return
        if self._holders is None:
            self._holders = holders(study)
        point = None
        for candidate in self._points:
            key = json.dumps(candidate, sort_keys=True)
            if key in self._holders:
                continue
            won = claim(study, candidate, trial)
            self._holders[key] = trial_id if won else -1  # -1: another worker's
            if won:
                point = candidate
                break
        if point is not None:  # else every point is taken: the trial is surplus
            self._assigned[trial_id] = point

    def holds_a_point(self, trial: optuna.Trial | FrozenTrial) -> bool:
        """Whether the trial claimed a grid point (this sampler began it, or it was taken over
        with its point recorded)."""
        trial_id = optuna_private.trial_id(trial)
        return trial_id in self._assigned or GRID_POINT_ATTR in getattr(trial, "system_attrs", {})

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        point = (self._assigned.get(optuna_private.trial_id(trial))
                 or trial.system_attrs.get(GRID_POINT_ATTR))
        if point is None:
            raise ValueError(f"trial {trial.number} holds no grid point (every point was "
                             "taken when it was asked): it is surplus, not to be trained")
        if param_name not in point:
            raise ValueError(f"parameter {param_name!r} is not on the grid point {point}")
        return point[param_name]
