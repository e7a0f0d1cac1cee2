"""A SQLite store's write-ahead log (`-wal`) and its index (`-shm`): folded into the store's
file when a run finishes, and removed when the last process that has the store open exits.

SQLite removes both files when the last connection to a store closes, but only a read-write
connection may: a reader's (`mode=ro`) leaves them. And a process may exit with connections
still open: Optuna's SQLAlchemy engine can outlive its storage in a reference cycle, its
pooled connections with it. So every SQLite store this process opens is remembered here; at
exit the unreachable engines are collected, the live ones closed, and for each store whose
log is empty one read-write connection opens and closes. SQLite removes the files only if no
other process has the store open; this never deletes them itself, and a log that holds
writes (a worker killed) is left for the next `lrsweep run` to fold in.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sqlite3
import urllib.parse
import weakref
from pathlib import Path

import optuna

# Every SQLite store opened by this process, by file, with its live storages (weakly: one that
# is gone leaves at most an unreachable engine, which close_all collects).
_OPENED: dict[Path, weakref.WeakSet[optuna.storages.RDBStorage]] = {}


def fold(url: str) -> None:
    """Fold a SQLite store's write-ahead log into its file (`wal_checkpoint(TRUNCATE)`), so a
    finished store is one file that can be copied or committed alone (its `-wal` beside it may
    hold every trial). Best effort: another process still writing keeps its part."""
    if not url.startswith("sqlite:///"):
        return
    with contextlib.suppress(sqlite3.Error, OSError):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"), timeout=5)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def remember(path: Path, rdb: optuna.storages.RDBStorage | None = None) -> None:
    """Tidy the store at `path` when this process exits, closing `rdb` first. Remembered
    before it is opened: an open that fails may have made the -wal and -shm already."""
    storages = _OPENED.setdefault(path.resolve(), weakref.WeakSet())
    if rdb is not None:
        storages.add(rdb)


@atexit.register
def close_all() -> None:
    """Close every remembered storage's connections, then tidy each store's files."""
    # An engine whose storage is gone may sit in a reference cycle, a connection still open:
    # collecting it closes that connection (for a reader, this is what frees the store).
    gc.collect()
    opened = list(_OPENED.items())
    _OPENED.clear()
    for path, storages in opened:
        with contextlib.suppress(Exception):  # at exit: nothing left to report it to
            for rdb in list(storages):
                rdb.engine.dispose()
            tidy(path)


def file_uri(path: Path) -> str:
    """SQLite's URI for the file at `path` (absolute, so that no working folder is assumed),
    its special characters (`?`, `#`, `%`, spaces) quoted, before the query is added."""
    return "file:" + urllib.parse.quote(str(path.resolve()), safe="/")


def tidy(path: Path) -> None:
    """Let SQLite remove the store's `-wal` and `-shm` if no one else has it open: a
    read-write connection reads the schema and closes. Only when the log is empty, so that a
    reader folds no one's writes into the file (unless a writer commits and closes in the
    instant between: its close would have folded them in), and only in a folder that can be
    written (read-only media keep what they hold)."""
    try:
        if Path(f"{path}-wal").stat().st_size > 0 or not os.access(path.parent, os.W_OK):
            return
    except OSError:  # no log (or another process's close removed it just now)
        return
    # mode=rw: a store deleted meanwhile is not made again.
    uri = file_uri(path) + "?mode=rw"
    with contextlib.suppress(sqlite3.Error, OSError):
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=1)) as db:
            db.execute("PRAGMA schema_version").fetchall()  # opens the file and its log
