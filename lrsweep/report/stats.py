"""Aggregates over seeds: each configuration's mean and 95% confidence interval.

A configuration is a trial's parameters without its seed. The interval is Student's t:
mean ± t(0.975, n−1) · s / √n, so it is honest for the handful of seeds a study can afford.

    >>> import pandas as pd
    >>> trials = pd.DataFrame({"state": ["complete"] * 3, "scheduler": ["cosine"] * 3,
    ...                        "seed": [0, 1, 2], "val_acc": [0.80, 0.82, 0.84]})
    >>> row = config_table(trials, ["val_acc"]).iloc[0]
    >>> round(float(row["val_acc_mean"]), 4), round(float(row["val_acc_ci"]), 4)
    (0.82, 0.0497)
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from lrsweep.numbers import short
from lrsweep.report.outcome_counts import count_outcomes, outcome_column

# Columns of trials_frame that are outcomes or bookkeeping, not configuration.
NOT_CONFIG = {"trial", "state", "outcome", "value", "seed", "train_loss", "train_acc", "val_loss", "val_acc",
              "test_acc", "test_nll", "test_ece", "avg_test_acc", "avg_test_nll",
              "avg_test_ece", "epochs", "seconds", "val_acc_curve", "classes", "param_count"}


def lower_is_better(metric: str) -> bool:
    """Losses, negative log-likelihoods and calibration errors: smaller is better."""
    return metric.endswith(("loss", "nll", "ece"))


def config_columns(trials: pd.DataFrame) -> list[str]:
    if "run" in trials.columns:
        return ["run"]  # a [[run]] table's label names its whole configuration
    return [c for c in trials.columns if c not in NOT_CONFIG]


def config_label(row: pd.Series, columns: list[str], *, exact: bool = False) -> str:
    """"scheduler=cosine base_lr=0.3": floats to 4 significant digits, or with `exact` as
    many as say the value exactly (for two configurations the short form cannot tell apart)."""
    if columns == ["run"]:
        return str(row["run"])
    parts = [f"{c}={_short(row[c], exact)}" for c in columns
             if not (isinstance(row[c], float) and math.isnan(row[c]))]
    return " ".join(parts) or "all trials"


def config_key(row: pd.Series, columns: list[str]) -> str:
    """A configuration's identity: its exact values (its label rounds them). Numbers as
    floats, so a column that pandas made float by a missing value still matches."""
    def exact(value) -> str:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            return repr(float(value))
        return str(value)
    return "|".join(exact(row[c]) for c in columns)


def finished(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials (or their curve rows) that ran to the end: complete, or stopped by divergence,
    which is part of the answer (a rate that diverges is a bad rate)."""
    return frame[frame["state"].str.startswith(("complete", "diverged"))]


def repeated_trials(trials: pd.DataFrame) -> list[int]:
    """Finished trials that repeat an earlier finished trial's configuration, seed and epochs
    (workers that drew alike, before per-trial sampler seeds; a sampler proposing a point
    again). A trial's numbers are a function of its configuration and seed, so a repeat adds
    no evidence: statistics count each once, by its first trial."""
    done = finished(trials).sort_values("trial")
    if done.empty or "seed" not in done:
        return []
    columns = config_columns(done) + [c for c in ("seed", "epochs") if c in done]
    keys = pd.Series([config_key(row, columns) for _, row in done.iterrows()], index=done.index)
    return [int(t) for t in done.loc[keys.duplicated(), "trial"]]


def format_ci(mean: float, ci: float, digits: int = 3,
              bounds: tuple[float, float] = (-math.inf, math.inf)) -> str:
    """"0.862 ± 0.042"; the mean alone without an interval; "–" without a mean (no data);
    "∞" for a loss a diverged seed made infinite. An interval that runs past what the metric
    can be (`bounds`, e.g. an accuracy's [0, 1]) is cut there and shown as its ends:
    "0.408 [0.000, 0.932]" — a t interval over a few bimodal seeds does that. A number of a
    million or more (a loss that blew up but stayed finite) is written in powers of ten.

        >>> format_ci(1.5e25, 2.1e25, bounds=(0, math.inf))
        '1.500e+25 [0.000, 3.600e+25]'
    """
    if math.isnan(mean):
        return "–"
    if math.isinf(mean):
        return "∞" if mean > 0 else "−∞"

    def number(x: float) -> str:
        return f"{x:.{digits}e}" if abs(x) >= 1e6 else f"{x:.{digits}f}"

    if math.isnan(ci):
        return number(mean)
    low, high = bounds
    if mean - ci < low or mean + ci > high:
        return f"{number(mean)} [{number(max(low, mean - ci))}, {number(min(high, mean + ci))}]"
    return f"{number(mean)} ± {number(ci)}"


