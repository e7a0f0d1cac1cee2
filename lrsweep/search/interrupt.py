"""How a run stops. Ctrl-C (SIGINT) and SIGTERM (a cluster scheduler's, `kill`'s): the first
lets the work in flight reach a safe point, then stops with the trials resumable and their
leases handed back; so does a file that cannot be written (a full disk). A worker whose
leases lapsed drops its trials and goes on."""

from __future__ import annotations

import errno
import signal
import threading
from typing import TYPE_CHECKING, Any

from lrsweep.store.leases import GRACE_SECONDS
from lrsweep.store.failures import disk_full

if TYPE_CHECKING:
    from lrsweep.search.work import Progress

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StoppedResumable(Exception):
    """The run stops on an error that leaves its trials resumable: the leases are handed
    back, as on Ctrl-C, and the next run continues them at once."""


class NotWritten(StoppedResumable):
    """A pack's checkpoint or a trial's weights could not be written (a full disk): the
    trials continue, in a later run, from the last checkpoint that was."""

    def __init__(self, what: str, error: OSError) -> None:
        why = error.strerror or str(error)
        where = f" ({error.filename})" if error.filename else ""
        fix = ("free space" if error.errno in (errno.ENOSPC, errno.EDQUOT)
               else "make the folder writable (or point LRSWEEP_CHECKPOINTS elsewhere)")
        super().__init__(f"{what} could not be written: {why}{where}; its unfinished trials stay "
                         f"running, to be continued from their last checkpoint: {fix}, "
                         "then run the same command again")


class StoreFull(StoppedResumable):
    """The store's disk filled up while a pack trained: its trials stay running, resumable from
    the pack's last checkpoint, rather than failed."""


def resumable(error: BaseException) -> BaseException | None:
    """What to stop with, leases handed back and the trials resumable, when `error` ends a
    pack: a signal or a StoppedResumable as it is, a full store as StoreFull; None for a
    crash (the pack's trials fail)."""
    if isinstance(error, (KeyboardInterrupt, StoppedResumable)):
        return error
    full = disk_full(error) if isinstance(error, Exception) else None
    return StoreFull(full) if full else None


class LeaseLapsed(Exception):
    """This worker was silent (stopped, asleep, cut off from the store) past the grace period:
    its trials may be another worker's now, so it drops them, untold, hands nothing back, and
    goes on with the study (taking them over itself if no one else did)."""

    def __init__(self, seconds: float, numbers: list[int]) -> None:
        shown = ", ".join(map(str, sorted(numbers))) or "none"
        super().__init__(f"this worker was silent for {seconds:.0f} s, past the "
                         f"{GRACE_SECONDS:g} s grace period (stopped or asleep?): its trials "
                         f"({shown}) are left to any worker that took them over")


class Interrupted(KeyboardInterrupt):
    """A stop asked by a signal: handled as Ctrl-C is (the command exits 130, or 143 after
    SIGTERM)."""


class StopAfterEpoch:
    """The first signal is only noted: the loop stops at its next safe point (the epoch in
    flight checkpointed, the trial being asked leased, the one being told stored), and
    `Leases` hands the trials back. A second one stops at once (losing that epoch, never a
    finished one). The loop looks with `check`, a pack also with `requested`."""

    def __init__(self, progress: "Progress") -> None:
        self.requested: str | None = None   # the signal's name, once one came
        self._progress = progress
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopAfterEpoch":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def check(self) -> None:
        """Stop here (`Interrupted`) if a signal came."""
        if self.requested:
            raise Interrupted(self.requested)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise Interrupted(signal.Signals(signum).name)
        self.requested = signal.Signals(signum).name
        if signum == signal.SIGINT:
            self._progress.stopping()
        else:
            self._progress.note(f"{self.requested}: stopping at the next safe point, "
                                "its trials handed back to be continued (again: now)")
