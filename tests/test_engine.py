"""The engine on a tiny subset: learning, determinism, schedules applied per epoch or step,
divergence, pruning, and the exported weights."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch

from conftest import TEST_IMAGES
from lrsweep import schedules
from lrsweep.train import data, device, engine, evaluate, pack
from lrsweep.outcomes import chance_levels, loss_bound
from lrsweep.train.model import CONVOLUTIONS, PackedLeNet, lenet, unpack


@pytest.fixture(scope="module")
def splits(fashion_dir):
    return data.load("cpu", data_dir=fashion_dir, validation=200, subset=600,
                     test_subset=TEST_IMAGES)


def config(name="constant", seed=0, epochs=3, unit="epoch", batch_size=64, **params):
    params.setdefault("base_lr", 0.1)
    return engine.TrialConfig(schedules.build(name, **params), seed=seed, epochs=epochs,
                              batch_size=batch_size, unit=unit)


def test_loss_decreases_and_accuracy_beats_chance(fashion_dir):
    # 2000 images: enough steps for plain SGD to leave LeNet's initial plateau.
    bigger = data.load("cpu", data_dir=fashion_dir, validation=200, subset=2000)
    result = engine.train(config(epochs=4, base_lr=0.3), bigger)
    losses = [m.train_loss for m in result.epochs]
    assert result.status == "complete" and len(result.epochs) == 4
    assert losses[-1] < losses[0] * 0.8
    assert result.epochs[-1].val_acc > 0.3


def test_same_seed_gives_the_same_curve_and_another_seed_does_not(splits):
    a = engine.train(config(seed=3), splits)
    b = engine.train(config(seed=3), splits)
    c = engine.train(config(seed=4), splits)
    strip = lambda r: [(m.lr, m.train_loss, m.train_acc, m.val_loss, m.val_acc, m.test_acc)
                       for m in r.epochs]
    assert strip(a) == strip(b)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert strip(a) != strip(c)


def test_seed_fixes_initial_weights_whatever_the_global_rng():
    torch.manual_seed(123)
    first = lenet(seed=7).state_dict()
    torch.manual_seed(999)
    second = lenet(seed=7).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["0.weight"], lenet(seed=8).state_dict()["0.weight"])


def test_each_epoch_runs_at_its_scheduled_rate(splits):
    cfg = config("cosine", epochs=4, base_lr=0.4, final_lr=0.0, max_update=4)
    result = engine.train(cfg, splits)
    expected = [0.4 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)]
    assert [m.lr for m in result.epochs] == pytest.approx(expected, rel=1e-12)


def test_step_unit_moves_the_rate_within_an_epoch(splits, monkeypatch):
    seen = []
    real_step = pack._sgd_step

    def spy(params, grads, rates, k):
        seen.append(rates[0].item())
        return real_step(params, grads, rates, k)

    monkeypatch.setattr(pack, "_sgd_step", spy)
    steps = engine.steps_per_epoch(len(splits.train_y), 64)
    cfg = config("poly", unit="step", epochs=2, base_lr=0.2, max_update=2 * steps, exponent=1.0)
    result = engine.train(cfg, splits)
    assert seen == pytest.approx([0.2 * (1 - t / (2 * steps)) for t in range(2 * steps)])
    assert result.epochs[1].lr == pytest.approx(seen[steps])


def test_last_partial_batch_is_trained(splits, monkeypatch):
    sizes = []
    real_batch = pack._batch

    def spy(*args):
        x, y = real_batch(*args)
        sizes.append(y.shape[1])
        return x, y

    monkeypatch.setattr(pack, "_batch", spy)
    engine.train(config(epochs=1, batch_size=256), splits)
    assert sizes == [256, 256, 600 - 512]


@pytest.mark.parametrize("classes", [2, 10, 1000])
def test_collapse_thresholds_sit_between_guessing_and_perfect(classes):
    at_chance, learned = chance_levels(classes)
    assert 1 / classes < at_chance < learned < 1
    if classes == 10:  # Fashion-MNIST keeps the thresholds it always had
        assert (at_chance, learned) == (0.2, 0.5)
    if classes == 2:   # guessing one of two is neither learned nor above chance
        assert learned > 0.5 and at_chance > 0.5


def test_non_finite_loss_ends_the_trial_as_diverged(splits):
    result = engine.train(config(epochs=5, base_lr=1e4), splits)
    assert result.status == "diverged" and result.diverged == "nonfinite"
    assert len(result.epochs) < 5
    assert not math.isfinite(result.epochs[-1].train_loss)


def test_callback_returning_false_prunes_after_that_epoch(splits):
    seen = []
    result = engine.train(config(epochs=4), splits, on_epoch=lambda m: seen.append(m) or m.epoch < 1)
    assert result.status == "pruned"
    assert [m.epoch for m in result.epochs] == [0, 1] == [m.epoch for m in seen]


def test_exported_state_dict_loads_into_plain_lenet_with_the_same_accuracy(splits):
    result = engine.train(config(epochs=2, base_lr=0.3), splits)
    net = lenet()
    net.load_state_dict(result.state_dict)
    net.eval()
    with torch.no_grad():
        acc = (net(splits.test_x).argmax(1) == splits.test_y).float().mean().item()
    assert acc == pytest.approx(result.epochs[-1].test_acc, abs=1e-6)


def test_no_validation_set_gives_nan_validation_metrics(fashion_dir):
    splits = data.load("cpu", data_dir=fashion_dir, validation=0, subset=300)
    result = engine.train(config(epochs=1), splits)
    assert math.isnan(result.epochs[0].val_acc) and math.isfinite(result.epochs[0].test_acc)


def test_auto_device_is_cuda_only_when_present():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device.resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            device.resolve_device("cuda:0")


def test_a_cuda_index_beyond_the_visible_devices_is_refused_up_front(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert device.resolve_device("cuda:1") == torch.device("cuda:1")
    assert device.resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(device.DeviceError, match=r"'cuda:2'.* sees 2 CUDA device\(s\), cuda:0 "
                                                 r"to cuda:1$"):
        device.resolve_device("cuda:2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with pytest.raises(device.DeviceError, match=r"CUDA_VISIBLE_DEVICES=3,5: cuda:0 is the "
                                                 r"first of those"):
        device.resolve_device("cuda:3")


@pytest.mark.parametrize("name", ["gpu", "mps", "meta", "cuda:x"])
def test_devices_lrsweep_does_not_train_on_are_refused(name):
    with pytest.raises(device.DeviceError, match=f"unknown device '{name}'; use auto, cpu"):
        device.resolve_device(name)


@pytest.mark.parametrize("value, on", [(None, True), ("", True), ("1", True), ("0", False),
                                       (" 0", None), ("false", None), ("off", None),
                                       ("2", None)])
def test_an_on_off_setting_is_0_or_1_and_anything_else_is_refused(monkeypatch, value, on):
    name = device.KEEP_HOST_MEMORY_ENV
    if value is None:
        monkeypatch.delenv(name, raising=False)
    else:
        monkeypatch.setenv(name, value)
    if on is None:
        with pytest.raises(device.DeviceError, match=f"{name}='{value}' is not an on/off"):
            device.check_environment()
    else:
        device.check_environment()
        assert device.setting_on(name) is on


# --- packs ---------------------------------------------------------------------------------

PACK = [  # different schedules, seeds and rates in one pack
    dict(name="constant", seed=0, base_lr=0.3),
    dict(name="cosine", seed=1, base_lr=0.2, max_update=2),
    dict(name="sqrt", seed=2, base_lr=0.5),
    dict(name="multistep", seed=0, base_lr=0.1, milestones=[1], gamma=0.5),
]


def curves(result):
    return [[m.lr, m.train_loss, m.train_acc, m.val_loss, m.val_acc, m.test_acc]
            for m in result.epochs]


# A pack and its trials alone, and a plain LeNet trained with torch.optim.SGD, compared epoch
# by epoch from the same weights. On the CPU a trial alone and in its pack are bit for bit the
# same (batch invariance, tested over whole runs below). The plain LeNet sums in another order
# (an ungrouped convolution, ReLU before pooling), and over whole runs such rounding differences
# grow chaotically (1.5e-8 after 2 steps, 0.08 after 47) by amounts that change with torch's
# kernels: no fixed tolerance holds. From the same weights, one epoch of two steps leaves them
# nothing to grow from. What is left: the rounding of one epoch's sums, and rarely a ReLU or
# max-pooling decision that such rounding flips (a value within 1e-7 of 0 or of its
# neighbour), which routes one gradient elsewhere. Measured over 144 trial-epochs (6 packs like
# these, torch 2.14, 2-core CPU, before packs were batch-invariant): weights typically 7e-9
# apart, at most 4.7e-7 (engine alone) and 1.2e-5 (plain SGD, one flip); no image classified
# differently. One epoch here moves a weight by 9e-4 to 2e-2, so a wrong rate, batch or
# gradient shows far above the bound, which is 9× the largest flip. The same bounds serve a
# GPU's pack against the same trial alone there.
WEIGHTS_ATOL = 1e-4
LOSS_RTOL = 1e-5


@pytest.fixture(scope="module")
def two_steps(fashion_dir):
    """128 training images in batches of 64: two steps an epoch, so an epoch's data order
    (which images share a step) and its rate both show."""
    return data.load("cpu", data_dir=fashion_dir, validation=200, subset=128,
                     test_subset=TEST_IMAGES)


def plain_sgd_epoch(state_dict, cfg, splits, epoch, weight_decay=0.0):
    """One epoch of the chapter's loop on a plain lenet() with torch.optim.SGD, on the device
    of `splits`: the batches are the engine's contract, a permutation drawn on the CPU from
    (seed, epoch) alone, and the rate is the schedule's at the epoch. Returns the weights (on
    the CPU) and the epoch's mean train loss."""
    device = splits.train_x.device
    net = lenet().to(device)
    net.load_state_dict(state_dict)
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.schedule(epoch),
                                weight_decay=weight_decay)
    n = len(splits.train_y)
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator).to(device)
    total = 0.0
    for batch in order.split(cfg.batch_size):
        loss = torch.nn.functional.cross_entropy(net(splits.train_x[batch]), splits.train_y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
    return {k: v.cpu() for k, v in net.state_dict().items()}, total / n


def same_numbers(a, b):
    """Two epochs' metrics equal to the last bit (NaN equal to NaN), wall time aside, and the
    count of trials that shared it (the company, not the trial's numbers)."""
    fields = [f.name for f in dataclasses.fields(a) if f.name not in ("seconds", "pack_trials")]
    return str([getattr(a, f) for f in fields]) == str([getattr(b, f) for f in fields])


def assert_close_weights(got, expected):
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=WEIGHTS_ATOL, msg=key)


