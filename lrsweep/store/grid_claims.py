"""Grid points claimed atomically: a study system attribute per point (a unique key), so
workers asking at the same moment never take the same point, and a point whose trial failed
is taken over by a compare-and-set."""

from __future__ import annotations

import json
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from lrsweep.store import optuna_private

GRID_POINT_ATTR = "lrsweep_grid_point"
_CLAIM_PREFIX = "lrsweep_grid:"  # + the point's sorted JSON: a study system attribute per point
# A grid point is taken while a trial holds it or once it finished; failed ones are re-run.
TAKEN = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING)


def holders(study: optuna.Study) -> dict[str, int]:
    """The grid points (as sorted JSON) that live or finished trials hold, with their
    holders' trial ids."""
    if not optuna_private.is_rdb(study):
        return {json.dumps(t.system_attrs[GRID_POINT_ATTR], sort_keys=True):
                optuna_private.trial_id(t)
                for t in study.get_trials(deepcopy=False, states=TAKEN)
                if GRID_POINT_ATTR in t.system_attrs}
    # On an RDB store the claim rows are the truth: read them and their holders' states, two
    # light queries, not every running trial with all its attributes.
    backend, models = optuna_private.require_tables(study, "a grid study's claims")
    study_id = optuna_private.study_id(study)
    attrs = models.StudySystemAttributeModel.__table__
    trials = models.TrialModel.__table__
    with backend.engine.connect() as conn:
        claims = conn.execute(sqlalchemy.select(attrs.c.key, attrs.c.value_json).where(
            attrs.c.study_id == study_id, attrs.c.key.startswith(_CLAIM_PREFIX))).all()
        states = dict(conn.execute(sqlalchemy.select(trials.c.trial_id, trials.c.state).where(
            trials.c.study_id == study_id)).all())
    return {key[len(_CLAIM_PREFIX):]: holder for key, value in claims
            if states.get(holder := json.loads(value)) in TAKEN}


def claim(study: optuna.Study, point: dict[str, Any], trial: FrozenTrial) -> bool:
    """Atomically make `trial` the holder of `point` and record the point on the trial (one
    transaction: a trial never holds a point it does not know of): insert the point's key,
    or take it over from a holder that failed. False when another live trial holds it."""
    trial_id = optuna_private.trial_id(trial)
    if not optuna_private.is_rdb(study):
        # One process, one store in memory: nobody to race with.
        optuna_private.set_trial_system_attr(study, trial_id, GRID_POINT_ATTR, point)
        return True
    backend, models = optuna_private.require_tables(study, "a grid study's claims")
    study_id = optuna_private.study_id(study)
    attrs = models.StudySystemAttributeModel.__table__
    key = f"{_CLAIM_PREFIX}{json.dumps(point, sort_keys=True)}"
    mine = json.dumps(trial_id)
    # A new trial has no system attribute of this key yet (before_trial checked): an insert.
    record = sqlalchemy.insert(models.TrialSystemAttributeModel.__table__).values(
        trial_id=trial_id, key=GRID_POINT_ATTR, value_json=json.dumps(point))
    try:
        with backend.engine.begin() as conn:
            conn.execute(sqlalchemy.insert(attrs).values(study_id=study_id, key=key,
                                                         value_json=mine))
            conn.execute(record)
        return True
    except sqlalchemy.exc.IntegrityError:
        pass
    with backend.engine.begin() as conn:
        holder = conn.execute(sqlalchemy.select(attrs.c.value_json).where(
            attrs.c.study_id == study_id, attrs.c.key == key)).scalar()
    if holder is None or backend.get_trial(json.loads(holder)).state in TAKEN:
        return False
    with backend.engine.begin() as conn:  # compare-and-set: of several takers, one wins
        won = conn.execute(sqlalchemy.update(attrs).where(
            attrs.c.study_id == study_id, attrs.c.key == key,
            attrs.c.value_json == holder).values(value_json=mine)).rowcount == 1
        if won:
            conn.execute(record)
    return won
