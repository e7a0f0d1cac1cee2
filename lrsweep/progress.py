"""Progress display for `lrsweep run`: live bars on a terminal, plain lines otherwise (logs, CI).

Both show trials done/total, the pack's slots (each trial and its epoch) and the best value so
far.
"""

from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from lrsweep.train.trials import EpochMetrics
from lrsweep.numbers import short
from lrsweep.search.spec import StudySpec
from lrsweep.search.spec_types import METRICS
from lrsweep.store.leases import GRACE_SECONDS
from lrsweep.search.work import Progress


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
        self._metric = "val_acc"  # the study's, from start()

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
        self._print("Ctrl-C: stopping at the next safe point, the epoch in flight checkpointed "
                    "(Ctrl-C again: now)")

    def waiting(self, running: int) -> None:
        if running != self._waiting_for:  # once per change, not once per poll
            self._waiting_for = running
            self._print(f"waiting for {running} trial(s) running in other workers; a worker "
                        f"silent for {GRACE_SECONDS:g} s has its trials taken over here")

    def pack_epoch(self, metrics: dict[int, EpochMetrics], epochs: int) -> None:
        self._print(f"{slots(metrics, epochs)}: {_summary(metrics, self._metric)}")

    def trial_finished(self, number: int, state: str, value: float | None,
                       best: float | None, done: int) -> None:
        self._done = max(self._done, done)  # the count only grows, whatever order reads end in
        shown = "" if value is None else f" {self._metric} {value:.4f}"
        began = self._started.pop(number, None)
        took = "" if began is None else f" in {time.perf_counter() - began:.1f} s"
        self._print(f"trial {number} {state}{shown}{took} "
                    f"[{self._done}/{self._total} done, best {short(best)}]")

    def note(self, line: str) -> None:
        """A line from the loop: interrupted, trials taken over, a write that failed."""
        self._print(line)

    def study_done(self, done: int) -> None:
        """Trials finished by every worker, as the loop last read them (the count only
        grows)."""
        self._done = max(self._done, done)

    def close(self) -> None:
        pass

    def _print(self, line: str) -> None:
        self._console.print(line, markup=False, highlight=False, soft_wrap=True)


