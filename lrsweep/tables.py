"""The tables the command line prints: studies (`ls`), trials (`run`, `show`), `bench`."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from lrsweep.numbers import short


def studies(frame: Any, url: str) -> Table:
    table = Table(title=f"studies in {url}")
    for col in ("study", "complete", "pruned", "failed", "running", "diverged", "best", "last"):
        table.add_column(col, justify="left" if col in ("study", "last") else "right")
    for row in frame.to_dict("records"):
        table.add_row(row["study"], *(str(row[c]) for c in ("complete", "pruned", "failed",
                                                            "running", "diverged")),
                      short(row["best"]) + (" (max)" if row["direction"] == "maximize" else " (min)"),
                      str(row["last"])[:19] if row["last"] is not None else "–")
    return table


def trials(frame: Any, title: str, top: int) -> Table:
    """The `top` best trials, best first, their final metrics and a sparkline of the curve."""
    ranked = frame.assign(_missing=frame["value"].isna()).sort_values(
        ["_missing", "value"], ascending=[True, frame.attrs.get("direction") == "minimize"])
    shown = ranked.head(top).drop(columns=["_missing", "classes", "parameters"], errors="ignore")
    # Columns that no shown trial has (an SGD study's SGLD posterior averages) only crowd out
    # the others: a terminal then clips every header.
    shown = shown.drop(columns=[c for c in shown.columns if c not in ("trial", "state", "value")
                                and shown[c].isna().all()])
    shown["val_acc by epoch"] = shown.pop("val_acc_curve").map(sparkline)
    table = Table(title=title)
    for col in shown.columns:
        table.add_column(col, justify="left" if col in ("state", "scheduler") else "right")
    for row in shown.to_dict("records"):
        table.add_row(*(short(v) for v in row.values()))
    return table


def bench(record: dict[str, Any]) -> Table:
    from lrsweep import bench as bench_module  # torch: only for the command that trains
    table = Table(title=f"lrsweep bench — {record['hardware']}, {record['images_per_epoch']} "
                        f"training + {record['test_images']} test images per epoch")
    for col in ("configuration", "s / epoch", "trial-epochs / s", "vs chapter", "peak MiB"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for row in bench_module.table(record):
        table.add_row(*row)
    return table


def sparkline(values: list) -> str:
    values = [v for v in values or [] if v is not None]
    if not values:
        return ""
    low, high = min(values), max(values)
    bars = "▁▂▃▄▅▆▇█"
    return "".join(bars[int((v - low) / (high - low) * 7) if high > low else 0] for v in values)
