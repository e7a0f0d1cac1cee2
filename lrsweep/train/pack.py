"""A pack: K slots training in lockstep as one network, and its training step.

Each slot holds one trial (or none): its weights, its data order and rate (from its seed and
schedule) and its own epoch counter, so a slot may take a new trial at any epoch boundary
(`load`) while the others carry on. An empty or stopped slot (pruned, diverged, finished) is
masked: its rate is 0 and its weights zeroed. LeNets are fused into one network
(`model.PackedLeNet`), other models run side by side (`model.LoopedPack`). `Pack.step` is one
optimizer step of the whole pack from a batch, the rates and the mask: forward, per-trial
mean losses, backward, per-trial update, with nothing read back to the host.

    >>> from lrsweep import schedules
    >>> from lrsweep.train import data
    >>> from lrsweep.train.trials import TrialConfig
    >>> splits = data.load("cpu", subset=512)                               # doctest: +SKIP
    >>> config = TrialConfig(schedules.build("constant", base_lr=0.1))
    >>> pack = Pack(2, splits, config)                                      # doctest: +SKIP
    >>> pack.load(0, config)                                                # doctest: +SKIP
    >>> rates, orders = pack.epoch_plan()                                   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
from typing import Iterator, Sequence

import torch
from torch.nn import functional as F

from lrsweep.train import device as devices
from lrsweep.train import host_memory, precision, sgld
from lrsweep.train.data import Splits
from lrsweep.train.model import LoopedPack, PackedLeNet, lenet
from lrsweep.train.trials import AVERAGING, Resume, TrialConfig

NUM_CLASSES = 10


def slots(width: int, model: str) -> int:
    """How many slots a pack of `width` trials trains in. Fused LeNets train in an even number,
    an empty slot added where needed: on the CPU a trial's arithmetic is then the same whatever
    its pack (bit for bit, tested). oneDNN gives one slot (groups = 1) another convolution
    kernel, and odd group counts another summation order for the bias gradients
    (results/benchmarks/invariance.py)."""
    return width + (1 if model == "lenet" and width % 2 else 0)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)  # the last, partial batch is kept, as the chapter's


class Pack:
    """`width` slots of trials that share `like.pack_key` (model, optimizer, length, batch),
    as one network, with their masks, epochs, noise (SGLD) and step. Slots start empty."""

    def __init__(self, width: int, splits: Splits, like: TrialConfig) -> None:
        self.width = width
        self.k = slots(width, like.model)
        self.like = like
        self.device = splits.train_x.device
        self.shape = tuple(splits.train_x.shape[1:])
        self.classes = splits.classes
        # Empty slots hold `like`'s configuration and zeroed weights until `load`: one network
        # is built and copied into every slot (a looped pack needs modules of its own).
        self.configs = [like] * self.k
        self.epochs = [0] * self.k
        net0 = _initial_net(like, self.shape, self.classes)
        self.fused = like.model == "lenet"
        net = (PackedLeNet([net0] * self.k, devices.convolutions()) if self.fused else
               LoopedPack([copy.deepcopy(net0) for _ in range(self.k)])).to(self.device)
        if self.device.type == "cpu":
            # Measured on the 2-core CPU: channels_last is 1.5–2× faster for packs.
            net = net.to(memory_format=torch.channels_last)
            host_memory.keep()  # each step's activations in reused memory, not fresh pages
        self.net = net
        self.params = list(net.parameters())
        self.n_train = len(splits.train_y)
        self.steps = steps_per_epoch(self.n_train, like.batch_size)
        self.active = [False] * self.k
        with torch.no_grad():
            for p in self.params:
                p.zero_()
        self.graphs = None  # its steps as CUDA graphs, where the engine sets them up
        self.noise = (sgld.TrialNoise([like.seed] * self.k, self.device)
                      if like.optimizer == "sgld" else None)

    def load(self, i: int, config: TrialConfig, resume: Resume | None = None) -> None:
        """Start `config` in slot i from its initial weights (those a solo run of its seed
        starts from), or continue it from `resume`, at its own epoch."""
        if config.pack_key != self.like.pack_key:
            raise ValueError("a pack's trials must share epochs, batch_size, unit, model and "
                             "optimizer settings")
        state = (resume.state_dict if resume is not None else
                 _initial_net(config, self.shape, self.classes).state_dict())
        self.net.load_trial(i, state)
        self.configs[i] = config
        self.epochs[i] = len(resume.epochs) if resume is not None else 0
        self.active[i] = True
        if self.noise is not None:
            self.noise.generators[i].manual_seed(sgld.noise_seed(config.seed))

    @property
    def parameters(self) -> int:
        """Trainable parameters of one trial's network (every trial of a pack has the same
        model)."""
        if isinstance(self.net, LoopedPack):
            return sum(p.numel() for p in self.net.nets[0].parameters())
        return sum(p.numel() for p in self.params) // self.k

    def stop(self, i: int) -> None:
        """Mask trial i out: rate 0 from now on, and its weights (which may hold NaN) zeroed so
        its ignored outputs stay finite."""
        self.active[i] = False
        _zero_trial(self.net, i)

    def epoch_plan(self) -> tuple[list[list[float]], torch.Tensor]:
        """The next epoch's rates, one row a step (host floats; each slot at its own epoch),
        and the data orders on the device: one row when every training slot has the same
        seed and epoch (one batch gathered for all), else one a slot."""
        rates = _rates(self.configs, self.epochs, self.steps)
        live = [i for i in range(self.k) if self.active[i]] or [0]
        plans = [(self.configs[i].seed, self.epochs[i]) for i in range(self.k)]
        if len({plans[i] for i in live}) == 1:
            return rates, _to_device(_order(*plans[live[0]], self.n_train)[None], self.device)
        # Each distinct order is drawn and sent once, as int32 (a 17-seed pack of 128 sends
        # 17 rows of 4 bytes, not 128 of 8), and spread to the slots on the device. An empty
        # slot's rows are never used: it borrows a training slot's order.
        distinct = list(dict.fromkeys(plans[i] for i in live))
        row = {plan: n for n, plan in enumerate(distinct)}
        orders = _to_device(torch.stack([_order(*plan, self.n_train) for plan in distinct]),
                            self.device)
        rows = torch.tensor([row.get(plan, 0) for plan in plans], device=self.device)
        return rates, orders[rows]

    def advance(self) -> None:
        """An epoch was trained: every training slot's counter moves on."""
        for i in range(self.k):
            self.epochs[i] += self.active[i]

    def batches(self, splits: Splits, orders: torch.Tensor) -> Iterator[tuple[torch.Tensor,
                                                                             torch.Tensor]]:
        batch = self.like.batch_size
        for step in range(self.steps):
            yield _batch(splits, orders[:, step * batch:(step + 1) * batch], self.k,
                         self.device, self.fused)

    def eager_epoch(self, splits: Splits, orders: torch.Tensor, rates: torch.Tensor,
                    keep: torch.Tensor, host_rates: Sequence[Sequence[float]]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every step of one epoch, one `step` after another: the device sums of per-trial
        losses (each step's mean times its images) and of correct predictions, as
        `graphs.GraphedEpoch.epoch` gives them replayed. `rates`: (steps, K) on the device."""
        loss_sum = torch.zeros(self.k, device=self.device)
        correct = torch.zeros(self.k, device=self.device, dtype=torch.long)
        for step, (x, y) in enumerate(self.batches(splits, orders)):
            losses, right = self.step(x, y, rates[step], keep, host_rates[step])
            loss_sum += losses * y.shape[1]
            correct += right
        return loss_sum, correct

    def step(self, x: torch.Tensor, y: torch.Tensor, rates: torch.Tensor, keep: torch.Tensor,
             host_rates: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step for every trial, with rates (K, on the device, 0 for stopped
        trials) and keep (K booleans: whose loss counts). Returns the per-trial mean losses
        before the step and the counts of correct predictions, on the device. The loss is the
        sum of the per-trial means, so each trial's gradient is its solo gradient. A looped
        pack's update takes `host_rates` (that step's rates as floats) instead."""
        like = self.like
        if self.fused and like.optimizer == "sgd":
            return fused_sgd_step(self, x, y, rates, keep)
        with precision.autocast(like.precision, self.device):
            logits = self.net(x)                                             # (K, B, 10)
        losses = _losses(logits, y)
        for p in self.params:
            p.grad = None
        torch.where(keep, losses, 0.0).sum().backward()
        if like.optimizer in AVERAGING:
            sgld.sgld_step(self.params, rates * (2.0 / self.n_train), self.k,
                           n_data=self.n_train, prior_precision=like.prior_precision,
                           noise=self.noise)
        else:
            _looped_sgd_step(self.net, host_rates, self.active)
        return losses.detach(), (logits.detach().argmax(2) == y).sum(1)


def fused_sgd_step(pack: Pack, x: torch.Tensor, y: torch.Tensor, rates: torch.Tensor,
                   keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`Pack.step` for fused LeNets and SGD, as a pure function of device tensors (nothing
    read back, no shapes that change): what a CUDA graph captures (`graphs.GraphedEpoch`), and
    the eager step on every device, so that replay and eager run the same kernels."""
    with precision.autocast(pack.like.precision, pack.device):
        logits = pack.net(x)                                                 # (K, B, 10)
    losses = _losses(logits, y)
    grads = torch.autograd.grad(torch.where(keep, losses, 0.0).sum(), pack.params)
    _sgd_step(pack.params, grads, rates, pack.k)
    return losses.detach(), (logits.detach().argmax(2) == y).sum(1)


def _losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-trial mean cross-entropy, in FP32 whatever the forward's precision."""
    return F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none").mean(1)


# --- helpers -------------------------------------------------------------------------------

def _initial_net(config: TrialConfig, shape: tuple[int, ...], classes: int
                 ) -> torch.nn.Module:
    if config.model == "resnet18":
        from lrsweep.train.resnet import resnet18  # torchvision: only for studies that use it
        net = resnet18(config.seed, in_channels=shape[0], num_classes=classes,
                       image_size=shape[-1])
    elif shape != (1, 28, 28) or classes != NUM_CLASSES:
        raise ValueError(f"LeNet takes 1×28×28 images of 10 classes, these are "
                         f"{'×'.join(map(str, shape))} of {classes}: use model = \"resnet18\"")
    else:
        net = lenet(config.seed)
    return net


def _rates(configs: Sequence[TrialConfig], epochs: Sequence[int], steps: int
           ) -> list[list[float]]:
    """The rate of every step of the next epoch for every slot, each at its own epoch: rows
    are steps."""
    if configs[0].unit == "epoch":
        return [[c.schedule(e) for c, e in zip(configs, epochs)]] * steps
    return [[c.schedule(e * steps + s) for c, e in zip(configs, epochs)] for s in range(steps)]


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


def _to_device(orders: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host permutations on the device as int64 indices. To a GPU they go as int32 from pinned
    memory, without waiting: the copy is queued behind the work already sent."""
    if device.type != "cuda":
        return orders
    return orders.to(torch.int32).pin_memory().to(device, non_blocking=True).long()


@torch.no_grad()
def _sgd_step(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
              rates: torch.Tensor, k: int) -> None:
    """p ← p − lr_k · g for each trial k, on every parameter, in one kernel per parameter."""
    for p, g in zip(params, grads):
        view = p.unflatten(0, (k, -1))
        view.addcmul_(g.unflatten(0, (k, -1)),
                      rates.view([k] + [1] * (view.dim() - 1)), value=-1.0)


@torch.no_grad()
def _looped_sgd_step(net: LoopedPack, rates: Sequence[float], active: list[bool]) -> None:
    """p ← p − lr_i · g for each network of a looped pack; the rates are host floats."""
    for params, rate, on in zip(net.trial_parameters(), rates, active):
        if on:
            torch._foreach_add_(params, [p.grad for p in params], alpha=-rate)


@torch.no_grad()
def _zero_trial(net: PackedLeNet | LoopedPack, i: int) -> None:
    if isinstance(net, LoopedPack):
        for p in net.nets[i].parameters():
            p.zero_()
        return
    for p in net.parameters():
        p.unflatten(0, (net.k, -1))[i].zero_()
