"""The tables the command line prints: studies (`ls`), trials (`run`, `show`), `bench`.

The studies and trials tables fit the console they are printed on: columns go in by priority
while the table still fits at full width, so no header or value is ever cut; what did not go in
is named in one line (`not_shown`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from lrsweep.numbers import bars, short

CURVE = "val_acc_curve"  # the sparkline's column: every trial's validation accuracy by epoch
# `ls`'s counts (report.read.STUDY_COUNTS), in the order a narrow terminal keeps them.
_COUNTS = ("complete", "pruned", "running", "interrupted", "never learned", "collapsed",
           "non-finite", "fail", "waiting")


class UnknownColumn(ValueError):
    """A --columns list the table cannot show: a name it does not have, or one column twice
    (`value` and the metric's name)."""


@dataclass
class Fitted:
    """A table that fits, the columns it could have shown, and those it left out: `dropped`
    for want of room, `hidden` not asked for."""
    table: Table
    dropped: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)


def studies(frame: Any, url: str, metrics: dict[str, str], console: Console) -> Fitted:
    """One row a study: trials counted by outcome (or state, where they have none), the best
    value named by its metric and direction, and when its last trial started. Counts that are
    zero for every study are left out."""
    rows = frame.to_dict("records")
    cells: dict[str, list[str]] = {"study": [r["study"] for r in rows]}
    for col in [c for c in frame.columns if c in _COUNTS]:  # outcomes, then states
        cells[col] = [str(r[col]) for r in rows]
    cells["best"] = [f"{metrics.get(r['study'], 'value')} {short(r['best'])} "
                     f"({'max' if r['direction'] == 'maximize' else 'min'})" for r in rows]
    # A study without trials has none: None, or pandas' NaT beside studies that have one.
    cells["last started"] = ["–" if r["last"] is None or r["last"] != r["last"]
                             else str(r["last"])[:16] for r in rows]
    zero = [c for c in _COUNTS if all(v == "0" for v in cells[c])]
    priority = ["study", "best", "complete", "last started", *_COUNTS[1:]]
    fitted = _fit(console, f"studies in {url}", cells, [c for c in priority if c not in zero],
                  left=("study", "last started"), order=list(cells))
    fitted.hidden = zero
    return fitted


def trials(frame: Any, title: str, top: int, console: Console, *, metric: str = "value",
           columns: Sequence[str] | None = None, show_all: bool = False) -> Fitted:
    """The `top` best trials, best first. By default the trial, its objective (headed by the
    metric's name), its outcome and the parameters that vary; `show_all` every column,
    `columns` those named, in that order."""
    if len(frame):  # recorded, else derived (a store from before outcomes; a running trial)
        from lrsweep.report.outcome_counts import outcome_column
        frame = frame.assign(outcome=outcome_column(frame)).__finalize__(frame)
    ranked = frame.assign(_missing=frame["value"].isna()).sort_values(
        ["_missing", "value"], ascending=[True, frame.attrs.get("direction") == "minimize"])
    shown = ranked.head(top)
    sources = {**_sources(frame, metric), CURVE: "val_acc_curve"}
    cells = {name: _cells(name, shown[source]) for name, source in sources.items()}
    everything = list(cells)
    # Columns that no shown trial has (an SGD study's SGLD posterior averages, a study without
    # validation's val_acc and its curve, all "·") say nothing.
    filled = [c for c in everything if c in ("trial", "state", metric) or _has_values(cells[c])]
    if columns:
        aliases = {"value": metric}
        named = [aliases.get(c, c) for c in columns]
        twice = sorted({c for c in named if named.count(c) > 1})
        if twice:
            raise UnknownColumn(f"--columns: {', '.join(twice)} named twice (`value` is the "
                                f"metric, {metric})")
        priority = named
        unknown = [c for c in priority if c not in cells]
        if unknown:
            raise UnknownColumn(f"--columns: no column {unknown[0]!r} in this table (it has "
                                f"{', '.join(filled)})")
        # Asked by name, a column no trial of the study has (val_acc without a validation
        # set) would be a column of "–": say so instead.
        empty = [c for c in priority if c not in ("trial", "state", metric)
                 and not _has_values(_cells(c, frame[sources[c]]))]
        if empty:
            raise UnknownColumn(f"--columns: no trial of this study has a value of {empty[0]!r} "
                                f"(its filled columns: {', '.join(filled)})")
        order, hidden = None, []  # the user's order; what they left out they know of
    else:
        priority = filled if show_all else _default(frame, metric, filled)
        rank = {"trial": 0, metric: 1}  # then the rest in the table's order
        priority.sort(key=lambda c: rank.get(c, 2))
        order, hidden = everything, [c for c in filled if c not in priority]
    left = [n for n, values in cells.items() if not all(_numeric(v) for v in values)]
    fitted = _fit(console, title, cells, priority, left, order)
    fitted.hidden = hidden
    return fitted


