"""Crash safety: kill -9 or Ctrl-C at several moments, then continue. Exactly the asked
trials finish, none twice, none left RUNNING, and every trial ends with the metrics of an
uninterrupted run — bit for bit, since a pack resumes together from its last checkpoint."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from conftest import REPO, study_toml
from lrsweep.store.records import trial_curves

GRACE = 2  # seconds of silence before a trial is taken over (SQLite's clock ticks in seconds)
TEXT = study_toml("crash", scheduler='["constant", "sqrt", "cosine", "poly"]', epochs=4)


def environment(fashion_dir):
    return {**os.environ, "LRSWEEP_DATA": str(fashion_dir), "PYTHONPATH": str(REPO),
            "LRSWEEP_GRACE_SECONDS": str(GRACE), "LRSWEEP_HEARTBEAT_SECONDS": "0.5"}


@pytest.fixture
def env(fashion_dir):
    return environment(fashion_dir)


def command(tmp_path, store):
    return [sys.executable, "-m", "lrsweep", "run", str(tmp_path / "s.toml"),
            "--storage", f"sqlite:///{tmp_path / store}", "--pack", "2"]


def outcome(tmp_path, store):
    study = optuna.load_study(study_name="crash", storage=f"sqlite:///{tmp_path / store}")
    return study, {t.params["scheduler"]: (t.number, t.value, trial_curves(t)["val_acc"],
                                           trial_curves(t)["train_loss"])
                   for t in study.trials if t.state == TrialState.COMPLETE}


def run_uninterrupted(folder, fashion_dir, text) -> subprocess.CompletedProcess:
    """The study `text` run once in `folder` (ref.db), start to end."""
    (folder / "s.toml").write_text(text)
    proc = subprocess.run(command(folder, "ref.db"), env=environment(fashion_dir),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, fashion_dir):
    """What the study ends with uninterrupted: run once for all the tests that compare."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    run_uninterrupted(folder, fashion_dir, TEXT)
    return outcome(folder, "ref.db")[1]


@pytest.fixture
def reference(tmp_path, uninterrupted):
    """The study file in tmp_path, and what it ends with uninterrupted."""
    (tmp_path / "s.toml").write_text(TEXT)
    return uninterrupted


