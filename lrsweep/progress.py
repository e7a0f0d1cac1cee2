"""Progress display for `lrsweep run`: live bars on a terminal, plain lines otherwise (logs, CI).

Both show trials done/total, the epoch within the running trial and the best value so far.
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
        self._started = 0.0
        self._waiting_for = 0

    def start(self, spec: StudySpec, done: int) -> None:
        self._total, self._done = spec.study.trials, done
        self._metric = spec.study.metric
        self._print(f"study {spec.study.name}: {done}/{self._total} trials finished")

    def pack_started(self, trials: list[tuple[int, dict[str, Any]]], epochs: int) -> None:
        self._begin_pack(trials, epochs)
        for number, params in trials:
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

    def pack_epoch(self, metrics: dict[int, EpochMetrics]) -> None:
        self._print(f"{self._label} epoch {_epoch_of(metrics)}/{self._epochs}: {_summary(metrics)}")

    def trial_finished(self, number: int, state: str, value: float | None,
                       best: float | None) -> None:
        self._done += 1
        shown = "" if value is None else f" {self._metric} {value:.4f}"
        self._print(f"trial {number} {state}{shown} in {time.perf_counter() - self._started:.1f} s "
                    f"[{self._done}/{self._total} done, best {short(best)}]")

    def close(self) -> None:
        pass

    def _begin_pack(self, trials: list[tuple[int, dict[str, Any]]], epochs: int) -> None:
        self._epochs = epochs
        self._started = time.perf_counter()
        self._label = _label([number for number, _ in trials])

    def _print(self, line: str) -> None:
        self._console.print(line, markup=False, highlight=False, soft_wrap=True)


class LiveProgress(PlainProgress):
    """Two bars (trials, epochs of the running trial); finished trials print above them."""

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

    def pack_started(self, trials: list[tuple[int, dict[str, Any]]], epochs: int) -> None:
        self._begin_pack(trials, epochs)
        what = describe(trials[0][1]) if len(trials) == 1 else f"a pack of {len(trials)}"
        self._bars.reset(self._epoch_bar, total=epochs, visible=True,
                         info=f"{self._label}: {what}")

    def pack_epoch(self, metrics: dict[int, EpochMetrics]) -> None:
        self._bars.update(self._epoch_bar, advance=1, info=f"{self._label}: {_summary(metrics)}")

    def trial_finished(self, number: int, state: str, value: float | None,
                       best: float | None) -> None:
        super().trial_finished(number, state, value, best)
        self._bars.update(self._trials, advance=1, info=f"best {short(best)}")

    def close(self) -> None:
        self._bars.stop()


def _label(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"trial {numbers[0]}"
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"trials {numbers[0]}–{numbers[-1]}"
    return "trials " + ",".join(map(str, numbers))


def _epoch_of(metrics: dict[int, EpochMetrics]) -> int:
    return next(iter(metrics.values())).epoch + 1


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
