"""Per-epoch checkpoints of running packs, written atomically in a folder.

One file per pack: its slot table after the last finished epoch. For each trial still
training (by its key: the search's trial id) it holds what the trial needs to continue from
that epoch: its weights (in the pack's tensors, at its slot), its curves so far, its status
and its sampler state (SGLD). The data order is a function of (seed, epoch) and plain SGD
keeps no state, and a trial's arithmetic does not depend on its slot or pack-mates, so a
trial continued in any pack, at any slot, ends with the numbers an uninterrupted run gives.

A file is a header line holding the SHA-256 of the payload that follows it (`torch.save`'s
bytes): a checkpoint damaged on disk is refused, not trusted, and its trials start over from
epoch 1 (their numbers depend only on their configs and seeds, so they end as an
uninterrupted run does; only time is lost). Files written before checksums load as they are.
A write goes to a temporary file renamed over the checkpoint; a failed one is removed at once,
and those of killed processes are removed the next time the folder is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import re
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lrsweep.atomic import remove_orphans, write_atomically
from lrsweep.names import folder_name
from lrsweep.train.trials import EpochMetrics, PackState, Resume


def state_dict_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    """A trained trial's weights as `torch.save` writes them (what `torch.load` and
    `lrsweep export` read back)."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


# The header line before a checkpoint's payload; its hex digest follows.
MAGIC = b"lrsweep-checkpoint sha256="


class CheckpointWriteError(OSError):
    """A checkpoint could not be written: a full disk (`errno` ENOSPC), a read-only or missing
    folder. Nothing of the attempt is left on disk and the pack's previous checkpoint is as it
    was, so the pack may train on (its next epoch's write may succeed) or stop; `filename` is
    the checkpoint's path."""

    def __str__(self) -> str:
        return f"cannot write the checkpoint {self.filename}: {self.strerror}"


class DamagedCheckpoint(UserWarning):
    """A checkpoint failed its checksum or could not be read: its trials start over."""


@dataclass(frozen=True)
class Checkpoints:
    """A folder of pack checkpoints, one subfolder a study (the search names it per store)."""

    folder: Path
    # Study folders whose orphaned temporary files this process has removed (once is enough).
    _swept: set[Path] = field(default_factory=set, init=False, compare=False, repr=False)

    def path(self, study: str, pack: str) -> Path:
        return self.folder / folder_name(study) / f"{pack}.pt"

    def _path_before_names(self, study: str, pack: str) -> Path | None:
        """Where a version before names.folder_name kept the checkpoint, if one is there: the
        same folder for a safe name; for another, its unsafe characters replaced."""
        older = self.folder / re.sub(r"[^A-Za-z0-9._-]", "_", study) / f"{pack}.pt"
        try:
            return older if older != self.path(study, pack) and older.is_file() else None
        except OSError:  # a name too long for that scheme: nothing could be kept there
            return None

    def save(self, study: str, pack: str, state: PackState) -> None:
        """The pack's slot table, its trials known by their keys (trial ids). Write then
        rename: a kill leaves the old checkpoint or the new one, never half of one; a failed
        write leaves the old one and nothing else, and raises CheckpointWriteError."""
        path = self.path(study, pack)
        buffer = io.BytesIO()
        # vars(), not dataclasses.asdict: asdict deep-copies field by field, and a pack of 100
        # trials × 30 epochs spent seconds in it (results/benchmarks/store-cost.py).
        torch.save({"layout": state.layout, "weights": state.weights, "width": state.width,
                    "trials": {key: {"slot": state.slots.get(key), "state_dict": r.state_dict,
                                     "status": r.status, "diverged": r.diverged,
                                     "epochs": [dict(vars(m)) for m in r.epochs],
                                     "sampler": r.sampler}
                               for key, r in state.members.items()}},
                   buffer)
        payload = buffer.getbuffer()
        header = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._sweep(path.parent)
            write_atomically(path, header, payload)
        except OSError as error:
            raise CheckpointWriteError(error.errno, error.strerror or str(error),
                                       str(path)) from error

    def load(self, study: str, pack: str) -> dict[Any, Resume]:
        """The pack's last states by trial id; empty when there is none, or when it is damaged
        (one DamagedCheckpoint warning): the trials start over rather than the study failing
        or a trial going on from weights no run computed."""
        path = self.path(study, pack)
        older = self._path_before_names(study, pack)
        if older is not None and not path.exists():
            path = older  # a pack that began before names.folder_name
        self._sweep(path.parent)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as error:
            return _start_over(path, f"cannot be read ({error.strerror})")
        payload = verified_payload(data)
        if payload is None:
            return _start_over(path, "fails its checksum (damaged on disk)")
        try:
            raw: dict[str, Any] = torch.load(io.BytesIO(payload), map_location="cpu",
                                             weights_only=True)
            members, slots = {}, {}
            # A checkpoint written before slots lists every member in pack order (slot =
            # position), the weights of those that had stopped in their own state_dict.
            for position, (key, r) in enumerate(raw["trials"].items()):
                members[key] = Resume(state_dict=r["state_dict"],
                                      epochs=[EpochMetrics(**m) for m in r["epochs"]],
                                      status=r["status"], diverged=r["diverged"],
                                      sampler=r.get("sampler"))
                slots[key] = r.get("slot", position)
            return PackState(raw["layout"], raw["weights"], slots, members,
                             raw.get("width")).resumes()
        except Exception as error:  # damaged: costs the pack's progress, never the study
            return _start_over(path, f"cannot be read ({type(error).__name__})")

    def remove(self, study: str, pack: str) -> None:
        self.path(study, pack).unlink(missing_ok=True)
        older = self._path_before_names(study, pack)
        if older is not None:
            older.unlink(missing_ok=True)

    def _sweep(self, folder: Path) -> None:
        if folder not in self._swept:
            remove_orphans(folder)
            self._swept.add(folder)


