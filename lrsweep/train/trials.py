"""What the engine takes and gives back: a trial's configuration, its per-epoch metrics, its
result, and the state a trial (or a whole pack) resumes from after an interruption.

    >>> from lrsweep import schedules
    >>> TrialConfig(schedules.build("constant", base_lr=0.3), seed=1, epochs=2).pack_key
    (2, 256, 'epoch', 'lenet', 'sgd', 1.0, 0, 1, 'fp32')
"""

from __future__ import annotations

import math
import numbers
import typing
from dataclasses import dataclass, field, replace
from typing import Callable, Hashable, Iterable, Literal, Sequence

import torch

from lrsweep.schedules import Schedule
from lrsweep.train.model import unpack

# Optimizers whose predictions are averaged over epochs: SGLD and its noiseless control.
AVERAGING = ("sgld", "sgld_without_noise")
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class TrialConfig:
    """What one trial trains: its schedule, its seed (initial weights and data order), length."""

    schedule: Schedule
    seed: int = 0
    epochs: int = 30          # per trial
    batch_size: int = 256     # images per optimizer step
    unit: Literal["epoch", "step"] = "epoch"  # what the schedule's t counts
    model: Literal["lenet", "resnet18"] = "lenet"  # resnet18: exercise 3, trained unfused
    # sgld: SGD plus Gaussian noise (Welling & Teh 2011). The schedule's rate η is SGD's, and
    # the step size is ε = 2η/N, so the drift is SGD's step and the noise has variance ε.
    # sgld_without_noise: its control, the same steps, prior (a weight decay of λ/N) and
    # averaged predictions, without the noise: what SGLD gains by sampling is the difference.
    optimizer: Literal["sgd", "sgld", "sgld_without_noise"] = "sgd"
    prior_precision: float = 1.0  # sgld: a Gaussian prior N(0, 1/λ) on every weight
    burn_in: int = 0              # sgld: epochs before the first posterior sample
    thin: int = 1                 # sgld: epochs between posterior samples
    # The arithmetic (precision.py): IEEE FP32, TF32 tensor cores, or a bf16 autocast forward.
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"

    def __post_init__(self) -> None:
        """A value the engine cannot train is one ValueError naming it, before anything
        trains (a study file's reader says the same in its own words: search.spec_checks)."""
        for name, low in (("epochs", 1), ("batch_size", 1), ("burn_in", 0), ("thin", 1),
                          ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
                raise ValueError(f"TrialConfig {name}: a whole number ≥ {low}, got {value!r}")
        if self.seed > MAX_SEED:  # as a study file's (the engine derives 64-bit seeds from it)
            raise ValueError(f"TrialConfig seed: at most {MAX_SEED} (2**32 - 1), got {self.seed}")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrialConfig {name}: {getattr(self, name)!r} is not one of "
                                 f"{', '.join(allowed)}")

    @property
    def pack_key(self) -> tuple:
        """What the trials of one pack must share."""
        return (self.epochs, self.batch_size, self.unit, self.model, self.optimizer,
                self.prior_precision, self.burn_in, self.thin, self.precision)


# What TrialConfig's named fields may hold: the values of their Literal types.
_CHOICES = {name: typing.get_args(typing.get_type_hints(TrialConfig)[name])
            for name in ("unit", "model", "optimizer", "precision")}


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int            # 0-based
    lr: float             # the rate at the epoch's first step
    train_loss: float     # mean over the epoch's images
    train_acc: float
    val_loss: float       # NaN when no validation images are held out
    val_acc: float
    test_acc: float
    seconds: float        # wall time of the epoch (the whole pack's), evaluation included
    test_nll: float = math.nan      # the weights': mean negative log-likelihood on the test set
    test_ece: float = math.nan      # and expected calibration error (15 bins)
    avg_test_acc: float = math.nan  # sgld: the posterior average's, over the samples so far
    avg_test_nll: float = math.nan
    avg_test_ece: float = math.nan
    samples: int = 0                # sgld: posterior samples averaged so far
    # The trials its pack trained in the epoch, this one included (they share `seconds`); 0 in
    # a checkpoint written before it was kept.
    pack_trials: int = 0


@dataclass
class TrialResult:
    config: TrialConfig
    epochs: list[EpochMetrics] = field(default_factory=list)
    status: Literal["complete", "pruned", "diverged"] = "complete"
    diverged: Literal["nonfinite", "collapsed"] | None = None
    state_dict: dict[str, torch.Tensor] | None = None  # loads into model.lenet() (or resnet18)
    device: str = "cpu"
    pack_size: int = 1
    parameters: int = 0  # trainable parameters of the trial's network (reports show them)
    convolutions: str | None = None  # a fused LeNet pack's formulation; None: a looped pack


@dataclass(frozen=True)
class Resume:
    """Where a trial stopped: its weights after len(epochs) epochs and its curves so far.
    In a `PackState`, the weights of a member still training are the pack's (None here)."""

    state_dict: dict[str, torch.Tensor] | None
    epochs: list[EpochMetrics]
    status: Literal["complete", "pruned", "diverged"] = "complete"
    diverged: Literal["nonfinite", "collapsed"] | None = None
    # sgld: its noise generator's state and its share of the posterior average.
    sampler: dict | None = None
    # Where it trained: its slot and its pack's width (a checkpoint's; None before they were
    # kept). A takeover rebuilds the pack as it was: on a GPU, a trial's rounding depends on
    # its pack's width (results/benchmarks/invariance-gpu-2026-11-30.txt).
    slot: int | None = None
    width: int | None = None


@dataclass(frozen=True)
class Admission:
    """A trial to start in a free slot: the caller's key for it (given back with its metrics
    and result), its configuration, and where it stopped if it is being continued."""

    key: Hashable
    config: TrialConfig
    resume: Resume | None = None


@dataclass(frozen=True)
class PackState:
    """A pack's slot table after an epoch, for its checkpoint: every trial still training, by
    its key, with its slot in `weights` (the pack's own tensors, `model.unpack`) and its
    curves, status and sampler state in `members` (their state_dict None). Trials that left
    their slot are not here: they were handed to `on_finish`."""

    layout: str                       # the pack's LAYOUT, for `model.unpack`
    weights: dict[str, torch.Tensor]  # its pack_state(); empty when no slot is training
    slots: dict[Hashable, int]
    members: dict[Hashable, Resume]
    width: int | None = None          # the pack's slots (None: a checkpoint before it was kept)

    def resumes(self) -> dict[Hashable, Resume]:
        """Each trial's Resume with its own state_dict, slot and pack width, to continue
        from."""
        return {key: replace(m, slot=self.slots.get(key), width=self.width,
                             state_dict=m.state_dict if m.state_dict is not None else
                             unpack(self.layout, self.weights, self.slots[key]))
                for key, m in self.members.items()}


# admit(n) is asked for up to n trials to start in free slots (at the start, and at each epoch
# boundary where slots were freed); it returns them, fewer when it has fewer (none: nothing
# more to train for now).
Admit = Callable[[int], Sequence[Admission]]
# on_epoch({key: metrics}) is told each epoch's metrics of the trials in slots, and returns the
# keys of those to stop (pruning).
EpochCallback = Callable[[dict[Hashable, EpochMetrics]], Iterable[Hashable]]
# on_finish(key, result) is handed a trial that left its slot: complete, pruned or diverged.
FinishCallback = Callable[[Hashable, "TrialResult"], None]
# on_states(pack state) is given the slot table after each epoch.
StateCallback = Callable[[PackState], None]
