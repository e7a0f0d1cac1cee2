"""Exercise 2: how convergence changes with the exponent of the decay (inverse-power and
polynomial decay)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lrsweep.report.figures import carry_forward, clipped_err, mean_band, plotting, save
from lrsweep.report.paired import against_zero, paired
from lrsweep.report.sections import Section, by_config, grid_axis, only_varies, pm_row, varies
from lrsweep.report.stats import finished, lower_is_better
from lrsweep.search.spec import StudySpec


def decay_exponent(trials: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec | None,
                   metric: str, folder: Path) -> Section | None:
    if not varies(trials, "exponent", 3) or lower_is_better(metric) \
            or not grid_axis(spec, "exponent") or varies(trials, "optimizer", 2):
        return None  # (a study comparing optimizers gets the sampling section instead)
    done = finished(trials[trials["exponent"].notna()])
    rows = finished(curves[curves["exponent"].notna()])
    if done.empty:
        return None
    keys = ["scheduler", "exponent"] if "scheduler" in done else ["exponent"]
    if not only_varies(done, keys):
        return None
    table = by_config(done, keys, [metric, "test_acc"])
    # The target: one point below the best configuration's mean final accuracy.
    target = math.floor((table[f"{metric}_mean"].max() - 0.01) * 100) / 100
    reached = (rows[rows[metric] >= target].groupby("trial")["epoch"].min() + 1).rename("to_target")
    done = done.merge(reached, left_on="trial", right_index=True, how="left")
    speed = done.groupby(keys)["to_target"].agg(["mean", "count"]).reset_index()
    table = table.merge(speed, on=keys)
    parts = [_scheduler_line(scheduler, group, done, keys, metric, target)
             for scheduler, group in (table.groupby("scheduler") if "scheduler" in table
                                      else [("", table)])]
    intro = ("Exponent 0 is the constant rate; larger exponents decay faster. "
             f"Convergence is measured as the epochs to reach {metric} ≥ {target:.2f} (at least "
             "one point below the best configuration's mean, rounded down to a hundredth).")
    shown = table[keys].copy()
    shown["seeds"] = table["n"]
    shown[metric] = [pm_row(r, metric) for _, r in table.iterrows()]
    shown[f"Δ {metric} vs exponent 0 (paired)"] = against_zero(done, keys, table, "exponent",
                                                               "scheduler", metric)
    shown["test_acc"] = [pm_row(r, "test_acc") for _, r in table.iterrows()]
    shown[f"epochs to {target:.2f}"] = [f"{r['mean']:.1f} ({int(r['count'])}/{int(r['n'])})"
                                        if r["count"] else f"never (0/{int(r['n'])})"
                                        for _, r in table.iterrows()]
    figures = [_decay_figure(table, rows, keys, metric, folder)]
    steps = _steps_per_epoch(spec)
    if steps:  # the same convergence in optimizer steps, which compare across scales
        column = f"steps to exponent 0's final train loss ({steps} an epoch)"
        shown[column] = _steps_to_constant(done, rows, keys, table, steps)
        figures.append(_steps_figure(rows, steps, folder))
        intro += (f" In optimizer steps ({steps} an epoch at this scale; schedules are set per "
                  "epoch, so a smaller training set gives a decay fewer steps at each rate): "
                  "the last column counts the steps each exponent needs for its train loss to "
                  "reach the one exponent 0 ends with, the steps figure draws the train loss "
                  "against steps.")
    return Section("Exercise 2: the exponent of the decay", [intro] + parts, shown, figures)


def _steps_per_epoch(spec: StudySpec | None) -> int | None:
    """Optimizer steps an epoch, from the study file (Fashion-MNIST: its sizes are known)."""
    if spec is None or spec.train.folder is not None:
        return None
    return math.ceil(spec.train.train_images / spec.train.batch_size)


def _steps_to_constant(done, rows, keys, table, steps) -> list[str]:
    """Per configuration: mean steps until its train loss first reaches the final train loss
    of exponent 0 (mean over its seeds) of the same scheduler, over the seeds that did."""
    cells = []
    for _, row in table.iterrows():
        same = done[done["scheduler"] == row["scheduler"]] if "scheduler" in keys else done
        losses = pd.to_numeric(same.loc[same["exponent"] == 0, "train_loss"], errors="coerce")
        goal = losses[losses.abs() != math.inf].mean()  # a failed seed's infinite loss out
        mine = rows
        for key in keys:
            mine = mine[mine[key] == row[key]]
        hit = mine[mine["train_loss"] <= goal].groupby("trial")["epoch"].min()
        n = int(row["n"])
        cells.append("–" if pd.isna(goal) else
                     f"{(hit.mean() + 1) * steps:,.0f} ({len(hit)}/{n})" if len(hit) else
                     f"never (0/{n})")
    return cells


def _scheduler_line(scheduler, group, done, keys, metric, target) -> str:
    """One scheduler's exponents: the best and worst (paired by seed), the fastest to target."""
    ranked = group.sort_values(f"{metric}_mean", ascending=False)
    best, worst = ranked.iloc[0], ranked.iloc[-1]
    # Fastest among the exponents every seed of which got there, if any did.
    reached_all = group[group["count"] == group["n"]]
    fastest = (reached_all if len(reached_all) else group).dropna(
        subset=["mean"]).sort_values("mean")
    line = (f"{scheduler or 'decay'}: best exponent **{best['exponent']:g}** "
            f"({metric} {pm_row(best, metric)}), worst {worst['exponent']:g} "
            f"({pm_row(worst, metric)}); {paired(done, keys, worst, best, metric).text(metric)}.")
    if len(fastest):
        quick = fastest.iloc[0]
        line += (f" Fastest to {metric} ≥ {target:.2f}: exponent {quick['exponent']:g}, in "
                 f"{quick['mean']:.1f} epochs on average ({int(quick['count'])} of "
                 f"{int(quick['n'])} seeds got there).")
    never = group[group["count"] == 0]
    if len(never):
        line += (" Never reached it: exponent " +
                 ", ".join(f"{e:g}" for e in never["exponent"]) + ".")
    return line


