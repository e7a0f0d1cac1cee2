"""Taking over the trials of a dead worker: claimed trials regrouped into the packs they were
training in, each with its last checkpoint, so they continue exactly where they stopped."""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna

from lrsweep.search.space import pack_groups
from lrsweep.store import optuna_private
from lrsweep.store.places import folder_beside
from lrsweep.train.checkpoint import Checkpoints
from lrsweep.train.trials import Resume

if TYPE_CHECKING:
    from lrsweep.search.pack_run import Work

# [the id of the first trial of the pack a trial trains in]: the pack's name. (Stores written
# before slots list every member, the first one first.)
PACK_ATTR = "lrsweep_pack"


def checkpoints_for(url: str) -> Checkpoints:
    """A store's checkpoint folder (`folder_beside`): `LRSWEEP_CHECKPOINTS`, else
    `<file>.checkpoints/` beside a SQLite file, else `results/checkpoints/`."""
    return Checkpoints(folder_beside(url, "checkpoints"))


def resume_groups(work: "Work", trial_ids: list[int], size: int, looped: int
                   ) -> list[tuple[str | None, list[optuna.Trial], list[Resume | None]]]:
    """Claimed trials regrouped into the packs they were training in, with the pack's last
    checkpoint: (the pack's checkpoint name, trials, their resume points). Trials whose worker
    died before it began training them (no pack recorded, so no checkpoint) are packed anew,
    `size` at a time, not trained one by one: a kill while a GPU-sized pack was being asked
    leaves up to a whole pack of them."""
    frozen = {optuna_private.trial_id(t): t for t in work.study.get_trials(deepcopy=False)}
    packs: dict[int, list[int]] = {}
    unstarted = []
    for trial_id in sorted(trial_ids):
        members = frozen[trial_id].system_attrs.get(PACK_ATTR)
        if members is None:
            unstarted.append(trial_id)
        else:
            packs.setdefault(members[0], []).append(trial_id)
    groups: list[tuple[str | None, list[optuna.Trial], list[Resume | None]]] = []
    for pack_id, ids in sorted(packs.items()):
        name = pack_name(frozen[pack_id])
        states = work.checkpoints.load(work.study.study_name, name)
        resumes = [states.get(trial_id) for trial_id in ids]
        for trial_id, r in zip(ids, resumes):
            work.progress.resumed(frozen[trial_id].number, len(r.epochs) if r else 0)
        groups.append((name, [optuna.trial.Trial(work.study, i) for i in ids], resumes))
    for trial_id in unstarted:
        work.progress.resumed(frozen[trial_id].number, 0)
    trials = [optuna.trial.Trial(work.study, i) for i in unstarted]
    for group in pack_groups(work.spec, trials, looped):
        for start in range(0, len(group), size):
            members = group[start:start + size]
            groups.append((None, members, [None] * len(members)))
    return groups


def pack_name(first: optuna.trial.FrozenTrial) -> str:
    """A pack's checkpoint name, from its first trial: the trial's id and the instant the store
    created it. Trial ids alone repeat: in another database holding a study of the same name
    (two PostgreSQL stores share `results/checkpoints/`), or in a store made anew beside an old
    checkpoint folder; a continued trial must never start from another trial's weights."""
    created = first.datetime_start
    stamp = f"-{created:%Y%m%dT%H%M%S%f}" if created is not None else ""
    return f"pack-{optuna_private.trial_id(first)}{stamp}"