def member_weights(state, k, result):
    """Trial k's weights after a checkpoint's epoch: in the pack's tensors at its slot while
    it trains, in its result once it left the pack."""
    return unpack(state.layout, state.weights, state.slots[k]) if k in state.slots \
        else result.state_dict


def assert_each_epoch_is_alone_and_plain_sgd(configs, splits):
    """Train `configs` as one pack; then, for every epoch and trial, train that epoch again
    from the pack's state before it (weights; for SGLD its noise and posterior sum too) alone
    (the engine, a pack of one) and, where torch has it, with a plain LeNet and
    torch.optim.SGD: SGD, and SGLD without noise (SGD with its prior as weight decay λ/N).
    Compare with the pack's weights and metrics after it."""
    states = []
    packed = engine.train_pack(configs, splits, on_states=states.append)
    assert [len(r.epochs) for r in packed] == [configs[0].epochs] * len(configs)
    n = len(splits.train_y)
    for k, cfg in enumerate(configs):
        start, done, sampler = lenet(cfg.seed).state_dict(), [], None
        for epoch, state in enumerate(states):
            after = member_weights(state, k, packed[k])
            ours = packed[k].epochs[epoch]
            alone = engine.train_pack(
                [dataclasses.replace(cfg, epochs=epoch + 1)], splits,
                resume=[engine.Resume(start, list(done), sampler=sampler)])[0]
            assert alone.pack_size == 1 and len(alone.epochs) == epoch + 1
            solo = alone.epochs[epoch]
            if splits.train_x.device.type == "cpu":  # batch-invariant: the very same numbers
                assert all(torch.equal(alone.state_dict[key], after[key]) for key in after)
                assert same_numbers(solo, ours)
            else:
                assert_close_weights(alone.state_dict, after)
                assert solo.lr == ours.lr == cfg.schedule(epoch)
                assert solo.samples == ours.samples
                assert solo.train_loss == pytest.approx(ours.train_loss, rel=LOSS_RTOL)
                # At most one image of each set classified differently (none was, measured).
                for name, images in (("val_acc", splits.val_y), ("test_acc", splits.test_y),
                                     ("avg_test_acc", splits.test_y)):
                    assert getattr(solo, name) == pytest.approx(
                        getattr(ours, name), abs=1.01 / len(images), nan_ok=True)
            if cfg.optimizer != "sgld":  # torch's SGD has no Langevin noise
                decay = cfg.prior_precision / n if cfg.optimizer == "sgld_without_noise" else 0
                plain, train_loss = plain_sgd_epoch(start, cfg, splits, epoch, decay)
                assert_close_weights(plain, after)
                assert train_loss == pytest.approx(ours.train_loss, rel=LOSS_RTOL)
            if k in state.members:  # it trains on
                start, done, sampler = after, done + [ours], state.members[k].sampler


