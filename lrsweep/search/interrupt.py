"""Ctrl-C during training: the first lets the epoch in flight finish and be checkpointed."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lrsweep.search.pack_run import Progress


class StopAfterEpoch:
    """The first Ctrl-C lets the epoch in flight finish and be checkpointed, then stops;
    a second one stops at once (losing that epoch, never a finished one)."""

    def __init__(self, progress: "Progress") -> None:
        self.requested = False
        self._progress = progress
        self._previous: Any = None

    def __enter__(self) -> "StopAfterEpoch":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._progress.stopping()
