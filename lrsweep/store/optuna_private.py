"""The one door to Optuna's private API.

lrsweep reaches past Optuna's public API in a few places, each for a measured reason (the
bookkeeping of a GPU-sized pack, results/benchmarks/store-cost.py) or because Optuna has no
public way (atomic compare-and-sets on its tables, for leases and grid claims). Every such use
is here and nowhere else, behind one check: the Optuna major versions lrsweep was tested with
(`TESTED_MAJORS`, also pyproject.toml's pin). Where that check fails, or a private piece is
gone, each use takes its public fallback, or stops with one line naming the Optuna version:

| use here | what it reaches | why | without it |
|---|---|---|---|
| `tables()` | `optuna.storages._rdb.models` and the RDB storage under `Study._storage` | a trial's records in one transaction; heartbeats, takeovers, grid claims as compare-and-sets | records: one call per value (public API); leases and claims: `unsupported` |
| `new_trial` | `Study._thread_local`, `Study._storage.create_new_trial` | ask a pack without re-reading every running trial per ask (quadratic in the pack) | `Study.ask` |
| `tell` | `optuna.study._tell._tell_with_warning` | tell without reading the finished trial back | `Study.tell` |
| `artifact_attrs` | `optuna.artifacts._upload` | a weights artifact recorded in the trial's own transaction | `optuna.artifacts.upload_artifact` |
| `trial_id`, `study_id` | `Trial._trial_id`, `Study._study_id` | rows of Optuna's tables are keyed by them | `unsupported` |
| `set_trial_system_attr`, `frozen_trial`, `is_rdb` | `Study._storage` | system attributes (a Trial has no public setter), a trial read by id, which kind of store | `unsupported` |

    >>> isinstance(AVAILABLE, bool) and TESTED_MAJORS == (4, 5)
    True
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

TESTED_MAJORS = (4, 5)


def _tested(version: str) -> bool:
    try:
        return int(version.split(".")[0]) in TESTED_MAJORS
    except ValueError:
        return False


AVAILABLE = _tested(optuna.__version__)


class OptunaVersionError(RuntimeError):
    """What lrsweep needs of Optuna's internals is not in this Optuna."""


def unsupported(what: str) -> OptunaVersionError:
    return OptunaVersionError(
        f"{what} needs Optuna {' or '.join(map(str, TESTED_MAJORS))} (lrsweep works on its "
        f"tables there); this is Optuna {optuna.__version__}: pip install "
        f"'optuna>={TESTED_MAJORS[0]},<{TESTED_MAJORS[-1] + 1}'")


# --- Optuna's tables --------------------------------------------------------------------------

def tables(study: optuna.Study) -> tuple[optuna.storages.RDBStorage, Any] | None:
    """The study's RDB storage (under Optuna's cache wrapper) and Optuna's ORM models, for
    direct SQL on its tables; None for another kind of store or an untested Optuna."""
    if not AVAILABLE:
        return None
    storage = getattr(study, "_storage", None)
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return None
    try:
        from optuna.storages._rdb import models
    except ImportError:
        return None
    return backend, models


def is_rdb(study: optuna.Study) -> bool:
    """Whether the study lives in an RDB store (SQLite, PostgreSQL), shared with other
    processes, rather than in this process's memory."""
    storage = _storage(study)
    return isinstance(getattr(storage, "_backend", storage), optuna.storages.RDBStorage)


def require_tables(study: optuna.Study, what: str) -> tuple[optuna.storages.RDBStorage, Any]:
    """`tables(study)`, or one line saying why lrsweep cannot do `what` here."""
    found = tables(study)
    if found is None:
        if AVAILABLE:
            raise OptunaVersionError(f"{what} needs an RDB store (SQLite or PostgreSQL URL)")
        raise unsupported(what)
    return found


# --- trials and studies by id -------------------------------------------------------------------

def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """A trial's id in Optuna's tables (unique across studies, unlike its number)."""
    try:
        return trial._trial_id
    except AttributeError:
        raise unsupported("finding a trial's row") from None


def study_id(study: optuna.Study) -> int:
    try:
        return study._study_id
    except AttributeError:
        raise unsupported("finding a study's rows") from None


def _storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    try:
        return study._storage
    except AttributeError:
        raise unsupported("reaching a study's storage") from None


def set_trial_system_attr(study: optuna.Study, trial_id_: int, key: str, value: Any) -> None:
    """A system attribute of a trial (Optuna's Trial has no public setter for them)."""
    _storage(study).set_trial_system_attr(trial_id_, key, value)


def frozen_trial(study: optuna.Study, trial_id_: int) -> FrozenTrial:
    return _storage(study).get_trial(trial_id_)


# --- ask and tell -------------------------------------------------------------------------------

def new_trial(study: optuna.Study) -> optuna.Trial:
    """A new trial, as `Study.ask` makes one when no trial is enqueued, without its look at
    every unfinished trial for an enqueued one (the caller looked once for the whole pack).
    Samplers that cache the study's trials for one trial (TPE's constant liar) are made to
    see the pack's earlier trials as running."""
    local = getattr(study, "_thread_local", None)
    if not AVAILABLE or local is None or not hasattr(local, "cached_all_trials"):
        return study.ask()
    local.cached_all_trials = None
    return optuna.Trial(study, _storage(study).create_new_trial(study_id(study)))


def tell(study: optuna.Study, trial: optuna.Trial, value: float | None = None,
         state: TrialState | None = None) -> None:
    """`Study.tell`, less its last step: reading the finished trial back for a deep copy
    nobody here uses (one full trial read each, ~10% of a GPU study's bookkeeping)."""
    helper = _tell_helper()
    if helper is None:
        study.tell(trial, value, state=state)
        return
    helper(study=study, trial=trial, value_or_values=value, state=state)


def _tell_helper():
    if not AVAILABLE:
        return None
    try:
        from optuna.study._tell import _tell_with_warning
    except ImportError:
        return None
    known = {"study", "trial", "value_or_values", "state"} <= set(
        inspect.signature(_tell_with_warning).parameters)
    return _tell_with_warning if known else None


# --- artifacts ----------------------------------------------------------------------------------

def artifact_attrs(artifact_id: str, filename: str, mimetype: str) -> dict[str, str] | None:
    """The trial system attribute that makes a stored file the trial's artifact (what
    `upload_artifact` writes, and `get_all_artifact_meta` and optuna-dashboard read); None
    where this Optuna's layout is not known, and the caller uploads through the public API."""
    if not AVAILABLE:
        return None
    try:
        from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX, ArtifactMeta
    except ImportError:
        return None
    meta = ArtifactMeta(artifact_id=artifact_id, filename=filename, mimetype=mimetype,
                        encoding=None)
    return {ARTIFACTS_ATTR_PREFIX + artifact_id: json.dumps(dataclasses.asdict(meta))}
