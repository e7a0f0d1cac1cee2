"""Tests for lrsweep.schedules against oracles that share no code with it.

Oracles: the D2L chapter's own scheduler classes (re-typed below), torch's
lr_scheduler classes, and MXNet's PolyScheduler (re-typed below).  Then generic
properties over the whole registry, bad input, and the module doctest.
"""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest

from lrsweep import schedules

try:
    import torch
except ImportError:  # schedules.py is pure Python; only the torch oracle needs torch
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch oracle needs torch")

REL = 1e-12  # pure-Python oracle vs pure-Python formula: only rounding may differ


# --- oracles copied from the D2L chapter "Learning Rate Scheduling" ------------------------
# Kept as close to the chapter's code as possible, so that they are an independent
# statement of what the schedules should be.  FactorScheduler and CosineScheduler are
# stateful: they must be called once per t, in order, starting at t = 0.

class SquareRootScheduler:
    def __init__(self, lr=0.1):
        self.lr = lr

    def __call__(self, num_update):
        return self.lr * pow(num_update + 1.0, -0.5)


class FactorScheduler:
    def __init__(self, factor=1, stop_factor_lr=1e-7, base_lr=0.1):
        self.factor = factor
        self.stop_factor_lr = stop_factor_lr
        self.base_lr = base_lr

    def __call__(self, num_update):
        self.base_lr = max(self.stop_factor_lr, self.base_lr * self.factor)
        return self.base_lr


class CosineScheduler:
    def __init__(self, max_update, base_lr=0.01, final_lr=0,
                 warmup_steps=0, warmup_begin_lr=0):
        self.base_lr_orig = base_lr
        self.max_update = max_update
        self.final_lr = final_lr
        self.warmup_steps = warmup_steps
        self.warmup_begin_lr = warmup_begin_lr
        self.max_steps = self.max_update - self.warmup_steps

    def get_warmup_lr(self, epoch):
        increase = (self.base_lr_orig - self.warmup_begin_lr) \
            * float(epoch) / float(self.warmup_steps)
        return self.warmup_begin_lr + increase

    def __call__(self, epoch):
        if epoch < self.warmup_steps:
            return self.get_warmup_lr(epoch)
        if epoch <= self.max_update:
            self.base_lr = self.final_lr + (
                self.base_lr_orig - self.final_lr) * (1 + math.cos(
                    math.pi * (epoch - self.warmup_steps) / self.max_steps)) / 2
        return self.base_lr


# MXNet's mxnet.lr_scheduler.PolyScheduler (linear warmup mode), re-typed: the chapter
# uses MXNet's built-in schedulers, and `poly` promises to be this one.
class MXNetPolyScheduler:
    def __init__(self, max_update, base_lr=0.01, pwr=2, final_lr=0,
                 warmup_steps=0, warmup_begin_lr=0):
        self.base_lr_orig = base_lr
        self.base_lr = base_lr
        self.max_update = max_update
        self.power = pwr
        self.final_lr = final_lr
        self.warmup_steps = warmup_steps
        self.warmup_begin_lr = warmup_begin_lr
        self.max_steps = self.max_update - self.warmup_steps

    def get_warmup_lr(self, num_update):
        increase = (self.base_lr_orig - self.warmup_begin_lr) \
            * float(num_update) / float(self.warmup_steps)
        return self.warmup_begin_lr + increase

    def __call__(self, num_update):
        if num_update < self.warmup_steps:
            return self.get_warmup_lr(num_update)
        if num_update <= self.max_update:
            self.base_lr = self.final_lr + (self.base_lr_orig - self.final_lr) * \
                pow(1 - float(num_update - self.warmup_steps) / float(self.max_steps),
                    self.power)
        return self.base_lr


def sequential(oracle, n):
    """The stateful oracles are only meaningful when called for t = 0, 1, …, n-1 in order."""
    return [oracle(t) for t in range(n)]


