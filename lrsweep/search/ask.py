"""Asking a pack of trials at once, as `Study.ask` would one by one, but cheaper."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from lrsweep.search.heartbeats import Leases
from lrsweep.store import optuna_private


def ask_pack(study: optuna.Study, n: int, leases: Leases) -> list[optuna.Trial]:
    """`n` trials made as `Study.ask` makes them (enqueued trials first), then leased together
    (one transaction, not one a trial). `Study.ask` reads every unfinished trial of the study to find enqueued
    ones, so asking a pack of 100 re-read its growing set of running trials 100 times (a
    third of a GPU study's bookkeeping, results/benchmarks/store-cost.py); here the queue is
    looked at once per pack (a trial enqueued meanwhile goes to the next pack)."""
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    trials = []
    try:
        for _ in range(n):
            if waiting:  # Optuna's own ask takes one from the queue, safe against other workers
                waiting -= 1
                trials.append(study.ask())
            else:
                trials.append(optuna_private.new_trial(study))
    finally:
        # Leased together, also when a second Ctrl-C cuts the pack short (so they are handed
        # back with the others). A trial whose process dies before its first heartbeat gets
        # one from the next worker that looks (`claim_stale_trials`), and is taken over a
        # grace period on.
        leases.add([optuna_private.trial_id(t) for t in trials])
    return trials
