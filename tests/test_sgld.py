"""Tests for lrsweep.sgld: SGLD samples the posterior, packs do not change a trial's samples,
and the metrics and posterior average agree with hand computation.

The samplers are checked against closed-form Gaussian posteriors (conjugate models), with
mini-batch gradients from autograd. With a constant step ε, SGLD's stationary law is close to
the posterior but not equal to it: for a Gaussian posterior of precision P the sampled
variance is about (1/P)·(1 + ε·s²/4)/(1 − ε·P/4), where s² is the variance of the mini-batch
gradient (scaled by N). The sizes below keep that bias near 2.5 % and the Monte Carlo error
of the variance near 3 %, so a tolerance of 10 % on variances (and 0.12 posterior standard
deviations on means) is several standard errors wide. Seeds are fixed, so runs are repeatable.
"""

from __future__ import annotations

import math

import pytest
import torch

from lrsweep.train.sgld import NLL_FLOOR, PosteriorAverage, TrialNoise, accuracy, ece, nll, sgld_step

CHAINS = 64  # independent chains, run as one pack


@pytest.fixture(autouse=True)
def one_thread():
    # These tensors are tiny: a second intra-op thread only adds wake-ups, which cost
    # milliseconds per kernel on a loaded 2-core machine (a 7000-step chain went from 4 s to 55).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_chains(theta: torch.nn.Parameter, loss_fn, n_data: int, batch: int, rate: float,
               prior_precision: float, steps: int, burn_in: int) -> torch.Tensor:
    """SGLD on a (K, d) parameter with mini-batches drawn without replacement per chain.
    loss_fn(theta, idx) is the per-chain mean batch loss (K,); returns samples (steps, K, d)."""
    k = theta.shape[0]
    noise = TrialNoise(list(range(k)))
    rates = torch.full((k,), rate)
    data_rng = torch.Generator().manual_seed(1234)
    samples = []
    for t in range(burn_in + steps):
        idx = torch.rand(k, n_data, generator=data_rng).argsort(1)[:, :batch]
        theta.grad = None
        loss_fn(theta, idx).sum().backward()
        sgld_step([theta], rates, k, n_data=n_data, prior_precision=prior_precision,
                  noise=noise)
        if t >= burn_in:
            samples.append(theta.detach().clone())
    return torch.stack(samples)


def test_gaussian_mean_posterior():
    # x_i ~ N(μ, σ²) with σ known, prior μ ~ N(0, 1/λ): the posterior is N(m, 1/P) with
    # P = λ + N/σ² and m = (Σ x_i / σ²) / P.
    n, sigma, lam = 100, 2.0, 0.5
    x = 1.5 + sigma * torch.randn(n, generator=torch.Generator().manual_seed(0))
    precision = lam + n / sigma**2
    mean = float(x.sum()) / sigma**2 / precision

    def loss(theta, idx):  # mean over the batch of −log N(x_i | θ, σ²), up to a constant
        return ((theta - x[idx]) ** 2 / (2 * sigma**2)).mean(1)

    theta = torch.nn.Parameter(torch.zeros(CHAINS, 1))
    samples = run_chains(theta, loss, n, batch=50, rate=0.05 / precision, prior_precision=lam,
                         steps=4000, burn_in=500).flatten()
    sd = precision ** -0.5
    assert abs(float(samples.mean()) - mean) < 0.12 * sd
    assert float(samples.var()) / sd**2 == pytest.approx(1.0, abs=0.10)


