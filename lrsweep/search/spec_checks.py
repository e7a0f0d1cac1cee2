"""Every rule a study file's [study], [train] and [space] tables must follow, each broken
rule a SpecError of one line naming the file, the key and the problem."""

from __future__ import annotations

import difflib
import json
import math
from typing import Any

from lrsweep import names as study_names
from lrsweep import schedules
from lrsweep.search.spec_types import (FASHION_MNIST_TEST, FASHION_MNIST_TRAIN, GENERIC_KEYS,
                                       INTEGER_KEYS, MAX_EPOCHS, MAX_RATE, MAX_SAMPLER_SEED,
                                       MAX_SEED, METRICS, MODELS, OPTIMIZERS, PRECISIONS,
                                       PRUNERS, RATE_KEYS, SAMPLERS, SCHEDULE_KEYS, UNITS,
                                       Choice, Dimension, Fixed, Range, SpecError,
                                       StudySettings, StudySpec, TrainSettings,
                                       toml_text)
from lrsweep.search.spec_values import one_of, only_keys, whole


def read_study(table: dict, train: TrainSettings, source: str) -> StudySettings:
    where = f"{source}: [study]"
    only_keys(table, [f for f in StudySettings.__dataclass_fields__], f"{where} ")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"{where} name: a non-empty string is required, got {toml_text(name)}")
    settings = StudySettings(name=name.strip(), **{k: v for k, v in table.items() if k != "name"})
    one_of(settings.metric, METRICS, f"{where} metric")
    one_of(settings.sampler, SAMPLERS, f"{where} sampler")
    one_of(settings.pruner, PRUNERS, f"{where} pruner")
    whole(settings.trials, f"{where} trials", minimum=1)
    whole(settings.sampler_seed, f"{where} sampler_seed", minimum=0)
    if not isinstance(settings.description, str):
        raise SpecError(f"{where} description: must be a string")
    if settings.metric.startswith("val_") and train.validation == 0:
        raise SpecError(f"{where} metric = {toml_text(settings.metric)} needs validation "
                        "images, but [train] validation = 0; use train_acc/train_loss or hold "
                        "some out")
    return settings


def read_train(table: dict, source: str) -> TrainSettings:
    where = f"{source}: [train]"
    only_keys(table, [f for f in TrainSettings.__dataclass_fields__], f"{where} ")
    settings = TrainSettings(**table)
    whole(settings.epochs, f"{where} epochs", minimum=1, maximum=MAX_EPOCHS)
    whole(settings.batch_size, f"{where} batch_size", minimum=1)
    whole(settings.validation, f"{where} validation", minimum=0)
    whole(settings.subset, f"{where} subset", minimum=0)
    whole(settings.test_subset, f"{where} test_subset", minimum=0)
    one_of(settings.unit, UNITS, f"{where} unit")
    one_of(settings.precision, PRECISIONS, f"{where} precision")
    whole(settings.burn_in, f"{where} burn_in", minimum=0)
    whole(settings.thin, f"{where} thin", minimum=1)
    if not schedules.is_number(settings.prior_precision) or settings.prior_precision < 0:
        raise SpecError(f"{where} prior_precision: must be a number ≥ 0, got "
                        f"{toml_text(settings.prior_precision)}")
    if settings.burn_in >= settings.epochs:
        raise SpecError(f"{where} burn_in = {settings.burn_in} leaves no epoch to sample in "
                        f"{settings.epochs}")
    one_of(settings.model, MODELS, f"{where} model",
           list_hint="several models are a choice in [space]: model = [...]")
    if not isinstance(settings.dataset, str):
        raise SpecError(f"{where} dataset: a string, \"fashion-mnist\" or "
                        f"\"imagefolder:PATH\", got {toml_text(settings.dataset)}")
    if settings.dataset != "fashion-mnist" and not settings.folder:
        raise SpecError(f"{where} dataset: {toml_text(settings.dataset)} is neither "
                        "\"fashion-mnist\" nor \"imagefolder:PATH\"")
    whole(settings.image_size, f"{where} image_size", minimum=8)
    if settings.folder:
        if settings.unit == "step" and not settings.subset:
            raise SpecError(f"{where} unit = \"step\" with an image folder needs subset (the "
                            "folder's size is not known before it is read)")
        return settings  # the folder's size is checked when it is read
    if settings.validation >= FASHION_MNIST_TRAIN:
        raise SpecError(f"{where} validation = {settings.validation} leaves no training images "
                        f"of the {FASHION_MNIST_TRAIN}")
    for key, most, which in (("subset", FASHION_MNIST_TRAIN - settings.validation,
                              "images left after validation"),
                             ("test_subset", FASHION_MNIST_TEST, "test images")):
        if getattr(settings, key) > most:
            raise SpecError(f"{where} {key} = {getattr(settings, key)} exceeds the {most} {which}")
    return settings


