"""Train packs of trials on data resident on the device, epoch by epoch.

Knows nothing of Optuna: it takes trial configurations and callbacks, and returns results.
K trials train together as one `Pack`, each with its own initial weights, data order and
rate; a single trial is a pack of one, so there is one training code path. Batches are index
slices of a device-side permutation (no DataLoader) and the epoch's sums stay on the device
until the epoch ends: no host sync per step. After each epoch every trial still training is
evaluated, judged (diverged: non-finite, or collapsed back to chance after it had learned),
told to `on_epoch` (which may stop some: pruning), and the pack's state handed to
`on_states` (checkpoints).

    >>> from lrsweep import schedules
    >>> from lrsweep.train import data, engine
    >>> cfgs = [engine.TrialConfig(schedules.build("sqrt", base_lr=lr), seed=0, epochs=2)
    ...         for lr in (0.1, 0.3)]
    >>> results = engine.train_pack(cfgs, data.load("cpu", subset=1000))   # doctest: +SKIP
    >>> [r.epochs[-1].val_acc for r in results]                           # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Callable, Sequence

import torch

from lrsweep.outcomes import chance_levels
from lrsweep.train import sgld
from lrsweep.train.data import Splits
from lrsweep.train.evaluate import calibration, evaluate
from lrsweep.train.pack import Pack, steps_per_epoch
from lrsweep.train.trials import (AVERAGING, EpochCallback, EpochMetrics, PackState, Resume,
                                  StateCallback, TrialConfig, TrialResult)

__all__ = ["TrialConfig", "EpochMetrics", "TrialResult", "Resume", "PackState", "train",
           "train_pack", "steps_per_epoch"]


def train(config: TrialConfig, splits: Splits, *,
          on_epoch: Callable[[EpochMetrics], bool] | None = None) -> TrialResult:
    """Train one trial: a pack of one. `on_epoch(metrics)` returning False prunes it."""
    def callback(metrics: dict[int, EpochMetrics]) -> list[int]:
        return [] if on_epoch is None or on_epoch(metrics[0]) else [0]
    return train_pack([config], splits, on_epoch=callback)[0]


def train_pack(configs: Sequence[TrialConfig], splits: Splits, *,
               on_epoch: EpochCallback | None = None, on_states: StateCallback | None = None,
               resume: Sequence[Resume | None] | None = None) -> list[TrialResult]:
    """Train K trials together (`Pack`); a pruned or diverged trial is masked out and the
    others carry on undisturbed. `resume` continues trials from their checkpoints; a pack's
    trials resume at one epoch."""
    first_epoch, resume = _check(configs, resume)
    first = configs[0]
    pack = Pack(configs, splits, resume)
    results = [TrialResult(c, device=str(pack.device), pack_size=pack.k,
                           parameters=pack.parameters) for c in configs]
    best_train_acc = _restore(pack, results, resume, first_epoch)
    if not any(pack.active):
        return results
    posterior = None
    if first.optimizer in AVERAGING:
        posterior = sgld.PosteriorAverage(pack.k, len(splits.test_y), splits.classes,
                                          burn_in=first.burn_in, thin=first.thin,
                                          device=pack.device)
        _restore_sampler(pack.noise, posterior, resume, [c.seed for c in configs])
    chance = chance_levels(splits.classes)
    for epoch in range(first_epoch, first.epochs):
        start = time.perf_counter()
        lr, train_loss, train_acc = _train_epoch(pack, splits, epoch)
        measured = _measure(pack, splits, posterior)
        seconds = time.perf_counter() - start
        metrics = {i: EpochMetrics(epoch, lr[i], train_loss[i], train_acc[i], seconds=seconds,
                                   **{key: values[i] for key, values in measured.items()})
                   for i in range(pack.k) if pack.active[i]}
        for i, m in metrics.items():
            results[i].epochs.append(m)
            _judge(results[i], m, best_train_acc[i], chance)
            best_train_acc[i] = max(best_train_acc[i], m.train_acc)
        stop = set(on_epoch(metrics)) if on_epoch else set()
        _hand_over(pack, results, metrics, stop, epoch == first.epochs - 1, on_states,
                   posterior)
        for i in metrics:
            if results[i].status != "complete":
                pack.stop(i)
        if not any(pack.active):
            break
    return results


def _check(configs: Sequence[TrialConfig], resume: Sequence[Resume | None] | None
           ) -> tuple[int, list[Resume | None]]:
    """The epoch the pack starts at, and one resume point (or None) per trial."""
    first = configs[0]
    if any(c.pack_key != first.pack_key for c in configs):
        raise ValueError("a pack's trials must share epochs, batch_size, unit, model and "
                         "optimizer settings")
    if first.optimizer in AVERAGING and first.model != "lenet":
        raise ValueError("SGLD trials train the packed LeNet only")
    resume = list(resume) if resume is not None else [None] * len(configs)
    # Members that stopped early (pruned, diverged) stay in the pack, masked, as they were.
    starts = {len(r.epochs) if r else 0 for r in resume if r is None or r.status == "complete"}
    if len(starts) > 1:
        raise ValueError("a pack's training trials must resume at the same epoch")
    return (starts.pop() if starts else first.epochs), resume


def _restore(pack: Pack, results: list[TrialResult], resume: list[Resume | None],
             first_epoch: int) -> list[float]:
    """Resumed trials' curves and status; those that had finished are masked from the start.
    Returns each trial's best train accuracy so far (for the collapse test)."""
    best_train_acc = [0.0] * pack.k
    for i, r in enumerate(resume):
        if r is None:
            continue
        results[i].epochs = list(r.epochs)
        results[i].status, results[i].diverged = r.status, r.diverged
        best_train_acc[i] = max((m.train_acc for m in r.epochs), default=0.0)
        if r.status != "complete" or first_epoch >= pack.configs[0].epochs:
            results[i].state_dict = r.state_dict  # it had finished: nothing to do
            pack.stop(i)
    return best_train_acc


