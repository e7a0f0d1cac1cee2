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
# LeNet images, its first convolution's channels of 28 × 28 float32 each. On the CPU, 1000
# images at K = 1 was fastest (whole-set passes were 7× slower); a ResNet-18 image at 28 px
# weighs about ten.
LENET_IMAGE_BYTES = CONV1_CHANNELS * 28 * 28 * 4
EVAL_BUDGET = {"cpu": 1_000 * LENET_IMAGE_BYTES, "cuda": 32_768 * LENET_IMAGE_BYTES}


@torch.no_grad()
def evaluate(net: PackedLeNet | LoopedPack, x: torch.Tensor, y: torch.Tensor, k: int, *,
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


def calibration(probs: torch.Tensor, y: torch.Tensor, *, accuracy: bool = False
                ) -> list[list[float]]:
    """Per trial: [accuracy,] negative log-likelihood and expected calibration error; NaN for
    a trial whose probabilities are not finite (diverged) or not there yet (no sample)."""
    metrics = ([sgld.accuracy(probs, y)] if accuracy else []) + [sgld.nll(probs, y),
                                                                  sgld.ece(probs, y)]
    finite = torch.isfinite(probs).flatten(1).all(1)
    return [torch.where(finite, m, math.nan).tolist() for m in metrics]
