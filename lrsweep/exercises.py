"""Report sections that answer the chapter's exercises, each computed from the stored trials.

A section appears when the study varies what it is about, whatever the study is called: a
fixed-rate study varies base_lr under the constant schedule (exercise 1), a decay study varies
the exponent (exercise 2), a warmup study varies warmup_steps (exercise 4), and a study whose
[[run]] tables carry the book's printed numbers is a replication (the chapter's runs).
Every number in a section's text comes from the frames it is given; nothing is typed in.

    >>> import pandas as pd
    >>> trials = pd.DataFrame({"state": ["complete"] * 2, "base_lr": [0.1, 0.1],
    ...                        "seed": [0, 1], "val_acc": [0.8, 0.9]})
    >>> table = by_config(trials, ["base_lr"], ["val_acc"])
    >>> round(float(table.loc[0, "val_acc_mean"]), 2), int(table.loc[0, "n"])
    (0.85, 2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from .chance import chance_levels
from .spec import Choice, StudySpec
from .stats import (config_columns, finished, format_ci, intervals_overlap, lower_is_better,
                    mean_ci)


@dataclass(frozen=True)
class Section:
    title: str
    paragraphs: list[str]
    table: pd.DataFrame | None = None
    figures: list[Path] = field(default_factory=list)
    code: str | None = None


# --- shared computations -------------------------------------------------------------------

def by_config(frame: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean, 95% CI half-width and n of each metric per group of `keys`, with the diverged count."""
    rows = []
    for values, group in frame.groupby(keys, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        row = dict(zip(keys, values))
        row["n"] = len(group)
        row["diverged"] = int(group["state"].str.startswith("diverged").sum())
        for metric in metrics:
            mean, ci, _ = mean_ci(group[metric])
            row[f"{metric}_mean"], row[f"{metric}_ci"] = mean, ci
        rows.append(row)
    return pd.DataFrame(rows)


def _pm_row(row: pd.Series, metric: str) -> str:
    return format_ci(row[f"{metric}_mean"], row[f"{metric}_ci"])


def _separable(a: pd.Series, b: pd.Series, metric: str) -> str:
    overlap = intervals_overlap(a, b, metric)
    if overlap is None:
        return "one seed: no interval to compare"
    return "the 95% intervals overlap" if overlap else "the 95% intervals do not overlap"


def _varies(trials: pd.DataFrame, column: str, at_least: int) -> bool:
    return column in trials and trials[column].dropna().nunique() >= at_least


def _chance(trials: pd.DataFrame) -> tuple[float, float]:
    """(guessing, stuck) accuracies for the study's classes: at or below `stuck` a network
    never learned (for 10 classes 0.1 and 0.2; chance.chance_levels for the others)."""
    classes = int(trials["classes"].iloc[0]) if "classes" in trials and len(trials) else 10
    return 1 / classes, chance_levels(classes)[0]


def _span(n: float, unit: str) -> str:
    """"1 epoch", "3 steps": a warmup length in the study's schedule unit."""
    return f"{int(n)} {unit}" + ("" if int(n) == 1 else "s")


def _grid_axis(spec: StudySpec | None, key: str) -> bool:
    """Whether a study file lists values of `key` to compare (a grid axis): a searched range
    gives every trial its own value, and [[run]] tables vary several keys at once."""
    return spec is None or (not spec.runs and isinstance(spec.dimension(key), Choice))


# --- exercise 1: a fixed learning rate -----------------------------------------------------

EARLY_STOP_GAIN = 0.005  # peak minus final validation accuracy worth an early stop

def fixed_rate(trials: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec | None,
               metric: str, folder: Path) -> Section | None:
    if spec is None or spec.schedulers != ("constant",) or not _varies(trials, "base_lr", 3) \
            or not _grid_axis(spec, "base_lr") or lower_is_better(metric):
        return None
    done, rows = finished(trials).copy(), finished(curves).copy()
    if done.empty:
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
    healthy = table[table["diverged"] < table["n"]]
    if healthy.empty:
        return None
    best = healthy.sort_values(f"{metric}_mean", ascending=lower_is_better(metric)).iloc[0]
    rate = best["base_lr"]
    last = int(rows["epoch"].max())
    early = min(4, last)
    gap_early = rows[(rows["base_lr"] == rate) & (rows["epoch"] == early)]["gap"]
    slow = table.iloc[0]
    text = (f"Best fixed rate: **η = {rate:g}**, final {metric} {_pm_row(best, metric)} and "
            f"test accuracy {_pm_row(best, 'test_acc')} over {int(best['n'])} seeds.")
    if slow["base_lr"] < rate:
        text += (f" Too small is slow: at η = {slow['base_lr']:g} the train loss is still "
                 f"{_pm_row(slow, 'train_loss')} after {last + 1} epochs, against "
                 f"{_pm_row(best, 'train_loss')} at η = {rate:g}.")
    runner_up = healthy[healthy["base_lr"] != rate].sort_values(
        f"{metric}_mean", ascending=lower_is_better(metric))
    if len(runner_up):
        second = runner_up.iloc[0]
        text += (f" Next best: η = {second['base_lr']:g} ({_pm_row(second, metric)}); "
                 f"{_separable(best, second, metric)}.")
    unstable = table[table["diverged"] > 0]
    if len(unstable):
        text += (" Too large diverges: " + ", ".join(
            f"η = {r['base_lr']:g} in {int(r['diverged'])} of {int(r['n'])} seeds"
            for _, r in unstable.iterrows()) + ".")
    # Never learned: at chance all along (no divergence, which needs having learned first).
    guess, at_chance = _chance(done)
    stuck = table[(table["diverged"] == 0) & (table["peak_val_acc_mean"] <= at_chance)
                  & (table["base_lr"] > rate)]
    if len(stuck):
        text += (" Too large never learns: at η = " + ", ".join(f"{r:g}" for r in
                 stuck["base_lr"]) + f" {metric} never rises above "
                 f"{stuck['peak_val_acc_mean'].max():.3f} (chance is {guess:.3f}).")
    gain = best["peak_val_acc_mean"] - best[f"{metric}_mean"]
    text += (f" Overfitting: at η = {rate:g} the train − test accuracy gap goes from "
             f"{format_ci(*mean_ci(gap_early)[:2])} at epoch {early + 1} to "
             f"{_pm_row(best, 'gap')} at epoch {last + 1}; validation accuracy peaks at epoch "
             f"{best['peak_epoch_mean'] + 1:.1f} on average, {gain:+.3f} against the last "
             "epoch, so " + (
                 "the best model a fixed rate gives here is an early-stopped one."
                 if gain > EARLY_STOP_GAIN else
                 "stopping early would gain nothing here: the last epoch is the best model a "
                 "fixed rate gives at this scale."))
    shown = pd.DataFrame({
        "base_lr": table["base_lr"], "seeds": table["n"], "diverged": table["diverged"],
        metric: [_pm_row(r, metric) for _, r in table.iterrows()],
        "test_acc": [_pm_row(r, "test_acc") for _, r in table.iterrows()],
        "train − test gap": [_pm_row(r, "gap") for _, r in table.iterrows()],
        "peak val_acc": [_pm_row(r, "peak_val_acc") for _, r in table.iterrows()],
        "peak epoch": [f"{r['peak_epoch_mean'] + 1:.1f}" for _, r in table.iterrows()]})
    figure = _fixed_rate_figure(table, rows, metric, at_chance, folder)
    return Section("Exercise 1: a fixed learning rate", [text], shown, [figure])


def _fixed_rate_figure(table, rows, metric, at_chance, folder) -> Path:
    plt, sns = _plotting()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    for name in dict.fromkeys([metric, "test_acc", "train_acc"]):
        left.errorbar(table["base_lr"], table[f"{name}_mean"], yerr=table[f"{name}_ci"].fillna(0),
                      marker="o", capsize=3, label=name)
    left.set(xscale="log", xlabel="learning rate (constant)", ylabel="final accuracy",
             title="final accuracy vs rate (mean, 95% CI over seeds)")
    left.legend()
    learned = table.loc[table["peak_val_acc_mean"] > at_chance, "base_lr"]
    # In the curve rows a diverged trial is Optuna-complete: its `diverged` says otherwise.
    calm = rows["diverged"].isna() if "diverged" in rows else True
    healthy = rows[(rows["state"] == "complete") & calm & rows["base_lr"].isin(learned)]
    sns.lineplot(data=healthy, x="epoch", y="gap", **_hue(healthy, "base_lr"), ax=right,
                 errorbar=("ci", 95), n_boot=500, seed=0)
    left.set_ylim(0, 1)
    right.set(ylabel="train acc − test acc",
              title="train − test accuracy per epoch (rates that learned; diverged seeds out)")
    return _save(fig, folder / "ex1_fixed_rate.png", [left, right])


# --- exercise 2: the decay exponent --------------------------------------------------------

def decay_exponent(trials: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec | None,
                   metric: str, folder: Path) -> Section | None:
    if not _varies(trials, "exponent", 3) or lower_is_better(metric) \
            or not _grid_axis(spec, "exponent") or _varies(trials, "optimizer", 2):
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
                f"({metric} {_pm_row(best, metric)}), worst {worst['exponent']:g} "
                f"({_pm_row(worst, metric)}); {_separable(best, worst, metric)}.")
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
    shown[metric] = [_pm_row(r, metric) for _, r in table.iterrows()]
    shown["test_acc"] = [_pm_row(r, "test_acc") for _, r in table.iterrows()]
    shown[f"epochs to {target:.2f}"] = [f"{r['mean']:.1f} ({int(r['count'])}/{int(r['n'])})"
                                        if r["count"] else f"never (0/{int(r['n'])})"
                                        for _, r in table.iterrows()]
    figure = _decay_figure(table, rows, keys, metric, folder)
    return Section("Exercise 2: the exponent of the decay", [intro] + parts, shown, [figure])