def verified_payload(data: bytes) -> bytes | None:
    """A checkpoint file's payload, or None when it fails its checksum. A file without the
    header (written before checksums, or whose header is damaged) is returned whole: torch's
    own checks are all it has."""
    if not data.startswith(MAGIC):
        return data
    header, _, payload = data.partition(b"\n")
    digest = hashlib.sha256(payload).hexdigest().encode()
    return payload if hmac.compare_digest(digest, header[len(MAGIC):]) else None


def _start_over(path: Path, why: str) -> dict[Any, Resume]:
    warnings.warn(f"checkpoint {path} {why}: its trials start over from epoch 1 (with the "
                  "numbers an uninterrupted run gives)", DamagedCheckpoint, stacklevel=3)
    return {}


class BackgroundWriter:
    """Saves one pack's checkpoints on a thread, one at a time, while the pack trains on.

    A GPU-sized pack of 100 LeNets is 25 MB a checkpoint; pickling and fsync'ing it after
    every epoch held the training loop ~50 ms an epoch (results/benchmarks/store-cost.py). The
    states handed over are CPU copies no one changes afterwards, so the thread may take its
    time; a save waits for the one before it, so at most one epoch's write is in flight and
    the file on disk is always a whole epoch, the last or the one before. `wait` ends the
    write in flight and re-raises its error, one epoch later: CheckpointWriteError for a write
    that failed (a full disk), which left the checkpoint before it on disk and nothing else."""

    def __init__(self, checkpoints: Checkpoints, study: str, pack: str) -> None:
        self._checkpoints, self._study, self._pack = checkpoints, study, pack
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, state: PackState) -> None:
        self.wait()
        # Not a daemon: an interpreter exiting mid-write still finishes the epoch's file.
        self._thread = threading.Thread(target=self._write, args=(state,),
                                        name=f"checkpoint {self._pack}")
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def remove(self) -> None:
        """Delete the checkpoint, once no write can bring it back (errors of that write are
        moot: the pack is over)."""
        with contextlib.suppress(Exception):
            self.wait()
        self._checkpoints.remove(self._study, self._pack)

    def _write(self, state: PackState) -> None:
        try:
            self._checkpoints.save(self._study, self._pack, state)
        except BaseException as error:  # handed to the training thread by wait()
            self._error = error
