"""Does torch.compile (and on a GPU, CUDA graphs) pay for its warm-up at a LeNet pack's size?
Trains a pack of K LeNets the engine's way (PackedLeNet, own data orders, the fused per-trial
SGD step, the last partial batch kept) eagerly and compiled, and prints the first epoch
(compilation included, cold: no on-disk cache), the median later epoch ("steady"), and after
how many epochs compiling pays off.

    .venv/bin/python results/benchmarks/compile.py [cpu|cuda] [images] [K ...]

CPU modes: eager, default. CUDA adds reduce-overhead (CUDA graphs). The convolutions are
the engine's choice (LRSWEEP_CONVOLUTIONS: grouped, or patches). The CPU record beside it
came from
    OMP_NUM_THREADS=2 .venv/bin/python results/benchmarks/compile.py cpu 10000 1 4 16
"""

import os
import statistics
import sys
import time

# Cold compiles, as on a fresh machine: inductor's on-disk cache would otherwise hide most of
# the warm-up on a second run (K = 1 on the CPU: 21 s cold, 2 s from the cache).
os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")

import torch
from torch.nn import functional as F

from lrsweep.train import data, pack
from lrsweep.train.device import convolutions, describe_device
from lrsweep.train.model import PackedLeNet, lenet

device = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cpu")
IMAGES = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
PACKS = [int(k) for k in sys.argv[3:]] or [1, 4, 16]
# max-autotune is left out: its kernel search takes minutes per shape, more than a study's
# whole run at these sizes.
MODES = ["eager", "default"] + (["reduce-overhead"] if device.type == "cuda" else [])
BATCH, EPOCHS = 256, 6


def sync() -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def epoch_seconds(k: int, mode: str, splits: data.Splits) -> list[float]:
    torch._dynamo.reset()  # every configuration compiles from scratch
    net = PackedLeNet([lenet(seed) for seed in range(k)], convolutions()).to(device)
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)  # as the engine trains on the CPU
    params = list(net.parameters())
    forward = net if mode == "eager" else torch.compile(net, mode=None if mode == "default"
                                                        else mode)
    rates = torch.full((k,), 0.1, device=device)
    n = len(splits.train_y)
    seconds = []
    for epoch in range(EPOCHS):
        sync()
        start = time.perf_counter()
        orders = torch.stack([pack._order(seed, epoch, n) for seed in range(k)]).to(device)
        for step in range(pack.steps_per_epoch(n, BATCH)):
            x, y = pack._batch(splits, orders[:, step * BATCH:(step + 1) * BATCH], k, device)
            losses = F.cross_entropy(forward(x).transpose(1, 2), y, reduction="none").mean(1)
            for p in params:
                p.grad = None
            losses.sum().backward()
            pack._sgd_step(params, [p.grad for p in params], rates, k)
        sync()
        seconds.append(time.perf_counter() - start)
    return seconds


splits = data.load(device, subset=IMAGES, validation=0)
print(f"device {describe_device(device)}, {IMAGES} images, batch {BATCH}, "
      f"torch {torch.__version__}, {convolutions()} convolutions")
print(f"{'K':>4} {'mode':>16} {'first epoch':>12} {'steady':>9} {'vs eager':>9}  pays after")
for k in PACKS:
    eager_steady = None
    for mode in MODES:
        try:
            seconds = epoch_seconds(k, mode, splits)
        except Exception as error:  # a mode this machine cannot compile: say so, go on
            print(f"{k:4d} {mode:>16}  failed: {type(error).__name__}: {str(error)[:80]}")
            continue
        steady = statistics.median(seconds[1:])
        eager_steady = eager_steady or steady
        gain = eager_steady - steady
        warmup = seconds[0] - steady
        pays = "–" if mode == "eager" else (f"{warmup / gain:.0f} epochs" if gain > 0
                                            else "never")
        print(f"{k:4d} {mode:>16} {seconds[0]:10.2f} s {steady:7.2f} s "
              f"{eager_steady / steady:8.2f}×  {pays}")
