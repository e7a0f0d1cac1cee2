"""Which device trains, how it is described in records, and how many trials it packs at once.

    >>> resolve_device("cpu"), default_pack_size(resolve_device("cpu"))
    (device(type='cpu'), 4)
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

from lrsweep.train.model import CONVOLUTIONS

# One trial's share of GPU memory at batch 256, by formulation of the convolutions: its
# forward saves 11–12 MiB for backward with grouped convolutions and 50.5 MiB with patches
# (counted with saved-tensor hooks on the CPU); each is given the grouped estimate's margin
# (80 MiB for 12 saved: ×6.7) for backward's transients and evaluation, unmeasured on a GPU.
PACK_BYTES_PER_TRIAL = {"grouped": 80 * 2**20, "patches": 340 * 2**20}
# How a LeNet pack computes its convolutions (model.CONVOLUTIONS), for every device alike.
# "grouped" wherever it has been measured: on the 2-core CPU the patches formulation took
# 4.5–9× as long a step (K = 1 to 8, results/benchmarks/formulations-cpu-2026-11-30.txt);
# on a GPU it is not measured yet.
CONVOLUTIONS_ENV = "LRSWEEP_CONVOLUTIONS"
DEFAULT_CONVOLUTIONS = "grouped"
# The engine's on/off settings, each on unless set to 0 (`setting_on`).
CUDA_GRAPHS_ENV = "LRSWEEP_CUDA_GRAPHS"            # graphs.py: a GPU step replayed as a graph
KEEP_HOST_MEMORY_ENV = "LRSWEEP_KEEP_HOST_MEMORY"  # host_memory.py: malloc keeps what it frees
SWITCHES = (CUDA_GRAPHS_ENV, KEEP_HOST_MEMORY_ENV)


class DeviceError(ValueError):
    """The asked device, or the asked way of computing on it, does not exist here."""


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` is CUDA when present, else the CPU; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N (or cpu:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but this PyTorch sees no CUDA device")
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        # Checked here: torch itself fails only at the first tensor, with a CUDA error.
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        within = ("" if visible is None else f" (CUDA_VISIBLE_DEVICES={visible}: cuda:0 is the "
                  "first of those)")
        raise DeviceError(f"device {name!r} asked for, but this process sees {count} CUDA "
                          f"device(s), cuda:0 to cuda:{count - 1}{within}")
    return device


@functools.lru_cache(maxsize=None)
def describe_device(device: torch.device) -> str:
    """For records and reports: "cuda:0 (NVIDIA H100 …, CUDA 12.8)" or "cpu (AMD EPYC, AVX512,
    2 threads)". A CPU's entry names the vector instructions PyTorch's kernels use, and AMX
    where the CPU has it: one model name covers CPUs whose kernels differ (bf16 emulated on
    one AMD EPYC here, native on another)."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda})"
    model, flags = cpu_info()
    vector = torch.backends.cpu.get_cpu_capability() + (" + AMX" if "amx_tile" in flags else "")
    threads = torch.get_num_threads()
    return f"cpu ({model}, {vector}, {threads} thread{'s' if threads != 1 else ''})"


def cpu_info(source: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    """The CPU's model name and feature flags, from /proc/cpuinfo where there is one."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        lines = source.read_text().splitlines()
    except OSError:
        return model, flags
    for line in lines:
        if not line.strip():
            break  # the first processor's entry is enough: the others are alike
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return model, flags


def default_pack_size(device: torch.device, batch_size: int = 256) -> int:
    """Trials trained together. CPU: 4 (on 2 cores K = 8 to 32 were at most ~10% faster
    per trial, in one run, within the machine's noise, for 2–8× the activations:
    results/benchmarks/bench-cpu-2026-11-30-all-packs.txt); CUDA: as many as keep the GPU's
    memory under a quarter full, with the activations growing with batches above 256 (below,
    the estimate stays: evaluation's share does not shrink)."""
    if device.type != "cuda":
        return 4
    free, _ = torch.cuda.mem_get_info(device)
    per_trial = PACK_BYTES_PER_TRIAL[convolutions()] * max(batch_size, 256) / 256
    return max(1, min(256, int(free * 0.25 // per_trial)))


def convolutions() -> str:
    """The formulation of a LeNet pack's convolutions: $LRSWEEP_CONVOLUTIONS, else the
    default. Its numbers agree with the other's to rounding, not to the bit: a study's trials
    should all be trained with one."""
    chosen = os.environ.get(CONVOLUTIONS_ENV) or DEFAULT_CONVOLUTIONS
    if chosen not in CONVOLUTIONS:
        raise DeviceError(f"{CONVOLUTIONS_ENV}={chosen!r} is not a formulation of the "
                          f"convolutions; use {' or '.join(CONVOLUTIONS)}")
    return chosen


def setting_on(name: str) -> bool:
    """One of the engine's on/off settings: off when $name is 0, on when it is 1, empty or
    unset; any other value (a "false" meant as off, say) is refused, not read as on."""
    value = os.environ.get(name, "")
    if value not in ("", "0", "1"):
        raise DeviceError(f"{name}={value!r} is not an on/off setting; use 1 (on) or 0 (off)")
    return value != "0"


def check_environment() -> None:
    """Every engine setting the environment holds, checked before a command writes
    anything: a bad one raises DeviceError naming it."""
    convolutions()
    for name in SWITCHES:
        setting_on(name)


def torch_version() -> str:
    """The torch that trains, for a study's provenance."""
    return torch.__version__
