"""Open an Optuna storage by URL (SQLite by default, PostgreSQL to scale out) and find studies.

Free of torch, so reading a study (`ls`, `show`, `report`) starts fast. Readers open a
SQLite store read-only (`open_storage(create=False)`), also on read-only media or a full disk;
a URL that is mistyped, or a file that is no store, is one line saying what was meant.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from lrsweep.store import journal
from lrsweep.store.failures import StorageError, disk_full, driver_error, first_line
from lrsweep.store.urls import check_url, in_memory

DEFAULT_STORAGE = "sqlite:///results/lrsweep.db"


_CREATE_ATTEMPTS = 8
_BUSY_SECONDS = 60  # how long a SQLite connection waits for another process's lock
_SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database
optuna.logging.set_verbosity(optuna.logging.WARNING)  # lrsweep prints its own progress


def default_storage() -> str:
    """`LRSWEEP_STORAGE` when set, else the SQLite file under results/."""
    return os.environ.get("LRSWEEP_STORAGE") or DEFAULT_STORAGE


def _not_a_file(path: Path) -> str:
    """Why a reader finds no database at `path`, and what was likely meant."""
    if path.is_dir():
        return f"{path} is a folder, not a database file"
    absolute = Path("/") / path
    if not path.is_absolute() and absolute.is_file():  # three slashes read as relative
        return (f"no such database file ({path}, relative to this folder); for {absolute} "
                f"give four slashes: sqlite:///{absolute}")
    return f"no such database file ({path})"


def open_storage(url: str, *, create: bool = True) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage; SQLite files get WAL and a busy timeout. Heartbeats are
    recorded and read by lrsweep itself (leases below), not by Optuna's optimize loop.
    With create=False, the readers' door, a SQLite file is opened read-only (see
    `_reader_url`): a missing file, or one that is no SQLite database, is an error, and
    nothing is written, not even Optuna's tables into an empty file or database."""
    check_url(url)
    if not create and in_memory(url):  # `run` refuses it too (places.check_folders)
        raise StorageError(f"storage {url}: an in-memory database is new and empty each time: "
                           "give the store's file (sqlite:///results/lrsweep.db) or server")
    kwargs: dict[str, Any] = {}
    target = url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not create and not path.is_file():
            raise StorageError(f"storage {url}: {_not_a_file(path)}")
        if path.is_file():
            _check_sqlite_file(url, path, empty_ok=create)
        if create:  # only writers switch the journal: reading leaves the file as it was
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                _switch_to_wal(path)
            except (OSError, sqlite3.Error) as exc:
                raise _cannot_open(url, exc, f"cannot open {path}") from None
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": _BUSY_SECONDS}}
        journal.remember(path)  # at exit its -wal and -shm go, if no one else has it open
        rdb = _open_reader(url, path, kwargs) if not create else _connect(url, target, kwargs)
        journal.remember(path, rdb)  # and this storage's connections are closed first
        return rdb
    if not create:
        _check_server_store(url)
    return _connect(url, target, kwargs)


