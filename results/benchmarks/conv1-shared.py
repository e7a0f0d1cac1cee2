"""A shared batch's first convolution on the CPU: which formulation is fastest, and which gives
the bits of the grouped one that a pack of trials with their own data orders runs?

Trials that share a seed share one batch, and each must get the bits it would get beside
trials of other seeds (batch invariance). Part 1 times the first convolution's formulations,
forward and weight gradient apart, at batch 256, and says whether each gives the grouped
convolution's bits:

  grouped   the images copied to K channels, one grouped convolution (what own orders run)
  dense     one convolution of the single channel to 6·K channels, the images as PyTorch
            takes a one-channel tensor (NCHW)
  dense-cl  the same with explicit channels-last strides (`lrsweep/train/shared_batch.dense`)
  loop      K convolutions of the single channel to 6 channels each
  bmm       (weight gradient only) the output gradient as (K, 6, B·784) times one copy of the
            image patches (B·784, 32), as `lrsweep/train/patches.py` computes it

Part 2 times a PackedLeNet on shared batches as the engine runs it (`shared_batch`: dense-cl
forward, grouped weight gradient, where this CPU's dense-cl forward gives the grouped bits)
against the copy and the grouped convolution throughout, in alternating rounds: forward and
backward over 40 batches of 256 (a training epoch of 10,240 images, no update), and an
evaluation's forward over 10,000 images in passes of 256.

    .venv/bin/python results/benchmarks/conv1-shared.py [K ...]     (default 2 4 8)
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from unittest import mock

import torch
from torch.nn import functional as F

from lrsweep.train import shared_batch
from lrsweep.train.evaluate import CPU_PASS_IMAGES
from lrsweep.train.model import PackedLeNet, lenet
from lrsweep.train.shared_batch import weight_gradients

B = 256
CHANNELS = 6
CHANNELS_LAST = torch.channels_last


def median_ms(fn: Callable[[], object], repeats: int = 30, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def formulations(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    x = torch.rand(B, 1, 28, 28, generator=gen)
    w = (torch.rand(CHANNELS * k, 1, 5, 5, generator=gen) - 0.5).contiguous(
        memory_format=CHANNELS_LAST)
    b = torch.rand(CHANNELS * k, generator=gen) - 0.5
    g = (torch.rand(B, CHANNELS * k, 28, 28, generator=gen) - 0.5).contiguous(
        memory_format=CHANNELS_LAST)

    def trial(t: torch.Tensor, i: int) -> torch.Tensor:
        return t[CHANNELS * i:CHANNELS * (i + 1)]

    def bmm_weight_grad() -> tuple[torch.Tensor, torch.Tensor]:
        cols = F.pad(x, (2, 2, 2, 2)).unfold(2, 5, 1).unfold(3, 5, 1).reshape(B * 784, 25)
        cols = F.pad(cols, (0, 7))                       # 32 wide, as patches.py pads them
        grad = g.permute(0, 2, 3, 1).reshape(B * 784, k, CHANNELS).permute(1, 2, 0)
        dw = torch.bmm(grad, cols.expand(k, -1, -1))[:, :, :25]
        return dw.reshape(CHANNELS * k, 1, 5, 5), g.sum((0, 2, 3))

    forwards = {
        "grouped": lambda: shared_batch.grouped(x, w, b, k),
        "dense": lambda: F.conv2d(x, w, b, padding=2),
        "dense-cl": lambda: shared_batch.dense(x, w, b),
        "loop": lambda: torch.cat([F.conv2d(x, trial(w, i), trial(b, i), padding=2)
                                   for i in range(k)], 1),
    }
    backwards = {
        "grouped": lambda: weight_gradients(g, shared_batch.copies(x, k), w, k),
        "dense": lambda: weight_gradients(g, x, w, 1),
        "dense-cl": lambda: weight_gradients(g, shared_batch.channels_last(x), w, 1),
        "loop": lambda: tuple(torch.cat(parts) for parts in zip(*(
            weight_gradients(g[:, CHANNELS * i:CHANNELS * (i + 1)], x, trial(w, i), 1)
            for i in range(k)))),
        "bmm": bmm_weight_grad,
    }
    reference = forwards["grouped"]()
    for name, fn in forwards.items():
        same = torch.equal(fn(), reference)
        print(f"K={k:<2} forward          {name:<8} {median_ms(fn):7.2f} ms   "
              f"grouped's bits: {same}")
    dw_ref, db_ref = backwards["grouped"]()
    for name, fn in backwards.items():
        dw, db = fn()
        print(f"K={k:<2} weight gradient  {name:<8} {median_ms(fn):7.2f} ms   "
              f"grouped's bits: weights {torch.equal(dw, dw_ref)}, "
              f"bias {torch.equal(db, db_ref)}")


def copying() -> contextlib.AbstractContextManager:
    """The shared batch copied and convolved grouped, as before `shared_batch`."""
    return mock.patch.object(shared_batch, "_dense_keeps_bits", lambda *args: False)


def pack_epochs(k: int, rounds: int = 5) -> None:
    pack = PackedLeNet([lenet(seed) for seed in range(k)]).to(memory_format=CHANNELS_LAST)
    gen = torch.Generator().manual_seed(k)
    batches = [torch.rand(B, 1, 28, 28, generator=gen).contiguous(memory_format=CHANNELS_LAST)
               for _ in range(40)]
    images = torch.rand(10_000, 1, 28, 28, generator=gen)
    passes = [images[i:i + CPU_PASS_IMAGES].contiguous(memory_format=CHANNELS_LAST)
              for i in range(0, len(images), CPU_PASS_IMAGES)]

    def train() -> None:
        for x in batches:
            torch.autograd.grad(pack(x).square().mean(), list(pack.parameters()))

    @torch.no_grad()
    def evaluate() -> None:
        for x in passes:
            pack(x)

    for name, fn in (("training, forward and backward", train), ("evaluation", evaluate)):
        times: dict[str, list[float]] = {"copy": [], "engine": []}
        for _ in range(rounds):
            for path in times:
                with copying() if path == "copy" else contextlib.nullcontext():
                    times[path].append(median_ms(fn, repeats=1, warmup=1) / 1e3)
        copy, engine = (sorted(t)[len(t) // 2] for t in times.values())
        print(f"K={k:<2} {name}: copy and grouped {copy:6.2f} s, as the engine runs it "
              f"{engine:6.2f} s (medians of {rounds} rounds), {copy / engine:.2f}×")
    print(f"     the dense-cl forward gives the grouped bits here: "
          f"{shared_batch._dense_keeps_bits(batches[0], pack.conv1_w, pack.conv1_b, k)}")


if __name__ == "__main__":
    print(f"# cpu, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{torch.backends.cpu.get_cpu_capability()}; batch {B}, channels-last weights; "
          f"part 1 medians of 30 calls after 5")
    packs = [int(a) for a in sys.argv[1:]] or [2, 4, 8]
    for k in packs:
        formulations(k)
    for k in packs:
        pack_epochs(k)
