"""Does the search stay a search when trials train in packs? The study loop on a known surface.

Runs `loop.run` on studies/joint.toml (TPE over scheduler, base rate, warmup and exponent;
median pruning; 100 trials × 30 epochs) with the training replaced by a response surface
(fake_engine.py keeps the engine's slot contract): a trial's validation accuracy after epoch
e is a fixed function of its schedule's parameters, plus noise, with a known best:

    final(p) = 0.90 − 0.06·(log10 η − log10 0.3)² + shape(p) − 0.001·warmup
    (η > 0.8 without ≥ 3 warmup epochs never learns: accuracy 0.10, as a constant 0.6 at
    the chapter's scale did in 3 of 5 seeds)
    acc(e)   = 0.1 + (final − 0.1)·(1 − exp(−(e − 0.8·warmup + 1)/τ)),  τ = 3·√(0.3/η)
    noise    N(0, 0.004) per trial and epoch

where shape() favours cosine (+0.010), poly near exponent 1, multistep near γ = 0.3, and
penalises fast decays. A warmup slows the first epochs, so early accuracy misjudges it,
as in real training.

Cases (≥ 20 repeats each, sampler seeds 0…R−1):
- sequential: one trial at a time (a pack of 1);
- static 100: the pack before slots: all 100 asked at once (TPE has no told trial for any of
  them), Optuna's MedianPruner (complete trials only: none is, so it never prunes);
- slotted, N in flight: a pack whose slots turn over, N trials running at once, the lockstep
  median pruner after each trial's warmup (N = 8, 32, 100).
The "hyperband" set runs the study with `pruner = "hyperband"` instead:
- sequential: one trial at a time, where our lockstep Hyperband decides as Optuna's does
  (tests/test_pruning.py);
- slotted, 32 in flight, with Optuna's HyperbandPruner (a rung's rivals are the trials judged
  there before, each with the value of the step it was judged at) and with ours (every
  trial's value at the rung's own step), both after each trial's warmup.

For each: the true final accuracy of the configuration the study reports as best (what a user
would pick; its observed value is biased upwards by the noise), mean and 95% t-interval over
repeats; the trial-epochs spent; trials pruned, and pruned inside their own warmup. Then each
case's difference from each case before it, seed by seed (the same sampler seeds ran every
case), with its t-interval.

    .venv/bin/python results/benchmarks/search-quality.py [REPEATS] [median|hyperband|in-flight]

"in-flight" runs the sequential case and the slotted ones with 8 and 32 in flight only: the
choice of sampling.ADAPTIVE_IN_FLIGHT, with more repeats than the whole set affords.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid

import optuna
import torch
from fake_engine import slots_engine  # beside this script
from scipy import stats as scipy_stats

from lrsweep.search import loop, pack_run, provenance, pruning, sampling, spec
from lrsweep.train import engine
from lrsweep.train.data import Splits

optuna.logging.set_verbosity(optuna.logging.WARNING)
STUDY = "studies/joint.toml"


def final_accuracy(schedule) -> float:
    """The surface's noiseless final accuracy of a schedule."""
    params = dict(schedule.params)
    lr, warmup = schedule.base_lr, schedule.warmup_steps
    if lr > 0.8 and warmup < 3:
        return 0.10
    shape = {"cosine": 0.010, "constant": 0.0, "sqrt": -0.005,
             "poly": 0.010 - 0.005 * (params.get("exponent", 1.0) - 1.0) ** 2,
             "inverse_power": -0.010 * params.get("exponent", 0.0),
             "factor": -0.2 * (0.9 - params.get("factor", 0.9)) ** 2,
             "multistep": 0.005 - 0.02 * (params.get("gamma", 0.3) - 0.3) ** 2}[schedule.name]
    return 0.90 - 0.06 * (math.log10(lr) - math.log10(0.3)) ** 2 + shape - 0.001 * warmup


BEST = 0.91  # cosine, or poly with exponent 1, at η = 0.3 without warmup


def curve_metrics(key, config, epoch):
    schedule = config.schedule
    final = final_accuracy(schedule)
    tau = 3 * math.sqrt(0.3 / schedule.base_lr)
    progress = max(0.0, epoch - 0.8 * schedule.warmup_steps + 1)
    noise = random.Random(key * 1000 + epoch).gauss(0, 0.004)
    acc = 0.1 + (final - 0.1) * (1 - math.exp(-progress / tau)) + noise
    return engine.EpochMetrics(epoch, schedule(epoch), 1 - acc, acc, 1 - acc, acc, acc, 0.0,
                               1.0, 0.05)


def no_images(spec_, device, data_dir):
    empty = torch.empty(0, 1, 28, 28)
    labels = torch.empty(0, dtype=torch.long)
    return Splits(empty, labels, empty, labels, empty, labels, source=None)


engine.train_slots = slots_engine(curve_metrics)
loop.load_data = no_images


