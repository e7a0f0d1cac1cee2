"""Closed-form learning-rate schedules lr(t) from D2L §12.11, one warmup wrapper, a registry.

Pure Python math, so a schedule can be plotted, tested and reasoned about without torch.
t counts epochs by default (as in the chapter); a study may make it count optimizer steps.

    >>> from lrsweep import schedules
    >>> f = schedules.build("cosine", base_lr=0.3, final_lr=0.01, max_update=20,
    ...                     warmup_steps=5, warmup_begin_lr=0.0)
    >>> [round(f(t), 4) for t in (0, 1, 5, 20, 29)]
    [0.0, 0.06, 0.3, 0.01, 0.01]
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Schedule:
    """A schedule with its parameters bound: call it with t = 0, 1, 2, … to get the rate."""

    name: str
    base_lr: float
    params: tuple[tuple[str, Any], ...] = ()
    warmup_steps: int = 0
    warmup_begin_lr: float = 0.0
    lag: int = 0  # applied this many units late, as in the chapter's printed runs

    def __call__(self, t: int) -> float:
        if t < self.lag:
            # The chapter sets the rate after each epoch with scheduler(epoch), so its first
            # epoch runs at the optimizer's initial rate, which its runs set to base_lr.
            return self.base_lr
        return self._on_time(t - self.lag)

    def _on_time(self, t: int) -> float:
        kind = REGISTRY[self.name]
        params = dict(self.params)
        w = self.warmup_steps
        if w and "max_update" in params:
            # After warmup the schedule runs on its own clock, so its horizon shrinks by W.
            params["max_update"] = params["max_update"] - w
        try:
            if t < w:
                peak = kind.formula(0, self.base_lr, **params)
                return self.warmup_begin_lr + (peak - self.warmup_begin_lr) * t / w
            return float(kind.formula(t - w, self.base_lr, **params))
        except OverflowError:  # factor or gamma > 1 grew the rate past the largest float
            return math.inf

    def as_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this schedule with `build(**d)`."""
        d: dict[str, Any] = {"name": self.name, "base_lr": self.base_lr}
        d.update({k: list(v) if isinstance(v, tuple) else v for k, v in self.params})
        d["warmup_steps"] = self.warmup_steps
        d["warmup_begin_lr"] = self.warmup_begin_lr
        d["lag"] = self.lag
        return d


@dataclass(frozen=True)
class ScheduleKind:
    """One entry of the registry: the formula and the parameters it takes beyond base_lr."""

    name: str
    formula: Callable[..., float]
    description: str
    required: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def parameters(self) -> tuple[str, ...]:
        return self.required + tuple(self.defaults)