def test_bayesian_linear_regression_posterior():
    # y_i = w·x_i + e_i, e_i ~ N(0, σ²), prior w ~ N(0, I/λ): the posterior is N(m, A⁻¹) with
    # A = λI + XᵀX/σ² and m = A⁻¹ Xᵀy / σ². Correlated inputs make its covariance non-diagonal.
    n, sigma, lam = 200, 1.0, 1.0
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.tensor(
        [[1.0, 0.4], [0.0, 0.9165]], dtype=torch.float64)  # unit variances, correlation 0.4
    y = x @ torch.tensor([1.0, -0.5], dtype=torch.float64) + sigma * torch.randn(
        n, generator=g, dtype=torch.float64)
    a = lam * torch.eye(2, dtype=torch.float64) + x.T @ x / sigma**2
    cov = torch.linalg.inv(a)
    mean = cov @ (x.T @ y) / sigma**2
    x32, y32 = x.float(), y.float()

    def loss(theta, idx):  # (K, 2) weights, (K, B) indices
        predicted = (x32[idx] * theta.unsqueeze(1)).sum(-1)
        return ((predicted - y32[idx]) ** 2 / (2 * sigma**2)).mean(1)

    theta = torch.nn.Parameter(torch.zeros(CHAINS, 2))
    rate = 0.05 / float(torch.linalg.eigvalsh(a).max())
    samples = run_chains(theta, loss, n, batch=100, rate=rate, prior_precision=lam,
                         steps=6000, burn_in=1000).reshape(-1, 2).double()
    sd = cov.diag().sqrt()
    assert ((samples.mean(0) - mean).abs() < 0.12 * sd).all(), (samples.mean(0), mean)
    sample_cov = torch.cov(samples.T)
    assert ((sample_cov - cov).abs() < 0.10 * torch.outer(sd, sd)).all(), (sample_cov, cov)


def pseudo_grad(theta: torch.Tensor, trial_seed: int) -> torch.Tensor:
    """A trial's gradient that depends on its weights and seed only, computed alone."""
    return torch.sin(theta) + 0.1 * trial_seed


def run_pack(seeds: list[int], rates: list[float], steps: int = 15) -> list[list[torch.Tensor]]:
    """Trial i's two parameters start from its seed; returns per step [trial][param] copies."""
    k = len(seeds)
    starts = [[torch.randn(13, 3, generator=torch.Generator().manual_seed(s)),
               torch.randn(1, generator=torch.Generator().manual_seed(s + 100))] for s in seeds]
    params = [torch.nn.Parameter(torch.cat([starts[i][j] for i in range(k)]))
              for j in range(2)]
    noise = TrialNoise(seeds)
    history = []
    for _ in range(steps):
        for p in params:
            p.grad = torch.cat([pseudo_grad(row, s)
                                for row, s in zip(p.detach().unflatten(0, (k, -1)), seeds)])
        sgld_step(params, torch.tensor(rates), k, n_data=1000, prior_precision=2.0,
                  noise=noise)
        history.append([[p.detach().unflatten(0, (k, -1))[i].clone() for p in params]
                        for i in range(k)])
    return history


def test_a_trial_samples_the_same_alone_and_in_a_pack():
    packed = run_pack([11, 22, 33], [1e-3, 3e-4, 2e-3])
    alone = run_pack([22], [3e-4])
    for step_packed, step_alone in zip(packed, alone):
        for a, b in zip(step_packed[1], step_alone[0]):
            assert torch.equal(a, b)
    # Trials differ from one another and from their starts (the noise did act).
    first, last = packed[0], packed[-1]
    assert not torch.equal(first[0][0], last[0][0])
    assert not torch.equal(last[0][1], last[1][1])


def one_step(theta0: torch.Tensor, grad: torch.Tensor, rates: list[float], n_data: int,
             prior_precision: float, seeds=(3, 4)) -> torch.Tensor:
    p = torch.nn.Parameter(theta0.clone())
    p.grad = grad
    sgld_step([p], torch.tensor(rates), len(seeds), n_data=n_data,
              prior_precision=prior_precision, noise=TrialNoise(list(seeds)))
    return p.detach()


def test_step_follows_the_update_rule():
    # The noise is the same for equal seeds, so differences of two steps isolate each term of
    # θ ← θ − (ε/2)(N·g + λ·θ) + √ε·ξ.
    torch.manual_seed(0)
    theta0, g1, g2 = torch.randn(3, 2 * 20, 4).unbind(0)  # K = 2 trials of 20 × 4 weights
    eps = torch.tensor([1e-3, 4e-4]).repeat_interleave(20).unsqueeze(1)  # per row
    rates = [1e-3, 4e-4]
    a = one_step(theta0, g1, rates, n_data=500, prior_precision=3.0)
    b = one_step(theta0, g2, rates, n_data=500, prior_precision=3.0)
    torch.testing.assert_close(a - b, -(eps / 2) * 500 * (g1 - g2), rtol=1e-4, atol=1e-6)
    c = one_step(theta0, g1, rates, n_data=500, prior_precision=7.0)
    torch.testing.assert_close(a - c, -(eps / 2) * (3.0 - 7.0) * theta0, rtol=1e-4, atol=1e-6)
    # A zero rate leaves a trial exactly where it was.
    z = one_step(theta0, g1, [0.0, 4e-4], n_data=500, prior_precision=3.0)
    assert torch.equal(z[:20], theta0[:20])


