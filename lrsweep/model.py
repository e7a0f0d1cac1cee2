"""The chapter's modernised LeNet (ReLU, max pooling) for 1×28×28 images and 10 classes.

    >>> import torch
    >>> from lrsweep.model import lenet
    >>> lenet(seed=0)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn


def lenet(seed: int | None = None) -> nn.Sequential:
    """The chapter's `net_fn()`, with PyTorch's default initialisation. With a seed the weights
    depend on it alone (built on the CPU under a forked RNG, whatever the device or caller)."""
    if seed is None:
        return _build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build()


def _build() -> nn.Sequential:
    # nn.Sequential with the chapter's layer order, so state_dict keys match its net_fn().
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10))