class LiveProgress(PlainProgress):
    """Two lines kept at the bottom of the terminal (`LiveView`): trials done, and the pack's
    slots with the furthest epoch; started and finished trials print above them."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self._view = LiveView()
        self._live = Live(self._view, console=console, transient=True, refresh_per_second=4)

    def start(self, spec: StudySpec, done: int) -> None:
        super().start(spec, done)
        self._view.total, self._view.done = self._total, done
        self._view.started = time.monotonic()
        self._live.start()

    def pack_epoch(self, metrics: dict[int, EpochMetrics], epochs: int) -> None:
        self._view.epoch = max(m.epoch for m in metrics.values()) + 1
        self._view.epochs = epochs
        self._view.slots = slots(metrics, epochs)
        self._view.summary = _summary(metrics, self._metric)
        self._live.refresh()

    def trial_finished(self, number: int, state: str, value: float | None,
                       best: float | None, done: int) -> None:
        super().trial_finished(number, state, value, best, done)
        self._view.done, self._view.best = self._done, best
        self._live.refresh()

    def study_done(self, done: int) -> None:
        super().study_done(done)
        self._view.done = self._done
        self._live.refresh()

    def close(self) -> None:
        self._live.stop()


class LiveView:
    """The live lines, laid out afresh for the width they are drawn at:

        trials ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━──── 13/40 0:05:12 best 0.8652
        epoch  ━━━━━━━━━━━━━───────────────────────────── 3/30  trials 12–19 epoch 3/30: …

    A narrower terminal shortens the bars to 10 cells, then shortens the text after the
    count; below that the bars go, then the text, then the labels: the count and the elapsed
    time stay."""

    BAR, MIN_BAR, MIN_TEXT = 40, 10, 24

    def __init__(self) -> None:
        self.total = self.done = self.epoch = self.epochs = 0
        self.best: float | None = None
        self.slots = self.summary = ""
        self.started = time.monotonic()

    def __rich_console__(self, console: Console, options: Any):
        for line in self.lines(options.max_width):
            yield line

    def lines(self, width: int) -> list[Text]:
        elapsed = int(time.monotonic() - self.started)
        clock = f"{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}"
        rows = [("trials", self.done, self.total, clock, [f"best {short(self.best)}"])]
        if self.epochs:
            rows.append(("epoch", self.epoch, self.epochs, "",
                         [f"{self.slots}: {self.summary}", self.slots]))
        counts = [f"{done}/{total}" for _, done, total, _, _ in rows]
        count_width = max(map(len, counts))
        # Everything on the first line but its bar and its text: label, count, clock, spaces.
        fixed = 10 + count_width + len(clock)
        bar = max(self.MIN_BAR, min(self.BAR, width - fixed - self.MIN_TEXT))
        if fixed + bar + self.MIN_TEXT > width:
            bar = 0  # no room for both: the bar goes first, the count says the same
        return [_line(label, done / total if total else 0.0, count.ljust(count_width), clock,
                      texts, bar, width)
                for (label, done, total, clock, texts), count in zip(rows, counts)]


def _line(label: str, fraction: float, count: str, clock: str, texts: list[str], bar: int,
          width: int) -> Text:
    """One live line within `width`: what must stay (count, clock) first, then the label, the
    bar and the text that fits (`_fit_text`)."""
    must = " ".join(p for p in (count, clock) if p)
    head = f"{label:<6} " if len(must) + 7 <= width else ""
    room = width - len(head) - len(must) - (bar + 1 if bar else 0) - 1
    text = _fit_text(texts, room)
    line = Text(head, no_wrap=True, overflow="crop")
    if bar:
        filled = round(min(max(fraction, 0.0), 1.0) * bar)
        line.append("━" * filled, style="bar.complete")
        line.append("─" * (bar - filled) + " ", style="bar.back")
    line.append(must, style="progress.download")
    if text:
        line.append(" " + text)
    return line


def _fit_text(texts: list[str], room: int) -> str:
    """The first text that fits in `room`; else one cut with "…": the first when the cut
    keeps 20 characters more than the next says in full, the last when 12 fit, else none."""
    for i, text in enumerate(texts):
        if len(text) <= room:
            return text
        if i + 1 < len(texts) and room >= len(texts[i + 1]) + 20:
            return text[:room - 1] + "…"
    return texts[-1][:room - 1] + "…" if room >= 12 else ""


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


def _summary(metrics: dict[int, EpochMetrics], metric: str = "val_acc") -> str:
    """One trial: its numbers. A pack: the range of the study's metric, the leader at the end
    its direction favours (lowest loss, highest accuracy)."""
    if len(metrics) == 1:
        m = next(iter(metrics.values()))
        shown = ["train_loss", "train_acc", "val_acc", "test_acc"]
        if metric not in shown:
            shown.insert(2, metric)
        values = " ".join(f"{key} {getattr(m, key):.4f}" for key in shown)
        return f"lr {m.lr:.4g} {values} ({m.seconds:.1f} s)"
    values = {n: getattr(m, metric) for n, m in metrics.items()}
    values = {n: v for n, v in values.items() if math.isfinite(v)}
    seconds = next(iter(metrics.values())).seconds
    if not values:
        return f"{len(metrics)} training ({seconds:.1f} s)"
    maximize = METRICS[metric] == "maximize"
    leader = (max if maximize else min)(values, key=values.get)
    worst = (min if maximize else max)(values.values())
    low, high = sorted((worst, values[leader]))
    return (f"{metric} {low:.4f}–{high:.4f} (best: trial {leader}), "
            f"{len(metrics)} training ({seconds:.1f} s)")
