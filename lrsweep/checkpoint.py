"""Per-epoch checkpoints of running packs, written atomically in a folder beside the store.

One file per pack: its members resume together, in the same pack, and so continue exactly as
they would have. A checkpoint holds what a trial needs to continue from its last finished epoch: its weights
(plain LeNet layout), its curves so far and its status. The data order is a function of
(seed, epoch) and plain SGD keeps no state, so nothing else is needed for the continued trial
to end with the numbers an uninterrupted run gives.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from .engine import EpochMetrics, Resume
from .storage import folder_beside


@dataclass(frozen=True)
class Checkpoints:
    """The checkpoint folder of one store (`storage.folder_beside`): `LRSWEEP_CHECKPOINTS`,
    else `<file>.checkpoints/` beside a SQLite file, else `results/checkpoints/`."""

    folder: Path

    @classmethod
    def for_storage(cls, url: str) -> "Checkpoints":
        return cls(folder_beside(url, "checkpoints"))

    def path(self, study: str, pack: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", study)
        return self.folder / safe / f"{pack}.pt"

    def save(self, study: str, pack: str, states: dict[int, Resume]) -> None:
        """The pack's states by trial id. Write then rename: a kill leaves the old checkpoint
        or the new one, never half of one."""
        path = self.path(study, pack)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        # vars(), not dataclasses.asdict: asdict deep-copies field by field, and a pack of 100
        # trials × 30 epochs spent seconds in it (results/benchmarks/store-cost.py).
        torch.save({trial_id: {"state_dict": r.state_dict, "status": r.status,
                               "diverged": r.diverged,
                               "epochs": [dict(vars(m)) for m in r.epochs],
                               "sampler": r.sampler}
                    for trial_id, r in states.items()}, buffer)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load(self, study: str, pack: str) -> dict[int, Resume]:
        """The pack's last states by trial id; empty when there is none (or it is unreadable:
        the trials start over rather than the study failing)."""
        try:
            raw: dict[int, Any] = torch.load(self.path(study, pack), map_location="cpu",
                                             weights_only=True)
            return {trial_id: Resume(state_dict=r["state_dict"],
                                     epochs=[EpochMetrics(**m) for m in r["epochs"]],
                                     status=r["status"], diverged=r["diverged"],
                                     sampler=r.get("sampler"))
                    for trial_id, r in raw.items()}
        except FileNotFoundError:
            return {}
        except Exception:  # damaged: costs the pack's progress, never the study
            return {}

    def remove(self, study: str, pack: str) -> None:
        self.path(study, pack).unlink(missing_ok=True)


def pack_name(first: optuna.trial.FrozenTrial) -> str:
    """A pack's checkpoint name, from its first trial: the trial's id and the instant the store
    created it. Trial ids alone repeat: in another database holding a study of the same name
    (two PostgreSQL stores share `results/checkpoints/`), or in a store made anew beside an old
    checkpoint folder; a continued trial must never start from another trial's weights."""
    created = first.datetime_start
    stamp = f"-{created:%Y%m%dT%H%M%S%f}" if created is not None else ""
    return f"pack-{first._trial_id}{stamp}"