def assert_close_lists(got, want, rel=REL, abs_=0.0):
    assert len(got) == len(want)
    for t, (g, w) in enumerate(zip(got, want)):
        assert g == pytest.approx(w, rel=rel, abs=abs_), f"t={t}: lrsweep {g!r} != oracle {w!r}"


# --- oracle 1: the chapter's classes -------------------------------------------------------

@pytest.mark.parametrize("lr", [0.1, 0.3, 2.0])
def test_sqrt_matches_chapter_square_root_scheduler(lr):
    f = schedules.build("sqrt", base_lr=lr)
    assert_close_lists([f(t) for t in range(50)], sequential(SquareRootScheduler(lr=lr), 50))


@pytest.mark.parametrize("exponent", [0.5, 1.0, 0.25, 2.0])
def test_inverse_power_reduces_to_chapter_formula(exponent):
    # No chapter class for it; at exponent 1/2 it must be SquareRootScheduler, otherwise the
    # chapter's η0 (t+1)^-p written out.
    f = schedules.build("inverse_power", base_lr=0.3, exponent=exponent)
    want = [0.3 * pow(t + 1.0, -exponent) for t in range(50)]
    assert_close_lists([f(t) for t in range(50)], want)
    if exponent == 0.5:
        assert_close_lists([f(t) for t in range(50)], sequential(SquareRootScheduler(0.3), 50))


@pytest.mark.parametrize("factor, stop_factor_lr, base_lr", [
    (0.9, 1e-2, 2.0),   # the chapter's own example, which hits the floor at t = 50
    (0.5, 1e-7, 0.1),   # the chapter's default floor
    (0.99, 1e-3, 0.3),
    (1.0, 1e-7, 0.1),   # the chapter's default factor: constant
])
def test_factor_matches_chapter_factor_scheduler(factor, stop_factor_lr, base_lr):
    # The chapter's class multiplies before returning, so its call for t (the (t+1)-th call)
    # already carries factor^(t+1).
    f = schedules.build("factor", base_lr=base_lr, factor=factor, stop_factor_lr=stop_factor_lr)
    oracle = FactorScheduler(factor=factor, stop_factor_lr=stop_factor_lr, base_lr=base_lr)
    assert_close_lists([f(t) for t in range(80)], sequential(oracle, 80))


def test_factor_reaches_the_floor_exactly():
    # Once clamped, both must sit on stop_factor_lr itself, not a rounding away from it.
    f = schedules.build("factor", base_lr=2.0, factor=0.9, stop_factor_lr=1e-2)
    assert f(79) == 1e-2
    assert f(0) == pytest.approx(1.8, rel=REL)


@pytest.mark.parametrize("max_update, base_lr, final_lr", [
    (20, 0.3, 0.01),   # the chapter's example
    (20, 0.3, 0.0),
    (7, 1.0, 0.5),
    (1, 0.1, 0.0),     # shortest horizon: straight to final_lr at t = 1
])
def test_cosine_matches_chapter_cosine_scheduler(max_update, base_lr, final_lr):
    f = schedules.build("cosine", base_lr=base_lr, final_lr=final_lr, max_update=max_update)
    oracle = CosineScheduler(max_update, base_lr=base_lr, final_lr=final_lr)
    n = max_update + 15  # well past the horizon, where the chapter pins final_lr
    assert_close_lists([f(t) for t in range(n)], sequential(oracle, n))


