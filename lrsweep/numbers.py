"""How lrsweep writes a number in tables, labels and progress lines, and a curve in one line
(the dashboard's trial attributes, the terminal's trial tables).

    >>> short(0.123456), short(3), short(None), short(float("nan"))
    ('0.1235', '3', '–', '–')
    >>> bars([0.1, 0.5, None, 0.9])
    '▁▅·█'
"""

from __future__ import annotations

import math
from typing import Any


def short(value: Any) -> str:
    """"–" for a missing value (None or NaN), four significant digits for a float, else str()."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


SPARK_BARS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 30  # bars at most: longer curves are shown at evenly spaced epochs
NO_BREAK = "\u00a0"


def sparkline(values: list[float | None]) -> str:
    """A curve in one short line, e.g. "0.1 ▁▃▆▇█ 0.805": its first value, its `bars`, its
    last value; numbers to 3 significant digits."""
    if not values:
        return ""
    return NO_BREAK.join((_short(values[0]), bars(values), _short(values[-1])))


def bars(values: list[float | None]) -> str:
    """A curve as at most SPARK_WIDTH bars (evenly picked epochs), scaled from its smallest
    value to its largest, "·" where a value is missing or not finite."""
    if not values:
        return ""
    n = len(values)
    picked = values if n <= SPARK_WIDTH else [
        values[round(i * (n - 1) / (SPARK_WIDTH - 1))] for i in range(SPARK_WIDTH)]
    finite = [v for v in picked if _finite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
    top = len(SPARK_BARS) - 1

    def bar(v: float | None) -> str:
        if not _finite(v):
            return "·"
        return SPARK_BARS[top // 2 if high == low else round((v - low) / (high - low) * top)]

    return "".join(map(bar, picked))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _short(v: Any) -> str:
    return f"{v:.3g}" if _finite(v) else "–"
