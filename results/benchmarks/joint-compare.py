"""The joint search, as one code or another ran it: what it spent, whom it pruned and when,
which schedules it finished, what it found, and how its best configuration does on fresh seeds.

    python results/benchmarks/joint-compare.py LABEL=STORE.db [LABEL=STORE.db ...]

Each store holds the study `joint` (studies/joint.toml) and `joint-best` (`lrsweep rerun joint
--top 1 --seeds 5`: the best configuration over five seeds the search never trained). "Pruned
inside its warmup": pruned at an epoch before its lag and warmup had ended.
"""

from __future__ import annotations

import sys
from collections import Counter

import optuna
import pandas as pd
from optuna.trial import TrialState

from lrsweep.report.stats import format_ci, mean_ci
from lrsweep.store.records import trial_curves

optuna.logging.set_verbosity(optuna.logging.WARNING)


def search(url: str) -> list[str]:
    study = optuna.load_study(study_name="joint", storage=url)
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name.lower() for t in trials)
    epochs = sum(len(trial_curves(t).get("val_acc", [])) for t in trials)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]

    def warmup_end(t: optuna.trial.FrozenTrial) -> int:
        schedule = t.user_attrs.get("schedule", {})
        return schedule.get("lag", 0) + schedule.get("warmup_steps", 0)

    inside = sum(len(trial_curves(t)["val_acc"]) - 1 < warmup_end(t) for t in pruned)
    by_scheduler = Counter(t.params.get("scheduler") for t in trials
                           if t.state == TrialState.COMPLETE)
    best = study.best_trial
    return [f"trials: {dict(states)}; trial-epochs trained: {epochs}",
            f"pruned: {len(pruned)}, of them inside their own warmup: {inside}; first pruned at "
            f"epochs {sorted(Counter(len(trial_curves(t)['val_acc']) for t in pruned).items())} "
            "(epoch: trials)",
            f"completed by scheduler: {dict(sorted(by_scheduler.items()))}",
            f"best: trial {best.number}, val_acc {best.value:.4f}, {best.params}"]


def rerun(url: str) -> list[str]:
    try:
        study = optuna.load_study(study_name="joint-best", storage=url)
    except KeyError:
        return ["no joint-best study"]
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    lines = []
    for metric in ("val_acc", "test_acc"):
        values = pd.Series([trial_curves(t)[metric][-1] for t in done], dtype=float)
        mean, ci, n = mean_ci(values)
        lines.append(f"best configuration over {n} fresh seeds: {metric} {format_ci(mean, ci, 4)}"
                     f" (seeds {sorted(t.params.get('seed', t.user_attrs['seed']) for t in done)})")
    return lines


def main() -> None:
    for arg in sys.argv[1:]:
        label, _, path = arg.partition("=")
        url = f"sqlite:///{path}"
        print(f"== {label} ({path})")
        for line in search(url) + rerun(url):
            print(f"  {line}")


if __name__ == "__main__":
    main()
