"""Open an Optuna storage by URL (SQLite by default, PostgreSQL to scale out) and find studies.

Free of torch, so reading a study (`ls`, `show`, `report`) starts fast.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Callable

import optuna
import sqlalchemy

DEFAULT_STORAGE = "sqlite:///results/lrsweep.db"
# How often a running trial says it is alive, and the silence after which another process
# takes it over (tests shorten both; SQLite's clock ticks in whole seconds, so keep grace ≥ 2).
HEARTBEAT_SECONDS = float(os.environ.get("LRSWEEP_HEARTBEAT_SECONDS", 10))
GRACE_SECONDS = float(os.environ.get("LRSWEEP_GRACE_SECONDS", 30))

_CREATE_ATTEMPTS = 8
optuna.logging.set_verbosity(optuna.logging.WARNING)  # lrsweep prints its own progress


class StorageError(Exception):
    """The storage URL cannot be opened, or holds no study of the asked name."""


def default_storage() -> str:
    """`LRSWEEP_STORAGE` when set, else the SQLite file under results/."""
    return os.environ.get("LRSWEEP_STORAGE") or DEFAULT_STORAGE


def open_storage(url: str, *, create: bool = True) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage; SQLite files get WAL and a busy timeout. Heartbeats are
    recorded and read by lrsweep itself (leases below), not by Optuna's optimize loop.
    With create=False a missing SQLite file is an error instead of a new, empty store."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not create and not path.is_file():
            raise StorageError(f"storage {url}: no such database file ({path})")
        if create:  # only writers switch the journal: reading leaves the file as it was
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with sqlite3.connect(path) as conn:  # WAL persists in the file
                    conn.execute("PRAGMA journal_mode=WAL")
            except (OSError, sqlite3.Error) as exc:
                raise StorageError(f"storage {url}: cannot open {path} ({exc})") from None
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as exc:
            # Several workers creating Optuna's tables at once (Optuna issues #1092, #5385):
            # one wins, the others find the schema made once they look again. The losers see
            # a unique violation (IntegrityError) or "already exists": a table on SQLite
            # (OperationalError), a table or an enum type on PostgreSQL (ProgrammingError).
            racing = (isinstance(exc, sqlalchemy.exc.IntegrityError)
                      or (isinstance(exc, sqlalchemy.exc.SQLAlchemyError)
                          and "already exists" in str(exc)))
            if not racing:
                raise StorageError(f"storage {url}: cannot be opened "
                                   f"({str(exc).splitlines()[0]})") from None
            time.sleep(0.2 * (attempt + 1))
    raise StorageError(f"storage {url}: cannot be opened (its schema is still being created "
                       f"after {_CREATE_ATTEMPTS} tries)")


def study_names(rdb: optuna.storages.BaseStorage) -> list[str]:
    return sorted(optuna.study.get_all_study_names(rdb))


def load_study(name: str, url: str) -> optuna.Study:
    """An existing study, or StorageError naming the studies the store does hold."""
    rdb = open_storage(url, create=False)
    names = study_names(rdb)
    if name not in names:
        known = f"; it has: {', '.join(names)}" if names else "; it holds no study yet"
        raise StorageError(f"no study named {name!r} in {url}{known}")
    return optuna.load_study(study_name=name, storage=rdb)


def record_trial(study: optuna.Study, trial: optuna.Trial, user_attrs: dict[str, Any],
                 intermediate: dict[int, float], system_attrs: dict[str, Any] | None = None
                 ) -> None:
    """Write a trial's attributes and intermediate values before it is told: on an RDB store
    in one transaction of bulk inserts instead of one transaction per value (Optuna's API
    costs ~1.2 ms a value on SQLite: ~50 ms a trial, a fifth of a GPU study's time);
    elsewhere, or should Optuna's tables change, through Optuna's public API."""
    system_attrs = system_attrs or {}
    if _wrote_in_one_transaction(study, lambda rdb: _bulk_insert(
            rdb, trial._trial_id, user_attrs, intermediate, system_attrs)):
        return
    for key, value in user_attrs.items():
        trial.set_user_attr(key, value)
    for key, value in system_attrs.items():
        study._storage.set_trial_system_attr(trial._trial_id, key, value)
    for step, value in intermediate.items():
        trial.report(value, step)


def _wrote_in_one_transaction(study: optuna.Study,
                              write: Callable[[optuna.storages.RDBStorage], None]) -> bool:
    """Run `write` on the study's RDB store (one transaction of direct inserts into Optuna's
    tables). False when the store is not an RDB one, or should Optuna's tables have changed:
    the caller then goes through Optuna's public API."""
    backend = rdb_of(study)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return False
    try:
        write(backend)
        return True
    except (ImportError, AttributeError, sqlalchemy.exc.SQLAlchemyError):
        return False  # nothing was committed: the transaction rolled back


