"""Stopping and losing at the edges (issue 19): SIGTERM is Ctrl-C, a signal at any point of the
loop (asking included) hands the trials back, a worker paused past its grace period drops what
it held and goes on, a full disk keeps the trials resumable, the progress count is the
study's, and told trials stop heartbeating."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from conftest import REPO, study_toml
from lrsweep.search import heartbeats, interrupt, loop, spec, work
from lrsweep.store import leases, optuna_private
from lrsweep.store.records import trial_curves
from lrsweep.train import checkpoint

GRACE = 2  # seconds of silence before a trial is taken over (SQLite's clock ticks in seconds)
TEXT = study_toml("edge", scheduler='["constant", "sqrt"]', epochs=4)  # one pack of 2


class Recorder(work.Progress):
    """What the loop tells its display, with the count a display shows ("[k/N done]")."""

    def __init__(self):
        self.notes, self.shown, self.resumes, self.done = [], [], [], 0

    def start(self, spec_, done):
        self.done = done

    def note(self, line):
        self.notes.append(line)

    def study_done(self, done):
        self.done = max(self.done, done)  # every worker's trials, as read

    def resumed(self, number, epochs_done):
        self.resumes.append((number, epochs_done))

    def trial_finished(self, number, state, value, best, done):
        self.done = max(self.done, done)
        self.shown.append(self.done)


def run(tmp_path, fashion_dir, text, **kwargs):
    tmp_path.mkdir(exist_ok=True)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    loop.run(spec.parse(text, source="test.toml"), storage=url, device="cpu",
             data_dir=str(fashion_dir), **kwargs)
    return optuna.load_study(study_name=spec.parse(text, source="t").study.name, storage=url)


def stored(tmp_path, name="edge"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'store.db'}")


def outcomes(study):
    return {t.number: (t.state, t.value, trial_curves(t).get("val_acc")) for t in study.trials}


# --- SIGTERM, and a signal while asking --------------------------------------------------------

def cli(tmp_path, fashion_dir, grace):
    env = {**os.environ, "LRSWEEP_DATA": str(fashion_dir), "PYTHONPATH": str(REPO),
           "LRSWEEP_GRACE_SECONDS": str(grace), "LRSWEEP_HEARTBEAT_SECONDS": "0.5"}
    args = [sys.executable, "-m", "lrsweep", "run", str(tmp_path / "s.toml"),
            "--storage", f"sqlite:///{tmp_path / 'store.db'}", "--pack", "2"]
    return env, args


def until(proc, trigger):
    """Read the process's stderr until `trigger` is printed; returns the lines read."""
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if trigger in line:
            return lines
    raise AssertionError("".join(lines))


def test_signals_while_it_exits_change_nothing(tmp_path, fashion_dir):
    # The run has stopped and says so; what is left is closing the store and exiting. Another
    # Ctrl-C or SIGTERM then must not end it otherwise (a traceback from Python's clean-up, or
    # killed outright by the default SIGTERM).
    (tmp_path / "s.toml").write_text(TEXT)
    env, args = cli(tmp_path, fashion_dir, grace=600)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    printed = until(proc, "trials 0–1 epoch 2/4")
    proc.send_signal(signal.SIGINT)
    printed += until(proc, "lrsweep: interrupted")
    for sig in (signal.SIGINT, signal.SIGTERM) * 20:
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        time.sleep(0.005)
    printed += proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, printed
    assert "Traceback" not in printed and "Exception ignored" not in printed, printed
    assert [t.state for t in stored(tmp_path).trials] == [TrialState.RUNNING] * 2


def test_sigterm_stops_as_ctrl_c_does_and_hands_the_trials_back(tmp_path, fashion_dir):
    (tmp_path / "s.toml").write_text(TEXT)
    env, args = cli(tmp_path, fashion_dir, grace=600)  # a lease kept would block for minutes
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    until(proc, "trials 0–1 epoch 2/4")
    proc.send_signal(signal.SIGTERM)
    printed = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, printed  # 128 + 15, after stopping as for Ctrl-C (it
    # used to be killed outright: -15)
    assert "interrupted" in printed and "again to continue" in printed
    study = stored(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.RUNNING] * 2
    assert len(leases.claim_stale_trials(study)) == 2  # handed back: claimable at once
    leases.release_trials(study, [t._trial_id for t in study.trials])
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "continuing from its checkpoint after epoch" in again.stderr
    assert [t.state for t in stored(tmp_path).trials] == [TrialState.COMPLETE] * 2
    # The continued trials are this run's work: its summary counts them (it said 0).
    assert "2/2 trials finished (2 in this run" in again.stdout


