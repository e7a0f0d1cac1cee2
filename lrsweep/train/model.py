"""The chapter's modernised LeNet (ReLU, max pooling) for 1×28×28 images and 10 classes.

    >>> import torch
    >>> from lrsweep.train.model import lenet
    >>> lenet(seed=0)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lrsweep.train import patches, shared_batch


CONV1_CHANNELS = 6  # the first convolution's output channels: LeNet's widest activation
CONVOLUTIONS = ("grouped", "patches")  # PackedLeNet's formulations of its convolutions


def lenet(seed: int | None = None) -> nn.Sequential:
    """The chapter's `net_fn()`, with PyTorch's default initialisation. With a seed the weights
    depend on it alone (built on the CPU under a forked RNG, whatever the device or caller)."""
    if seed is None:
        return _build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build()


def _build() -> nn.Sequential:
    # nn.Sequential with the chapter's layer order, so state_dict keys match its net_fn().
    return nn.Sequential(
        nn.Conv2d(1, CONV1_CHANNELS, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Conv2d(CONV1_CHANNELS, 16, kernel_size=5), nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10))


class PackedLeNet(nn.Module):
    """K LeNets as one module (HFTA, Wang et al. 2021): grouped convolutions and batched matrix
    products, so one kernel launch serves every trial of the pack.

    Trial k's layers are exactly those of the plain LeNet it was built from; `trial_state_dict`
    hands them back in the plain layout. `convolutions` chooses how the two convolutions are
    computed: "grouped" (cuDNN's / oneDNN's grouped kernels) or "patches" (batched matrix
    products over image patches, `patches.convolutions`); the weights are the same tensors.

        >>> import torch
        >>> packed = PackedLeNet([lenet(seed=s) for s in (0, 1, 2)])
        >>> packed(torch.zeros(5, 3, 28, 28)).shape          # each trial its own images
        torch.Size([3, 5, 10])
        >>> packed(torch.zeros(5, 1, 28, 28)).shape          # one batch shared by all
        torch.Size([3, 5, 10])
    """

    def __init__(self, nets: list[nn.Sequential], convolutions: str = "grouped") -> None:
        super().__init__()
        if convolutions not in CONVOLUTIONS:
            raise ValueError(f"unknown convolutions {convolutions!r}; use one of "
                             f"{', '.join(CONVOLUTIONS)}")
        self.k = len(nets)
        self.convolutions = convolutions
        states = [net.state_dict() for net in nets]
        # Conv weights stacked along output channels: group k holds trial k's filters.
        self.conv1_w = nn.Parameter(torch.cat([s["0.weight"] for s in states]))
        self.conv1_b = nn.Parameter(torch.cat([s["0.bias"] for s in states]))
        self.conv2_w = nn.Parameter(torch.cat([s["3.weight"] for s in states]))
        self.conv2_b = nn.Parameter(torch.cat([s["3.bias"] for s in states]))
        # Linear weights as (K, in, out) for baddbmm; biases as (K, 1, out).
        for name, key in _LINEARS:
            self.register_parameter(f"{name}_w", nn.Parameter(
                torch.stack([s[f"{key}.weight"].t() for s in states]).contiguous()))
            self.register_parameter(f"{name}_b", nn.Parameter(
                torch.stack([s[f"{key}.bias"] for s in states]).unsqueeze(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, K, 28, 28), trial k's images in channel k, or (B, 1, 28, 28) shared by all.
        Returns logits (K, B, 10)."""
        k = self.k
        if self.convolutions == "patches":
            h = patches.convolutions(x, self.conv1_w, self.conv1_b, self.conv2_w, self.conv2_b,
                                     k)                                 # (K, B, 400)
        else:
            h = self._grouped_convolutions(x)
        h = F.relu(torch.baddbmm(self.fc1_b, h, self.fc1_w))
        h = F.relu(torch.baddbmm(self.fc2_b, h, self.fc2_w))
        return torch.baddbmm(self.fc3_b, h, self.fc3_w)

    def _grouped_convolutions(self, x: torch.Tensor) -> torch.Tensor:
        """Both convolutions as grouped ones, each trial a group: (K, B, 400) features."""
        k = self.k
        if x.shape[1] == 1 and k > 1 and x.device.type == "cpu":
            # A shared batch on the CPU: each trial gets the bits of the grouped convolution
            # that trials with their own orders run (batch invariance), without the copy
            # where the CPU's kernels allow (shared_batch).
            h = shared_batch.first_convolution(x, self.conv1_w, self.conv1_b, k)
        else:
            # On a GPU a shared batch runs one dense convolution: cuDNN's grouped kernels
            # round by pack size anyway (no invariance to keep, results/benchmarks/
            # invariance-gpu-*.txt) and the dense one is faster: K = 128 shared, 4.6 s an
            # epoch grouped on an H200 (bench-gpu-2026-11-30), about 2.9 s dense in issue
            # #17's measurement (not kept in this repository).
            groups = 1 if x.shape[1] == 1 else k
            h = F.conv2d(x, self.conv1_w, self.conv1_b, padding=2, groups=groups)
        # Pool before ReLU: the same numbers (max and ReLU commute) with ReLU on 4× fewer
        # values; ReLU's backward was 18% of a CPU step in the plain order.
        h = F.relu(F.max_pool2d(h, 2))
        h = F.relu(F.max_pool2d(F.conv2d(h, self.conv2_w, self.conv2_b, groups=k), 2))
        return h.reshape(h.shape[0], k, 16 * 5 * 5).transpose(0, 1)  # per-trial order

    def widest_activation_bytes(self, image_shape: tuple[int, ...]) -> int:
        """Bytes of the widest activation one image makes in the whole pack at once: the
        first convolution's output, every trial's channels at full size (its patches, with
        the patches formulation)."""
        size = self.conv1_w.element_size()
        if self.convolutions == "patches":
            return patches.widest_bytes_per_image(self.k, image_shape, size)
        return self.conv1_w.shape[0] * image_shape[-2] * image_shape[-1] * size

    @torch.no_grad()
    def trial_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Trial k as a state_dict for the plain `lenet()`: CPU copies (never views of the
        live weights, which train on or are zeroed when the trial is masked)."""
        return self.unpack(dict(self.named_parameters()), k)

    LAYOUT = "packed-lenet"

    @torch.no_grad()
    def pack_state(self) -> dict[str, torch.Tensor]:
        """Every trial's weights at once, in the pack's layout (`unpack` takes trial k out):
        one CPU copy per packed tensor. A checkpoint of 100 trials then pickles 10 tensors,
        not 1,000 (4× faster), and a GPU makes 10 copies to the host, not 1,000."""
        return {name: p.to("cpu").clone(memory_format=torch.contiguous_format)
                for name, p in self.named_parameters()}

    @torch.no_grad()
    def load_trial(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Put a plain `lenet()` state_dict into slot k (the inverse of `unpack`): the values
        are copied exactly, so a trial that starts in a slot turned over starts from what a
        pack built with it would hold."""
        for name, key in (("conv1", 0), ("conv2", 3)):
            for part, suffix in (("w", "weight"), ("b", "bias")):
                getattr(self, f"{name}_{part}").unflatten(0, (self.k, -1))[k].copy_(
                    state[f"{key}.{suffix}"])
        for name, key in _LINEARS:
            getattr(self, f"{name}_w")[k].copy_(state[f"{key}.weight"].t())
            getattr(self, f"{name}_b")[k, 0].copy_(state[f"{key}.bias"])

    @staticmethod
    def unpack(weights: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        """Trial k of a pack's weights (its parameters, or `pack_state`) as a state_dict for
        the plain `lenet()`, in CPU copies of its own."""
        def take(p: torch.Tensor) -> torch.Tensor:
            return p.to("cpu").clone(memory_format=torch.contiguous_format)
        trials = weights["fc1_w"].shape[0]
        state = {}
        for name, key in (("conv1", 0), ("conv2", 3)):
            for part, suffix in (("w", "weight"), ("b", "bias")):
                state[f"{key}.{suffix}"] = take(
                    weights[f"{name}_{part}"].unflatten(0, (trials, -1))[k])
        for name, key in _LINEARS:
            state[f"{key}.weight"] = take(weights[f"{name}_w"][k].t())
            state[f"{key}.bias"] = take(weights[f"{name}_b"][k, 0])
        return state


_LINEARS = (("fc1", 7), ("fc2", 9), ("fc3", 11))  # our name, index in the plain Sequential


class LoopedPack(nn.Module):
    """K independent networks side by side, each run on its own: the pack form of models that
    HFTA-style fusion does not serve here (ResNet-18 is compute-bound, and BatchNorm would
    need per-trial statistics). The engine treats it like PackedLeNet: one input, logits
    (K, B, classes), per-trial weights, per-trial state_dicts.

        >>> import torch
        >>> pack = LoopedPack([lenet(seed=s) for s in (0, 1)])
        >>> pack(torch.zeros(5, 1, 28, 28)).shape              # one batch shared by all
        torch.Size([2, 5, 10])
        >>> pack(torch.zeros(2, 5, 1, 28, 28)).shape           # (K, B, …): each its own
        torch.Size([2, 5, 10])
    """

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.k = len(nets)
        self.nets = nn.ModuleList(nets)
        self._widest: dict[tuple[int, ...], int] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        own = x.dim() == 5
        return torch.stack([net(x[i] if own else x) for i, net in enumerate(self.nets)])

    @torch.no_grad()
    def widest_activation_bytes(self, image_shape: tuple[int, ...]) -> int:
        """Bytes of the widest activation one image makes: the networks run one after
        another, so one network's widest, found by passing one image through the first."""
        if image_shape not in self._widest:
            net, widest = self.nets[0], [0]

            def measure(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
                if isinstance(output, torch.Tensor):
                    widest[0] = max(widest[0], output.numel() * output.element_size())

            leaves = [m for m in net.modules() if not list(m.children())]
            hooks = [m.register_forward_hook(measure) for m in leaves]
            training = net.training
            try:
                net.eval()  # BatchNorm: no statistics from (or of) a single image
                first = next(net.parameters())
                net(torch.zeros(1, *image_shape, device=first.device, dtype=first.dtype))
            finally:
                net.train(training)
                for hook in hooks:
                    hook.remove()
            self._widest[image_shape] = widest[0]
        return self._widest[image_shape]

    @torch.no_grad()
    def load_trial(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Put a state_dict into network k (its parameters stay the same tensors)."""
        self.nets[k].load_state_dict(state)

    def trial_parameters(self) -> list[list[nn.Parameter]]:
        return [list(net.parameters()) for net in self.nets]

    @torch.no_grad()
    def trial_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Trial k's state_dict (BatchNorm statistics included), as CPU copies."""
        return {key: value.to("cpu").clone(memory_format=torch.contiguous_format)
                for key, value in self.nets[k].state_dict().items()}

    LAYOUT = "looped"

    def pack_state(self) -> dict[str, torch.Tensor]:
        """Every trial's state_dict in one, its keys prefixed by the trial's index."""
        return {f"{k}.{key}": value for k in range(self.k)
                for key, value in self.trial_state_dict(k).items()}

    @staticmethod
    def unpack(weights: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        prefix = f"{k}."
        return {key.removeprefix(prefix): value.clone() for key, value in weights.items()
                if key.startswith(prefix)}


def unpack(layout: str, weights: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Trial k's state_dict from a pack's `pack_state()`, by the pack's LAYOUT."""
    packs = {cls.LAYOUT: cls for cls in (PackedLeNet, LoopedPack)}
    if layout not in packs:
        raise ValueError(f"unknown pack layout {layout!r}")
    return packs[layout].unpack(weights, k)
