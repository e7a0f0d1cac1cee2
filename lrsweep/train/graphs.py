"""A fused SGD pack's training epoch on a CUDA device as replayed CUDA graphs.

Eagerly, each step of a LeNet pack is ~60 kernel launches and the Python that issues them:
on an H200 the step alone at K = 1 took 2.57 ms eagerly and 0.37 ms replayed
(results/benchmarks/formulations-gpu-2026-11-29.txt). `pack.fused_sgd_step` is a pure
function of device tensors, so it is captured once per batch shape (the full batch and the
epoch's last, partial one; one row of indices when every slot shares its batch, K rows when
they do not) and replayed: each step writes its indices and rates into the graph's input
buffers and launches the whole step at once. The per-trial loss and accuracy sums accumulate
in device buffers inside the graph; nothing is read back until the epoch ends.

Replay runs the very kernels the eager step runs, on the same inputs: with deterministic
kernels (`torch.backends.cudnn.deterministic`) the numbers are the eager step's to the bit
(`tests/test_gpu.py` compares them); without, cuDNN may pick nondeterministic backward kernels,
and then not even two eager runs agree to the bit. Eager remains the path on the CPU, for
SGLD (its noise draws from per-trial generators) and for looped packs (ResNet-18), and
wherever capture fails (one warning, then eager). `LRSWEEP_CUDA_GRAPHS=0` turns graphs off.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from typing import Callable

import torch

from lrsweep.train.data import Splits
from lrsweep.train.device import CUDA_GRAPHS_ENV as ENV, setting_on

WARM_UP_STEPS = 3  # eager runs on a side stream before capture, as torch.cuda.graph asks


def wanted(pack) -> bool:
    """Whether this pack trains through graphs: a fused SGD pack on CUDA, unless turned off."""
    return enabled(pack.device, pack.fused, pack.like.optimizer)


def enabled(device: torch.device, fused: bool = True, optimizer: str = "sgd") -> bool:
    return device.type == "cuda" and fused and optimizer == "sgd" and setting_on(ENV)


class CaptureWarning(UserWarning):
    """A pack's step could not be captured: it trains eagerly (bench records it)."""


class CaptureFailed(RuntimeError):
    """A step could not be captured; nothing was trained and the weights are as they were."""


