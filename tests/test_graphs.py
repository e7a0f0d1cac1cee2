"""The graphed epoch's bookkeeping, on the CPU: a CUDA graph replays exactly the kernels it
captured, so what can go wrong around it is ours — which buffer holds which step's indices and
rates, the last partial batch and the shared batch as shapes of their own, the sums across
steps, masked slots, warm-up runs that must leave no trace, a capture that fails. Here the
capture is replaced by an eager stand-in that runs the warm-ups as the real one does and
replays the step function itself; every path must then give the eager engine's numbers, bit
for bit. That replay equals eager on a GPU is tests/test_gpu.py's."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from lrsweep.train import data, engine, graphs
from test_engine import PACK, config, same_numbers


@pytest.fixture(scope="module")
def splits(fashion_dir):
    """600 images in batches of 256: two full steps and a partial one of 88."""
    return data.load("cpu", data_dir=fashion_dir, validation=200, subset=600, test_subset=400)


@pytest.fixture
def recorded(monkeypatch):
    """Graphs on the CPU: each captured shape recorded, warm-ups run for real."""
    shapes = []

    def record(step, device, pool):
        for _ in range(graphs.WARM_UP_STEPS):
            step()
        return step, pool

    real_capture = graphs.GraphedEpoch._capture

    def capture(self, shape):
        shapes.append(shape)
        return real_capture(self, shape)

    monkeypatch.setattr(graphs, "wanted", lambda pack: pack.fused and pack.like.optimizer == "sgd")
    monkeypatch.setattr(graphs, "_record", record)
    monkeypatch.setattr(graphs.GraphedEpoch, "_capture", capture)
    return shapes


def identical(a: dict, b: dict) -> bool:
    """Two state_dicts equal to the last bit, NaN (a diverged trial's) equal to NaN."""
    return a.keys() == b.keys() and all(
        torch.equal(a[key].nan_to_num(7.0), b[key].nan_to_num(7.0))
        and torch.equal(a[key].isnan(), b[key].isnan()) for key in a)


def configs(**common):
    return [config(batch_size=256, **{**p, **common}) for p in PACK]


def run(configs, splits, **kwargs):
    states = []
    results = engine.train_pack(configs, splits, on_states=states.append, **kwargs)
    return results, states


def assert_same(got, want):
    (results, states), (expected, expected_states) = got, want
    for r, e in zip(results, expected):
        assert r.status == e.status and len(r.epochs) == len(e.epochs)
        assert all(same_numbers(a, b) for a, b in zip(r.epochs, e.epochs))
        assert identical(r.state_dict, e.state_dict)
    for s, e in zip(states, expected_states):
        assert s.slots == e.slots
        assert identical(s.weights, e.weights)


@pytest.mark.parametrize("common", [{}, {"seed": 5}, {"unit": "step"}],
                         ids=["own-orders", "shared-batch", "rates-by-step"])
def test_a_graphed_epoch_is_the_eager_epoch_bit_for_bit(splits, recorded, monkeypatch, common):
    cfgs = configs(epochs=3, **common)
    graphed = run(cfgs, splits)
    monkeypatch.setattr(graphs, "wanted", lambda pack: False)
    assert_same(graphed, run(cfgs, splits))
    rows = 1 if "seed" in common else len(cfgs)
    # One capture a shape, the full batch and the last partial one, before the first step.
    assert sorted(recorded) == [(rows, 88), (rows, 256)]


def test_graphs_follow_a_pack_whose_slots_turn_over_and_mask(splits, recorded, monkeypatch):
    # A diverging trial is masked and leaves; a new trial takes its slot at its own first
    # epoch while the others go on, and trains on alone at the end.
    cfgs = configs(epochs=3)
    cfgs[1] = config("constant", seed=1, base_lr=1e4, batch_size=256, epochs=3)
    cfgs.append(config("sqrt", seed=2, base_lr=0.4, batch_size=256, epochs=3))
    waiting = list(enumerate(cfgs))

    def train():
        queue = list(waiting)
        results = {}

        def admit(n):
            taken, queue[:] = queue[:n], queue[n:]
            return [engine.Admission(key, c) for key, c in taken]

        engine.train_slots(4, splits, admit, on_finish=results.__setitem__)
        return [results[key] for key, _ in waiting]

    graphed = train()
    monkeypatch.setattr(graphs, "wanted", lambda pack: False)
    eager = train()
    assert graphed[1].status == "diverged"
    for g, e in zip(graphed, eager):
        assert g.status == e.status and all(same_numbers(a, b)
                                            for a, b in zip(g.epochs, e.epochs))
        assert identical(g.state_dict, e.state_dict)


def test_a_pack_whose_slots_come_to_share_one_batch_captures_that_shape_too(
        splits, recorded, monkeypatch):
    # Three trials of one seed beside a fourth that diverges and leaves after epoch 1: from
    # then on one row of indices serves the pack, a shape of its own.
    cfgs = [config("constant", seed=5, base_lr=lr, batch_size=256, epochs=3)
            for lr in (0.05, 0.1, 0.2)]
    cfgs.insert(1, config("constant", seed=1, base_lr=1e4, batch_size=256, epochs=3))
    graphed = run(cfgs, splits)
    monkeypatch.setattr(graphs, "wanted", lambda pack: False)
    assert_same(graphed, run(cfgs, splits))
    assert graphed[0][1].status == "diverged"
    assert sorted(recorded) == [(1, 88), (1, 256), (4, 88), (4, 256)]


def test_warm_ups_that_meet_an_infinite_gradient_leave_no_trace(splits, recorded, monkeypatch):
    # Rates are 0 during warm-up, but 0 · ∞ is NaN: whatever the warm-ups did is undone.
    real_step = graphs.GraphedEpoch.__init__

    def poisoning_init(self, pack, splits):
        real_step(self, pack, splits)
        step = self.step

        def poisoned(pack, x, y, rates, keep):
            out = step(pack, x, y, rates, keep)
            if not bool(rates.any()):  # a warm-up
                with torch.no_grad():
                    for p in pack.params:
                        p.add_(float("nan"))
            return out
        self.step = poisoned

    monkeypatch.setattr(graphs.GraphedEpoch, "__init__", poisoning_init)
    cfgs = configs(epochs=2)
    graphed = run(cfgs, splits)
    monkeypatch.setattr(graphs, "wanted", lambda pack: False)
    assert_same(graphed, run(cfgs, splits))


def test_a_failed_capture_says_so_and_trains_eagerly_with_the_same_numbers(
        splits, recorded, monkeypatch):
    def failing(step, device, pool):
        step()  # a warm-up ran, then capture failed, and ending the capture failed after it
        try:
            raise RuntimeError("operation not permitted when stream is capturing\nmore")
        except RuntimeError:
            raise RuntimeError("operation failed due to a previous error during capture")

    monkeypatch.setattr(graphs, "_record", failing)
    cfgs = configs(epochs=2)
    # The first error is named, not only the one that ending the capture raised after it.
    with pytest.warns(UserWarning, match="CUDA graph capture failed .*previous error during "
                      "capture; after RuntimeError: operation not permitted when stream is "
                      r"capturing\); this pack trains eagerly") as caught:
        graphed = run(cfgs, splits)
    assert len([w for w in caught if "CUDA graph" in str(w.message)]) == 1
    monkeypatch.setattr(graphs, "wanted", lambda pack: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eager = run(cfgs, splits)
    assert_same(graphed, eager)


@pytest.mark.parametrize("device, optimizer, model, env, expected", [
    ("cuda", "sgd", "lenet", None, True),
    ("cuda", "sgd", "lenet", "0", False),
    ("cuda", "sgd", "lenet", "1", True),
    ("cpu", "sgd", "lenet", None, False),
    ("cuda", "sgld", "lenet", None, False),       # per-trial noise generators: eager
    ("cuda", "sgd", "resnet18", None, False),     # a looped pack: eager
])
def test_graphs_are_wanted_for_fused_sgd_packs_on_cuda_only(monkeypatch, device, optimizer,
                                                            model, env, expected):
    if env is None:
        monkeypatch.delenv(graphs.ENV, raising=False)
    else:
        monkeypatch.setenv(graphs.ENV, env)
    like = dataclasses.replace(config(), optimizer=optimizer, model=model)
    pack = type("P", (), dict(device=torch.device(device), fused=model == "lenet", like=like))
    assert graphs.wanted(pack) is expected
