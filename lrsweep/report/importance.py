"""Which searched dimension matters: Optuna's fANOVA importances, for studies that search."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from lrsweep.report.figures import plotting, save
from lrsweep.report.sections import Section
from lrsweep.search.spec import StudySpec


SEARCHING_SAMPLERS = ("tpe", "random", "gp", "cmaes")


MIN_TRIALS_FOR_IMPORTANCE = 8


# Dimensions that repeat a configuration rather than configure it: a grid sweeps seeds as an
# Optuna parameter, and fANOVA would rank the seed's noise as a hyperparameter's importance.
REPEATS = ("seed",)


def importance(study, spec: StudySpec, metric: str, folder: Path,
               set_aside: Sequence[int] = ()) -> Section | None:
    """Optuna's fANOVA importances of the searched dimensions, for studies that search, over
    the trials the report's statistics count (`set_aside`: the numbers of those they leave
    out, report.aside)."""
    import optuna

    if spec.study.sampler not in SEARCHING_SAMPLERS:
        return None
    if set_aside:
        study = _without(study, set(set_aside))
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return None
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    # The dimensions in every complete trial (what Optuna weighs by default), less repeats
    # and those the trials never varied (a list of one value: nothing to explain).
    weighed = [k for k in optuna.search_space.intersection_search_space(
        study.get_trials(deepcopy=False))
        if k not in REPEATS and len({t.params.get(k) for t in complete}) > 1]
    try:
        scores = optuna.importance.get_param_importances(study, evaluator=evaluator,
                                                         params=weighed)
    except (RuntimeError, ValueError):  # e.g. no dimension present in every trial
        return None
    if len(scores) < 2:
        return None
    shared = set(scores)
    searched = {k for k, d in spec.space if not hasattr(d, "value") and k not in REPEATS}
    conditional = sorted(searched - shared)
    table = pd.DataFrame({"dimension": list(scores), "importance": list(scores.values())})
    top = table.iloc[0]
    # Optuna's COMPLETE: every trial that was not pruned, failed outcomes included (the
    # report's own "complete" is an outcome, which would count fewer).
    text = (f"By Optuna's fANOVA over the final values of {len(complete)} trials (those not "
            f"pruned, failed ones included), **{top['dimension']}** "
            f"explains the largest share of the variance of the final {metric} "
            f"({top['importance']:.2f}), then " + ", ".join(
                f"{r['dimension']} ({r['importance']:.2f})" for _, r in table.iloc[1:].iterrows())
            + "." + " These shares are point estimates with no interval: one fANOVA forest fit "
            "to these trials, which a handful of other trials could reorder.")
    if conditional:
        text += (" Dimensions only some schedulers take (" + ", ".join(conditional) + ") are not "
                 "in every trial, so fANOVA cannot weigh them; the configuration table shows "
                 "them.")
    pruned = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)))
    if pruned:
        text += (f" {pruned} trial{' was' if pruned == 1 else 's were'} pruned by the "
                 "study's pruner.")
    if set_aside:
        text += (f" Left out: the {len(set_aside)} trial(s) the report's statistics leave "
                 "out (named under What was studied).")
    plt, _ = plotting()
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(table) + 1.5))
    ax.barh(table["dimension"][::-1], table["importance"][::-1], color="C0")
    ax.set(xlabel="fANOVA importance", title=f"what drives the final {metric}")
    figure = save(fig, folder / "importances.png", [ax])
    shown = table.assign(importance=table["importance"].map(lambda v: f"{v:.3f}"))
    return Section("Which dimension matters (parameter importances)", [text], shown, [figure])


def _without(study, numbers: set[int]):
    """An in-memory copy of `study` without the trials numbered `numbers` (Optuna's
    importances take a whole study)."""
    import optuna

    copy = optuna.create_study(directions=study.directions)
    copy.add_trials([t for t in study.get_trials(deepcopy=False) if t.number not in numbers])
    return copy