@pytest.mark.parametrize("same_seed", [False, True], ids=["own-orders", "shared-batch"])
def test_every_epoch_of_a_pack_is_its_trials_epoch_alone_and_plain_sgds(two_steps, same_seed,
                                                                        convolutions):
    configs = [config(epochs=3, **{**p, "seed": 7 if same_seed else p["seed"]}) for p in PACK]
    assert_each_epoch_is_alone_and_plain_sgd(configs, two_steps)


def test_a_trial_records_the_convolutions_it_trained_with(two_steps, convolutions):
    from lrsweep.search.tell import user_attrs
    result = engine.train_pack([config(epochs=1)], two_steps)[0]
    assert result.convolutions == convolutions
    assert user_attrs(result, torch.device("cpu"), 10)["convolutions"] == convolutions


def test_pruning_one_trial_leaves_the_others_unchanged(splits):
    configs = [config(epochs=3, **p) for p in PACK]
    reference = engine.train_pack(configs, splits)
    told = []

    def prune_trial_1(metrics):
        told.append(sorted(metrics))
        return [1] if 1 in metrics else []

    pruned = engine.train_pack(configs, splits, on_epoch=prune_trial_1)
    assert told == [[0, 1, 2, 3], [0, 2, 3], [0, 2, 3]]  # reported once, then masked
    assert pruned[1].status == "pruned" and len(pruned[1].epochs) == 1
    for i in (0, 2, 3):
        assert pruned[i].status == "complete"
        assert curves(pruned[i]) == curves(reference[i])  # not even a rounding difference