def _decay_figure(table, rows, keys, metric, folder) -> Path:
    plt, sns = _plotting()
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
        sns.lineplot(data=part, x="epoch", y=metric, **_hue(part, "exponent"), ax=ax,
                     errorbar=None)
        ax.set(title=f"convergence by exponent: {scheduler or ''} (mean over seeds)")
    return _save(fig, folder / "ex2_decay_exponent.png", axes)


# --- exercise 3: cosine on a larger model ---------------------------------------------------

def model_size(trials: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec | None,
               metric: str, folder: Path) -> Section | None:
    """Cosine against the other schedules, each at its own best base rate, for every model:
    does cosine's lead grow with the model? Rates are chosen on the study's metric (validation)
    and compared on test accuracy, so the choice does not flatter the comparison."""
    if not _varies(trials, "model", 2) or "scheduler" not in trials:
        return None
    done = finished(trials)
    schedulers = set(done["scheduler"].dropna())
    if "cosine" not in schedulers or len(schedulers) < 2:
        return None
    lower = lower_is_better(metric)
    rate_key = ["base_lr"] if "base_lr" in done else []
    table = by_config(done, ["model", "scheduler"] + rate_key, [metric, "test_acc"])
    # A rate at which any seed diverged loses to one at which none did.
    table["_rank"] = table[f"{metric}_mean"] if lower else -table[f"{metric}_mean"]
    tuned = (table.sort_values(["diverged", "_rank"], na_position="last")
             .groupby(["model", "scheduler"], sort=False).head(1))
    classes = int(done["classes"].iloc[0]) if "classes" in done else 10
    sizes = {m: parameter_count(m, classes) for m in tuned["model"].unique()}
    models = sorted(sizes, key=sizes.get)
    rows, lines, leads = [], [], {}
    for model in models:
        mine = tuned[tuned["model"] == model].sort_values(["diverged", "_rank"],
                                                          na_position="last")
        cosine = mine[mine["scheduler"] == "cosine"]
        others = mine[mine["scheduler"] != "cosine"]
        if cosine.empty or others.empty:
            continue
        cosine, rival = cosine.iloc[0], others.iloc[0]
        lead = (_seed_values(done, model, cosine, rate_key)
                - _seed_values(done, model, rival, rate_key)).dropna()
        leads[model] = lead
        mean, ci, n = mean_ci(lead)
        lines.append(f"{_model_name(model)} ({sizes[model]:,} parameters): cosine "
                     f"{_pm_row(cosine, 'test_acc')} vs {rival['scheduler']} "
                     f"{_pm_row(rival, 'test_acc')}, lead {format_ci(mean, ci)} (n = {n})")
        for _, row in mine.iterrows():
            rows.append({"model": model, "scheduler": row["scheduler"],
                         **({"best base_lr": f"{row['base_lr']:g}"} if rate_key else {}),
                         "seeds": int(row["n"]), "diverged": int(row["diverged"]),
                         metric: _pm_row(row, metric), "test_acc": _pm_row(row, "test_acc")})
    if not lines:
        return None
    text = ("Each schedule at its best base rate for each model (chosen on the final "
            f"{metric}); test accuracy, mean ± 95% CI over seeds; cosine's lead over the best "
            "other schedule is paired by seed: " + "; ".join(lines) + ".")
    small, large = models[0], models[-1]
    if small in leads and large in leads and small != large:
        growth = (leads[large] - leads[small]).dropna()
        mean, ci, n = mean_ci(growth)
        if math.isnan(ci):
            verdict = "with one seed there is no interval to judge it by"
        elif mean - ci > 0:
            verdict = "cosine's advantage grows with the model here"
        elif mean + ci < 0:
            verdict = "cosine's advantage shrinks with the model here"
        else:
            verdict = ("the interval includes zero: at this scale the data cannot tell whether "
                       "cosine's advantage grows with the model")
        text += (f" The lead's change from {_model_name(small)} to {_model_name(large)}, paired "
                 f"by seed: {format_ci(mean, ci)} (n = {n}); {verdict}.")
    figure = _model_size_figure(tuned, models, folder)
    return Section("Exercise 3: cosine on a larger model", [text], pd.DataFrame(rows), [figure])