def _train_epoch(pack: Pack, splits: Splits, epoch: int
                 ) -> tuple[list[float], list[float], list[float]]:
    """One epoch of steps. Returns each trial's rate at the epoch's first step, mean train
    loss (taken before each step) and train accuracy."""
    rates, orders = pack.epoch_plan(epoch)  # rates: (steps, K), host
    device = pack.device
    rates_on_device = torch.tensor(rates, dtype=torch.float32).mul_(
        torch.tensor(pack.active, dtype=torch.float32)).to(device)
    loss_sum = torch.zeros(pack.k, device=device)
    correct = torch.zeros(pack.k, device=device, dtype=torch.long)
    keep = torch.tensor(pack.active, device=device)
    pack.net.train()  # BatchNorm (ResNet) normalises with batch statistics while training
    for step, (x, y) in enumerate(pack.batches(splits, orders)):
        losses, right = pack.step(x, y, rates_on_device[step], keep, rates[step])
        loss_sum += losses * y.shape[1]
        correct += right
    return rates[0], (loss_sum / pack.n_train).tolist(), (correct / pack.n_train).tolist()


def _measure(pack: Pack, splits: Splits, posterior: sgld.PosteriorAverage | None
             ) -> dict[str, list]:
    """The epoch's evaluation, as EpochMetrics fields: one value a trial each."""
    val_loss, val_acc, _ = evaluate(pack.net, splits.val_x, splits.val_y, pack.k)
    _, test_acc, probs = evaluate(pack.net, splits.test_x, splits.test_y, pack.k,
                                  keep_probs=True)
    test_nll, test_ece = calibration(probs, splits.test_y)
    measured = dict(val_loss=val_loss, val_acc=val_acc, test_acc=test_acc, test_nll=test_nll,
                    test_ece=test_ece)
    if posterior is not None:
        posterior.offer(probs)
        averaged, count = posterior.result()
        measured.update(zip(("avg_test_acc", "avg_test_nll", "avg_test_ece"),
                            calibration(averaged, splits.test_y, accuracy=True)))
        measured["samples"] = [count] * pack.k
    return measured


