"""Exercise 4: how long should warmup be? Failures per base rate and warmup length, early
and final accuracy."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lrsweep.report.figures import (carry_forward, clipped_err, mean_band, plotting, save,
                                    whole_ticks)
from lrsweep.report.outcome_counts import failed_text, failed_words
from lrsweep.report.paired import Paired, against_zero, paired
from lrsweep.report.sections import (Section, by_config, chance, grid_axis, only_varies, pm_row,
                                     span, varies)
from lrsweep.report.stats import finished, lower_is_better, metric_bounds
from lrsweep.search.spec import StudySpec


def warmup(trials: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec | None,
           metric: str, folder: Path) -> Section | None:
    if not varies(trials, "warmup_steps", 2) or lower_is_better(metric) \
            or not grid_axis(spec, "warmup_steps"):
        return None
    done, rows = finished(trials), finished(curves)
    if done.empty:
        return None
    by_rate = "base_lr" in done and grid_axis(spec, "base_lr")
    keys = ["base_lr", "warmup_steps"] if by_rate else ["warmup_steps"]
    if not only_varies(done, keys):
        return None
    early_epoch = min(2, int(rows["epoch"].max()))
    unit = spec.train.unit if spec else "epoch"
    guess, at_chance = chance(done)
    early = rows[rows["epoch"] == early_epoch].set_index("trial")[metric].rename("early")
    done = done.merge(early, left_on="trial", right_index=True, how="left")
    # A failed seed never learned, collapsed or went non-finite (by_config counts them): a
    # rate too high may leave the network at chance from the first step, or let it learn a
    # little and then collapse, without a non-finite loss. Warmup is meant to prevent all three.
    table = by_config(done, keys, [metric, "test_acc", "early"])
    table["failed_share"] = table["failed"] / table["n"]
    def compare(a: pd.Series, b: pd.Series) -> Paired:
        return paired(done, keys, a, b, metric)
    parts = [_rate_line(rate, group.sort_values("warmup_steps"), metric, unit, compare)
             for rate, group in (table.groupby("base_lr") if by_rate else [(None, table)])]
    answer = _overall(table, by_rate, metric, unit, compare) + (
        f" Counted as {failed_words()} (chance is {guess:.3g}, at chance ≤ {at_chance:.3g}).")
    shown = table[keys].copy()
    shown["seeds"] = table["n"]
    shown["failed"] = [failed_text(r) for _, r in table.iterrows()]
    shown[f"{metric} at epoch {early_epoch + 1}"] = [pm_row(r, "early", metric_bounds(metric))
                                                      for _, r in table.iterrows()]
    shown[f"final {metric}"] = [pm_row(r, metric) for _, r in table.iterrows()]
    shown[f"Δ {metric} vs no warmup (paired)"] = against_zero(done, keys, table, "warmup_steps",
                                                              "base_lr", metric)
    shown["test_acc"] = [pm_row(r, "test_acc") for _, r in table.iterrows()]
    figure = _warmup_figure(table, rows, keys, metric, unit, folder)
    return Section("Exercise 4: how long should warmup be?", parts + [answer], shown, [figure])


def _rate_line(rate: float | None, group: pd.DataFrame, metric: str, unit: str,
               compare) -> str:
    """One base rate's warmups: failures without, the shortest with none, the best."""
    safe = group[group["failed"] == 0]
    best = group.sort_values(f"{metric}_mean", ascending=False).iloc[0]
    first = group.iloc[0]
    line = (f"η = {rate:g}: " if rate is not None else "") + (
        f"with {span(first['warmup_steps'], unit)} of warmup {int(first['failed'])} of "
        f"{int(first['n'])} seeds failed; ")
    line += (f"shortest warmup with no failure: {span(safe.iloc[0]['warmup_steps'], unit)}"
             if len(safe) else "every warmup length tried failed at least once")
    longest = group.iloc[-1]
    if (group["failed"] == group["n"]).all():
        return line + "; no warmup length rescued a single seed."
    if best["warmup_steps"] == longest["warmup_steps"]:
        return line + (f"; best final {metric} with the longest warmup tried, "
                       f"{span(best['warmup_steps'], unit)} ({pm_row(best, metric)}).")
    return line + (f"; best final {metric} with {span(best['warmup_steps'], unit)} of warmup "
                   f"({pm_row(best, metric)}); against the longest, "
                   f"{span(longest['warmup_steps'], unit)}, "
                   f"{compare(longest, best).text(metric)}.")