def parameter_count(model: str, classes: int = 10) -> int:
    """Trainable parameters of a model for one-channel images of `classes` classes."""
    from . import model as lenet_module
    from .resnet import resnet18
    net = (resnet18(seed=0, num_classes=classes) if model == "resnet18"
           else lenet_module.lenet(seed=0))
    return sum(p.numel() for p in net.parameters())


def _model_name(model: str) -> str:
    return {"lenet": "LeNet", "resnet18": "ResNet-18"}.get(model, model)


def _seed_values(done: pd.DataFrame, model: str, config: pd.Series, rate_key: list[str]
                 ) -> pd.Series:
    """Test accuracy by seed of one (model, scheduler, rate) configuration."""
    mask = (done["model"] == model) & (done["scheduler"] == config["scheduler"])
    for key in rate_key:
        mask &= done[key] == config[key]
    return done[mask].groupby("seed")["test_acc"].mean()


def _model_size_figure(tuned, models, folder) -> Path:
    plt, _ = _plotting()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    schedulers = sorted(tuned["scheduler"].unique())
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        mine = tuned[tuned["model"] == model].set_index("scheduler").reindex(schedulers)
        x = [j + (i - (len(models) - 1) / 2) * width for j in range(len(schedulers))]
        ax.errorbar(x, mine["test_acc_mean"], yerr=mine["test_acc_ci"].fillna(0), marker="o",
                    linestyle="none", capsize=3, label=_model_name(model))
    ax.set_xticks(range(len(schedulers)), schedulers)
    ax.set(ylabel="final test accuracy",
           title="each schedule at its best rate (mean, 95% CI over seeds)")
    ax.legend()
    return _save(fig, folder / "ex3_model_size.png", [ax])


