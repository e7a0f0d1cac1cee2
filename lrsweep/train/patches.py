"""A LeNet pack's two convolutions as batched matrix products over image patches: the
"patches" formulation (`LRSWEEP_CONVOLUTIONS=patches`, see `device.convolutions`).

cuDNN runs a pack's grouped convolutions as one small kernel per trial (K = 128: 256 of them a
step forward, more backward; results/benchmarks/epoch-profile.py), and a trial with its own
images sends the first convolution through a depthwise kernel. Here each convolution is one
strided copy that gathers every 5×5 patch (`Tensor.unfold`, a view) and one batched product
over the pack, whatever K: (K, B·784, 25) @ (K, 25, 6), its 25 padded to 32 (below), and
(K, B·100, 150) @ (K, 150, 16). The weights are PackedLeNet's own, seen as matrices, so
checkpoints do not depend on the formulation.

(An earlier attempt built the patches with `F.unfold`, whose CUDA im2col launches a kernel per
image, K·B for each convolution: 17× slower than cuDNN on an H200. `Tensor.unfold` is a view,
and its backward one kernel.)

    >>> import torch
    >>> from lrsweep.train.model import lenet
    >>> net = lenet(seed=0)
    >>> x = torch.rand(3, 1, 28, 28)
    >>> w1, b1, w2, b2 = (p.detach() for p in list(net.parameters())[:4])
    >>> h = convolutions(x, w1, b1, w2, b2, k=1)                      # (K, B, 16·5·5)
    >>> plain = net[:7](x)                                            # conv, pool, conv, pool
    >>> torch.allclose(h[0], plain, atol=1e-5)
    True
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

KERNEL = 5  # both convolutions are 5×5; the first pads by 2, the second not at all
PATCH_WIDTH = 32  # a first-convolution patch's 25 pixels, and zeros to a multiple of 8


def convolutions(x: torch.Tensor, conv1_w: torch.Tensor, conv1_b: torch.Tensor,
                 conv2_w: torch.Tensor, conv2_b: torch.Tensor, k: int) -> torch.Tensor:
    """x: (B, K, H, W), trial k's images in channel k, or (B, 1, H, W) shared by all.
    The conv weights as PackedLeNet holds them (trial k's filters in output group k).
    Returns each trial's pooled second-convolution features, (K, B, 16·5·5) for 28×28 images,
    in the plain LeNet's flattening order (channel, row, column)."""
    # Pool before ReLU, as PackedLeNet does: the same numbers, ReLU on 4× fewer values.
    h = F.relu(F.max_pool2d(first(x, conv1_w, conv1_b, k), 2))      # (K·B, 6, 14, 14)
    h = F.relu(F.max_pool2d(second(h, conv2_w, conv2_b, k), 2))     # (K·B, 16, 5, 5)
    return h.reshape(k, x.shape[0], -1)


def first(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int) -> torch.Tensor:
    """The first convolution (5×5, padding 2) of x (B, K or 1, H, W): (K·B, 6, H, W), trial k's
    images at rows k·B to k·B + B − 1, an NCHW view of NHWC memory."""
    b, _, height, width = x.shape
    channels = weight.shape[0] // k
    cols = _image_patches(x)                                        # (K or 1, B·H·W, 32)
    # The filters padded with zero rows to match: each trial's weight gradient is then a
    # (32, 6) block, 768 bytes, and starts 64-byte aligned. As (25, 6) blocks, 600 bytes, the
    # CPU's batched product summed the odd slots' gradients in another order than the even
    # ones', and a trial's numbers depended on its slot (tested).
    weights = F.pad(weight.reshape(k, channels, KERNEL * KERNEL),
                    (0, PATCH_WIDTH - KERNEL * KERNEL))
    h = torch.baddbmm(bias.view(k, 1, channels), cols.expand(k, -1, -1), weights.transpose(1, 2))
    return h.view(k * b, height, width, channels).permute(0, 3, 1, 2)


def second(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int) -> torch.Tensor:
    """The second convolution (5×5, no padding) of h (K·B, 6, H, W), trial-major as `first`
    gives it: (K·B, 16, H − 4, W − 4), an NCHW view of NHWC memory."""
    rows, c_in, height, width = h.shape
    b, channels = rows // k, weight.shape[0] // k
    out_h, out_w = height - KERNEL + 1, width - KERNEL + 1
    cols = h.unfold(2, KERNEL, 1).unfold(3, KERNEL, 1)              # (K·B, 6, 10, 10, 5, 5)
    cols = cols.reshape(k, b, c_in, out_h, out_w, KERNEL, KERNEL).permute(0, 1, 3, 4, 2, 5, 6)
    cols = cols.reshape(k, b * out_h * out_w, c_in * KERNEL * KERNEL)   # the one copy
    out = torch.baddbmm(bias.view(k, 1, channels), cols,
                        weight.reshape(k, channels, c_in * KERNEL * KERNEL).transpose(1, 2))
    return out.view(rows, out_h, out_w, channels).permute(0, 3, 1, 2)


@torch.no_grad()  # images: nothing to differentiate
def _image_patches(x: torch.Tensor) -> torch.Tensor:
    """Every 5×5 patch of the zero-padded images, one row of PATCH_WIDTH a pixel (its 25
    values, then zeros): (rows, B·H·W, PATCH_WIDTH) from x (B, rows, H, W)."""
    b, rows, height, width = x.shape
    pad = KERNEL // 2
    view = F.pad(x, (pad, pad, pad, pad)).unfold(2, KERNEL, 1).unfold(3, KERNEL, 1)
    cols = x.new_empty(rows, b, height, width, PATCH_WIDTH)
    # Into a (5, 5) view of each row's first 25 values: one copy (flattening the unfolded
    # windows first would copy them once more).
    cols[..., :KERNEL * KERNEL].unflatten(-1, (KERNEL, KERNEL)).copy_(view.transpose(0, 1))
    cols[..., KERNEL * KERNEL:].zero_()
    return cols.view(rows, b * height * width, PATCH_WIDTH)


def widest_bytes_per_image(k: int, image_shape: tuple[int, ...], element_size: int) -> int:
    """The widest tensor one image makes in a pass: the first convolution's patches,
    PATCH_WIDTH values per pixel for every trial (a shared batch's are counted K times too: a
    batched product may copy an expanded operand)."""
    return k * image_shape[-2] * image_shape[-1] * PATCH_WIDTH * element_size