def _overall(table: pd.DataFrame, by_rate: bool, metric: str, unit: str, compare) -> str:
    """The best warmup overall, against the shortest that kept every seed at that rate."""
    overall = table.sort_values(f"{metric}_mean", ascending=False).iloc[0]
    answer = (f"Overall best: warmup {span(overall['warmup_steps'], unit)}"
              + (f" at η = {overall['base_lr']:g}" if by_rate else "")
              + f", {metric} {pm_row(overall, metric)}.")
    same_rate = table[table["base_lr"] == overall["base_lr"]] if by_rate else table
    safe = same_rate[same_rate["failed"] == 0].sort_values("warmup_steps")
    if len(safe):
        shortest = safe.iloc[0]
        against_best = compare(shortest, overall)
        if shortest["warmup_steps"] == overall["warmup_steps"]:
            answer += _shortest_is_best(same_rate, overall, metric, unit, compare)
        else:
            answer += (f" At that rate the shortest warmup with no failed seed is "
                       f"{span(shortest['warmup_steps'], unit)} ({pm_row(shortest, metric)}; "
                       f"against the best: {against_best.text(metric)}), so " +
                       ("warmup beyond what stability needs paid off here." if
                        against_best.separated else "these seeds cannot tell whether warmup "
                        "beyond what stability needs helps."))
    return answer


def _shortest_is_best(same_rate: pd.DataFrame, best: pd.Series, metric: str, unit: str,
                      compare) -> str:
    """The shortest warmup that kept every seed is also the best mean: said so, and a rule
    drawn from it only where the seeds separate it from the next best."""
    none = best["warmup_steps"] == 0
    text = (" At that rate no warmup" if none else
            " At that rate the shortest warmup with no failed seed") + " also has the best mean"
    rest = same_rate[same_rate["warmup_steps"] != best["warmup_steps"]]
    if not len(rest):
        return text + "."
    runner = rest.sort_values(f"{metric}_mean", ascending=False).iloc[0]
    against = compare(runner, best)
    text += (f"; against the next best, {span(runner['warmup_steps'], unit)}: "
             f"{against.text(metric)}")
    if not against.separated:
        return text + "."
    return text + (", so warmup does not pay at this rate." if none else
                   ", so warmup should be just long enough to keep training stable.")


def _warmup_figure(table, rows, keys, metric, unit, folder) -> Path:
    plt, sns = plotting()
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.5))
    if "base_lr" in table:
        grid = table.pivot(index="base_lr", columns="warmup_steps", values="failed_share")
        sns.heatmap(grid, annot=True, fmt=".2f", cmap="Reds", vmin=0, vmax=1, ax=axes[0])
        axes[0].set(title="share of seeds failed (never learned, collapsed or non-finite)")
        for rate, part in table.groupby("base_lr"):
            axes[1].errorbar(part["warmup_steps"], part[f"{metric}_mean"],
                             yerr=clipped_err(part[f"{metric}_mean"], part[f"{metric}_ci"],
                                              metric),
                             marker="o", capsize=3, label=f"η = {rate:g}")
        highest = rows[rows["base_lr"] == table["base_lr"].max()]
    else:
        axes[0].bar(table["warmup_steps"].astype(str), table["failed_share"])
        axes[0].set(title="share of seeds failed (never learned, collapsed or non-finite)",
                    xlabel=f"warmup ({unit}s)", ylabel="share of seeds failed", ylim=(0, 1))
        axes[1].errorbar(table["warmup_steps"], table[f"{metric}_mean"],
                         yerr=clipped_err(table[f"{metric}_mean"], table[f"{metric}_ci"], metric),
                         marker="o", capsize=3)
        highest = rows
    axes[1].set(xlabel=f"warmup ({unit}s)", ylabel=f"final {metric}", ylim=(0, 1),
                title="final accuracy vs warmup (mean, 95% t-interval)")
    whole_ticks(axes[1].xaxis)  # whole warmups: no tick at 0.25
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend()
    first = carry_forward(highest, [metric])
    first = first[first["epoch"] < 10]
    warmups = sorted(first["warmup_steps"].unique())
    mean_band(axes[2], first, metric, "warmup_steps", warmups, label=lambda w: f"warmup {w:g}")
    axes[2].legend(fontsize=8)
    axes[2].set(xlabel="epoch", ylabel=metric,
                title="early epochs at the highest rate, by warmup\n(mean, 95% t-interval; "
                      "failed seeds at the value they reached)")
    axes[2].title.set_fontsize(9)
    return save(fig, folder / "ex4_warmup.png", axes)
