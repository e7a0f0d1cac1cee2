"""Which formulation of a LeNet pack's training step is fastest on this device, and which
keeps a trial's arithmetic independent of its company (batch invariance)?

One training step (gather the batch from resident images, forward, per-trial mean losses,
backward, per-trial SGD), batch 256, every trial its own images (the "own orders" path that
every study with several seeds takes), for pack sizes K:

  grouped        today's engine: PackedLeNet, grouped convolutions (cuDNN / oneDNN) and
                 batched matrix products for the linear layers
  gemm           each convolution as unfold + one batched matrix product over the pack,
                 (K, B·784, 25) @ (K, 25, 6) and (K, B·100, 150) @ (K, 150, 16)
  patches        the engine's LRSWEEP_CONVOLUTIONS=patches (lrsweep/train/patches.py): the same
                 products, the patches taken by Tensor.unfold (a strided view, copied once)
                 instead of F.unfold, whose CUDA im2col launches a kernel per image
  patches1, patches2  only the first (second) convolution by patches, the other grouped:
                 which of the two gains
  *+graph        the same step captured once as a CUDA graph and replayed (CUDA only)
  *+benchmark    cudnn.benchmark = True (CUDA only)
  *+tf32         TF32 tensor cores for convolutions and matrix products (CUDA only)
  *+bf16         the forward pass under bf16 autocast (CUDA only)
  *+channels_last  images and convolution weights in channels-last (NHWC) memory

Prints milliseconds per step, trial-steps per second, the training part of a 60k-image epoch
that implies (235 steps; evaluation not included), and "drift": the largest difference between
trial 0's weights after one step in the pack and after the same step in a pack of 2 (the
smallest the engine runs a LeNet in: it adds an empty slot to an odd pack), 0 when its
arithmetic did not depend on the company. Every formulation is first checked against the
plain LeNet on a few images. On the CPU freed memory is kept, as the engine's packs keep it
(lrsweep/train/host_memory.py): otherwise a wide pack's steps time page faults.

    python results/benchmarks/formulations.py [cpu|cuda] [K ...] [-- VARIANT ...]

VARIANT is a formulation and its options joined by "+" (grouped+graph+tf32); the default list
is below (`variants`).
"""

from __future__ import annotations

import functools
import math
import statistics
import sys
import time

import torch
from torch.nn import functional as F

from lrsweep.train import host_memory, patches
from lrsweep.train.model import PackedLeNet, lenet

ARGS, _, CHOSEN = " ".join(sys.argv[1:]).partition("--")
ARGS, CHOSEN = ARGS.split(), CHOSEN.split()
device = torch.device(ARGS[0] if ARGS else "cpu")
PACKS = [int(k) for k in ARGS[1:]] or ([1, 32, 128] if device.type == "cuda" else [2, 4, 8])
OPTIONS: set[str] = set()  # the variant being measured: its options
BATCH, STEPS_PER_EPOCH, TIMED = 256, 235, 30
IMAGES = 60_000 if device.type == "cuda" else 4_000


def sync() -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# --- the two formulations, as pure functions of (parameters, images, labels, rates) --------

def grouped_params(k: int) -> list[torch.Tensor]:
    net = PackedLeNet([lenet(seed) for seed in range(k)]).to(device)
    if "channels_last" in OPTIONS:
        net = net.to(memory_format=torch.channels_last)
    return [p.detach().clone().requires_grad_() for p in net.parameters()]


def grouped_forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x: (K, B, 28, 28) → logits (K, B, 10), as PackedLeNet.forward with own orders."""
    c1w, c1b, c2w, c2b, f1w, f1b, f2w, f2b, f3w, f3b = params
    k = x.shape[0]
    x = x.transpose(0, 1)
    if "channels_last" in OPTIONS:
        x = x.contiguous(memory_format=torch.channels_last)
    h = F.conv2d(x, c1w, c1b, padding=2, groups=k)
    h = F.relu(F.max_pool2d(h, 2))
    h = F.relu(F.max_pool2d(F.conv2d(h, c2w, c2b, groups=k), 2))
    h = h.reshape(h.shape[0], k, 400).transpose(0, 1)
    h = F.relu(torch.baddbmm(f1b, h, f1w))
    h = F.relu(torch.baddbmm(f2b, h, f2w))
    return torch.baddbmm(f3b, h, f3w)


def gemm_params(k: int) -> list[torch.Tensor]:
    """Convolution weights as (K, C·5·5, out) matrices, in unfold's (C, kh, kw) order."""
    nets = [lenet(seed).state_dict() for seed in range(k)]
    def conv(key):
        return torch.stack([s[f"{key}.weight"].flatten(1).t() for s in nets])
    def bias(key):
        return torch.stack([s[f"{key}.bias"] for s in nets]).unsqueeze(1)
    def linear(key):
        return torch.stack([s[f"{key}.weight"].t() for s in nets])
    tensors = [conv(0), bias(0), conv(3), bias(3)]
    for key in (7, 9, 11):
        tensors += [linear(key), bias(key)]
    return [t.contiguous().to(device).requires_grad_() for t in tensors]


