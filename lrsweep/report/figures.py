"""Figures: matplotlib and seaborn set up for files, one colour per value, and the shapes of
the chapter's schedules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lrsweep import schedules
from lrsweep.report.stats import mean_ci, metric_bounds


def hue(frame: pd.DataFrame, column: str) -> dict:
    """Seaborn hue arguments giving each value of a numeric column its own colour, in order
    (a numeric hue would map 0.01 and 0.1 to nearly the same colour)."""
    values = sorted(frame[column].dropna().unique())
    labels = [f"{v:g}" for v in values]
    return {"hue": frame[column].map(lambda v: f"{v:g}"), "hue_order": labels,
            "palette": "viridis" if len(labels) > 6 else "tab10"}


def carry_forward(rows: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """A failed seed keeps its curve: a trial that stopped early (it diverged or collapsed)
    stays at the last value it reached up to the study's last epoch, and a value that went
    non-finite is the last finite one before it. Without this, a mean curve over the seeds
    left would recover where the tables say the configuration failed."""
    if rows.empty:
        return rows
    last = int(rows["epoch"].max())
    present = [m for m in metrics if m in rows]
    filled = []
    for _, trial in rows.sort_values(["trial", "epoch"]).groupby("trial", sort=False):
        trial = trial.copy()
        trial[present] = trial[present].replace([np.inf, -np.inf], np.nan).ffill()
        end = trial.iloc[-1]
        missing = range(int(end["epoch"]) + 1, last + 1)
        if len(missing):
            extra = pd.DataFrame([end] * len(missing))
            extra["epoch"] = list(missing)
            trial = pd.concat([trial, extra], ignore_index=True)
        filled.append(trial)
    return pd.concat(filled, ignore_index=True)


def mean_band(ax, rows: pd.DataFrame, y: str, by: str, order: list, *, label=str,
              x: str = "epoch", bounds: tuple[float, float] | None = None,
              palette: str | None = None) -> None:
    """Per value of `by` (in `order`), the mean of `y` over seeds at each `x` and its 95%
    Student-t interval as a band: the same interval as the tables, not a bootstrap, cut to
    what `y` can be (`bounds`)."""
    import seaborn as sns
    low, high = bounds or metric_bounds(y)
    colours = sns.color_palette(palette or ("viridis" if len(order) > 6 else "tab10"),
                                len(order))
    for colour, value in zip(colours, order):
        part = rows[rows[by] == value]
        if part.empty:
            continue
        points = [(step, *mean_ci(group[y])[:2]) for step, group in part.groupby(x)]
        steps, means, cis = (np.array(v, dtype=float) for v in zip(*points))
        if x == "epoch":
            steps += 1  # epochs drawn from 1, as the text, tables and progress lines count them
        ax.plot(steps, means, color=colour, label=label(value))
        cis = np.nan_to_num(cis)
        ax.fill_between(steps, np.maximum(means - cis, low), np.minimum(means + cis, high),
                        color=colour, alpha=0.2, linewidth=0)
    if x == "epoch":  # whole epochs: no tick at 1.5 on a short study's axis
        whole_ticks(ax.xaxis)


def whole_ticks(axis) -> None:
    """Ticks at whole numbers only (epochs, warmup lengths), one at least: a single point
    (one epoch) gets its own, not matplotlib's fractions around it."""
    from matplotlib.ticker import MaxNLocator
    axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def clipped_err(means: pd.Series, cis: pd.Series, metric: str) -> np.ndarray:
    """Error bars of a 95% interval cut to what `metric` can be: (2, n) below/above."""
    low, high = metric_bounds(metric)
    means, cis = np.asarray(means, dtype=float), np.nan_to_num(np.asarray(cis, dtype=float))
    return np.vstack([means - np.maximum(means - cis, low),
                      np.minimum(means + cis, high) - means])


def plotting():
    import matplotlib
    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt
    import seaborn as sns
    # Optuna's matplotlib views switch the global style to ggplot once drawn: every figure
    # starts from matplotlib's own, so colours named in titles are the colours drawn.
    plt.style.use("default")
    return plt, sns


def save(fig, path: Path, axes) -> Path:
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


# The chapter's schedules with the chapter's parameters, for `lrsweep schedules`.
CHAPTER_SHAPES = {
    "constant": dict(base_lr=0.3),
    "sqrt": dict(base_lr=0.1),
    "inverse_power": dict(base_lr=0.3, exponent=0.75),
    "factor": dict(base_lr=2.0, factor=0.9, stop_factor_lr=1e-2),
    "multistep": dict(base_lr=0.5, milestones=[15, 30], gamma=0.5),
    "cosine": dict(base_lr=0.3, final_lr=0.01, max_update=20),
    "cosine, 5 warmup epochs": dict(base_lr=0.3, final_lr=0.01, max_update=20, warmup_steps=5),
    "poly": dict(base_lr=0.3, final_lr=0.01, max_update=30, exponent=2.0),
}


def plot_schedules(out: str | Path, epochs: int = 30) -> Path:
    """One figure with every schedule's shape over `epochs`, as the chapter plots them."""
    import matplotlib
    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cols = 4
    rows = -(-len(CHAPTER_SHAPES) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), sharex=True)
    ts = list(range(epochs))
    for ax, (label, params) in zip(axes.flat, CHAPTER_SHAPES.items()):
        f = schedules.build(label.split(",")[0], **params)
        ax.plot(ts, [f(t) for t in ts], marker=".")
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        ax.set_title(f"{label}\n{shown}", fontsize=8)
        ax.set_xlabel("epoch t")
        ax.set_ylabel("learning rate")
        whole_ticks(ax.xaxis)  # t counts whole epochs: no tick at 0.5 over 3 of them
        ax.grid(color="0.85")  # opaque: PostScript (.eps, .ps) draws no transparency
    for ax in list(axes.flat)[len(CHAPTER_SHAPES):]:
        ax.set_visible(False)
    fig.suptitle("lrsweep schedules (D2L §12.11 parameters)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