def _cells(name: str, values: Any) -> list[str]:
    """A column's cells: the curve as the dashboard draws it, bars without numbers."""
    return [bars(v) if name == CURVE else short(v) for v in values]


def _has_values(cells: list[str]) -> bool:
    return any(v not in ("–", "") and set(v) != {"·"} for v in cells)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text in ("–", "")
    return True


def _sources(frame: Any, metric: str) -> dict[str, str]:
    """Column name → the frame's column: the objective is named by its metric, whose final
    value (the same number) is not repeated; internal columns are left out."""
    from lrsweep.report.read import TRIAL_COLUMNS  # pandas: only for commands that read
    internal = {"classes", "param_count", "val_acc_curve", "_missing"}
    names = {"trial": "trial", "state": "state", metric: "value"}
    names.update({p: p for p in parameters(frame, TRIAL_COLUMNS)})
    names.update({c: c for c in frame.columns
                  if c not in internal and c not in names and c not in ("value", metric)})
    return names


def parameters(frame: Any, known: Sequence[str]) -> list[str]:
    """The searched parameters: the frame's columns that are not the reader's own."""
    return [c for c in frame.columns if c not in known and c not in ("param_count", "_missing")]


def _default(frame: Any, metric: str, filled: list[str]) -> list[str]:
    """The metric, the outcome, the parameters that vary over the study, and the seed when
    it varies (two trials of one configuration differ only there)."""
    from lrsweep.report.read import TRIAL_COLUMNS
    varying = [p for p in [*parameters(frame, TRIAL_COLUMNS), "seed"] if p in frame.columns
               and frame[p].astype(str).nunique(dropna=False) > 1]
    # The outcome where the state does not say it: a complete trial that never learned.
    if "outcome" in frame.columns and (frame["outcome"] == "never learned").any():
        varying.append("outcome")
    return [c for c in filled if c in ("trial", "state", metric, *varying)]


def _fit(console: Console, title: str, cells: dict[str, list[str]], priority: list[str],
         left: Sequence[str], order: list[str] | None = None) -> Fitted:
    """Columns in `priority` order while the table, at its natural width, fits the console
    (the first two always: a table needs its rows' names); shown in `order`."""
    kept: list[str] = []
    dropped = []
    for name in priority:
        if len(kept) < 2 or _width(console, _table(title, cells, [*kept, name], left)) \
                <= console.width:
            kept.append(name)
        else:
            dropped.append(name)
    if order is not None:
        kept = [c for c in order if c in kept]
    # As wide as its title where the console allows: a narrow table would wrap it word by word.
    wide = min(cell_len(title), console.width)
    return Fitted(_table(title, cells, kept, left, wide), dropped)


def _table(title: str, cells: dict[str, list[str]], names: list[str],
           left: Sequence[str], min_width: int | None = None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True,
                  min_width=min_width)
    for name in names:
        table.add_column(name, justify="left" if name in left else "right", no_wrap=True)
    for row in zip(*(cells[n] for n in names)):
        table.add_row(*row)
    return table


def _width(console: Console, table: Table) -> int:
    # Measured without the console's limit: a measurement is clamped to the width it is given.
    return Measurement.get(console, console.options.update(max_width=10**6), table).maximum