def test_a_diverging_trial_does_not_stop_or_spoil_the_pack(splits):
    configs = [config(epochs=3, **p) for p in PACK]
    calm = engine.train_pack(configs, splits)
    configs[2] = config(epochs=3, name="constant", seed=2, base_lr=1e4)
    results = engine.train_pack(configs, splits)
    assert results[2].status == "diverged" and results[2].diverged == "nonfinite"
    assert len(results[2].epochs) < 3
    for i in (0, 1, 3):
        assert results[i].status == "complete" and len(results[i].epochs) == 3
        assert curves(results[i]) == curves(calm[i])


def test_weights_that_blow_up_at_the_very_last_step_are_diverged_not_complete(splits):
    steps = engine.steps_per_epoch(len(splits.train_y), 64)
    last = 2 * steps - 1  # the final step of the final epoch: no train loss sees it
    blow_up = config(epochs=2, unit="step", name="multistep", base_lr=0.1, milestones=[last],
                     gamma=1e36)
    calm = config(epochs=2, unit="step", name="multistep", base_lr=0.1, milestones=[last],
                  gamma=0.5, seed=1)
    results = engine.train_pack([blow_up, calm], splits)
    assert math.isfinite(results[0].epochs[-1].train_loss)
    assert results[0].status == "diverged" and results[0].diverged == "nonfinite"
    assert results[1].status == "complete"


def test_evaluation_in_small_chunks_gives_the_same_numbers(splits, monkeypatch):
    configs = [config(epochs=1, **p) for p in PACK]
    whole = engine.train_pack(configs, splits)
    # One image a pass, the smallest there is.
    monkeypatch.setattr(evaluate, "CPU_PASS_IMAGES", 1)
    chunked = engine.train_pack(configs, splits)
    for a, b in zip(whole, chunked):
        assert [m.val_acc for m in a.epochs] == [m.val_acc for m in b.epochs]
        assert [m.test_acc for m in a.epochs] == [m.test_acc for m in b.epochs]
        for x, y in zip(curves(a), curves(b)):
            assert x == pytest.approx(y, rel=1e-5)


def test_a_pack_must_share_its_length(splits):
    with pytest.raises(ValueError, match="share epochs"):
        engine.train_pack([config(epochs=2), config(epochs=3)], splits)


def test_resuming_from_an_epoch_state_ends_exactly_like_an_uninterrupted_run(splits):
    configs = [config(epochs=3, **p) for p in PACK]
    saved = []
    whole = engine.train_pack(configs, splits, on_states=lambda state: saved.append(state))
    # After the last epoch every trial has left its slot: nothing is left to checkpoint.
    assert [len(state.members) for state in saved] == [len(PACK), len(PACK), 0]
    after_first = saved[0].resumes()
    assert [len(s.epochs) for s in after_first.values()] == [1] * len(PACK)
    resumed = engine.train_pack(configs, splits, resume=after_first)
    for a, b in zip(whole, resumed):
        assert curves(a) == curves(b)
        assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_a_pruned_trial_leaves_its_slot_and_the_checkpoint(splits):
    configs = [config(epochs=3, **p) for p in PACK]
    saved, finished = [], []
    first = engine.train_pack(configs, splits, on_epoch=lambda m: [1] if 1 in m else [],
                              on_states=lambda state: (saved.append(state),
                                                       finished.append(sorted(state.slots))))
    assert first[1].status == "pruned" and len(first[1].epochs) == 1
    assert finished[0] == [0, 2, 3] and 1 not in saved[0].members
    # Handed back as a finished trial (its own weights, its status), it is not trained again.
    resume = {**saved[0].resumes(),
              1: engine.Resume(first[1].state_dict, first[1].epochs, "pruned")}
    resumed = engine.train_pack(configs, splits, resume=resume)
    assert resumed[1].status == "pruned" and curves(resumed[1]) == curves(first[1])
    for i in (0, 2, 3):
        assert curves(resumed[i]) == curves(first[i])


# --- SGLD trials (exercise 5) --------------------------------------------------------------

def sgld_config(seed=0, exponent=0.55, epochs=3, burn_in=1, thin=1, base_lr=0.3):
    return engine.TrialConfig(schedules.build("inverse_power", base_lr=base_lr,
                                              exponent=exponent),
                              seed=seed, epochs=epochs, batch_size=64, optimizer="sgld",
                              prior_precision=1.0, burn_in=burn_in, thin=thin)


def sgld_curves(result):
    return [[m.train_loss, m.test_acc, m.test_nll, m.avg_test_acc, m.avg_test_nll,
             m.avg_test_ece, m.samples] for m in result.epochs]


def test_sgld_adds_noise_of_variance_epsilon_and_samples_after_burn_in(splits):
    sgd = engine.train(engine.TrialConfig(schedules.build("constant", base_lr=1e-12), seed=0,
                                          epochs=2, batch_size=64), splits)
    # A rate so small that the drift vanishes: the weights move by the noise alone, whose
    # variance per step is ε = 2η/N, so after S steps each weight moved by N(0, S·ε).
    tiny = engine.TrialConfig(schedules.build("constant", base_lr=1e-4), seed=0, epochs=2,
                              batch_size=64, optimizer="sgld", prior_precision=0.0)
    noisy = engine.train(tiny, splits)
    steps = 2 * engine.steps_per_epoch(len(splits.train_y), 64)
    epsilon = 2 * 1e-4 / len(splits.train_y)
    moved = torch.cat([(noisy.state_dict[k] - sgd.state_dict[k]).flatten()
                       for k in sgd.state_dict])
    assert moved.var().item() == pytest.approx(steps * epsilon, rel=0.05)
    result = engine.train(sgld_config(epochs=4, burn_in=1, thin=2), splits)
    # burn-in 1 epoch, then every 2nd epoch: samples after epochs 2 and 4 (1-based)
    assert [m.samples for m in result.epochs] == [0, 1, 1, 2]
    assert math.isnan(result.epochs[0].avg_test_acc)
    assert 0.0 < result.epochs[-1].avg_test_acc <= 1.0


