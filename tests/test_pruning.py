"""Pruning in lockstep: the median and hyperband pruners' peers are every trial at the step,
and no trial is judged inside its warmup."""

from __future__ import annotations

import math
import random

import optuna
import pytest
from optuna.trial import TrialState

from lrsweep import schedules
from lrsweep.search import pruning
from lrsweep.search.pruning import (AFTER_WARMUP, LockstepHyperbandPruner,
                                    LockstepMedianPruner, judged_from)
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
    LockstepHyperbandPruner(max_resource=4),
    optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)],
    ids=["lockstep", "lockstep-hyperband", "optuna-median"])
def test_judging_a_pack_at_once_decides_as_each_trial_asked_alone(pruner):
    rng = random.Random(5)
    study = optuna.create_study(study_name="pack", direction="maximize", pruner=pruner)
    for _ in range(4):
        trial_with(study, [rng.random(), rng.random()], TrialState.COMPLETE)
    pack = [trial_with(study, [0.0, rng.random()]) for _ in range(8)]
    verdicts = pruning.judge(study, pack)
    assert verdicts == [trial.should_prune() for trial in pack]
    assert any(verdicts) and not all(verdicts)


# --- Hyperband ------------------------------------------------------------------------------

def run_sequentially(pruner, direction, seed):
    """Trials one after another, each reporting a noisy rising curve over 30 steps and asked
    after every report whether to stop: (trial number, step it was pruned at or None)."""
    rng = random.Random(seed)
    study = optuna.create_study(study_name="sequential", direction=direction, pruner=pruner)
    sign = 1 if direction == "maximize" else -1
    outcomes = []
    for number in range(60):
        trial, level = study.ask(), rng.random()
        pruned_at = None
        for step in range(30):
            value = sign * (level * (1 - 0.9 ** (step + 1)) + rng.gauss(0, 0.02))
            trial.report(value, step)
            if trial.should_prune():
                pruned_at = step
                break
        if pruned_at is None:
            study.tell(trial, value)
        else:
            study.tell(trial, state=TrialState.PRUNED)
        outcomes.append((number, pruned_at))
    return outcomes


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_hyperband_run_one_trial_at_a_time_decides_as_optunas(direction):
    # The independent oracle: when trials run one after another every rung is judged at its
    # own step, in the order trials reach it, and Optuna's rung records equal our reads.
    ours = run_sequentially(LockstepHyperbandPruner(max_resource=30), direction, seed=1)
    optunas = run_sequentially(optuna.pruners.HyperbandPruner(min_resource=1, max_resource=30),
                               direction, seed=1)
    assert ours == optunas
    steps = {step for _, step in ours}
    assert {None, 1, 3, 9, 27} <= steps      # completed, and pruned at rungs of every bracket
    assert steps <= {None, 1, 3, 9, 27}      # and at rungs only


def test_hyperband_brackets_are_optunas():
    for study_name, max_resource in [("a", 30), ("b", 27), ("joint", 9), ("c", 4), ("d", 1)]:
        ours = LockstepHyperbandPruner(max_resource=max_resource)
        optunas = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_resource)
        study = optuna.create_study(study_name=study_name, pruner=optunas)
        first = trial_with(study, [0.5])
        judge(study, optunas, first)  # Optuna lays out its brackets on its first call
        for number in range(300):
            frozen = optuna.trial.FrozenTrial(
                number=number, state=TrialState.RUNNING, value=None, datetime_start=None,
                datetime_complete=None, params={}, distributions={}, user_attrs={},
                system_attrs={}, intermediate_values={}, trial_id=number)
            assert ours.bracket(study_name, number) == optunas._get_bracket_id(study, frozen)
    assert LockstepHyperbandPruner(max_resource=30).budgets == [27, 12, 6, 4]


