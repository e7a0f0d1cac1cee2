"""What went wrong with a store, in one line: the database driver's own words behind Optuna's
wrapper, and a full disk said to be one, with where and how much is free. For the storage's
errors and the CLI's error handler; free of torch, so the CLI reports fast.
"""

from __future__ import annotations

import contextlib
import errno
import re
import shutil
import sqlite3
from pathlib import Path

import optuna

_SQLITE_FULL = getattr(sqlite3, "SQLITE_FULL", 13)
_PASSWORD_IN_URL = re.compile(r"(\b[a-z][\w+.-]*://[^\s:/@]*:)[^\s@/]+@", re.IGNORECASE)


def hide_passwords(text: str) -> str:
    """`text` with the password of every URL in it shown as ***, as SQLAlchemy shows one:
    for messages, summaries and reports (a URL from LRSWEEP_STORAGE may hold one).

        >>> hide_passwords("no study in postgresql://ann:s3cret@db/test")
        'no study in postgresql://ann:***@db/test'
    """
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


class StorageError(Exception):
    """The storage URL cannot be opened, or holds no study of the asked name. Its message
    never holds a URL's password, wherever it is printed (a notebook's traceback too)."""

    def __init__(self, message: object) -> None:
        super().__init__(hide_passwords(str(message)))


def driver_error(exc: BaseException) -> BaseException:
    """The database driver's own error behind Optuna's: Optuna wraps every failed commit in a
    StorageInternalError of one message ("… e.g. exceeding max length"), whose cause says
    what happened (a damaged file: "database disk image is malformed")."""
    if isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__:
        return exc.__cause__
    return exc


def first_line(exc: BaseException) -> str:
    """An error's message, its first line only (drivers append SQL and links)."""
    return (str(exc).splitlines() or [""])[0]


def disk_full(error: BaseException, url: str | None = None) -> str | None:
    """One line saying the disk is full and where, when `error` or one it came from is a full
    disk: SQLite's "database or disk is full" (which Optuna reports as "invalid data … e.g.
    exceeding max length"), PostgreSQL's disk_full (53100), an OSError ENOSPC or EDQUOT (a
    checkpoint, an artifact). None for any other error. For the CLI's error handler."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        where = None
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            where = error.filename or _store_place(url)
        elif isinstance(error, sqlite3.Error) and (
                getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL
                or "database or disk is full" in str(error)
                or "disk I/O error" in str(error) and _free_bytes(url) < 2**20):
            # A full disk refusing to grow the -wal or -shm file is a "disk I/O error".
            where = _store_place(url)
        elif (getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)) == "53100":
            where = f"the database server's disk ({_store_place(url)})"
        if where is not None:
            return (f"the disk is full: cannot write {where}; free some space (or move the "
                    "store) and run the same command again: finished trials are kept")
        error = error.__cause__ or error.__context__
    return None


def _store_place(url: str | None) -> str:
    if url and url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        free = _free_bytes(url)
        return f"{path} ({free / 2**20:.1f} MiB free on its disk)" if free >= 0 else str(path)
    return url or "the store"


def _free_bytes(url: str | None) -> int:
    """Free bytes on the disk of a SQLite store's folder; -1 when unknown (not SQLite)."""
    if url and url.startswith("sqlite:///"):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(Path(url.removeprefix("sqlite:///")).parent).free
    return -1