def test_iterate_nll_and_ece_match_the_exported_weights(splits):
    result = engine.train(sgld_config(epochs=2), splits)
    net = lenet()
    net.load_state_dict(result.state_dict)
    with torch.no_grad():
        probs = net(splits.test_x).softmax(1)
    y = splits.test_y
    nll = -probs[torch.arange(len(y)), y].log().mean().item()
    confidence, predicted = probs.max(1)
    correct = (predicted == y).float()
    ece = 0.0
    for b in range(15):  # Guo et al.: equal-width bins (b/15, (b+1)/15]
        inside = (confidence > b / 15) & (confidence <= (b + 1) / 15)
        if inside.any():
            ece += inside.float().mean().item() * abs(correct[inside].mean().item()
                                                      - confidence[inside].mean().item())
    assert result.epochs[-1].test_nll == pytest.approx(nll, abs=1e-4)
    assert result.epochs[-1].test_ece == pytest.approx(ece, abs=1e-4)


@pytest.mark.parametrize("optimizer", ["sgld", "sgld_without_noise"])
def test_every_epoch_of_an_averaging_pack_is_its_trials_epoch_alone(two_steps, optimizer):
    # As for SGD packs above; SGLD's noise comes from each trial's own generator, and the
    # noiseless control also matches torch's SGD with the prior's weight decay.
    configs = [dataclasses.replace(sgld_config(seed=1, base_lr=0.05, burn_in=1),
                                   optimizer=optimizer),
               dataclasses.replace(sgld_config(seed=2, exponent=1.0, base_lr=0.05, burn_in=1),
                                   optimizer=optimizer)]
    assert_each_epoch_is_alone_and_plain_sgd(configs, two_steps)


def test_sgld_without_noise_averages_like_sgld_and_draws_no_noise(splits):
    sgld, quiet = (engine.train(dataclasses.replace(sgld_config(epochs=4, burn_in=1, thin=2),
                                                    optimizer=o), splits)
                   for o in ("sgld", "sgld_without_noise"))
    assert [m.samples for m in quiet.epochs] == [m.samples for m in sgld.epochs] == [0, 1, 1, 2]
    assert 0.0 < quiet.epochs[-1].avg_test_acc <= 1.0
    again = engine.train(quiet.config, splits)
    # Compared as text: the averages are NaN before the first sample, and NaN != NaN.
    assert str(sgld_curves(again)) == str(sgld_curves(quiet))  # nothing random in it
    assert str(sgld_curves(quiet)) != str(sgld_curves(sgld))


def test_sgld_resumes_its_noise_and_its_posterior_average_exactly(splits):
    configs = [sgld_config(seed=1, epochs=4), sgld_config(seed=2, epochs=4)]
    saved = []
    whole = engine.train_pack(configs, splits, on_states=saved.append)
    resumed = engine.train_pack(configs, splits, resume=saved[1].resumes())  # after epoch 2
    for a, b in zip(whole, resumed):
        assert sgld_curves(a) == sgld_curves(b)
        assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_sgld_noise_saved_on_another_device_type_goes_on_with_a_new_stream(splits):
    configs = [sgld_config(seed=1, epochs=3)]
    saved = []
    whole = engine.train_pack(configs, splits, on_states=saved.append)
    # A checkpoint from a GPU: its generator state means nothing to a CPU generator.
    moved = {k: dataclasses.replace(r, sampler={**r.sampler, "device_type": "cuda"})
             for k, r in saved[0].resumes().items()}
    with pytest.warns(UserWarning, match="saved on cuda and cannot continue on cpu; from "
                                         "epoch 2 its noise is a new stream"):
        resumed = engine.train_pack(configs, splits, resume=moved)
    a, b = sgld_curves(whole[0]), sgld_curves(resumed[0])
    assert a[:1] == b[:1] and len(b) == 3          # the first epoch kept, the rest trained
    assert a[1:] != b[1:] and all(math.isfinite(m.train_loss) for m in resumed[0].epochs)


def test_a_pack_must_share_its_optimizer(splits):
    with pytest.raises(ValueError, match="optimizer"):
        engine.train_pack([config(epochs=3), sgld_config(epochs=3)], splits)


# --- ResNet-18 trials (exercise 3): a looped pack ------------------------------------------

@pytest.fixture(scope="module")
def tiny(fashion_dir):
    full = data.load("cpu", data_dir=fashion_dir, validation=20, subset=64)
    return data.Splits(full.train_x, full.train_y, full.val_x, full.val_y, full.test_x[:40],
                       full.test_y[:40], full.source)