# --- exercise 4: warmup --------------------------------------------------------------------

def warmup(trials: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec | None,
           metric: str, folder: Path) -> Section | None:
    if not _varies(trials, "warmup_steps", 2) or lower_is_better(metric) \
            or not _grid_axis(spec, "warmup_steps"):
        return None
    done, rows = finished(trials), finished(curves)
    if done.empty:
        return None
    by_rate = "base_lr" in done and _grid_axis(spec, "base_lr")
    keys = ["base_lr", "warmup_steps"] if by_rate else ["warmup_steps"]
    early_epoch = min(2, int(rows["epoch"].max()))
    unit = spec.train.unit if spec else "epoch"
    guess, at_chance = _chance(done)
    early = rows[rows["epoch"] == early_epoch].set_index("trial")[metric].rename("early")
    done = done.merge(early, left_on="trial", right_index=True, how="left")
    # A failed seed diverged, or ended at chance all the same: a rate too high may leave the
    # network at chance from the first step, or let it learn a little and then collapse,
    # without a non-finite loss. Warmup is meant to prevent all three.
    done["failed"] = done["state"].str.startswith("diverged") | ~(done[metric] > at_chance)
    table = by_config(done, keys, [metric, "test_acc", "early", "failed"])
    table["failed"] = (table["failed_mean"] * table["n"]).round().astype(int)
    table["failed_share"] = table["failed_mean"]
    parts = []
    for rate, group in table.groupby("base_lr") if by_rate else [(None, table)]:
        group = group.sort_values("warmup_steps")
        safe = group[group["failed"] == 0]
        best = group.sort_values(f"{metric}_mean", ascending=False).iloc[0]
        first = group.iloc[0]
        line = (f"η = {rate:g}: " if rate is not None else "") + (
            f"with {_span(first['warmup_steps'], unit)} of warmup {int(first['failed'])} of "
            f"{int(first['n'])} seeds failed; ")
        line += (f"shortest warmup with no failure: {_span(safe.iloc[0]['warmup_steps'], unit)}"
                 if len(safe) else "every warmup length tried failed at least once")
        longest = group.iloc[-1]
        if (group["failed"] == group["n"]).all():
            line += "; no warmup length rescued a single seed."
        elif best["warmup_steps"] == longest["warmup_steps"]:
            line += (f"; best final {metric} with the longest warmup tried, "
                     f"{_span(best['warmup_steps'], unit)} ({_pm_row(best, metric)}).")
        else:
            line += (f"; best final {metric} with {_span(best['warmup_steps'], unit)} of warmup "
                     f"({_pm_row(best, metric)}; {_separable(best, longest, metric)} with "
                     f"the longest, {_span(longest['warmup_steps'], unit)}).")
        parts.append(line)
    overall = table.sort_values(f"{metric}_mean", ascending=False).iloc[0]
    answer = (f"Overall best: warmup {_span(overall['warmup_steps'], unit)}"
              + (f" at η = {overall['base_lr']:g}" if by_rate else "")
              + f", {metric} {_pm_row(overall, metric)}.")
    same_rate = table[table["base_lr"] == overall["base_lr"]] if by_rate else table
    safe = same_rate[same_rate["failed"] == 0].sort_values("warmup_steps")
    if len(safe):
        shortest = safe.iloc[0]
        verdict = _separable(overall, shortest, metric)
        if shortest["warmup_steps"] == overall["warmup_steps"]:
            answer += (" At that rate the shortest warmup with no failed seed is also the most "
                       "accurate: warmup should be just long enough to keep training stable.")
        else:
            answer += (f" At that rate the shortest warmup with no failed seed is "
                       f"{_span(shortest['warmup_steps'], unit)} ({_pm_row(shortest, metric)}; "
                       f"{verdict} with the best), so warmup beyond what stability needs "
                       + ("paid off here." if "do not" in verdict else
                          "made no clear difference here."))
    answer += (" Failed: diverged (non-finite loss, or a collapse after learning) or ended at "
               f"{metric} ≤ {at_chance:.3g} (chance is {guess:.3g}).")
    shown = table[keys].copy()
    shown["seeds"] = table["n"]
    shown["failed"] = table["failed"]
    shown[f"{metric} at epoch {early_epoch + 1}"] = [_pm_row(r, "early")
                                                      for _, r in table.iterrows()]
    shown[f"final {metric}"] = [_pm_row(r, metric) for _, r in table.iterrows()]
    shown["test_acc"] = [_pm_row(r, "test_acc") for _, r in table.iterrows()]
    figure = _warmup_figure(table, rows, keys, metric, folder)
    return Section("Exercise 4: how long should warmup be?", parts + [answer], shown, [figure])


