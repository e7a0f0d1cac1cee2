"""The engine's slot contract without the training, for benchmarks of the study loop.

`slots_engine(metrics_of, pace)` returns a stand-in for `engine.train_slots` that admits
trials into free slots, makes each epoch's metrics with `metrics_of(key, config, epoch)`,
tells `on_epoch`, hands finished and pruned trials to `on_finish` (with a real LeNet's
weights, which the store exports) and the slot table to `on_states` (with a real pack's
weights, which the checkpoint writes), then refills the free slots, as the engine does.
`pace(trials)`, when given, is called once an epoch with the number of trials training:
the benchmark's stand-in for the time they would take.
"""

from __future__ import annotations

from typing import Callable

from lrsweep.train import engine
from lrsweep.train.model import PackedLeNet, lenet


def slots_engine(metrics_of: Callable[..., engine.EpochMetrics],
                 pace: Callable[[int], None] | None = None):
    def train_slots(width, splits, admit, *, on_finish, on_epoch=None, on_states=None):
        net = PackedLeNet([lenet(0)] * width)
        slots: dict[int, tuple[object, engine.TrialResult]] = {}

        def fill() -> None:
            while True:
                free = [i for i in range(width) if i not in slots]
                admitted = list(admit(len(free))) if free else []
                if not admitted:
                    return
                for i, a in zip(free, admitted):
                    result = engine.TrialResult(a.config, device="none", pack_size=width)
                    result.epochs = list(a.resume.epochs) if a.resume else []
                    slots[i] = (a.key, result)

        fill()
        while slots:
            if pace:
                pace(len(slots))
            metrics = {}
            for key, result in slots.values():
                m = metrics_of(key, result.config, len(result.epochs))
                result.epochs.append(m)
                metrics[key] = m
            stop = set(on_epoch(metrics)) if on_epoch else set()
            for i, (key, result) in list(slots.items()):
                if key in stop or len(result.epochs) >= result.config.epochs:
                    result.status = "pruned" if key in stop else "complete"
                    result.state_dict = net.trial_state_dict(i)
                    del slots[i]
                    on_finish(key, result)
            if on_states:
                on_states(engine.PackState(
                    net.LAYOUT, net.pack_state(), {key: i for i, (key, _) in slots.items()},
                    {key: engine.Resume(None, list(r.epochs)) for key, r in slots.values()}))
            fill()
    return train_slots
