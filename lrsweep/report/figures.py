"""Figures: matplotlib and seaborn set up for files, one colour per value, and the shapes of
the chapter's schedules."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lrsweep import schedules


def hue(frame: pd.DataFrame, column: str) -> dict:
    """Seaborn hue arguments giving each value of a numeric column its own colour, in order
    (a numeric hue would map 0.01 and 0.1 to nearly the same colour)."""
    values = sorted(frame[column].dropna().unique())
    labels = [f"{v:g}" for v in values]
    return {"hue": frame[column].map(lambda v: f"{v:g}"), "hue_order": labels,
            "palette": "viridis" if len(labels) > 6 else "tab10"}


def plotting():
    import matplotlib
    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt
    import seaborn as sns
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
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(CHAPTER_SHAPES):]:
        ax.set_visible(False)
    fig.suptitle("lrsweep schedules (D2L §12.11 parameters)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
