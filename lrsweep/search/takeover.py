"""Taking over the trials of a dead worker: claimed trials regrouped into the packs they were
training in, each with its last checkpoint, so they continue exactly where they stopped; those
begun under a study file that trains otherwise are failed instead, and asked anew."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from lrsweep.search.space import pack_groups
from lrsweep.search.spec import STUDY_FILE_ATTR, stored_files, stored_trains_like
from lrsweep.search.work import Work
from lrsweep.store import optuna_private
from lrsweep.store.places import folder_beside
from lrsweep.train.checkpoint import Checkpoints
from lrsweep.train.trials import Resume

# [the id of the first trial of the pack a trial trains in]: the pack's name. (Stores written
# before slots list every member, the first one first.)
PACK_ATTR = "lrsweep_pack"
# Why a claimed trial was failed rather than continued (`fail_begun_otherwise`).
ABANDONED_ATTR = "lrsweep_abandoned"


def checkpoints_for(url: str) -> Checkpoints:
    """A store's checkpoint folder (`folder_beside`): `LRSWEEP_CHECKPOINTS`, else
    `<file>.checkpoints/` beside a SQLite file, else `results/checkpoints/`."""
    return Checkpoints(folder_beside(url, "checkpoints"))


def fail_begun_otherwise(work: Work, trial_ids: list[int]) -> list[int]:
    """Of claimed trials, those begun under a study file that trains otherwise than this
    run's are failed, not continued: continued here they would be stored as if trained under
    this file from their first epoch, their reported values the other file's. (The study was
    continued with --allow-changed in the instant their worker was between two packs, and that
    worker died.) Each is marked with the reason, its pack's checkpoint goes with it, and a
    new trial takes its place. Returns the others."""
    if not trial_ids:
        return trial_ids
    study, spec = work.study, work.spec
    frozen = {optuna_private.trial_id(t): t for t in study.get_trials(deepcopy=False)}
    files = stored_files(study.user_attrs)
    alike = {spec.identity: True}
    failed, finished = [], []
    for trial_id in trial_ids:
        began = frozen[trial_id].system_attrs.get(STUDY_FILE_ATTR)
        # Not yet in a slot, or begun under a file the store does not list (a study made
        # before files were listed): nothing says it trained otherwise.
        if began is None or began not in files:
            continue
        if began not in alike:
            alike[began] = stored_trains_like(files[began], spec)
        if alike[began]:
            continue
        try:
            optuna_private.set_trial_system_attr(
                study, trial_id, ABANDONED_ATTR,
                f"begun under study file {began}, taken over under {spec.identity}, which "
                "trains otherwise")
            study.tell(frozen[trial_id].number, state=TrialState.FAIL)
            failed.append(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            finished.append(trial_id)  # told meanwhile by its worker: slow, not dead
    kept = [i for i in trial_ids if i not in failed and i not in finished]
    if failed:
        packs_left = {_pack_of(frozen[i]) for i in kept}
        for gone in {_pack_of(frozen[i]) for i in failed} - packs_left - {None}:
            work.checkpoints.remove(study.study_name, pack_name(frozen[gone]))
        numbers = ", ".join(f"#{frozen[i].number}" for i in failed)
        work.progress.note(f"trial(s) {numbers} of another worker began under a study file "
                           "that trains otherwise than this one (the study was continued with "
                           "--allow-changed since): failed, and new trials take their place")
    return kept


def resume_groups(work: Work, trial_ids: list[int], size: int, looped: int
                   ) -> list[tuple[int | None, list[optuna.Trial], list[Resume | None]]]:
    """Claimed trials regrouped into the packs they were training in, with the pack's last
    checkpoint: (the pack's id, trials, their resume points). Trials whose worker
    died before it began training them (no pack recorded, so no checkpoint) are packed anew,
    `size` at a time, not trained one by one: a kill while a GPU-sized pack was being asked
    leaves up to a whole pack of them."""
    frozen = {optuna_private.trial_id(t): t for t in work.study.get_trials(deepcopy=False)}
    packs: dict[int, list[int]] = {}
    unstarted = []
    for trial_id in sorted(trial_ids):
        pack = _pack_of(frozen[trial_id])
        if pack is None:
            unstarted.append(trial_id)
        else:
            packs.setdefault(pack, []).append(trial_id)
    groups: list[tuple[int | None, list[optuna.Trial], list[Resume | None]]] = []
    for pack_id, ids in sorted(packs.items()):
        states = work.checkpoints.load(work.study.study_name, pack_name(frozen[pack_id]))
        resumes = [states.get(trial_id) for trial_id in ids]
        for trial_id, r in zip(ids, resumes):
            work.progress.resumed(frozen[trial_id].number, len(r.epochs) if r else 0)
        groups.append((pack_id, [optuna.trial.Trial(work.study, i) for i in ids], resumes))
    for trial_id in unstarted:
        work.progress.resumed(frozen[trial_id].number, 0)
    trials = [optuna.trial.Trial(work.study, i) for i in unstarted]
    for group in pack_groups(work.spec, trials, looped):
        for start in range(0, len(group), size):
            members = group[start:start + size]
            groups.append((None, members, [None] * len(members)))
    return groups


def _pack_of(trial: optuna.trial.FrozenTrial) -> int | None:
    """The id of the first trial of the pack `trial` trains in (None: not yet in one)."""
    members = trial.system_attrs.get(PACK_ATTR)
    return members[0] if members else None


def pack_name(first: optuna.trial.FrozenTrial) -> str:
    """A pack's checkpoint name, from its first trial: the trial's id and the instant the store
    created it. Trial ids alone repeat: in another database holding a study of the same name
    (two PostgreSQL stores share `results/checkpoints/`), or in a store made anew beside an old
    checkpoint folder; a continued trial must never start from another trial's weights."""
    created = first.datetime_start
    stamp = f"-{created:%Y%m%dT%H%M%S%f}" if created is not None else ""
    return f"pack-{optuna_private.trial_id(first)}{stamp}"
