"""A study file's [[run]] tables: explicit configurations (the chapter's five runs each have
their own rate), each completed with every value its schedule takes."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from lrsweep import names, schedules
from lrsweep.search.spec_checks import (check_required, check_scheduler, check_warmup,
                                        dimension_of, fixed_value)
from lrsweep.search.spec_types import (BOOK_METRICS, GENERIC_DEFAULTS, GENERIC_KEYS, MAX_LABEL,
                                       RUN_KEY, SCHEDULE_KEYS, Choice, Dimension, Fixed, Range,
                                       Run, SpecError, TrainSettings, toml_text)
from lrsweep.search.spec_values import only_keys


def read_runs(tables: Any, space: dict, train: TrainSettings, source: str
          ) -> tuple[tuple[tuple[str, Dimension], ...], tuple[Run, ...]]:
    """`[[run]]` tables: explicit configurations, each with a label, crossed with the seeds of
    [space]. [space] may give values shared by the runs; a run's own values win."""
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise SpecError(f"{source}: run: write the runs as [[run]] tables, one per configuration")
    allowed = [k for k in GENERIC_KEYS + SCHEDULE_KEYS if k != "seed"]
    only_keys(space, allowed + ["seed"], f"{source}: [space] ")
    shared: dict[str, Any] = {}
    for key, raw in space.items():
        if key != "seed":
            shared[key] = fixed_value(key, raw, f"{source}: [space] {key}")
    seed = dimension_of("seed", space.get("seed", 0), f"{source}: [space] seed")
    if isinstance(seed, Range):
        raise SpecError(f"{source}: [space] seed: with [[run]] tables give a value or a list")
    runs = []
    for number, table in enumerate(tables, start=1):
        where = f"{source}: [[run]] #{number}"
        label = table.get("label")
        if not isinstance(label, str) or not label.strip():
            raise SpecError(f"{where} label: a non-empty string is required")
        why = names.problem(label, MAX_LABEL)  # on progress lines and in reports, as names
        if why:
            raise SpecError(f"{where} label: {why}")
        where = f"{source}: [[run]] {label!r}"
        if any(r.label == label.strip() for r in runs):
            raise SpecError(f"{where}: two runs have this label")
        own = {k: v for k, v in table.items() if k not in ("label", "book")}
        if "seed" in own:
            raise SpecError(f"{where} seed: seeds are shared by every run; give them in [space]")
        only_keys(own, allowed, f"{where}: ")
        values = {**shared, **{k: fixed_value(k, raw, f"{where} {k}") for k, raw in own.items()}}
        runs.append(_complete_run(label.strip(), values, own, table.get("book", {}), train,
                                  where))
    if any("model" in dict(run.values) for run in runs):  # the others train [train] model
        order = GENERIC_KEYS + SCHEDULE_KEYS
        filled = ({"model": train.model, **dict(run.values)} for run in runs)
        runs = [replace(run, values=tuple(sorted(values.items(),
                                                 key=lambda kv: order.index(kv[0]))))
                for run, values in zip(runs, filled)]
    for key in shared:  # a shared value that changes nothing is a mistake, not a no-op
        if all(key in table for table in tables):
            raise SpecError(f"{source}: [space] {key}: every [[run]] sets its own {key}, so "
                            "this value is never used")
        if not any(key in dict(run.values) for run in runs):
            raise SpecError(f"{source}: [space] {key}: none of the runs' schedulers takes it")
    dims: dict[str, Dimension] = {"seed": seed}
    keys = {k for run in runs for k, _ in run.values} | {RUN_KEY}
    for key in keys:
        seen = list(dict.fromkeys(run.label if key == RUN_KEY else dict(run.values)[key]
                                  for run in runs if key == RUN_KEY or key in dict(run.values)))
        dims[key] = Fixed(seen[0]) if len(seen) == 1 else Choice(tuple(seen))
    order = (RUN_KEY,) + GENERIC_KEYS + SCHEDULE_KEYS
    return tuple(sorted(dims.items(), key=lambda kv: order.index(kv[0]))), tuple(runs)


def _complete_run(label: str, values: dict[str, Any], own: dict[str, Any], book: Any,
                  train: TrainSettings, where: str) -> Run:
    """A run with every value its schedule takes: given, shared, or the default."""
    scheduler = values.get("scheduler")
    if scheduler is None:
        raise SpecError(f"{where} scheduler: required (one of {', '.join(schedules.names())})")
    check_scheduler(scheduler, where)
    kind = schedules.REGISTRY[scheduler]
    for key in own:
        if key in SCHEDULE_KEYS and key not in kind.parameters:
            raise SpecError(f"{where} {key}: scheduler {toml_text(scheduler)} does not take it")
    check_required(scheduler, values, where)
    defaults = {**GENERIC_DEFAULTS, **kind.defaults, "max_update": train.horizon}
    filled = {"scheduler": scheduler}
    for key in tuple(GENERIC_DEFAULTS) + kind.parameters:
        filled[key] = values[key] if key in values else defaults[key]
    if "model" in values:  # else [train] model (filled in by read_runs when another run sets one)
        filled["model"] = values["model"]
    check_warmup({k: Fixed(v) for k, v in filled.items()}, train, where)
    if not isinstance(book, dict):
        raise SpecError(f"{where} book: a table of printed numbers, e.g. {{ test_acc = 0.9 }}")
    printed = []
    for metric, numbers in book.items():
        numbers = numbers if isinstance(numbers, list) else [numbers]
        if metric not in BOOK_METRICS:
            raise SpecError(f"{where} book: unknown metric {metric!r} (one of "
                            f"{', '.join(BOOK_METRICS)})")
        if not numbers or not all(schedules.is_number(n) for n in numbers):
            raise SpecError(f"{where} book {metric}: a number or a list of numbers")
        # An accuracy is a fraction, a loss is not negative: a typo (93 for 0.93) is caught here.
        low, high = (0.0, 1.0) if metric.endswith("_acc") else (0.0, math.inf)
        wrong = [n for n in numbers if not low <= n <= high]
        if wrong:
            bounds = "between 0 and 1" if high == 1.0 else "at least 0"
            raise SpecError(f"{where} book {metric}: {toml_text(wrong[0])} is not {bounds}")
        printed.append((metric, tuple(float(n) for n in numbers)))
    order = GENERIC_KEYS + SCHEDULE_KEYS
    return Run(label, tuple(sorted(filled.items(), key=lambda kv: order.index(kv[0]))),
               tuple(printed))