def resnet_config(seed):
    return engine.TrialConfig(schedules.build("constant", base_lr=0.05), seed=seed, epochs=1,
                              batch_size=32, model="resnet18")


def test_resnet_trials_in_a_pack_equal_the_same_trials_alone(tiny):
    packed = engine.train_pack([resnet_config(0), resnet_config(1)], tiny)
    alone = engine.train(resnet_config(1), tiny)
    assert curves(packed[1]) == curves(alone)  # each network runs on its own: to the bit
    from lrsweep.train.resnet import resnet18
    net = resnet18(seed=None)
    net.load_state_dict(packed[0].state_dict)  # BatchNorm statistics included
    net.eval()
    with torch.no_grad():
        acc = (net(tiny.test_x).argmax(1) == tiny.test_y).float().mean().item()
    assert acc == pytest.approx(packed[0].epochs[-1].test_acc, abs=1e-6)


def test_lenet_refuses_images_it_cannot_take(tiny):
    rgb = data.Splits(tiny.train_x.expand(-1, 3, -1, -1), tiny.train_y, tiny.val_x, tiny.val_y,
                      tiny.test_x, tiny.test_y, tiny.source)
    with pytest.raises(ValueError, match="LeNet takes 1×28×28 images of 10 classes"):
        engine.train(config(epochs=1), rgb)


def test_a_trial_records_its_models_trainable_parameters(splits, tiny):
    lenet_count = sum(p.numel() for p in lenet(0).parameters())
    packed = engine.train_pack([config(epochs=1, seed=s) for s in (0, 1, 2)], splits)
    assert [r.parameters for r in packed] == [lenet_count] * 3  # a trial's, not the pack's
    from lrsweep.train.resnet import resnet18
    looped = engine.train_pack([dataclasses.replace(config(epochs=1, seed=s), model="resnet18")
                                for s in (0, 1)], tiny)
    assert [r.parameters for r in looped] == [sum(
        p.numel() for p in resnet18(0, num_classes=tiny.classes).parameters())] * 2


# --- outcomes: diverged (non-finite or collapsed) against never learned ----------------------

def epoch_with(train_acc, train_loss=1.0, test_nll=1.0):
    return engine.EpochMetrics(0, 0.1, train_loss, train_acc, 1.0, 0.5, 0.5, 1.0,
                               test_nll=test_nll)


@pytest.mark.parametrize("best, now, loss, nll, outcome", [
    (0.60, 0.10, 2.3026, 2.30, ("diverged", "collapsed")),  # learned, then back at chance
    (0.50, 0.20, 2.3026, 2.30, ("diverged", "collapsed")),  # exactly at both thresholds
    (0.49, 0.10, 2.3026, 2.30, ("complete", None)),         # never learned: no collapse
    (0.90, 0.21, 2.0, 2.0, ("complete", None)),             # a bad epoch, above chance
    (0.90, 0.85, math.nan, 0.3, ("diverged", "nonfinite")),
    (0.10, 0.10, 0.5, math.inf, ("diverged", "nonfinite")),  # blown up at the last step
    (0.30, 0.10, 1e9, 1e9, ("diverged", "nonfinite")),     # blown up, still finite
    (0.30, 0.10, 230.0, 2.3, ("complete", None)),          # just inside the bound
    (0.30, 0.10, 2.3, 231.0, ("diverged", "nonfinite")),   # its test loss beyond it
])
def test_an_epoch_is_judged_collapsed_nonfinite_or_fine(best, now, loss, nll, outcome):
    result = engine.TrialResult(config())
    engine._judge(result, epoch_with(now, loss, nll), best, chance_levels(10), loss_bound(10))
    assert (result.status, result.diverged) == outcome


def test_a_trial_that_never_learns_completes_at_chance_without_diverging(splits):
    result = engine.train(config(epochs=2, base_lr=1e-9), splits)
    assert result.status == "complete" and result.diverged is None
    assert all(m.train_acc < chance_levels(10)[0] for m in result.epochs)


# --- batch invariance: a trial's numbers are a function of its configuration and seed ------

def company(trial, others):
    """The trial alone and in packs of every kind: first and last of 4, inside odd packs (3,
    5, padded to even widths), 6th of 8, and beside trials of its own seed (one shared
    batch). Returns (name, configs, the trial's position)."""
    same_seed = [dataclasses.replace(o, seed=trial.seed) for o in others[:3]]
    packs = {"alone": [trial], "first of 4": [trial] + others[:3],
             "last of 4": others[3:6] + [trial], "2nd of 3": [others[0], trial, others[1]],
             "4th of 5": others[2:5] + [trial, others[6]],
             "6th of 8": others[:5] + [trial] + others[5:7],
             "beside its own seed": same_seed + [trial]}
    return [(name, configs, configs.index(trial)) for name, configs in packs.items()]


