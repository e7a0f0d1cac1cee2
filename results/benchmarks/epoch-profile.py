"""Where a pack's epoch goes: torch.profiler over one epoch of `engine.train_pack` (the second:
the first warms caches and allocators), on the bench's images (the first N training images,
no validation split, the full 10k test set evaluated every epoch), constant rate, own orders.

Prints, per pack size K: the epoch's wall time split into the engine's phases (batch gather,
forward, backward, the fused SGD step, or on CUDA the graphed steps' replay; evaluation;
"other" is the loss, the metric sums and Python between them), then the operators with the most self time. On CUDA the phases also get
their GPU time (the CPU side only launches kernels there).

    .venv/bin/python results/benchmarks/epoch-profile.py [cpu|cuda] [images] [K ...]

The CPU records beside it (profile-cpu-DATE.txt) came from
    OMP_NUM_THREADS=2 .venv/bin/python results/benchmarks/epoch-profile.py cpu 10000 1 4 8
"""

import sys

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from lrsweep import schedules
from lrsweep.train import data, engine, graphs, pack
from lrsweep.train.device import describe_device
from lrsweep.train.model import PackedLeNet

device = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cpu")
IMAGES = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
PACKS = [int(k) for k in sys.argv[3:]] or [1, 4, 8]
PHASES = ["batch gather", "forward", "backward", "SGD step", "graphed steps (replay)",
          "evaluation (val + test)"]
_in_evaluation = False


def _phase(name, fn):
    def timed(*args, **kwargs):
        with record_function(name):
            return fn(*args, **kwargs)
    return timed


def _evaluation(fn):
    def timed(*args, **kwargs):
        global _in_evaluation
        _in_evaluation = True
        try:
            with record_function("evaluation (val + test)"):
                return fn(*args, **kwargs)
        finally:
            _in_evaluation = False
    return timed


def _forward(fn):
    def timed(*args, **kwargs):  # evaluation's forwards are counted inside evaluation
        with record_function("forward (in evaluation)" if _in_evaluation else "forward"):
            return fn(*args, **kwargs)
    return timed


# The engine's own functions, wrapped so the profile names its phases; nothing else changes.
pack._batch = _phase("batch gather", pack._batch)
pack._sgd_step = _phase("SGD step", pack._sgd_step)
engine.evaluate = _evaluation(engine.evaluate)  # as the engine calls it
PackedLeNet.forward = _forward(PackedLeNet.forward)
torch.Tensor.backward = _phase("backward", torch.Tensor.backward)  # SGLD, looped packs
torch.autograd.grad = _phase("backward", torch.autograd.grad)      # fused SGD's step
# On CUDA the fused SGD pack's steps are replayed graphs (LRSWEEP_CUDA_GRAPHS=0: eager): one
# phase, whose kernels the operator table lists; the phases above then show capture only.
graphs.GraphedEpoch.epoch = _phase("graphed steps (replay)", graphs.GraphedEpoch.epoch)


def _device_us(event) -> float:
    return getattr(event, "device_time_total", getattr(event, "cuda_time_total", 0.0))


def profile_pack(k: int, splits: data.Splits) -> None:
    configs = [engine.TrialConfig(schedules.build("constant", base_lr=0.3), seed=i, epochs=2,
                                  batch_size=256) for i in range(k)]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    prof = profile(activities=activities)

    def on_epoch(metrics):  # profile from the end of epoch 1 to the end of epoch 2
        (prof.start if next(iter(metrics.values())).epoch == 0 else prof.stop)()
        return []

    results = engine.train_pack(configs, splits, on_epoch=on_epoch)
    wall_ms = results[0].epochs[1].seconds * 1e3
    events = {e.key: e for e in prof.key_averages()}
    cuda = device.type == "cuda"
    print(f"\n## K = {k}: epoch {wall_ms:.0f} ms wall, {wall_ms / k:.0f} ms per trial-epoch, "
          f"{pack.steps_per_epoch(len(splits.train_y), 256)} steps")
    print(f"{'phase':26} {'calls':>6} {'CPU ms':>9} {'share':>6}" + ("  GPU ms" if cuda else ""))
    accounted = 0.0
    for name in PHASES:
        e = events.get(name)
        if e is None:
            continue
        ms = e.cpu_time_total / 1e3
        accounted += ms
        gpu = f" {_device_us(e) / 1e3:8.1f}" if cuda else ""
        print(f"{name:26} {e.count:6d} {ms:9.1f} {ms / wall_ms:6.1%}{gpu}")
    print(f"{'other (loss, sums, Python)':26} {'':6} {wall_ms - accounted:9.1f} "
          f"{(wall_ms - accounted) / wall_ms:6.1%}")
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=14, max_name_column_width=44))


def main() -> None:
    splits = data.load(device, validation=0, subset=IMAGES)
    print(f"# {describe_device(device)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {len(splits.train_y)} training and "
          f"{len(splits.test_y)} test images, batch 256, one profiled epoch (the second)")
    for k in PACKS:
        profile_pack(k, splits)


if __name__ == "__main__":
    main()
