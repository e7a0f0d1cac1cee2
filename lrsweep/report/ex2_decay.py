"""Exercise 2: how convergence changes with the exponent of the decay (inverse-power and
polynomial decay)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lrsweep.report.figures import hue, plotting, save
from lrsweep.report.sections import Section, by_config, grid_axis, pm_row, separable, varies
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
    table = by_config(done, keys, [metric, "test_acc"])
    # The target: one point below the best configuration's mean final accuracy.
    target = math.floor((table[f"{metric}_mean"].max() - 0.01) * 100) / 100
    reached = (rows[rows[metric] >= target].groupby("trial")["epoch"].min() + 1).rename("to_target")
    done = done.merge(reached, left_on="trial", right_index=True, how="left")
    speed = done.groupby(keys)["to_target"].agg(["mean", "count"]).reset_index()
    table = table.merge(speed, on=keys)
    parts = []
    for scheduler, group in table.groupby("scheduler") if "scheduler" in table else [("", table)]:
        ranked = group.sort_values(f"{metric}_mean", ascending=False)
        best, worst = ranked.iloc[0], ranked.iloc[-1]
        # Fastest among the exponents every seed of which got there, if any did.
        reached_all = group[group["count"] == group["n"]]
        fastest = (reached_all if len(reached_all) else group).dropna(
            subset=["mean"]).sort_values("mean")
        line = (f"{scheduler or 'decay'}: best exponent **{best['exponent']:g}** "
                f"({metric} {pm_row(best, metric)}), worst {worst['exponent']:g} "
                f"({pm_row(worst, metric)}); {separable(best, worst, metric)}.")
        if len(fastest):
            quick = fastest.iloc[0]
            line += (f" Fastest to {metric} ≥ {target:.2f}: exponent {quick['exponent']:g}, in "
                     f"{quick['mean']:.1f} epochs on average ({int(quick['count'])} of "
                     f"{int(quick['n'])} seeds got there).")
        never = group[group["count"] == 0]
        if len(never):
            line += (" Never reached it: exponent " +
                     ", ".join(f"{e:g}" for e in never["exponent"]) + ".")
        parts.append(line)
    intro = ("Exponent 0 is the constant rate; larger exponents decay faster. "
             f"Convergence is measured as the epochs to reach {metric} ≥ {target:.2f} (at least "
             "one point below the best configuration's mean, rounded down to a hundredth).")
    shown = table[keys].copy()
    shown["seeds"] = table["n"]
    shown[metric] = [pm_row(r, metric) for _, r in table.iterrows()]
    shown["test_acc"] = [pm_row(r, "test_acc") for _, r in table.iterrows()]
    shown[f"epochs to {target:.2f}"] = [f"{r['mean']:.1f} ({int(r['count'])}/{int(r['n'])})"
                                        if r["count"] else f"never (0/{int(r['n'])})"
                                        for _, r in table.iterrows()]
    figure = _decay_figure(table, rows, keys, metric, folder)
    return Section("Exercise 2: the exponent of the decay", [intro] + parts, shown, [figure])


def _decay_figure(table, rows, keys, metric, folder) -> Path:
    plt, sns = plotting()
    schedulers = list(table["scheduler"].unique()) if "scheduler" in table else [None]
    fig, axes = plt.subplots(1, 1 + len(schedulers), figsize=(6 * (1 + len(schedulers)), 4.5))
    for scheduler in schedulers:
        part = table if scheduler is None else table[table["scheduler"] == scheduler]
        axes[0].errorbar(part["exponent"], part[f"{metric}_mean"],
                         yerr=part[f"{metric}_ci"].fillna(0), marker="o", capsize=3,
                         label=scheduler or metric)
    axes[0].set(xlabel="decay exponent", ylabel=f"final {metric}",
                title="final accuracy vs exponent (95% CI)")
    axes[0].legend()
    for ax, scheduler in zip(axes[1:], schedulers):
        part = rows if scheduler is None else rows[rows["scheduler"] == scheduler]
        sns.lineplot(data=part, x="epoch", y=metric, **hue(part, "exponent"), ax=ax,
                     errorbar=None)
        ax.set(title=f"convergence by exponent: {scheduler or ''} (mean over seeds)")
    return save(fig, folder / "ex2_decay_exponent.png", axes)