@pytest.mark.parametrize("optimizer", ["sgd", "sgld"])
def test_a_trials_numbers_do_not_depend_on_its_pack(two_steps, optimizer, convolutions):
    # On the CPU, bit for bit: every epoch's metrics and the final weights, whatever the
    # pack's size, the trial's position in it and the trials beside it.
    def make(name, seed, **params):
        return dataclasses.replace(config(epochs=3, name=name, seed=seed, **params),
                                   optimizer=optimizer, burn_in=1)
    trial = make("cosine", 5, base_lr=0.2, max_update=3)
    others = [make("constant", 1, base_lr=0.3), make("sqrt", 2, base_lr=0.05),
              make("constant", 3, base_lr=0.02), make("sqrt", 4, base_lr=0.5),
              make("cosine", 6, base_lr=0.1, max_update=3), make("constant", 7, base_lr=0.1),
              make("sqrt", 8, base_lr=0.3)]
    runs = {name: engine.train_pack(configs, two_steps)[k]
            for name, configs, k in company(trial, others)}
    alone = runs.pop("alone")
    assert alone.status == "complete" and len(alone.epochs) == 3
    for name, result in runs.items():
        assert result.pack_size > 1
        assert all(same_numbers(a, b) for a, b in zip(result.epochs, alone.epochs)), name
        assert all(torch.equal(result.state_dict[key], value)
                   for key, value in alone.state_dict.items()), name


@pytest.mark.parametrize("formulation", CONVOLUTIONS)
def test_a_trials_evaluation_does_not_depend_on_its_pack(fashion_dir, formulation):
    # On the whole test set (10,000 images on the real data: 40 passes, the last partial),
    # the same bits for a trial's loss, accuracy and probabilities whatever the pack's width
    # and the trial's place in it. (The training tests evaluate on a few hundred images.)
    full = data.load("cpu", data_dir=fashion_dir, validation=200, subset=128)

    def net(seed):
        # Weights ×3: logits, and so losses, that differ from image to image as a trained
        # network's do (an untrained LeNet's are near uniform, and hide a summation order).
        plain = lenet(seed=seed)
        with torch.no_grad():
            for p in plain.parameters():
                p.mul_(3)
        return plain

    trial, others = net(5), [net(s) for s in range(7)]
    packs = {"2, first": [trial] + others[:1], "4, last": others[:3] + [trial],
             "8, 6th": others[:5] + [trial] + others[5:]}
    seen = {}
    for name, nets in packs.items():
        # In channels-last memory, as a CPU pack's.
        packed = PackedLeNet(nets, formulation).to(memory_format=torch.channels_last)
        losses, accs, probs = evaluate.evaluate(packed, full.test_x, full.test_y, len(nets),
                                                keep_probs=True)
        k = nets.index(trial)
        seen[name] = (losses[k], accs[k], probs[k])
    first = seen.pop("2, first")
    for name, (loss, acc, probs) in seen.items():
        assert (loss, acc) == first[:2] and torch.equal(probs, first[2]), name


# --- slots: trials come and go at epoch boundaries ----------------------------------------

def run_slots(width, splits, plan, prune=None):
    """Train (key, config) pairs through `width` slots, admitted in order as slots free up;
    `prune` maps a key to the epoch after which it is pruned. Returns each key's result and
    the admissions as (epochs trained so far by the pack, keys admitted)."""
    waiting, prune = list(plan), prune or {}
    results, admissions, boundaries = {}, [], [0]

    def admit(n):
        taken, waiting[:] = waiting[:n], waiting[n:]
        admissions.append((boundaries[0], [key for key, _ in taken]))
        return [engine.Admission(key, cfg) for key, cfg in taken]

    def on_epoch(metrics):
        boundaries[0] += 1
        return [key for key, m in metrics.items() if prune.get(key) == m.epoch]

    engine.train_slots(width, splits, admit, on_finish=results.__setitem__, on_epoch=on_epoch)
    return results, admissions


@pytest.mark.parametrize("optimizer", ["sgd", "sgld"])
def test_a_trial_that_starts_in_a_freed_slot_ends_as_it_would_alone(two_steps, optimizer):
    def make(name, seed, **params):
        return dataclasses.replace(config(epochs=3, name=name, seed=seed, **params),
                                   optimizer=optimizer, burn_in=1)
    plan = [("a", make("cosine", 5, base_lr=0.2, max_update=3)),
            ("b", make("constant", 1, base_lr=0.3)), ("c", make("sqrt", 2, base_lr=0.05)),
            ("d", make("constant", 5, base_lr=0.1)), ("e", make("sqrt", 3, base_lr=0.5))]
    # b leaves after its first epoch, d after its second: c, d and e start at epochs 1, 3, 4
    # of the pack, beside trials at other epochs of their own.
    results, admissions = run_slots(2, two_steps, plan, prune={"b": 0, "d": 1})
    assert admissions[:4] == [(0, ["a", "b"]), (1, ["c"]), (3, ["d"]), (4, ["e"])]
    for key, cfg in plan:
        alone = engine.train(cfg, two_steps)
        got = results[key]
        assert got.status == ("pruned" if key in ("b", "d") else "complete"), key
        assert all(same_numbers(a, b) for a, b in zip(got.epochs, alone.epochs)), key
        if got.status == "complete":
            assert len(got.epochs) == 3 and all(
                torch.equal(got.state_dict[k], v) for k, v in alone.state_dict.items()), key


