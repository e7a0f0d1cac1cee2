"""Per-epoch checkpoints of running packs, written atomically in a folder.

One file per pack: its slot table after the last finished epoch. For each trial still
training (by its key: the search's trial id) it holds what the trial needs to continue from
that epoch: its weights (in the pack's tensors, at its slot), its curves so far, its status
and its sampler state (SGLD). The data order is a function of (seed, epoch) and plain SGD
keeps no state, and a trial's arithmetic does not depend on its slot or pack-mates, so a
trial continued in any pack, at any slot, ends with the numbers an uninterrupted run gives.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lrsweep.train.trials import EpochMetrics, PackState, Resume


def state_dict_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    """A trained trial's weights as `torch.save` writes them (what `torch.load` and
    `lrsweep export` read back)."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class Checkpoints:
    """A folder of pack checkpoints, one subfolder a study (the search names it per store)."""

    folder: Path

    def path(self, study: str, pack: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", study)
        return self.folder / safe / f"{pack}.pt"

    def save(self, study: str, pack: str, state: PackState) -> None:
        """The pack's slot table, its trials known by their keys (trial ids). Write then
        rename: a kill leaves the old checkpoint or the new one, never half of one."""
        path = self.path(study, pack)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        # vars(), not dataclasses.asdict: asdict deep-copies field by field, and a pack of 100
        # trials × 30 epochs spent seconds in it (results/benchmarks/store-cost.py).
        torch.save({"layout": state.layout, "weights": state.weights,
                    "trials": {key: {"slot": state.slots.get(key), "state_dict": r.state_dict,
                                     "status": r.status, "diverged": r.diverged,
                                     "epochs": [dict(vars(m)) for m in r.epochs],
                                     "sampler": r.sampler}
                               for key, r in state.members.items()}},
                   buffer)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load(self, study: str, pack: str) -> dict[Any, Resume]:
        """The pack's last states by trial id; empty when there is none (or it is unreadable:
        the trials start over rather than the study failing)."""
        try:
            raw: dict[str, Any] = torch.load(self.path(study, pack), map_location="cpu",
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
            return PackState(raw["layout"], raw["weights"], slots, members).resumes()
        except FileNotFoundError:
            return {}
        except Exception:  # damaged: costs the pack's progress, never the study
            return {}

    def remove(self, study: str, pack: str) -> None:
        self.path(study, pack).unlink(missing_ok=True)


class BackgroundWriter:
    """Saves one pack's checkpoints on a thread, one at a time, while the pack trains on.

    A GPU-sized pack of 100 LeNets is 25 MB a checkpoint; pickling and fsync'ing it after
    every epoch held the training loop ~50 ms an epoch (results/benchmarks/store-cost.py). The
    states handed over are CPU copies no one changes afterwards, so the thread may take its
    time; a save waits for the one before it, so at most one epoch's write is in flight and
    the file on disk is always a whole epoch, the last or the one before. `wait` ends the
    write in flight and re-raises its error (a full disk fails the pack as before, one epoch
    later)."""

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
