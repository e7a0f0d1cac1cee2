"""The study loop: create or continue a study until `trials` trials have finished, a pack of
slots at a time (`pack_run`): each slot takes a trial asked the moment it frees up, trains it
in lockstep with the others, and tells it when it is done:

    ask a trial into a free slot → train an epoch → tell the trials that are done → again

Before asking, the trials of dead workers (or of our own Ctrl-C) are taken over from their
checkpoints (`takeover`). Ctrl-C or SIGTERM stops at the next safe point with every trial
resumable (`interrupt`); a worker that was silent past the grace period drops its trials and
goes on; one whose study file another run replaced (`--allow-changed`) by one that trains
otherwise asks no more trials, and stops once those it holds are told. `trials` in a study
file is the total: running the same file again continues to it, and `resume` continues from
the study file stored in the study itself.

    >>> from lrsweep.search import loop, spec
    >>> s = spec.load("studies/quickstart.toml")                         # doctest: +SKIP
    >>> summary = loop.run(s, storage="sqlite:///results/lrsweep.db")    # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from lrsweep.search.heartbeats import Leases
from lrsweep.search.interrupt import LeaseLapsed, StopAfterEpoch
from lrsweep.search.pack_run import PackRun
from lrsweep.search.provenance import create_or_load, stored_file_changed
from lrsweep.search.sampling import make_sampler
from lrsweep.search.spec import SpecError, StudySpec
from lrsweep.search.takeover import (PACK_ATTR, checkpoints_for, fail_begun_otherwise,
                                     resume_groups)
from lrsweep.search.work import Progress, Work
from lrsweep.store import journal, optuna_private
from lrsweep.store.artifacts import artifact_store
from lrsweep.store.leases import HEARTBEAT_SECONDS, check_lease_settings, claim_stale_trials
from lrsweep.store.places import check_folders
from lrsweep.store.records import FINISHED
from lrsweep.store.storage import default_storage, open_storage
from lrsweep.train import data
from lrsweep.train import device as devices



@dataclass(frozen=True)
class RunSummary:
    name: str
    storage: str
    total: int              # trials the study file asks for
    finished: int           # COMPLETE + PRUNED now in the store
    new: int                # of which this run finished (new and continued trials)
    seconds: float


def run(spec: StudySpec, *, storage: str | None = None, device: str = "auto",
        data_dir: str | None = None, allow_changed: bool = False, pack: int | None = None,
        progress: Progress | None = None) -> RunSummary:
    """Create the study or continue it until `spec.study.trials` trials have finished,
    training `pack` trials at a time (None: the device's default, `default_pack_size`); with
    other workers on the study, return only once none of their trials is running. Raises
    SpecError, once the trials it holds are told, when another run has replaced the stored
    study file (`--allow-changed`) with one that trains otherwise."""
    storage = storage or default_storage()
    started = time.perf_counter()
    if not optuna_private.AVAILABLE:  # leases and claims work on Optuna's tables: say so now
        raise optuna_private.unsupported("running a study")
    where = devices.resolve_device(device)
    devices.check_environment()  # a bad LRSWEEP_* setting fails here, before anything is written
    check_lease_settings()
    check_folders(storage, spec.study.name)
    if pack is not None and pack < 1:
        raise SpecError(f"--pack {pack}: a pack holds at least one trial")
    progress = progress or Progress()
    with StopAfterEpoch(progress) as stop:
        new, study = _run(spec, storage, where, data_dir, allow_changed, pack, progress, stop)
    journal.fold(storage)  # the finished store in one file
    return RunSummary(spec.study.name, storage, spec.study.trials, count(study, FINISHED), new,
                      time.perf_counter() - started)


def _run(spec: StudySpec, storage: str, where: Any, data_dir: str | None, allow_changed: bool,
         pack: int | None, progress: Progress, stop: StopAfterEpoch
         ) -> tuple[int, optuna.Study]:
    """`run` under the signal handlers: (trials this run finished, the study)."""
    # Data first: a missing dataset must fail before anything is written to the store.
    splits = load_data(spec, where, data_dir)
    rdb = open_storage(storage)
    study = create_or_load(spec, rdb, storage, allow_changed)
    # A looped pack (ResNet-18) gains nothing from company and holds K graphs at once: one
    # trial at a time unless --pack says otherwise.
    looped = pack or 1
    size = pack or (devices.default_pack_size(where, spec.train.batch_size)
                    if "lenet" in spec.models else 1)
    work = Work(spec, study, splits, where, progress, checkpoints_for(storage),
                artifact_store(storage), size, looped, stop)
    try:
        progress.start(spec, count(study, FINISHED))
        while True:
            stop.check()  # a signal that came outside a pack: nothing of ours is in flight
            try:
                if not _turn(work):
                    break
            except LeaseLapsed as lapse:  # its trials: another worker's, or ours to take over
                progress.note(f"{lapse}; going on with the study")
    finally:
        progress.close()
    return len(work.finished), study


def _turn(work: Work) -> bool:
    """One turn of the loop: take over trials, or wait for other workers, or ask and train.
    Returns False once the study is done."""
    spec, study, progress = work.spec, work.study, work.progress
    # The study file's sampler before anything suggests: a claimed trial killed before its
    # first suggestion gets its parameters (its grid point) from it too.
    study.sampler = make_sampler(spec)
    changed = stored_file_changed(study, spec)  # by another run, since this one began
    if changed is not None:
        raise changed
    # First the trials of dead processes (or of our own Ctrl-C), from their checkpoints.
    claimed = fail_begun_otherwise(work, claim_stale_trials(study, PACK_ATTR, one_pack=True))
    if claimed:
        with Leases(study, claimed) as leases:
            for pack, trials, resumes in resume_groups(work, claimed, work.size, work.looped):
                # Asking as the pack did, its freed slots take new trials when they would have:
                # the pack goes on as an uninterrupted run's would.
                _train_packs(work, leases, PackRun(
                    work, leases, pack_id=pack, waiting=list(zip(trials, resumes)), asking=True))
        return True
    done, running = count(study, FINISHED), count(study, (TrialState.RUNNING,))
    progress.study_done(done)
    if done + running >= spec.study.trials:
        if not running:
            return False
        # The rest run in other workers. Stay until they end: should a worker die, its lease
        # expires and its trials are taken over here, never left RUNNING.
        progress.waiting(running)
        time.sleep(min(HEARTBEAT_SECONDS, 2.0))
        return True
    _ask_and_train(work)
    return True


def _ask_and_train(work: Work) -> None:
    """Packs that ask their trials as their slots free up, until the total is reached."""
    with Leases(work.study, []) as leases:
        _train_packs(work, leases, PackRun(work, leases, asking=True))


def _train_packs(work: Work, leases: Leases, pack: PackRun) -> None:
    """`pack`, then packs of the trials it asked of another kind than its own."""
    while True:
        deferred = pack.run()
        if not deferred:
            return
        pack = PackRun(work, leases, waiting=[(t, None) for t in deferred], asking=True)


def load_data(spec: StudySpec, device: Any, data_dir: str | None) -> data.Splits:
    train = spec.train
    if train.folder:
        from lrsweep.train.folders import load_imagefolder
        where = _blame(spec, "dataset")
        try:
            splits = load_imagefolder(train.folder, device, image_size=train.image_size,
                                      validation=train.validation, subset=train.subset,
                                      test_subset=train.test_subset)
        except data.DataError as error:
            # A size the folder cannot give is the size's setting, not the folder's.
            named = next((k for k in ("test_subset", "subset", "validation", "image_size")
                          if f": {k} = " in f": {error}"), None)
            raise data.DataError(f"{_blame(spec, named) if named else where}: {error}") from None
        shape = tuple(splits.train_x.shape[1:])
        if "lenet" in spec.models and (shape != (1, 28, 28) or splits.classes != 10):
            raise data.DataError(f"{where}: {splits.classes} classes of "
                                 f"{'×'.join(map(str, shape))} images; LeNet takes 10 classes "
                                 "of 1×28×28: use model = \"resnet18\" ([train] or [space])")
        return splits
    return data.load(device, data_dir=data_dir, validation=train.validation,
                     subset=train.subset, test_subset=train.test_subset)


def _blame(spec: StudySpec, key: str) -> str:
    """Where to fix [train] `key`: the --set that gave it (the last one wins), or the file."""
    given = [o for o in spec.overrides if o.partition("=")[0].strip() == f"train.{key}"]
    if given:
        return f"{spec.source}: --set {given[-1]}"
    value = f" = {getattr(spec.train, key)!r}" if key == "dataset" else ""
    return f"{spec.source}: [train] {key}{value}"


def count(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
    return len(study.get_trials(deepcopy=False, states=states))