def _switch_to_wal(path: Path) -> None:
    """Put the SQLite file in WAL mode (it persists in the file), waiting for another process's
    lock as long as Optuna's own connections do: another worker may be making the tables (with
    SQLite's default 5 s, a worker started beside another on a busy machine failed).

    Retried, since SQLite's wait does not cover every case: two processes switching a new file
    at once each hold a read lock and want the write lock, and SQLite answers one of them
    "database is locked" at once rather than wait for a lock that would never come (three
    workers started together on a new file lost one of them in 8 of 20 tries)."""
    deadline = time.monotonic() + _BUSY_SECONDS
    pause = 0.05
    while True:
        try:
            with closing(sqlite3.connect(path, timeout=_BUSY_SECONDS)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(2 * pause, 1.0)


def _check_server_store(url: str) -> None:
    """A reader's database server must hold Optuna's tables already: Optuna's storage makes
    them when it opens, and a mistyped study name must not leave a schema behind."""
    engine = None
    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as conn:
            made = sqlalchemy.inspect(conn).has_table("studies")
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        raise _cannot_open(url, exc) from None
    finally:
        if engine is not None:
            engine.dispose()
    if not made:
        raise StorageError(f"storage {url}: holds no lrsweep store yet (no Optuna tables); "
                           "`lrsweep run` makes one")


def _open_reader(url: str, path: Path, kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    try:
        return _connect(url, _reader_url(url, path), kwargs)
    except StorageError as error:
        if "readonly database" in str(error):  # Optuna set out to make its missing tables
            if _has_studies_table(path):  # its maker stopped before Optuna stamped its version
                raise StorageError(f"storage {url}: {path} is a store whose making was "
                                   "interrupted (Optuna's tables without their version); "
                                   "`lrsweep run` finishes it") from None
            raise StorageError(f"storage {url}: {path} is an SQLite database without Optuna's "
                               "tables, not an lrsweep store; give the store's file, or "
                               "`lrsweep run` to make one") from None
        # A WAL reader must make or grow the -shm file, which a full disk refuses too
        # (SQLite's "disk I/O error"): a store whose log holds nothing is read from its file.
        if _wal_holds_data(path) or not any(
                words in str(error) for words in ("disk is full", "disk I/O error",
                                                  "unable to open")):
            raise
        return _connect(url, _reader_url(url, path, immutable=True), kwargs)


def _has_studies_table(path: Path) -> bool:
    with closing(sqlite3.connect(f"{journal.file_uri(path)}?mode=ro", uri=True)) as conn:
        return bool(conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                 "name = 'studies'").fetchone())


def _connect(url: str, target: str, kwargs: dict[str, Any]) -> optuna.storages.RDBStorage:
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(target, **kwargs)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError,
                ValueError, ImportError) as exc:
            # Several workers creating Optuna's tables at once (Optuna issues #1092, #5385):
            # one wins, the others find the schema made once they look again. The losers see
            # a unique violation (IntegrityError) or "already exists": a table on SQLite
            # (OperationalError), a table or an enum type on PostgreSQL (ProgrammingError).
            root = driver_error(exc)
            racing = (isinstance(root, sqlalchemy.exc.IntegrityError)
                      or (isinstance(root, sqlalchemy.exc.SQLAlchemyError)
                          and "already exists" in str(root)))
            if not racing:
                raise _cannot_open(url, exc) from None
            time.sleep(0.2 * (attempt + 1))
    raise StorageError(f"storage {url}: cannot be opened (its schema is still being created "
                       f"after {_CREATE_ATTEMPTS} tries)")


def _cannot_open(url: str, exc: BaseException, what: str = "cannot be opened") -> StorageError:
    """One line for a store that fails to open: a full disk said so (`disk_full`), an unknown
    scheme with the ones lrsweep takes, else the first line of the driver's own words (not
    Optuna's "invalid data … e.g. exceeding max length", which wraps every failed commit)."""
    full = disk_full(exc, url)
    if full is not None:
        return StorageError(f"storage {url}: {full}")
    hint = ("; lrsweep takes sqlite:///FILE or postgresql://USER@HOST/DATABASE"
            if isinstance(exc, sqlalchemy.exc.NoSuchModuleError) else "")
    return StorageError(f"storage {url}: {what} ({first_line(driver_error(exc))}){hint}")


def _check_sqlite_file(url: str, path: Path, *, empty_ok: bool) -> None:
    """Refuse a file that is no SQLite database before SQLite or Optuna touch it. An empty
    file is one only to a writer (SQLite makes it one); a reader must not write into it."""
    try:
        with open(path, "rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise StorageError(f"storage {url}: cannot read {path} ({exc.strerror})") from None
    if not header and not empty_ok:
        raise StorageError(f"storage {url}: {path} is an empty file (0 bytes), not an lrsweep "
                           "store; give the store's file, or `lrsweep run` to make one")
    if header and header != _SQLITE_HEADER:
        raise StorageError(f"storage {url}: {path} is not an SQLite database (it begins "
                           f"{header[:16]!r}); give the store's file")


def _reader_url(url: str, path: Path, *, immutable: bool = False) -> str:
    """The SQLite URI a reader opens `path` with: `mode=ro`, so nothing is ever written. On
    read-only media a WAL store cannot make the -shm file a reader needs (SQLite's "unable to
    open database file"): there it is opened `immutable=1` (no -shm, no locks: no writer can
    be at work there), unless its write-ahead log holds data (a store copied while a worker
    wrote), which only a reader with the -shm can see."""
    query = {"mode": "ro", "uri": "true"}
    if immutable or not os.access(path.parent, os.W_OK):  # EROFS counts here even for root
        if not _wal_holds_data(path):
            query["immutable"] = "1"
        elif not Path(f"{path}-shm").is_file():
            raise StorageError(
                f"storage {url}: {path}-wal holds data that a reader of this read-only folder "
                f"cannot see without {path.name}-shm; copy the store with both files, or to a "
                "writable folder")
    uri = journal.file_uri(path)
    return sqlalchemy.engine.URL.create("sqlite", database=uri, query=query).render_as_string(
        hide_password=False)


def _wal_holds_data(path: Path) -> bool:
    wal = Path(f"{path}-wal")
    return wal.is_file() and wal.stat().st_size > 0


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