def _warmup_figure(table, rows, keys, metric, folder) -> Path:
    plt, sns = _plotting()
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.5))
    if "base_lr" in table:
        grid = table.pivot(index="base_lr", columns="warmup_steps", values="failed_share")
        sns.heatmap(grid, annot=True, fmt=".2f", cmap="Reds", vmin=0, vmax=1, ax=axes[0])
        axes[0].set(title="share of seeds failed (diverged or ended at chance)")
        for rate, part in table.groupby("base_lr"):
            axes[1].errorbar(part["warmup_steps"], part[f"{metric}_mean"],
                             yerr=part[f"{metric}_ci"].fillna(0), marker="o", capsize=3,
                             label=f"η = {rate:g}")
        highest = rows[rows["base_lr"] == table["base_lr"].max()]
    else:
        axes[0].bar(table["warmup_steps"].astype(str), table["failed_share"])
        axes[1].errorbar(table["warmup_steps"], table[f"{metric}_mean"],
                         yerr=table[f"{metric}_ci"].fillna(0), marker="o", capsize=3)
        highest = rows
    axes[1].set(xlabel="warmup epochs", ylabel=f"final {metric}", ylim=(0, 1),
                title="final accuracy vs warmup (95% CI)")
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend()
    first = highest[highest["epoch"] < 10]
    sns.lineplot(data=first, x="epoch", y=metric, **_hue(first, "warmup_steps"),
                 ax=axes[2], errorbar=("ci", 95), n_boot=500, seed=0)
    axes[2].set(title="early epochs at the highest rate, by warmup")
    return _save(fig, folder / "ex4_warmup.png", axes)


# --- the chapter's runs against the book's printed numbers ---------------------------------

BOOK_BUILDS = ("2023 build", "2022 build")


