"""The packed LeNet against K plain LeNets: same outputs, same gradients, same weights back."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lrsweep.train.model import CONVOLUTIONS, PackedLeNet, lenet

SEEDS = (0, 1, 2, 5)


@pytest.fixture
def nets():
    return [lenet(seed) for seed in SEEDS]


def test_plain_lenet_has_the_chapters_layers():
    net = lenet(0)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == {"0.weight": (6, 1, 5, 5), "0.bias": (6,), "3.weight": (16, 6, 5, 5),
                      "3.bias": (16,), "7.weight": (120, 400), "7.bias": (120,),
                      "9.weight": (84, 120), "9.bias": (84,), "11.weight": (10, 84),
                      "11.bias": (10,)}


@pytest.mark.parametrize("convolutions", CONVOLUTIONS)
@pytest.mark.parametrize("shared", [False, True])
def test_packed_outputs_equal_each_plain_net(nets, shared, convolutions):
    torch.manual_seed(0)
    x = torch.rand(9, 1 if shared else len(nets), 28, 28)
    out = PackedLeNet(nets, convolutions)(x)
    assert out.shape == (len(nets), 9, 10)
    for k, net in enumerate(nets):
        own = x if shared else x[:, k:k + 1]
        torch.testing.assert_close(out[k], net(own), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("convolutions", CONVOLUTIONS)
@pytest.mark.parametrize("shared", [False, True])
def test_gradient_of_summed_losses_is_each_trials_solo_gradient(nets, shared, convolutions):
    torch.manual_seed(1)
    x = torch.rand(16, 1 if shared else len(nets), 28, 28)
    y = torch.randint(0, 10, (len(nets), 16))
    packed = PackedLeNet(nets, convolutions)
    losses = F.cross_entropy(packed(x).transpose(1, 2), y, reduction="none").mean(1)
    losses.sum().backward()
    grads = {name: p.grad for name, p in packed.named_parameters()}
    for k, net in enumerate(nets):
        F.cross_entropy(net(x if shared else x[:, k:k + 1]), y[k]).backward()
        ours = PackedLeNet.unpack(grads, k)  # trial k's gradients in the plain layout
        for key, p in net.named_parameters():
            torch.testing.assert_close(ours[key], p.grad, rtol=1e-4, atol=1e-6, msg=key)


def test_the_patches_formulation_computes_with_the_same_weights_in_more_memory(nets):
    grouped, patches = PackedLeNet(nets), PackedLeNet(nets, "patches")
    assert all(torch.equal(a, b) for a, b in zip(grouped.parameters(), patches.parameters()))
    # Its widest tensor: 32 values (a 5×5 patch and padding) per pixel and trial, not 6.
    assert patches.widest_activation_bytes((1, 28, 28)) == len(nets) * 28 * 28 * 32 * 4
    assert grouped.widest_activation_bytes((1, 28, 28)) == len(nets) * 28 * 28 * 6 * 4
    with pytest.raises(ValueError, match="unknown convolutions 'gemm'; use one of grouped, "
                                         "patches"):
        PackedLeNet(nets, "gemm")


def test_trial_state_dict_round_trips_into_the_plain_lenet(nets):
    packed = PackedLeNet(nets)
    for k, net in enumerate(nets):
        state = packed.trial_state_dict(k)
        assert state.keys() == net.state_dict().keys()
        for key, value in net.state_dict().items():
            assert torch.equal(state[key], value), key
        plain = lenet()
        plain.load_state_dict(state)  # strict: every key and shape matches


def test_one_trial_pack_equals_the_plain_net():
    net = lenet(3)
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(PackedLeNet([net])(x)[0], net(x), rtol=1e-5, atol=1e-6)


def test_trial_state_dict_is_a_copy_not_a_view_of_the_live_weights(nets):
    packed = PackedLeNet(nets)
    state = packed.trial_state_dict(1)
    before = {k: v.clone() for k, v in state.items()}
    with torch.no_grad():
        for p in packed.parameters():
            p.zero_()
    assert all(torch.equal(state[k], before[k]) for k in state)


def test_a_packed_lenet_weighs_its_first_convolution_for_every_trial():
    packed = PackedLeNet([lenet(seed=s) for s in range(3)])
    assert packed.widest_activation_bytes((1, 28, 28)) == 3 * 6 * 28 * 28 * 4