def _bulk_insert(rdb: optuna.storages.RDBStorage, trial_id: int, user_attrs: dict[str, Any],
                 intermediate: dict[int, float], system_attrs: dict[str, Any]) -> None:
    from optuna.storages._rdb import models  # Optuna's schema, versioned by its migrations

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


def set_system_attrs(study: optuna.Study, trial_ids: list[int], attrs: dict[str, Any]) -> None:
    """The same system attributes on several running trials: on an RDB store in one
    transaction (replacing any already there), not one commit per trial and key (200 for a
    GPU-sized pack of 100); elsewhere through Optuna's API."""
    def replace(rdb: optuna.storages.RDBStorage) -> None:
        from optuna.storages._rdb import models

        table = models.TrialSystemAttributeModel.__table__
        rows = [{"trial_id": i, "key": k, "value_json": json.dumps(v)}
                for i in trial_ids for k, v in attrs.items()]
        with rdb.engine.begin() as conn:
            conn.execute(sqlalchemy.delete(table).where(
                table.c.trial_id.in_(trial_ids), table.c.key.in_(list(attrs))))
            conn.execute(sqlalchemy.insert(table), rows)

    if _wrote_in_one_transaction(study, replace):
        return
    for trial_id in trial_ids:
        for key, value in attrs.items():
            study._storage.set_trial_system_attr(trial_id, key, value)


# --- trained weights, as Optuna artifacts (optuna-dashboard lists them) ---------------------

WEIGHTS_MIMETYPE = "application/x-pytorch"


def folder_beside(url: str, kind: str) -> Path:
    """Where a store keeps its `kind` files (checkpoints, artifacts): `LRSWEEP_<KIND>` when
    set, else `<file>.<kind>/` beside a SQLite file, else `results/<kind>/` (for a server
    store, share that folder between machines)."""
    if os.environ.get(f"LRSWEEP_{kind.upper()}"):
        return Path(os.environ[f"LRSWEEP_{kind.upper()}"])
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///") + f".{kind}")
    return Path("results") / kind


