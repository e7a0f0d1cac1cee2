"""Exercise 1: a fixed learning rate. How does optimization behave, and what is the best
model a fixed rate can give?"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lrsweep.report.figures import carry_forward, clipped_err, mean_band, plotting, save
from lrsweep.report.outcome_counts import failed_text
from lrsweep.report.paired import Paired, against, paired
from lrsweep.report.sections import (Section, by_config, chance, grid_axis, only_varies, pm_row,
                                     varies)
from lrsweep.report.stats import finished, format_ci, lower_is_better, mean_ci, metric_bounds
from lrsweep.search.spec import StudySpec


def fixed_rate(trials: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec | None,
               metric: str, folder: Path) -> Section | None:
    if spec is None or spec.schedulers != ("constant",) or not varies(trials, "base_lr", 3) \
            or not grid_axis(spec, "base_lr") or lower_is_better(metric):
        return None
    done, rows = finished(trials).copy(), finished(curves).copy()
    if done.empty or not only_varies(done, ["base_lr"]):
        return None
    done["gap"] = done["train_acc"] - done["test_acc"]
    rows["gap"] = rows["train_acc"] - rows["test_acc"]
    # The objective's best epoch per trial (diverged epochs hold no value: left out).
    valid = rows.dropna(subset=[metric])
    peaks = valid.loc[valid.groupby("trial")[metric].idxmax(), ["trial", "epoch", metric]]
    done = done.merge(peaks.rename(columns={"epoch": "peak_epoch", metric: "peak_val_acc"}),
                      on="trial", how="left")
    metrics = [metric, "test_acc", "train_acc", "train_loss", "gap", "peak_val_acc", "peak_epoch"]
    table = by_config(done, ["base_lr"], list(dict.fromkeys(metrics)))
    healthy = table[table["failed"] < table["n"]]
    if healthy.empty:  # no rate to answer with: said, not left out without a word
        return Section("Exercise 1: a fixed learning rate", [
            f"No answer at this scale: every seed of every rate failed "
            f"({', '.join(f'{r:g}' for r in sorted(table['base_lr']))}), so no rate learned "
            "to compare by its accuracy or its overfitting. More epochs or training images, "
            "or other rates, may give one."], pd.DataFrame({
                "base_lr": table["base_lr"], "seeds": table["n"],
                "failed": [failed_text(r) for _, r in table.iterrows()]}))
    best = healthy.sort_values(f"{metric}_mean", ascending=lower_is_better(metric)).iloc[0]
    text = _answer(table, healthy, best, done, rows, metric)
    delta = against(done, ["base_lr"], table, best, metric)
    shown = pd.DataFrame({
        "base_lr": table["base_lr"], "seeds": table["n"],
        "failed": [failed_text(r) for _, r in table.iterrows()],
        metric: [pm_row(r, metric) for _, r in table.iterrows()],
        f"Δ {metric} vs η = {best['base_lr']:g} (paired)": delta,
        "test_acc": [pm_row(r, "test_acc") for _, r in table.iterrows()],
        "train − test gap": [pm_row(r, "gap") for _, r in table.iterrows()],
        "peak val_acc": [pm_row(r, "peak_val_acc") for _, r in table.iterrows()],
        "peak epoch": [f"{r['peak_epoch_mean'] + 1:.1f}" for _, r in table.iterrows()]})
    # Rates at which some seed learned: did not fail (never learned, collapsed, non-finite), as
    # the text counts failures; a seed at chance whose validation accuracy spiked once is no
    # learner.
    learned = sorted(healthy["base_lr"].unique())
    figure = _fixed_rate_figure(table, rows, metric, learned, folder)
    return Section("Exercise 1: a fixed learning rate", [text], shown, [figure])


def _answer(table: pd.DataFrame, healthy: pd.DataFrame, best: pd.Series, done: pd.DataFrame,
            rows: pd.DataFrame, metric: str) -> str:
    """The best fixed rate, what too small and too large do, and whether it overfits."""
    rate = best["base_lr"]
    last = int(rows["epoch"].max())
    slow = table.iloc[0]
    text = (f"Best fixed rate: **η = {rate:g}**, final {metric} {pm_row(best, metric)} and "
            f"test accuracy {pm_row(best, 'test_acc')} over {int(best['n'])} seeds.")
    if slow["base_lr"] < rate:
        loss = paired(done, ["base_lr"], slow, best, "train_loss")
        slower = ("Too small is slow: at" if loss.separated and loss.mean > 0 else "At")
        text += (f" {slower} η = {slow['base_lr']:g} the train loss after {last + 1} epochs is "
                 f"{pm_row(slow, 'train_loss')}, against {pm_row(best, 'train_loss')} at "
                 f"η = {rate:g}; {loss.text('train_loss')}.")
    runner_up = healthy[healthy["base_lr"] != rate].sort_values(
        f"{metric}_mean", ascending=lower_is_better(metric))
    if len(runner_up):
        second = runner_up.iloc[0]
        text += (f" Next best: η = {second['base_lr']:g} ({pm_row(second, metric)}); "
                 f"{paired(done, ['base_lr'], second, best, metric).text(metric)}.")
    failing = table[table["failed"] > 0]
    if len(failing):
        text += (" Seeds that failed: " + "; ".join(
            f"η = {r['base_lr']:g}: {int(r['failed'])} of {int(r['n'])} ({failed_text(r)})"
            for _, r in failing.iterrows()) + ".")
    # Every seed at chance all along: how far from chance it ever got.
    guess, at_chance = chance(done)
    stuck = table[table["never_learned"] == table["n"]]
    if len(stuck):
        highest = done.loc[done["base_lr"].isin(stuck["base_lr"]), "peak_val_acc"].max()
        text += (" At η = " + ", ".join(f"{r:g}" for r in stuck["base_lr"]) + " no seed "
                 f"learns: every seed ends with train accuracy at or below {at_chance:g} "
                 f"(chance is {guess:.3f}); the highest {metric} any of them reached on the "
                 f"way was {highest:.3f}.")
    if last >= 1:  # the gap early (epoch 5, or the one before the last) against the last
        early = min(4, last - 1)
        gap_early = rows[(rows["base_lr"] == rate) & (rows["epoch"] == early)]["gap"]
        # Called overfitting only where the last epoch's gap is above 0 by its interval.
        over = best["gap_mean"] - best["gap_ci"] > 0
        text += (f" {'Overfitting' if over else 'Train against test'}: at η = {rate:g} the "
                 f"train − test accuracy gap goes from "
                 f"{format_ci(*mean_ci(gap_early)[:2], bounds=metric_bounds('gap'))} at epoch "
                 f"{early + 1} to {pm_row(best, 'gap')} at epoch {last + 1}.")
    return text + _early_stop(best, done, rows, metric)


def _early_stop(best: pd.Series, done: pd.DataFrame, rows: pd.DataFrame, metric: str) -> str:
    """Whether to stop at the best validation epoch, judged on the test set, paired by seed:
    the peak itself is chosen on validation, so it lies above the last epoch by construction,
    and is no evidence that an early-stopped model is better."""
    at_rate = done[done["base_lr"] == best["base_lr"]].dropna(subset=["peak_epoch"])
    stopped = rows.merge(at_rate[["trial", "peak_epoch"]], on="trial")
    stopped = stopped[stopped["epoch"] == stopped["peak_epoch"]].set_index("trial")["test_acc"]
    change = Paired(*mean_ci((stopped - at_rate.set_index("trial")["test_acc"]).dropna()))
    text = (f" Validation accuracy peaks at epoch {best['peak_epoch_mean'] + 1:.1f} on average, "
            f"{best['peak_val_acc_mean'] - best[f'{metric}_mean']:+.3f} against the last epoch "
            "(a peak is at least the last by construction); stopped there, ")
    if change.separated is None:
        return text + f"test accuracy changes by {change.mean:+.3f} (one seed: no interval)."
    text += (f"test accuracy changes by {change.mean:+.3f} ± {change.ci:.3f} against the last "
             f"epoch (paired by seed, n = {change.n}): ")
    if not change.separated:
        return text + ("these seeds cannot tell an early-stopped model from the last epoch's.")
    return text + ("the best model a fixed rate gives here is an early-stopped one."
                   if change.mean > 0 else "stopping early loses: the last epoch's model is "
                   "the better one.")


def _fixed_rate_figure(table, rows, metric, learned, folder) -> Path:
    plt, _ = plotting()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    for name in dict.fromkeys([metric, "test_acc", "train_acc"]):
        left.errorbar(table["base_lr"], table[f"{name}_mean"],
                      yerr=clipped_err(table[f"{name}_mean"], table[f"{name}_ci"], name),
                      marker="o", capsize=3, label=name)
    left.set(xscale="log", xlabel="learning rate (constant)", ylabel="final accuracy",
             ylim=(0, 1), title="final accuracy vs rate (mean, 95% t-interval over seeds)")
    left.legend()
    # Every seed of the rates at which some seed learned; a failed one at the value it reached.
    shown = carry_forward(rows[rows["base_lr"].isin(learned)], ["gap"])
    mean_band(right, shown, "gap", "base_lr", learned, label=lambda r: f"η = {r:g}")
    right.legend(fontsize=8)
    right.set(xlabel="epoch", ylabel="train acc − test acc",
              title="train − test accuracy per epoch: mean, 95% t-interval over seeds\n"
                    "(rates at which some seed learned; failed seeds at the value they reached)")
    right.title.set_fontsize(9)
    return save(fig, folder / "ex1_fixed_rate.png", [left, right])
