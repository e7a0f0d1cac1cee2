"""What a study file means: its settings and search space as frozen dataclasses, and the
names a study file may use (`spec.py` reads one into these)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Union

from lrsweep import schedules

FASHION_MNIST_TRAIN = 60_000  # training images before any validation hold-out
FASHION_MNIST_TEST = 10_000
METRICS = {"val_acc": "maximize", "val_loss": "minimize",
           "train_acc": "maximize", "train_loss": "minimize"}
SAMPLERS = ("tpe", "random", "grid", "gp", "cmaes")
PRUNERS = ("none", "median", "hyperband")
UNITS = ("epoch", "step")
# The arithmetic of training: lrsweep.train.precision.PRECISIONS (that module imports torch).
PRECISIONS = ("fp32", "tf32", "bf16")
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
# A trial's curves hold a value an epoch; 100,000 epochs of the chapter's LeNet on
# Fashion-MNIST would take a GPU months: a larger number is a typing slip.
MAX_EPOCHS = 100_000
# A trial's draws are seeded by sampler_seed and its number (trial_seeds.trial_seed), which
# takes any size; the bound is that of the seeds added to the trials stored before, kept so
# that a study file is valid for every version that ran it.
MAX_SAMPLER_SEED = 2**31 - 1
# A rate multiplies float32 gradients on the device: above float32's largest number (3.4e38)
# torch refuses it (looped packs) or it becomes inf (fused ones), so no rate may exceed this.
MAX_RATE = 1e38
RATE_KEYS = ("base_lr", "warmup_begin_lr", "final_lr", "stop_factor_lr")  # values that are rates
RUN_KEY = "run"  # the label of a [[run]] table, a parameter of each of its trials
# A label's length: twice a study name's (names.MAX_LENGTH), so that `rerun`'s labels ("#N "
# and the configuration, a source run's label included) fit.
MAX_LABEL = 256
# A trial's system attribute: the identity (StudySpec.identity) of the study file it trains
# under, recorded when it takes a slot; and the study's user attributes keeping every file it
# ran under, one a file (so that two runs storing theirs at once both land): "study_file:" +
# identity → {"text": …, "overrides": […]}. Stores from 2026-12-02 before that kept them all
# in one, STUDY_FILES_ATTR, still read. A study continued with --allow-changed holds trials
# of several files.
STUDY_FILE_ATTR = "lrsweep_study_file"
STUDY_FILE_PREFIX = "study_file:"
STUDY_FILES_ATTR = "study_files"
BOOK_METRICS = ("train_loss", "train_acc", "test_acc")  # what the chapter prints
GENERIC_DEFAULTS = {"base_lr": 0.1, "warmup_steps": 0, "warmup_begin_lr": 0.0, "lag": 0,
                    "optimizer": "sgd"}


class SpecError(ValueError):
    """A study file that cannot be used; str() is one line naming file, key and problem."""


def toml_text(value: Any) -> str:
    """`value` as a study file writes it, for messages: `true`, `"fast"`, `[1, 2]`, not
    Python's `True`, `'fast'`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_text(v)}" for k, v in value.items()) + "}"
    return repr(value)


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
    sampler_seed: int = 0        # with a trial's number, seeds its draws (trial_seeds.py)
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
    precision: str = "fp32"      # fp32 | tf32 (TF32 tensor cores) | bf16 (forward autocast)

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
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def identity(self) -> str:
        """The file as written and overridden (its text and its --set overrides), which any
        version of lrsweep reads the same; whether two files train alike is for their parsed
        content to say (`canonical`), read by one version."""
        key = "\n".join([self.text, *self.overrides])
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def trains_like(self, other: "StudySpec") -> bool:
        """Whether `other` is the same study file for training: equal but for comments,
        layout and the total of trials (which may always be raised)."""
        return self.canonical(ignore_trials=True) == other.canonical(ignore_trials=True)

    def training(self) -> str:
        """What a trial's numbers depend on, as JSON: the metric it is told by, [train], the
        space (its fixed values and what is drawn) and the [[run]] tables; not how trials are
        chosen (sampler, its seed, pruner), the description or the total. Trials of two files
        equal in this are trials of one experiment."""
        return self._as_json({"metric": self.study.metric})

    def canonical(self, *, ignore_trials: bool = False) -> str:
        """The parsed content as JSON: equal for files that differ only in layout or comments."""
        study = replace(self.study, trials=0) if ignore_trials else self.study
        return self._as_json(asdict(study))

    def _as_json(self, study: dict) -> str:
        """`study` (all of [study], or the part compared) with [train], the space and the
        [[run]] tables, as JSON: what `canonical` and `training` compare."""
        return json.dumps({"study": study, "train": asdict(self.train),
                           "space": [[k, type(d).__name__, asdict(d)] for k, d in self.space],
                           "runs": [[r.label, r.values] for r in self.runs]},
                          sort_keys=True, default=list)