def test_ctrl_c_while_a_trial_is_asked_hands_it_back(tmp_path, fashion_dir, monkeypatch):
    new_trial = optuna_private.new_trial

    def interrupted_ask(study):
        trial = new_trial(study)
        os.kill(os.getpid(), signal.SIGINT)  # before the trial is leased
        return trial

    monkeypatch.setattr(optuna_private, "new_trial", interrupted_ask)
    text = study_toml("edge", sampler="random", trials=2, scheduler='"constant"')
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, fashion_dir, text, pack=1)
    study = stored(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.RUNNING]
    # Leased and handed back: the next run takes it at once, not a grace period later.
    assert leases.claim_stale_trials(study) == [study.trials[0]._trial_id]


# --- a worker paused past its grace period ----------------------------------------------------

def test_a_worker_woken_after_its_trials_were_taken_over_goes_on(tmp_path, fashion_dir):
    (tmp_path / "s.toml").write_text(TEXT)
    env, args = cli(tmp_path, fashion_dir, grace=GRACE)
    paused = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    until(paused, "trials 0–1 epoch 1/4")
    paused.send_signal(signal.SIGSTOP)  # a laptop lid, a job suspended
    time.sleep(GRACE + 1.5)  # its leases lapse
    other = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    paused.send_signal(signal.SIGCONT)
    try:
        printed = paused.communicate(timeout=120)[1]
    finally:
        paused.kill()
    assert other.returncode == 0, other.stderr
    assert "trial 0 was interrupted" in other.stderr  # it took the pack over
    # It used to exit 1 with UpdateFinishedTrialError, failing trials another worker finished.
    assert paused.returncode == 0, printed
    assert [t.state for t in stored(tmp_path).trials] == [TrialState.COMPLETE] * 2


def test_a_lapse_drops_the_pack_untold_and_the_worker_takes_it_back(tmp_path, fashion_dir,
                                                                    monkeypatch):
    monkeypatch.setattr(leases, "GRACE_SECONDS", GRACE)
    monkeypatch.setattr(heartbeats, "HEARTBEAT_SECONDS", 0.2)
    held = []
    enter = heartbeats.Leases.__enter__

    def kept(self):
        held.append(self)
        return enter(self)

    class Sleeper(Recorder):
        def pack_epoch(self, metrics, epochs):
            if not self.notes and max(m.epoch for m in metrics.values()) == 1:
                # Epoch 2 done, and the machine slept 100 s since the last beat.
                then = held[-1]._renewed
                held[-1]._renewed = (then[0] - 100, then[1] - 100)

    monkeypatch.setattr(heartbeats.Leases, "__enter__", kept)
    text = study_toml("edge", scheduler='["constant", "sqrt"]', epochs=3)
    reference = outcomes(run(tmp_path / "ref", fashion_dir, text, pack=2))
    shown = Sleeper()
    study = run(tmp_path, fashion_dir, text, pack=2, progress=shown)
    assert len(shown.notes) == 1 and "silent for 100 s" in shown.notes[0]
    assert "(0, 1) are left to any worker that took them over" in shown.notes[0]
    assert shown.resumes == [(0, 1), (1, 1)]  # no one did: it continues from epoch 1's file
    assert outcomes(study) == reference


def test_a_trial_finished_by_another_worker_leaves_its_slot_untold(tmp_path, fashion_dir):
    class Rival(Recorder):
        def pack_epoch(self, metrics, epochs):
            if max(m.epoch for m in metrics.values()) == 0:  # another worker finishes trial 0
                other = stored(tmp_path)
                other.tell(other.trials[0].number, 0.5)

    text = study_toml("edge", scheduler='["constant", "sqrt"]', pruner="median", epochs=2)
    shown = Rival()
    study = run(tmp_path, fashion_dir, text, pack=2, progress=shown)
    assert shown.notes == ["trial 0 was taken over and finished by another worker: dropped "
                           "here"]
    assert [(t.state, t.value) for t in study.trials][0] == (TrialState.COMPLETE, 0.5)
    assert study.trials[1].state == TrialState.COMPLETE and "val_acc" in study.trials[1].user_attrs


# --- a full disk --------------------------------------------------------------------------------

