"""Train packs of trials on data resident on the device, epoch by epoch, in slots.

Knows nothing of Optuna: it takes trial configurations and callbacks, and gives back
results. A pack is K slots training together as one `Pack`, each trial with its own initial
weights, data order, rate and epoch; a single trial is a pack of one, so there is one
training code path. Batches are index slices of a device-side permutation (no DataLoader) and
the epoch's sums stay on the device until the epoch ends: no host sync per step. After each
epoch every trial in a slot is evaluated, judged (diverged: non-finite, or collapsed back to
chance after it had learned) and told to `on_epoch` (which may stop some: pruning); a trial
that is done (complete, pruned, diverged) leaves its slot for `on_finish`, the slot table goes
to `on_states` (checkpoints), and free slots take new trials from `admit`.

    >>> from lrsweep import schedules
    >>> from lrsweep.train import data, engine
    >>> cfgs = [engine.TrialConfig(schedules.build("sqrt", base_lr=lr), seed=0, epochs=2)
    ...         for lr in (0.1, 0.3)]
    >>> results = engine.train_pack(cfgs, data.load("cpu", subset=1000))   # doctest: +SKIP
    >>> [r.epochs[-1].val_acc for r in results]                           # doctest: +SKIP
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, Sequence

import torch

from lrsweep.outcomes import chance_levels, loss_bound
from lrsweep.train import graphs, precision, sgld
from lrsweep.train.data import Splits
from lrsweep.train.evaluate import calibration, evaluate
from lrsweep.train.pack import Pack, steps_per_epoch
from lrsweep.train.trials import (AVERAGING, Admission, Admit, EpochCallback, EpochMetrics,
                                  FinishCallback, PackState, Resume, StateCallback,
                                  TrialConfig, TrialResult)

__all__ = ["TrialConfig", "EpochMetrics", "TrialResult", "Resume", "PackState", "Admission",
           "train", "train_pack", "train_slots", "steps_per_epoch"]


def train(config: TrialConfig, splits: Splits, *,
          on_epoch: Callable[[EpochMetrics], bool] | None = None) -> TrialResult:
    """Train one trial: a pack of one. `on_epoch(metrics)` returning False prunes it."""
    def callback(metrics: dict[Hashable, EpochMetrics]) -> list[Hashable]:
        return [] if on_epoch is None or on_epoch(metrics[0]) else [0]
    return train_pack([config], splits, on_epoch=callback)[0]


def train_pack(configs: Sequence[TrialConfig], splits: Splits, *,
               on_epoch: EpochCallback | None = None, on_states: StateCallback | None = None,
               resume: Sequence[Resume | None] | Mapping[int, Resume] | None = None
               ) -> list[TrialResult]:
    """Train K trials together, each in a slot of its own from the start (`train_slots`),
    known to the callbacks by their index; `resume` continues trials from their checkpoints,
    each at its own epoch."""
    if isinstance(resume, Mapping):
        resume = [resume.get(i) for i in range(len(configs))]
    resume = list(resume) if resume is not None else [None] * len(configs)
    waiting = [Admission(i, c, r) for i, (c, r) in enumerate(zip(configs, resume))]
    results: list[TrialResult | None] = [None] * len(configs)

    def admit(n: int) -> list[Admission]:
        taken, waiting[:] = waiting[:n], waiting[n:]
        return taken

    def finish(i: Hashable, result: TrialResult) -> None:
        results[i] = result

    train_slots(len(configs), splits, admit, on_finish=finish, on_epoch=on_epoch,
                on_states=on_states)
    return results


@dataclass
class _Slot:
    key: Hashable
    result: TrialResult
    best_train_acc: float     # for the collapse test


def train_slots(width: int, splits: Splits, admit: Admit, *, on_finish: FinishCallback,
                on_epoch: EpochCallback | None = None,
                on_states: StateCallback | None = None) -> None:
    """Train trials in `width` slots until `admit` has no more and every slot is empty. A
    trial's numbers do not depend on its slot, its pack-mates or when it came (bit for bit on
    the CPU: tests/test_engine.py)."""
    admitted = list(admit(width))
    if not admitted:
        return
    pack = Pack(width, splits, admitted[0].config)
    pack.graphs = graphs.for_pack(pack, splits)
    slots: list[_Slot | None] = [None] * width
    posterior = None
    if pack.like.optimizer in AVERAGING:
        posterior = sgld.PosteriorAverage(pack.k, len(splits.test_y), splits.classes,
                                          burn_in=pack.like.burn_in, thin=pack.like.thin,
                                          device=pack.device)
    _fill(pack, slots, admitted, admit, posterior, on_finish)
    chance = chance_levels(splits.classes)
    bound = loss_bound(splits.classes)
    try:
        while any(slots):
            start = time.perf_counter()
            # The study's precision (lrsweep.train.precision): FP32 unless it asks for TF32/bf16.
            with precision.applied(pack.like.precision, pack.device):
                lr, train_loss, train_acc = _train_epoch(pack, splits)
                with precision.autocast(pack.like.precision, pack.device):
                    measured = _measure(pack, splits, posterior)
            seconds = time.perf_counter() - start
            trained = sum(slot is not None for slot in slots)  # they share the epoch's time
            metrics = {}
            for i, slot in enumerate(slots):
                if slot is None:
                    continue
                m = EpochMetrics(pack.epochs[i], lr[i], train_loss[i], train_acc[i],
                                 seconds=seconds, pack_trials=trained,
                                 **{key: values[i] for key, values in measured.items()})
                slot.result.epochs.append(m)
                _judge(slot.result, m, slot.best_train_acc, chance, bound)
                slot.best_train_acc = max(slot.best_train_acc, m.train_acc)
                metrics[slot.key] = m
            pack.advance()
            stop = set(on_epoch(metrics)) if on_epoch else set()
            weights = _leave(pack, slots, stop, on_finish)
            if on_states:
                on_states(_state(pack, slots, posterior, weights))
            _fill(pack, slots, [], admit, posterior, on_finish)
    finally:  # an error too (bench goes on after an out-of-memory pack): the graphs
        # and their pool freed now, not by a cycle collection that may come mid-capture
        pack.graphs = None


def _fill(pack: Pack, slots: list[_Slot | None], admitted: list[Admission], admit: Admit,
          posterior: sgld.PosteriorAverage | None, on_finish: FinishCallback) -> None:
    """Free slots take `admitted`, then whatever `admit` gives, until it gives nothing or no
    slot is free. A continued trial that had already finished is handed to `on_finish` at
    once, its slot still free."""
    while True:
        free = [i for i, slot in enumerate(slots) if slot is None]
        if not admitted and free:
            admitted = list(admit(len(free)))
        if not admitted or not free:
            return
        if len(admitted) > len(free):
            raise ValueError(f"{len(admitted)} trials admitted into {len(free)} free slots")
        for i, a in zip(_places(free, admitted), admitted):
            result = TrialResult(a.config, device=str(pack.device), pack_size=pack.width,
                                 parameters=pack.parameters,
                                 convolutions=getattr(pack.net, "convolutions", None))
            r = a.resume
            if r is not None:
                result.epochs = list(r.epochs)
                result.status, result.diverged = r.status, r.diverged
                if r.status != "complete" or len(r.epochs) >= a.config.epochs:
                    result.state_dict = r.state_dict  # it had finished: nothing to do
                    on_finish(a.key, result)
                    continue
            pack.load(i, a.config, r)
            if posterior is not None:
                _restore_sampler(pack, posterior, i, r)
            best = max((m.train_acc for m in result.epochs), default=0.0)
            slots[i] = _Slot(a.key, result, best)
        admitted = []


def _places(free: list[int], admitted: list[Admission]) -> list[int]:
    """The slot each admitted trial takes: a continued trial the one it trained in, when free
    (a pack taken over is rebuilt as it was); the others the free slots left, in order."""
    wanted = [a.resume.slot if a.resume is not None and a.resume.slot in free else None
              for a in admitted]
    wanted = [w if w is not None and wanted.index(w) == n else None
              for n, w in enumerate(wanted)]  # one trial a slot, should two name the same
    rest = iter(i for i in free if i not in wanted)
    return [w if w is not None else next(rest) for w in wanted]


def _train_epoch(pack: Pack, splits: Splits) -> tuple[list[float], list[float], list[float]]:
    """One epoch of steps, each slot at its own epoch. Returns each slot's rate at the epoch's
    first step, mean train loss (taken before each step) and train accuracy."""
    rates, orders = pack.epoch_plan()  # rates: (steps, K), host
    device = pack.device
    rates_on_device = torch.tensor(rates, dtype=torch.float32).mul_(
        torch.tensor(pack.active, dtype=torch.float32)).to(device)
    keep = torch.tensor(pack.active, device=device)
    pack.net.train()  # BatchNorm (ResNet) normalises with batch statistics while training
    sums = graphs.train_epoch(pack, orders, rates_on_device, keep)  # None: eager
    if sums is None:
        sums = pack.eager_epoch(splits, orders, rates_on_device, keep, rates)
    loss_sum, correct = sums
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
        posterior.offer(probs, [i for i in range(pack.k) if pack.active[i]])
        averaged, count = posterior.result()
        measured.update(zip(("avg_test_acc", "avg_test_nll", "avg_test_ece"),
                            calibration(averaged, splits.test_y, accuracy=True)))
        measured["samples"] = count
    return measured


def _judge(result: TrialResult, m: EpochMetrics, best_train_acc: float,
           chance: tuple[float, float], bound: float) -> None:
    """Diverged: a non-finite loss or one beyond `bound` (outcomes.loss_bound), or back at
    chance after it had learned."""
    at_chance, learned = chance
    # The train loss is taken before each step; weights the epoch's last step blew up show
    # only in the evaluation after it (the test NLL is NaN or huge for them).
    if not (m.train_loss <= bound and m.test_nll <= bound):  # NaN compares False
        result.status, result.diverged = "diverged", "nonfinite"
    elif m.train_acc <= at_chance and best_train_acc >= learned:
        result.status, result.diverged = "diverged", "collapsed"


def _leave(pack: Pack, slots: list[_Slot | None], stop: set[Hashable],
           on_finish: FinishCallback) -> dict[str, torch.Tensor] | None:
    """Trials that are done leave their slots: diverged, pruned (in `stop`) or at their last
    epoch, each with its weights, handed to `on_finish`. The pack's weights are copied out
    once, when anyone needs them: a GPU makes one copy to the host per packed tensor, not
    one per trial and layer. Returns that copy (None if no one left), which the checkpoint
    of the same epoch reuses."""
    weights: dict[str, torch.Tensor] | None = None
    for i, slot in enumerate(slots):
        if slot is None:
            continue
        result = slot.result
        if result.status == "complete" and slot.key in stop:
            result.status = "pruned"
        if result.status == "complete" and pack.epochs[i] < result.config.epochs:
            continue
        weights = pack.net.pack_state() if weights is None else weights
        result.state_dict = pack.net.unpack(weights, i)
        pack.stop(i)
        slots[i] = None
        on_finish(slot.key, result)
    return weights


def _state(pack: Pack, slots: list[_Slot | None], posterior: sgld.PosteriorAverage | None,
           weights: dict[str, torch.Tensor] | None) -> PackState:
    """The slot table of the trials still training, for a checkpoint; `weights`, the pack's
    weights already copied out after this epoch (or None)."""
    training = {slot.key: i for i, slot in enumerate(slots) if slot is not None}
    members = {}
    for key, i in training.items():
        result = slots[i].result
        members[key] = Resume(None, list(result.epochs), result.status, result.diverged,
                              _sampler_state(pack, posterior, i) if posterior else None)
    if not training:
        weights = {}
    elif weights is None:
        weights = pack.net.pack_state()
    return PackState(pack.net.LAYOUT, weights, training, members, pack.width)


def _sampler_state(pack: Pack, posterior: sgld.PosteriorAverage, i: int) -> dict:
    # A copy: on the CPU .cpu() would alias the running sum, which later epochs change.
    return {"noise": pack.noise.generators[i].get_state() if pack.noise else None,
            "device_type": posterior.total.device.type,
            "total": posterior.total[i].to("cpu", copy=True),
            "count": posterior.count[i], "opportunities": posterior.opportunities[i]}


def _restore_sampler(pack: Pack, posterior: sgld.PosteriorAverage, i: int,
                     r: Resume | None) -> None:
    """Slot i's noise and share of the posterior average: new, or as `r` left them."""
    if r is None or r.sampler is None:
        posterior.restart(i)
        return
    noise, seed = pack.noise, pack.configs[i].seed
    saved_on = r.sampler.get("device_type", posterior.total.device.type)
    if noise is None:
        pass  # the noiseless control: only its share of the average goes on
    elif saved_on == noise.device.type:
        noise.generators[i].set_state(r.sampler["noise"])
    else:
        # CPU and CUDA generators keep different states: the stream cannot go on. The trial
        # goes on with a stream of its own seed and epoch rather than start over.
        epoch = len(r.epochs)
        noise.generators[i].manual_seed(sgld.noise_seed(seed) + epoch)
        warnings.warn(f"SGLD trial with seed {seed}: its noise state was saved on "
                      f"{saved_on} and cannot continue on {noise.device.type}; from epoch "
                      f"{epoch + 1} its noise is a new stream (the run is no longer "
                      "bit-identical to an uninterrupted one)", stacklevel=2)
    posterior.restart(i, r.sampler["total"], r.sampler["count"], r.sampler["opportunities"])