@pytest.mark.parametrize("max_update, warmup_steps, warmup_begin_lr, base_lr, final_lr", [
    (20, 5, 0.0, 0.3, 0.01),    # the chapter's warmup example
    (20, 5, 0.05, 0.3, 0.01),
    (30, 1, 0.0, 0.3, 0.0),
    (10, 9, 0.01, 1.0, 0.1),    # cosine part only one step long
])
def test_cosine_with_warmup_matches_chapter_cosine_scheduler(
        max_update, warmup_steps, warmup_begin_lr, base_lr, final_lr):
    f = schedules.build("cosine", base_lr=base_lr, final_lr=final_lr, max_update=max_update,
                        warmup_steps=warmup_steps, warmup_begin_lr=warmup_begin_lr)
    oracle = CosineScheduler(max_update, base_lr=base_lr, final_lr=final_lr,
                             warmup_steps=warmup_steps, warmup_begin_lr=warmup_begin_lr)
    n = max_update + 15
    assert_close_lists([f(t) for t in range(n)], sequential(oracle, n))


def test_chapter_classes_are_stateful_but_lrsweep_is_not():
    # Why the oracles above are called in order, and why lrsweep exists: the chapter's
    # FactorScheduler gives a different answer for the same t on a second call.
    oracle = FactorScheduler(factor=0.9, stop_factor_lr=1e-2, base_lr=2.0)
    assert oracle(7) != oracle(7)
    f = schedules.build("factor", base_lr=2.0, factor=0.9, stop_factor_lr=1e-2)
    assert f(7) == f(7)


# --- oracle 2: torch.optim.lr_scheduler ----------------------------------------------------

# torch's step() updates some rates recursively (lr_t from lr_{t-1}); in float64 over a few
# dozen steps that drifts by ~1e-15, so the pure-Python tolerance still holds.
TORCH_REL = REL


