"""Checks of one value of a study file, each failing with one line that names where: keys a
table allows, a choice among names, a whole number in bounds."""

from __future__ import annotations

import difflib
from typing import Any

from lrsweep.search.spec_types import SpecError, toml_text


def only_keys(table: dict, allowed, where: str) -> None:
    """`where` begins the message: "file.toml: [train] " or "file.toml: [[run]] 'a': "."""
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (allowed: {', '.join(allowed)})"
            raise SpecError(f"{where}unknown key {key!r}{hint}")


def one_of(value: Any, allowed, where: str, *, list_hint: str = "") -> None:
    """`list_hint`: where a list of such values is written instead, when one may be."""
    if isinstance(value, list):
        raise SpecError(f"{where}: one of {', '.join(allowed)}, not a list ({toml_text(value)})"
                        + (f"; {list_hint}" if list_hint else ""))
    if not isinstance(value, str) or value not in allowed:
        raise SpecError(f"{where}: {toml_text(value)} is not one of {', '.join(allowed)}")


def whole(value: Any, where: str, *, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{where}: must be a whole number ≥ {minimum}, got {toml_text(value)}")
    if maximum is not None and value > maximum:
        raise SpecError(f"{where}: at most {maximum:,}, got {toml_text(value)}")
