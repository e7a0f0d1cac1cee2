"""Opening stores and writing trial records: the batched path, its fallback, and errors."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest
import sqlalchemy

from conftest import REPO
from lrsweep.store import artifacts, leases, optuna_private, records, storage

ATTRS = {"lr": [0.3, 0.2], "val_acc": [0.5, None], "seed": 3, "diverged": None}
STEPS = {0: 0.5, 1: 0.625}
SYSTEM = {"lrsweep_note": {"pack": [1, 2]}}


def check_record(trial: optuna.trial.FrozenTrial) -> None:
    assert trial.user_attrs == ATTRS
    assert trial.intermediate_values == STEPS
    assert trial.system_attrs == SYSTEM


def record_and_reload(tmp_path) -> optuna.trial.FrozenTrial:
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=storage.open_storage(url), study_name="s")
    trial = study.ask()
    records.record_trial(study, trial, ATTRS, STEPS, SYSTEM)
    study.tell(trial, 0.625)
    return optuna.load_study(study_name="s", storage=url).trials[0]


def test_record_trial_writes_in_one_batch_on_sqlite(tmp_path):
    check_record(record_and_reload(tmp_path))


def test_record_trial_falls_back_to_optunas_api(tmp_path, monkeypatch):
    def broken(*args):
        raise sqlalchemy.exc.OperationalError("insert", {}, Exception("schema changed"))

    monkeypatch.setattr(records, "_bulk_insert", broken)
    check_record(record_and_reload(tmp_path))


def test_record_trial_on_an_in_memory_study():
    study = optuna.create_study()
    trial = study.ask()
    records.record_trial(study, trial, ATTRS, STEPS, SYSTEM)
    study.tell(trial, 0.625)
    check_record(study.trials[0])


@pytest.mark.parametrize("optuna_internals", ["known", "unknown"])
@pytest.mark.parametrize("url", ["sqlite", None], ids=["sqlite", "in-memory"])
def test_an_artifact_written_then_recorded_is_optunas_artifact_of_the_trial(
        tmp_path, url, optuna_internals, monkeypatch):
    # With Optuna's artifact layout unknown (an untested version) it is uploaded publicly.
    monkeypatch.setattr(optuna_private, "AVAILABLE", optuna_internals == "known")
    rdb = storage.open_storage(f"sqlite:///{tmp_path / 's.db'}") if url else None
    study = optuna.create_study(storage=rdb, study_name="s")
    trial = study.ask()
    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path))
    payload = b"\x00weights\xff" * 100
    attrs = artifacts.write_artifact(study, trial, store, "lenet-s-trial-0.pt", payload,
                                     artifacts.WEIGHTS_MIMETYPE)
    assert bool(attrs) == (optuna_internals == "known")  # recorded with the trial, or already
    records.record_trial(study, trial, ATTRS, STEPS, attrs)
    study.tell(trial, 0.625)
    # Read back only through Optuna's public artifact API, as optuna-dashboard does.
    (meta,) = optuna.artifacts.get_all_artifact_meta(trial)
    assert (meta.filename, meta.mimetype) == ("lenet-s-trial-0.pt", artifacts.WEIGHTS_MIMETYPE)
    out = tmp_path / "out.pt"
    optuna.artifacts.download_artifact(artifact_store=store, file_path=str(out),
                                       artifact_id=meta.artifact_id)
    assert out.read_bytes() == payload


@pytest.mark.parametrize("url", ["sqlite", None], ids=["sqlite", "in-memory"])
def test_system_attrs_of_a_pack_are_set_and_replaced_at_once(tmp_path, url):
    rdb = storage.open_storage(f"sqlite:///{tmp_path / 's.db'}") if url else None
    study = optuna.create_study(storage=rdb, study_name="s")
    ids = [study.ask()._trial_id for _ in range(3)]
    records.set_system_attrs(study, ids[:2], {"lrsweep_pack": ids[:2], "lrsweep_owner": "a:1"})
    records.set_system_attrs(study, ids[1:], {"lrsweep_owner": "b:2"})  # a takeover
    attrs = [study._storage.get_trial(i).system_attrs for i in ids]
    assert attrs[0] == {"lrsweep_pack": ids[:2], "lrsweep_owner": "a:1"}
    assert attrs[1] == {"lrsweep_pack": ids[:2], "lrsweep_owner": "b:2"}
    assert attrs[2] == {"lrsweep_owner": "b:2"}


def test_a_schema_another_worker_is_creating_is_waited_for(tmp_path, monkeypatch):
    # PostgreSQL tells the workers that lose the race with a duplicate enum type, a
    # ProgrammingError (seen with three workers on an empty database); they look again.
    real, calls = optuna.storages.RDBStorage, []

    def racing(url, **kwargs):
        calls.append(url)
        if len(calls) == 1:
            raise sqlalchemy.exc.ProgrammingError(
                "CREATE TYPE", {}, Exception('type "studydirection" already exists'))
        return real(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(storage.time, "sleep", lambda seconds: None)
    assert storage.open_storage(f"sqlite:///{tmp_path / 's.db'}") is not None
    assert len(calls) == 2


def test_a_store_that_fails_otherwise_is_one_line_at_once(tmp_path, monkeypatch):
    calls = []

    def broken(url, **kwargs):
        calls.append(url)
        raise sqlalchemy.exc.ProgrammingError("SELECT", {}, Exception("permission denied\nfor"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", broken)
    with pytest.raises(storage.StorageError, match=r"cannot be opened \(.*permission denied\)$"):
        storage.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    assert len(calls) == 1  # not retried


# A worker process: it says it is ready (file argv[2].readyK), waits for the file argv[2] to
# name a moment, then opens the store argv[1] at that moment (spinning: a sleep's wake-up is
# too coarse to meet the others).
OPEN_AT_ONCE = """
import pathlib, sys, time
from lrsweep.store import storage
ready, go = pathlib.Path(sys.argv[2] + ".ready" + sys.argv[3]), pathlib.Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.01)
moment = float(go.read_text())
while time.time() < moment:
    pass