def replication(trials: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec | None,
                metric: str, folder: Path) -> Section | None:
    if spec is None or not any(run.book for run in spec.runs) or "run" not in trials:
        return None
    done = finished(trials)
    if done.empty:
        return None
    metrics = ["train_loss", "train_acc", "test_acc"]
    table = by_config(done, ["run"], metrics).set_index("run")
    rows, inside, outside, notes = [], 0, 0, []
    for run in spec.runs:
        if run.label not in table.index:
            continue
        ours = table.loc[run.label]
        row = {"run": run.label, "seeds": int(ours["n"])}
        for m in metrics:
            row[f"{m} (ours)"] = _pm_row(ours, m)
        for m, printed in run.book:
            lo = ours[f"{m}_mean"] - ours[f"{m}_ci"]
            hi = ours[f"{m}_mean"] + ours[f"{m}_ci"]
            verdicts = []
            for build, value in zip(BOOK_BUILDS, printed):
                if math.isnan(ours[f"{m}_ci"]):
                    verdicts.append(f"{value:.3f}")
                    continue
                where = "in" if lo <= value <= hi else ("above" if value > hi else "below")
                inside += where == "in"
                outside += where != "in"
                verdicts.append(f"{value:.3f} ({where})")
            row[f"{m} (book)"] = ", ".join(verdicts)
        rows.append(row)
    shown = pd.DataFrame(rows)
    book_test = [v for run in spec.runs for m, vs in run.book if m == "test_acc" for v in vs]
    spread = max((abs(vs[0] - vs[1]) for run in spec.runs for m, vs in run.book
                  if m == "test_acc" and len(vs) > 1), default=math.nan)
    widths = table["test_acc_ci"].dropna()
    if widths.empty:
        text = ("One seed per run: no interval to place the book's numbers in; add seeds.")
    else:
        text = (
            f"Of the book's printed numbers, **{inside} fall inside** our 95% intervals and "
            f"**{outside} outside** (\"in\", \"above\", \"below\" in the table). The book's "
            f"two builds differ by up to {spread:.3f} in test accuracy for the same recipe, while "
            f"our intervals are ±{widths.median():.3f} wide (median over runs): each printed "
            "number is one run, one seed, one build, so a number outside our interval can be a "
            "draw from a wider spread (other hardware, library versions, seeds) and need not "
            "mean the recipe differs.") if len(book_test) else ""
    pairs = _printed_vs_intended(done, spec)
    if pairs:
        notes.append("As printed vs as intended (same seeds, paired difference in final test "
                     "accuracy, intended − printed): " + "; ".join(pairs) + ".")
    figure = _replication_figure(done, spec, folder)
    return Section("The chapter's runs against the book", [text] + notes, shown, [figure])


def _printed_vs_intended(done: pd.DataFrame, spec: StudySpec) -> list[str]:
    stems: dict[str, dict[str, str]] = {}
    for run in spec.runs:
        stem, _, how = run.label.partition(", as ")
        if how:
            stems.setdefault(stem, {})["printed" if how.startswith("printed") else "intended"] = \
                run.label
    lines = []
    for stem, labels in stems.items():
        if len(labels) != 2:
            continue
        a = done[done["run"] == labels["printed"]].set_index("seed")["test_acc"]
        b = done[done["run"] == labels["intended"]].set_index("seed")["test_acc"]
        diff = (b - a).dropna()
        if len(diff):
            mean, ci, n = mean_ci(diff)
            lines.append(f"{stem} {format_ci(mean, ci)} (n = {n})")
    return lines


def _replication_figure(done: pd.DataFrame, spec: StudySpec, folder: Path) -> Path:
    plt, sns = _plotting()
    order = [run.label for run in spec.runs if run.label in set(done["run"])]
    table = by_config(done, ["run"], ["test_acc"]).set_index("run").loc[order]
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(order) + 1.5))
    sns.stripplot(data=done, y="run", x="test_acc", order=order, color="C0", alpha=0.4,
                  size=4, jitter=False, ax=ax)  # no random jitter: the same figure every time
    ax.errorbar(table["test_acc_mean"], range(len(order)), xerr=table["test_acc_ci"].fillna(0),
                fmt="o", color="C0", capsize=4, label="ours: mean ± 95% CI (Student t)")
    for run in spec.runs:
        printed = dict(run.book).get("test_acc", ())
        if run.label in order:
            for value, marker, build in zip(printed, ("X", "D"), BOOK_BUILDS):
                ax.scatter(value, order.index(run.label), marker=marker, color="C3", zorder=5,
                           label=f"book, {build}")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), loc="best", fontsize=8)
    ax.set(xlabel="final test accuracy", ylabel="",
           title="the chapter's runs: our seeds (dots) and the book's printed runs (red)")
    return _save(fig, folder / "chapter_vs_book.png", [ax])


