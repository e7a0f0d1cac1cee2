"""Where a store keeps its files (checkpoints, artifacts): the store's surroundings, apart
from opening it (`storage`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lrsweep.names import folder_name
from lrsweep.store.failures import StorageError
from lrsweep.store.urls import in_memory


def folder_beside(url: str, kind: str) -> Path:
    """Where a store keeps its `kind` files (checkpoints, artifacts): `LRSWEEP_<KIND>` when
    set, else `<file>.<kind>/` beside a SQLite file, else `results/<kind>/` (for a server
    store, share that folder between machines)."""
    if os.environ.get(f"LRSWEEP_{kind.upper()}"):
        return Path(os.environ[f"LRSWEEP_{kind.upper()}"])
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///") + f".{kind}")
    return Path("results") / kind


def check_folders(url: str, study: str | None = None) -> None:
    """Refuse, before a study is run, a store that cannot keep its trials (an in-memory
    database, gone when the run ends) and a checkpoint or artifact folder that cannot be one:
    a file where it, or a folder above it, would be, or a place this process cannot write (a
    study would otherwise be created, and fail at its first checkpoint). A SQLite store that
    cannot be made where its URL says is left to `storage.open_storage`, which names the
    store."""
    if in_memory(url):
        raise StorageError(f"storage {url}: an in-memory database ends with the run, and every "
                           "trial with it; give a file (sqlite:///results/lrsweep.db) or a "
                           "server (postgresql://USER@HOST/DATABASE)")
    if url.startswith("sqlite:///") and not nearest_existing(
            Path(url.removeprefix("sqlite:///")).parent).is_dir():
        return
    for kind in ("checkpoints", "artifacts"):
        # Checkpoints go in a folder of the study's own, which may be there already (made by
        # another user of a shared LRSWEEP_CHECKPOINTS, or left read-only).
        own = folder_name(study) if study is not None and kind == "checkpoints" else ""
        above = nearest_existing(folder_beside(url, kind) / own)
        given = os.environ.get(f"LRSWEEP_{kind.upper()}")
        where = f"LRSWEEP_{kind.upper()}={given}" if given else f"the store's {kind} folder"
        if not above.is_dir():
            raise StorageError(f"{where}: {above} is a file, not a folder")
        why = cannot_write(above)
        if why:
            raise StorageError(f"{where}: cannot write in {above} ({why})")


def cannot_write(folder: Path) -> str | None:
    """Why this process cannot write in an existing `folder` (the system's words), or None.
    Found by making and removing a folder there: permission bits do not tell (root passes
    them), a read-only file system or a quota does."""
    try:
        tempfile.TemporaryDirectory(dir=folder, prefix=".lrsweep-check-").cleanup()
    except OSError as error:
        return error.strerror or str(error)
    return None


def nearest_existing(path: Path) -> Path:
    """The path itself when it exists, else the nearest folder above it that does: where it
    would be made, and what decides whether it can be."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
