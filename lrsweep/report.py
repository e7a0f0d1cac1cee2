"""Read studies from the store into pandas, and draw figures; never trains, never imports torch.

    >>> from lrsweep import report
    >>> report.studies_frame("sqlite:///results/lrsweep.db")       # doctest: +SKIP
    >>> report.trials_frame("quickstart", "sqlite:///results/lrsweep.db")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from . import schedules
from .storage import load_study, open_storage, study_names

FINAL_CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "test_nll",
                "test_ece", "avg_test_acc", "avg_test_nll", "avg_test_ece")  # avg_*: SGLD only

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


def studies_frame(url: str) -> pd.DataFrame:
    """One row per study in the store: trial counts by state and the best value."""
    rdb = open_storage(url, create=False)
    rows = []
    for name in study_names(rdb):
        study = optuna.load_study(study_name=name, storage=rdb)
        trials = study.get_trials(deepcopy=False)
        counts = {s: sum(t.state == s for t in trials) for s in TrialState}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = (max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min)(
            (t.value for t in complete), default=None)
        rows.append({"study": name, "complete": counts[TrialState.COMPLETE],
                     "pruned": counts[TrialState.PRUNED], "failed": counts[TrialState.FAIL],
                     "running": counts[TrialState.RUNNING],
                     "diverged": sum(bool(t.user_attrs.get("diverged")) for t in complete),
                     "best": best, "direction": study.direction.name.lower(),
                     "last": max((t.datetime_start for t in trials if t.datetime_start),
                                 default=None)})
    return pd.DataFrame(rows)


def trials_frame(name: str, url: str, *, study: optuna.Study | None = None) -> pd.DataFrame:
    """One row per trial: state, objective, parameters, final curve values, epochs, time."""
    study = study or load_study(name, url)  # a caller that has it loaded saves a read
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        row = {"trial": t.number, "state": t.state.name.lower(), "value": t.value}
        if attrs.get("diverged"):
            row["state"] = f"diverged ({attrs['diverged']})"
        row.update({k: v for k, v in t.params.items()})
        row["seed"] = attrs.get("seed", t.params.get("seed"))
        for key in FINAL_CURVES:
            curve = attrs.get(key) or []
            row[key] = curve[-1] if curve else None
        row["val_acc_curve"] = attrs.get("val_acc") or []
        row["classes"] = attrs.get("classes", 10)  # stores before it was kept: Fashion-MNIST
        row["epochs"] = len(attrs.get("lr") or [])
        # A pack's epoch time is shared by its trials: each is charged its share.
        pack_seconds = sum(s for s in attrs.get("epoch_seconds") or [] if s is not None)
        row["seconds"] = pack_seconds / attrs.get("pack_size", 1)
        rows.append(row)
    # A study without trials still has the columns, so every reader can select from it.
    frame = pd.DataFrame(rows, columns=None if rows else TRIAL_COLUMNS)
    frame.attrs["direction"] = study.direction.name.lower()
    return frame


TRIAL_COLUMNS = ("trial", "state", "value", "seed", *FINAL_CURVES, "val_acc_curve", "classes",
                 "epochs", "seconds")
CURVES = ("lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "test_nll",
          "test_ece", "avg_test_acc", "avg_test_nll", "avg_test_ece", "epoch_seconds")


def curves_frame(name: str, url: str, *, study: optuna.Study | None = None) -> pd.DataFrame:
    """One row per trial and epoch: the trial's state, parameters and per-epoch curves."""
    study = study or load_study(name, url)  # a caller that has it loaded saves a read
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        for epoch in range(len(attrs.get("lr") or [])):
            row = {"trial": t.number, "state": t.state.name.lower(), "value": t.value,
                   "seed": attrs.get("seed"), "diverged": attrs.get("diverged"), **t.params,
                   "epoch": epoch}
            row.update({key: (attrs.get(key) or [None] * (epoch + 1))[epoch] for key in CURVES})
            rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else
                        ("trial", "state", "value", "seed", "diverged", "epoch", *CURVES))


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
