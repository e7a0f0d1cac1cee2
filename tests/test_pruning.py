"""Pruning in lockstep: the median pruner's peers are every trial at the step, and no trial is
judged inside its warmup."""

from __future__ import annotations

import math
import random

import optuna
import pytest
from optuna.trial import TrialState

from lrsweep import schedules
from lrsweep.search import pruning
from lrsweep.search.pruning import AFTER_WARMUP, LockstepMedianPruner, judged_from
from lrsweep.train.trials import TrialConfig


def trial_with(study, values, state=TrialState.RUNNING):
    """A trial that reported values[step] at each step, left in `state`."""
    trial = study.ask()
    for step, value in enumerate(values):
        trial.report(value, step)
    if state == TrialState.COMPLETE:
        study.tell(trial, values[-1])
    elif state == TrialState.PRUNED:
        study.tell(trial, state=TrialState.PRUNED)
    return trial


def judge(study, pruner, trial):
    return pruner.prune(study, study._storage.get_trial(trial._trial_id))


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_with_complete_peers_it_decides_as_optunas_median_pruner(direction):
    # The independent oracle: when every peer is complete, both see the same peers.
    rng = random.Random(3)
    ours = LockstepMedianPruner(n_startup_trials=5)
    optunas = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    decisions = []
    for case in range(40):
        study = optuna.create_study(direction=direction)
        for _ in range(rng.randint(3, 9)):
            trial_with(study, [rng.random() for _ in range(4)], TrialState.COMPLETE)
        trial = trial_with(study, [rng.random() for _ in range(rng.randint(1, 4))])
        mine = judge(study, ours, trial)
        assert mine == judge(study, optunas, trial), case
        decisions.append(mine)
    assert any(decisions) and not all(decisions)  # both kinds of decision were tested


def test_running_and_pruned_trials_at_the_step_are_peers():
    study = optuna.create_study(direction="maximize")
    pruner = LockstepMedianPruner(n_startup_trials=5)
    for value in (0.5, 0.6, 0.7):                       # a pack's mates, still running
        trial_with(study, [0.1, value])
    trial_with(study, [0.1, 0.8], TrialState.PRUNED)    # pruned later, but it reached step 1
    trial_with(study, [0.1, 0.9, 0.95], TrialState.COMPLETE)
    low, high = trial_with(study, [0.1, 0.3]), trial_with(study, [0.1, 0.85])
    assert judge(study, pruner, low)        # below the median of 0.5 … 0.9 (and 0.85)
    assert not judge(study, pruner, high)
    # Optuna's own sees one complete trial and prunes no one.
    assert not judge(study, optuna.pruners.MedianPruner(n_warmup_steps=0), low)


def test_no_one_is_judged_before_enough_trials_reached_the_step():
    study = optuna.create_study(direction="maximize")
    pruner = LockstepMedianPruner(n_startup_trials=5)
    for value in (0.5, 0.6, 0.7, 0.8):
        trial_with(study, [value, value])
    trial_with(study, [0.9])                # never reached step 1: not a peer there
    late = trial_with(study, [0.0, 0.0])
    assert not judge(study, pruner, late)   # 4 peers at step 1
    trial_with(study, [0.9, 0.9])
    assert judge(study, pruner, late)       # 5


def test_a_trial_with_only_nan_values_is_pruned_and_nan_peers_are_left_out():
    study = optuna.create_study(direction="maximize")
    pruner = LockstepMedianPruner(n_startup_trials=2)
    trial_with(study, [math.nan]), trial_with(study, [math.nan])
    nan = trial_with(study, [math.nan])
    assert judge(study, pruner, nan)
    fine = trial_with(study, [0.2])
    assert not judge(study, pruner, fine)   # its peers' values are all NaN: none counted


def config(unit="epoch", **schedule):
    return TrialConfig(schedules.build("cosine", base_lr=0.3, max_update=20, **schedule),
                       unit=unit)


@pytest.mark.parametrize("unit, schedule, steps, expected", [
    ("epoch", {}, 195, 0),                                  # no warmup: judged from epoch 1
    ("epoch", {"warmup_steps": 5}, 195, 5),                 # epochs 0–4 warm up
    ("epoch", {"warmup_steps": 5, "lag": 1}, 195, 6),       # the chapter's "as printed"
    ("step", {"warmup_steps": 8}, 4, 2),                    # steps 0–7: epochs 0 and 1
    ("step", {"warmup_steps": 9}, 4, 3),                    # step 8 is in epoch 2
])
def test_a_trial_is_judged_from_the_epoch_after_its_warmup(unit, schedule, steps, expected):
    cfg = config(unit, **schedule)
    assert judged_from(cfg, steps) == expected + AFTER_WARMUP
    # The warmup is over by then: every step of the epoch before runs on the schedule's own
    # clock (the rate the schedule without warmup would give `warmup_steps` steps later).
    per_epoch = 1 if unit == "epoch" else steps
    first_free = (judged_from(cfg, steps) - AFTER_WARMUP) * per_epoch
    w, lag = schedule.get("warmup_steps", 0), schedule.get("lag", 0)
    assert first_free >= lag + w
    if w:  # and the step before that epoch's start (or one of its epoch) was still warming
        assert first_free - per_epoch < lag + w


@pytest.mark.parametrize("pruner", [
    LockstepMedianPruner(n_startup_trials=3),
    optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)],
    ids=["lockstep", "optuna-median"])
def test_judging_a_pack_at_once_decides_as_each_trial_asked_alone(pruner):
    rng = random.Random(5)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for _ in range(4):
        trial_with(study, [rng.random(), rng.random()], TrialState.COMPLETE)
    pack = [trial_with(study, [0.0, rng.random()]) for _ in range(8)]
    verdicts = pruning.judge(study, pack)
    assert verdicts == [trial.should_prune() for trial in pack]
    assert any(verdicts) and not all(verdicts)
