"""Stochastic Gradient Langevin Dynamics (Welling & Teh 2011) for packs of K trials.

SGLD turns SGD into a posterior sampler: each step follows an unbiased estimate of the
gradient of the log posterior and adds Gaussian noise whose variance is the step size,

    θ ← θ − (ε/2)·(N·g + λ·θ) + √ε·ξ,     ξ ~ N(0, I),

where g is the gradient of the trial's mean batch loss (so N·g estimates the gradient of the
whole data set's negative log-likelihood), λ the precision of a Gaussian prior N(0, 1/λ) and
ε = ε_t the trial's step size (from a decaying schedule such as a(1+t)^-γ: not our concern).
Predictions average the softmax over the samples taken after a burn-in (`PosteriorAverage`),
and are judged by accuracy, negative log-likelihood and calibration error.

Packing follows `engine`: a packed parameter holds the K trials on dim 0, trial k's rows being
`p.unflatten(0, (k, -1))[k]`. A trial's samples do not depend on the pack it runs in: its
noise comes from its own generator (`TrialNoise`), and the update is made of separate
element-wise products and sums, each correctly rounded wherever a trial's rows fall in a
kernel. (A fused multiply-add, which addcmul or add(alpha=) may use in a CPU kernel's
vectorised body but not in its scalar tail, could round differently by position; none did on
our CPU with torch 2.15, but nothing promises it, and the separate form costs little.)

    >>> import torch
    >>> p = torch.nn.Parameter(torch.zeros(3, 2))        # K = 3 trials of 2 weights each
    >>> p.grad = torch.ones(3, 2)
    >>> noise = TrialNoise([0, 1, 2], "cpu")
    >>> sgld_step([p], torch.tensor([1e-2, 1e-3, 0.0]), 3, n_data=100, prior_precision=1.0,
    ...           noise=noise)
    >>> p[2].tolist()                                     # a zero rate leaves a trial as it was
    [0.0, 0.0]
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import torch

NLL_FLOOR = 1e-12  # probabilities are clamped here: a sure wrong answer costs 27.6 nats, not ∞


class TrialNoise:
    """Each trial's standard normal noise from its own generator, seeded from the trial's seed.

    Cost, for pack invariance: K `randn` calls per step, one per trial, each drawing that
    trial's noise for all its parameters at once (a trial's draw never depends on K or on
    its position). One call for the whole pack would be cheaper, but would tie a trial's noise
    to its pack. Measured on the 2-core CPU (one thread), LeNet's 61,706 weights a trial: the
    draw takes 0.23 ms a trial, half to nine tenths of `sgld_step`'s time (K = 8: 1.9 of
    3.5 ms; K = 32: 8.5 of 9.5 ms). On a GPU it is K small kernel launches a step (unmeasured).
    """

    def __init__(self, seeds: Sequence[int], device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(noise_seed(s))
                           for s in seeds]

    @property
    def k(self) -> int:
        return len(self.generators)

    def draw(self, d: int) -> torch.Tensor:
        """A (K, d) float32 tensor: row k is trial k's next d standard normal values."""
        out = torch.empty(self.k, d, device=self.device)
        for row, generator in zip(out, self.generators):
            row.normal_(generator=generator)
        return out

    def get_state(self) -> list[torch.Tensor]:
        """The generators' states, for a checkpoint: a resumed trial continues its noise."""
        return [g.get_state() for g in self.generators]

    def set_state(self, states: Sequence[torch.Tensor]) -> None:
        if len(states) != self.k:
            raise ValueError(f"{len(states)} generator states for {self.k} trials")
        for g, state in zip(self.generators, states):
            g.set_state(state)