def metric_bounds(metric: str) -> tuple[float, float]:
    """What a metric can be: accuracies and calibration errors lie in [0, 1], losses and
    epochs are never negative, a train − test accuracy gap lies in [−1, 1]."""
    if metric.endswith("gap"):
        return -1.0, 1.0
    if metric.endswith(("acc", "ece", "share")):
        return 0.0, 1.0
    if metric.endswith(("loss", "nll", "epoch", "seconds")):
        return 0.0, math.inf
    return -math.inf, math.inf


def difference_bounds(metric: str) -> tuple[float, float]:
    """What a difference of two values of a metric can be: of two accuracies (or calibration
    errors) [−1, 1]; of two losses, anything.

        >>> difference_bounds("test_acc"), difference_bounds("test_nll")
        ((-1.0, 1.0), (-inf, inf))
        >>> format_ci(0.019, 1.194, bounds=difference_bounds("test_acc"))
        '0.019 [-1.000, 1.000]'
    """
    low, high = metric_bounds(metric)
    return (low - high, high - low) if math.isfinite(high - low) else (-math.inf, math.inf)


def intervals_overlap(a: pd.Series, b: pd.Series, metric: str) -> bool | None:
    """Whether two rows' 95% intervals of `metric` overlap; None when either has none."""
    ca, cb = a[f"{metric}_ci"], b[f"{metric}_ci"]
    if math.isnan(ca) or math.isnan(cb):
        return None
    return abs(a[f"{metric}_mean"] - b[f"{metric}_mean"]) <= ca + cb


def mean_ci(values: pd.Series, level: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the t interval, n) of the finite values; half-width NaN if n < 2."""
    clean = pd.to_numeric(values, errors="coerce").dropna()
    n = len(clean)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(clean.mean())
    if n < 2 or math.isinf(mean):  # an infinite loss (a diverged seed) has no interval
        return mean, math.nan, n
    t = scipy_stats.t.ppf(0.5 + level / 2, n - 1)
    return mean, float(t * clean.std(ddof=1) / math.sqrt(n)), n


def config_table(trials: pd.DataFrame, metrics: list[str], *,
                 higher_is_better: bool = True) -> pd.DataFrame:
    """One row per configuration over its complete trials (diverged ones included: a rate
    that diverges is part of the answer), with n, mean and CI of each metric, its failed
    seeds by outcome (outcome_counts), its pruned trials (not in its intervals: they did not
    finish), and the label; best first by the first metric (the objective)."""
    done = finished(trials).copy()
    columns = config_columns(done)
    done["config_key"] = [config_key(row, columns) for _, row in done.iterrows()]
    done["outcome"] = outcome_column(done) if len(done) else []
    stopped = trials[trials["state"] == "pruned"] if "state" in trials else trials.iloc[:0]
    pruned = pd.Series([config_key(row, columns) for _, row in stopped.iterrows()],
                       dtype=object).value_counts()
    rows = []
    for key, group in done.groupby("config_key", sort=False):
        diverged = group["state"].str.startswith("diverged")
        row = {"config": config_label(group.iloc[0], columns), "config_key": key,
               "seeds": int(group["seed"].nunique()) if "seed" in group else 1,
               **count_outcomes(group["outcome"]), "pruned": int(pruned.get(key, 0))}
        row.update({c: group[c].iloc[0] for c in columns})
        for metric in metrics:
            values = group[metric]
            if lower_is_better(metric):
                # A non-finite seed's loss blew up (stored as null where it was not finite,
                # as a number where its last evaluation still was): it counts as the worst
                # loss there is, not as a seed that never ran nor as one that learned.
                blew_up = (group["outcome"] == "non-finite") | (diverged & values.isna())
                values = values.mask(blew_up, math.inf)
            mean, ci, n = mean_ci(values)
            row.update({f"{metric}_mean": mean, f"{metric}_ci": ci, f"{metric}_n": n})
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # Configurations the rounded label cannot tell apart are labelled with exact values.
    clash = table["config"].duplicated(keep=False)
    table.loc[clash, "config"] = [config_label(row, columns, exact=True)
                                  for _, row in table[clash].iterrows()]
    return table.sort_values(f"{metrics[0]}_mean", ascending=not higher_is_better,
                             na_position="last", ignore_index=True)


def _short(value, exact: bool = False) -> str:
    return repr(float(value)) if exact and isinstance(value, float) else short(value)