def read_space(table: dict, train: TrainSettings, source: str) -> tuple[tuple[str, Dimension], ...]:
    where = f"{source}: [space]"
    only_keys(table, GENERIC_KEYS + SCHEDULE_KEYS, f"{where} ")
    if "scheduler" not in table:
        raise SpecError(f"{where} scheduler: required (one of {', '.join(schedules.names())})")
    dims: dict[str, Dimension] = {}
    for key, raw in table.items():
        dims[key] = dimension_of(key, raw, f"{where} {key}")
    sched = dims["scheduler"]
    names = sched.values if isinstance(sched, Choice) else (sched.value,)
    for name in names:
        check_scheduler(name, where)
    used = {p for name in names for p in schedules.parameters(name)}
    unused = [key for key in dims if key in SCHEDULE_KEYS and key not in used]
    if unused:  # all at once: narrowing a study to one schedule leaves several
        them = "it" if len(unused) == 1 else "them"
        flags = " ".join(f"--set space.{key}=" for key in unused)
        raise SpecError(f"{where} {', '.join(unused)}: none of the schedulers "
                        f"({', '.join(names)}) takes {them}; remove {them} (on the command line: "
                        f"{flags})")
    for name in names:
        check_required(name, dims, where)
    dims.setdefault("base_lr", Fixed(0.1))
    dims.setdefault("seed", Fixed(0))
    if "max_update" in used:
        dims.setdefault("max_update", Fixed(train.horizon))  # the trial's length
    check_warmup(dims, train, where)
    order = GENERIC_KEYS + SCHEDULE_KEYS
    return tuple(sorted(dims.items(), key=lambda kv: order.index(kv[0])))


def fixed_value(key: str, raw: Any, where: str) -> Any:
    dim = dimension_of(key, raw, where)
    if not isinstance(dim, Fixed):
        raise SpecError(f"{where}: one value here; with [[run]] tables, each configuration is "
                        "a run of its own")
    return dim.value


def dimension_of(key: str, raw: Any, where: str) -> Dimension:
    if isinstance(raw, dict):
        if key in ("scheduler", "milestones", "optimizer", "model"):
            raise SpecError(f"{where}: a range makes no sense here; give a value or a list")
        return _range(key, raw, where)
    if key == "milestones":
        # A flat list of ints is one value; a list of lists is a choice between them.
        if isinstance(raw, list) and raw and all(isinstance(v, list) for v in raw):
            for v in raw:
                check_value(key, v, where)
            values = tuple(json.dumps(sorted(v)) for v in raw)
            if len(set(values)) != len(values):
                raise SpecError(f"{where}: the list repeats a value")
            return Choice(values)
        check_value(key, raw, where)
        return Fixed(json.dumps(sorted(raw)))
    if isinstance(raw, list):
        if not raw:
            raise SpecError(f"{where}: an empty list gives nothing to choose from")
        for v in raw:
            check_value(key, v, where)
        if len(set(raw)) != len(raw):
            raise SpecError(f"{where}: the list repeats a value")
        return Choice(tuple(raw))
    check_value(key, raw, where)
    return Fixed(raw)


def _range(key: str, raw: dict, where: str) -> Range:
    unknown = set(raw) - {"low", "high", "log"}
    if unknown:
        raise SpecError(f"{where}: a range takes low, high and log, not {sorted(unknown)[0]!r}")
    if "low" not in raw or "high" not in raw:
        raise SpecError(f"{where}: a range needs both low and high")
    low, high, log = raw["low"], raw["high"], raw.get("log", False)
    check_value(key, low, f"{where} low")
    check_value(key, high, f"{where} high")
    if not isinstance(log, bool):
        raise SpecError(f"{where} log: must be true or false")
    if not low < high:
        raise SpecError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise SpecError(f"{where}: a log range needs low > 0")
    return Range(low, high, log, integer=key in INTEGER_KEYS)


def check_value(key: str, value: Any, where: str) -> None:
    if key == "scheduler":
        if not isinstance(value, str):
            raise SpecError(f"{where}: a schedule name is a string, got {toml_text(value)}")
        return
    if key in ("optimizer", "model"):
        one_of(value, OPTIMIZERS if key == "optimizer" else MODELS, where)
        return
    if key in INTEGER_KEYS:
        whole(value, where, minimum=1 if key == "max_update" else 0)
        if key == "seed" and value > MAX_SEED:  # the engine derives 64-bit seeds from it
            raise SpecError(f"{where}: a seed is at most {MAX_SEED} (2**32 - 1), got {value}")
        return
    if key == "base_lr":
        if not schedules.is_number(value) or value <= 0:
            raise SpecError(f"{where}: must be a number > 0, got {toml_text(value)}")
        return
    if key == "warmup_begin_lr":  # a warmup may begin at 0
        if not schedules.is_number(value) or value < 0:
            raise SpecError(f"{where}: must be a number ≥ 0, got {toml_text(value)}")
        return
    try:
        schedules.check_parameter(key, value, shown=toml_text)
    except ValueError as exc:
        raise SpecError(f"{where}: {exc}") from None