def not_shown(fitted: Fitted, width: int, *, dropped_how: str, hidden_how: str) -> str | None:
    """One line naming what the table left out and how to see it, kept within `width` by
    cutting the lists short ("+N more"); the hows stay whole (a command in one pastes whole,
    wrapped by the terminal). Where the hows alone take more than `width`, the terminal
    wraps the line anyway: every name is kept."""
    groups = [(head, names, how) for head, names, how in (
        ("no room for", fitted.dropped, dropped_how),
        ("not shown", fitted.hidden, hidden_how)) if names]

    def text(counts: list[int]) -> str:
        return "; ".join(f"{head}: {_names(names, count)}" + (f" ({how})" if how else "")
                         for (head, names, how), count in zip(groups, counts))

    counts = [len(names) for _, names, _ in groups]
    if len(text([0] * len(groups))) > width:
        return text(counts) or None
    while True:
        line = text(counts)
        if len(line) <= width or not any(counts):
            return line or None
        last = max(i for i, count in enumerate(counts) if count)  # the later list goes first
        counts[last] -= 1


def _names(names: list[str], count: int) -> str:
    if count == 0:
        return f"{len(names)} column{'s' if len(names) > 1 else ''}"
    return ", ".join(names[:count]) + (f", +{len(names) - count} more" if count < len(names)
                                       else "")


def metric_of(user_attrs: dict[str, Any]) -> str:
    """A study's metric, from the study file stored with it; "value" for a study lrsweep did
    not make, or whose stored file this version no longer accepts."""
    from lrsweep.search.spec import SpecError, from_stored
    try:
        stored = from_stored(user_attrs, source="stored")
    except SpecError:
        return "value"
    return "value" if stored is None else stored.study.metric


def study_metrics(url: str) -> dict[str, str]:
    import optuna
    from lrsweep.store.storage import open_storage
    summaries = optuna.get_all_study_summaries(open_storage(url, create=False),
                                               include_best_trial=False)
    return {s.study_name: metric_of(s.user_attrs) for s in summaries}


def trials_title(study: str, made: int, shown: int, total: int | None) -> str:
    """The title of `show`'s and `run`'s table: how many trials it shows of those made, and,
    while they differ, the total the study file asks for (`None`: not made by lrsweep)."""
    asked = f" ({total} asked for)" if total is not None and total != made else ""
    return f"{study}: top {shown} of {made} trials{asked}, best first"


def resume_hint(study: str, interrupted: int, command: str) -> str:
    """The line under a table of a study with interrupted trials: how many, and the command
    that continues them."""
    return (f"{study}: {interrupted} interrupted trial{'s' if interrupted > 1 else ''} "
            f"continue{'' if interrupted > 1 else 's'} with {command}")


def bench_storage(record: dict[str, Any]) -> str:
    """The line under the bench table: what the study's bookkeeping costs a trial."""
    store = record["storage"]
    return (f"storage: {store['batched_ms_per_trial']:.1f} ms per trial (ask, record "
            f"{store['epochs']} epochs, tell) batched; {store['per_value_ms_per_trial']:.1f} ms "
            "through Optuna's per-value API")


def bench(record: dict[str, Any]) -> Table:
    from lrsweep import bench as bench_module  # torch: only for the command that trains
    how = "".join(f"; {record[key]}" for key in ("precision", "convolutions", "steps",
                                                   "host_memory") if record.get(key))
    rounds = record.get("repeats", 1)
    how += f"; {rounds} rounds, vs chapter: paired, 95% interval" if rounds > 1 else ""
    # The first epoch (the warm-up) is left out of the timing, unless it is the only one.
    how += "; 1 epoch, so its warm-up is timed (--epochs 2 leaves it out)" if record.get(
        "epochs") == 1 else ""
    table = Table(title=f"lrsweep bench — {record['hardware']}, {record['images_per_epoch']} "
                        f"training + {record['test_images']} test images per epoch{how}")
    for col in ("configuration", "s / epoch", "trial-epochs / s", "vs chapter", "peak MiB"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for row in bench_module.table(record):
        table.add_row(*row)
    return table