def noise_seed(seed: int) -> int:
    """The noise generator's seed for a trial seed: a hash, so that the noise stream shares no
    seed with the trial's data order (`pack._order` seeds with seed·1000003 + epoch)."""
    digest = hashlib.blake2b(f"lrsweep.sgld:{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@torch.no_grad()
def sgld_step(params: Sequence[torch.Tensor], rates: torch.Tensor, k: int, *, n_data: int,
              prior_precision: float, noise: TrialNoise | None) -> None:
    """One SGLD step, in place, for each trial k with step size rates[k] (a K-vector on the
    device: no host sync). Every parameter must hold its gradient of the mean batch loss.
    Without `noise`, the same step less its noise: SGD with the prior as weight decay.
    A rate of 0 leaves the trial unchanged, its gradient being finite (how the engine masks
    stopped trials: their losses are left out of the backward pass, so their gradients are 0)."""
    if (noise is not None and noise.k != k) or rates.shape != (k,):
        raise ValueError(f"a pack of {k} trials needs {k} rates and {k} noise generators, "
                         f"got {tuple(rates.shape)} rates and "
                         f"{noise.k if noise else 'no'} generators")
    rates = rates.to(torch.float32)
    # Per-trial coefficients, computed once: θ ← θ − (grad_scale·g + prior_scale·θ) +
    # noise_scale·ξ. The prior's pull stays inside the drift: as a factor 1 − ελ/2 on θ it
    # would round in float32 (ελ/2 = 2e-7 at η = 0.01, N = 50k: an effective λ of 0.89; below
    # η ≈ 0.0015 the factor is exactly 1 and the prior vanishes).
    prior_scale = rates * (0.5 * prior_precision)
    grad_scale = rates * (0.5 * n_data)
    noise_scale = rates.sqrt()
    sizes = [p.numel() // k for p in params]
    xi = noise.draw(sum(sizes)) if noise is not None else None
    offset = 0
    for p, size in zip(params, sizes):
        view = p.unflatten(0, (k, -1))
        shape = [k] + [1] * (view.dim() - 1)
        # Separate multiplies and adds, each correctly rounded: see the module docstring.
        drift = p.grad.unflatten(0, (k, -1)) * grad_scale.view(shape)
        drift.add_(view * prior_scale.view(shape))
        view.sub_(drift)
        if xi is not None:
            view.add_(xi[:, offset:offset + size].reshape(view.shape) * noise_scale.view(shape))
        offset += size


class PosteriorAverage:
    """The running mean of per-trial predictive probabilities on one evaluation set, a row a
    trial (a pack's slot), each row on its own count.

    A row's sample opportunities (each `offer` that includes it: a step or an epoch, as the
    caller chooses) are counted from 0; the first `burn_in` are skipped, then every `thin`-th
    is taken: 0-based opportunity t is a sample when t ≥ burn_in and (t − burn_in) is a
    multiple of thin. A slot that takes a new trial starts its row anew (`restart`).
    """

    def __init__(self, k: int, n_eval: int, n_classes: int, *, burn_in: int = 0, thin: int = 1,
                 device: str | torch.device = "cpu") -> None:
        if burn_in < 0 or thin < 1:
            raise ValueError(f"burn_in = {burn_in} must be ≥ 0 and thin = {thin} ≥ 1")
        self.burn_in, self.thin = burn_in, thin
        # float64: thousands of float32 additions would lose the small probabilities' digits.
        self.total = torch.zeros(k, n_eval, n_classes, dtype=torch.float64, device=device)
        self.opportunities = [0] * k
        self.count = [0] * k

    def due(self, row: int = 0) -> bool:
        """Whether the row's next opportunity will be taken (the caller may skip evaluating)."""
        t = self.opportunities[row]
        return t >= self.burn_in and (t - self.burn_in) % self.thin == 0

    def offer(self, probs: torch.Tensor | Callable[[], torch.Tensor],
              rows: Sequence[int] | None = None) -> list[bool]:
        """One opportunity for each of `rows` (default: all): probs (K, n, C), or a function
        computing them, called only when some row takes it. Returns, per row, whether it did."""
        rows = range(len(self.count)) if rows is None else rows
        taken = [self.due(row) for row in rows]
        if any(taken):
            values = probs() if callable(probs) else probs
        for row, take in zip(rows, taken):
            self.opportunities[row] += 1
            if take:
                self.total[row] += values[row]
                self.count[row] += 1
        return taken

    def restart(self, row: int, total: torch.Tensor | None = None, count: int = 0,
                opportunities: int = 0) -> None:
        """Row `row` anew (a new trial), or as a checkpoint left it."""
        if total is None:
            self.total[row].zero_()
        else:
            self.total[row] = total.to(self.total.device)
        self.count[row], self.opportunities[row] = count, opportunities

    def result(self) -> tuple[torch.Tensor, list[int]]:
        """The averaged probabilities (K, n, C) as float32, and each row's number of samples;
        a row's probabilities are NaN while it has no sample."""
        count = torch.tensor(self.count, dtype=torch.float64, device=self.total.device)
        mean = self.total / count.where(count > 0, math.nan).view(-1, 1, 1)
        return mean.to(torch.float32), list(self.count)


# --- metrics on predictive probabilities: probs (K, n, C), labels (n,) or (K, n) -> (K,) ---

def accuracy(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-trial fraction of images whose most probable class is the label."""
    return (probs.argmax(-1) == y).to(torch.float32).mean(-1)


def nll(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-trial mean negative log-probability of the label (probabilities floored at
    NLL_FLOOR)."""
    picked = probs.gather(-1, y.expand(probs.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return -picked.clamp_min(NLL_FLOOR).log().mean(-1)


def ece(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> torch.Tensor:
    """Per-trial expected calibration error (Guo et al. 2017): confidences (the top
    probability) fall into `bins` equal-width bins (lo, hi] of [0, 1]; the error is
    Σ_b (|b|/n)·|accuracy(b) − mean confidence(b)|,
    i.e. (1/n)·Σ_b |Σ_{i∈b} (correct_i − conf_i)|."""
    confidence, predicted = probs.max(-1)
    correct = (predicted == y).to(confidence.dtype)
    inner = torch.linspace(0, 1, bins + 1, dtype=confidence.dtype, device=probs.device)[1:-1]
    which = torch.bucketize(confidence, inner)  # lo < conf ≤ hi, as in Guo et al.'s code
    gap = torch.zeros(*confidence.shape[:-1], bins, dtype=confidence.dtype, device=probs.device)
    gap.scatter_add_(-1, which, correct - confidence)
    return gap.abs().sum(-1) / confidence.shape[-1]