try:
    storage.open_storage(sys.argv[1])
except storage.StorageError as error:
    sys.exit(str(error))
"""


def test_workers_opening_a_new_sqlite_store_at_the_same_instant_all_open_it(tmp_path):
    # Processes, as workers are: each switches the new file to WAL, and two doing so at once
    # both hold a read lock and want the write lock; SQLite answers one "database is locked"
    # without waiting. Several rounds, since the collision is a matter of timing (before the
    # retry, each of 3 runs of this test lost a worker within its four rounds).
    workers, env = 5, {**os.environ, "PYTHONPATH": str(REPO)}
    for round_ in range(4):
        url, go = f"sqlite:///{tmp_path / f'{round_}.db'}", tmp_path / f"go{round_}"
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, url, str(go), str(k)],
                                  env=env, stderr=subprocess.PIPE, text=True)
                 for k in range(workers)]
        while len(list(tmp_path.glob(f"go{round_}.ready*"))) < workers:
            assert all(p.poll() is None for p in procs), [p.communicate()[1] for p in procs]
            time.sleep(0.01)
        (tmp_path / "moment").write_text(str(time.time() + 0.5))
        (tmp_path / "moment").rename(go)  # whole, never half written
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * workers, errors


def test_a_new_sqlite_store_uses_wal(tmp_path):
    path = tmp_path / "deep" / "s.db"
    storage.open_storage(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reading_leaves_an_existing_store_byte_for_byte(tmp_path):
    path = tmp_path / "s.db"
    optuna.create_study(storage=f"sqlite:///{path}", study_name="s")
    before = path.read_bytes()
    storage.load_study("s", f"sqlite:///{path}")
    assert path.read_bytes() == before


@pytest.mark.parametrize("url, words", [
    ("nosuchdb://x", "cannot be opened"),
    ("postgresql://nobody@127.0.0.1:1/none", "cannot be opened"),
])
def test_a_store_that_cannot_be_opened_is_one_line(url, words):
    with pytest.raises(storage.StorageError, match=words) as exc:
        storage.open_storage(url)
    assert "\n" not in str(exc.value)


def test_an_unwritable_folder_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(storage.StorageError, match="cannot open"):
        storage.open_storage(f"sqlite:///{blocker}/s.db")


def test_reading_a_missing_sqlite_file_does_not_create_it(tmp_path):
    with pytest.raises(storage.StorageError, match="no such database file"):
        storage.load_study("s", f"sqlite:///{tmp_path / 'none.db'}")
    assert not (tmp_path / "none.db").exists()


def test_a_reader_given_a_folder_or_a_relative_path_is_told_what_it_likely_meant(
        tmp_path, monkeypatch):
    with pytest.raises(storage.StorageError, match=f"^storage sqlite:///{tmp_path}: {tmp_path} "
                                                   "is a folder, not a database file$"):
        storage.open_storage(f"sqlite:///{tmp_path}", create=False)
    # sqlite:///tmp/x.db is tmp/x.db, relative: the file at /tmp/x.db takes four slashes.
    optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    monkeypatch.chdir(tmp_path)
    relative = str(tmp_path / "s.db").lstrip("/")
    with pytest.raises(storage.StorageError, match=(
            rf"no such database file \({relative}, relative to this folder\); for "
            rf"{tmp_path / 's.db'} give four slashes: sqlite:////{relative}$")):
        storage.load_study("s", f"sqlite:///{relative}")
    assert not (tmp_path / relative.split("/")[0]).exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_a_reader_given_an_in_memory_database_is_not_sent_to_run(url):
    # `lrsweep run` refuses it (it would keep nothing): the store's file is what is meant.
    with pytest.raises(storage.StorageError, match=r"an in-memory database is new and empty "
                                                   r"each time: give the store's file"):
        storage.open_storage(url, create=False)


def test_unknown_study_names_the_ones_there(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(storage=url, study_name="alpha")
    with pytest.raises(storage.StorageError, match="no study named 'beta'.*it has: alpha"):
        storage.load_study("beta", url)


def test_default_storage_follows_the_environment(monkeypatch):
    monkeypatch.delenv("LRSWEEP_STORAGE", raising=False)
    assert storage.default_storage() == "sqlite:///results/lrsweep.db"
    monkeypatch.setenv("LRSWEEP_STORAGE", "postgresql://localhost/test")
    assert storage.default_storage() == "postgresql://localhost/test"


# --- leases ----------------------------------------------------------------------------------

PACK = "lrsweep_pack"


def asked(tmp_path, n):
    url = f"sqlite:///{tmp_path / 'leases.db'}"
    study = optuna.create_study(storage=storage.open_storage(url), study_name="leases")
    return study, [study.ask()._trial_id for _ in range(n)]


def test_a_pack_is_claimed_whole_or_not_at_all(tmp_path):
    study, ids = asked(tmp_path, 4)
    for trial_id in ids[:3]:  # trials 0–2 train as one pack, trial 3 alone
        study._storage.set_trial_system_attr(trial_id, PACK, ids[:3])
    study._storage.set_trial_system_attr(ids[3], PACK, [ids[3]])
    leases.record_heartbeats(study, ids)
    leases.release_trials(study, ids)  # all four stale, as after a Ctrl-C
    # Another worker won the pack's first member an instant ago: the rest of it is its too.
    leases.record_heartbeats(study, ids[:1])
    assert leases.claim_stale_trials(study, PACK) == [ids[3]]
    leases.release_trials(study, ids[:3])
    assert sorted(leases.claim_stale_trials(study, PACK)) == ids[:3]
    assert leases.claim_stale_trials(study, PACK) == []  # every lease fresh now


def test_one_pack_a_claim_leaves_other_dead_workers_packs_to_other_workers(tmp_path):
    # Two workers died, a pack each, and one asked a trial it put in no pack yet. A worker
    # that claimed both packs trained one (asking new trials until the total) and then the
    # other, while a second live worker waited on the trials it held.
    study, ids = asked(tmp_path, 7)
    for pack in (ids[0:3], ids[3:6]):
        for trial_id in pack:
            study._storage.set_trial_system_attr(trial_id, PACK, pack)
    leases.record_heartbeats(study, ids)
    leases.release_trials(study, ids)  # all stale
    assert sorted(leases.claim_stale_trials(study, PACK, one_pack=True)) == ids[:3] + ids[6:]
    assert sorted(leases.claim_stale_trials(study, PACK, one_pack=True)) == ids[3:6]
    assert leases.claim_stale_trials(study, PACK, one_pack=True) == []
    leases.release_trials(study, ids)
    assert sorted(leases.claim_stale_trials(study, PACK)) == ids  # without: everything


def test_a_trial_without_a_heartbeat_is_timed_by_the_servers_clock(tmp_path, monkeypatch):
    # Its start time is the asking host's local clock, which another host's may not share: a
    # trial without a heartbeat gets one when first seen, and goes stale a grace period later.
    monkeypatch.setattr(leases, "GRACE_SECONDS", 0)
    study, ids = asked(tmp_path, 1)
    assert leases.claim_stale_trials(study) == []
    leases.release_trials(study, ids)  # the beat it was given is a real row: it can lapse
    assert leases.claim_stale_trials(study) == ids


def beats(study, ids):
    from optuna.storages._rdb import models

    table = models.TrialHeartbeatModel.__table__
    with optuna_private.tables(study)[0].engine.connect() as conn:
        return dict(conn.execute(sqlalchemy.select(table.c.trial_id, table.c.heartbeat).where(
            table.c.trial_id.in_(ids))).all())


def test_heartbeats_are_renewed_and_first_given_in_one_call(tmp_path):
    study, ids = asked(tmp_path, 3)
    leases.record_heartbeats(study, ids[:1])
    leases.release_trials(study, ids[:1])  # an old beat, to be renewed
    leases.record_heartbeats(study, ids)  # one renewed, two new
    renewed = beats(study, ids)
    assert sorted(renewed) == ids and min(renewed.values()).year > 2000


def test_a_first_heartbeat_given_by_another_worker_meanwhile_is_renewed(tmp_path, monkeypatch):
    # claim_stale_trials gives trials without a beat one: between our look and our insert.
    from optuna.storages._rdb import models

    study, ids = asked(tmp_path, 2)
    leases.record_heartbeats(study, ids[:1])
    leases.release_trials(study, ids[:1])
    real_update, updates = sqlalchemy.update, []

    def rival_first(table):  # after our look, before we write anything
        updates.append(table)
        if len(updates) == 1:
            with optuna_private.tables(study)[0].engine.begin() as conn:
                conn.execute(sqlalchemy.insert(models.TrialHeartbeatModel.__table__).values(
                    trial_id=ids[1], heartbeat=sqlalchemy.func.now()))
        return real_update(table)

    monkeypatch.setattr(leases.sqlalchemy, "update", rival_first)
    leases.record_heartbeats(study, ids)
    monkeypatch.undo()
    # Our insert lost to the rival's; the second try renewed both beats.
    assert len(updates) == 2 and min(beats(study, ids).values()).year > 2000


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_finished_and_best_reads_what_optuna_reads(tmp_path, direction):
    # One aggregate query on Optuna's tables, against Optuna's own reading of the same trials;
    # and the same from a store of another kind (in memory), through the public reads.
    for url in (f"sqlite:///{tmp_path / direction}.db", None):
        study = optuna.create_study(storage=storage.open_storage(url) if url else None,
                                    direction=direction)
        for value in (0.3, 0.7, -math.inf, math.inf, 0.5):
            study.tell(study.ask(), value)
        study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
        study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
        study.ask()  # running
        finite = [t.value for t in study.trials if t.value is not None and math.isfinite(t.value)]
        expected = max(finite) if direction == "maximize" else min(finite)
        assert records.finished_and_best(study) == (6, expected)