def _judge(result: TrialResult, m: EpochMetrics, best_train_acc: float,
           chance: tuple[float, float]) -> None:
    """Diverged: a non-finite loss, or back at chance after it had learned."""
    at_chance, learned = chance
    # The train loss is taken before each step; weights the epoch's last step blew up show
    # only in the evaluation after it (the test NLL is NaN for them).
    if not (math.isfinite(m.train_loss) and math.isfinite(m.test_nll)):
        result.status, result.diverged = "diverged", "nonfinite"
    elif m.train_acc <= at_chance and best_train_acc >= learned:
        result.status, result.diverged = "diverged", "collapsed"


def _hand_over(pack: Pack, results: list[TrialResult], metrics: dict[int, EpochMetrics],
               stop: set[int], last: bool, on_states: StateCallback | None,
               posterior: sgld.PosteriorAverage | None) -> None:
    """Mark the pruned; give the trials that end now their weights; hand the pack's state to
    `on_states`. The pack's weights are copied out once, when anyone needs them: a GPU makes
    one copy to the host per packed tensor, not one per trial and layer."""
    weights: dict[str, torch.Tensor] | None = None
    for i in metrics:
        result = results[i]
        if result.status == "complete" and i in stop:
            result.status = "pruned"
        if result.status != "complete" or last:
            weights = pack.net.pack_state() if weights is None else weights
            result.state_dict = pack.net.unpack(weights, i)
    if not on_states:
        return
    # Members that stopped (now or before: masked, zeroed) hold their weights already.
    training = any(r.state_dict is None for r in results)
    if training and weights is None:
        weights = pack.net.pack_state()
    on_states(PackState(pack.net.LAYOUT, weights if training else {},
                        [Resume(r.state_dict, list(r.epochs), r.status, r.diverged,
                                _sampler_state(pack.noise, posterior, i) if posterior
                                else None) for i, r in enumerate(results)]))


def _sampler_state(noise: sgld.TrialNoise | None, posterior: sgld.PosteriorAverage,
                   i: int) -> dict:
    # A copy: on the CPU .cpu() would alias the running sum, which later epochs change.
    return {"noise": noise.generators[i].get_state() if noise else None,
            "device_type": posterior.total.device.type,
            "total": posterior.total[i].to("cpu", copy=True),
            "count": posterior.count, "opportunities": posterior.opportunities}


def _restore_sampler(noise: sgld.TrialNoise | None, posterior: sgld.PosteriorAverage,
                     resume: Sequence[Resume | None], seeds: Sequence[int]) -> None:
    # A pack resumes at one epoch, so its members share the posterior's sample count.
    for i, r in enumerate(resume):
        if r is None or r.sampler is None:
            continue
        saved_on = r.sampler.get("device_type", posterior.total.device.type)
        if noise is None:
            pass  # the noiseless control: only its share of the average goes on
        elif saved_on == noise.device.type:
            noise.generators[i].set_state(r.sampler["noise"])
        else:
            # CPU and CUDA generators keep different states: the stream cannot go on. The
            # trial goes on with a stream of its own seed and epoch rather than start over.
            epoch = len(r.epochs)
            noise.generators[i].manual_seed(sgld.noise_seed(seeds[i]) + epoch)
            warnings.warn(f"SGLD trial with seed {seeds[i]}: its noise state was saved on "
                          f"{saved_on} and cannot continue on {noise.device.type}; from epoch "
                          f"{epoch + 1} its noise is a new stream (the run is no longer "
                          "bit-identical to an uninterrupted one)", stacklevel=2)
        posterior.total[i] = r.sampler["total"].to(posterior.total.device)
        posterior.count = r.sampler["count"]
        posterior.opportunities = r.sampler["opportunities"]
