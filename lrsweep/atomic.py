"""Files written whole or not at all, and the temporary files a killed writer leaves behind:
the checkpoints' (train) and the trained weights' (store) one rule. Free of torch and optuna.

A file is written to `<name>.tmp-<host>-<pid>` beside it, synced, then renamed over it, so a
kill leaves the old file or the new one, never half of one. The next start removes the
temporary files no write will finish: this machine's whose process is gone at once, anyone's
(another machine's, on a shared folder, whose processes cannot be asked) after an hour.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import BinaryIO

HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"
# `<name>.tmp-<host>-<pid>`; before 2026-11-30 checkpoints were `<stem>.tmp<pid>`.
_TEMPORARY = re.compile(r"\.tmp(?:-(?P<host>[A-Za-z0-9._]+)-)?(?P<pid>\d+)$")
# A temporary file this old is an orphan whoever wrote it: a live write takes seconds.
ORPHAN_SECONDS = 3600.0


def temporary_for(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{HOST}-{os.getpid()}")


def write_atomically(path: Path, *parts: bytes | memoryview | BinaryIO) -> None:
    """`parts` (bytes, or readable binary streams) as the file `path`, whole or not at all.
    A failure removes the temporary file and raises."""
    temporary = temporary_for(path)
    try:
        with open(temporary, "wb") as f:
            for part in parts:
                if isinstance(part, (bytes, bytearray, memoryview)):
                    f.write(part)
                else:
                    shutil.copyfileobj(part, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def remove_orphans(folder: Path) -> list[Path]:
    """Remove the temporary files in `folder` that no write will finish; returns those."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            found = _TEMPORARY.search(entry.name)
            if found is None:
                continue
            with contextlib.suppress(OSError):  # gone already, or not ours to remove
                dead = found["host"] in (None, HOST) and not _alive(int(found["pid"]))
                if dead or time.time() - entry.stat().st_mtime > ORPHAN_SECONDS:
                    entry.unlink()
                    removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # Windows: os.kill would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True
