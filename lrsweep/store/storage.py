"""Open an Optuna storage by URL (SQLite by default, PostgreSQL to scale out) and find studies.

Free of torch, so reading a study (`ls`, `show`, `report`) starts fast.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

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


def folder_beside(url: str, kind: str) -> Path:
    """Where a store keeps its `kind` files (checkpoints, artifacts): `LRSWEEP_<KIND>` when
    set, else `<file>.<kind>/` beside a SQLite file, else `results/<kind>/` (for a server
    store, share that folder between machines)."""
    if os.environ.get(f"LRSWEEP_{kind.upper()}"):
        return Path(os.environ[f"LRSWEEP_{kind.upper()}"])
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///") + f".{kind}")
    return Path("results") / kind
