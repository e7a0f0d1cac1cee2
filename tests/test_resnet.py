"""Tests for lrsweep.resnet: the stem for small and large images, seeding, learning, and
torchvision-compatible weights.

ResNet-18 is slow on a 2-core CPU (about 1.3 GFLOP per 28×28 image for forward and
backward), so forward passes use 2 images and the learning test 64 images of 12×12.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from lrsweep.train.resnet import resnet18

# torchvision's ResNet-18 has 11,689,512 parameters (3 input channels, 1000 classes), of
# which 9,408 in the 7×7×3×64 stem and 513,000 in the 512→1000 classifier.
IMAGENET_PARAMS, IMAGENET_STEM, IMAGENET_FC = 11_689_512, 7 * 7 * 3 * 64, 512 * 1000 + 1000


@pytest.fixture(autouse=True)
def one_thread():
    # On a loaded 2-core machine a second intra-op thread made these convolutions 7× slower
    # (it waits for a core that another process holds); one thread is the faster choice.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def last_stage_shape(net: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    seen = []
    handle = net.layer4.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    with torch.no_grad():
        out = net.eval()(x)
    handle.remove()
    assert out.shape == (x.shape[0], net.fc.out_features)
    return seen[0]


def test_small_greyscale_images_keep_a_4x4_last_stage():
    net = resnet18(0)
    # 28 → 28 (3×3 stride-1 stem, no max-pool) → 28, 14, 7, 4 through the four stages.
    assert last_stage_shape(net, torch.rand(2, 1, 28, 28)) == (2, 512, 4, 4)
    assert isinstance(net.maxpool, nn.Identity)
    assert (net.conv1.kernel_size, net.conv1.stride, net.conv1.in_channels) == ((3, 3), (1, 1), 1)
    assert n_params(net) == IMAGENET_PARAMS - IMAGENET_STEM - IMAGENET_FC + 3 * 3 * 1 * 64 + 5130


def test_64_pixel_colour_images_use_the_small_stem():
    net = resnet18(0, in_channels=3, num_classes=7, image_size=64)
    assert last_stage_shape(net, torch.rand(2, 3, 64, 64)) == (2, 512, 8, 8)
    assert net.fc.out_features == 7


def test_large_images_keep_the_imagenet_stem():
    net = resnet18(0, in_channels=1, image_size=96)
    # 96 → 48 (7×7 stride 2) → 24 (max-pool) → 24, 12, 6, 3.
    assert last_stage_shape(net, torch.rand(2, 1, 96, 96)) == (2, 512, 3, 3)
    assert isinstance(net.maxpool, nn.MaxPool2d)
    assert (net.conv1.kernel_size, net.conv1.stride, net.conv1.in_channels) == ((7, 7), (2, 2), 1)
    assert n_params(net) == IMAGENET_PARAMS - IMAGENET_STEM - IMAGENET_FC + 7 * 7 * 1 * 64 + 5130


def test_weights_depend_on_the_seed_alone():
    torch.manual_seed(123)
    a = resnet18(5).state_dict()
    torch.manual_seed(456)  # the caller's RNG state does not matter …
    b = resnet18(5).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)
    c = resnet18(6).state_dict()
    for key in ("conv1.weight", "layer1.0.conv1.weight", "fc.weight"):
        assert not torch.equal(a[key], c[key]), key
    # … and is left as it was: building under a seed forks the RNG.
    torch.manual_seed(7)
    resnet18(5)
    after = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after, torch.rand(3))


def test_stem_is_initialised_like_torchvisions_convolutions():
    # Kaiming normal, fan-out, ReLU gain: std = sqrt(2 / (64 · 3 · 3)).
    w = resnet18(0).conv1.weight
    assert float(w.detach().std()) == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.1)


def test_a_few_sgd_steps_learn_a_learnable_batch():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 10
    x = 0.2 * torch.rand(64, 1, 12, 12, generator=g)
    for i, c in enumerate(y.tolist()):  # class c lights up row c: learnable by any CNN
        x[i, 0, c + 1] += 0.8
    net = resnet18(0, image_size=12)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_state_dict_loads_into_torchvisions_resnet18_adapted_the_same_way():
    ours = resnet18(3, in_channels=1, num_classes=10, image_size=28)
    theirs = torchvision.models.resnet18(weights=None, num_classes=10)
    theirs.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    theirs.maxpool = nn.Identity()
    theirs.load_state_dict(ours.state_dict())  # strict: every key and shape matches
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(theirs.eval()(x), ours.eval()(x))


@pytest.mark.parametrize("size, widest", [
    (28, 64 * 28 * 28 * 4),     # the small-image stem keeps full size: 64 channels
    (224, 64 * 112 * 112 * 4),  # the ImageNet stem halves it before the max-pool
])
def test_a_looped_pack_weighs_one_networks_widest_activation(size, widest):
    from lrsweep.train.model import LoopedPack
    pack = LoopedPack([resnet18(seed, in_channels=3, image_size=size) for seed in (0, 1)])
    pack.train()
    assert pack.widest_activation_bytes((3, size, size)) == widest
    assert pack.training and all(net.training for net in pack.nets)  # left as it was
    bn = pack.nets[0].bn1
    assert int(bn.num_batches_tracked) == 0  # the probe image changed no statistics