def test_a_prior_pull_below_float32_resolution_is_not_lost():
    # At ε = 4e-8 (η = 1e-3 with N = 50k) the prior's pull ελ/2 = 2e-8 is below float32's
    # resolution next to 1: as a factor (1 − ελ/2)·θ it rounds to θ and the prior vanishes at
    # every step. Inside the drift, rounding errors are as often up as down, so over many
    # weights the float32 step agrees with the float64 rule on average.
    d, eps, n_data = 200_000, 4e-8, 50_000
    gen = torch.Generator().manual_seed(1)
    theta0 = 0.5 + 0.5 * torch.rand(d, generator=gen)
    grad = torch.randn(d, generator=gen)
    moved = one_step(theta0, grad, [eps], n_data=n_data, prior_precision=1.0, seeds=(3,))
    xi = TrialNoise([3]).draw(d)[0].double()
    exact = (theta0.double() - eps / 2 * (n_data * grad.double() + theta0.double())
             + math.sqrt(eps) * xi)
    bias = float((moved.double() - exact).mean())
    assert abs(bias) < 3e-9  # the lost pull would be 2e-8 · mean θ ≈ 1.5e-8


def test_noise_has_variance_equal_to_the_rate():
    d = 20_000
    rates = [1e-2, 1e-4]
    moved = one_step(torch.zeros(2 * d), torch.zeros(2 * d), rates, n_data=1,
                     prior_precision=0.0).reshape(2, d)
    for row, rate in zip(moved, rates):
        standard = row / math.sqrt(rate)
        assert abs(float(standard.mean())) < 0.03       # 4 standard errors of a mean
        assert float(standard.std()) == pytest.approx(1.0, abs=0.02)
    assert abs(float(torch.corrcoef(moved)[0, 1])) < 0.03  # independent trials


def test_step_rejects_a_mismatched_pack():
    p = torch.nn.Parameter(torch.zeros(4, 2))
    p.grad = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="pack of 2"):
        sgld_step([p], torch.ones(2), 2, n_data=1, prior_precision=1.0,
                  noise=TrialNoise([0, 1, 2]))


def test_noise_state_round_trips():
    noise = TrialNoise([7, 8])
    state = noise.get_state()
    first = noise.draw(5)
    noise.set_state(state)
    assert torch.equal(noise.draw(5), first)
    assert not torch.equal(first[0], first[1])


# --- metrics ------------------------------------------------------------------------------

# Trial 0: confidences 0.7 ✓, 0.65 ✗, 0.9 ✓, 0.5 ✗. Trial 1: one-hot, 3 right, 1 wrong with
# probability 0 on its label.
PROBS = torch.tensor([
    [[0.7, 0.2, 0.1], [0.15, 0.65, 0.2], [0.05, 0.05, 0.9], [0.5, 0.3, 0.2]],
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
])
LABELS = torch.tensor([0, 2, 2, 1])


def test_accuracy_and_nll_by_hand():
    torch.testing.assert_close(accuracy(PROBS, LABELS), torch.tensor([0.5, 0.75]))
    by_hand = [-(math.log(0.7) + math.log(0.2) + math.log(0.9) + math.log(0.3)) / 4,
               -math.log(NLL_FLOOR) / 4]
    torch.testing.assert_close(nll(PROBS, LABELS), torch.tensor(by_hand))
    assert nll(PROBS, LABELS)[1] == pytest.approx(27.631 / 4, rel=1e-4)  # finite, not ∞
    # Labels may also be given per trial.
    torch.testing.assert_close(accuracy(PROBS, LABELS.expand(2, -1)), torch.tensor([0.5, 0.75]))