def build(name: str, *, base_lr: float, warmup_steps: int = 0, warmup_begin_lr: float = 0.0,
          lag: int = 0, **params: Any) -> Schedule:
    """Bind a registered schedule's parameters; raise ValueError naming any bad one.
    `lag` delays the schedule: lr(t) = base_lr for t < lag, else the schedule's lr(t − lag).

    >>> build("factor", base_lr=2.0, factor=0.9, stop_factor_lr=0.01)(0)
    1.8
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(REGISTRY)}")
    kind = REGISTRY[name]
    unknown = sorted(set(params) - set(kind.parameters))
    if unknown:
        takes = ", ".join(("base_lr",) + kind.parameters)
        raise ValueError(f"schedule {name!r} takes no parameter {unknown[0]!r} (it takes {takes})")
    missing = [p for p in kind.required if p not in params]
    if missing:
        raise ValueError(f"schedule {name!r} needs parameter {missing[0]!r}")
    bound = {**kind.defaults, **params}
    _check_positive("base_lr", base_lr)
    if not _is_whole(warmup_steps) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a whole number ≥ 0, got {warmup_steps!r}")
    _check_non_negative("warmup_begin_lr", warmup_begin_lr)
    if not _is_whole(lag) or lag < 0:
        raise ValueError(f"lag must be a whole number ≥ 0, got {lag!r}")
    for key, value in bound.items():
        check_parameter(key, value)
    # numpy's scalars (a grid from np.linspace) are taken, and kept as Python's numbers.
    bound = {k: int(v) if _is_whole(v) else float(v) if is_number(v) else v
             for k, v in bound.items()}
    warmup_steps, lag = int(warmup_steps), int(lag)
    if "milestones" in bound:
        bound["milestones"] = tuple(sorted(int(m) for m in bound["milestones"]))
    if "max_update" in bound and bound["max_update"] <= warmup_steps:
        raise ValueError(f"max_update ({bound['max_update']}) must exceed warmup_steps ({warmup_steps})")
    return Schedule(name, float(base_lr), tuple(sorted(bound.items())), warmup_steps,
                    float(warmup_begin_lr), lag)


def check_parameter(key: str, value: Any, shown: Callable[[Any], str] = repr) -> None:
    """Raise ValueError unless `value` is valid for schedule parameter `key` (e.g. "gamma");
    `shown` writes the value in the message (a study file's reader writes it as TOML)."""
    if key not in _CHECKS:
        raise ValueError(f"no schedule takes a parameter {key!r} (they take "
                         f"{', '.join(_CHECKS)})")
    _CHECKS[key](key, value, shown)


def names() -> list[str]:
    return list(REGISTRY)


def parameters(name: str) -> tuple[str, ...]:
    """The parameters a schedule takes beyond base_lr and warmup (for conditional search spaces)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name].parameters


# --- the formulas: rate at t on the schedule's own clock (after any warmup) ---------------

def _constant(t: int, base_lr: float) -> float:
    return base_lr


def _sqrt(t: int, base_lr: float) -> float:
    return base_lr * (t + 1) ** -0.5


def _inverse_power(t: int, base_lr: float, exponent: float) -> float:
    return base_lr * (t + 1) ** -exponent


def _factor(t: int, base_lr: float, factor: float, stop_factor_lr: float) -> float:
    # The chapter's FactorScheduler multiplies before it returns, so call t+1 has factor^(t+1).
    return max(stop_factor_lr, base_lr * factor ** (t + 1))


def _multistep(t: int, base_lr: float, milestones: tuple[int, ...], gamma: float) -> float:
    return base_lr * gamma ** sum(1 for m in milestones if m <= t)


def _cosine(t: int, base_lr: float, final_lr: float, max_update: int) -> float:
    if t > max_update:
        return final_lr
    return final_lr + (base_lr - final_lr) * (1 + math.cos(math.pi * t / max_update)) / 2


def _poly(t: int, base_lr: float, final_lr: float, max_update: int, exponent: float) -> float:
    if t > max_update:
        return final_lr
    return final_lr + (base_lr - final_lr) * (1 - t / max_update) ** exponent


REGISTRY: dict[str, ScheduleKind] = {k.name: k for k in (
    ScheduleKind("constant", _constant, "base_lr"),
    ScheduleKind("sqrt", _sqrt, "base_lr · (t+1)^-1/2 (the chapter's SquareRootScheduler)"),
    ScheduleKind("inverse_power", _inverse_power, "base_lr · (t+1)^-exponent",
                 required=("exponent",)),
    ScheduleKind("factor", _factor, "max(stop_factor_lr, base_lr · factor^(t+1))",
                 required=("factor",), defaults={"stop_factor_lr": 1e-7}),
    ScheduleKind("multistep", _multistep, "base_lr · gamma^#{milestones ≤ t} (torch's MultiStepLR)",
                 required=("milestones",), defaults={"gamma": 0.1}),
    ScheduleKind("cosine", _cosine, "half cosine from base_lr to final_lr over max_update",
                 required=("max_update",), defaults={"final_lr": 0.0}),
    ScheduleKind("poly", _poly, "final_lr + (base_lr − final_lr)(1 − t/max_update)^exponent "
                 "(MXNet's PolyScheduler)", required=("max_update",),
                 defaults={"final_lr": 0.0, "exponent": 2.0}),
)}


# --- parameter checks ----------------------------------------------------------------------

def is_number(value: Any) -> bool:
    """A finite real number: Python's or numpy's, not a bool (nor an int past float's range)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # 10**400
        return False


def _is_whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_positive(key: str, value: Any, shown: Callable[[Any], str] = repr) -> None:
    if not is_number(value) or value <= 0:
        raise ValueError(f"{key} must be a number > 0, got {shown(value)}")


def _check_non_negative(key: str, value: Any, shown: Callable[[Any], str] = repr) -> None:
    if not is_number(value) or value < 0:
        raise ValueError(f"{key} must be a number ≥ 0, got {shown(value)}")


def _check_positive_int(key: str, value: Any, shown: Callable[[Any], str] = repr) -> None:
    if not _is_whole(value) or value <= 0:
        raise ValueError(f"{key} must be a whole number > 0, got {shown(value)}")


def _check_milestones(key: str, value: Any, shown: Callable[[Any], str] = repr) -> None:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{key} must be a non-empty list of whole numbers, got {shown(value)}")
    for m in value:
        if not _is_whole(m) or m < 0:
            raise ValueError(f"{key} must hold whole numbers ≥ 0, got {shown(m)}")


_CHECKS: dict[str, Callable[[str, Any, Callable[[Any], str]], None]] = {
    "exponent": _check_non_negative,
    "factor": _check_positive,
    "stop_factor_lr": _check_non_negative,
    "milestones": _check_milestones,
    "gamma": _check_positive,
    "final_lr": _check_non_negative,
    "max_update": _check_positive_int,
}
