"""Configurations compared seed by seed. Trials of two configurations with the same seed
start from the same weights and see the same batches, so the per-seed difference removes
what the seeds share, and its t interval is the honest one for "is A better than B": much
narrower than two configurations' own intervals side by side when the seeds agree.

    >>> import pandas as pd
    >>> done = pd.DataFrame({"base_lr": [0.1] * 3 + [0.3] * 3, "seed": [0, 1, 2] * 2,
    ...                      "val_acc": [0.80, 0.85, 0.90, 0.81, 0.862, 0.911]})
    >>> rows = {lr: pd.Series({"base_lr": lr}) for lr in (0.1, 0.3)}
    >>> p = paired(done, ["base_lr"], rows[0.3], rows[0.1], "val_acc")
    >>> round(p.mean, 4), p.n, p.separated
    (0.011, 3, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from lrsweep.report.stats import mean_ci


@dataclass(frozen=True)
class Paired:
    """Mean and 95% t half-width of A − B over the seeds both ran (n of them)."""

    mean: float
    ci: float
    n: int

    @property
    def separated(self) -> bool | None:
        """Whether the interval of the difference excludes 0; None without an interval."""
        if self.n < 2 or math.isnan(self.ci) or math.isnan(self.mean):
            return None
        return abs(self.mean) > self.ci

    def text(self, metric: str) -> str:
        """"paired by seed, Δ val_acc +0.013 ± 0.004 (n = 3): the seeds separate them"."""
        if self.n == 0:
            return "no seed in common: they cannot be compared seed by seed"
        if math.isinf(self.mean) or math.isnan(self.mean):  # an infinite loss on some seed
            return f"paired by seed (n = {self.n}): one of them failed where the other did not"
        if self.separated is None:
            return f"one seed in common (Δ {metric} {self.mean:+.3f}): no interval"
        verdict = ("the seeds separate them" if self.separated
                   else "these seeds cannot separate them")
        return (f"paired by seed, Δ {metric} {self.mean:+.3f} ± {self.ci:.3f} (n = {self.n}): "
                + verdict)

    def cell(self) -> str:
        """A table cell: "+0.013 ± 0.004", "+0.013 (1 seed)" or "–"."""
        if self.n == 0 or math.isnan(self.mean):
            return "–"
        if math.isinf(self.mean) or math.isnan(self.ci):
            return f"{self.mean:+.3f}" + ("" if math.isinf(self.mean) else " (1 seed)")
        return f"{self.mean:+.3f} ± {self.ci:.3f}"


def seed_values(done: pd.DataFrame, keys: list[str], row: pd.Series, metric: str) -> pd.Series:
    """The metric per seed of the trials whose `keys` equal `row`'s (mean of repeats)."""
    mask = pd.Series(True, index=done.index)
    for key in keys:
        value = row[key]
        mask &= done[key].isna() if pd.isna(value) else done[key] == value
    return done[mask].groupby("seed")[metric].mean()


def paired(done: pd.DataFrame, keys: list[str], a: pd.Series, b: pd.Series,
           metric: str) -> Paired:
    """A − B seed by seed, over the seeds both configurations (rows holding `keys`) ran."""
    diff = (seed_values(done, keys, a, metric) - seed_values(done, keys, b, metric)).dropna()
    mean, ci, n = mean_ci(diff)
    return Paired(mean, ci, n)


def against(done: pd.DataFrame, keys: list[str], table: pd.DataFrame, reference: pd.Series,
            metric: str) -> list[str]:
    """Each row of `table` minus `reference`, seed by seed, as table cells ("ref" for it)."""
    def same(row: pd.Series) -> bool:
        return all(row[k] == reference[k] or (pd.isna(row[k]) and pd.isna(reference[k]))
                   for k in keys)
    return ["reference" if same(row) else paired(done, keys, row, reference, metric).cell()
            for _, row in table.iterrows()]


def against_zero(done: pd.DataFrame, keys: list[str], table: pd.DataFrame, reference: str,
                 within: str, metric: str) -> list[str]:
    """`against` the row whose `reference` key is 0 (exponent 0, no warmup) in each group of
    the same `within` value (scheduler, base rate) when `keys` hold it; "–" in a group
    without such a row."""
    cells = pd.Series("–", index=table.index, dtype=object)
    for _, group in table.groupby(within) if within in keys else [(None, table)]:
        zero = group[group[reference] == 0]
        if len(zero):
            cells[group.index] = against(done, keys, group, zero.iloc[0], metric)
    return list(cells)