def test_a_pruned_trials_slot_is_refilled_before_the_next_epoch(two_steps):
    plan = [(key, config(epochs=3, seed=i, base_lr=0.1)) for i, key in enumerate("abcd")]
    results, admissions = run_slots(2, two_steps, plan, prune={"a": 0})
    # After the pack's first epoch: a out, c in; c's first epoch is trained beside b's second.
    assert admissions[1] == (1, ["c"])
    assert [m.epoch for m in results["c"].epochs] == [0, 1, 2]
    assert results["a"].status == "pruned" and len(results["a"].epochs) == 1
    # Each epoch records the trials that shared its time: d came as b left, then trained alone.
    assert [m.pack_trials for m in results["c"].epochs] == [2, 2, 2]
    assert [m.pack_trials for m in results["d"].epochs] == [2, 1, 1]


def test_trials_continued_at_different_epochs_share_a_pack_and_end_as_uninterrupted(two_steps):
    a = config(epochs=3, name="cosine", seed=1, base_lr=0.2, max_update=3)
    b = config(epochs=3, name="sqrt", seed=2, base_lr=0.3)
    states = []
    whole_a = engine.train_pack([a], two_steps, on_states=states.append)[0]
    whole_b = engine.train(b, two_steps)
    after_one = states[0].resumes()[0]
    # a goes on from its second epoch while b starts from its first, in one pack.
    both = engine.train_pack([a, b], two_steps, resume=[after_one, None])
    for got, whole in ((both[0], whole_a), (both[1], whole_b)):
        assert all(same_numbers(x, y) for x, y in zip(got.epochs, whole.epochs))
        assert len(got.epochs) == 3
        assert all(torch.equal(got.state_dict[k], v) for k, v in whole.state_dict.items())


def test_more_trials_than_free_slots_are_refused(two_steps):
    with pytest.raises(ValueError, match="3 trials admitted into 2 free slots"):
        engine.train_slots(2, two_steps, lambda n: [engine.Admission(i, config(epochs=1))
                                                    for i in range(3)],
                           on_finish=lambda key, result: None)


# --- a pack taken over is rebuilt as it was ---------------------------------------------------

def test_continued_trials_take_the_slots_they_trained_in():
    def admission(key, slot=None):
        resume = engine.Resume(None, [], slot=slot) if slot is not None else None
        return engine.Admission(key, config(), resume)
    # a continued trial its own slot, when free; the others the free slots left, in order
    assert engine._places([0, 1, 2, 3], [admission("a", 2), admission("b"),
                                         admission("c", 0)]) == [2, 1, 0]
    # its slot taken (or two naming one): the first free slot left
    assert engine._places([1, 3], [admission("a", 0), admission("b", 3)]) == [1, 3]
    assert engine._places([0, 1], [admission("a", 1), admission("b", 1)]) == [1, 0]


def test_a_pack_continued_from_its_slot_table_puts_each_trial_back_in_its_slot(
        two_steps, monkeypatch):
    # Four trials train an epoch; the slot table of that epoch is continued with the
    # admissions in another order: each trial goes back to its slot, in a pack as wide.
    configs = [config(seed=s, epochs=2, base_lr=0.05 * (s + 1)) for s in range(4)]
    states = []
    given = iter([[engine.Admission(k, c) for k, c in enumerate(configs)]])
    engine.train_slots(4, two_steps, lambda n: next(given, []), on_finish=lambda k, r: None,
                       on_epoch=lambda m: [], on_states=states.append)
    first = states[0]
    placed = {}
    load = pack.Pack.load
    monkeypatch.setattr(pack.Pack, "load", lambda self, i, c, r=None: (
        placed.__setitem__(c.seed, (i, self.width)), load(self, i, c, r))[1])
    resumes = first.resumes()
    order = [3, 1, 0, 2]
    given = iter([[engine.Admission(k, configs[k], resumes[k]) for k in order]])
    engine.train_slots(first.width, two_steps, lambda n: next(given, []),
                       on_finish=lambda k, r: None, on_epoch=lambda m: [])
    assert placed == {k: (first.slots[k], 4) for k in range(4)}


@pytest.mark.parametrize("field, value, says", [
    ("epochs", 0, "epochs: a whole number ≥ 1, got 0"),  # had trained one epoch
    ("batch_size", 0, "batch_size: a whole number ≥ 1, got 0"),  # had divided by zero
    ("unit", "steps", "unit: 'steps' is not one of epoch, step"),  # had trained per epoch
    ("model", "LeNet", "model: 'LeNet' is not one of lenet, resnet18"),
    ("optimizer", "adam", "optimizer: 'adam' is not one of sgd, sgld, sgld_without_noise"),
    ("seed", -1, "seed: a whole number ≥ 0, got -1"),
    ("seed", 2**32, "seed: at most 4294967295 (2**32 - 1), got 4294967296"),
    ("thin", 1.5, "thin: a whole number ≥ 1, got 1.5"),
])
def test_a_trial_config_the_engine_cannot_train_is_refused_naming_the_field(field, value, says):
    with pytest.raises(ValueError, match=f"^TrialConfig {re.escape(says)}$"):
        engine.TrialConfig(schedules.build("constant", base_lr=0.1), **{field: value})