def artifact_store(url: str) -> optuna.artifacts.FileSystemArtifactStore:
    """The store's trained weights, as Optuna artifacts (see `folder_beside`)."""
    folder = folder_beside(url, "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return optuna.artifacts.FileSystemArtifactStore(str(folder))


def write_artifact(store: optuna.artifacts.FileSystemArtifactStore, filename: str,
                   payload: BinaryIO, mimetype: str) -> dict[str, str]:
    """Optuna's `upload_artifact` in two halves: the file is written into the artifact store
    now, and the returned trial system attribute (what makes it the trial's artifact, listed
    by `get_all_artifact_meta` and optuna-dashboard) goes to the store with the trial's other
    attributes (`record_trial`), not in a commit of its own."""
    from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX, ArtifactMeta

    artifact_id = str(uuid.uuid4())
    store.write(artifact_id, payload)
    meta = ArtifactMeta(artifact_id=artifact_id, filename=filename, mimetype=mimetype,
                        encoding=None)
    return {ARTIFACTS_ATTR_PREFIX + artifact_id: json.dumps(dataclasses.asdict(meta))}


def export_weights(name: str, url: str, number: int, out: str | Path) -> tuple[Path, str]:
    """Copy trial `number`'s trained weights (a state_dict for the plain LeNet, or ResNet-18)
    to `out`; returns the path and the model's name."""
    study = load_study(name, url)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise StorageError(f"study {name!r} has no trial {number} (it has 0–{len(trials) - 1})")
    metas = [m for m in optuna.artifacts.get_all_artifact_meta(trials[number], storage=study._storage)
             if m.mimetype == WEIGHTS_MIMETYPE]
    if not metas:
        raise StorageError(f"trial {number} of {name!r} has no stored weights (state "
                           f"{trials[number].state.name.lower()}; only finished trials have them)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    optuna.artifacts.download_artifact(artifact_store=artifact_store(url), file_path=str(out),
                                       artifact_id=metas[-1].artifact_id)
    # The artifact's file name begins with the model's: "resnet18-…" or "lenet-…".
    return out, metas[-1].filename.split("-", 1)[0]


# --- leases: a RUNNING trial belongs to whoever keeps its heartbeat fresh --------------------

_LONG_AGO = datetime.datetime(2000, 1, 1)


def record_heartbeats(study: optuna.Study, trial_ids: list[int]) -> None:
    """Renew the trials' leases: their heartbeats set to the database's clock, in one
    transaction (Optuna's record_heartbeat takes one per trial: 100 for a GPU-sized pack)."""
    from optuna.storages._rdb import models

    beats = models.TrialHeartbeatModel.__table__
    now = sqlalchemy.func.now()
    for attempt in range(2):
        try:
            with rdb_of(study).engine.begin() as conn:
                have = set(conn.execute(sqlalchemy.select(beats.c.trial_id).where(
                    beats.c.trial_id.in_(trial_ids))).scalars())
                if have:
                    conn.execute(sqlalchemy.update(beats).where(
                        beats.c.trial_id.in_(list(have))).values(heartbeat=now))
                missing = [i for i in trial_ids if i not in have]
                if missing:
                    conn.execute(sqlalchemy.insert(beats).values(
                        [{"trial_id": i, "heartbeat": now} for i in missing]))
            return
        except sqlalchemy.exc.IntegrityError:
            # Another worker gave one of them a first beat meanwhile (`claim_stale_trials`
            # does, for trials it finds without one): it is there now, look again.
            if attempt:
                raise


def claim_stale_trials(study: optuna.Study, pack_attr: str | None = None) -> list[int]:
    """Take over the RUNNING trials whose heartbeat is older than the grace period (their
    process died). Each claim is a compare-and-set on a heartbeat, so when several workers
    look at once, exactly one wins. With `pack_attr` (a trial system attribute listing the
    trial ids a trial trains with) a pack is claimed whole: the compare-and-set is made on its
    first RUNNING member, and the winner takes the others with it, so two workers never split
    one pack (and its one checkpoint). Returns the trial ids now ours.

    Times are the database server's alone: a trial with no heartbeat yet (its process died
    between asking and its first beat) gets one now, and is stale a grace period later."""
    from optuna.storages._rdb import models

    rdb = rdb_of(study)
    beats = models.TrialHeartbeatModel.__table__
    trials = models.TrialModel.__table__
    attrs = models.TrialSystemAttributeModel.__table__
    grace = datetime.timedelta(seconds=GRACE_SECONDS)
    with rdb.engine.begin() as conn:
        now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar().replace(tzinfo=None)
        running = dict(conn.execute(
            sqlalchemy.select(trials.c.trial_id, beats.c.heartbeat)
            .select_from(trials.outerjoin(beats, beats.c.trial_id == trials.c.trial_id))
            .where(trials.c.study_id == study._study_id,
                   trials.c.state == optuna.trial.TrialState.RUNNING)).all())
        packs = {} if pack_attr is None or not running else {
            trial_id: json.loads(value) for trial_id, value in conn.execute(
                sqlalchemy.select(attrs.c.trial_id, attrs.c.value_json).where(
                    attrs.c.key == pack_attr, attrs.c.trial_id.in_(list(running))))}
    for trial_id, beat in running.items():
        if beat is None:
            try:
                with rdb.engine.begin() as conn:
                    conn.execute(sqlalchemy.insert(beats).values(
                        trial_id=trial_id, heartbeat=sqlalchemy.func.now()))
            except sqlalchemy.exc.IntegrityError:
                pass  # its owner (or another worker) gave it one an instant ago
    stale = {i for i, beat in running.items()
             if beat is not None and now - beat.replace(tzinfo=None) > grace}
    claimed: list[int] = []
    seen: set[int] = set()
    for trial_id in sorted(stale):
        if trial_id in seen:
            continue
        members = sorted(i for i in packs.get(trial_id, [trial_id]) if i in running)
        seen.update(members)
        leader = members[0]
        if leader not in stale:
            continue  # its pack is alive: another worker's, or one just taken over
        with rdb.engine.begin() as conn:
            # Still stale at the moment of writing: of several claimants, the first one's
            # fresh heartbeat makes every other one's condition false.
            won = conn.execute(sqlalchemy.update(beats).where(
                beats.c.trial_id == leader, beats.c.heartbeat < now - grace).values(
                heartbeat=sqlalchemy.func.now())).rowcount == 1
            if won and len(members) > 1:
                conn.execute(sqlalchemy.update(beats).where(
                    beats.c.trial_id.in_(members[1:])).values(heartbeat=sqlalchemy.func.now()))
        if won:
            claimed += members
    return claimed


def release_trials(study: optuna.Study, trial_ids: list[int]) -> None:
    """Give up our leases at once (Ctrl-C), so the next run continues these trials without
    waiting out the grace period."""
    from optuna.storages._rdb import models

    beats = models.TrialHeartbeatModel.__table__
    with rdb_of(study).engine.begin() as conn:
        conn.execute(sqlalchemy.update(beats).where(beats.c.trial_id.in_(trial_ids))
                     .values(heartbeat=_LONG_AGO))


def rdb_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage under Optuna's cache wrapper: the RDBStorage for an RDB store."""
    return getattr(study._storage, "_backend", study._storage)
