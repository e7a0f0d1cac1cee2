"""Optuna samplers and pruners from a study file, and the grid sampler for conditional spaces.

Optuna's GridSampler takes the Cartesian product of every axis, so a constant-rate trial
would be repeated once per decay exponent it never uses. ConditionalGridSampler walks the
spec's distinct points instead (`StudySpec.grid()`), each once.
"""

from __future__ import annotations

import json
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from .spec import StudySpec
from .storage import rdb_of

GRID_POINT_ATTR = "lrsweep_grid_point"
_CLAIM_PREFIX = "lrsweep_grid:"  # + the point's sorted JSON: a study system attribute per point
# A grid point is taken while a trial holds it or once it finished; failed ones are re-run.
_TAKEN = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)


def make_sampler(spec: StudySpec, n_existing: int) -> optuna.samplers.BaseSampler:
    """The study file's sampler. Its seed moves on with the trials already stored, so a
    resumed random or TPE study does not replay the draws of its first session."""
    seed = spec.study.sampler_seed + n_existing
    name = spec.study.sampler
    if name == "grid":
        return ConditionalGridSampler(spec.grid())
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        # CMA-ES has no categorical axes; those go to its independent (random) sampler.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    # constant_liar: trials running in other workers count as pending, not as free points.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    if spec.study.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if spec.study.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.train.epochs)
    return optuna.pruners.NopPruner()


class ConditionalGridSampler(optuna.samplers.BaseSampler):
    """Each of a list of grid points once, in order; a point a trial failed on is retried.

    On an RDB store a point is claimed atomically (a row with a unique key in the study's
    system attributes), so workers asking at the same moment never take the same point."""

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
        if GRID_POINT_ATTR in trial.system_attrs:
            self._assigned[trial._trial_id] = trial.system_attrs[GRID_POINT_ATTR]
            return
        if "fixed_params" in trial.system_attrs:
            return
        if self._holders is None:
            self._holders = _holders(study)
        point = None
        for candidate in self._points:
            key = json.dumps(candidate, sort_keys=True)
            if key in self._holders:
                continue
            won = _claim(study, candidate, trial)
            self._holders[key] = trial._trial_id if won else -1  # -1: another worker's
            if won:
                point = candidate
                break
        if point is None:  # every point taken: workers overshooting; the study stops them
            point = self._points[trial.number % len(self._points)]
            study._storage.set_trial_system_attr(trial._trial_id, GRID_POINT_ATTR, point)
        self._assigned[trial._trial_id] = point

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        point = self._assigned.get(trial._trial_id) or trial.system_attrs[GRID_POINT_ATTR]
        if param_name not in point:
            raise ValueError(f"parameter {param_name!r} is not on the grid point {point}")
        return point[param_name]


def _holders(study: optuna.Study) -> dict[str, int]:
    """The grid points (as sorted JSON) that live or finished trials hold, with their
    holders' trial ids."""
    backend = rdb_of(study)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return {json.dumps(t.system_attrs[GRID_POINT_ATTR], sort_keys=True): t._trial_id
                for t in study.get_trials(deepcopy=False, states=_TAKEN)
                if GRID_POINT_ATTR in t.system_attrs}
    # On an RDB store the claim rows are the truth: read them and their holders' states, two
    # light queries, not every running trial with all its attributes.
    from optuna.storages._rdb import models

    attrs = models.StudySystemAttributeModel.__table__
    trials = models.TrialModel.__table__
    with backend.engine.connect() as conn:
        claims = conn.execute(sqlalchemy.select(attrs.c.key, attrs.c.value_json).where(
            attrs.c.study_id == study._study_id, attrs.c.key.startswith(_CLAIM_PREFIX))).all()
        states = dict(conn.execute(sqlalchemy.select(trials.c.trial_id, trials.c.state).where(
            trials.c.study_id == study._study_id)).all())
    return {key[len(_CLAIM_PREFIX):]: holder for key, value in claims
            if states.get(holder := json.loads(value)) in _TAKEN}


def _claim(study: optuna.Study, point: dict[str, Any], trial: FrozenTrial) -> bool:
    """Atomically make `trial` the holder of `point` and record the point on the trial (one
    transaction: a trial never holds a point it does not know of): insert the point's key,
    or take it over from a holder that failed. False when another live trial holds it."""
    backend = rdb_of(study)
    if not isinstance(backend, optuna.storages.RDBStorage):
        # One process, one store in memory: nobody to race with.
        study._storage.set_trial_system_attr(trial._trial_id, GRID_POINT_ATTR, point)
        return True
    from optuna.storages._rdb import models

    attrs = models.StudySystemAttributeModel.__table__
    key = f"{_CLAIM_PREFIX}{json.dumps(point, sort_keys=True)}"
    mine = json.dumps(trial._trial_id)
    # A new trial has no system attribute of this key yet (before_trial checked): an insert.
    record = sqlalchemy.insert(models.TrialSystemAttributeModel.__table__).values(
        trial_id=trial._trial_id, key=GRID_POINT_ATTR, value_json=json.dumps(point))
    try:
        with backend.engine.begin() as conn:
            conn.execute(sqlalchemy.insert(attrs).values(study_id=study._study_id, key=key,
                                                         value_json=mine))
            conn.execute(record)
        return True
    except sqlalchemy.exc.IntegrityError:
        pass
    with backend.engine.begin() as conn:
        holder = conn.execute(sqlalchemy.select(attrs.c.value_json).where(
            attrs.c.study_id == study._study_id, attrs.c.key == key)).scalar()
    if holder is None or backend.get_trial(json.loads(holder)).state in _TAKEN:
        return False
    with backend.engine.begin() as conn:  # compare-and-set: of several takers, one wins
        won = conn.execute(sqlalchemy.update(attrs).where(
            attrs.c.study_id == study._study_id, attrs.c.key == key,
            attrs.c.value_json == holder).values(value_json=mine)).rowcount == 1
        if won:
            conn.execute(record)
    return won