# --- exercise 5: optimization and sampling -------------------------------------------------

CONTROL = "sgld_without_noise"  # SGLD less its noise: SGD, the prior's decay, averaging


def sampling(trials: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec | None,
             metric: str, folder: Path) -> Section | None:
    optimizers = set(trials["optimizer"].dropna()) if "optimizer" in trials else set()
    if optimizers not in ({"sgd", "sgld"}, {"sgd", "sgld", CONTROL}):
        return None
    done = finished(trials)
    if done.empty or "avg_test_acc" not in done:
        return None
    # Pairs are the same configuration and seed under each optimizer: group by every other
    # parameter the study varies (the decay exponent first).
    others = [c for c in config_columns(done) if c != "optimizer" and _varies(done, c, 2)]
    keys = (["exponent"] if _varies(done, "exponent", 1) else []) + \
        [c for c in others if c != "exponent"]
    outcomes = ["test_acc", "test_nll", "test_ece"]
    control = CONTROL in optimizers
    langevin = done[done["optimizer"] == "sgld"]
    rows, lines, against_control = [], [], []
    for values, group in (langevin.groupby(keys) if keys else [((), langevin)]):
        values = values if isinstance(values, tuple) else (values,)
        where = dict(zip(keys, values))
        peers = {}
        for name in ("sgd", CONTROL) if control else ("sgd",):
            frame = done[done["optimizer"] == name]
            for key, value in where.items():
                frame = frame[frame[key] == value]
            peers[name] = frame
        row = {**where, "seeds": len(group)}
        shown = [("SGD iterate", peers["sgd"], "")]
        if control:
            shown.append(("no-noise average", peers[CONTROL], "avg_"))
        shown += [("SGLD iterate", group, ""), ("SGLD average", group, "avg_")]
        for name, frame, prefix in shown:
            for m in outcomes:
                row[f"{name} {m[5:]}"] = format_ci(*mean_ci(frame[prefix + m])[:2])
        label = ", ".join(f"γ = {v:g}" if k == "exponent" else f"{k} = {v}"
                          for k, v in where.items()) or "all"
        lines.append(_paired_line(label, group, peers["sgd"], outcomes, ""))
        if control:
            against_control.append(_paired_line(label, group, peers[CONTROL], outcomes, "avg_"))
        rows.append(row)
    burn_in = spec.train.burn_in if spec else 0
    thin = spec.train.thin if spec else 1
    every = "every epoch" if thin == 1 else f"every {thin} epochs"
    intro = (
        "SGD and SGLD take the same steps η_t from the same schedule; SGLD adds Gaussian noise "
        "of variance ε_t = 2η_t/N and a Gaussian prior, and from epoch "
        f"{burn_in + 1} on, {every}, its weights are samples whose predictions are averaged. With "
        "steps that decay to zero while their sum diverges (γ ≤ 1) and the sum of their "
        "squares converges (γ > 0.5), the injected noise outgrows the mini-batch noise and the "
        "iterates sample the posterior (Welling & Teh 2011): decaying the rate is what turns "
        "the optimizer into a sampler. SGD's final iterate is a single point estimate.")
    if control:
        intro += (" The control, SGLD without its noise (SGD with the prior as a weight decay "
                  "of λ/N, its predictions averaged over the same epochs), separates what "
                  "sampling adds from what averaging and the prior add.")
    texts = ["Posterior average minus SGD's final iterate, paired by seed (mean ± 95% CI; "
             "lower NLL and ECE are better): " + "; ".join(lines) + "."]
    if control:
        texts.append("Posterior average minus the no-noise average, paired by seed (what the "
                     "noise adds): " + "; ".join(against_control) + ".")
    figure = _sampling_figure(done, keys, control, folder)
    return Section("Exercise 5: optimization and sampling (SGLD)", [intro, *texts],
                   pd.DataFrame(rows), [figure])


def _paired_line(label: str, group: pd.DataFrame, base: pd.DataFrame, outcomes: list[str],
                 prefix: str) -> str:
    """SGLD's posterior average minus `base` (its `prefix` columns), seed by seed, in words."""
    paired = (group.set_index("seed")[[f"avg_{m}" for m in outcomes]].rename(
        columns=lambda c: c[4:]) - base.set_index("seed")[[prefix + m for m in outcomes]]
        .rename(columns=lambda c: c[len(prefix):])).dropna()
    diffs = {m: mean_ci(paired[m]) for m in outcomes}
    shown = {m: format_ci(*diffs[m][:2]) for m in outcomes}
    return (f"{label}: NLL {shown['test_nll']}, ECE {shown['test_ece']}, accuracy "
            f"{shown['test_acc']} (n = {diffs['test_nll'][2]})")


