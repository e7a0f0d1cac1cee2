"""Train packs of trials of the chapter's LeNet on data resident on the device.

Knows nothing of Optuna: it takes trial configs and a callback, and returns results.
K trials train together as one network (`model.PackedLeNet`), each with its own initial
weights, data order and learning rate; a single trial is a pack of one, so there is one
training code path. Batches are index slices of a device-side permutation (no DataLoader)
and the epoch's sums stay on the device until the epoch ends: no host sync per step.

    >>> from lrsweep import data, engine, schedules
    >>> cfgs = [engine.TrialConfig(schedules.build("sqrt", base_lr=lr), seed=0, epochs=2)
    ...         for lr in (0.1, 0.3)]
    >>> results = engine.train_pack(cfgs, data.load("cpu", subset=1000))   # doctest: +SKIP
    >>> [r.epochs[-1].val_acc for r in results]                           # doctest: +SKIP
"""

from __future__ import annotations

import functools
import math
import os
import platform
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence

import torch
from torch.nn import functional as F

from . import sgld
from .chance import chance_levels
from .data import Splits
from .model import CONV1_CHANNELS, LoopedPack, PackedLeNet, lenet, unpack
from .schedules import Schedule

# Bytes of the widest activation of one evaluation forward pass, which bounds its memory:
# in LeNet images, its first convolution's channels of 28 × 28 float32 each. On the CPU, 1000 images at K = 1 was
# fastest (whole-set passes were 7× slower); a ResNet-18 image at 28 px weighs about ten.
LENET_IMAGE_BYTES = CONV1_CHANNELS * 28 * 28 * 4
EVAL_BUDGET = {"cpu": 1_000 * LENET_IMAGE_BYTES, "cuda": 32_768 * LENET_IMAGE_BYTES}


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

    @property
    def pack_key(self) -> tuple:
        """What the trials of one pack must share."""
        return (self.epochs, self.batch_size, self.unit, self.model, self.optimizer,
                self.prior_precision, self.burn_in, self.thin)


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


@dataclass
class TrialResult:
    config: TrialConfig
    epochs: list[EpochMetrics] = field(default_factory=list)
    status: Literal["complete", "pruned", "diverged"] = "complete"
    diverged: Literal["nonfinite", "collapsed"] | None = None
    state_dict: dict[str, torch.Tensor] | None = None  # loads into model.lenet() (or resnet18)
    device: str = "cpu"
    pack_size: int = 1


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


@dataclass(frozen=True)
class PackState:
    """A whole pack after an epoch, for its checkpoint: members that resume together continue
    exactly as they would have. The members still training keep their weights in `weights`
    (the pack's own tensors, `model.unpack`), those that stopped in their Resume."""

    layout: str                       # the pack's LAYOUT, for `model.unpack`
    weights: dict[str, torch.Tensor]  # its pack_state(); empty once every member stopped
    members: list[Resume]

    def resumes(self) -> list[Resume]:
        """Each member's Resume with its own state_dict, to resume from."""
        return [m if m.state_dict is not None else
                replace(m, state_dict=unpack(self.layout, self.weights, k))
                for k, m in enumerate(self.members)]


# on_states(pack state) is given the whole pack's state after each epoch.
StateCallback = Callable[[PackState], None]
# on_epoch({k: metrics}) is told each epoch's metrics of the pack members still training, and
# returns the members to stop (pruning).
EpochCallback = Callable[[dict[int, EpochMetrics]], Iterable[int]]


