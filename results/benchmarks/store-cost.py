"""What lrsweep's bookkeeping costs a study at GPU speed, where training no longer hides it.

Runs `study.run` on the GPU target study (gpu_target.toml: the quickstart's six schedules ×
17 seeds, 100 trials × 30 epochs) with the training replaced by an engine that returns at
once, so the wall time is everything but training: the sampler and Optuna's ask/tell, the
curves and attributes written
to the store, pack and lease attributes, heartbeats, one checkpoint per pack per epoch (real
LeNet weights, fsync'd), one weights artifact per trial. The GPU target gives the whole study
30 s; the issue allows the store 10% of it.

    .venv/bin/python results/benchmarks/store-cost.py [STORAGE_URL ...]

Default stores: a fresh SQLite file and postgresql://localhost/test (study deleted after).
Pack sizes: 100 (what a GPU's default asks at once here) and 8.
"""

import os
import shutil
import sys
import tempfile
import time
import uuid

import optuna
import torch

from lrsweep import engine, spec, study
from lrsweep.data import Splits
from lrsweep.model import lenet

TARGET_SECONDS = 30.0
TARGET_STUDY = "results/benchmarks/gpu_target.toml"
WEIGHTS = lenet(0).state_dict()  # every trial's weights: real sizes for checkpoints, artifacts


def instant_train_pack(configs, splits, *, on_epoch=None, on_states=None, resume=None):
    """The engine's contract (per-epoch metrics, then the pack's states) without training."""
    results = [engine.TrialResult(c, device="none", pack_size=len(configs), state_dict=WEIGHTS)
               for c in configs]
    for epoch in range(configs[0].epochs):
        metrics = {i: engine.EpochMetrics(epoch, c.schedule(epoch), 1.0, 0.5, 1.0,
                                          0.5 + (i + epoch) / 1000, 0.5, 0.0, 1.0, 0.05)
                   for i, c in enumerate(configs)}
        for i, m in metrics.items():
            results[i].epochs.append(m)
        if on_epoch:
            on_epoch(metrics)
        if on_states:
            on_states([engine.Resume(WEIGHTS, list(r.epochs)) for r in results])
    return results


def no_images(spec_, device, data_dir):
    empty = torch.empty(0, 1, 28, 28)
    labels = torch.empty(0, dtype=torch.long)
    return Splits(empty, labels, empty, labels, empty, labels, source=None)


engine.train_pack = instant_train_pack
study._load_data = no_images


def measure(url: str, pack: int) -> float:
    name = f"store-cost-{uuid.uuid4().hex[:8]}"
    spec_ = spec.load(TARGET_STUDY, [f"study.name={name}"])
    start = time.perf_counter()
    summary = study.run(spec_, storage=url, device="cpu", pack=pack)
    seconds = time.perf_counter() - start
    assert summary.finished == 100, summary
    if not url.startswith("sqlite"):
        optuna.delete_study(study_name=name, storage=url)
    return seconds


def main() -> None:
    folder = tempfile.mkdtemp()
    urls = sys.argv[1:] or [f"sqlite:///{folder}/store-cost.db", "postgresql://localhost/test"]
    os.environ.setdefault("LRSWEEP_CHECKPOINTS", f"{folder}/checkpoints")
    os.environ.setdefault("LRSWEEP_ARTIFACTS", f"{folder}/artifacts")
    print(f"# {engine.describe_device(torch.device('cpu'))}; optuna {optuna.__version__}; "
          f"100 trials × 30 epochs, training replaced by an instant engine")
    print(f"{'store':40} {'pack':>5} {'seconds':>8} {'ms/trial':>9} {'of 30 s':>8}")
    try:
        for url in urls:
            for pack in (100, 8):
                seconds = measure(url, pack)
                shown = url if len(url) <= 40 else url[:37] + "..."
                print(f"{shown:40} {pack:5d} {seconds:8.2f} {seconds * 10:9.1f} "
                      f"{seconds / TARGET_SECONDS:8.1%}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
