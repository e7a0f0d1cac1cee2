"""Does a study's precision change its answers? The chapter's runs (studies/chapter.toml: nine
runs × five seeds, the chapter's scale) trained at FP32 and again at other precisions, each in
a store of its own; per run, FP32's 5-seed mean and 95% t interval of the final test accuracy
and train loss, and each other precision's mean, its paired (same-seed) difference from FP32
and whether its mean lies inside FP32's interval. Wall time per study when given.

    python results/benchmarks/precision-compare.py fp32=sqlite:///a.db tf32=sqlite:///b.db \
        bf16=sqlite:///c.db [--seconds fp32=42.1 tf32=30.2 ...]

Each store holds one study (the first is read). Run by `bash results/benchmarks/gpu.sh cuda
precision`, which trains the three stores.
"""

from __future__ import annotations

import sys

import pandas as pd

from lrsweep.report import read
from lrsweep.report.paired import paired
from lrsweep.report.stats import mean_ci
from lrsweep.store.storage import open_storage, study_names

METRICS = ("test_acc", "train_loss")


def load(url: str) -> pd.DataFrame:
    name = study_names(open_storage(url, create=False))[0]
    frame = read.trials_frame(name, url)
    return frame[frame["state"] == "complete"]


def main(argv: list[str]) -> None:
    stores, _, timing = " ".join(argv).partition("--seconds")
    stores = dict(arg.split("=", 1) for arg in stores.split())
    seconds = dict(arg.split("=", 1) for arg in timing.split())
    frames = {precision: load(url) for precision, url in stores.items()}
    base_name, *others = frames
    base = frames[base_name]
    for precision, frame in frames.items():
        took = f", {float(seconds[precision]):.1f} s" if precision in seconds else ""
        print(f"{precision}: {len(frame)} complete trials{took}")
    for metric in METRICS:
        print(f"\n{metric} after the last epoch, mean ± 95% t half-width over seeds")
        header = f"{'run':<34}{base_name:>18}"
        for precision in others:
            header += f"{precision:>12}{'paired Δ':>20}{'inside':>8}"
        print(header)
        for run, group in base.groupby("run", sort=False):
            mean, ci, n = mean_ci(group[metric])
            line = f"{run:<34}{f'{mean:.4f} ± {ci:.4f}':>18}"
            for precision in others:
                other = frames[precision]
                theirs = other[other["run"] == run][metric]
                their_mean = theirs.mean()
                both = pd.concat([group.assign(p=base_name), other[other["run"] == run]
                                  .assign(p=precision)])
                diff = paired_between(both, run, precision, base_name, metric)
                inside = "yes" if abs(their_mean - mean) <= ci else "NO"
                line += f"{their_mean:>12.4f}{diff.cell():>20}{inside:>8}"
            print(line)


def paired_between(both: pd.DataFrame, run: str, a: str, b: str, metric: str):
    """`a` − `b` seed by seed for one run, as report.paired computes it."""
    key = pd.Series({"run": run, "p": a}), pd.Series({"run": run, "p": b})
    return paired(both, ["run", "p"], key[0], key[1], metric)


if __name__ == "__main__":
    main(sys.argv[1:])
