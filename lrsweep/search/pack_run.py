"""One pack of slots, from its first trial to its last: trials admitted into free slots
(continued ones first, then new ones asked the moment a slot frees up, so the sampler sees
every trial told so far), their epochs reported to the pruner in lockstep, each trial stored
and told as it leaves its slot, and the slot table checkpointed after every epoch.

A pack stops with its trials resumable (leases handed back, checkpoint kept) on a signal, a
file it cannot write or a full store (`interrupt.resumable`); it drops its trials, untold,
when its leases lapsed (`interrupt.LeaseLapsed`) or another worker finished one of them.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from lrsweep.search.ask import ask_pack
from lrsweep.search.heartbeats import Leases
from lrsweep.search.interrupt import LeaseLapsed, NotWritten, resumable
from lrsweep.search.provenance import stored_file_changed
from lrsweep.search.pruning import judge, judged_from
from lrsweep.search.sampling import in_flight
from lrsweep.search.space import suggest, trial_config
from lrsweep.search.spec import STUDY_FILE_ATTR
from lrsweep.search.surplus import within_total
from lrsweep.search.takeover import PACK_ATTR, pack_name
from lrsweep.search.tell import Teller
from lrsweep.search.work import Work
from lrsweep.store import optuna_private
from lrsweep.store.records import FINISHED, finished_and_best, set_system_attrs
from lrsweep.train import engine
from lrsweep.train.checkpoint import BackgroundWriter
from lrsweep.train.trials import (Admission, EpochMetrics, PackState, Resume, TrialConfig,
                                  TrialResult)

STARTED = (*FINISHED, TrialState.RUNNING)
OWNER_ATTR = "lrsweep_owner"      # host:pid of the process that holds its lease
_OWNER = f"{platform.node()}:{os.getpid()}"


@dataclass
class _Trial:
    trial: optuna.Trial
    config: TrialConfig
    resume: Resume | None


class PackRun:
    """A pack's life. `waiting` trials (taken over, or of another kind than their pack) go
    first; with `asking`, new ones are asked as slots free up, within the study's total and
    the sampler's `in_flight`. `pack_id`: a taken-over pack's (the id of its first trial,
    which names its checkpoint); None: a new pack."""

    def __init__(self, work: Work, leases: Leases, *, pack_id: int | None = None,
                 waiting: list[tuple[optuna.Trial, Resume | None]] = (),
                 asking: bool = False) -> None:
        self.work, self.leases, self.pack_id, self.asking = work, leases, pack_id, asking
        self.name = ""                            # its checkpoint's, once its first trial is in
        self.waiting = [_Trial(t, trial_config(work.spec, suggest(work.spec, t)), r)
                        for t, r in waiting]
        self.deferred: list[optuna.Trial] = []   # asked, but of another kind: the next pack's
        self.slots: dict[int, _Trial] = {}       # trial id → the trial, while in a slot
        self.gone: set[int] = set()               # trial ids another worker finished
        self.pack_key: tuple | None = None
        self.lapsed: float | None = None          # seconds silent, once the leases lapsed
        self.dropped: list[int] = []              # trial numbers left untold on a lapse

    def run(self) -> list[optuna.Trial]:
        """Train until no slot is busy; returns trials asked of another kind: the next pack's."""
        self.work.stop.check()
        if self._lapse():
            raise self._lapsed_error()
        taken = self._take(1)
        if not taken:
            return self.deferred
        first = taken[0]
        self.waiting.insert(0, first)
        work = self.work
        width = work.size if first.config.model == "lenet" else work.looped
        # No more slots than trials it may hold at once: an empty slot costs a full one's time;
        # a pack taken over as wide as it was (on a GPU a trial's rounding depends on it).
        self.cap = in_flight(work.spec, width) if self.asking else width
        resumed = [e.resume.width for e in self.waiting if e.resume is not None and e.resume.width]
        # Taken over: exactly its checkpoint's width, whatever this run's --pack (a pack of
        # 2 continued by a run of 4 stays 2, as the uninterrupted one was).
        width = max(resumed) if resumed else min(
            self.cap, len(self.waiting) + (self._room() if self.asking else 0))
        if self.pack_id is None:
            self.pack_id = optuna_private.trial_id(first.trial)
        self.name = pack_name(optuna_private.frozen_trial(work.study, self.pack_id))
        self.teller = Teller(work.spec, work.study, work.device, work.splits.classes,
                             work.artifacts)
        self.steps = engine.steps_per_epoch(len(work.splits.train_y), work.spec.train.batch_size)
        self.checkpoint = BackgroundWriter(work.checkpoints, work.study.study_name, self.name)
        self._train(width)
        self.checkpoint.remove()
        return self.deferred

    # --- what the engine calls -----------------------------------------------------------

    def admit(self, n: int) -> list[Admission]:
        if self.work.stop.requested or self._lapse():
            return []  # a stop was asked: trials not yet in a slot wait, leased, to resume
        n = max(0, min(n, self.cap - len(self.slots)))
        taken = self._take(n)
        ids = [optuna_private.trial_id(e.trial) for e in taken]
        # Its lease's holder; for a takeover, its pack (a taken-over pack's new trials too)
        # and the file it trains under (`takeover.fail_begun_otherwise`).
        attrs = {OWNER_ATTR: _OWNER, PACK_ATTR: [self.pack_id],
                 STUDY_FILE_ATTR: self.work.spec.identity}
        if ids:
            set_system_attrs(self.work.study, ids, attrs)
        for trial_id, entry in zip(ids, taken):
            self.slots[trial_id] = entry
            if entry.resume is None:
                self.work.progress.trial_started(entry.trial.number, entry.trial.params)
        return [Admission(i, e.config, e.resume) for i, e in zip(ids, taken)]

    def on_epoch(self, metrics: dict[int, EpochMetrics]) -> list[int]:
        spec = self.work.spec
        if self._lapse():  # silent past the grace period: every slot leaves, untold
            return list(metrics)
        self.work.progress.pack_epoch({self.slots[i].trial.number: m
                                       for i, m in metrics.items()}, spec.train.epochs)
        if spec.study.pruner == "none":  # nobody reads them now: stored once, at the end
            return []
        # Lockstep: every value of the epoch is in the store before anyone is judged, so
        # pack-mates are each other's peers; no one is judged inside its warmup, nor at its
        # last epoch: pruning there saves nothing and would store a trained trial as pruned.
        reported, gone = [], []
        for i, m in metrics.items():
            value = getattr(m, spec.study.metric)
            try:
                if math.isfinite(value):
                    self.slots[i].trial.report(value, m.epoch)
                    reported.append(i)
            except optuna.exceptions.UpdateFinishedTrialError:
                gone.append(i)  # finished by a worker that took it over: leaves untold
        last = spec.train.epochs - 1
        due = [i for i in reported
               if judged_from(self.slots[i].config, self.steps) <= metrics[i].epoch < last]
        verdicts = judge(self.work.study, [self.slots[i].trial for i in due])
        self.gone.update(gone)
        return gone + [i for i, prune in zip(due, verdicts) if prune]

    def on_finish(self, trial_id: int, result: TrialResult) -> None:
        entry = self.slots.pop(trial_id)
        number = entry.trial.number
        if self.lapsed is not None:
            self.dropped.append(number)  # `LeaseLapsed` names it
            return
        self.leases.drop([trial_id])  # before it is told: no beat for a finished trial
        try:
            if trial_id not in self.gone:
                state, value = self.teller.tell(entry.trial, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            self.gone.add(trial_id)
        if trial_id in self.gone:
            self.work.progress.note(f"trial {number} was taken over and finished by another "
                                    "worker: dropped here")
            return
        self.work.finished.append(number)  # told complete (or diverged) or pruned
        # What every worker has finished, this trial included, and the best of it, read after
        # the tell: read before, a trial another worker told meanwhile would be missed, and
        # two workers would each show the same "[5/6 done]".
        done, best = finished_and_best(self.work.study)
        self.teller.saw(best)
        self.work.progress.trial_finished(number, state, value, self.teller.best, done)

    # --- helpers ---------------------------------------------------------------------------

    def _take(self, n: int) -> list[_Trial]:
        """Up to n trials for this pack: waiting ones first, then new ones if asking allows
        (asked together: one look at the store for all). A trial of another kind than the
        pack's goes to `deferred`."""
        taken: list[_Trial] = []
        while len(taken) < n:
            if not self.waiting and not self._ask(n - len(taken)):
                break
            entry = self.waiting.pop(0)
            self.pack_key = self.pack_key or entry.config.pack_key
            if entry.config.pack_key == self.pack_key:
                taken.append(entry)
            else:
                self.deferred.append(entry.trial)
        return taken

    def _ask(self, n: int) -> bool:
        """Ask up to n new trials into `waiting`, within the study's total; whether any came."""
        spec, study = self.work.spec, self.work.study
        while self.asking and len(self.deferred) < self.work.size:
            room = min(n, self._room())
            if room <= 0:
                return False
            # Workers that counted at the same moment may ask too many: the surplus is failed
            # untrained (`within_total`), and the count is taken again.
            asked = ask_pack(study, room, self.leases)
            trials = within_total(study, asked, spec.study.trials)
            self.leases.drop([optuna_private.trial_id(t) for t in asked if t not in trials])
            if trials:
                self.waiting += [_Trial(t, trial_config(spec, suggest(spec, t)), None)
                                 for t in trials]
                return True
        return False

    def _room(self) -> int:
        """New trials the study's total leaves room for (those asked are running); none once
        another run changed the study file (`loop` then stops with that error)."""
        started = self.work.study.get_trials(deepcopy=False, states=STARTED)
        # The same look tells the progress display what every worker has finished.
        self.work.progress.study_done(sum(t.state in FINISHED for t in started))
        if stored_file_changed(self.work.study, self.work.spec) is not None:
            return 0
        return self.work.spec.study.trials - len(started)

    def _lapse(self) -> bool:
        """Whether this worker's leases lapsed (noted once seen: they never come back)."""
        self.lapsed = self.lapsed or self.leases.lapsed()
        return self.lapsed is not None

    def _lapsed_error(self) -> LeaseLapsed:
        left = [*self.dropped, *(e.trial.number for e in self.waiting),
                *(t.number for t in self.deferred)]
        return LeaseLapsed(self.lapsed or 0.0, left)

    def _save(self, state: PackState | None) -> None:
        """A checkpoint to write (None: wait for the one in flight); an OSError (a full
        disk) stops the run, the trials resumable from the last checkpoint written."""
        try:
            self.checkpoint.save(state) if state is not None else self.checkpoint.wait()
        except OSError as error:
            raise NotWritten(f"the checkpoint of {self.name}", error) from error

    def _train(self, width: int) -> None:
        """The engine's run of the pack; a stop asked by a signal waits for that epoch to be
        on disk. The caller holds the leases (`Leases`), and hands them back if it stops."""
        def on_states(state: PackState) -> None:
            if self._lapse():
                return  # the checkpoint may be another worker's now
            # Trials still waiting for a slot keep their place in the checkpoint (a pack
            # taken over may have more trials than slots).
            waiting = {optuna_private.trial_id(e.trial): e.resume
                       for e in self.waiting if e.resume is not None}
            self._save(PackState(state.layout, state.weights, state.slots,
                                 {**waiting, **state.members}, state.width))
            if self.work.stop.requested and (state.members or self.waiting):
                self._save(None)  # the epoch is safe on disk: now stop
                self.work.stop.check()

        try:
            engine.train_slots(width, self.work.splits, self.admit, on_finish=self.on_finish,
                               on_epoch=self.on_epoch, on_states=on_states)
        except BaseException as error:
            stop = resumable(error)
            if stop is None:  # a crash: the pack's trials fail, and a re-run trains them anew
                for trial in [*(e.trial for e in [*self.slots.values(), *self.waiting]),
                              *self.deferred]:
                    self.work.study.tell(trial, state=TrialState.FAIL)
                self.checkpoint.remove()
                raise
            # A second signal mid-epoch, a write failed, the store's disk is full: the last
            # epoch's write still lands (should it fail, the epoch before it is on disk).
            with contextlib.suppress(Exception):
                self.checkpoint.wait()
            if stop is error:
                raise
            raise stop from error
        with contextlib.suppress(Exception):
            self.checkpoint.wait()  # every trial has left: a failed last write is moot
        if self.lapsed is not None:
            raise self._lapsed_error()
        if self.waiting:
            self.work.stop.check()  # stopped before they had a slot: they wait, leased, to resume
