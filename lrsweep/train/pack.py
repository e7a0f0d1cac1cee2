"""A pack: K trials training in lockstep as one network, and its training step.

Each trial keeps its own initial weights and data order (from its seed), its own rate and a
mask: a stopped trial (pruned, diverged, finished) has its rate set to 0 and its weights
zeroed, and the others carry on undisturbed. LeNets are fused into one network
(`model.PackedLeNet`), other models run side by side (`model.LoopedPack`). `Pack.step` is one
optimizer step of the whole pack from a batch, the rates and the mask: forward, per-trial
mean losses, backward, per-trial update, with nothing read back to the host.

    >>> from lrsweep import schedules
    >>> from lrsweep.train import data
    >>> from lrsweep.train.trials import TrialConfig
    >>> splits = data.load("cpu", subset=512)                               # doctest: +SKIP
    >>> pack = Pack([TrialConfig(schedules.build("constant", base_lr=0.1))], splits)  # doctest: +SKIP
    >>> rates, orders = pack.epoch_plan(0)                                  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch.nn import functional as F

from lrsweep.train import sgld
from lrsweep.train.data import Splits
from lrsweep.train.model import LoopedPack, PackedLeNet, lenet
from lrsweep.train.trials import AVERAGING, Resume, TrialConfig

NUM_CLASSES = 10


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)  # the last, partial batch is kept, as the chapter's


class Pack:
    """K trials' networks as one, their masks, their noise (SGLD) and their step."""

    def __init__(self, configs: Sequence[TrialConfig], splits: Splits,
                 resume: Sequence[Resume | None] | None = None) -> None:
        first = configs[0]
        self.configs, self.k = list(configs), len(configs)
        self.device = splits.train_x.device
        resume = resume or [None] * self.k
        shape = tuple(splits.train_x.shape[1:])
        nets = [_initial_net(c, r, shape, splits.classes) for c, r in zip(configs, resume)]
        self.fused = first.model == "lenet"
        net = (PackedLeNet(nets) if self.fused else LoopedPack(nets)).to(self.device)
        if self.device.type == "cpu":
            # Measured on the 2-core CPU: channels_last is 1.5–2× faster for packs.
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.params = list(net.parameters())
        # Trials with one seed see the same batches: one shared input serves the whole pack.
        self.shared = len({c.seed for c in configs}) == 1
        self.n_train = len(splits.train_y)
        self.steps = steps_per_epoch(self.n_train, first.batch_size)
        self.active = [True] * self.k
        self.noise = (sgld.TrialNoise([c.seed for c in configs], self.device)
                      if first.optimizer == "sgld" else None)

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

    def epoch_plan(self, epoch: int) -> tuple[list[list[float]], torch.Tensor]:
        """The epoch's rates, one row a step (host floats), and the data orders on the device:
        one row shared by the pack, or one a trial."""
        rates = _rates(self.configs, epoch, self.steps)
        orders = torch.stack([_order(c.seed, epoch, self.n_train)
                              for c in self.configs[:1 if self.shared else self.k]])
        return rates, orders.to(self.device)

    def batches(self, splits: Splits, orders: torch.Tensor) -> Iterator[tuple[torch.Tensor,
                                                                             torch.Tensor]]:
        batch = self.configs[0].batch_size
        for step in range(self.steps):
            yield _batch(splits, orders[:, step * batch:(step + 1) * batch], self.k,
                         self.device, self.fused)

    def step(self, x: torch.Tensor, y: torch.Tensor, rates: torch.Tensor, keep: torch.Tensor,
             host_rates: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step for every trial, with rates (K, on the device, 0 for stopped
        trials) and keep (K booleans: whose loss counts). Returns the per-trial mean losses
        before the step and the counts of correct predictions, on the device. The loss is the
        sum of the per-trial means, so each trial's gradient is its solo gradient. A looped
        pack's update takes `host_rates` (that step's rates as floats) instead."""
        logits = self.net(x)                                                 # (K, B, 10)
        losses = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)
        for p in self.params:
            p.grad = None
        torch.where(keep, losses, 0.0).sum().backward()
        first = self.configs[0]
        if first.optimizer in AVERAGING:
            sgld.sgld_step(self.params, rates * (2.0 / self.n_train), self.k,
                           n_data=self.n_train, prior_precision=first.prior_precision,
                           noise=self.noise)
        elif self.fused:
            _sgd_step(self.params, rates, self.k)
        else:
            _looped_sgd_step(self.net, host_rates, self.active)
        return losses.detach(), (logits.detach().argmax(2) == y).sum(1)


# --- helpers -------------------------------------------------------------------------------

def _initial_net(config: TrialConfig, resume: Resume | None, shape: tuple[int, ...],
                 classes: int) -> torch.nn.Module:
    if config.model == "resnet18":
        from lrsweep.train.resnet import resnet18  # torchvision: only for studies that use it
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