def interrupt(tmp_path, env, trigger: str, sig: int, printed: list[str] | None = None) -> int:
    """Start the study, send `sig` as soon as `trigger` is printed; return the exit code (and
    append what it printed to stderr to `printed`)."""
    proc = subprocess.Popen(command(tmp_path, "s.db"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if trigger in line:
            proc.send_signal(sig)
            break
    lines += proc.communicate(timeout=120)[1].splitlines(keepends=True)
    if printed is not None:
        printed += lines
    return proc.returncode


# Mid-epoch (just after an epoch's line, while the next trains or its checkpoint is written),
# at the last epoch, while the finished pack is written to the store, and as a new pack starts.
TRIGGERS = ["trials 0–1 epoch 1/4", "trials 0–1 epoch 4/4", "trial 0 complete",
            "trial 2 started", "trials 2–3 epoch 2/4"]


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_kill_9_then_run_again_loses_nothing(tmp_path, env, reference, trigger):
    assert interrupt(tmp_path, env, trigger, signal.SIGKILL) == -signal.SIGKILL
    time.sleep(GRACE + 1.5)  # the dead process's leases expire
    again = subprocess.run(command(tmp_path, "s.db"), env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    study, results = outcome(tmp_path, "s.db")
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] * 4, states  # same four trials, none added
    assert results == reference
    assert not list((tmp_path / "s.db.checkpoints").rglob("*.pt"))


def test_ctrl_c_stops_cleanly_and_the_next_run_continues_at_once(tmp_path, env, reference):
    printed = []
    assert interrupt(tmp_path, env, "trials 0–1 epoch 2/4", signal.SIGINT, printed) == 130
    # The Ctrl-C lands after epoch 2's line: while its checkpoint is written, or as epoch 3
    # trains. Either way the run stops after the last epoch it printed, and no later.
    last = max(int(m.group(1)) for line in printed
               if (m := re.search(r"trials 0–1 epoch (\d)/4", line)))
    study, _ = outcome(tmp_path, "s.db")
    assert [t.state for t in study.trials] == [TrialState.RUNNING] * 2
    first_owner = study.trials[0].system_attrs["lrsweep_owner"]
    assert re.fullmatch(r".+:\d+", first_owner)  # host:pid
    again = subprocess.run(command(tmp_path, "s.db"), env=env, capture_output=True, text=True,
                           timeout=300)  # no waiting: Ctrl-C handed the leases back
    assert again.returncode == 0, again.stderr
    assert f"continuing from its checkpoint after epoch {last}" in again.stderr
    study, results = outcome(tmp_path, "s.db")
    assert results == reference
    assert study.trials[0].system_attrs["lrsweep_owner"] != first_owner  # taken over


def test_repeated_kills_still_finish_every_trial_once(tmp_path, env, reference):
    for trigger in ("epoch 2/4", "epoch 1/4", "epoch 3/4", "started"):
        code = interrupt(tmp_path, env, trigger, signal.SIGKILL)
        if code == 0:
            break
        time.sleep(GRACE + 1.5)
    final = subprocess.run(command(tmp_path, "s.db"), env=env, capture_output=True, text=True,
                           timeout=300)
    assert final.returncode == 0, final.stderr
    study, results = outcome(tmp_path, "s.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert results == reference


def test_two_processes_share_one_sqlite_file(tmp_path, env):
    text = study_toml("shared", sampler="random", trials=6, epochs=2, scheduler='"constant"',
                      base_lr="{ low = 0.01, high = 0.5, log = true }")
    (tmp_path / "s.toml").write_text(text)
    args = [sys.executable, "-m", "lrsweep", "run", str(tmp_path / "s.toml"),
            "--storage", f"sqlite:///{tmp_path / 's.db'}", "--pack", "1"]
    workers = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    for w, (_, stderr) in zip(workers, outputs):
        assert w.returncode == 0, stderr
        assert "database is locked" not in stderr
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{tmp_path / 's.db'}")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    # Both may count 5 at once and ask a seventh: it is failed as surplus, never trained.
    others = [t for t in study.trials if t.state != TrialState.COMPLETE]
    assert all(t.state == TrialState.FAIL and t.system_attrs.get("lrsweep_surplus")
               for t in others)
    assert sum(err.count(" complete val_acc") for _, err in outputs) == 6  # none twice


def test_a_checkpoint_left_by_a_deleted_store_never_resumes_a_new_trial(tmp_path, env):
    # The old store's pack 1 dies at epoch 2 and leaves its checkpoint; the store is deleted, a
    # changed study of the same name starts in a new one (same trial ids, same checkpoint
    # folder) and dies before its first epoch ends. Its trials must start over, not continue
    # from the old trials' weights and curves.
    (tmp_path / "s.toml").write_text(TEXT)
    assert interrupt(tmp_path, env, "trials 0–1 epoch 2/4", signal.SIGKILL) == -signal.SIGKILL
    assert list((tmp_path / "s.db.checkpoints").rglob("*.pt"))
    (tmp_path / "s.db").unlink()
    changed = study_toml("crash", scheduler='["constant", "sqrt"]', base_lr="0.3", epochs=4)
    (tmp_path / "s.toml").write_text(changed)
    fresh = subprocess.run(command(tmp_path, "ref.db"), env=env, capture_output=True, text=True,
                           timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    assert interrupt(tmp_path, env, "trial 0 started", signal.SIGKILL) == -signal.SIGKILL
    time.sleep(GRACE + 1.5)
    again = subprocess.run(command(tmp_path, "s.db"), env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert "continuing from its checkpoint" not in again.stderr
    assert outcome(tmp_path, "s.db")[1] == outcome(tmp_path, "ref.db")[1]


# A trial that blows up (a rate of 10⁴) leaves its slot after its first epoch and trial 2 takes
# it, beside trial 0 at its second epoch: kill -9 as the slot turns over and just after.
TURNOVER = study_toml("crash", scheduler='"constant"', base_lr="[0.1, 10000.0, 0.2, 0.3]",
                      epochs=4)


def by_rate(tmp_path, store):
    study = optuna.load_study(study_name="crash", storage=f"sqlite:///{tmp_path / store}")
    # pack_size: the width of the pack it trained in, which a takeover rebuilds as it was
    # (on a GPU a trial's rounding depends on it), asking into it as the pack would have.
    return study, {t.params["base_lr"]: (t.number, t.state, t.value, trial_curves(t)["val_acc"],
                                         trial_curves(t)["train_loss"], t.user_attrs["status"],
                                         t.user_attrs["pack_size"])
                   for t in study.trials}


@pytest.fixture(scope="module")
def turnover(tmp_path_factory, fashion_dir):
    """TURNOVER run uninterrupted: what it printed, and its trials (`by_rate`)."""
    folder = tmp_path_factory.mktemp("turnover")
    printed = run_uninterrupted(folder, fashion_dir, TURNOVER).stderr
    return printed, by_rate(folder, "ref.db")[1]


@pytest.mark.parametrize("trigger", ["trial 2 started", "trial 0 epoch 3/4, trial 2 epoch 2/4"])
def test_kill_9_while_a_slot_turns_over_resumes_exactly(tmp_path, env, turnover, trigger):
    (tmp_path / "s.toml").write_text(TURNOVER)
    printed, expected = turnover
    assert "trial 1 diverged" in printed and trigger in printed  # the turnover happened
    assert interrupt(tmp_path, env, trigger, signal.SIGKILL) == -signal.SIGKILL
    time.sleep(GRACE + 1.5)
    again = subprocess.run(command(tmp_path, "s.db"), env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    study, results = by_rate(tmp_path, "s.db")
    assert len(study.trials) == 4 and results == expected


def test_a_pack_resumed_by_a_run_with_a_wider_pack_is_as_wide_as_it_was(tmp_path, env,
                                                                       turnover):
    # Interrupted in packs of 2, continued by a run of --pack 4: the pack is rebuilt 2 wide,
    # as its checkpoint says, not widened to the new run's size (pack_size would say 4, and
    # on a GPU a trial's rounding depends on the width).
    (tmp_path / "s.toml").write_text(TURNOVER)
    assert interrupt(tmp_path, env, "trial 2 started", signal.SIGKILL) == -signal.SIGKILL
    time.sleep(GRACE + 1.5)
    wider = [*command(tmp_path, "s.db")[:-1], "4"]
    again = subprocess.run(wider, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert by_rate(tmp_path, "s.db")[1] == turnover[1]