def trials_in_bracket(study, pruner, bracket, count):
    """Asks trials until `count` of them are in `bracket` (the others report nothing)."""
    chosen = []
    while len(chosen) < count:
        trial = study.ask()
        if pruner.bracket(study.study_name, trial.number) == bracket:
            chosen.append(trial)
    return chosen


def test_hyperband_pack_mates_at_a_rung_are_each_others_rivals_whatever_the_order():
    ours = LockstepHyperbandPruner(max_resource=30)
    verdicts = {}
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        study = optuna.create_study(study_name="rung", direction="maximize", pruner=ours)
        pack = trials_in_bracket(study, ours, bracket=0, count=3)
        for trial, value in zip(pack, (0.1, 0.5, 0.9)):   # all reported before any judging
            trial.report(0.05, 0)
            trial.report(value, 1)                       # step 1: bracket 0's first rung
        asked = [pack[i] for i in order]
        decided = dict(zip(order, pruning.judge(study, asked)))
        verdicts[tuple(order)] = [decided[i] for i in range(3)]
        assert all(not t.system_attrs for t in study.get_trials())  # it writes nothing
    # Three at the rung: the best third (one) goes on, in whatever order they were judged.
    assert set(map(tuple, verdicts.values())) == {(True, True, False)}
    # Optuna's records a trial's rung value as it judges it and compares it with those
    # recorded before: judged from worst to best, each is the best so far, and all pass.
    optunas = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=30)
    study = optuna.create_study(study_name="rung", direction="maximize", pruner=optunas)
    pack = trials_in_bracket(study, ours, bracket=0, count=3)
    for trial, value in zip(pack, (0.1, 0.5, 0.9)):
        trial.report(0.05, 0)
        trial.report(value, 1)
    assert [t.should_prune() for t in pack] == [False, False, False]


def test_hyperband_compares_values_of_the_rungs_own_step():
    # A (a long warmup) is first judged at step 5; B, no warmup, reaches step 1 after it.
    # Optuna's enters A into rungs 1 and 3 with its step-5 value, and B's step-1 value loses
    # to it; ours compares B with what A had at step 1.
    values_a = [0.1, 0.2, 0.3, 0.4, 0.5, 0.9]
    verdicts = []
    for pruner in (LockstepHyperbandPruner(max_resource=30),
                   optuna.pruners.HyperbandPruner(min_resource=1, max_resource=30)):
        study = optuna.create_study(study_name="grace", direction="maximize", pruner=pruner)
        a, b = trials_in_bracket(study, LockstepHyperbandPruner(max_resource=30), 0, 2)
        for step, value in enumerate(values_a):
            a.report(value, step)
        assert not a.should_prune()        # step 5: no rung of bracket 0 (ours), passes (its)
        b.report(0.3, 0)
        b.report(0.5, 1)
        verdicts.append(b.should_prune())
    assert verdicts == [False, True]


def test_hyperband_prunes_nan_at_a_rung_and_leaves_nan_rivals_out():
    ours = LockstepHyperbandPruner(max_resource=30)
    study = optuna.create_study(study_name="nan", direction="maximize", pruner=ours)
    sick, fine, low = trials_in_bracket(study, ours, bracket=0, count=3)
    sick.report(0.1, 0)
    sick.report(float("nan"), 1)
    fine.report(0.1, 0)
    fine.report(0.6, 1)
    assert judge(study, ours, sick)
    assert not judge(study, ours, fine)    # alone at the rung once the NaN is left out
    low.report(0.1, 0)
    low.report(0.4, 1)
    assert judge(study, ours, low) and not judge(study, ours, fine)
    sick.report(0.2, 2)
    assert not judge(study, ours, sick)    # step 2 is no rung: not judged


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_resource=0), "min_resource"), (dict(max_resource=30, min_resource=0), "1 ≤"),
    (dict(max_resource=30, reduction_factor=1), "reduction_factor")])
def test_hyperband_refuses_impossible_resources(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LockstepHyperbandPruner(**kwargs)