class DeviceError(ValueError):
    """The asked device does not exist here."""


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` is CUDA when present, else the CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but this PyTorch sees no CUDA device")
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        # Checked here: torch itself fails only at the first tensor, with a CUDA error.
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        within = ("" if visible is None else f" (CUDA_VISIBLE_DEVICES={visible}: cuda:0 is the "
                  "first of those)")
        raise DeviceError(f"device {name!r} asked for, but this process sees {count} CUDA "
                          f"device(s), cuda:0 to cuda:{count - 1}{within}")
    return device


@functools.lru_cache(maxsize=None)
def describe_device(device: torch.device) -> str:
    """For records and reports: "cuda:0 (NVIDIA H100 …, CUDA 12.8)" or "cpu (AMD EPYC …, 2 threads)"."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"cpu ({model}, {threads} thread{'s' if threads != 1 else ''})"


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)  # the last, partial batch is kept, as the chapter's


def train(config: TrialConfig, splits: Splits, *,
          on_epoch: Callable[[EpochMetrics], bool] | None = None) -> TrialResult:
    """Train one trial: a pack of one."""
    def callback(metrics: dict[int, EpochMetrics]) -> list[int]:
        return [] if on_epoch is None or on_epoch(metrics[0]) else [0]
    return train_pack([config], splits, on_epoch=callback)[0]


def train_pack(configs: Sequence[TrialConfig], splits: Splits, *,
               on_epoch: EpochCallback | None = None, on_states: StateCallback | None = None,
               resume: Sequence[Resume | None] | None = None) -> list[TrialResult]:
    """Train K trials together: LeNets as one fused network, other models as a looped pack.
    The loss is the sum of the per-trial mean losses, so each trial's gradient is its solo
    gradient; a pruned or diverged trial is masked out
    (its rate set to 0, its weights zeroed) and the others carry on undisturbed.
    `resume` continues trials from their checkpoints; a pack's trials resume at one epoch."""
    first = configs[0]
    if any(c.pack_key != first.pack_key for c in configs):
        raise ValueError("a pack's trials must share epochs, batch_size, unit, model and "
                         "optimizer settings")
    if first.optimizer in AVERAGING and first.model != "lenet":
        raise ValueError("SGLD trials train the packed LeNet only")
    resume = list(resume) if resume is not None else [None] * len(configs)
    # Members that stopped early (pruned, diverged) stay in the pack, masked, as they were.
    starts = {len(r.epochs) if r else 0 for r in resume if r is None or r.status == "complete"}
    if len(starts) > 1:
        raise ValueError("a pack's training trials must resume at the same epoch")
    first_epoch = starts.pop() if starts else first.epochs
    device = splits.train_x.device
    k = len(configs)
    shape, classes = tuple(splits.train_x.shape[1:]), splits.classes
    nets = [_initial_net(c, r, shape, classes) for c, r in zip(configs, resume)]
    fused = first.model == "lenet"
    net = (PackedLeNet(nets) if fused else LoopedPack(nets)).to(device)
    if device.type == "cpu":
        # Measured on the 2-core CPU: channels_last is 1.5–2× faster for packs.
        net = net.to(memory_format=torch.channels_last)
    params = list(net.parameters())
    # Trials with one seed see the same batches: one shared input serves the whole pack.
    shared = len({c.seed for c in configs}) == 1
    n, batch = len(splits.train_y), first.batch_size
    steps = steps_per_epoch(n, batch)
    results = [TrialResult(c, device=str(device), pack_size=k) for c in configs]
    active = [True] * k
    best_train_acc = [0.0] * k
    at_chance, learned = chance_levels(classes)
    for i, r in enumerate(resume):
        if r is None:
            continue
        results[i].epochs = list(r.epochs)
        results[i].status, results[i].diverged = r.status, r.diverged
        best_train_acc[i] = max((m.train_acc for m in r.epochs), default=0.0)
        if r.status != "complete" or first_epoch >= first.epochs:  # it had finished: nothing to do
            results[i].state_dict = r.state_dict
            active[i] = False
            _zero_trial(net, i)
    if not any(active):
        return results
    langevin = first.optimizer in AVERAGING
    if langevin:
        noise = (sgld.TrialNoise([c.seed for c in configs], device)
                 if first.optimizer == "sgld" else None)
        posterior = sgld.PosteriorAverage(k, len(splits.test_y), classes,
                                          burn_in=first.burn_in, thin=first.thin, device=device)
        _restore_sampler(noise, posterior, resume, [c.seed for c in configs])
    for epoch in range(first_epoch, first.epochs):
        start = time.perf_counter()
        rates = _rates(configs, epoch, steps)  # (steps, K), host
        rates_on_device = torch.tensor(rates, dtype=torch.float32).mul_(
            torch.tensor(active, dtype=torch.float32)).to(device)
        orders = torch.stack([_order(c.seed, epoch, n) for c in configs[:1 if shared else k]])
        orders = orders.to(device)
        loss_sum = torch.zeros(k, device=device)
        correct = torch.zeros(k, device=device, dtype=torch.long)
        keep = torch.tensor(active, device=device)
        net.train()  # BatchNorm (ResNet) normalises with batch statistics while training
        for step in range(steps):
            idx = orders[:, step * batch:(step + 1) * batch]
            x, y = _batch(splits, idx, k, device, fused)
            logits = net(x)                                                  # (K, B, 10)
            losses = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)
            for p in params:
                p.grad = None
            torch.where(keep, losses, 0.0).sum().backward()
            if langevin:
                sgld.sgld_step(params, rates_on_device[step] * (2.0 / n), k, n_data=n,
                               prior_precision=first.prior_precision, noise=noise)
            elif fused:
                _sgd_step(params, rates_on_device[step], k)
            else:
                _looped_sgd_step(net, rates[step], active)
            loss_sum += losses.detach() * y.shape[1]
            correct += (logits.detach().argmax(2) == y).sum(1)
        train_loss = (loss_sum / n).tolist()
        train_acc = (correct / n).tolist()
        val_loss, val_acc, _ = _evaluate(net, splits.val_x, splits.val_y, k)
        _, test_acc, probs = _evaluate(net, splits.test_x, splits.test_y, k, keep_probs=True)
        test = _calibration(probs, splits.test_y)
        average = {}
        if langevin:
            posterior.offer(probs)
            averaged, count = posterior.result()
            average = dict(zip(("avg_test_acc", "avg_test_nll", "avg_test_ece"),
                               _calibration(averaged, splits.test_y, accuracy=True)))
            average["samples"] = [count] * k
        seconds = time.perf_counter() - start
        epoch_metrics = {i: EpochMetrics(epoch, rates[0][i], train_loss[i], train_acc[i],
                                         val_loss[i], val_acc[i], test_acc[i], seconds,
                                         test[0][i], test[1][i],
                                         **{key: v[i] for key, v in average.items()})
                         for i in range(k) if active[i]}
        for i, m in epoch_metrics.items():
            results[i].epochs.append(m)
            # The train loss is taken before each step; weights the epoch's last step blew
            # up show only in the evaluation after it (the test NLL is NaN for them).
            if not (math.isfinite(m.train_loss) and math.isfinite(m.test_nll)):
                results[i].status, results[i].diverged = "diverged", "nonfinite"
            elif m.train_acc <= at_chance and best_train_acc[i] >= learned:
                results[i].status, results[i].diverged = "diverged", "collapsed"
            best_train_acc[i] = max(best_train_acc[i], m.train_acc)
        stop = set(on_epoch(epoch_metrics)) if on_epoch else set()
        # The pack's weights copied out once an epoch, when anyone needs them: a GPU makes one
        # copy to the host per packed tensor, not one per trial and layer.
        weights: dict[str, torch.Tensor] | None = None
        for i in epoch_metrics:
            result = results[i]
            if result.status == "complete" and i in stop:
                result.status = "pruned"
            if result.status != "complete" or epoch == first.epochs - 1:
                weights = net.pack_state() if weights is None else weights
                result.state_dict = net.unpack(weights, i)
        if on_states:
            # Members that stopped (now or before: masked, zeroed) hold their weights already.
            training = any(r.state_dict is None for r in results)
            if training and weights is None:
                weights = net.pack_state()
            on_states(PackState(net.LAYOUT, weights if training else {},
                                [Resume(r.state_dict, list(r.epochs), r.status, r.diverged,
                                        _sampler_state(noise, posterior, i) if langevin
                                        else None) for i, r in enumerate(results)]))
        for i in epoch_metrics:
            if results[i].status != "complete":
                active[i] = False
                _zero_trial(net, i)
        if not any(active):
            break
    return results


# --- helpers -------------------------------------------------------------------------------

NUM_CLASSES = 10
AVERAGING = ("sgld", "sgld_without_noise")  # optimizers whose predictions are averaged


def _calibration(probs: torch.Tensor, y: torch.Tensor, *, accuracy: bool = False
                 ) -> list[list[float]]:
    """Per trial: [accuracy,] negative log-likelihood and expected calibration error; NaN for
    a trial whose probabilities are not finite (diverged) or not there yet (no sample)."""
    metrics = ([sgld.accuracy(probs, y)] if accuracy else []) + [sgld.nll(probs, y),
                                                                  sgld.ece(probs, y)]
    finite = torch.isfinite(probs).flatten(1).all(1)
    return [torch.where(finite, m, math.nan).tolist() for m in metrics]


def _sampler_state(noise: sgld.TrialNoise | None, posterior: sgld.PosteriorAverage,
                   i: int) -> dict:
    # A copy: on the CPU .cpu() would alias the running sum, which later epochs change.
    return {"noise": noise.generators[i].get_state() if noise else None,
            "device_type": posterior.total.device.type,
            "total": posterior.total[i].to("cpu", copy=True),
            "count": posterior.count, "opportunities": posterior.opportunities}


def _restore_sampler(noise: sgld.TrialNoise | None, posterior: sgld.PosteriorAverage,
                     resume: Sequence[Resume | None], seeds: Sequence[int]) -> None:
    # A pack resumes at one epoch, so its members share the posterior's sample count.
    for i, r in enumerate(resume):
        if r is None or r.sampler is None:
            continue
        saved_on = r.sampler.get("device_type", posterior.total.device.type)
        if noise is None:
            pass  # the noiseless control: only its share of the average goes on
        elif saved_on == noise.device.type:
            noise.generators[i].set_state(r.sampler["noise"])
        else:
            # CPU and CUDA generators keep different states: the stream cannot go on. The
            # trial goes on with a stream of its own seed and epoch rather than start over.
            epoch = len(r.epochs)
            noise.generators[i].manual_seed(sgld.noise_seed(seeds[i]) + epoch)
            warnings.warn(f"SGLD trial with seed {seeds[i]}: its noise state was saved on "
                          f"{saved_on} and cannot continue on {noise.device.type}; from epoch "
                          f"{epoch + 1} its noise is a new stream (the run is no longer "
                          "bit-identical to an uninterrupted one)", stacklevel=2)
        posterior.total[i] = r.sampler["total"].to(posterior.total.device)
        posterior.count = r.sampler["count"]
        posterior.opportunities = r.sampler["opportunities"]


def _initial_net(config: TrialConfig, resume: Resume | None, shape: tuple[int, ...],
                 classes: int) -> torch.nn.Module:
    if config.model == "resnet18":
        from .resnet import resnet18  # torchvision: imported only by studies that use it
        net = resnet18(config.seed, in_channels=shape[0], num_classes=classes,
                       image_size=shape[-1])
    elif shape != (1, 28, 28) or classes != NUM_CLASSES:
        raise ValueError(f"LeNet takes 1×28×28 images of 10 classes, these are "
                         f"{'×'.join(map(str, shape))} of {classes}: use model = \"resnet18\"")
    else:
        net = lenet(config.seed)
    if resume is not None:
        net.load_state_dict(resume.state_dict)
    return net


def _rates(configs: Sequence[TrialConfig], epoch: int, steps: int) -> list[list[float]]:
    """The rate of every step of the epoch for every trial: rows are steps."""
    if configs[0].unit == "epoch":
        return [[c.schedule(epoch) for c in configs]] * steps
    return [[c.schedule(epoch * steps + s) for c in configs] for s in range(steps)]


def _order(seed: int, epoch: int, n: int) -> torch.Tensor:
    # A stateless function of (seed, epoch): a resumed trial sees the same batches, and trials
    # with the same seed see the same batches (common random numbers across schedules).
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def _batch(splits: Splits, idx: torch.Tensor, k: int, device: torch.device,
           fused: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as (B, C, H, W) when shared; else, for the fused LeNet, (B, K, 28, 28) with
    trial k's in channel k, and for a looped pack (K, B, C, H, W). Labels as (K, B)."""
    if idx.shape[0] == 1:
        x = splits.train_x[idx[0]]
        y = splits.train_y[idx[0]].expand(k, -1)
    else:
        x = splits.train_x[idx]
        x = x.squeeze(2).transpose(0, 1) if fused else x
        y = splits.train_y[idx]
    if device.type == "cpu" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


@torch.no_grad()
def _sgd_step(params: list[torch.Tensor], rates: torch.Tensor, k: int) -> None:
    """p ← p − lr_k · g for each trial k, on every parameter, in one kernel per parameter."""
    for p in params:
        view = p.unflatten(0, (k, -1))
        view.addcmul_(p.grad.unflatten(0, (k, -1)),
                      rates.view([k] + [1] * (view.dim() - 1)), value=-1.0)


@torch.no_grad()
def _looped_sgd_step(net: LoopedPack, rates: list[float], active: list[bool]) -> None:
    """p ← p − lr_i · g for each network of a looped pack; the rates are host floats."""
    for params, rate, on in zip(net.trial_parameters(), rates, active):
        if on:
            torch._foreach_add_(params, [p.grad for p in params], alpha=-rate)


@torch.no_grad()
def _zero_trial(net: PackedLeNet | LoopedPack, i: int) -> None:
    # A masked trial's weights may hold NaN; zeros keep its (ignored) outputs finite.
    if isinstance(net, LoopedPack):
        for p in net.nets[i].parameters():
            p.zero_()
        return
    for p in net.parameters():
        p.unflatten(0, (net.k, -1))[i].zero_()


@torch.no_grad()
def _evaluate(net: PackedLeNet | LoopedPack, x: torch.Tensor, y: torch.Tensor, k: int, *,
              keep_probs: bool = False
              ) -> tuple[list[float], list[float], torch.Tensor | None]:
    """Per-trial mean cross-entropy and accuracy on one shared set (NaN for an empty set),
    and with keep_probs the predicted probabilities (K, n, 10)."""
    if len(y) == 0:
        return [math.nan] * k, [math.nan] * k, None
    net.eval()  # BatchNorm (ResNet) normalises with its running statistics
    budget = EVAL_BUDGET.get(x.device.type, EVAL_BUDGET["cpu"])
    chunk = max(1, budget // net.widest_activation_bytes(tuple(x.shape[1:])))
    loss_sum = torch.zeros(k, device=x.device)
    correct = torch.zeros(k, device=x.device, dtype=torch.long)
    probs = [] if keep_probs else None
    for i in range(0, len(y), chunk):
        xb = x[i:i + chunk]
        if x.device.type == "cpu":
            xb = xb.contiguous(memory_format=torch.channels_last)
        logits = net(xb)                                                     # (K, b, 10)
        yb = y[i:i + chunk].expand(k, -1)
        loss_sum += F.cross_entropy(logits.transpose(1, 2), yb, reduction="none").sum(1)
        correct += (logits.argmax(2) == yb).sum(1)
        if keep_probs:
            probs.append(logits.softmax(2))
    return ((loss_sum / len(y)).tolist(), (correct / len(y)).tolist(),
            torch.cat(probs, 1) if keep_probs else None)
