"""`lrsweep bench`: trial-epochs per second of the chapter's own training loop
(`bench/chapter.py`) and of lrsweep's packed engine, in one run, on the same device and the
same images; with `repeats`, in rounds that take turns (`bench/rows.py`), so that each pack's
speed against the chapter is a paired ratio with an interval.

    >>> from lrsweep import bench
    >>> record = bench.run("cpu", subset=10_000, packs=[1, 4], epochs=2)   # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from lrsweep import __version__, schedules
from lrsweep.bench.chapter import BATCH, CHAPTER_LR, chapter_loop
from lrsweep.bench.rows import paired_ratio, peak_mib, reset_peak, round_seconds, summarise
from lrsweep.bench.store_cost import storage_cost
from lrsweep.train import data, engine, graphs, host_memory
from lrsweep.train.device import (check_environment, convolutions as chosen_convolutions,
                                  describe_device, resolve_device)
from lrsweep.train.pack import slots
from lrsweep.train.precision import describe as describe_precision

__all__ = ["run", "table", "save", "chapter_loop", "storage_cost", "resolve_device"]
CHAPTER = "chapter loop (DataLoader, 4 workers)"
RECORDS = Path("results/benchmarks")  # where a record goes without --out
_SHOWN: dict = {}  # the warnings each row's pack raised and bench showed again: once a process


def run(device: str = "auto", *, subset: int = 0, packs: list[int] | None = None,
        epochs: int = 3, repeats: int = 1, data_dir: str | None = None, chapter: bool = True,
        precision: str = "fp32", log=print) -> dict[str, Any]:
    """Measure and return a JSON-able record: hardware, settings, one row per configuration.
    The packs train at `precision` (a study's `[train] precision`); the chapter's loop as
    PyTorch runs it by default. Every configuration is timed once per round, `repeats`
    rounds in turn."""
    dev = resolve_device(device)
    check_environment()  # a bad LRSWEEP_* setting fails before anything is measured
    convolutions = f"{chosen_convolutions()} convolutions"
    packs = packs or ([1, 8, 32, 128] if dev.type == "cuda" else [1, 2, 4, 8, 16, 32])
    folder = data.locate(data_dir)
    try:
        splits = data.load(dev, data_dir=folder, validation=0, subset=subset)
    except data.DataError as error:  # the option's name, not the study file's key
        said = f"subset = {subset} "
        if not str(error).startswith(said):
            raise
        raise data.DataError(f"--subset {subset} {str(error).removeprefix(said)}") from None
    if dev.type == "cpu":  # as a CPU pack sets it, but from the first row: every round alike
        host_memory.keep()
    plan = ([(CHAPTER, 1, None)] if chapter else []) + [
        (_pack_name(k, shared), k, shared)
        for k in packs for shared in ([True, False] if k > 1 else [True])]
    timed: dict[str, dict[int, list[float]]] = {name: {} for name, _, _ in plan}
    peaks = dict.fromkeys(timed, 0.0)
    out_of_memory: set[int] = set()  # pack sizes skipped from then on, both modes
    failed_capture = False  # a pack that fell back to eager steps (graphs.train_epoch)
    for round_ in range(repeats):
        if repeats > 1:
            log(f"round {round_ + 1} of {repeats}")
        for name, k, shared in plan:
            if k in out_of_memory and shared is not None:
                continue
            log(f"{name} ..." if shared is not None else f"{name}: {len(splits.train_y)} "
                f"images, {epochs} epoch{'' if epochs == 1 else 's'} ...")
            reset_peak(dev)
            if shared is None:
                seconds, failed = chapter_loop(folder, dev, subset, epochs), False
            else:
                seconds, failed = _time_pack(k, shared, splits, epochs, precision)
            if seconds is None:
                log("  out of memory: skipped")
                out_of_memory.add(k)
                continue
            timed[name][round_] = seconds
            peaks[name] = max(peaks[name], peak_mib(dev))
            failed_capture |= failed
            log(_said(seconds, k if shared is not None else None))
    rows = [summarise(name, k, timed[name], peaks[name]) for name, k, _ in plan if timed[name]]
    for row in rows:  # the chapter's loop against itself: 1, without an interval
        row["vs_chapter"], row["vs_chapter_interval"] = (
            (None, None) if not chapter else (1.0, None) if row is rows[0]
            else paired_ratio(row, rows[0]))
    return _record(dev, rows, splits, epochs, repeats, precision, convolutions, failed_capture,
                   log)


def _record(dev: torch.device, rows: list[dict[str, Any]], splits: data.Splits, epochs: int,
            repeats: int, precision: str, convolutions: str, failed_capture: bool,
            log) -> dict[str, Any]:
    """The JSON-able record of a run: what was measured, on what, how; the storage cost too."""
    log("storage: 100 trials of 30 epochs into a fresh SQLite file ...")
    store = storage_cost()
    log(f"  {store['batched_ms_per_trial']:.1f} ms per trial batched, "
        f"{store['per_value_ms_per_trial']:.1f} ms through Optuna's per-value API")
    graphed = graphs.enabled(dev) and not failed_capture  # the LeNet SGD packs timed here
    return {"lrsweep": __version__, "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "hardware": describe_device(dev), "torch": torch.__version__,
            "images_per_epoch": len(splits.train_y), "test_images": len(splits.test_y),
            "epochs": epochs, "repeats": repeats,
            "precision": describe_precision(precision, dev), "convolutions": convolutions,
            "steps": ("CUDA graphs" if graphed else
                      "eager (CUDA graph capture failed)" if failed_capture else "eager"),
            "host_memory": (None if dev.type == "cuda" else "malloc keeps freed memory"
                            if host_memory.kept() else "malloc as it is"),
            "timing": ("each round: the median epoch after the first (all epochs if fewer "
                       "than 2); s / epoch: the median over rounds; vs chapter: the geometric "
                       "mean of each round's paired ratio" + (
                           f", with a 95% t interval over the {repeats} rounds" if repeats > 1
                           else " (one round: no interval; --repeats 2 or more gives one)")),
            "rows": rows, "storage": store}


def _pack_name(k: int, shared: bool) -> str:
    """A pack row's name: its trials, how they take their batches, its empty slot if any."""
    kind = "" if k == 1 else ", shared batch" if shared else ", own orders"
    empty = " (a masked slot beside it)" if slots(k, "lenet") > k else ""
    return f"lrsweep K={k}{kind}{empty}"


def _said(seconds: list[float], pack: int | None) -> str:
    """One configuration's round as the log says it; trial-epochs per second for a pack."""
    per_epoch = round_seconds(seconds)
    return f"  {per_epoch:.2f} s per epoch" + (
        f", {pack / per_epoch:.2f} trial-epochs/s" if pack else "")


def _time_pack(k: int, shared: bool, splits: data.Splits, epochs: int,
               precision: str) -> tuple[list[float] | None, bool]:
    """One pack of k trials at the chapter's constant rate, all on seed 0's batches or each on
    its own: its epochs' seconds (None when it ran out of memory), and whether its capture
    failed."""
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
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno,
                                   registry=_SHOWN)
    except torch.cuda.OutOfMemoryError:
        return None, False
    except RuntimeError as error:  # the host's memory: PyTorch's CPU allocator raises this
        if "can't allocate memory" not in str(error):
            raise
        return None, False
    return [m.seconds for m in results[0].epochs], failed_capture


def table(record: dict[str, Any]) -> list[list[str]]:
    """Rows for printing: configuration, s/epoch, trial-epochs/s, × chapter (with its 95%
    interval over rounds), peak memory."""
    out = []
    for row in record["rows"]:
        ratio, interval = row["vs_chapter"], row.get("vs_chapter_interval")
        shown = "–" if ratio is None else f"{ratio:.2f}×" + (
            f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")
        out.append([row["name"], f"{row['seconds_per_epoch']:.3f}",
                    f"{row['trial_epochs_per_second']:.2f}", shown, f"{row['peak_mib']:.0f}"])
    return out


def save(record: dict[str, Any], out: Path | None, device_type: str) -> Path:
    """The JSON record, by default results/benchmarks/bench-{cpu,gpu}-DATE.json."""
    if out is None:
        slug = "gpu" if device_type == "cuda" else "cpu"
        out = RECORDS / f"bench-{slug}-{datetime.date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    return out
