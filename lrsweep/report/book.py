"""The chapter's own runs against the book's printed numbers: in, above or below our
intervals; each run against the best, and as printed against as intended, paired by seed."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lrsweep.report.figures import clipped_err, plotting, save
from lrsweep.report.paired import paired
from lrsweep.report.sections import Section, by_config, pm_row
from lrsweep.report.stats import finished, format_ci, mean_ci
from lrsweep.search.spec import StudySpec
from lrsweep.search.spec_types import FASHION_MNIST_TEST, FASHION_MNIST_TRAIN


BOOK_BUILDS = ("2023 build", "2022 build")
VS_BEST = "Δ test_acc vs best (paired)"


def replication(trials: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec | None,
                metric: str, folder: Path) -> Section | None:
    if spec is None or not any(run.book for run in spec.runs) or "run" not in trials:
        return None
    done = finished(trials)
    if done.empty:
        return None
    metrics = ["train_loss", "train_acc", "test_acc"]
    table = by_config(done, ["run"], metrics).set_index("run")
    # Runs share seeds (initial weights, batches): each against the best, seed by seed, is
    # what can rank them; their own intervals side by side cannot.
    best = table["test_acc_mean"].idxmax()
    rows, inside, outside = _rows(spec, done, table, metrics, best)
    shown, notes = pd.DataFrame(rows), []
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
    if book_test and (other := _other_scale(spec)):
        text = (f"This study trained at another scale than the book's: {other}. Its numbers "
                "are that scale's, so the book's are not expected inside its intervals. "
                + text)
    if len(table) > 1:
        notes.append(f"{VS_BEST}: each run's final test accuracy minus that of the best run "
                     f"by it, {best}, seed by seed; where its interval holds 0, these seeds "
                     "cannot separate the two.")
    pairs = _printed_vs_intended(done, spec)
    if pairs:
        notes.append("As printed vs as intended (same seeds, paired difference in final test "
                     "accuracy, intended − printed): " + "; ".join(pairs) + ".")
    figure = _replication_figure(done, spec, folder)
    return Section("The chapter's runs against the book", [text] + notes, shown, [figure])


def _rows(spec: StudySpec, done: pd.DataFrame, table: pd.DataFrame, metrics: list[str],
          best: str) -> tuple[list[dict], int, int]:
    """The table's rows, a run each, and how many of the book's numbers fall inside our
    intervals and outside them."""
    rows, inside, outside = [], 0, 0
    for run in spec.runs:
        if run.label not in table.index:
            continue
        ours = table.loc[run.label]
        row = {"run": run.label, "seeds": int(ours["n"])}
        for m in metrics:
            row[f"{m} (ours)"] = pm_row(ours, m)
        row[VS_BEST] = ("reference" if run.label == best else paired(
            done, ["run"], pd.Series({"run": run.label}), pd.Series({"run": best}),
            "test_acc").cell())
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
    return rows, inside, outside


def _other_scale(spec: StudySpec) -> str:
    """How the study's training differs from the book's recipe, whose printed numbers are
    that scale's: all of Fashion-MNIST's training images, 30 epochs, batch 256, every test
    image ("" where it does not)."""
    tr = spec.train
    differences = [
        (tr.epochs != 30, f"{tr.epochs:,} epochs (the book's 30 epochs)"),
        (tr.train_images != FASHION_MNIST_TRAIN,
         f"{tr.train_images:,} training images (the book's {FASHION_MNIST_TRAIN:,})"),
        (tr.batch_size != 256, f"batch {tr.batch_size:,} (the book's 256)"),
        (tr.test_subset != 0,
         f"{tr.test_subset:,} test images (the book's all {FASHION_MNIST_TEST:,})"),
    ]
    return ", ".join(text for differs, text in differences if differs)


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
    plt, sns = plotting()
    order = [run.label for run in spec.runs if run.label in set(done["run"])]
    table = by_config(done, ["run"], ["test_acc"]).set_index("run").loc[order]
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(order) + 1.5))
    sns.stripplot(data=done, y="run", x="test_acc", order=order, color="tab:blue", alpha=0.4,
                  size=4, jitter=False, ax=ax)  # no random jitter: the same figure every time
    ax.errorbar(table["test_acc_mean"], range(len(order)),
                xerr=clipped_err(table["test_acc_mean"], table["test_acc_ci"], "test_acc"),
                fmt="o", color="tab:blue", capsize=4, label="ours: mean, 95% t-interval over seeds")
    for run in spec.runs:
        printed = dict(run.book).get("test_acc", ())
        if run.label in order:
            for value, marker, build in zip(printed, ("X", "D"), BOOK_BUILDS):
                ax.scatter(value, order.index(run.label), marker=marker, color="tab:red",
                           zorder=5, label=f"book's printed run, {build}")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), loc="best", fontsize=8)
    low = min(done["test_acc"].min(), table["test_acc_mean"].min())
    ax.set(xlabel="final test accuracy", ylabel="", xlim=(max(0.0, low - 0.02), 1.0),
           title="the chapter's runs: our seeds (small dots), their mean and interval, and the "
                 "book's printed runs (red markers, see legend)")
    return save(fig, folder / "chapter_vs_book.png", [ax])
