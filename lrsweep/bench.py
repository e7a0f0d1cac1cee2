"""`lrsweep bench`: trial-epochs per second of the chapter's own training loop and of
lrsweep's packed engine, in one run, on the same device and the same images.

The chapter's loop is re-implemented faithfully: torchvision's FashionMNIST with ToTensor,
a DataLoader with 4 workers and batch 256 (shuffled), a host sync every step (its metric
accumulator calls float()), and the test set evaluated each epoch through another DataLoader.

    >>> from lrsweep import bench
    >>> record = bench.run("cpu", subset=10_000, packs=[1, 4], epochs=2)   # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import gzip
import json
import re
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrsweep import __version__, schedules
from lrsweep.train import data, engine, graphs, host_memory
from lrsweep.train.device import (check_environment, convolutions as chosen_convolutions,
                                  describe_device, resolve_device)
from lrsweep.train.precision import describe as describe_precision
from lrsweep.train.model import lenet

CHAPTER_LR = 0.3  # the chapter's constant-rate run
BATCH = 256


def run(device: str = "auto", *, subset: int = 0, packs: list[int] | None = None,
        epochs: int = 3, data_dir: str | None = None, chapter: bool = True,
        precision: str = "fp32", log=print) -> dict[str, Any]:
    """Measure and return a JSON-able record: hardware, settings, one row per configuration.
    The packs train at `precision` (a study's `[train] precision`); the chapter's loop as
    PyTorch runs it by default."""
    dev = resolve_device(device)
    check_environment()  # a bad LRSWEEP_* setting fails before anything is measured
    convolutions = f"{chosen_convolutions()} convolutions"
    packs = packs or ([1, 8, 32, 128] if dev.type == "cuda" else [1, 2, 4, 8, 16, 32])
    folder = data.locate(data_dir)
    splits = data.load(dev, data_dir=folder, validation=0, subset=subset)
    n = len(splits.train_y)
    rows = []
    failed_capture = False  # a pack that fell back to eager steps (graphs.train_epoch)
    if chapter:
        log(f"chapter loop: {n} images, {epochs} epochs ...")
        _reset_peak(dev)
        seconds = chapter_loop(folder, dev, subset, epochs)
        rows.append(_row("chapter loop (DataLoader, 4 workers)", 1, seconds, dev))
        log(f"  {rows[-1]['seconds_per_epoch']:.2f} s per epoch")
    for k in packs:
        for shared in ([True, False] if k > 1 else [True]):
            row, failed = _time_pack(k, shared, splits, epochs, precision, dev, log)
            if row is None:
                break  # out of memory: not its other mode either
            rows.append(row)
            failed_capture |= failed
    log("storage: 100 trials of 30 epochs into a fresh SQLite file ...")
    store = storage_cost()
    log(f"  {store['batched_ms_per_trial']:.1f} ms per trial batched, "
        f"{store['per_value_ms_per_trial']:.1f} ms through Optuna's per-value API")
    graphed = graphs.enabled(dev) and not failed_capture  # the LeNet SGD packs timed here
    base = rows[0]["trial_epochs_per_second"] if chapter else None
    for row in rows:
        row["vs_chapter"] = row["trial_epochs_per_second"] / base if base else None
    return {"lrsweep": __version__, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "hardware": describe_device(dev), "torch": torch.__version__,
            "images_per_epoch": n, "test_images": len(splits.test_y), "epochs": epochs,
            "precision": describe_precision(precision, dev), "convolutions": convolutions,
            "steps": ("CUDA graphs" if graphed else
                      "eager (CUDA graph capture failed)" if failed_capture else "eager"),
            "host_memory": (None if dev.type == "cuda" else "malloc keeps freed memory"
                            if host_memory.kept() else "malloc as it is"),
            "timing": "median epoch after the first (all epochs if fewer than 2)",
            "rows": rows, "storage": store}


def _time_pack(k: int, shared: bool, splits: data.Splits, epochs: int, precision: str,
               dev: torch.device, log) -> tuple[dict[str, Any] | None, bool]:
    """One pack of k trials at the chapter's constant rate, all on seed 0's batches or each on
    its own: its row (None when it ran out of memory), and whether its capture failed."""
    mode = "shared batch" if shared else "own orders"
    log(f"lrsweep pack K={k} ({mode}) ...")
    _reset_peak(dev)
    configs = [engine.TrialConfig(schedules.build("constant", base_lr=CHAPTER_LR),
                                  seed=0 if shared else i, epochs=epochs, batch_size=BATCH,
                                  precision=precision)
               for i in range(k)]
    failed_capture = False  # the pack fell back to eager steps (graphs.train_epoch)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = engine.train_pack(configs, splits)
        for w in caught:  # seen, and still shown
            failed_capture |= issubclass(w.category, graphs.CaptureWarning)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    except torch.cuda.OutOfMemoryError:
        log("  out of memory: skipped")
        return None, False
    seconds = [m.seconds for m in results[0].epochs]
    row = _row(f"lrsweep K={k}, {mode}", k, seconds, dev)
    log(f"  {row['seconds_per_epoch']:.2f} s per epoch, "
        f"{row['trial_epochs_per_second']:.2f} trial-epochs/s")
    return row, failed_capture


def chapter_loop(folder: Path, device: torch.device, subset: int, epochs: int) -> list[float]:
    """Seconds per epoch of the chapter's `train` (PyTorch tab), constant rate 0.3."""
    import torchvision
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms

    with tempfile.TemporaryDirectory() as root:
        raw = Path(root) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for name in data.FILES.values():  # torchvision wants the files unpacked, in its layout
            src = folder / f"{name}.gz"
            (raw / name).write_bytes(gzip.decompress(src.read_bytes()) if src.is_file()
                                     else (folder / name).read_bytes())
        trans = transforms.ToTensor()
        train_set = torchvision.datasets.FashionMNIST(root, train=True, transform=trans)
        test_set = torchvision.datasets.FashionMNIST(root, train=False, transform=trans)
        if subset:
            train_set = Subset(train_set, range(subset))
        # The chapter's 4 workers, even where torch advises fewer (on 2 cores it warns).
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        train_iter = DataLoader(train_set, BATCH, shuffle=True, num_workers=4)
        test_iter = DataLoader(test_set, BATCH, shuffle=False, num_workers=4)
        net = lenet(0).to(device)
        loss = nn.CrossEntropyLoss()
        trainer = torch.optim.SGD(net.parameters(), lr=CHAPTER_LR)
        seconds = []
        for _ in range(epochs):
            start = time.perf_counter()
            metric = [0.0, 0.0, 0.0]  # d2l.Accumulator(3): float() of each term, every step
            net.train()
            for X, y in train_iter:
                trainer.zero_grad()
                X, y = X.to(device), y.to(device)
                y_hat = net(X)
                l = loss(y_hat, y)
                l.backward()
                trainer.step()
                with torch.no_grad():
                    metric[0] += float(l * X.shape[0])
                    metric[1] += float((y_hat.argmax(axis=1) == y).sum())
                    metric[2] += X.shape[0]
            net.eval()  # d2l.evaluate_accuracy_gpu
            correct = total = 0.0
            with torch.no_grad():
                for X, y in test_iter:
                    X, y = X.to(device), y.to(device)
                    correct += float((net(X).argmax(axis=1) == y).sum())
                    total += y.numel()
            seconds.append(time.perf_counter() - start)
        return seconds


def storage_cost(trials: int = 100, epochs: int = 30) -> dict[str, Any]:
    """Milliseconds per trial to ask, record (curves, attrs, intermediate values) and tell, on
    a fresh SQLite file: lrsweep's batched write against one Optuna call per value."""
    import optuna

    from lrsweep.store.records import record_trial
    from lrsweep.store.storage import open_storage

    curve = [0.5 + i / 1000 for i in range(epochs)]
    attrs = {name: curve for name in ("lr", "train_loss", "train_acc", "val_loss", "val_acc",
                                      "test_acc", "epoch_seconds")}
    attrs.update(seed=0, diverged=None, status="complete", device="bench", pack_size=1,
                 schedule={"name": "constant", "base_lr": 0.1})
    timings = {}
    with tempfile.TemporaryDirectory() as folder:
        rdb = open_storage(f"sqlite:///{folder}/bench.db")
        for mode in ("batched", "per_value"):
            study = optuna.create_study(storage=rdb, study_name=mode,
                                        sampler=optuna.samplers.RandomSampler(seed=0))
            start = time.perf_counter()
            for _ in range(trials):
                trial = study.ask()
                trial.suggest_float("base_lr", 0.01, 1.0, log=True)
                if mode == "batched":
                    record_trial(study, trial, attrs, dict(enumerate(curve)))
                else:
                    for key, value in attrs.items():
                        trial.set_user_attr(key, value)
                    for step, value in enumerate(curve):
                        trial.report(value, step)
                study.tell(trial, curve[-1])
            timings[f"{mode}_ms_per_trial"] = (time.perf_counter() - start) / trials * 1e3
    return {"trials": trials, "epochs": epochs, "backend": "sqlite (WAL)", **timings}



def table(record: dict[str, Any]) -> list[list[str]]:
    """Rows for printing: configuration, s/epoch, trial-epochs/s, × chapter, peak memory."""
    out = []
    for row in record["rows"]:
        ratio = row["vs_chapter"]
        out.append([row["name"], f"{row['seconds_per_epoch']:.3f}",
                    f"{row['trial_epochs_per_second']:.2f}",
                    "–" if ratio is None else f"{ratio:.2f}×", f"{row['peak_mib']:.0f}"])
    return out


def _row(name: str, k: int, seconds: list[float], device: torch.device) -> dict[str, Any]:
    measured = seconds[1:] if len(seconds) > 1 else seconds
    per_epoch = statistics.median(measured)
    return {"name": name, "pack": k, "epoch_seconds": seconds, "seconds_per_epoch": per_epoch,
            "trial_epochs_per_second": k / per_epoch, "peak_mib": _peak_mib(device)}


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    host_memory.release()  # what earlier rows freed and malloc kept is not this row's
    try:  # Linux: "5" resets the process's peak resident set size (VmHWM) to the current one
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_mib(device: torch.device) -> float:
    """CUDA: the most tensor memory allocated since the reset. CPU: the process's peak resident
    memory since the reset (Linux; elsewhere since it started), libraries and images included
    (the reset first hands back what earlier rows freed and malloc kept: host_memory); the
    chapter loop's DataLoader workers are processes of their own and not counted."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def save(record: dict[str, Any], out: Path | None, device_type: str) -> Path:
    """The JSON record, by default results/benchmarks/bench-{cpu,gpu}-DATE.json."""
    if out is None:
        slug = "gpu" if device_type == "cuda" else "cpu"
        out = Path("results/benchmarks") / f"bench-{slug}-{datetime.date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    return out