def run_case(folder: str, seed: int, pack: int, in_flight: int, pruner: str) -> dict:
    sampling.ADAPTIVE_IN_FLIGHT = in_flight
    pack_run.judged_from = REAL["judged_from"]
    provenance.make_pruner = REAL["make_pruner"]
    if pruner == "static":
        # The code before slots asked Optuna's MedianPruner, which compares with COMPLETE
        # trials only: in one pack of all 100 none is complete when any is judged, so it
        # never pruned. A NopPruner decides the same, without its cost (each of its 3,000
        # calls re-read the 100 running trials: 0.13 s each here).
        pack_run.judged_from = lambda config, steps: 1
        provenance.make_pruner = lambda spec_: optuna.pruners.NopPruner()
    elif pruner == "optuna-hyperband":
        provenance.make_pruner = lambda spec_: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=spec_.train.epochs)
    # The same study name for a seed in every case: Hyperband's brackets hash it (with the
    # trial's number), so paired cases put the same trials in the same brackets.
    name = f"quality-{seed}"
    study_pruner = "hyperband" if pruner.endswith("hyperband") else "median"
    spec_ = spec.load(STUDY, [f"study.name={name}", f"study.sampler_seed={seed}",
                              f"study.pruner={study_pruner}"])
    run_folder = f"{folder}/{uuid.uuid4().hex[:8]}"  # its store, checkpoints and weights
    os.environ["LRSWEEP_CHECKPOINTS"] = f"{run_folder}/checkpoints"
    os.environ["LRSWEEP_ARTIFACTS"] = f"{run_folder}/artifacts"
    url = f"sqlite:///{run_folder}.db"
    loop.run(spec_, storage=url, device="cpu", pack=pack)
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value)
    config = loop_trial_config(spec_, best.params)
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    inside = sum(max(t.intermediate_values) < pruning.judged_from(
        loop_trial_config(spec_, t.params), 1) - pruning.AFTER_WARMUP for t in pruned)
    return {"true": final_accuracy(config.schedule), "observed": best.value,
            "trial_epochs": sum(len(t.intermediate_values) for t in trials),
            "pruned": len(pruned), "inside": inside}


def loop_trial_config(spec_, params):
    from lrsweep.search.space import trial_config
    return trial_config(spec_, params)


REAL = {"judged_from": pack_run.judged_from, "make_pruner": provenance.make_pruner}
CASES = {  # (label, pack, trials in flight, pruner)
    "median": [("sequential (pack of 1)", 1, 1, "median"),
               ("static pack of 100 (before)", 100, 100, "static"),
               ("slotted, 8 in flight", 100, 8, "median"),
               ("slotted, 32 in flight", 100, 32, "median"),
               ("slotted, 100 in flight", 100, 100, "median")],
    # The choice of sampling.ADAPTIVE_IN_FLIGHT alone, with more repeats than the full set.
    "in-flight": [("sequential (pack of 1)", 1, 1, "median"),
                  ("slotted, 8 in flight", 100, 8, "median"),
                  ("slotted, 32 in flight", 100, 32, "median")],
    "hyperband": [("sequential, hyperband", 1, 1, "hyperband"),
                  ("slotted 32, Optuna's hyperband", 100, 32, "optuna-hyperband"),
                  ("slotted 32, lockstep hyperband", 100, 32, "hyperband")]}


def interval(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.4f}"
    half = scipy_stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(
        len(values))
    return f"{mean:.4f} [{mean - half:.4f}, {mean + half:.4f}]"


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    # In memory where there is room (/dev/shm): the loop's checkpoints and store are fsync'd
    # each epoch, which would otherwise be most of a run's time here.
    folder = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    print(f"# {STUDY} on the response surface of results/benchmarks/search-quality.py; "
          f"optuna {optuna.__version__}; {repeats} repeats (sampler seeds 0–{repeats - 1}); "
          f"best possible final accuracy {BEST:.4f}")
    print(f"{'case':30} {'true final acc. of the best trial':>34} {'observed best':>26} "
          f"{'trial-epochs':>12} {'pruned':>7} {'in warmup':>9} {'s/run':>6}")
    chosen = sys.argv[2] if len(sys.argv) > 2 else "median"
    if chosen not in CASES:
        sys.exit(f"search-quality.py: no case set {chosen!r}; choose one of {', '.join(CASES)}")
    cases = CASES[chosen]
    true = {}
    try:
        for label, pack, in_flight, pruner in cases:
            start = time.perf_counter()
            runs = [run_case(folder, seed, pack, in_flight, pruner) for seed in range(repeats)]
            seconds = (time.perf_counter() - start) / repeats
            true[label] = [r["true"] for r in runs]
            print(f"{label:30} {interval(true[label]):>34} "
                  f"{interval([r['observed'] for r in runs]):>26} "
                  f"{statistics.fmean(r['trial_epochs'] for r in runs):12.0f} "
                  f"{statistics.fmean(r['pruned'] for r in runs):7.1f} "
                  f"{sum(r['inside'] for r in runs):9d} {seconds:6.1f}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    # Paired: every case ran with the same sampler seeds, and so with the same random
    # start-up trials; their difference seed by seed is the sharper comparison.
    labels = list(true)
    for i, earlier in enumerate(labels[:-1]):
        print(f"\n# true final accuracy minus {earlier}'s, seed by seed: mean [95% t-interval]")
        for label in labels[i + 1:]:
            differences = [a - b for a, b in zip(true[label], true[earlier])]
            print(f"{label:30} {interval(differences):>34}")


if __name__ == "__main__":
    main()
