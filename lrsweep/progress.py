"""Progress display for `lrsweep run`: live bars on a terminal, plain lines otherwise (logs, CI).

Both show trials done/total, the pack's slots (each trial and its epoch) and the best value so
far.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bars

from lrsweep.train.trials import EpochMetrics
from lrsweep.numbers import short
from lrsweep.search.spec import StudySpec
from lrsweep.store.storage import GRACE_SECONDS
from lrsweep.search.pack_run import Progress


def for_console(console: Console):
    """Live bars when the console is a terminal, one plain line per event otherwise."""
    return LiveProgress(console) if console.is_terminal else PlainProgress(console)


def describe(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={short(v)}" for k, v in params.items())


class PlainProgress(Progress):
    def __init__(self, console: Console) -> None:
        self._console = console
        self._total = 0
        self._done = 0
        self._started: dict[int, float] = {}   # trial number → when this run began it
        self._waiting_for = 0

    def start(self, spec: StudySpec, done: int) -> None:
        self._total, self._done = spec.study.trials, done
        self._metric = spec.study.metric
        self._print(f"study {spec.study.name}: {done}/{self._total} trials finished")

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        self._started.setdefault(number, time.perf_counter())
        self._print(f"trial {number} started: {describe(params)}")

    def resumed(self, number: int, epochs_done: int) -> None:
        where = f"its checkpoint after epoch {epochs_done}" if epochs_done else "epoch 1"
        self._print(f"trial {number} was interrupted: continuing from {where}")

    def stopping(self) -> None:
        self._print("Ctrl-C: stopping once this epoch is checkpointed (Ctrl-C again: now)")

    def waiting(self, running: int) -> None:
        if running != self._waiting_for:  # once per change, not once per poll
            self._waiting_for = running
            self._print(f"waiting for {running} trial(s) running in other workers; a worker "
                        f"silent for {GRACE_SECONDS:g} s has its trials taken over here")

    def pack_epoch(self, metrics: dict[int, EpochMetrics], epochs: int) -> None:
        self._print(f"{slots(metrics, epochs)}: {_summary(metrics)}")

    def trial_finished(self, number: int, state: str, value: float | None,
                       best: float | None) -> None:
        self._done += 1
        shown = "" if value is None else f" {self._metric} {value:.4f}"
        began = self._started.pop(number, None)
        took = "" if began is None else f" in {time.perf_counter() - began:.1f} s"
        self._print(f"trial {number} {state}{shown}{took} "
                    f"[{self._done}/{self._total} done, best {short(best)}]")

    def close(self) -> None:
        pass

    def _print(self, line: str) -> None:
        self._console.print(line, markup=False, highlight=False, soft_wrap=True)


class LiveProgress(PlainProgress):
    """Two bars: trials done, and the furthest slot's epoch with every slot's trial and epoch
    beside it; started and finished trials print above them."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self._bars = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                              console=console, transient=True)

    def start(self, spec: StudySpec, done: int) -> None:
        super().start(spec, done)
        self._bars.start()
        self._trials = self._bars.add_task("trials", total=self._total, completed=done, info="")
        self._epoch_bar = self._bars.add_task("epoch ", total=1, info="", visible=False)

    def pack_epoch(self, metrics: dict[int, EpochMetrics], epochs: int) -> None:
        furthest = max(m.epoch for m in metrics.values()) + 1
        self._bars.update(self._epoch_bar, total=epochs, completed=furthest, visible=True,
                          info=f"{slots(metrics, epochs)}: {_summary(metrics)}")

    def trial_finished(self, number: int, state: str, value: float | None,
                       best: float | None) -> None:
        super().trial_finished(number, state, value, best)
        self._bars.update(self._trials, advance=1, info=f"best {short(best)}")

    def close(self) -> None:
        self._bars.stop()


def slots(metrics: dict[int, EpochMetrics], epochs: int) -> str:
    """The pack's slots after an epoch, trials grouped by the epoch they finished:
    "trials 1–4 epoch 2/30" or "trial 7 epoch 9/30, trials 8,11 epoch 2/30"."""
    by_epoch: dict[int, list[int]] = {}
    for number, m in sorted(metrics.items()):
        by_epoch.setdefault(m.epoch + 1, []).append(number)
    return ", ".join(f"{_label(numbers)} epoch {epoch}/{epochs}"
                     for epoch, numbers in sorted(by_epoch.items(), reverse=True))


def _label(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"trial {numbers[0]}"
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"trials {numbers[0]}–{numbers[-1]}"
    return "trials " + ",".join(map(str, numbers))


def _summary(metrics: dict[int, EpochMetrics]) -> str:
    """One trial: its numbers. A pack: the range of validation accuracy and the leader."""
    if len(metrics) == 1:
        m = next(iter(metrics.values()))
        return (f"lr {m.lr:.4g} train_loss {m.train_loss:.4f} train_acc {m.train_acc:.4f} "
                f"val_acc {m.val_acc:.4f} test_acc {m.test_acc:.4f} ({m.seconds:.1f} s)")
    accs = {n: m.val_acc for n, m in metrics.items() if m.val_acc == m.val_acc}
    seconds = next(iter(metrics.values())).seconds
    if not accs:
        return f"{len(metrics)} training ({seconds:.1f} s)"
    leader = max(accs, key=accs.get)
    return (f"val_acc {min(accs.values()):.4f}–{accs[leader]:.4f} (best: trial {leader}), "
            f"{len(metrics)} training ({seconds:.1f} s)")