def _decay_figure(table, rows, keys, metric, folder) -> Path:
    plt, _ = plotting()
    schedulers = list(table["scheduler"].unique()) if "scheduler" in table else [None]
    fig, axes = plt.subplots(1, 1 + len(schedulers), figsize=(6 * (1 + len(schedulers)), 4.5))
    for scheduler in schedulers:
        part = table if scheduler is None else table[table["scheduler"] == scheduler]
        axes[0].errorbar(part["exponent"], part[f"{metric}_mean"],
                         yerr=clipped_err(part[f"{metric}_mean"], part[f"{metric}_ci"], metric),
                         marker="o", capsize=3, label=scheduler or metric)
    axes[0].set(xlabel="decay exponent", ylabel=f"final {metric}",
                title="final accuracy vs exponent (mean, 95% t-interval)")
    axes[0].legend()
    shown = carry_forward(rows, [metric])
    for ax, scheduler in zip(axes[1:], schedulers):
        part = shown if scheduler is None else shown[shown["scheduler"] == scheduler]
        exponents = sorted(part["exponent"].unique())
        mean_band(ax, part, metric, "exponent", exponents, label=lambda e: f"exponent {e:g}")
        ax.legend(fontsize=8)
        ax.set(xlabel="epoch", ylabel=metric,
               title=f"{scheduler or 'decay'}: {metric} per epoch (mean, 95% t-interval; "
                     "failed seeds at the value they reached)")
        ax.title.set_fontsize(9)
    return save(fig, folder / "ex2_decay_exponent.png", axes)


def _steps_figure(rows, steps, folder) -> Path:
    """Convergence against optimizer steps, so that runs of any size compare: the train loss
    of each epoch (its mean over the epoch's steps) at the step count where the epoch ends."""
    plt, _ = plotting()
    schedulers = list(rows["scheduler"].unique()) if "scheduler" in rows else [None]
    fig, axes = plt.subplots(1, len(schedulers), figsize=(6 * len(schedulers), 4.5),
                             squeeze=False)
    shown = carry_forward(rows, ["train_loss"]).assign(
        step=lambda f: (f["epoch"] + 1) * steps)
    for ax, scheduler in zip(axes[0], schedulers):
        part = shown if scheduler is None else shown[shown["scheduler"] == scheduler]
        exponents = sorted(part["exponent"].unique())
        mean_band(ax, part, "train_loss", "exponent", exponents, x="step",
                  label=lambda e: f"exponent {e:g}")
        ax.legend(fontsize=8)
        ax.set(xlabel=f"optimizer steps ({steps} an epoch)", ylabel="train loss", yscale="log",
               title=f"{scheduler or 'decay'}: train loss against steps (mean, 95% t-interval)")
        ax.title.set_fontsize(9)
    return save(fig, folder / "ex2_steps.png", axes[0])
