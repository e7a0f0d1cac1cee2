"""A shared batch's first convolution on the CPU: the grouped convolution's bits, forward and
backward, whichever path computes them (lrsweep/train/shared_batch.py)."""

from __future__ import annotations

import pytest
import torch

from lrsweep.train import shared_batch

CHANNELS_LAST = torch.channels_last


def inputs(k: int, images: int, seed: int = 0):
    """Images, and a pack's first-convolution weights and bias as PackedLeNet holds them
    (channels-last). Random values: a summation order shows in them, where Fashion-MNIST's
    zero background can hide it."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(images, 1, 28, 28, generator=gen).contiguous(memory_format=CHANNELS_LAST)
    w = (torch.rand(6 * k, 1, 5, 5, generator=gen) - 0.5).contiguous(memory_format=CHANNELS_LAST)
    b = torch.rand(6 * k, generator=gen) - 0.5
    grad = torch.rand(images, 6 * k, 28, 28, generator=gen).contiguous(
        memory_format=CHANNELS_LAST) - 0.5
    return x, w, b, grad


def forward_backward(conv, x, w, b, grad):
    w, b = w.clone().requires_grad_(), b.clone().requires_grad_()
    out = conv(x, w, b)
    out.backward(grad)
    return out.detach(), w.grad, b.grad


# Batch 256, the engine's, and 100, a partial last batch; at 64 oneDNN's NCHW kernel happened
# to give the grouped bits too, at 256 it did not: the dense path must be tested at real sizes.
@pytest.mark.parametrize("images", [256, 100])
@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_a_shared_batch_gets_the_grouped_convolutions_bits(k, images):
    x, w, b, grad = inputs(k, images)
    ours = forward_backward(lambda x, w, b: shared_batch.first_convolution(x, w, b, k),
                            x, w, b, grad)
    grouped = forward_backward(lambda x, w, b: shared_batch.grouped(x, w, b, k), x, w, b, grad)
    for name, a, e in zip(("output", "weight gradient", "bias gradient"), ours, grouped):
        assert torch.equal(a, e), name
    assert ours[0].is_contiguous(memory_format=CHANNELS_LAST)


def test_where_the_dense_forward_gives_other_bits_the_batch_is_copied(monkeypatch):
    # A CPU whose dense kernel summed in another order: the probe sees it, and the grouped
    # convolution runs over a copy, as it did before the dense path.
    monkeypatch.setattr(shared_batch, "_KEEPS_BITS", {})
    dense = shared_batch.dense
    monkeypatch.setattr(shared_batch, "dense", lambda x, w, b: dense(x, w, b) * (1 + 2**-20))
    x, w, b, grad = inputs(4, 256)
    ours = forward_backward(lambda x, w, b: shared_batch.first_convolution(x, w, b, 4),
                            x, w, b, grad)
    grouped = forward_backward(lambda x, w, b: shared_batch.grouped(x, w, b, 4), x, w, b, grad)
    assert all(torch.equal(a, e) for a, e in zip(ours, grouped))
    assert list(shared_batch._KEEPS_BITS.values()) == [False]


@pytest.mark.parametrize("keeps", [True, False], ids=["dense-keeps-bits", "dense-differs"])
def test_the_check_is_made_once_a_shape(monkeypatch, keeps):
    # Whether this CPU's dense kernel keeps the bits is the machine's (an AMD EPYC with AVX-512
    # differed at K = 2 where one with AVX2 did not): both outcomes are made here.
    monkeypatch.setattr(shared_batch, "_KEEPS_BITS", {})
    calls = []
    dense = shared_batch.dense
    if keeps:
        monkeypatch.setattr(shared_batch, "grouped", lambda x, w, b, k: dense(x, w, b))
    perturb = 1.0 if keeps else 1 + 2**-20
    monkeypatch.setattr(shared_batch, "dense",
                        lambda *a: calls.append(1) or dense(*a) * perturb)
    x, w, b, _ = inputs(2, 64)
    with torch.no_grad():
        for _ in range(3):
            shared_batch.first_convolution(x, w, b, 2)
    # the probe, then the 3 passes where the dense forward is taken
    assert len(calls) == 1 + (3 if keeps else 0)
    assert list(shared_batch._KEEPS_BITS.values()) == [keeps]
    with torch.no_grad():
        shared_batch.first_convolution(x[:10], w, b, 2)                 # a new shape: a probe
    assert len(shared_batch._KEEPS_BITS) == 2 and len(calls) == 2 + (4 if keeps else 0)


def test_under_bf16_autocast_the_grouped_convolution_runs():
    x, w, b, grad = inputs(2, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = forward_backward(lambda x, w, b: shared_batch.first_convolution(x, w, b, 2),
                                x, w, b, grad)
        grouped = forward_backward(lambda x, w, b: shared_batch.grouped(x, w, b, 2),
                                   x, w, b, grad)
    assert ours[0].dtype == torch.bfloat16
    assert all(torch.equal(a, e) for a, e in zip(ours, grouped))