def check_bounds(spec: StudySpec, *, name: bool = True) -> None:
    """What running a study needs beyond what its file means: a name every store and file
    system takes (`name`: a new study's; a stored one is in the store already), a sampler
    seed that stays in numpy's range, rates float32 holds over the whole trial."""
    if name and study_names.problem(spec.study.name):
        raise SpecError(f"{spec.source}: [study] name: {study_names.problem(spec.study.name)}")
    if spec.study.sampler_seed > MAX_SAMPLER_SEED:
        raise SpecError(f"{spec.source}: [study] sampler_seed: at most {MAX_SAMPLER_SEED} "
                        f"(2**31 - 1), got {spec.study.sampler_seed}")
    tables = ([(f"{spec.source}: [[run]] {run.label!r}", {k: Fixed(v) for k, v in run.values})
               for run in spec.runs] or [(f"{spec.source}: [space]", dict(spec.space))])
    for where, dims in tables:
        for key in (k for k in RATE_KEYS if k in dims and _largest(dims[k]) > MAX_RATE):
            raise SpecError(f"{where} {key}: a rate is at most {MAX_RATE:g} (float32 weights end "
                            f"at 3.4e38), got {_largest(dims[key])!r}")
        _check_growth(dims, spec.train, where)


def _check_growth(dims: dict[str, Dimension], train: TrainSettings, where: str) -> None:
    """A factor or gamma above 1 makes the rate grow: base_lr · factor^(t+1) with t+1 up to the
    trial's horizon, base_lr · gamma^(milestones passed). Both must stay at most MAX_RATE (and
    finite: Python's float power raises OverflowError past 1.8e308)."""
    base = _largest(dims.get("base_lr", Fixed(0.1)))
    if "factor" in dims:
        _bound_growth("factor", _largest(dims["factor"]), train.horizon, base, where,
                      f"by the trial's last {train.unit}")
    if "gamma" in dims and "milestones" in dims:
        lists = dims["milestones"]
        lists = lists.values if isinstance(lists, Choice) else (lists.value,)
        passed = max(sum(1 for m in json.loads(v) if m < train.horizon) for v in lists)
        _bound_growth("gamma", _largest(dims["gamma"]), passed, base, where,
                      f"after {passed} milestone{'s' if passed > 1 else ''}")


def _bound_growth(key: str, value: float, power: int, base: float, where: str,
                  when: str) -> None:
    if value <= 1 or power == 0:
        return
    if math.log(base) + power * math.log(value) > math.log(MAX_RATE):  # logs: no overflow
        # Printed a hair low, so that the number shown is itself accepted.
        limit = math.exp((math.log(MAX_RATE) - math.log(base)) / power) * (1 - 1e-5)
        raise SpecError(f"{where} {key}: {value!r} makes the rate, base_lr · {key}^{power} "
                        f"{when}, exceed {MAX_RATE:g} (float32 weights end at 3.4e38); with "
                        f"base_lr = {base!r}, {key} must be at most {limit:.6g}")


def check_warmup(dims: dict[str, Dimension], train: TrainSettings, where: str) -> None:
    warmup = _largest(dims.get("warmup_steps", Fixed(0)))
    lag = _largest(dims.get("lag", Fixed(0)))
    unit = train.unit + ("" if train.horizon == 1 else "s")  # "1 epoch", "3 epochs"
    if lag >= train.horizon:
        raise SpecError(f"{where} lag: {lag} must be below the trial's {train.horizon} {unit}")
    if warmup >= train.horizon:
        raise SpecError(f"{where} warmup_steps: {warmup} must be below the trial's "
                        f"{train.horizon} {unit}")
    if "max_update" in dims:
        shortest = _smallest(dims["max_update"])
        if shortest <= warmup:
            raise SpecError(f"{where} max_update: {shortest} must exceed warmup_steps ({warmup})")


def check_scheduler(name: Any, where: str) -> None:
    if name not in schedules.REGISTRY:
        close = difflib.get_close_matches(str(name), schedules.names(), n=1)
        hint = (f"; did you mean {toml_text(close[0])}?" if close
                else f" (choose from {', '.join(schedules.names())})")
        raise SpecError(f"{where} scheduler: unknown schedule {toml_text(name)}{hint}")


def check_required(scheduler: str, given, where: str) -> None:
    """Every parameter the schedule requires is given; max_update defaults to the trial's
    length."""
    for param in schedules.REGISTRY[scheduler].required:
        if param not in given and param != "max_update":
            raise SpecError(f"{where} {param}: required by scheduler {toml_text(scheduler)}")


def _largest(dim: Dimension) -> float:
    return dim.value if isinstance(dim, Fixed) else (
        max(dim.values) if isinstance(dim, Choice) else dim.high)


def _smallest(dim: Dimension) -> float:
    return dim.value if isinstance(dim, Fixed) else (
        min(dim.values) if isinstance(dim, Choice) else dim.low)