def test_a_checkpoint_that_cannot_be_written_keeps_the_trials_resumable(tmp_path, fashion_dir,
                                                                       monkeypatch):
    text = study_toml("edge", scheduler='["constant", "sqrt"]', epochs=4)
    reference = outcomes(run(tmp_path / "ref", fashion_dir, text, pack=2))
    save, calls = checkpoint.Checkpoints.save, []

    def full_after_the_first(self, study, pack, state):
        calls.append(pack)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path(study, pack)))
        save(self, study, pack, state)

    monkeypatch.setattr(checkpoint.Checkpoints, "save", full_after_the_first)
    with pytest.raises(interrupt.NotWritten, match="No space left on device.*free space"):
        run(tmp_path, fashion_dir, text, pack=2)
    study = stored(tmp_path)  # not failed, their epochs not thrown away
    assert [t.state for t in study.trials] == [TrialState.RUNNING] * 2
    assert len(leases.claim_stale_trials(study)) == 2  # handed back
    leases.release_trials(study, [t._trial_id for t in study.trials])
    monkeypatch.setattr(checkpoint.Checkpoints, "save", save)  # space freed
    shown = Recorder()
    assert outcomes(run(tmp_path, fashion_dir, text, pack=2, progress=shown)) == reference
    assert shown.resumes == [(0, 1), (1, 1)]


# --- the count of finished trials, and heartbeats ----------------------------------------------

def test_the_progress_count_includes_other_workers_trials(tmp_path, fashion_dir):
    class Shared(Recorder):
        def trial_finished(self, number, state, value, best, done):
            super().trial_finished(number, state, value, best, done)
            if number == 0:  # meanwhile another worker finishes a trial of the study
                stored(tmp_path).add_trial(optuna.trial.create_trial(value=0.5))

    text = study_toml("edge", sampler="random", trials=3, scheduler='"constant"', epochs=1)
    shown = Shared()
    run(tmp_path, fashion_dir, text, pack=1, progress=shown)
    assert shown.shown == [1, 3]  # "[3/3 done]" at its second trial, not "[2/3 done]"


def test_a_trial_another_worker_tells_while_ours_is_told_is_counted(tmp_path, fashion_dir,
                                                                    monkeypatch):
    # Two workers telling at the same moment: each count is read after its own tell, so
    # neither shows "[1/3 done]" when two are done.
    from lrsweep.search.tell import Teller
    tell = Teller.tell

    def racing(self, trial, result):
        if trial.number == 0:  # another worker's trial is told just before ours
            stored(tmp_path).add_trial(optuna.trial.create_trial(value=0.5))
        return tell(self, trial, result)

    monkeypatch.setattr(Teller, "tell", racing)
    text = study_toml("edge", sampler="random", trials=3, scheduler='"constant"', epochs=1)
    shown = Recorder()
    run(tmp_path, fashion_dir, text, pack=1, progress=shown)
    assert shown.shown == [2, 3]


def test_told_trials_are_no_longer_heartbeaten(tmp_path, fashion_dir, monkeypatch):
    monkeypatch.setattr(heartbeats, "HEARTBEAT_SECONDS", 0.1)
    record, beaten_finished = heartbeats.record_heartbeats, []

    def checking(study, ids):
        finished = {t._trial_id for t in study.get_trials(deepcopy=False)
                    if t.state.is_finished()}
        beaten_finished.extend(finished & set(ids))
        record(study, ids)

    monkeypatch.setattr(heartbeats, "record_heartbeats", checking)
    text = study_toml("edge", sampler="random", trials=2, scheduler='"constant"', epochs=2)
    study = run(tmp_path, fashion_dir, text, pack=1)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert beaten_finished == []


def test_a_full_store_while_a_pack_trains_stops_it_resumable_not_failed():
    # What ends a pack decides its trials' fate: a signal, a file not written and a full
    # store leave them resumable (interrupt.resumable); anything else is a crash (FAIL).
    import sqlite3
    from lrsweep.search.interrupt import NotWritten, StoreFull, resumable
    stop = KeyboardInterrupt()
    assert resumable(stop) is stop
    unwritten = NotWritten("the checkpoint", OSError(28, "No space left on device"))
    assert resumable(unwritten) is unwritten
    try:  # as Optuna raises it: SQLite's error as the cause of its own
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as cause:
            raise RuntimeError("invalid data ... exceeding max length") from cause
    except RuntimeError as full:
        assert isinstance(resumable(full), StoreFull)
        assert "the disk is full" in str(resumable(full))
    assert resumable(RuntimeError("a bug")) is None
