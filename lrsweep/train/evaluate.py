"""Evaluation of a pack on a shared set of images: per-trial loss and accuracy, and for the
test set the predicted probabilities, their negative log-likelihood and calibration error.

    >>> import torch
    >>> probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8]]])          # one trial, two images
    >>> [[round(v, 3) for v in m] for m in calibration(probs, torch.tensor([0, 0]), accuracy=True)]
    [[0.5], [0.857], [0.45]]
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from lrsweep.train import sgld
from lrsweep.train.model import CONV1_CHANNELS, LoopedPack, PackedLeNet

# Bytes of the widest activation of one evaluation forward pass, which bounds its memory: in
# LeNet images, its first convolution's channels of 28 × 28 float32 each; a ResNet-18 image at
# 28 px weighs about ten. On a GPU a pass holds as many images as the budget allows.
LENET_IMAGE_BYTES = CONV1_CHANNELS * 28 * 28 * 4
CUDA_BUDGET = 32_768 * LENET_IMAGE_BYTES
# Passes on a GPU take up to this share of its total memory, at least CUDA_BUDGET: a pack of
# 128 evaluated 256 images a pass within CUDA_BUDGET alone (40 passes of the 10k test set, each
# K small kernels). A pass holds the widest activation, the next one being made from it, and
# the images; the share leaves room for that. Total, not free, memory: the pass size (and with
# it the kernels cuDNN picks) is then the same on every run on the same GPU kind. And no pass
# makes a tensor of 2³¹ elements or more, where some CUDA kernels (max pooling) have failed.
CUDA_TOTAL_SHARE = 0.125
INT32_ELEMENTS = 2**31 - 1
# A looped pack (ResNet-18) on the CPU: one network at a time, within 1000 LeNet images' bytes
# (1000 images at K = 1 was the fastest LeNet pass measured; whole-set passes were 7× slower).
CPU_LOOPED_BUDGET = 1_000 * LENET_IMAGE_BYTES
# On the CPU a fused pack's passes hold a fixed number of images, whatever K: oneDNN's
# convolutions and the batched matmuls may round an image's outputs differently in passes of
# another size, and a trial's test metrics then depended on its pack (the 8th decimal of its
# NLL in a pack of 8). 256 images × K = 8 is 39 MB of activations.
CPU_PASS_IMAGES = 256


@torch.no_grad()
def evaluate(net: PackedLeNet | LoopedPack, x: torch.Tensor, y: torch.Tensor, k: int, *,
             keep_probs: bool = False
             ) -> tuple[list[float], list[float], torch.Tensor | None]:
    """Per-trial mean cross-entropy and accuracy on one shared set (NaN for an empty set),
    and with keep_probs the predicted probabilities (K, n, 10)."""
    if len(y) == 0:
        return [math.nan] * k, [math.nan] * k, None
    net.eval()  # BatchNorm (ResNet) normalises with its running statistics
    chunk = _pass_images(net, x)
    losses = []
    correct = torch.zeros(k, device=x.device, dtype=torch.long)
    probs = [] if keep_probs else None
    for i in range(0, len(y), chunk):
        xb = x[i:i + chunk]
        if x.device.type == "cpu":
            xb = xb.contiguous(memory_format=torch.channels_last)
        logits = net(xb).float()       # (K, b, 10); FP32 also where the forward ran in bf16
        yb = y[i:i + chunk].expand(k, -1)
        losses.append(F.cross_entropy(logits.transpose(1, 2), yb, reduction="none"))
        correct += (logits.argmax(2) == yb).sum(1)
        if keep_probs:
            probs.append(logits.softmax(2))
    # One sum over all the images, row by row of a (K, n) tensor: a row's sum does not depend
    # on how many rows there are, so a trial's loss is the same whatever its pack (and on a
    # GPU, whatever the passes, which hold fewer images in larger packs).
    loss_sum = torch.cat(losses, 1).sum(1)
    return ((loss_sum / len(y)).tolist(), (correct / len(y)).tolist(),
            torch.cat(probs, 1) if keep_probs else None)


def _pass_images(net: PackedLeNet | LoopedPack, x: torch.Tensor) -> int:
    if x.device.type == "cpu" and isinstance(net, PackedLeNet):
        return CPU_PASS_IMAGES
    widest = net.widest_activation_bytes(tuple(x.shape[1:]))
    if x.device.type != "cuda":
        return max(1, CPU_LOOPED_BUDGET // widest)
    total = torch.cuda.get_device_properties(x.device).total_memory
    images = max(CUDA_BUDGET, int(total * CUDA_TOTAL_SHARE)) // widest
    return max(1, min(images, INT32_ELEMENTS * 4 // widest))  # widest: float32 elements × 4


def calibration(probs: torch.Tensor, y: torch.Tensor, *, accuracy: bool = False
                ) -> list[list[float]]:
    """Per trial: [accuracy,] negative log-likelihood and expected calibration error; NaN for
    a trial whose probabilities are not finite (diverged) or not there yet (no sample)."""
    metrics = ([sgld.accuracy(probs, y)] if accuracy else []) + [sgld.nll(probs, y),
                                                                  sgld.ece(probs, y)]
    finite = torch.isfinite(probs).flatten(1).all(1)
    return [torch.where(finite, m, math.nan).tolist() for m in metrics]
