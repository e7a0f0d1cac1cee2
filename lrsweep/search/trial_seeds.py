"""A sampler whose random draws for a trial are seeded by the study's seed and that trial's
number, so workers that share a study draw different configurations.

An Optuna sampler seeded once draws the same sequence in every process. Workers started
together on one study (the README's recipe) each see no stored trial, so a sampler seeded by
`sampler_seed` (plus the trials stored) gave every worker the same draws: two workers trained
every configuration twice, seed included. Trial numbers are handed out by the store, one per
trial across all workers, so a seed mixed from (sampler_seed, number) differs between workers'
trials, stays the same for one worker run again (the same study file draws the same trials),
and moves on when a study is resumed (its numbers continue).

Each trial gets a sampler of its own, made by the factory with that seed (Optuna's samplers
keep their history in the store, not in the instance: TPE and GP read it back at every
suggestion, CMA-ES from the trials' system attributes).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from lrsweep.store import optuna_private


def trial_seed(sampler_seed: int, number: int) -> int:
    """The seed of trial `number`'s draws: numpy's SeedSequence of the pair, which spreads
    neighbouring pairs ((0, 1) and (1, 0) too) over 32 bits."""
    return int(np.random.SeedSequence([sampler_seed, number]).generate_state(1)[0])


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """`make(seed)` (an Optuna sampler) for each trial, seeded by `trial_seed`."""

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler],
                 sampler_seed: int) -> None:
        self._make = make
        self._seed = sampler_seed
        # By trial id: a trial's calls (before_trial, the suggestions, after_trial) go to one
        # sampler; a trial another worker began (a takeover) gets its sampler on first use.
        self._samplers: dict[int, optuna.samplers.BaseSampler] = {}

    def _of(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        key = optuna_private.trial_id(trial)
        if key not in self._samplers:
            self._samplers[key] = self._make(trial_seed(self._seed, trial.number))
        return self._samplers[key]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._of(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._of(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._of(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._of(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: list[float] | None) -> None:
        sampler = self._of(trial)
        self._samplers.pop(optuna_private.trial_id(trial), None)
        sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to reseed: each trial's draws are seeded by its number (Optuna calls this
        for threads sharing one sampler, whose trials' numbers differ already)."""