def torch_rates(make_scheduler, base_lr, n):
    """get_last_lr() at epochs 0..n-1, stepping once per epoch as the chapter's get_lr does."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=base_lr)
    scheduler = make_scheduler(optimizer)
    rates = []
    for _ in range(n):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


@needs_torch
@pytest.mark.parametrize("milestones, gamma, base_lr", [
    ([15, 30], 0.5, 0.5),       # the chapter's example
    ([5, 10, 20], 0.1, 0.3),
    ([30, 15], 0.5, 0.5),       # unsorted
    ([3, 3, 8], 0.5, 1.0),      # a repeated milestone decays twice in torch (Counter)
    ([0, 4], 0.5, 1.0),         # a milestone at the very start
    ([100], 0.1, 0.3),          # never reached
])
def test_multistep_matches_torch_multisteplr(milestones, gamma, base_lr):
    n = 40
    f = schedules.build("multistep", base_lr=base_lr, milestones=milestones, gamma=gamma)
    want = torch_rates(
        lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=gamma),
        base_lr, n)
    assert_close_lists([f(t) for t in range(n)], want)


@needs_torch
@pytest.mark.parametrize("max_update, base_lr, final_lr", [
    (20, 0.3, 0.01),
    (20, 0.3, 0.0),
    (13, 1.0, 0.25),
])
def test_cosine_matches_torch_cosineannealinglr(max_update, base_lr, final_lr):
    # CosineAnnealingLR climbs back up after T_max, so they coincide only up to max_update.
    n = max_update + 1
    f = schedules.build("cosine", base_lr=base_lr, final_lr=final_lr, max_update=max_update)
    want = torch_rates(
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_update,
                                                               eta_min=final_lr),
        base_lr, n)
    assert_close_lists([f(t) for t in range(n)], want, rel=TORCH_REL, abs_=1e-15)


@needs_torch
@pytest.mark.parametrize("power", [1.0, 2.0, 0.5, 3.0])
@pytest.mark.parametrize("max_update, base_lr", [(20, 0.3), (7, 1.0)])
def test_poly_matches_torch_polynomiallr(max_update, base_lr, power):
    # PolynomialLR decays to 0 and stays there after total_iters.
    n = max_update + 1
    f = schedules.build("poly", base_lr=base_lr, final_lr=0.0, max_update=max_update,
                        exponent=power)
    want = torch_rates(
        lambda opt: torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=max_update,
                                                          power=power),
        base_lr, n)
    assert_close_lists([f(t) for t in range(n)], want, rel=TORCH_REL, abs_=1e-15)


@needs_torch
@pytest.mark.parametrize("name, params", [
    ("cosine", {"max_update": 20, "final_lr": 0.01}),
    ("constant", {}),
])
@pytest.mark.parametrize("warmup_steps", [1, 5])
def test_warmup_ramp_matches_torch_linearlr(name, params, warmup_steps):
    # LinearLR from start_factor = warmup_begin_lr/base_lr to 1 over W epochs is the ramp
    # towards the schedule's start, which for these two schedules is base_lr.
    base_lr, begin = 0.3, 0.03
    f = schedules.build(name, base_lr=base_lr, warmup_steps=warmup_steps, warmup_begin_lr=begin,
                        **params)
    want = torch_rates(
        lambda opt: torch.optim.lr_scheduler.LinearLR(opt, start_factor=begin / base_lr,
                                                      end_factor=1.0, total_iters=warmup_steps),
        base_lr, warmup_steps + 1)
    assert_close_lists([f(t) for t in range(warmup_steps + 1)], want, rel=TORCH_REL)


# --- oracle 3: MXNet's PolyScheduler -------------------------------------------------------

def mxnet_poly_closed_form(t, base_lr, final_lr, max_update, pwr, warmup_steps, warmup_begin_lr):
    if t < warmup_steps:
        return warmup_begin_lr + (base_lr - warmup_begin_lr) * t / warmup_steps
    t = min(t, max_update)
    return final_lr + (base_lr - final_lr) * (
        1 - (t - warmup_steps) / (max_update - warmup_steps)) ** pwr


POLY_CASES = [
    # max_update, pwr, base_lr, final_lr, warmup_steps, warmup_begin_lr
    (20, 2.0, 0.3, 0.0, 0, 0.0),      # MXNet's default power
    (20, 1.0, 0.3, 0.01, 0, 0.0),
    (20, 0.5, 0.3, 0.01, 0, 0.0),
    (20, 2.0, 0.3, 0.01, 5, 0.0),
    (30, 3.0, 1.0, 0.1, 4, 0.2),
    (10, 1.0, 0.5, 0.0, 9, 0.05),     # decay part only one step long
]


@pytest.mark.parametrize("max_update, pwr, base_lr, final_lr, warmup_steps, warmup_begin_lr",
                         POLY_CASES)
def test_poly_matches_mxnet_polyscheduler(max_update, pwr, base_lr, final_lr, warmup_steps,
                                          warmup_begin_lr):
    n = max_update + 15
    f = schedules.build("poly", base_lr=base_lr, final_lr=final_lr, max_update=max_update,
                        exponent=pwr, warmup_steps=warmup_steps, warmup_begin_lr=warmup_begin_lr)
    got = [f(t) for t in range(n)]
    oracle = MXNetPolyScheduler(max_update, base_lr=base_lr, pwr=pwr, final_lr=final_lr,
                                warmup_steps=warmup_steps, warmup_begin_lr=warmup_begin_lr)
    assert_close_lists(got, sequential(oracle, n))
    closed = [mxnet_poly_closed_form(t, base_lr, final_lr, max_update, pwr, warmup_steps,
                                     warmup_begin_lr) for t in range(n)]
    assert_close_lists(got, closed)


def test_poly_default_exponent_is_mxnets():
    f = schedules.build("poly", base_lr=0.3, max_update=20)
    oracle = MXNetPolyScheduler(20, base_lr=0.3)
    assert_close_lists([f(t) for t in range(30)], sequential(oracle, 30))


# --- generic properties over the registry --------------------------------------------------

# One sensible parameter set per registered schedule; a new schedule must add itself here.
PARAMS = {
    "constant": {},
    "sqrt": {},
    "inverse_power": {"exponent": 0.75},
    "factor": {"factor": 0.9, "stop_factor_lr": 1e-2},
    "multistep": {"milestones": [5, 12], "gamma": 0.5},
    "cosine": {"max_update": 20, "final_lr": 0.01},
    "poly": {"max_update": 20, "final_lr": 0.01, "exponent": 2.0},
}

# Same shapes written with ints, to catch a formula that hands back an int.
INT_PARAMS = {
    "constant": {},
    "sqrt": {},
    "inverse_power": {"exponent": 1},
    "factor": {"factor": 1, "stop_factor_lr": 0},
    "multistep": {"milestones": [5, 12], "gamma": 1},
    "cosine": {"max_update": 20, "final_lr": 0},
    "poly": {"max_update": 20, "final_lr": 0, "exponent": 1},
}

BASE_LR = 0.3


def params_for(name, table=PARAMS):
    if name not in table:
        pytest.fail(f"schedule {name!r} is registered but has no test parameters; "
                    f"add it to PARAMS and INT_PARAMS in {__file__}")
    return dict(table[name])


def test_every_registered_schedule_has_test_parameters():
    assert set(schedules.names()) == set(schedules.REGISTRY)
    assert sorted(PARAMS) == sorted(schedules.names())
    assert sorted(INT_PARAMS) == sorted(schedules.names())


def test_parameters_are_the_registry_parameters():
    for name in schedules.names():
        assert set(params_for(name)) <= set(schedules.parameters(name)), name


ALL = pytest.mark.parametrize("name", schedules.names())


@ALL
@pytest.mark.parametrize("warmup_steps", [0, 3])
def test_returns_plain_python_floats(name, warmup_steps):
    for table, base_lr in ((PARAMS, BASE_LR), (INT_PARAMS, 1)):
        f = schedules.build(name, base_lr=base_lr, warmup_steps=warmup_steps,
                            **params_for(name, table))
        for t in range(40):
            assert type(f(t)) is float, (name, t, f(t))


@ALL
@pytest.mark.parametrize("warmup_steps", [0, 3])
def test_is_a_pure_function(name, warmup_steps):
    f = schedules.build(name, base_lr=BASE_LR, warmup_steps=warmup_steps, **params_for(name))
    assert f(7) == f(7)
    forward = [f(t) for t in range(40)]
    backward = [f(t) for t in reversed(range(40))][::-1]
    assert forward == backward
    # A second schedule built from the same arguments is interchangeable with the first.
    g = schedules.build(name, base_lr=BASE_LR, warmup_steps=warmup_steps, **params_for(name))
    assert [g(t) for t in (30, 2, 17, 0)] == [forward[t] for t in (30, 2, 17, 0)]


def unwarmed(name, warmup_steps):
    """The same schedule with no warmup and its horizon shortened by the warmup."""
    params = params_for(name)
    if "max_update" in params:
        params["max_update"] -= warmup_steps
    return schedules.build(name, base_lr=BASE_LR, **params)


@ALL
@pytest.mark.parametrize("warmup_steps, warmup_begin_lr", [(1, 0.0), (4, 0.0), (5, 0.02)])
def test_warmup_ramps_linearly_to_the_schedule_start(name, warmup_steps, warmup_begin_lr):
    f = schedules.build(name, base_lr=BASE_LR, warmup_steps=warmup_steps,
                        warmup_begin_lr=warmup_begin_lr, **params_for(name))
    peak = unwarmed(name, warmup_steps)(0)
    assert f(0) == warmup_begin_lr
    assert f(warmup_steps) == pytest.approx(peak, rel=REL)
    for t in range(warmup_steps + 1):
        want = warmup_begin_lr + (peak - warmup_begin_lr) * t / warmup_steps
        assert f(t) == pytest.approx(want, rel=REL, abs=1e-15), (name, t)


@ALL
@pytest.mark.parametrize("warmup_steps", [1, 4, 7])
def test_after_warmup_runs_on_its_own_clock(name, warmup_steps):
    f = schedules.build(name, base_lr=BASE_LR, warmup_steps=warmup_steps, **params_for(name))
    g = unwarmed(name, warmup_steps)
    for t in range(warmup_steps, warmup_steps + 40):
        assert f(t) == pytest.approx(g(t - warmup_steps), rel=REL), (name, t)


@ALL
def test_no_warmup_starts_at_the_formula_start(name):
    # warmup_steps=0 must not divide by zero or shift anything.
    f = schedules.build(name, base_lr=BASE_LR, **params_for(name))
    g = schedules.build(name, base_lr=BASE_LR, warmup_steps=0, warmup_begin_lr=0.05,
                        **params_for(name))
    assert [f(t) for t in range(30)] == [g(t) for t in range(30)]


# --- lag: the chapter's printed runs set the rate one epoch late ---------------------------

def chapter_loop_rates(initial_lr, scheduler, num_epochs):
    """The rate each epoch trains at in the chapter's PyTorch `train` (re-typed): the optimizer
    starts at `initial_lr`, and after each epoch `param_group['lr'] = scheduler(epoch)`."""
    lr, rates = initial_lr, []
    for epoch in range(num_epochs):
        rates.append(lr)
        lr = scheduler(epoch)
    return rates


@pytest.mark.parametrize("name, params, oracle, initial_lr", [
    ("sqrt", dict(base_lr=0.1), lambda: SquareRootScheduler(lr=0.1), 0.1),
    ("cosine", dict(base_lr=0.3, final_lr=0.01, max_update=20),
     lambda: CosineScheduler(20, base_lr=0.3, final_lr=0.01), 0.3),
    ("cosine", dict(base_lr=0.3, final_lr=0.01, max_update=20, warmup_steps=5),
     lambda: CosineScheduler(20, warmup_steps=5, base_lr=0.3, final_lr=0.01), 0.3),
])
def test_lag_one_is_the_chapter_loop_as_printed(name, params, oracle, initial_lr):
    f = schedules.build(name, lag=1, **params)
    want = chapter_loop_rates(initial_lr, oracle(), 30)
    assert_close_lists([f(t) for t in range(30)], want)
    if params.get("warmup_steps"):
        assert f(1) == 0.0  # the printed warmup run trains its second epoch at rate 0


def test_lag_delays_and_holds_base_lr():
    f = schedules.build("poly", base_lr=0.4, max_update=10, exponent=1.0, lag=3)
    g = schedules.build("poly", base_lr=0.4, max_update=10, exponent=1.0)
    assert [f(t) for t in range(3)] == [0.4] * 3
    assert [f(t) for t in range(3, 15)] == [g(t) for t in range(12)]
    assert f.as_dict()["lag"] == 3 and schedules.build(**f.as_dict()) == f


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, names_it", [
    ({"name": "cosinus", "base_lr": 0.1, "max_update": 10}, "cosinus"),
    ({"name": "cosine", "base_lr": 0.1, "max_update": 10, "T_max": 10}, "T_max"),
    ({"name": "sqrt", "base_lr": 0.1, "exponent": 0.5}, "exponent"),
    ({"name": "cosine", "base_lr": 0.1}, "max_update"),
    ({"name": "factor", "base_lr": 0.1}, "factor"),
    ({"name": "multistep", "base_lr": 0.1}, "milestones"),
    ({"name": "constant", "base_lr": 0.0}, "base_lr"),
    ({"name": "constant", "base_lr": -0.1}, "base_lr"),
    ({"name": "constant", "base_lr": float("nan")}, "base_lr"),
    ({"name": "constant", "base_lr": float("inf")}, "base_lr"),
    ({"name": "cosine", "base_lr": 0.1, "max_update": 10, "warmup_steps": -1}, "warmup_steps"),
    ({"name": "constant", "base_lr": 0.1, "warmup_steps": -3}, "warmup_steps"),
    ({"name": "constant", "base_lr": 0.1, "lag": -1}, "lag"),
    ({"name": "constant", "base_lr": 0.1, "lag": 0.5}, "lag"),
    ({"name": "cosine", "base_lr": 0.1, "max_update": 5, "warmup_steps": 5}, "max_update"),
    ({"name": "poly", "base_lr": 0.1, "max_update": 5, "warmup_steps": 8}, "max_update"),
    ({"name": "multistep", "base_lr": 0.1, "milestones": 5}, "milestones"),
    ({"name": "multistep", "base_lr": 0.1, "milestones": "15,30"}, "milestones"),
    ({"name": "multistep", "base_lr": 0.1, "milestones": {15: 1}}, "milestones"),
    ({"name": "constant", "base_lr": 10**400}, "base_lr"),  # no float holds it
    ({"name": "constant", "base_lr": np.bool_(True)}, "base_lr"),
])
def test_build_rejects_bad_input_naming_it(kwargs, names_it):
    with pytest.raises(ValueError, match=names_it):
        schedules.build(**kwargs)


def test_the_lookups_refuse_an_unknown_name_with_a_value_error():
    with pytest.raises(ValueError, match="unknown schedule 'nope'; choose one of constant"):
        schedules.parameters("nope")
    with pytest.raises(ValueError, match="no schedule takes a parameter 'T_max'"):
        schedules.check_parameter("T_max", 3)


def test_numpy_scalars_are_taken_and_kept_as_pythons_numbers():
    # A grid from np.linspace or np.arange gives numpy scalars.
    made = schedules.build("cosine", base_lr=np.float64(0.3), max_update=np.int64(20),
                           warmup_steps=np.int64(2), final_lr=np.float32(0.0))
    plain = schedules.build("cosine", base_lr=0.3, max_update=20, warmup_steps=2)
    assert made == plain and [made(t) for t in range(25)] == [plain(t) for t in range(25)]
    assert json.loads(json.dumps(made.as_dict())) == plain.as_dict()
    steps = schedules.build("multistep", base_lr=0.1, milestones=list(np.arange(5, 15, 5)))
    assert steps.as_dict()["milestones"] == [5, 10]


@pytest.mark.parametrize("name, params", [("factor", {"factor": 1.5}),
                                          ("multistep", {"milestones": list(range(1, 400)),
                                                         "gamma": 10.0})])
def test_a_rate_grown_past_the_largest_float_is_infinite_not_an_error(name, params):
    # factor and gamma above 1 are taken (a growing rate); past 1.8e308 the rate is
    # infinite, as the training it drives will be, where Python's power raised OverflowError.
    grown = schedules.build(name, base_lr=0.1, **params)
    assert grown(2000) == math.inf and grown(0) < 1


# --- the module doctest --------------------------------------------------------------------

def test_module_doctests_pass():
    result = doctest.testmod(schedules)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("epochs", [1, 3])
def test_the_schedules_figure_ticks_whole_epochs(tmp_path, monkeypatch, epochs):
    # One epoch is one point: matplotlib's own ticks would be -0.045 … 0.045.
    import matplotlib.pyplot as plt
    from lrsweep.report import figures
    drawn = []
    monkeypatch.setattr(plt, "close", drawn.append)
    figures.plot_schedules(tmp_path / "shapes.png", epochs=epochs)
    (fig,) = drawn
    fig.canvas.draw()
    shown = [ax for ax in fig.axes if ax.get_visible()]
    for ax in shown:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks)
    assert shown


def test_the_schedules_figure_draws_nothing_postscript_cannot(tmp_path, caplog):
    # No partly transparent artist: PostScript would log that it drew them opaque.
    from lrsweep.report import figures
    figures.plot_schedules(tmp_path / "shapes.eps", epochs=3)
    assert (tmp_path / "shapes.eps").stat().st_size > 0
    assert "does not support transparency" not in caplog.text
