"""The progress display: live bars on a terminal, plain lines elsewhere; both show trials
done/total, the epoch of the running trials and the best value so far."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from conftest import study_toml
from lrsweep import progress
from lrsweep.search import spec
from lrsweep.train.trials import EpochMetrics

SPEC = spec.parse(study_toml("shown", trials=3, sampler="random"), source="s.toml")


def feed(display) -> None:
    display.start(SPEC, 1)
    display.resumed(0, 2)
    display.trial_started(1, {"scheduler": "cosine"})
    display.trial_started(2, {"scheduler": "constant"})
    for epoch in range(2):
        display.pack_epoch({n: EpochMetrics(epoch, 0.1, 2.0, 0.3, 1.9, 0.4 + n / 10, 0.4, 1.5)
                            for n in (1, 2)}, 2)
    display.trial_started(3, {"scheduler": "sqrt"})        # a slot turned over
    display.pack_epoch({n: EpochMetrics(e, 0.1, 2.0, 0.3, 1.9, 0.5, 0.4, 1.5)
                        for n, e in ((1, 2), (3, 0))}, 4)
    display.stopping()
    display.trial_finished(1, "complete", 0.5, 0.5, 2)
    display.trial_finished(2, "pruned", None, 0.5, 3)
    display.close()


@pytest.mark.parametrize("terminal", [False, True], ids=["plain", "live"])
def test_display_shows_progress_and_best(terminal):
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=terminal, width=160)
    display = progress.for_console(console)
    assert isinstance(display, progress.LiveProgress) == terminal
    feed(display)
    text = buffer.getvalue()
    assert "trial 0 was interrupted: continuing from its checkpoint after epoch 2" in text
    assert "trial 1 complete val_acc 0.5000" in text and "[2/3 done, best 0.5]" in text
    assert "trial 2 pruned" in text and "[3/3 done" in text
    assert "Ctrl-C: stopping at the next safe point, the epoch in flight checkpointed" in text
    assert "trial 3 started: scheduler=sqrt" in text
    if not terminal:
        assert "trials 1–2 epoch 2/2: val_acc 0.5000–0.6000 (best: trial 2)" in text
        assert "trial 1 epoch 3/4, trial 3 epoch 1/4: val_acc 0.5000–0.5000" in text


def test_a_pack_is_summed_up_by_the_studys_metric_in_its_direction():
    buffer = io.StringIO()
    display = progress.for_console(Console(file=buffer, force_terminal=False, width=160))
    text = study_toml("loss", trials=3, sampler="random")
    display.start(spec.parse(text.replace("[study]", '[study]\nmetric = "val_loss"'),
                             source="s.toml"), 0)
    # val_loss 1.9, 1.7, 1.5 for trials 1–3; val_acc ranks them the other way round.
    display.pack_epoch({n: EpochMetrics(0, 0.1, 2.0, 0.3, 2.1 - n / 5, 0.7 - n / 10, 0.4, 1.5)
                        for n in (1, 2, 3)}, 2)
    display.pack_epoch({1: EpochMetrics(1, 0.1, 2.0, 0.3, 1.2, 0.7, 0.4, 1.5)}, 2)
    text = buffer.getvalue()
    assert "trials 1–3 epoch 1/2: val_loss 1.5000–1.9000 (best: trial 3)" in text
    assert "trial 1 epoch 2/2: lr 0.1 train_loss 2.0000 train_acc 0.3000 val_loss 1.2000" in text


def test_waiting_for_other_workers_is_told_once_per_change():
    buffer = io.StringIO()
    display = progress.for_console(Console(file=buffer, force_terminal=False, width=160))
    display.start(SPEC, 1)
    for running in (2, 2, 2, 1, 1):  # polled every two seconds
        display.waiting(running)
    lines = [line for line in buffer.getvalue().splitlines() if line.startswith("waiting")]
    assert [line.split()[2] for line in lines] == ["2", "1"]
