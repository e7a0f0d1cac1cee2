"""Read and validate a study file (`studies/*.toml`) into frozen dataclasses.

A scalar fixes a value, a list is a categorical (a grid axis for the grid sampler), a table
is a range. Every error is a SpecError whose one line names the file, the key and the problem.

    >>> from lrsweep import spec
    >>> s = spec.parse('''
    ... [study]
    ... name = "demo"
    ... [train]
    ... epochs = 5
    ... [space]
    ... scheduler = ["constant", "cosine"]
    ... base_lr = { low = 0.01, high = 1.0, log = true }
    ... ''', source="demo.toml")
    >>> s.study.trials, s.study.sampler, s.dimension("base_lr")
    (20, 'tpe', Range(low=0.01, high=1.0, log=True, integer=False))
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import shlex
import tomllib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence, Union

from . import schedules

FASHION_MNIST_TRAIN = 60_000  # training images before any validation hold-out
METRICS = {"val_acc": "maximize", "val_loss": "minimize",
           "train_acc": "maximize", "train_loss": "minimize"}
SAMPLERS = ("tpe", "random", "grid", "gp", "cmaes")
PRUNERS = ("none", "median", "hyperband")
UNITS = ("epoch", "step")
# Search-space keys every schedule takes; the rest belong to the schedules that use them.
GENERIC_KEYS = ("scheduler", "base_lr", "warmup_steps", "warmup_begin_lr", "lag", "optimizer",
                "model", "seed")
OPTIMIZERS = ("sgd", "sgld", "sgld_without_noise")
# SGLD, and its control without the noise: predictions averaged over epochs after burn_in.
AVERAGING_OPTIMIZERS = ("sgld", "sgld_without_noise")
MODELS = ("lenet", "resnet18")
# Space keys that are no schedule parameter: they go to the trial, not to schedules.build.
NOT_SCHEDULE_KEYS = ("scheduler", "seed", "optimizer", "model", "run")
SCHEDULE_KEYS = tuple(sorted({p for name in schedules.names() for p in schedules.parameters(name)}))
INTEGER_KEYS = ("warmup_steps", "max_update", "seed", "lag")
MAX_SEED = 2**32 - 1
RUN_KEY = "run"  # the label of a [[run]] table, a parameter of each of its trials
BOOK_METRICS = ("train_loss", "train_acc", "test_acc")  # what the chapter prints
GENERIC_DEFAULTS = {"base_lr": 0.1, "warmup_steps": 0, "warmup_begin_lr": 0.0, "lag": 0,
                    "optimizer": "sgd"}


class SpecError(ValueError):
    """A study file that cannot be used; str() is one line naming file, key and problem."""


@dataclass(frozen=True)
class Fixed:
    value: Any


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False
    integer: bool = False


Dimension = Union[Fixed, Choice, Range]


@dataclass(frozen=True)
class Run:
    """One explicit configuration of a `[[run]]` table, every value its schedule takes filled
    in; `book` holds numbers printed elsewhere (the chapter's) to compare the run with."""

    label: str
    values: tuple[tuple[str, Any], ...]
    book: tuple[tuple[str, tuple[float, ...]], ...] = ()

    @property
    def scheduler(self) -> str:
        return dict(self.values)["scheduler"]


@dataclass(frozen=True)
class StudySettings:
    name: str
    metric: str = "val_acc"      # the objective; test accuracy never is
    trials: int = 20             # in total, not "this many more"
    sampler: str = "tpe"
    pruner: str = "none"
    sampler_seed: int = 0        # fixes the sampler's own draws (grid order, TPE start)
    description: str = ""


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 30             # per trial
    batch_size: int = 256        # images per optimizer step
    validation: int = 10_000     # images held out of the 60k training set; 0 = none
    subset: int = 0              # training images used; 0 = all that remain
    test_subset: int = 0         # test images used (stratified, fixed); 0 = all
    unit: str = "epoch"          # what a schedule's t counts: epoch | step
    model: str = "lenet"         # lenet (packed) | resnet18 (exercise 3); [space] model varies it
    dataset: str = "fashion-mnist"  # or "imagefolder:PATH" (ImageNet-style class folders)
    image_size: int = 28         # imagefolder: images resized and cropped to this side
    prior_precision: float = 1.0  # sgld trials: a Gaussian prior N(0, 1/λ) on every weight
    burn_in: int = 0             # sgld trials: epochs before the first posterior sample
    thin: int = 1                # sgld trials: epochs between posterior samples

    @property
    def folder(self) -> str | None:
        """The image folder of an `imagefolder:PATH` dataset; None for Fashion-MNIST."""
        return self.dataset.partition(":")[2] if self.dataset.startswith("imagefolder:") else None

    @property
    def train_images(self) -> int:
        return self.subset or FASHION_MNIST_TRAIN - self.validation

    @property
    def horizon(self) -> int:
        """A trial's length in schedule units: the default max_update."""
        if self.unit == "epoch":
            return self.epochs
        return self.epochs * math.ceil(self.train_images / self.batch_size)


@dataclass(frozen=True)
class StudySpec:
    study: StudySettings
    train: TrainSettings
    space: tuple[tuple[str, Dimension], ...]
    text: str = ""
    source: str = "<string>"
    overrides: tuple[str, ...] = ()   # `--set section.key=value`, applied over the text
    runs: tuple[Run, ...] = ()        # explicit configurations, when the file lists [[run]]s

    def dimension(self, key: str) -> Dimension | None:
        return dict(self.space).get(key)

    @property
    def direction(self) -> str:
        return METRICS[self.study.metric]

    @property
    def schedulers(self) -> tuple[str, ...]:
        return self.values_of("scheduler")

    @property
    def models(self) -> tuple[str, ...]:
        """The models the trials train: [space] model's values, else [train] model."""
        return self.values_of("model", self.train.model)

    def values_of(self, key: str, default: Any = None) -> tuple[Any, ...]:
        """The values a listed or fixed dimension takes; (default,) when the space lacks it."""
        dim = self.dimension(key)
        if dim is None:
            return (default,)
        return dim.values if isinstance(dim, Choice) else (dim.value,)

    def keys_for(self, scheduler: str) -> list[str]:
        """The space keys a trial of this scheduler uses, in suggestion order."""
        used = set(GENERIC_KEYS) | {RUN_KEY} | set(schedules.parameters(scheduler))
        return [k for k, _ in self.space if k in used]

    def grid(self) -> list[dict[str, Any]]:
        """Every distinct grid point: a parameter appears only for the schedulers that use it,
        so a constant-rate trial is not repeated once per decay exponent. Seeds are the
        outermost axis: a study stopped early has every configuration at its first seeds."""
        seed = self.dimension("seed")
        seeds = [{"seed": s} for s in seed.values] if isinstance(seed, Choice) else [{}]
        points: list[dict[str, Any]] = []
        if self.runs:
            for seed_point in seeds:
                for run in self.runs:
                    values = {RUN_KEY: run.label, **dict(run.values)}
                    points.append({**seed_point, **{
                        k: values[k] for k in self.keys_for(run.scheduler)
                        if k != "seed" and isinstance(self.dimension(k), Choice)}})
            return points
        for seed_point in seeds:
            for scheduler in self.schedulers:
                axes = [(k, self.dimension(k)) for k in self.keys_for(scheduler)
                        if k not in ("scheduler", "seed")]
                choices = [(k, d.values) for k, d in axes if isinstance(d, Choice)]
                for combo in itertools.product(*(values for _, values in choices)):
                    point = dict(seed_point)
                    if isinstance(self.dimension("scheduler"), Choice):
                        point["scheduler"] = scheduler
                    point.update(zip((k for k, _ in choices), combo))
                    points.append(point)
        return points

    @property
    def set_options(self) -> str:
        """The overrides as command-line options, to print in a reproduce command."""
        return "".join(f" --set {shlex.quote(o)}" for o in self.overrides)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def canonical(self, *, ignore_trials: bool = False) -> str:
        """The parsed content as JSON: equal for files that differ only in layout or comments."""
        study = replace(self.study, trials=0) if ignore_trials else self.study
        return json.dumps({"study": asdict(study), "train": asdict(self.train),
                           "space": [[k, type(d).__name__, asdict(d)] for k, d in self.space],
                           "runs": [[r.label, r.values] for r in self.runs]},
                          sort_keys=True, default=list)


def load(path: str | Path, overrides: Sequence[str] = ()) -> StudySpec:
    """Read and validate a study file, with `--set section.key=value` overrides."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such study file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot be read ({exc})") from None
    return parse(text, source=str(path), overrides=overrides)


def from_stored(attrs: dict[str, Any], *, source: str) -> StudySpec | None:
    """The spec a study was run with, from its user attributes (None: not made by lrsweep)."""
    if "study_file" not in attrs:
        return None
    return parse(attrs["study_file"], source=source, overrides=attrs.get("study_overrides", ()))


def parse(text: str, *, source: str = "<string>", overrides: Sequence[str] = ()) -> StudySpec:
    """Validate a study file's text; `source` names it in error messages. Each override
    `section.key=value` (a TOML value; a bare word is a string) replaces or adds that key."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: invalid TOML: {exc}") from None
    overrides = tuple(overrides)
    for override in overrides:
        _apply_override(doc, override, source)
    _only_keys(doc, ("study", "train", "space", "run"), f"{source}: ")
    for section in ("study", "train", "space"):
        if not isinstance(doc.get(section, {}), dict):
            raise SpecError(f"{source}: [{section}] must be a table")
    train = _train(doc.get("train", {}), source)
    if "model" in doc.get("train", {}) and "model" in doc.get("space", {}):
        raise SpecError(f"{source}: [space] model: the model is also set in [train]; give it in "
                        "one place ([space] to compare models)")
    runs: tuple[Run, ...] = ()
    if "run" in doc:
        space, runs = _runs(doc["run"], doc.get("space", {}), train, source)
        study_table = doc.setdefault("study", {})
        if study_table.setdefault("sampler", "grid") != "grid":
            raise SpecError(f"{source}: [study] sampler = {study_table['sampler']!r}: [[run]] "
                            "tables list every configuration, so they need sampler = \"grid\"")
    else:
        space = _space(doc.get("space", {}), train, source)
    study = _study(doc.get("study", {}), train, source)
    spec = StudySpec(study, train, space, text, source, overrides, runs)
    averaging = set(spec.values_of("optimizer", "sgd")) & set(AVERAGING_OPTIMIZERS)
    if averaging and spec.models != ("lenet",):
        model = next(m for m in spec.models if m != "lenet")
        who = "SGLD" if averaging == {"sgld"} else "SGLD and sgld_without_noise"
        raise SpecError(f"{source}: [space] optimizer: {who} trials train the packed LeNet "
                        f"only, not model = {model!r}")
    if spec.study.sampler == "grid":
        for key, dim in space:
            if isinstance(dim, Range):
                raise SpecError(f"{source}: [space] {key}: the grid sampler needs a value or a "
                                "list, not a range")
        size = len(spec.grid())
        if "trials" not in doc.get("study", {}):
            spec = replace(spec, study=replace(spec.study, trials=size))
        elif spec.study.trials > size:
            raise SpecError(f"{source}: [study] trials = {spec.study.trials} but the grid has only "
                            f"{size} distinct points")
    return spec


