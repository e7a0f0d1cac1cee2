"""A SQLite store's write-ahead log (`-wal`) and its index (`-shm`): folded in when a run
finishes, and the two files gone once this process and every other has closed the store.

SQLite removes both files when the last connection to a store closes, but only a read-write
connection may: a reader's (`mode=ro`) leaves them, and Optuna keeps its pooled connections
open for as long as a study object lives, past the end of a command. So every SQLite store
this process opens is remembered here; at exit their engines are closed and, for each store
whose log is empty, one read-write connection opens and closes. Where another process still
has the store open SQLite keeps the files, as it must: this never deletes them itself.
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

# Every SQLite store opened by this process, by file, with its storages (weakly: a storage
# that is gone has closed its engine already).
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


def remember(path: Path, rdb: optuna.storages.RDBStorage) -> None:
    """Close `rdb` and tidy the store at `path` when this process exits."""
    _OPENED.setdefault(path.resolve(), weakref.WeakSet()).add(rdb)


@atexit.register
def close_all() -> None:
    """Close every remembered storage's connections, then tidy each store's files."""
    # A storage no longer referenced may still sit in a reference cycle with its engine, its
    # connections open: collecting it closes them.
    gc.collect()
    opened = list(_OPENED.items())
    _OPENED.clear()
    for path, storages in opened:
        for rdb in list(storages):
            with contextlib.suppress(Exception):  # at exit: nothing left to report it to
                rdb.engine.dispose()
        tidy(path)


def tidy(path: Path) -> None:
    """Let SQLite remove the store's `-wal` and `-shm` if no one else has it open: a
    read-write connection reads the schema and closes. Only when the log is empty, so that
    closing checkpoints nothing into the file (a reader writes nothing), and only in a folder
    that can be written (read-only media keep what they hold)."""
    wal = Path(f"{path}-wal")
    if not wal.is_file() or wal.stat().st_size > 0 or not os.access(path.parent, os.W_OK):
        return
    # mode=rw: a store deleted meanwhile is not made again.
    uri = "file:" + urllib.parse.quote(str(path), safe="/") + "?mode=rw"
    with contextlib.suppress(sqlite3.Error, OSError):
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=1)) as db:
            db.execute("PRAGMA schema_version").fetchall()  # opens the file and its log
