"""Optuna studies of learning-rate schedules: create or load, ask, train, tell, resume.

`trials` in a study file is the total: running the same file again continues to it, and
`resume` continues from the study file stored in the study itself.

    >>> from lrsweep import spec, study
    >>> s = spec.load("studies/quickstart.toml")                         # doctest: +SKIP
    >>> summary = study.run(s, storage="sqlite:///results/lrsweep.db")   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import math
import os
import platform
import signal
import subprocess
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from . import __version__, data, engine, schedules, spec as spec_mod
from .sampling import make_pruner, make_sampler
from .spec import Choice, Fixed, Range, SpecError, StudySpec
from .checkpoint import BackgroundWriter, Checkpoints, pack_name
from .storage import (HEARTBEAT_SECONDS, WEIGHTS_MIMETYPE, StorageError, artifact_store,
                      claim_stale_trials, default_storage, load_study, open_storage,
                      record_heartbeats, record_trial, release_trials, set_system_attrs,
                      write_artifact)

# One trial's share of GPU memory at batch 256: its forward saves 12 MiB for backward
# (counted with saved-tensor hooks on the CPU); the margin is for backward's transients and
# evaluation, unmeasured on a GPU.
PACK_BYTES_PER_TRIAL = 80 * 2**20
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
LIVE = DONE + (TrialState.RUNNING, TrialState.WAITING)
# Trial system attributes of lrsweep's own.
PACK_ATTR = "lrsweep_pack"        # the trial ids of the pack it trains in
OWNER_ATTR = "lrsweep_owner"      # host:pid of the process that holds its lease
SURPLUS_ATTR = "lrsweep_surplus"  # asked beyond the total by a racing worker; never trained
_OWNER = f"{platform.node()}:{os.getpid()}"



class Progress:
    """What `run` tells about its work; this base shows nothing, the command line renders it."""

    def start(self, spec: StudySpec, done: int) -> None: ...
    def resumed(self, number: int, epochs_done: int) -> None: ...
    def stopping(self) -> None: ...
    def waiting(self, running: int) -> None: ...
    def pack_started(self, trials: list[tuple[int, dict[str, Any]]], epochs: int) -> None: ...
    def pack_epoch(self, metrics: dict[int, engine.EpochMetrics]) -> None: ...
    def trial_finished(self, number: int, state: str, value: float | None,
                       best: float | None) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class RunSummary:
    name: str
    storage: str
    total: int              # trials the study file asks for
    finished: int           # COMPLETE + PRUNED now in the store
    new: int                # of which this run finished
    seconds: float


def load_stored_spec(name: str, storage: str) -> StudySpec:
    """The study file a stored study was started from."""
    study = load_study(name, storage)
    stored = spec_mod.from_stored(study.user_attrs, source=f"{name} (stored in {storage})")
    if stored is None:
        raise StorageError(f"study {name!r} in {storage} was not made by lrsweep (no stored study file)")
    return stored


def run(spec: StudySpec, *, storage: str | None = None, device: str = "auto",
        data_dir: str | None = None, allow_changed: bool = False, pack: int | None = None,
        progress: Progress | None = None) -> RunSummary:
    """Create the study or continue it until `spec.study.trials` trials have finished,
    training `pack` trials at a time (None: the device's default, `default_pack_size`); with
    other workers on the study, return only once none of their trials is running."""
    storage = storage or default_storage()
    started = time.perf_counter()
    torch_device = engine.resolve_device(device)
    if pack is not None and pack < 1:
        raise SpecError(f"--pack {pack}: a pack holds at least one trial")
    # Data first: a missing dataset must fail before anything is written to the store.
    splits = _load_data(spec, torch_device, data_dir)
    rdb = open_storage(storage)
    study = _create_or_load(spec, rdb, storage, allow_changed)
    progress = progress or Progress()
    # A looped pack (ResNet-18) gains nothing from company and holds K graphs at once: one
    # trial at a time unless --pack says otherwise.
    looped = pack or 1
    pack = pack or (default_pack_size(torch_device, spec.train.batch_size)
                    if "lenet" in spec.models else 1)
    work = _Work(spec, study, splits, torch_device, progress, Checkpoints.for_storage(storage),
                 artifact_store(storage))
    new = 0
    try:
        progress.start(spec, _count(study, DONE))
        while True:
            # The study file's sampler before anything suggests: a claimed trial killed
            # before its first suggestion gets its parameters (its grid point) from it too.
            study.sampler = make_sampler(spec, len(study.get_trials(deepcopy=False)))
            # First the trials of dead processes (or of our own Ctrl-C), from their checkpoints.
            claimed = claim_stale_trials(study, PACK_ATTR)
            if claimed:
                with _Leases(study, claimed):
                    for name, trials, resumes in _resume_groups(work, claimed, pack, looped):
                        _run_pack(work, name, trials, resumes)
                continue
            done, running = _count(study, DONE), _count(study, (TrialState.RUNNING,))
            if done + running >= spec.study.trials:
                if not running:
                    break
                # The rest run in other workers. Stay until they end: should a worker die, its
                # lease expires and its trials are taken over here, never left RUNNING.
                progress.waiting(running)
                time.sleep(min(HEARTBEAT_SECONDS, 2.0))
                continue
            with _Leases(study, []) as leases:
                trials = _ask(study, min(pack, spec.study.trials - done - running), leases)
                trials = _within_total(study, trials, spec.study.trials)
                for group in _packs(spec, trials, looped):
                    _run_pack(work, None, group, [None] * len(group))
            new += len(trials)
    finally:
        progress.close()
    return RunSummary(spec.study.name, storage, spec.study.trials, _count(study, DONE), new,
                      time.perf_counter() - started)


def _load_data(spec: StudySpec, device: torch.device, data_dir: str | None) -> data.Splits:
    train = spec.train
    if train.folder:
        from .folders import load_imagefolder
        splits = load_imagefolder(train.folder, device, image_size=train.image_size,
                                  validation=train.validation, subset=train.subset,
                                  test_subset=train.test_subset)
        shape = tuple(splits.train_x.shape[1:])
        if "lenet" in spec.models and (shape != (1, 28, 28) or splits.classes != 10):
            raise data.DataError(f"{train.folder}: {splits.classes} classes of "
                                 f"{'×'.join(map(str, shape))} images; LeNet takes 10 classes "
                                 "of 1×28×28: use model = \"resnet18\" ([train] or [space])")
        return splits
    return data.load(device, data_dir=data_dir, validation=train.validation,
                     subset=train.subset, test_subset=train.test_subset)


def _ask(study: optuna.Study, n: int, leases: "_Leases") -> list[optuna.Trial]:
    """`n` trials made as `Study.ask` makes them (enqueued trials first), then leased together
    (one transaction, not one a trial). `Study.ask` reads every unfinished trial of the study to find enqueued
    ones, so asking a pack of 100 re-read its growing set of running trials 100 times (a
    third of a GPU study's bookkeeping, results/benchmarks/store-cost.py); here the queue is
    looked at once per pack (a trial enqueued meanwhile goes to the next pack)."""
    waiting = _count(study, (TrialState.WAITING,))
    trials = []
    for _ in range(n):
        if waiting:  # Optuna's own ask takes one from the queue, safe against other workers
            waiting -= 1
            trials.append(study.ask())
        else:
            # The rest of Study.ask: samplers that cache the study's trials for one trial
            # (TPE's constant liar) must see the pack's earlier trials as running.
            study._thread_local.cached_all_trials = None
            trials.append(optuna.Trial(study, study._storage.create_new_trial(study._study_id)))
    # Leased together: a trial whose process dies before its first heartbeat gets one from
    # the next worker that looks (`claim_stale_trials`), and is taken over a grace period on.
    leases.add([t._trial_id for t in trials])
    return trials


def _within_total(study: optuna.Study, trials: list[optuna.Trial],
                  total: int) -> list[optuna.Trial]:
    """Workers that counted at the same moment may ask one trial too many between them; the
    store numbers trials in order, so a trial with `total` live trials before it is surplus:
    it is failed at once (marked as such) and never trained."""
    live = {t.number for t in study.get_trials(deepcopy=False, states=LIVE)}
    kept = []
    for trial in trials:
        if sum(n < trial.number for n in live) >= total:
            study._storage.set_trial_system_attr(trial._trial_id, SURPLUS_ATTR, True)
            study.tell(trial, state=TrialState.FAIL)
        else:
            kept.append(trial)
    return kept


def default_pack_size(device: torch.device, batch_size: int = 256) -> int:
    """Trials trained together. CPU: 4, the fastest per trial-epoch measured on 2 cores
    (`lrsweep bench`); CUDA: as many as keep the GPU's memory under a quarter full, with the
    activations growing with batches above 256 (below, the estimate stays: evaluation's share
    does not shrink)."""
    if device.type != "cuda":
        return 4
    free, _ = torch.cuda.mem_get_info(device)
    per_trial = PACK_BYTES_PER_TRIAL * max(batch_size, 256) / 256
    return max(1, min(256, int(free * 0.25 // per_trial)))


def trial_config(spec: StudySpec, params: dict[str, Any]) -> engine.TrialConfig:
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
    return engine.TrialConfig(schedule, seed=values["seed"], epochs=train.epochs,
                              batch_size=train.batch_size, unit=train.unit,
                              model=values.get("model", train.model),
                              optimizer=values.get("optimizer", "sgd"),
                              prior_precision=train.prior_precision, burn_in=train.burn_in,
                              thin=train.thin)


# --- one pack of trials ---------------------------------------------------------------------

@dataclass(frozen=True)
class _Work:
    """What every pack of one run shares."""

    spec: StudySpec
    study: optuna.Study
    splits: data.Splits
    device: torch.device
    progress: Progress
    checkpoints: Checkpoints
    artifacts: optuna.artifacts.FileSystemArtifactStore


def _resume_groups(work: _Work, trial_ids: list[int], pack: int, looped: int
                   ) -> list[tuple[str | None, list[optuna.Trial], list[engine.Resume | None]]]:
    """Claimed trials regrouped into the packs they were training in, with the pack's last
    checkpoint: (the pack's checkpoint name, trials, their resume points). Trials whose worker
    died before it began training them (no pack recorded, so no checkpoint) are packed anew,
    `pack` at a time, not trained one by one: a kill while a GPU-sized pack was being asked
    leaves up to a whole pack of them."""
    frozen = {t._trial_id: t for t in work.study.get_trials(deepcopy=False)}
    packs: dict[int, list[int]] = {}
    unstarted = []
    for trial_id in sorted(trial_ids):
        members = frozen[trial_id].system_attrs.get(PACK_ATTR)
        if members is None:
            unstarted.append(trial_id)
        else:
            packs.setdefault(members[0], []).append(trial_id)
    groups: list[tuple[str | None, list[optuna.Trial], list[engine.Resume | None]]] = []
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
    for group in _packs(work.spec, trials, looped):
        for start in range(0, len(group), pack):
            members = group[start:start + pack]
            groups.append((None, members, [None] * len(members)))
    return groups


def _packs(spec: StudySpec, trials: list[optuna.Trial], looped: int
           ) -> list[list[optuna.Trial]]:
    """The asked trials split by what a pack must share (in a study, only the optimizer and
    the model can differ between trials), in order of asking; models other than LeNet in
    packs of at most `looped`."""
    groups: dict[tuple, list[list[optuna.Trial]]] = {}
    for trial in trials:
        config = trial_config(spec, _suggest(spec, trial))
        packs = groups.setdefault(config.pack_key, [[]])
        if config.model != "lenet" and len(packs[-1]) >= looped:
            packs.append([])
        packs[-1].append(trial)
    return [pack for packs in groups.values() for pack in packs]


def _run_pack(work: _Work, pack: str | None, trials: list[optuna.Trial],
              resumes: list[engine.Resume | None]) -> None:
    spec, study, progress = work.spec, work.study, work.progress
    ids = [t._trial_id for t in trials]
    attrs: dict[str, Any] = {OWNER_ATTR: _OWNER}  # the lease's holder, beside its heartbeat
    if pack is None:  # a new pack: remember who trains together, for a takeover
        pack = pack_name(study._storage.get_trial(ids[0]))
        attrs[PACK_ATTR] = ids
    set_system_attrs(study, ids, attrs)
    params = [_suggest(spec, t) for t in trials]
    configs = [trial_config(spec, p) for p in params]
    metric = spec.study.metric
    prunes = spec.study.pruner != "none"
    progress.pack_started([(t.number, p) for t, p in zip(trials, params)], spec.train.epochs)
    checkpoint = BackgroundWriter(work.checkpoints, study.study_name, pack, ids)

    def on_epoch(metrics: dict[int, engine.EpochMetrics]) -> list[int]:
        progress.pack_epoch({trials[i].number: m for i, m in metrics.items()})
        if not prunes:  # without a pruner nobody reads them now: stored once, at the end
            return []
        stop = []
        for i, m in metrics.items():
            value = getattr(m, metric)
            if math.isfinite(value):
                trials[i].report(value, m.epoch)
                if trials[i].should_prune():
                    stop.append(i)
        return stop

    def on_states(state: engine.PackState) -> None:
        checkpoint.save(state)
        if ctrl_c.requested:
            checkpoint.wait()  # the epoch is safe on disk: now stop
            raise KeyboardInterrupt

    try:  # the caller holds the leases (`_Leases`), and hands them back on a Ctrl-C
        with _StopAfterEpoch(progress) as ctrl_c:
            results = engine.train_pack(configs, work.splits, on_epoch=on_epoch,
                                        on_states=on_states, resume=resumes)
        checkpoint.wait()  # a failed write of the last epoch fails the pack, as any crash
    except KeyboardInterrupt:
        # A second Ctrl-C came mid-epoch: the last finished epoch's write still lands (should
        # it fail, the epoch before it is on disk).
        with contextlib.suppress(Exception):
            checkpoint.wait()
        raise  # the last epochs are checkpointed: the next run continues from them
    except BaseException:
        # A crash is no interruption: the trials fail, and a re-run trains them anew.
        for trial in trials:
            study.tell(trial, state=TrialState.FAIL)
        checkpoint.remove()
        raise
    # The best value so far, read once a pack (not once a trial: a store read each) and
    # brought up to date with the pack's own results as Optuna's best_value would be.
    best = _best(study)
    better = min if spec.direction == "minimize" else max
    for trial, result in zip(trials, results):
        curve = [getattr(m, metric) for m in result.epochs]
        intermediate = {} if prunes else {e: v for e, v in enumerate(curve) if math.isfinite(v)}
        record_trial(study, trial, _user_attrs(result, work.device, work.splits.classes),
                     intermediate, _write_weights(work, trial, result))
        if result.status == "pruned":
            _tell(study, trial, state=TrialState.PRUNED)
            value, state = None, "pruned"
        else:
            value = curve[-1]
            if not math.isfinite(value):  # a diverged trial is a result: the worst one
                value = math.inf if spec.direction == "minimize" else -math.inf
            _tell(study, trial, value)
            state = "diverged" if result.status == "diverged" else "complete"
            best = value if best is None else better(best, value)
        progress.trial_finished(trial.number, state, value, best)
    checkpoint.remove()


def _tell(study: optuna.Study, trial: optuna.Trial, value: float | None = None,
          state: TrialState | None = None) -> None:
    """`Study.tell`, less its last step: reading the finished trial back for a deep copy
    nobody here uses (one full trial read each, ~10% of a GPU study's bookkeeping). Through
    `Study.tell` itself should Optuna's internals move."""
    try:
        from optuna.study._tell import _tell_with_warning
        known = {"study", "trial", "value_or_values", "state"} <= set(
            inspect.signature(_tell_with_warning).parameters)
    except ImportError:
        known = False
    if not known:
        study.tell(trial, value, state=state)
        return
    _tell_with_warning(study=study, trial=trial, value_or_values=value, state=state)


def _write_weights(work: _Work, trial: optuna.Trial, result: engine.TrialResult
                   ) -> dict[str, str]:
    """The trained weights as an Optuna artifact of the trial (`lrsweep export` reads it):
    the file is written here, the system attribute returned is recorded with the trial."""
    buffer = io.BytesIO()
    torch.save(result.state_dict, buffer)
    buffer.seek(0)
    name = f"{result.config.model}-{work.study.study_name}-trial-{trial.number}.pt"
    return write_artifact(work.artifacts, name, buffer, WEIGHTS_MIMETYPE)


def _suggest(spec: StudySpec, trial: optuna.Trial) -> dict[str, Any]:
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


def _user_attrs(result: engine.TrialResult, device: torch.device, classes: int
                ) -> dict[str, Any]:
    epochs = result.epochs
    attrs: dict[str, Any] = {
        "lr": [m.lr for m in epochs],
        "train_loss": [m.train_loss for m in epochs],
        "train_acc": [m.train_acc for m in epochs],
        "val_loss": [m.val_loss for m in epochs],
        "val_acc": [m.val_acc for m in epochs],
        "test_acc": [m.test_acc for m in epochs],
        "test_nll": [m.test_nll for m in epochs],
        "test_ece": [m.test_ece for m in epochs],
        "epoch_seconds": [m.seconds for m in epochs],
    }
    if result.config.optimizer in engine.AVERAGING:  # the posterior average's, each epoch
        for key in ("avg_test_acc", "avg_test_nll", "avg_test_ece", "samples"):
            attrs[key] = [float(getattr(m, key)) for m in epochs]
    # JSON has no NaN: a missing value (no validation set, a diverged loss) is stored as null.
    attrs = {k: [v if math.isfinite(v) else None for v in vs] for k, vs in attrs.items()}
    attrs.update(seed=result.config.seed, diverged=result.diverged, status=result.status,
                 schedule=result.config.schedule.as_dict(), device=engine.describe_device(device),
                 pack_size=result.pack_size, classes=classes)
    return attrs


# --- the study in the store ----------------------------------------------------------------

def _create_or_load(spec: StudySpec, rdb: optuna.storages.RDBStorage, url: str,
                    allow_changed: bool) -> optuna.Study:
    name = spec.study.name
    if name in optuna.study.get_all_study_names(rdb):
        study = optuna.load_study(study_name=name, storage=rdb, pruner=make_pruner(spec))
        _check_same_spec(study, spec, url, allow_changed)
        return study
    study = optuna.create_study(study_name=name, storage=rdb, direction=spec.direction,
                                pruner=make_pruner(spec), load_if_exists=True)
    _store_spec(study, spec)
    for key, value in _provenance().items():
        study.set_user_attr(key, value)
    return study


def _check_same_spec(study: optuna.Study, spec: StudySpec, url: str, allow_changed: bool) -> None:
    stored_text = study.user_attrs.get("study_file")
    if stored_text is None and not study.get_trials(deepcopy=False):
        # Another worker created it an instant ago and is storing its file: ours is the same
        # or will be checked against it by every later run.
        _store_spec(study, spec)
        return
    if stored_text is None:
        raise StorageError(f"study {spec.study.name!r} in {url} was not made by lrsweep; "
                           "choose another [study] name")
    stored_overrides = tuple(study.user_attrs.get("study_overrides", ()))
    if stored_text == spec.text and stored_overrides == spec.overrides:
        return
    stored = spec_mod.from_stored(study.user_attrs, source="stored")
    changes = _differences(stored, spec)
    if changes and not allow_changed:
        raise SpecError(f"{spec.source}: study {spec.study.name!r} in {url} was started from a "
                        f"different study file ({'; '.join(changes[:3])}); give the study a new "
                        "[study] name, or pass --allow-changed to continue it with this file")
    if changes:
        study.set_user_attr("study_file_previous", stored_text)
    _store_spec(study, spec)  # a new total or new comments are no change of study


def _store_spec(study: optuna.Study, spec: StudySpec) -> None:
    study.set_user_attr("study_file", spec.text)
    study.set_user_attr("study_file_sha256", spec.sha256)
    study.set_user_attr("study_file_source", spec.source)
    study.set_user_attr("study_overrides", list(spec.overrides))


def _differences(old: StudySpec, new: StudySpec) -> list[str]:
    if old.canonical(ignore_trials=True) == new.canonical(ignore_trials=True):
        return []
    changes = []
    for section in ("study", "train"):
        a, b = asdict(getattr(old, section)), asdict(getattr(new, section))
        changes += [f"[{section}] {k}: {a[k]!r} → {b[k]!r}" for k in a
                    if a[k] != b[k] and k != "trials"]
    a, b = dict(old.space), dict(new.space)
    changes += [f"[space] {k}: {_show(a.get(k))} → {_show(b.get(k))}"
                for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    old_runs = {r.label: r.values for r in old.runs}
    new_runs = {r.label: r.values for r in new.runs}
    changes += [f"[[run]] {label!r}: " + ("added" if label not in old_runs else "removed"
                                         if label not in new_runs else "changed")
                for label in sorted(set(old_runs) | set(new_runs))
                if old_runs.get(label) != new_runs.get(label)]
    return changes


def _show(dim: Any) -> str:
    if dim is None:
        return "absent"
    if isinstance(dim, Fixed):
        return repr(dim.value)
    if isinstance(dim, Choice):
        return repr(list(dim.values))
    return f"{{low = {dim.low}, high = {dim.high}, log = {str(dim.log).lower()}}}"


def _provenance() -> dict[str, Any]:
    return {"versions": {"lrsweep": __version__, "torch": torch.__version__,
                         "optuna": optuna.__version__, "python": platform.python_version()},
            "git_commit": _git_commit(), "host": platform.node()}


def _git_commit() -> str | None:
    """HEAD's commit, marked "-dirty" when the package's own files differ from it: the code
    that ran is then not the commit's."""
    package = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=package, timeout=5)
        commit = out.stdout.strip()
        if not commit:
            return None
        changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "."], cwd=package,
                                 capture_output=True, timeout=5).returncode == 1
        return commit + ("-dirty" if changed else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _count(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def _best(study: optuna.Study) -> float | None:
    try:
        return study.best_value
    except ValueError:  # no completed trial yet
        return None


class _StopAfterEpoch:
    """The first Ctrl-C lets the epoch in flight finish and be checkpointed, then stops;
    a second one stops at once (losing that epoch, never a finished one)."""

    def __init__(self, progress: Progress) -> None:
        self.requested = False
        self._progress = progress
        self._previous: Any = None

    def __enter__(self) -> "_StopAfterEpoch":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._progress.stopping()


class _Leases:
    """Holds trials' leases: records their heartbeats from a thread while the block runs
    (`add` takes on more), and hands them all back if a Ctrl-C ends it, so the next run
    continues those trials at once instead of waiting out the grace period."""

    def __init__(self, study: optuna.Study, trial_ids: list[int]) -> None:
        self._study, self._ids = study, list(trial_ids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._failing = False

    def add(self, trial_ids: list[int]) -> None:
        record_heartbeats(self._study, trial_ids)
        self._ids.extend(trial_ids)

    def __enter__(self) -> "_Leases":
        record_heartbeats(self._study, self._ids)
        self._thread.start()
        return self

    def __exit__(self, kind: type | None, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        if kind is KeyboardInterrupt:  # after the thread stopped: no beat comes after
            release_trials(self._study, self._ids)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                record_heartbeats(self._study, list(self._ids))
                self._failing = False
            except Exception as error:
                # A locked SQLite file, a PostgreSQL reconnect: the next beat tries again
                # (the lease lapses only if the store stays out of reach for the grace period).
                if not self._failing:
                    first_line = (str(error).splitlines() or [""])[0]
                    warnings.warn(f"heartbeat not recorded ({type(error).__name__}: "
                                  f"{first_line}); retrying", stacklevel=1)
                self._failing = True