def gemm_forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    c1w, c1b, c2w, c2b, f1w, f1b, f2w, f2b, f3w, f3b = params
    k, b = x.shape[:2]
    cols = F.unfold(x.reshape(k * b, 1, 28, 28), 5, padding=2)         # (K·B, 25, 784)
    cols = cols.view(k, b, 25, 784).transpose(2, 3).reshape(k, b * 784, 25)
    h = torch.baddbmm(c1b, cols, c1w)                                   # (K, B·784, 6)
    h = h.view(k * b, 28, 28, 6).permute(0, 3, 1, 2)                    # NCHW view, NHWC memory
    h = F.relu(F.max_pool2d(h, 2))                                      # (K·B, 6, 14, 14)
    cols = F.unfold(h, 5)                                               # (K·B, 150, 100)
    cols = cols.view(k, b, 150, 100).transpose(2, 3).reshape(k, b * 100, 150)
    h = torch.baddbmm(c2b, cols, c2w)                                   # (K, B·100, 16)
    h = h.view(k * b, 10, 10, 16).permute(0, 3, 1, 2)
    h = F.relu(F.max_pool2d(h, 2))                                      # (K·B, 16, 5, 5)
    h = h.reshape(k, b, 400)
    h = F.relu(torch.baddbmm(f1b, h, f1w))
    h = F.relu(torch.baddbmm(f2b, h, f2w))
    return torch.baddbmm(f3b, h, f3w)


def patches_forward(params: list[torch.Tensor], x: torch.Tensor, only: int | None = None
                    ) -> torch.Tensor:
    """The engine's patches formulation (lrsweep.train.patches) on PackedLeNet's parameters;
    with `only` 1 or 2, only that convolution by patches, the other grouped."""
    c1w, c1b, c2w, c2b, f1w, f1b, f2w, f2b, f3w, f3b = params
    k, b = x.shape[:2]
    x = x.transpose(0, 1)                                               # (B, K, 28, 28)
    if "channels_last" in OPTIONS:
        x = x.contiguous(memory_format=torch.channels_last)
    if only == 2:  # grouped first convolution, batch-major → trial-major
        h = F.relu(F.max_pool2d(F.conv2d(x, c1w, c1b, padding=2, groups=k), 2))
        h = h.view(b, k, 6, 14, 14).transpose(0, 1).reshape(k * b, 6, 14, 14)
    else:
        h = F.relu(F.max_pool2d(patches.first(x, c1w, c1b, k), 2))     # (K·B, 6, 14, 14)
    if only == 1:  # trial-major → batch-major, grouped second convolution
        h = h.view(k, b, 6, 14, 14).transpose(0, 1).reshape(b, k * 6, 14, 14)
        h = F.relu(F.max_pool2d(F.conv2d(h, c2w, c2b, groups=k), 2))
        h = h.reshape(b, k, 400).transpose(0, 1)
    else:
        h = F.relu(F.max_pool2d(patches.second(h, c2w, c2b, k), 2)).reshape(k, b, 400)
    h = F.relu(torch.baddbmm(f1b, h, f1w))
    h = F.relu(torch.baddbmm(f2b, h, f2w))
    return torch.baddbmm(f3b, h, f3w)


FORMULATIONS = {"grouped": (grouped_params, grouped_forward),
                "gemm": (gemm_params, gemm_forward),
                "patches": (grouped_params, patches_forward),
                "patches1": (grouped_params, functools.partial(patches_forward, only=1)),
                "patches2": (grouped_params, functools.partial(patches_forward, only=2))}


