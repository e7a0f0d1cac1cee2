"""Grid points handed out to several workers of one PostgreSQL study, two ways:

  claims  lrsweep's: ConditionalGridSampler claims a point as it asks (a unique study system
          attribute per point, one transaction with the point recorded on the trial), and a
          point whose trial failed is taken over by a compare-and-set
  queue   Optuna's public API: every point enqueued once up front (`Study.enqueue_trial`);
          `Study.ask` pops a WAITING trial, atomically (its state set under a row lock)

WORKERS processes ask trials until every point is handed out, each trial told at once (no
training: this times the handing out alone). Prints, per way and repeat: the wall time from
the workers' start to the last one's exit, trials per worker, points handed out twice, points
never handed out, and trials asked beyond the grid.

    LRSWEEP_TEST_POSTGRES=postgresql://localhost/test \
        .venv/bin/python results/benchmarks/grid-claims.py [POINTS] [WORKERS] [REPEATS]
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import sys
import time
import uuid

import optuna
from optuna.trial import TrialState

from lrsweep.search.sampling import ConditionalGridSampler
from lrsweep.search.surplus import within_total
from lrsweep.store.storage import open_storage

URL = os.environ.get("LRSWEEP_TEST_POSTGRES", "postgresql://localhost/test")
POINTS = int(sys.argv[1]) if len(sys.argv) > 1 else 120
WORKERS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
REPEATS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
GRID = [{"base_lr": 0.1 + 0.01 * (i % 12), "seed": i // 12} for i in range(POINTS)]


def suggest(trial: optuna.Trial) -> dict:
    return {"base_lr": trial.suggest_categorical("base_lr", sorted({p["base_lr"] for p in GRID})),
            "seed": trial.suggest_categorical("seed", sorted({p["seed"] for p in GRID}))}


def claims_worker(name: str) -> None:
    study = optuna.load_study(study_name=name, storage=open_storage(URL),
                              sampler=ConditionalGridSampler(GRID))
    while True:
        live = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE))
        if len(live) >= POINTS:  # lrsweep's loop: finished + running reach the total
            return
        trial = study.ask()
        if not within_total(study, [trial], POINTS):  # lrsweep's surplus rule: failed, untrained
            return
        suggest(trial)
        study.tell(trial, 0.0)


class QueueEmpty(Exception):
    pass


class OnlyTheQueue(optuna.samplers.RandomSampler):
    """An enqueued trial's parameters are fixed and never sampled: being asked to sample
    means the queue ran dry between looking at it and asking."""

    def sample_independent(self, *args, **kwargs):
        raise QueueEmpty


def queue_worker(name: str) -> None:
    study = optuna.load_study(study_name=name, storage=open_storage(URL),
                              sampler=OnlyTheQueue(seed=0))
    while True:
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return
        trial = study.ask()
        try:
            suggest(trial)
        except QueueEmpty:
            study.tell(trial, state=TrialState.FAIL)
            return
        study.tell(trial, 0.0)


def once(way: str) -> dict:
    name = f"grid-{way}-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=open_storage(URL))
    if way == "queue":
        for point in GRID:
            study.enqueue_trial(point)
    target = claims_worker if way == "claims" else queue_worker
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=target, args=(name,)) for _ in range(WORKERS)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - start
    trials = study.get_trials(deepcopy=False)
    told = [t for t in trials if t.state == TrialState.COMPLETE]
    points = [json.dumps(t.params, sort_keys=True) for t in told]
    expected = {json.dumps(p, sort_keys=True) for p in GRID}
    optuna.delete_study(study_name=name, storage=open_storage(URL))
    return {"seconds": seconds, "told": len(told), "twice": len(points) - len(set(points)),
            "missing": len(expected - set(points)), "beyond": len(trials) - POINTS}


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"# {POINTS} grid points, {WORKERS} workers (processes), PostgreSQL at {URL}; "
          f"optuna {optuna.__version__}; no training")
    for way in ("claims", "queue"):
        runs = [once(way) for _ in range(REPEATS)]
        for r in runs:
            print(f"{way:<7} {r['seconds']:6.2f} s  told {r['told']}  twice {r['twice']}  "
                  f"missing {r['missing']}  asked beyond the grid {r['beyond']}")
        print(f"{way:<7} median {statistics.median(r['seconds'] for r in runs):.2f} s, "
              f"{1000 * statistics.median(r['seconds'] for r in runs) / POINTS:.1f} ms a point")


if __name__ == "__main__":
    main()
