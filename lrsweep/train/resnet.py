"""ResNet-18 (He et al. 2016) for small or large images, seeded like `model.lenet`.

torchvision's ResNet-18 is built for 224×224 ImageNet photos: a 7×7 stride-2 convolution and
a stride-2 max-pool shrink the input 4× before the first residual block, so a 28×28 image
would reach the last stage at 1×1. For small images (≤ 64 pixels) the stem becomes a 3×3
stride-1 convolution without max-pool, the usual CIFAR adaptation: 28×28 reaches the last
stage at 4×4. Larger images keep the ImageNet stem. Either way the first convolution takes
`in_channels` (1 for Fashion-MNIST) and the state_dict keys are torchvision's.

    >>> import torch
    >>> from lrsweep.train.resnet import resnet18
    >>> resnet18(seed=0)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

SMALL_IMAGE = 64  # at most this many pixels a side: the CIFAR-style stem


def resnet18(seed: int | None = None, *, in_channels: int = 1, num_classes: int = 10,
             image_size: int = 28) -> nn.Module:
    """ResNet-18 with torchvision's initialisation and the stem for `image_size`. With a seed
    the weights depend on it alone (built on the CPU under a forked RNG, as `model.lenet`)."""
    if seed is None:
        return _build(in_channels, num_classes, image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(in_channels, num_classes, image_size)


def _build(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if image_size <= SMALL_IMAGE:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    # torchvision initialises its convolutions so; the replaced stem gets the same.
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return net
