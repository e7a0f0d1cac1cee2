"""How lrsweep writes a number in tables, labels and progress lines.

    >>> short(0.123456), short(3), short(None), short(float("nan"))
    ('0.1235', '3', '–', '–')
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
