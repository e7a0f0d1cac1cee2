"""Would fusing a pack of ResNet-18s pay, as fusing LeNets does? HFTA fuses K networks by
turning each convolution into one grouped convolution; this times ResNet-18's four 3×3
convolution shapes (28×28 input, the CIFAR-style stem) as K separate convolutions against one
grouped convolution, forward and backward, on the device given.

    .venv/bin/python results/benchmarks/resnet-fusion.py [cpu|cuda] [K] [batch]

The record beside it came from
    for t in 1 2; do OMP_NUM_THREADS=$t .venv/bin/python results/benchmarks/resnet-fusion.py; done
"""

import statistics
import sys
import time

import torch

from lrsweep.train.device import describe_device

device = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cpu")
K = int(sys.argv[2]) if len(sys.argv) > 2 else 4
B = int(sys.argv[3]) if len(sys.argv) > 3 else 32
REPEATS = 7


def timed(step) -> float:
    """Median milliseconds of one call, after a warm-up call."""
    step()
    times = []
    for _ in range(REPEATS):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


print(f"device {describe_device(device)}, K = {K}, batch {B}, torch {torch.__version__}")
print(f"{'stage':>14} {'K separate':>11} {'grouped':>9} {'ratio':>6}")
total = [0.0, 0.0]
for channels, side in ((64, 28), (128, 14), (256, 7), (512, 4)):
    convs = [torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device)
             for _ in range(K)]
    grouped = torch.nn.Conv2d(K * channels, K * channels, 3, padding=1, groups=K,
                              bias=False).to(device)
    xs = [torch.randn(B, channels, side, side, device=device, requires_grad=True)
          for _ in range(K)]
    x = torch.randn(B, K * channels, side, side, device=device, requires_grad=True)
    separate = timed(lambda: sum(c(xi).sum() for c, xi in zip(convs, xs)).backward())
    fused = timed(lambda: grouped(x).sum().backward())
    total[0] += separate
    total[1] += fused
    print(f"{channels:5d}ch {side:2d}×{side:<2d}  {separate:8.1f} ms {fused:6.1f} ms "
          f"{separate / fused:5.2f}×")
print(f"{'all four':>14} {total[0]:8.1f} ms {total[1]:6.1f} ms {total[0] / total[1]:5.2f}×"
      "  (> 1: fusing pays)")
