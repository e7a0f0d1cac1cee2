"""Holding leases while packs train: heartbeats recorded from a thread, handed back when the run
stops with its trials resumable (Ctrl-C, SIGTERM, a full disk), and given up, never renewed,
once this worker was silent long enough for another one to take its trials over."""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any

import optuna

from lrsweep.search.interrupt import StoppedResumable
from lrsweep.store.failures import driver_error, first_line
from lrsweep.store.leases import (GRACE_SECONDS, HEARTBEAT_SECONDS, record_heartbeats,
                                  release_trials)

# Silent this long, a worker may have lost its trials: another worker takes a trial whose beat
# is older than the grace period. The margin covers the moment between looking at the clock
# and writing to the store.
LAPSE_SECONDS = GRACE_SECONDS - min(HEARTBEAT_SECONDS, GRACE_SECONDS / 4)


def _clock() -> tuple[float, float]:
    """Two clocks: one that counts a suspended machine's sleep where there is one (Linux's
    monotonic clock stops during suspend), and the wall clock, which also does."""
    steady = (time.clock_gettime(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME")
              else time.monotonic())
    return steady, time.time()


def _since(then: tuple[float, float]) -> float:
    now = _clock()
    if hasattr(time, "CLOCK_BOOTTIME"):  # counts suspend; the wall clock would only add an
        return now[0] - then[0]          # NTP step forward, a false lapse
    return max(now[0] - then[0], now[1] - then[1])  # elsewhere the wall clock sees a sleep


class Leases:
    """Holds trials' leases: records their heartbeats from a thread while the block runs (`add`
    takes on more, `drop` stops beating told ones); if the block ends on an interruption or a
    `StoppedResumable` error, hands them back, so the next run continues those trials at once
    instead of waiting out the grace period. `lapsed` says when they may be lost."""

    def __init__(self, study: optuna.Study, trial_ids: list[int]) -> None:
        self._study = study
        self._held = list(trial_ids)                 # handed back when the run stops
        self._beating = dict.fromkeys(trial_ids)     # renewed by the thread (ordered)
        self._lock = threading.Lock()  # a dropped trial gets no beat once `drop` returns
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._failing = False
        self._renewed = _clock()  # when the last renewal of every lease began
        self._silent: float | None = None

    def add(self, trial_ids: list[int]) -> None:
        with self._lock:
            self._held.extend(trial_ids)
            self._beating.update(dict.fromkeys(trial_ids))
            record_heartbeats(self._study, trial_ids)

    def drop(self, trial_ids: list[int]) -> None:
        """Told trials: no more beats (they kept being renewed until the block ended)."""
        with self._lock:
            for trial_id in trial_ids:
                self._beating.pop(trial_id, None)

    def lapsed(self) -> float | None:
        """How long this worker was silent, once that is past `LAPSE_SECONDS` (from then on
        it holds no lease and renews none); None while its leases hold."""
        with self._lock:
            return self._lapsed()

    def __enter__(self) -> "Leases":
        record_heartbeats(self._study, list(self._beating))
        self._thread.start()
        return self

    def __exit__(self, kind: type | None, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        stopped = kind is not None and issubclass(kind, (KeyboardInterrupt, StoppedResumable))
        # After the thread stopped, no beat comes after; leases that lapsed may be another
        # worker's now: handing them back would let a third one take them from it.
        if stopped and self.lapsed() is None:
            release_trials(self._study, self._held)

    def _lapsed(self) -> float | None:
        if self._silent is None and _since(self._renewed) > LAPSE_SECONDS:
            self._silent = _since(self._renewed)
        return self._silent

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with self._lock:
                if self._lapsed() is not None:
                    return  # a beat now could renew the lease of a worker that took over
                began = _clock()
                try:
                    record_heartbeats(self._study, list(self._beating))
                    if _since(self._renewed) > LAPSE_SECONDS:
                        # The write itself outlasted the margin (a store locked for long):
                        # another worker may have taken the trials over meanwhile.
                        self._silent = _since(self._renewed)
                        return
                    self._renewed, self._failing = began, False
                except Exception as error:
                    # A locked SQLite file, a PostgreSQL reconnect: the next beat tries again
                    # (the lease lapses only if the store stays out of reach for the grace
                    # period).
                    if not self._failing:
                        cause = driver_error(error)  # the database's words, not Optuna's
                        warnings.warn(f"heartbeat not recorded ({type(cause).__name__}: "
                                      f"{first_line(cause)}); retrying", stacklevel=1)
                    self._failing = True
