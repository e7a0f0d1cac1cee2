"""A trial's records written in one transaction: its curves, system attributes and
intermediate values, instead of Optuna's one commit per value."""

from __future__ import annotations

import json
from typing import Any, Callable

import optuna
import sqlalchemy

from lrsweep.store import optuna_private

# The per-epoch curves a trial stores (user attributes, one value an epoch), in this order;
# the posterior average's only for trials whose predictions are averaged (SGLD, its control).
CURVES = ("lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "test_nll",
          "test_ece", "avg_test_acc", "avg_test_nll", "avg_test_ece", "epoch_seconds")
AVERAGED_CURVES = ("avg_test_acc", "avg_test_nll", "avg_test_ece")


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