def test_ece_by_hand():
    # 5 bins, (0.6, 0.8] holds 0.7 ✓ and 0.65 ✗; (0.8, 1] 0.9 ✓; (0.4, 0.6] 0.5 ✗:
    # (|1 + 0 − 0.7 − 0.65| + |1 − 0.9| + |0 − 0.5|) / 4 = (0.35 + 0.1 + 0.5) / 4.
    # Trial 1: all four in (0.8, 1] with 3 right: |3 − 4| / 4.
    torch.testing.assert_close(ece(PROBS, LABELS, bins=5), torch.tensor([0.2375, 0.25]))
    # 15 bins (the default) put trial 0's four confidences in four bins: every gap counts.
    torch.testing.assert_close(ece(PROBS, LABELS)[0], torch.tensor((0.3 + 0.65 + 0.1 + 0.5) / 4))
    # Perfect calibration: confidence 0.75 and three right out of four.
    calibrated = torch.tensor([[[0.75, 0.25]] * 4])
    torch.testing.assert_close(ece(calibrated, torch.tensor([0, 0, 0, 1])), torch.tensor([0.0]))


def test_ece_matches_the_definition_on_random_predictions():
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(3 * torch.randn(3, 500, 10, generator=g), -1)
    y = torch.randint(0, 10, (500,), generator=g)
    for trial in range(3):
        conf, pred = probs[trial].max(-1)
        total = 0.0
        for b in range(15):
            lo, hi = b / 15, (b + 1) / 15
            members = [i for i in range(500) if lo < float(conf[i]) <= hi]
            if members:
                acc = sum(int(pred[i] == y[i]) for i in members) / len(members)
                mean_conf = sum(float(conf[i]) for i in members) / len(members)
                total += len(members) / 500 * abs(acc - mean_conf)
        assert float(ece(probs, y)[trial]) == pytest.approx(total, abs=1e-5)


# --- posterior averaging ------------------------------------------------------------------

def test_posterior_average_honours_burn_in_and_thin():
    avg = PosteriorAverage(2, 3, 4, burn_in=3, thin=2)
    evaluated = []

    def probs_at(t):
        def compute():
            evaluated.append(t)
            return torch.full((2, 3, 4), float(t))
        return compute

    taken = [avg.offer(probs_at(t)) for t in range(10)]
    assert taken == [[t in (3, 5, 7, 9)] * 2 for t in range(10)]
    assert evaluated == [3, 5, 7, 9]  # skipped opportunities cost no evaluation
    mean, count = avg.result()
    assert count == [4, 4]
    assert mean.shape == (2, 3, 4) and mean.dtype == torch.float32
    torch.testing.assert_close(mean, torch.full((2, 3, 4), (3 + 5 + 7 + 9) / 4))


def test_posterior_average_of_tensors_and_before_any_sample():
    avg = PosteriorAverage(1, 2, 2, burn_in=1)
    mean, count = avg.result()
    assert count == [0] and mean.isnan().all()
    assert avg.due() is False
    avg.offer(torch.tensor([[[9.0, 9.0], [9.0, 9.0]]]))            # burn-in: ignored
    assert avg.due() is True
    avg.offer(torch.tensor([[[0.2, 0.8], [1.0, 0.0]]]))
    avg.offer(torch.tensor([[[0.4, 0.6], [0.5, 0.5]]]))
    mean, count = avg.result()
    assert count == [2]
    torch.testing.assert_close(mean, torch.tensor([[[0.3, 0.7], [0.75, 0.25]]]))


def test_each_row_of_a_posterior_average_counts_on_its_own():
    # Slots turn over: row 0 holds a trial from the start, row 1 one that came an epoch later.
    avg = PosteriorAverage(2, 1, 2, burn_in=1)
    ones = torch.ones(2, 1, 2)
    assert avg.offer(ones, rows=[0]) == [False]            # row 0's burn-in
    avg.restart(1)
    assert avg.offer(2 * ones) == [True, False]            # row 1's burn-in
    assert avg.offer(4 * ones) == [True, True]
    mean, count = avg.result()
    assert count == [2, 1]
    torch.testing.assert_close(mean[:, 0, 0], torch.tensor([3.0, 4.0]))
    avg.restart(0)                                         # a new trial in slot 0
    mean, count = avg.result()
    assert count == [0, 1] and mean[0].isnan().all() and not mean[1].isnan().any()


def test_posterior_average_rejects_bad_settings():
    with pytest.raises(ValueError):
        PosteriorAverage(1, 1, 2, thin=0)
    with pytest.raises(ValueError):
        PosteriorAverage(1, 1, 2, burn_in=-1)
