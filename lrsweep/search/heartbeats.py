"""Holding leases while a pack trains: heartbeats recorded from a thread, handed back on Ctrl-C."""

from __future__ import annotations

import threading
import warnings
from typing import Any

import optuna

from lrsweep.store.leases import record_heartbeats, release_trials
from lrsweep.store.storage import HEARTBEAT_SECONDS


class Leases:
    """Holds trials' leases: records their heartbeats from a thread while the block runs
    (`add` takes on more), and hands them all back if a Ctrl-C ends it, so the next run
    continues those trials at once instead of waiting out the grace period."""

    def __init__(self, study: optuna.Study, trial_ids: list[int]) -> None:
        self._study, self._ids = study, list(trial_ids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._failing = False

    def add(self, trial_ids: list[int]) -> None:
        record_heartbeats(self._study, trial_ids)
        self._ids.extend(trial_ids)

    def __enter__(self) -> "Leases":
        record_heartbeats(self._study, self._ids)
        self._thread.start()
        return self

    def __exit__(self, kind: type | None, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        if kind is KeyboardInterrupt:  # after the thread stopped: no beat comes after
            release_trials(self._study, self._ids)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                record_heartbeats(self._study, list(self._ids))
                self._failing = False
            except Exception as error:
                # A locked SQLite file, a PostgreSQL reconnect: the next beat tries again
                # (the lease lapses only if the store stays out of reach for the grace period).
                if not self._failing:
                    first_line = (str(error).splitlines() or [""])[0]
                    warnings.warn(f"heartbeat not recorded ({type(error).__name__}: "
                                  f"{first_line}); retrying", stacklevel=1)
                self._failing = True
