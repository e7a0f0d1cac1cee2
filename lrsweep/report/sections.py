"""What every report section is made of: a title, paragraphs, a table and figures, and the
computations the exercises share (each configuration's mean and interval over seeds).

    >>> import pandas as pd
    >>> trials = pd.DataFrame({"state": ["complete"] * 2, "base_lr": [0.1, 0.1],
    ...                        "seed": [0, 1], "val_acc": [0.8, 0.9]})
    >>> table = by_config(trials, ["base_lr"], ["val_acc"])
    >>> round(float(table.loc[0, "val_acc_mean"]), 2), int(table.loc[0, "n"])
    (0.85, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lrsweep.outcomes import chance_levels
from lrsweep.report.outcome_counts import count_outcomes, outcome_column
from lrsweep.report.stats import config_columns, format_ci, mean_ci, metric_bounds
from lrsweep.search.spec import Choice, StudySpec


@dataclass(frozen=True)
class Section:
    title: str
    paragraphs: list[str]
    table: pd.DataFrame | None = None
    figures: list[Path] = field(default_factory=list)
    code: str | None = None


def by_config(frame: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean, 95% CI half-width and n of each metric per group of `keys` of a trials frame,
    with its failed seeds counted by outcome (outcome_counts)."""
    frame = frame.assign(outcome=outcome_column(frame) if len(frame) else [])
    rows = []
    for values, group in frame.groupby(keys, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        row = dict(zip(keys, values))
        row["n"] = len(group)
        row.update(count_outcomes(group["outcome"]))
        for metric in metrics:
            mean, ci, _ = mean_ci(group[metric])
            row[f"{metric}_mean"], row[f"{metric}_ci"] = mean, ci
        rows.append(row)
    return pd.DataFrame(rows)


def pm_row(row: pd.Series, metric: str, bounds: tuple[float, float] | None = None) -> str:
    """"0.862 ± 0.042" for `metric` of a by_config row, cut to what the metric can be."""
    return format_ci(row[f"{metric}_mean"], row[f"{metric}_ci"],
                     bounds=bounds or metric_bounds(metric))


def varies(trials: pd.DataFrame, column: str, at_least: int) -> bool:
    return column in trials and trials[column].dropna().nunique() >= at_least


def only_varies(done: pd.DataFrame, keys: list[str]) -> bool:
    """Whether the finished trials' configurations differ in `keys` alone (seeds aside), so
    that a group of `keys` is one configuration over its seeds. A study that varies more (a
    warmup beside the rates, a scheduler beside the exponents) would count configurations as
    a group's seeds; its configurations table, grouped by everything, answers it instead."""
    return not any(varies(done, c, 2) for c in config_columns(done) if c not in keys)


def chance(trials: pd.DataFrame) -> tuple[float, float]:
    """(guessing, stuck) accuracies for the study's classes: at or below `stuck` a network
    never learned (for 10 classes 0.1 and 0.2; `outcomes.chance_levels` for the others)."""
    classes = int(trials["classes"].iloc[0]) if "classes" in trials and len(trials) else 10
    return 1 / classes, chance_levels(classes)[0]


def span(n: float, unit: str) -> str:
    """"1 epoch", "3 steps": a warmup length in the study's schedule unit."""
    return f"{int(n)} {unit}" + ("" if int(n) == 1 else "s")


def grid_axis(spec: StudySpec | None, key: str) -> bool:
    """Whether a study file lists values of `key` to compare (a grid axis): a searched range
    gives every trial its own value, and [[run]] tables vary several keys at once."""
    return spec is None or (not spec.runs and isinstance(spec.dimension(key), Choice))
