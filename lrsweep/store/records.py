"""A trial's records written in one transaction: its curves, system attributes and
intermediate values, instead of Optuna's one commit per value; how its curves are stored (exact
for reports, one short line each for optuna-dashboard) and read back in either form; and the
study's finished trials and best value, counted in the store as each trial is told."""

from __future__ import annotations

import json
import math
from typing import Any, Callable

import optuna
import sqlalchemy

from lrsweep.numbers import sparkline
from lrsweep.store import optuna_private

# The per-epoch curves a trial stores (one value an epoch), in this order;
# the posterior average's only for trials whose predictions are averaged (SGLD, its control).
CURVES = ("lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "test_nll",
          "test_ece", "avg_test_acc", "avg_test_nll", "avg_test_ece", "epoch_seconds",
          "pack_trials")
AVERAGED_CURVES = ("avg_test_acc", "avg_test_nll", "avg_test_ece")
STORED_CURVES = (*CURVES, "samples")  # the lists of one value an epoch (samples: SGLD's)

# Where a trial's curves are stored exactly (a trial system attribute: {name: list}), which
# optuna-dashboard does not show; stores made before it hold the lists as user attributes.
CURVES_ATTR = "lrsweep_curves"

# The trials that ran their course, as the store counts them done: complete or pruned.
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

# optuna-dashboard 0.21 shows a user attribute's value as one text: a list as its JSON, which
# its trial table wraps at every ", " (30 floats: 601 characters in 30 lines, rows 633 px, a
# 3,192 x 22,252 px table for ex1's 35 trials at 1920 px); a string of rounded values joined
# by spaces still wraps at each space (rows 493-633 px). A sparkline whose parts are joined by
# no-break spaces stays on one line: 40 characters, 434 px; rows 153 px (now set by `schedule`
# and `device`), a 5,487 x 5,439 px table (numbers.sparkline).


