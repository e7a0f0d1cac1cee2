"""What keeping freed memory (lrsweep/train/host_memory.py) does over a long CPU run: three
packs of 8 trials run one after another (12 epochs each, mixed seeds and rates, 5,000
training, 2,000 validation and 2,000 test images), with the allocator kept and left alone,
each in a fresh process: each pack's minor page faults, the resident memory at the end of each
epoch (between steps: a step's own peak is not seen), and the process's time.

    .venv/bin/python results/benchmarks/host-memory.py [training images]

The record beside it came from
    OMP_NUM_THREADS=2 LRSWEEP_DATA=/usr/share/datasets/fashion-mnist \\
        .venv/bin/python results/benchmarks/host-memory.py
"""

import os
import subprocess
import sys
import time

import torch

from lrsweep.train.device import describe_device

RUN = r"""
import os, resource, sys, torch
from lrsweep import schedules
from lrsweep.train import data, engine, host_memory
from lrsweep.train.trials import TrialConfig

splits = data.load("cpu", validation=2000, subset=int(sys.argv[1]), test_subset=2000)
configs = [TrialConfig(schedules.build("cosine", base_lr=0.1 * (1 + s % 3), max_update=12),
                       seed=s % 3, epochs=12) for s in range(8)]
resident, faults = [], []

def on_epoch(metrics):
    with open("/proc/self/statm") as statm:
        resident.append(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20)
    return []

for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    engine.train_pack(configs, splits, on_epoch=on_epoch)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(host_memory.kept(), faults, resident)
"""

images = sys.argv[1] if len(sys.argv) > 1 else "5000"
print(f"# results/benchmarks/host-memory.py {images}: {describe_device(torch.device('cpu'))}, "
      f"torch {torch.__version__}")
for keep in ("1", "0"):
    env = dict(os.environ, LRSWEEP_KEEP_HOST_MEMORY=keep)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUN, images], env=env, check=True,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    kept, rest = done.stdout.split(maxsplit=1)
    faults, resident = rest.split("] ", 1)
    print(f"LRSWEEP_KEEP_HOST_MEMORY={keep} (kept: {kept}), {seconds:.1f} s (process start and "
          f"data loading included)\n  minor page faults in each of the 3 runs: {faults}]\n"
          f"  resident MiB at the end of each of the 36 epochs: {resident.strip()}")