class GraphedEpoch:
    """The training steps of one pack as CUDA graphs, one per batch shape, captured on first
    use. The pack's parameters are the graphs' weights: they must keep their storage (loading
    and masking trials copy into them in place, as `Pack` does)."""

    def __init__(self, pack, splits: Splits) -> None:
        from lrsweep.train.pack import fused_sgd_step  # pack imports this module
        self.pack, self.splits, self.step = pack, splits, fused_sgd_step
        device = pack.device
        self.rates = torch.zeros(pack.k, device=device)
        self.keep = torch.zeros(pack.k, dtype=torch.bool, device=device)
        self.loss_sum = torch.zeros(pack.k, device=device)
        self.correct = torch.zeros(pack.k, dtype=torch.long, device=device)
        self.graphs: dict[tuple[int, int], tuple[Callable[[], None], torch.Tensor]] = {}
        self.pool = None  # one memory pool for all the pack's graphs (`_record`)

    def epoch(self, orders: torch.Tensor, rates: torch.Tensor, keep: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every step of one epoch: `orders` (rows, n) device indices, `rates` (steps, K) on
        the device, `keep` (K) booleans. Returns the sums of per-trial losses (each step's
        mean times its images) and of correct predictions, on the device."""
        batch, n = self.pack.like.batch_size, self.pack.n_train
        # A graph replays on the current device's stream: the pack's device, whatever the
        # process's current one (--device cuda:1).
        with _on(self.pack.device):
            for images in {min(batch, n), n - (self.pack.steps - 1) * batch}:
                self._graph((orders.shape[0], images))  # captured before any step is taken
            self.loss_sum.zero_()
            self.correct.zero_()
            self.keep.copy_(keep)
            for step in range(self.pack.steps):
                indices = orders[:, step * batch:(step + 1) * batch]
                replay, inputs = self._graph(tuple(indices.shape))
                inputs.copy_(indices)
                self.rates.copy_(rates[step])
                replay()
            return self.loss_sum.clone(), self.correct.clone()

    def _graph(self, shape: tuple[int, int]) -> tuple[Callable[[], None], torch.Tensor]:
        if shape not in self.graphs:
            try:
                self.graphs[shape] = self._capture(shape)
            except RuntimeError as error:
                raise CaptureFailed(_cause(error)) from error
        return self.graphs[shape]

    def _capture(self, shape: tuple[int, int]) -> tuple[Callable[[], None], torch.Tensor]:
        from lrsweep.train.pack import _batch
        pack = self.pack
        inputs = torch.zeros(shape, dtype=torch.long, device=pack.device)

        def step() -> None:
            x, y = _batch(self.splits, inputs, pack.k, pack.device)
            losses, right = self.step(pack, x, y, self.rates, self.keep)
            self.loss_sum.add_(losses * shape[1])
            self.correct.add_(right)

        # Warm-up runs really execute: with rates 0 they leave the weights as they were,
        # except where a gradient is not finite (0 · ∞); everything they touch is put back.
        touched = (*pack.params, self.rates, self.loss_sum, self.correct)
        saved = [t.detach().clone() for t in touched]
        self.rates.zero_()
        try:
            replay, self.pool = _record(step, pack.device, self.pool)
        finally:
            with torch.no_grad():
                for tensor, value in zip(touched, saved):
                    tensor.copy_(value)
        return replay, inputs


def _record(step: Callable[[], None], device: torch.device, pool
            ) -> tuple[Callable[[], None], object]:
    """`step` captured as a CUDA graph in memory pool `pool` (None: a new one), after the
    eager warm-up runs capture needs (cuDNN and cuBLAS set up their workspaces outside the
    graph); returns its replay and the pool. The pack's graphs share one pool: nothing a graph
    allocates outlives its replay (its results go to buffers made outside it), and replays
    never overlap (one stream). Tests on the CPU put an eager stand-in here."""
    side, capture = _streams(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(WARM_UP_STEPS):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # Our own capture stream on the pack's device, entered by us as well: should capture fail,
    # torch.cuda.graph's exit may raise before it restores the stream, and this one restores
    # it; the device is synchronised so that eager steps start after whatever was queued.
    # thread_local: the checkpoint writer and the heartbeats run on threads of their own;
    # what they do is no part of the step, and must not fail its capture.
    try:
        with torch.cuda.stream(capture):
            with torch.cuda.graph(graph, pool=pool, stream=capture,
                                  capture_error_mode="thread_local"):
                step()
    except RuntimeError:
        torch.cuda.synchronize(device)
        raise
    return graph.replay, graph.pool()


@functools.cache
def _device_streams(device: torch.device) -> tuple[torch.cuda.Stream, torch.cuda.Stream]:
    return torch.cuda.Stream(device), torch.cuda.Stream(device)


def _streams(device: torch.device) -> tuple[torch.cuda.Stream, torch.cuda.Stream]:
    """The warm-up and the capture stream of `device`, the same for every capture of the
    process, as torch.cuda.graph keeps one capture stream of its own: graphs that share a
    memory pool are to be captured on the same stream (its docs: freed blocks belong to
    their stream), and each new stream would get a cuBLAS workspace of its own."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _device_streams(torch.device("cuda", index))


def _cause(error: BaseException) -> str:
    """What made a capture fail: the first error, not only the "operation failed due to a
    previous error during capture" that ending an invalidated capture raises after it."""
    chain = [error]
    while chain[-1].__context__ is not None and chain[-1].__context__ not in chain:
        chain.append(chain[-1].__context__)
    return "; after ".join(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                           for e in chain)


def _on(device: torch.device):
    """The pack's CUDA device as the current one, for as long as its graphs run."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def for_pack(pack, splits: Splits) -> GraphedEpoch | None:
    """A pack's graphed epoch where it is wanted (`wanted`), else None (eager)."""
    return GraphedEpoch(pack, splits) if wanted(pack) else None


def train_epoch(pack, orders: torch.Tensor, rates: torch.Tensor, keep: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The epoch through the pack's graphs (`GraphedEpoch.epoch`), or None where it trains
    eagerly: no graphs, or a capture that failed (said once; from then on the pack is eager,
    with the same numbers, and nothing of this epoch was trained yet)."""
    if pack.graphs is None:
        return None
    try:
        return pack.graphs.epoch(orders, rates, keep)
    except CaptureFailed as error:
        pack.graphs = None
        warnings.warn(f"CUDA graph capture failed ({error}); this pack trains eagerly (the "
                      f"same numbers, more launches). Set {ENV}=0 to skip the attempt",
                      CaptureWarning, stacklevel=2)
        return None