def split_curves(attrs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's user attributes as stored: (user attributes with each curve replaced by its
    sparkline, the system attributes holding the curves exactly). Pass both to record_trial."""
    curves = {k: v for k, v in attrs.items() if k in STORED_CURVES and isinstance(v, list)}
    shown = {k: sparkline(v) if k in curves else v for k, v in attrs.items()}
    return shown, ({CURVES_ATTR: curves} if curves else {})


def trial_curves(trial: optuna.trial.FrozenTrial) -> dict[str, list]:
    """A stored trial's curves, exact, by name: from the system attribute split_curves writes,
    or, in stores made before it, from the lists in the user attributes."""
    stored = trial.system_attrs.get(CURVES_ATTR)
    if isinstance(stored, dict):
        return stored
    return {k: v for k, v in trial.user_attrs.items()
            if k in STORED_CURVES and isinstance(v, list)}


def record_trial(study: optuna.Study, trial: optuna.Trial, user_attrs: dict[str, Any],
                 intermediate: dict[int, float], system_attrs: dict[str, Any] | None = None
                 ) -> None:
    """Write a trial's attributes and intermediate values before it is told: on an RDB store
    in one transaction of bulk inserts instead of one transaction per value (Optuna's API
    costs ~1.2 ms a value on SQLite: ~50 ms a trial, a fifth of a GPU study's time);
    elsewhere, or should Optuna's tables change, through Optuna's public API."""
    system_attrs = system_attrs or {}
    trial_id = optuna_private.trial_id(trial)
    if _in_one_transaction(study, lambda rdb, models: _bulk_insert(
            rdb, models, trial_id, user_attrs, intermediate, system_attrs)):
        return
    for key, value in user_attrs.items():
        trial.set_user_attr(key, value)
    for key, value in system_attrs.items():
        optuna_private.set_trial_system_attr(study, trial_id, key, value)
    for step, value in intermediate.items():
        trial.report(value, step)


def set_system_attrs(study: optuna.Study, trial_ids: list[int], attrs: dict[str, Any]) -> None:
    """The same system attributes on several running trials: on an RDB store in one
    transaction (replacing any already there), not one commit per trial and key (200 for a
    GPU-sized pack of 100); elsewhere through Optuna's API."""
    def replace(rdb: optuna.storages.RDBStorage, models: Any) -> None:
        table = models.TrialSystemAttributeModel.__table__
        rows = [{"trial_id": i, "key": k, "value_json": json.dumps(v)}
                for i in trial_ids for k, v in attrs.items()]
        with rdb.engine.begin() as conn:
            conn.execute(sqlalchemy.delete(table).where(
                table.c.trial_id.in_(trial_ids), table.c.key.in_(list(attrs))))
            conn.execute(sqlalchemy.insert(table), rows)

    if _in_one_transaction(study, replace):
        return
    for trial_id in trial_ids:
        for key, value in attrs.items():
            optuna_private.set_trial_system_attr(study, trial_id, key, value)


def _in_one_transaction(study: optuna.Study, write: Callable[..., None]) -> bool:
    """Run `write(rdb, models)`: one transaction of direct inserts into Optuna's tables.
    False when the store is no RDB one, or this Optuna's tables are not known or have
    changed: nothing was committed, and the caller goes through Optuna's public API."""
    found = optuna_private.tables(study)
    if found is None:
        return False
    try:
        write(*found)
        return True
    except (AttributeError, sqlalchemy.exc.SQLAlchemyError):
        return False  # the transaction rolled back


def _bulk_insert(rdb: optuna.storages.RDBStorage, models: Any, trial_id: int,
                 user_attrs: dict[str, Any], intermediate: dict[int, float],
                 system_attrs: dict[str, Any]) -> None:
    def attr_rows(attrs: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                for k, v in attrs.items()]

    values = []
    for step, value in intermediate.items():
        stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
        values.append({"trial_id": trial_id, "step": step, "intermediate_value": stored,
                       "intermediate_value_type": kind})
    with rdb.engine.begin() as conn:
        for model, rows in ((models.TrialUserAttributeModel, attr_rows(user_attrs)),
                            (models.TrialSystemAttributeModel, attr_rows(system_attrs)),
                            (models.TrialIntermediateValueModel, values)):
            if rows:
                conn.execute(sqlalchemy.insert(model.__table__), rows)


def finished_and_best(study: optuna.Study) -> tuple[int, float | None]:
    """How many of the study's trials, every worker's, are finished (complete or pruned) now,
    and the best finite value among the complete ones: two aggregates on Optuna's tables
    (cheap enough for every trial told), else Optuna's public reads."""
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    found = optuna_private.tables(study)
    if found is not None:
        rdb, models = found
        trials, values = models.TrialModel.__table__, models.TrialValueModel.__table__
        ours = trials.c.study_id == optuna_private.study_id(study)
        best = (sqlalchemy.func.max if maximize else sqlalchemy.func.min)(values.c.value)
        try:
            with rdb.engine.connect() as conn:
                count = conn.execute(sqlalchemy.select(sqlalchemy.func.count()).where(
                    ours, trials.c.state.in_(FINISHED))).scalar_one()
                value = conn.execute(sqlalchemy.select(best).select_from(
                    values.join(trials, values.c.trial_id == trials.c.trial_id)).where(
                    ours, trials.c.state == optuna.trial.TrialState.COMPLETE,
                    values.c.objective == 0)).scalar_one()
            return count, value
        except (AttributeError, sqlalchemy.exc.SQLAlchemyError):
            pass  # this Optuna's tables are not the ones known: the public reads
    done = study.get_trials(deepcopy=False, states=FINISHED)
    values = [t.value for t in done if t.state == optuna.trial.TrialState.COMPLETE
              and t.value is not None and math.isfinite(t.value)]
    return len(done), ((max if maximize else min)(values) if values else None)
