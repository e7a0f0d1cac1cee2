"""What lrsweep's bookkeeping costs a study at GPU speed, where training no longer hides it.

Runs `loop.run` on the GPU target study (gpu_target.toml: the quickstart's six schedules ×
17 seeds, 100 trials × 30 epochs) with the training replaced by an engine that only keeps the
engine's contract (fake_engine.py): the sampler and Optuna's ask/tell, the curves and attributes written to
the store, pack and lease attributes, heartbeats, one checkpoint per pack per epoch (a real
pack's weights, copied out and fsync'd), one weights artifact per trial all run for real.
Two ways:

- instant: training takes no time, so the wall time is all bookkeeping, none of it hidden
  (the checkpoint of one epoch is waited for before the next is written);
- paced: each epoch takes what it would on a GPU at the target's speed (its pack's share of
  30 s), so the checkpoint writes overlap training as they do there; the overhead is the wall
  time less that training time. The training thread spins meanwhile, busy as a host thread
  launching kernels is (it even holds the GIL, which one waiting on the GPU would not): a
  sleeping one let this VM's CPU idle, and waking it cost 1.5–2 s more at pack 8.

The GPU target gives the whole study 30 s; the issue allows the store 10% of it.

    .venv/bin/python results/benchmarks/store-cost.py [--repeat N] [STORAGE_URL ...]

Default stores: a fresh SQLite file and postgresql://localhost/test (study deleted after).
Pack sizes: 100 (what a GPU's default asks at once here) and 8. With --repeat N (default 3)
each figure is the median of N runs, with their range: one run varies by ±20% here.
"""

import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

import optuna
import torch
from fake_engine import slots_engine  # beside this script

from lrsweep.search import loop, spec
from lrsweep.train import engine
from lrsweep.train.device import describe_device
from lrsweep.train.data import Splits

TARGET_SECONDS = 30.0
TARGET_STUDY = "results/benchmarks/gpu_target.toml"


PACE = {"seconds_per_trial_epoch": 0.0, "trained": 0.0}  # set by measure()


def busy(trials: int) -> None:
    """An epoch of `trials` trials at PACE's speed; the thread spins (see the module's notes)."""
    training = PACE["seconds_per_trial_epoch"] * trials
    if training:
        start = time.perf_counter()
        while time.perf_counter() - start < training:
            pass
        PACE["trained"] += time.perf_counter() - start


def flat_metrics(key, config, epoch):
    return engine.EpochMetrics(epoch, config.schedule(epoch), 1.0, 0.5, 1.0,
                               0.5 + (key % 100 + epoch) / 1000, 0.5, 0.0, 1.0, 0.05)


def no_images(spec_, device, data_dir):
    empty = torch.empty(0, 1, 28, 28)
    labels = torch.empty(0, dtype=torch.long)
    return Splits(empty, labels, empty, labels, empty, labels, source=None)


engine.train_slots = slots_engine(flat_metrics, busy)
loop.load_data = no_images


def measure(url: str, pack: int, paced: bool) -> float:
    """Seconds of bookkeeping: the wall time, less the paced training time."""
    name = f"store-cost-{uuid.uuid4().hex[:8]}"
    spec_ = spec.load(TARGET_STUDY, [f"study.name={name}"])
    trial_epochs = spec_.study.trials * spec_.train.epochs
    PACE.update(seconds_per_trial_epoch=TARGET_SECONDS / trial_epochs if paced else 0.0,
                trained=0.0)
    start = time.perf_counter()
    summary = loop.run(spec_, storage=url, device="cpu", pack=pack)
    seconds = time.perf_counter() - start - PACE["trained"]
    assert summary.finished == 100, summary
    if not url.startswith("sqlite"):
        optuna.delete_study(study_name=name, storage=url)
    return seconds


def main() -> None:
    args = sys.argv[1:]
    repeat = 3
    if args and args[0].startswith("--repeat"):
        repeat = int(args.pop(0).partition("=")[2] or args.pop(0))
    folder = tempfile.mkdtemp()
    urls = args or [f"sqlite:///{folder}/store-cost.db", "postgresql://localhost/test"]
    os.environ.setdefault("LRSWEEP_CHECKPOINTS", f"{folder}/checkpoints")
    os.environ.setdefault("LRSWEEP_ARTIFACTS", f"{folder}/artifacts")
    print(f"# {describe_device(torch.device('cpu'))}; optuna {optuna.__version__}; "
          f"100 trials × 30 epochs; bookkeeping seconds with training instant, and paced at "
          f"the GPU target's {TARGET_SECONDS:.0f} s; median [range] of {repeat} runs")
    print(f"{'store':40} {'pack':>5} {'instant':>18} {'of 30 s':>8} {'paced':>18} {'of 30 s':>8}")

    def shown(runs: list[float]) -> str:
        return f"{statistics.median(runs):5.2f} [{min(runs):4.2f}–{max(runs):4.2f}]"

    try:
        for url in urls:
            for pack in (100, 8):
                instant = [measure(url, pack, False) for _ in range(repeat)]
                paced = [measure(url, pack, True) for _ in range(repeat)]
                name = url if len(url) <= 40 else url[:37] + "..."
                print(f"{name:40} {pack:5d} {shown(instant):>18} "
                      f"{statistics.median(instant) / TARGET_SECONDS:8.1%} {shown(paced):>18} "
                      f"{statistics.median(paced) / TARGET_SECONDS:8.1%}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
