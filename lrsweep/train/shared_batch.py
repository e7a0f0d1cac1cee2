"""A batch shared by a whole LeNet pack through its first convolution on the CPU, without
copying it into every trial's channel.

Trials with their own data orders run the first convolution grouped: trial k's images in
channel k, its filters in group k. Trials that share a seed share one batch, and each must get
the bits it would get beside trials of other seeds (batch invariance), so the plain way copies
the batch into K channels and runs that same grouped convolution. On the CPU measured (AVX2),
oneDNN's dense convolution of the one channel to 6·K channels, in channels-last memory, gave
each trial the grouped forward's bits, and faster (results/benchmarks/conv1-shared-*.txt), but
not always its weight gradients (K = 4 summed them in another order). So the forward runs
dense and the backward grouped, over a copy made only then.

That the dense forward gives the grouped bits is a property of the CPU's kernels, not a
promise: each pack width and batch shape is checked once per process, on probe data, and where
the bits differ the batch is copied and the grouped forward run, as before.

    >>> import torch
    >>> w, b = torch.rand(12, 1, 5, 5), torch.rand(12)
    >>> x = torch.rand(3, 1, 28, 28)
    >>> torch.equal(first_convolution(x, w, b, k=2), grouped(x, w, b, k=2))
    True
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

PADDING = 2  # LeNet's first convolution: 5×5, padded by 2

_KEEPS_BITS: dict[tuple, bool] = {}  # (K, images' shape, threads) -> dense gives grouped bits


def first_convolution(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int
                      ) -> torch.Tensor:
    """The first convolution of a shared batch x (B, 1, H, W) for a pack of k trials (trial
    k's filters in output group k): (B, 6·K, H, W) in channels-last memory, each trial's
    outputs and gradients the bits of the grouped convolution over a copy."""
    if _autocast_on() or not _dense_keeps_bits(x, weight, bias, k):
        # bf16 autocast casts the weights in the forward, and the backward here would need
        # to cast them too: that path stays as it was.
        return grouped(x, weight, bias, k)
    return _DenseForwardGroupedBackward.apply(x, weight, bias, k)


def grouped(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int) -> torch.Tensor:
    """The grouped convolution that trials with their own orders run, over k copies of x."""
    return F.conv2d(copies(x, k), weight, bias, padding=PADDING, groups=k)


def dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """One convolution of x's single channel to all of the weight's channels, in channels-last
    memory."""
    return F.conv2d(channels_last(x), weight, bias, padding=PADDING)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """x (B, 1, H, W) with explicit channels-last strides, the same memory. A tensor with one
    channel is as much NCHW as channels-last, and PyTorch takes such strides for NCHW, where
    oneDNN reorders a convolution's output and sums in another order."""
    _, _, height, width = x.shape
    return x.contiguous().as_strided(x.shape, (height * width, 1, width, 1))


def copies(x: torch.Tensor, k: int) -> torch.Tensor:
    """x (B, 1, H, W) repeated in k channels, channels-last: what a grouped convolution takes."""
    return x.expand(-1, k, -1, -1).contiguous(memory_format=torch.channels_last)


def weight_gradients(grad: torch.Tensor, images: torch.Tensor, weight: torch.Tensor,
                     groups: int, needed: tuple[bool, bool] = (True, True)
                     ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The first convolution's weight and bias gradients (those `needed`; images are not
    differentiated): the call autograd makes for `F.conv2d` with these tensors."""
    _, weight_grad, bias_grad = torch.ops.aten.convolution_backward(
        grad, images, weight, [weight.shape[0]], [1, 1], [PADDING, PADDING], [1, 1], False,
        [0, 0], groups, [False, *needed])
    return weight_grad, bias_grad


def _autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled()


class _DenseForwardGroupedBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                k: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.k = k
        return dense(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:
        # The call autograd makes for the grouped convolution's weight and bias gradients,
        # with the same tensors: the same kernels, the same bits.
        x, weight = ctx.saved_tensors
        weight_grad, bias_grad = weight_gradients(grad, copies(x, ctx.k), weight, ctx.k,
                                                  ctx.needs_input_grad[1:3])
        return None, weight_grad, bias_grad, None


@torch.no_grad()
def _dense_keeps_bits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int
                      ) -> bool:
    """Does the dense forward give the grouped one's bits at this width and batch shape?
    Checked once on probe data of the same shapes and memory layouts (a diverged trial's NaN
    weights would compare unequal to themselves), with the threads the pack runs on."""
    key = (k, tuple(x.shape), torch.get_num_threads())
    if key not in _KEEPS_BITS:
        generator = torch.Generator().manual_seed(0)
        probe_x, probe_w, probe_b = (torch.empty_like(t).uniform_(-1, 1, generator=generator)
                                     for t in (x, weight, bias))
        _KEEPS_BITS[key] = torch.equal(dense(probe_x, probe_w, probe_b),
                                       grouped(probe_x, probe_w, probe_b, k))
    return _KEEPS_BITS[key]