def _sampling_figure(done: pd.DataFrame, keys: list[str], control: bool, folder: Path) -> Path:
    plt, _ = _plotting()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    x = keys[0] if keys else None
    lines = [("SGD iterate", "sgd", ""), ("SGLD iterate", "sgld", ""),
             ("SGLD average", "sgld", "avg_")]
    if control:
        lines.insert(1, ("no-noise average", CONTROL, "avg_"))
    for ax, m in zip(axes, ("test_acc", "test_nll", "test_ece")):
        for name, optimizer, prefix in lines:
            frame, column = done[done["optimizer"] == optimizer], prefix + m
            table = by_config(frame.assign(_all=0), [x or "_all"], [column])
            ax.errorbar(table[x or "_all"], table[f"{column}_mean"],
                        yerr=table[f"{column}_ci"].fillna(0), marker="o", capsize=3, label=name)
        ax.set(xlabel="decay exponent γ" if x else "", ylabel=m, title=f"final {m} (95% CI)")
        ax.legend()
    return _save(fig, folder / "ex5_sgld.png", axes)


# --- a joint search: which dimension matters ----------------------------------------------

SEARCHING_SAMPLERS = ("tpe", "random", "gp", "cmaes")
MIN_TRIALS_FOR_IMPORTANCE = 8


def importance(study, spec: StudySpec | None, metric: str, folder: Path) -> Section | None:
    """Optuna's fANOVA importances of the searched dimensions, for studies that search."""
    import optuna

    if spec is None or spec.study.sampler not in SEARCHING_SAMPLERS:
        return None
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return None
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError):  # e.g. no dimension present in every trial
        return None
    if len(scores) < 2:
        return None
    shared = set(scores)
    searched = {k for k, d in spec.space if not hasattr(d, "value") and k != "seed"}
    conditional = sorted(searched - shared)
    table = pd.DataFrame({"dimension": list(scores), "importance": list(scores.values())})
    top = table.iloc[0]
    text = (f"By Optuna's fANOVA over {len(complete)} complete trials, **{top['dimension']}** "
            f"explains the largest share of the variance of the final {metric} "
            f"({top['importance']:.2f}), then " + ", ".join(
                f"{r['dimension']} ({r['importance']:.2f})" for _, r in table.iloc[1:].iterrows())
            + ".")
    if conditional:
        text += (" Dimensions only some schedulers take (" + ", ".join(conditional) + ") are not "
                 "in every trial, so fANOVA cannot weigh them; the configuration table shows "
                 "them.")
    pruned = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)))
    if pruned:
        text += f" {pruned} trials were pruned by the study's pruner."
    plt, _ = _plotting()
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(table) + 1.5))
    ax.barh(table["dimension"][::-1], table["importance"][::-1], color="C0")
    ax.set(xlabel="fANOVA importance", title=f"what drives the final {metric}")
    figure = _save(fig, folder / "importances.png", [ax])
    shown = table.assign(importance=table["importance"].map(lambda v: f"{v:.3f}"))
    return Section("Which dimension matters (parameter importances)", [text], shown, [figure])


# --- plumbing ------------------------------------------------------------------------------

SECTIONS: list[Callable[..., Section | None]] = [replication, fixed_rate, decay_exponent,
                                                  model_size, warmup, sampling]


def sections(trials: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec | None, metric: str,
             folder: Path) -> list[Section]:
    """The exercise sections that apply to this study, in the chapter's order."""
    if trials.empty or curves.empty:
        return []
    found = (make(trials, curves, spec, metric, folder) for make in SECTIONS)
    return [section for section in found if section is not None]


def _hue(frame: pd.DataFrame, column: str) -> dict:
    """Seaborn hue arguments giving each value of a numeric column its own colour, in order
    (a numeric hue would map 0.01 and 0.1 to nearly the same colour)."""
    values = sorted(frame[column].dropna().unique())
    labels = [f"{v:g}" for v in values]
    return {"hue": frame[column].map(lambda v: f"{v:g}"), "hue_order": labels,
            "palette": "viridis" if len(labels) > 6 else "tab10"}


def _plotting():
    import matplotlib
    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt
    import seaborn as sns
    return plt, sns


def _save(fig, path: Path, axes) -> Path:
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path
