"""The total is exact: of trials asked by workers that counted at the same moment, those beyond
the study's total are failed at once, marked as surplus, and never trained."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from lrsweep.search.sampling import ConditionalGridSampler
from lrsweep.store import optuna_private
from lrsweep.store.grid_claims import GRID_POINT_ATTR

SURPLUS_ATTR = "lrsweep_surplus"  # asked beyond the total by a racing worker; never trained
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def within_total(study: optuna.Study, trials: list[optuna.Trial],
                  total: int) -> list[optuna.Trial]:
    """Workers that counted at the same moment may ask one trial too many between them; the
    store numbers trials in order, so a trial with `total` live trials before it is surplus:
    it is failed at once (marked as such) and never trained. In a grid study only trials that
    claimed a point count, and one that claimed none is surplus: otherwise a trial holding the
    last free point could be failed for a lower-numbered one that found every point taken,
    and that point would never run."""
    grid = study.sampler if isinstance(study.sampler, ConditionalGridSampler) else None
    stored = study.get_trials(deepcopy=False, states=LIVE)
    live = {t.number for t in stored
            if grid is None or GRID_POINT_ATTR in t.system_attrs or grid.holds_a_point(t)}
    kept = []
    for trial in trials:
        if (grid is not None and not grid.holds_a_point(trial)) or \
                sum(n < trial.number for n in live) >= total:
            optuna_private.set_trial_system_attr(study, optuna_private.trial_id(trial),
                                                 SURPLUS_ATTR, True)
            study.tell(trial, state=TrialState.FAIL)
        else:
            kept.append(trial)
    return kept