def _apply_override(doc: dict, override: str, source: str) -> None:
    where = f"{source}: --set {override}"
    path, sep, raw = override.partition("=")
    section, dot, key = path.strip().partition(".")
    if not sep or not dot or not key:
        raise SpecError(f"{where}: expected section.key=value, e.g. train.epochs=10")
    if section not in ("study", "train", "space"):
        close = difflib.get_close_matches(section, ["study", "train", "space"], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else " (study, train or space)"
        raise SpecError(f"{where}: unknown section {section!r}{hint}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # `study.name=ex1-cpu`: a bare word is the string it spells
    table = doc.setdefault(section, {})
    if not isinstance(table, dict):
        raise SpecError(f"{where}: [{section}] must be a table")
    table[key.strip()] = value


# --- sections ------------------------------------------------------------------------------

def _study(table: dict, train: TrainSettings, source: str) -> StudySettings:
    where = f"{source}: [study]"
    _only_keys(table, [f for f in StudySettings.__dataclass_fields__], f"{where} ")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"{where} name: a non-empty string is required")
    settings = StudySettings(name=name.strip(), **{k: v for k, v in table.items() if k != "name"})
    _one_of(settings.metric, METRICS, f"{where} metric")
    _one_of(settings.sampler, SAMPLERS, f"{where} sampler")
    _one_of(settings.pruner, PRUNERS, f"{where} pruner")
    _whole(settings.trials, f"{where} trials", minimum=1)
    _whole(settings.sampler_seed, f"{where} sampler_seed", minimum=0)
    if not isinstance(settings.description, str):
        raise SpecError(f"{where} description: must be a string")
    if settings.metric.startswith("val_") and train.validation == 0:
        raise SpecError(f"{where} metric = {settings.metric!r} needs validation images, but "
                        "[train] validation = 0; use train_acc/train_loss or hold some out")
    return settings


def _train(table: dict, source: str) -> TrainSettings:
    where = f"{source}: [train]"
    _only_keys(table, [f for f in TrainSettings.__dataclass_fields__], f"{where} ")
    settings = TrainSettings(**table)
    _whole(settings.epochs, f"{where} epochs", minimum=1)
    _whole(settings.batch_size, f"{where} batch_size", minimum=1)
    _whole(settings.validation, f"{where} validation", minimum=0)
    _whole(settings.subset, f"{where} subset", minimum=0)
    _whole(settings.test_subset, f"{where} test_subset", minimum=0)
    _one_of(settings.unit, UNITS, f"{where} unit")
    _whole(settings.burn_in, f"{where} burn_in", minimum=0)
    _whole(settings.thin, f"{where} thin", minimum=1)
    if not schedules.is_number(settings.prior_precision) or settings.prior_precision < 0:
        raise SpecError(f"{where} prior_precision: must be a number ≥ 0, got "
                        f"{settings.prior_precision!r}")
    if settings.burn_in >= settings.epochs:
        raise SpecError(f"{where} burn_in = {settings.burn_in} leaves no epoch to sample in "
                        f"{settings.epochs}")
    _one_of(settings.model, MODELS, f"{where} model")
    if not isinstance(settings.dataset, str):
        raise SpecError(f"{where} dataset: a string, \"fashion-mnist\" or "
                        f"\"imagefolder:PATH\", got {settings.dataset!r}")
    if settings.dataset != "fashion-mnist" and not settings.folder:
        raise SpecError(f"{where} dataset: {settings.dataset!r} is neither \"fashion-mnist\" "
                        "nor \"imagefolder:PATH\"")
    _whole(settings.image_size, f"{where} image_size", minimum=8)
    if settings.folder:
        if settings.unit == "step" and not settings.subset:
            raise SpecError(f"{where} unit = \"step\" with an image folder needs subset (the "
                            "folder's size is not known before it is read)")
        return settings  # the folder's size is checked when it is read
    if settings.validation >= FASHION_MNIST_TRAIN:
        raise SpecError(f"{where} validation = {settings.validation} leaves no training images "
                        f"of the {FASHION_MNIST_TRAIN}")
    if settings.subset > FASHION_MNIST_TRAIN - settings.validation:
        raise SpecError(f"{where} subset = {settings.subset} exceeds the "
                        f"{FASHION_MNIST_TRAIN - settings.validation} images left after validation")
    return settings


def _space(table: dict, train: TrainSettings, source: str) -> tuple[tuple[str, Dimension], ...]:
    where = f"{source}: [space]"
    _only_keys(table, GENERIC_KEYS + SCHEDULE_KEYS, f"{where} ")
    if "scheduler" not in table:
        raise SpecError(f"{where} scheduler: required (one of {', '.join(schedules.names())})")
    dims: dict[str, Dimension] = {}
    for key, raw in table.items():
        dims[key] = _dimension(key, raw, f"{where} {key}")
    sched = dims["scheduler"]
    names = sched.values if isinstance(sched, Choice) else (sched.value,)
    for name in names:
        _check_scheduler(name, where)
    used = {p for name in names for p in schedules.parameters(name)}
    for key in dims:
        if key in SCHEDULE_KEYS and key not in used:
            raise SpecError(f"{where} {key}: none of the schedulers ({', '.join(names)}) takes it")
    for name in names:
        _check_required(name, dims, where)
    dims.setdefault("base_lr", Fixed(0.1))
    dims.setdefault("seed", Fixed(0))
    if "max_update" in used:
        dims.setdefault("max_update", Fixed(train.horizon))  # the trial's length
    _check_warmup(dims, train, where)
    order = GENERIC_KEYS + SCHEDULE_KEYS
    return tuple(sorted(dims.items(), key=lambda kv: order.index(kv[0])))


def _runs(tables: Any, space: dict, train: TrainSettings, source: str
          ) -> tuple[tuple[tuple[str, Dimension], ...], tuple[Run, ...]]:
    """`[[run]]` tables: explicit configurations, each with a label, crossed with the seeds of
    [space]. [space] may give values shared by the runs; a run's own values win."""
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise SpecError(f"{source}: run: write the runs as [[run]] tables, one per configuration")
    allowed = [k for k in GENERIC_KEYS + SCHEDULE_KEYS if k != "seed"]
    _only_keys(space, allowed + ["seed"], f"{source}: [space] ")
    shared: dict[str, Any] = {}
    for key, raw in space.items():
        if key != "seed":
            shared[key] = _fixed(key, raw, f"{source}: [space] {key}")
    seed = _dimension("seed", space.get("seed", 0), f"{source}: [space] seed")
    if isinstance(seed, Range):
        raise SpecError(f"{source}: [space] seed: with [[run]] tables give a value or a list")
    runs = []
    for number, table in enumerate(tables, start=1):
        where = f"{source}: [[run]] #{number}"
        label = table.get("label")
        if not isinstance(label, str) or not label.strip():
            raise SpecError(f"{where} label: a non-empty string is required")
        where = f"{source}: [[run]] {label!r}"
        if any(r.label == label.strip() for r in runs):
            raise SpecError(f"{where}: two runs have this label")
        own = {k: v for k, v in table.items() if k not in ("label", "book")}
        if "seed" in own:
            raise SpecError(f"{where} seed: seeds are shared by every run; give them in [space]")
        _only_keys(own, allowed, f"{where}: ")
        values = {**shared, **{k: _fixed(k, raw, f"{where} {k}") for k, raw in own.items()}}
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


def _fixed(key: str, raw: Any, where: str) -> Any:
    dim = _dimension(key, raw, where)
    if not isinstance(dim, Fixed):
        raise SpecError(f"{where}: one value here; with [[run]] tables, each configuration is "
                        "a run of its own")
    return dim.value


def _complete_run(label: str, values: dict[str, Any], own: dict[str, Any], book: Any,
                  train: TrainSettings, where: str) -> Run:
    """A run with every value its schedule takes: given, shared, or the default."""
    scheduler = values.get("scheduler")
    if scheduler is None:
        raise SpecError(f"{where} scheduler: required (one of {', '.join(schedules.names())})")
    _check_scheduler(scheduler, where)
    kind = schedules.REGISTRY[scheduler]
    for key in own:
        if key in SCHEDULE_KEYS and key not in kind.parameters:
            raise SpecError(f"{where} {key}: scheduler {scheduler!r} does not take it")
    _check_required(scheduler, values, where)
    defaults = {**GENERIC_DEFAULTS, **kind.defaults, "max_update": train.horizon}
    filled = {"scheduler": scheduler}
    for key in tuple(GENERIC_DEFAULTS) + kind.parameters:
        filled[key] = values[key] if key in values else defaults[key]
    if "model" in values:  # else [train] model (filled in by _runs when another run sets one)
        filled["model"] = values["model"]
    _check_warmup({k: Fixed(v) for k, v in filled.items()}, train, where)
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
        printed.append((metric, tuple(float(n) for n in numbers)))
    order = GENERIC_KEYS + SCHEDULE_KEYS
    return Run(label, tuple(sorted(filled.items(), key=lambda kv: order.index(kv[0]))),
               tuple(printed))


def _dimension(key: str, raw: Any, where: str) -> Dimension:
    if isinstance(raw, dict):
        if key in ("scheduler", "milestones", "optimizer", "model"):
            raise SpecError(f"{where}: a range makes no sense here; give a value or a list")
        return _range(key, raw, where)
    if key == "milestones":
        # A flat list of ints is one value; a list of lists is a choice between them.
        if isinstance(raw, list) and raw and all(isinstance(v, list) for v in raw):
            for v in raw:
                _check_value(key, v, where)
            values = tuple(json.dumps(sorted(v)) for v in raw)
            if len(set(values)) != len(values):
                raise SpecError(f"{where}: the list repeats a value")
            return Choice(values)
        _check_value(key, raw, where)
        return Fixed(json.dumps(sorted(raw)))
    if isinstance(raw, list):
        if not raw:
            raise SpecError(f"{where}: an empty list gives nothing to choose from")
        for v in raw:
            _check_value(key, v, where)
        if len(set(raw)) != len(raw):
            raise SpecError(f"{where}: the list repeats a value")
        return Choice(tuple(raw))
    _check_value(key, raw, where)
    return Fixed(raw)


def _range(key: str, raw: dict, where: str) -> Range:
    unknown = set(raw) - {"low", "high", "log"}
    if unknown:
        raise SpecError(f"{where}: a range takes low, high and log, not {sorted(unknown)[0]!r}")
    if "low" not in raw or "high" not in raw:
        raise SpecError(f"{where}: a range needs both low and high")
    low, high, log = raw["low"], raw["high"], raw.get("log", False)
    _check_value(key, low, f"{where} low")
    _check_value(key, high, f"{where} high")
    if not isinstance(log, bool):
        raise SpecError(f"{where} log: must be true or false")
    if not low < high:
        raise SpecError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise SpecError(f"{where}: a log range needs low > 0")
    return Range(low, high, log, integer=key in INTEGER_KEYS)


def _check_value(key: str, value: Any, where: str) -> None:
    if key == "scheduler":
        if not isinstance(value, str):
            raise SpecError(f"{where}: a schedule name is a string, got {value!r}")
        return
    if key in ("optimizer", "model"):
        _one_of(value, OPTIMIZERS if key == "optimizer" else MODELS, where)
        return
    if key in INTEGER_KEYS:
        _whole(value, where, minimum=1 if key == "max_update" else 0)
        if key == "seed" and value > MAX_SEED:  # the engine derives 64-bit seeds from it
            raise SpecError(f"{where}: a seed is at most {MAX_SEED} (2**32 - 1), got {value}")
        return
    if key == "base_lr":
        if not schedules.is_number(value) or value <= 0:
            raise SpecError(f"{where}: must be a number > 0, got {value!r}")
        return
    if key == "warmup_begin_lr":
        if not schedules.is_number(value) or value < 0:
            raise SpecError(f"{where}: must be a number ≥ 0, got {value!r}")
        return
    try:
        schedules.check_parameter(key, value)
    except ValueError as exc:
        raise SpecError(f"{where}: {exc}") from None


def _check_warmup(dims: dict[str, Dimension], train: TrainSettings, where: str) -> None:
    warmup = _largest(dims.get("warmup_steps", Fixed(0)))
    lag = _largest(dims.get("lag", Fixed(0)))
    if lag >= train.horizon:
        raise SpecError(f"{where} lag: {lag} must be below the trial's {train.horizon} "
                        f"{'epochs' if train.unit == 'epoch' else 'steps'}")
    if warmup >= train.horizon:
        unit = "epochs" if train.unit == "epoch" else "steps"
        raise SpecError(f"{where} warmup_steps: {warmup} must be below the trial's {train.horizon} "
                        f"{unit}")
    if "max_update" in dims:
        shortest = _smallest(dims["max_update"])
        if shortest <= warmup:
            raise SpecError(f"{where} max_update: {shortest} must exceed warmup_steps ({warmup})")


# --- small checks --------------------------------------------------------------------------

def _check_scheduler(name: Any, where: str) -> None:
    if name not in schedules.REGISTRY:
        close = difflib.get_close_matches(str(name), schedules.names(), n=1)
        hint = (f"; did you mean {close[0]!r}?" if close
                else f" (choose from {', '.join(schedules.names())})")
        raise SpecError(f"{where} scheduler: unknown schedule {name!r}{hint}")


def _check_required(scheduler: str, given, where: str) -> None:
    """Every parameter the schedule requires is given; max_update defaults to the trial's
    length."""
    for param in schedules.REGISTRY[scheduler].required:
        if param not in given and param != "max_update":
            raise SpecError(f"{where} {param}: required by scheduler {scheduler!r}")


def _only_keys(table: dict, allowed, where: str) -> None:
    """`where` begins the message: "file.toml: [train] " or "file.toml: [[run]] 'a': "."""
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (allowed: {', '.join(allowed)})"
            raise SpecError(f"{where}unknown key {key!r}{hint}")


def _one_of(value: Any, allowed, where: str) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise SpecError(f"{where}: {value!r} is not one of {', '.join(allowed)}")


def _whole(value: Any, where: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{where}: must be a whole number ≥ {minimum}, got {value!r}")


def _largest(dim: Dimension) -> float:
    if isinstance(dim, Fixed):
        return dim.value
    return max(dim.values) if isinstance(dim, Choice) else dim.high


def _smallest(dim: Dimension) -> float:
    if isinstance(dim, Fixed):
        return dim.value
    return min(dim.values) if isinstance(dim, Choice) else dim.low