def make_step(forward, params, images, labels):
    """The whole step as one function of (batch indices, rates): what a CUDA graph captures."""
    k = params[-1].shape[0]  # the last layer's bias, (K, 1, 10) in both layouts

    def step(idx: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
        x, y = images[idx], labels[idx]                                 # (K, B, 28, 28), (K, B)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in OPTIONS):
            logits = forward(params, x)
        losses = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none").mean(1)
        grads = torch.autograd.grad(losses.sum(), params)
        with torch.no_grad():
            for p, g in zip(params, grads):  # as the engine's _sgd_step: any memory format
                view = p.unflatten(0, (k, -1))
                view.addcmul_(g.unflatten(0, (k, -1)), rates.view([k] + [1] * (view.dim() - 1)),
                              value=-1.0)
        return losses.detach()
    return step


# --- measurements ----------------------------------------------------------------------------

def check_against_plain_lenet(images: torch.Tensor) -> None:
    x = images[:2 * 8].view(2, 8, 28, 28)
    for name, (make, forward) in FORMULATIONS.items():
        params = make(2)
        with torch.no_grad():
            got = forward(params, x)
            for k in range(2):
                want = lenet(k).to(device)(x[k].unsqueeze(1))
                err = (got[k] - want).abs().max().item()
                assert err < 1e-4, f"{name}: trial {k} differs from the plain LeNet by {err}"


def time_steps(name: str, k: int, images, labels, graph: bool) -> float:
    make, forward = FORMULATIONS[name]
    params = make(k)
    step = make_step(forward, params, images, labels)
    gen = torch.Generator().manual_seed(0)
    orders = [torch.randint(0, len(labels), (k, BATCH), generator=gen).to(device)
              for _ in range(8)]
    idx = orders[0].clone()
    rates = torch.full((k,), 0.05, device=device)
    run = step  # eager; or, with a graph, its replay
    if graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step(idx, rates)
        torch.cuda.current_stream().wait_stream(side)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            step(idx, rates)

        def replay(new_idx, rates):
            idx.copy_(new_idx)
            cuda_graph.replay()
        run = replay
    for i in range(5):
        run(orders[i % 8], rates)
    sync()
    seconds = []
    for i in range(TIMED):
        start = time.perf_counter()
        run(orders[i % 8], rates)
        sync()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


REFERENCE_PACK = 2  # the engine never runs a LeNet in one slot (Pack pads odd packs)


def drift(name: str, k: int, images, labels) -> float:
    """Trial 0 after one step in a pack of K (its mates: other seeds, other images, other
    rates) against the same trial in a pack of REFERENCE_PACK."""
    make, forward = FORMULATIONS[name]
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, len(labels), (k, BATCH), generator=gen).to(device)
    rates = torch.linspace(0.3, 0.05, k, device=device)
    after = []
    for size in (k, REFERENCE_PACK):
        params = make(size)
        make_step(forward, params, images, labels)(idx[:size], rates[:size])
        sync()
        after.append([p.detach()[0] for p in params])
    return max((a - b).abs().max().item() for a, b in zip(*after))


def main() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if device.type == "cpu":
        host_memory.keep()
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(IMAGES, 28, 28, generator=gen).to(device)
    labels = torch.randint(0, 10, (IMAGES,), generator=gen).to(device)
    check_against_plain_lenet(images)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"cpu, {torch.get_num_threads()} threads"
    memory = "; malloc keeps freed memory" if host_memory.kept() else ""
    print(f"device: {name}; torch {torch.__version__}; batch {BATCH}; own orders; "
          f"median of {TIMED} steps after 5 warm-up steps{memory}")
    print(f"{'formulation':<34}{'K':>5}{'ms/step':>10}{'trial-steps/s':>15}"
          f"{'train s/epoch':>15}{'drift':>10}")
    variants = CHOSEN or (
        ["grouped", "patches", "grouped+graph", "patches+graph", "patches1+graph",
         "patches2+graph", "grouped+graph+tf32", "patches+graph+tf32", "grouped+bf16+graph",
         "patches+bf16+graph"]
        if device.type == "cuda"
        else ["grouped+channels_last", "patches+channels_last", "patches", "gemm"])
    for k in PACKS:
        for variant in variants:
            name, *options = variant.split("+")
            OPTIONS.clear()
            OPTIONS.update(options)
            torch.backends.cudnn.benchmark = "benchmark" in OPTIONS
            torch.backends.cuda.matmul.allow_tf32 = "tf32" in OPTIONS
            torch.backends.cudnn.allow_tf32 = "tf32" in OPTIONS
            label = "+".join([name] + sorted(options))
            try:
                seconds = time_steps(name, k, images, labels, "graph" in OPTIONS)
                moved = (drift(name, k, images, labels) if k > REFERENCE_PACK
                         else float("nan"))
            except Exception as error:  # one line, and on with the rest
                print(f"{label:<34}{k:>5}  failed: {type(error).__name__}: {error}"[:160])
                continue
            moved_text = "-" if math.isnan(moved) else f"{moved:.1e}"  # - : no smaller pack
            print(f"{label:<34}{k:>5}{seconds * 1e3:>10.2f}{k / seconds:>15.0f}"
                  f"{seconds * STEPS_PER_EPOCH:>15.3f}{moved_text:>10}", flush=True)


if __name__ == "__main__":
    main()
