"""The conditional search space: what a trial suggests (only the dimensions its scheduler
uses), and the full training configuration its parameters make."""

from __future__ import annotations

import json
from typing import Any

import optuna
from optuna.distributions import (BaseDistribution, CategoricalDistribution,
                                  FloatDistribution, IntDistribution)

from lrsweep import schedules
from lrsweep.search import spec as spec_mod
from lrsweep.search.spec import Choice, Fixed, Range, StudySpec
from lrsweep.train.trials import TrialConfig


def trial_config(spec: StudySpec, params: dict[str, Any]) -> TrialConfig:
    """A trial's full configuration: its suggested parameters over the file's fixed values."""
    values = {k: d.value for k, d in spec.space if isinstance(d, Fixed)}
    values.update(params)
    scheduler = values["scheduler"]
    kwargs = {k: values[k] for k in spec.keys_for(scheduler)
              if k not in spec_mod.NOT_SCHEDULE_KEYS}
    if "milestones" in kwargs:
        kwargs["milestones"] = json.loads(kwargs["milestones"])
    schedule = schedules.build(scheduler, **kwargs)
    train = spec.train
    return TrialConfig(schedule, seed=values["seed"], epochs=train.epochs,
                              batch_size=train.batch_size, unit=train.unit,
                              model=values.get("model", train.model),
                              optimizer=values.get("optimizer", "sgd"),
                              prior_precision=train.prior_precision, burn_in=train.burn_in,
                              thin=train.thin, precision=train.precision)


def suggest(spec: StudySpec, trial: optuna.Trial) -> dict[str, Any]:
    """Suggest the searched dimensions, only those the trial's scheduler uses."""
    sched = spec.dimension("scheduler")
    scheduler = (trial.suggest_categorical("scheduler", list(sched.values))
                 if isinstance(sched, Choice) else sched.value)
    for key in spec.keys_for(scheduler):
        dim = spec.dimension(key)
        if key == "scheduler" or isinstance(dim, Fixed):
            continue
        if isinstance(dim, Choice):
            trial.suggest_categorical(key, list(dim.values))
        elif isinstance(dim, Range) and dim.integer:
            trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
        else:
            trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    return {"scheduler": scheduler, **trial.params}


def distributions(spec: StudySpec) -> dict[str, BaseDistribution]:
    """The distribution `suggest` gives Optuna for each searched dimension (a listed or a
    ranged one): what a stored study's trials must agree with (Optuna holds a study to one
    kind, scale and list of choices per parameter name)."""
    found: dict[str, BaseDistribution] = {}
    for key, dim in spec.space:
        if isinstance(dim, Choice):
            found[key] = CategoricalDistribution(list(dim.values))
        elif isinstance(dim, Range) and dim.integer:
            found[key] = IntDistribution(int(dim.low), int(dim.high), log=dim.log)
        elif isinstance(dim, Range):
            found[key] = FloatDistribution(dim.low, dim.high, log=dim.log)
    return found


def pack_groups(spec: StudySpec, trials: list[optuna.Trial], looped: int
           ) -> list[list[optuna.Trial]]:
    """The asked trials split by what a pack must share (in a study, only the optimizer and
    the model can differ between trials), in order of asking; models other than LeNet in
    packs of at most `looped`."""
    groups: dict[tuple, list[list[optuna.Trial]]] = {}
    for trial in trials:
        config = trial_config(spec, suggest(spec, trial))
        packs = groups.setdefault(config.pack_key, [[]])
        if config.model != "lenet" and len(packs[-1]) >= looped:
            packs.append([])
        packs[-1].append(trial)
    return [pack for packs in groups.values() for pack in packs]
