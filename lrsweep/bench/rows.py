"""A benchmark row from its rounds of timed epochs, the paired comparison with the chapter's
loop, and each row's own peak memory.

A run of `lrsweep bench --repeats R` times every configuration once per round, in turn, so
that what slows the machine for a while (another process, a busy neighbour of a VM, the
clock) falls on the chapter's loop and the packs alike. Each round's figure is its median
epoch after the first (the warm-up); a row's seconds per epoch is the median over rounds; its
speed against the chapter is the geometric mean of each round's paired ratio (the pack's
trial-epochs per second over the chapter loop's in the same round), with a 95% t interval
on the log ratios when there are two rounds or more.

    >>> row = summarise("K=4", 4, {0: [9.0, 1.0, 1.2], 1: [9.0, 1.1]}, 900.0)
    >>> row["round_seconds_per_epoch"], row["seconds_per_epoch"]
    ([1.1, 1.1], 1.1)
    >>> chapter = summarise("chapter", 1, {0: [5.0, 2.2], 1: [5.0, 4.4]}, 900.0)
    >>> ratio, interval = paired_ratio(row, chapter)
    >>> round(ratio, 3)   # √(8 × 16): rounds of 2.2 and 4.4 s, against 1.1 s for 4 trials
    11.314
    >>> interval is not None and interval[0] < ratio < interval[1]
    True
"""

from __future__ import annotations

import math
import re
import resource
import statistics
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from lrsweep.report.stats import mean_ci
from lrsweep.train import host_memory


def summarise(name: str, k: int, rounds: dict[int, list[float]], peak_mib: float) -> dict[str, Any]:
    """A row: the seconds of every epoch of every round (by round number), each round's
    median after its first epoch, their median, trial-epochs per second, peak memory."""
    order = sorted(rounds)
    per_round = [round_seconds(rounds[r]) for r in order]
    per_epoch = statistics.median(per_round)
    return {"name": name, "pack": k, "epoch_seconds": [rounds[r] for r in order],
            "rounds": order, "round_seconds_per_epoch": per_round,
            "seconds_per_epoch": per_epoch, "trial_epochs_per_second": k / per_epoch,
            "peak_mib": peak_mib}


def round_seconds(seconds: list[float]) -> float:
    """One round's seconds per epoch: its median epoch after the first (the warm-up), or its
    only epoch."""
    return statistics.median(seconds[1:] or seconds)


def paired_ratio(row: dict[str, Any], chapter: dict[str, Any]
                 ) -> tuple[float, list[float] | None]:
    """The row's speed over the chapter loop's, round by round (rounds both measured): the
    geometric mean of the ratios, and their 95% t interval (None under two rounds)."""
    theirs = dict(zip(chapter["rounds"], chapter["round_seconds_per_epoch"]))
    logs = [math.log(row["pack"] * theirs[r] / s)
            for r, s in zip(row["rounds"], row["round_seconds_per_epoch"]) if r in theirs]
    centre, half, _ = mean_ci(pd.Series(logs))  # the reports' t interval
    if math.isnan(half):  # one round
        return math.exp(centre), None
    return math.exp(centre), [math.exp(centre - half), math.exp(centre + half)]


def reset_peak(device: torch.device) -> None:
    """Start a row's peak memory from what the process holds now."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    host_memory.release()  # what earlier rows freed and malloc kept is not this row's
    try:  # Linux: "5" resets the process's peak resident set size (VmHWM) to the current one
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_mib(device: torch.device) -> float:
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
