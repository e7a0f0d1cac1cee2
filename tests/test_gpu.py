"""The engine on a CUDA device: packs equal solo trials there too, a CUDA trial matches the
same trial on the CPU, the data and the pack stay on the device, and `lrsweep bench` records
GPU memory. Skipped, with the reason, where torch sees no CUDA device (these 2-core machines);
`bash results/benchmarks/gpu.sh` runs them on a GPU machine."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lrsweep import bench
from lrsweep.train import data, engine, graphs, precision
from lrsweep.train.model import lenet
from test_engine import (PACK, WEIGHTS_ATOL, assert_each_epoch_is_alone_and_plain_sgd, curves,
                         member_weights, same_numbers, config as engine_config)

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="no CUDA device: the GPU path is tested on a GPU machine"),
    # A capture that fails trains eagerly after one warning: here it fails the test, or every
    # graph test would pass by comparing the eager path with itself.
    pytest.mark.filterwarnings("error::lrsweep.train.graphs.CaptureWarning"),
]


@pytest.fixture
def exact_fp32(monkeypatch):
    # The engine trains in IEEE FP32 by default (lrsweep.train.precision); the references
    # here (plain LeNet and torch.optim.SGD) run outside it, where PyTorch's own default
    # would run cuDNN's convolutions in TF32, whose 10-bit mantissas would swamp the
    # float-reordering differences these comparisons allow. cuDNN's nondeterministic
    # backward kernels would make two identical runs differ.
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    with precision.applied("fp32", torch.device("cuda")):
        yield


def load(where, fashion_dir):
    return data.load(where, data_dir=fashion_dir, validation=200, subset=600)


def config(epochs=2, **params):
    """The engine tests' trials at the chapter's batch of 256: 600 images end in a partial one."""
    return engine_config(epochs=epochs, batch_size=256, **params)


def test_data_and_results_live_where_they_should(fashion_dir):
    splits = load("cuda", fashion_dir)
    assert splits.train_x.is_cuda and splits.test_y.is_cuda
    result = engine.train(config(), splits)
    assert result.device.startswith("cuda") and result.status == "complete"
    assert all(not t.is_cuda for t in result.state_dict.values())  # exported as CPU copies


def test_every_epoch_of_a_pack_is_its_trials_epoch_alone_and_plain_sgds_on_cuda(
        fashion_dir, exact_fp32, convolutions):
    # Epoch by epoch from the same weights, as on the CPU (test_engine says why not whole runs).
    splits = data.load("cuda", data_dir=fashion_dir, validation=200, subset=512)
    assert_each_epoch_is_alone_and_plain_sgd([config(**p) for p in PACK], splits)


def test_every_cuda_epoch_is_the_cpu_epoch_from_the_same_weights(fashion_dir, exact_fp32,
                                                                  convolutions):
    # Same images, weights and batch orders on both devices: only the kernels' sums differ.
    configs = [config(**p) for p in PACK]
    on_cpu = []
    cpu_results = engine.train_pack(configs, load("cpu", fashion_dir), on_states=on_cpu.append)
    gpu_splits = load("cuda", fashion_dir)
    before = [engine.Resume(lenet(c.seed).state_dict(), []) for c in configs]
    for epoch, state in enumerate(on_cpu):
        on_gpu = engine.train_pack([dataclasses.replace(c, epochs=epoch + 1) for c in configs],
                                   gpu_splits, resume=before)
        after = [engine.Resume(member_weights(state, k, cpu_results[k]),
                               cpu_results[k].epochs[:epoch + 1])
                 for k in range(len(configs))]
        for k, result in enumerate(on_gpu):
            for key, value in after[k].state_dict.items():
                torch.testing.assert_close(result.state_dict[key], value, rtol=0,
                                           atol=WEIGHTS_ATOL, msg=key)
            assert result.epochs[epoch].train_loss == pytest.approx(
                cpu_results[k].epochs[epoch].train_loss, rel=1e-5)
        before = after


def test_a_diverging_trial_is_masked_on_cuda(fashion_dir, exact_fp32):
    splits = load("cuda", fashion_dir)
    configs = [config(epochs=3, **p) for p in PACK]
    calm = engine.train_pack(configs, splits)
    configs[2] = config(epochs=3, name="constant", seed=2, base_lr=1e4)
    results = engine.train_pack(configs, splits)
    assert results[2].status == "diverged"
    for i in (0, 1, 3):
        assert results[i].status == "complete" and len(results[i].epochs) == 3
        for x, y in zip(curves(results[i]), curves(calm[i])):
            assert x == pytest.approx(y, rel=1e-5, abs=1e-5)


def test_bench_on_cuda_records_gpu_memory(fashion_dir):
    record = bench.run("cuda", subset=1000, packs=[1, 4], epochs=2, data_dir=str(fashion_dir),
                       chapter=False, log=lambda line: None)
    assert record["hardware"].startswith("cuda")
    assert [row["pack"] for row in record["rows"]] == [1, 4, 4]
    assert all(row["peak_mib"] > 0 for row in record["rows"])


@pytest.fixture
def captured(monkeypatch):
    """Graphs on (whatever the environment says), each capture that succeeded recorded."""
    calls = []
    record = graphs._record

    def counted(*args):
        captured = record(*args)
        calls.append(args)
        return captured

    monkeypatch.setattr(graphs, "_record", counted)
    monkeypatch.delenv(graphs.ENV, raising=False)
    return calls


@pytest.mark.parametrize("shared", [False, True], ids=["own-orders", "shared-batch"])
def test_graph_replay_is_the_eager_step_on_cuda(fashion_dir, exact_fp32, monkeypatch, captured,
                                                shared, convolutions):
    # The same kernels on the same inputs: bit for bit, the partial last batch included.
    splits = load("cuda", fashion_dir)
    configs = [config(epochs=3, **{**p, **({"seed": 4} if shared else {})}) for p in PACK]
    graphed = engine.train_pack(configs, splits)
    assert len(captured) == 2  # the full batch and the partial one, captured once each
    monkeypatch.setenv(graphs.ENV, "0")
    eager = engine.train_pack(configs, splits)
    for g, e in zip(graphed, eager):
        assert all(same_numbers(a, b) for a, b in zip(g.epochs, e.epochs))
        assert all(torch.equal(g.state_dict[key], e.state_dict[key]) for key in e.state_dict)


def test_a_graphed_pack_with_a_partial_batch_still_equals_its_trials_alone_and_plain_sgd(
        fashion_dir, exact_fp32, captured, convolutions):
    splits = data.load("cuda", data_dir=fashion_dir, validation=200, subset=600)
    assert_each_epoch_is_alone_and_plain_sgd([config(**p) for p in PACK], splits)
    assert captured  # it trained through graphs


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_graphs_train_a_pack_on_a_device_that_is_not_the_current_one(fashion_dir, exact_fp32):
    # Captured on the current device's stream, a pack on another device would record nothing
    # and replay nothing: weights unchanged, loss 0.
    splits = data.load("cuda:1", data_dir=fashion_dir, validation=200, subset=600)
    configs = [config(epochs=2, **p) for p in PACK]
    assert torch.cuda.current_device() == 0
    on_1 = engine.train_pack(configs, splits)
    on_0 = engine.train_pack(configs, load("cuda", fashion_dir))
    for a, b in zip(on_1, on_0):
        assert curves(a) == pytest.approx(curves(b), rel=1e-5, abs=1e-5)
