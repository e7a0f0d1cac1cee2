"""Many workers on one study through PostgreSQL (Optuna's RDB storage).

Needs a PostgreSQL server: `LRSWEEP_TEST_POSTGRES` (default postgresql://localhost/test).
Skipped, with the reason, where none answers — unless LRSWEEP_REQUIRE_POSTGRES=1 (CI), which
turns the skip into a failure."""

from __future__ import annotations

import getpass
import os
import re
import signal
import shlex
import subprocess
import sys
import threading
import time
import uuid

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from conftest import REPO, TEST_IMAGES, study_toml
from lrsweep.report import read
from lrsweep.store.records import trial_curves

URL = os.environ.get("LRSWEEP_TEST_POSTGRES", "postgresql://localhost/test")
GRACE = 2


def _reachable() -> str | None:
    try:
        engine = sqlalchemy.create_engine(URL)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # no driver, no server, no database: all mean "not here"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


_why_not = _reachable()
if _why_not and os.environ.get("LRSWEEP_REQUIRE_POSTGRES") == "1":
    raise RuntimeError(f"LRSWEEP_REQUIRE_POSTGRES=1 but {URL} cannot be reached ({_why_not})")
pytestmark = pytest.mark.skipif(_why_not is not None,
                                reason=f"no PostgreSQL at {URL}: {_why_not}")


@pytest.fixture
def name():
    """A study name of this test alone; the study is deleted afterwards."""
    study_name = f"lrsweep-test-{uuid.uuid4().hex[:10]}"
    yield study_name
    try:
        optuna.delete_study(study_name=study_name, storage=URL)
    except KeyError:
        pass


@pytest.fixture
def env(fashion_dir, tmp_path):
    return {**os.environ, "LRSWEEP_DATA": str(fashion_dir), "PYTHONPATH": str(REPO),
            "LRSWEEP_STORAGE": URL, "LRSWEEP_CHECKPOINTS": str(tmp_path / "checkpoints"),
            "LRSWEEP_ARTIFACTS": str(tmp_path / "artifacts"),
            "LRSWEEP_GRACE_SECONDS": str(GRACE), "LRSWEEP_HEARTBEAT_SECONDS": "0.5"}


def lrsweep(*args: str) -> list[str]:
    return [sys.executable, "-m", "lrsweep", *args]


def grid_points(study):
    return [(t.params["seed"], t.params["scheduler"]) for t in study.trials
            if t.state == TrialState.COMPLETE]


def test_three_workers_reach_exactly_the_total_with_each_grid_point_once(tmp_path, env, name):
    (tmp_path / "s.toml").write_text(study_toml(
        name, scheduler='["constant", "sqrt", "cosine", "poly"]', seed="[0, 1, 2]"))
    first = subprocess.Popen(lrsweep("run", str(tmp_path / "s.toml"), "--pack", "2"), env=env,
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    # The other two start as a cluster job would: knowing only the name (and the URL).
    deadline = time.time() + 60
    while name not in optuna.study.get_all_study_names(URL) and time.time() < deadline:
        time.sleep(0.2)
    others = [subprocess.Popen(lrsweep("worker", name, "--pack", "2"), env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(2)]
    for proc in [first, *others]:
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
    study = optuna.load_study(study_name=name, storage=URL)
    points = grid_points(study)
    assert len(points) == 12 and len(set(points)) == 12
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert all(t.system_attrs.get("lrsweep_surplus") for t in study.trials
               if t.state == TrialState.FAIL)


@pytest.fixture
def fresh_database():
    """A new, empty database on the server (no Optuna tables yet), dropped afterwards."""
    admin = sqlalchemy.create_engine(URL, isolation_level="AUTOCOMMIT")
    database = f"lrsweep_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{database}"'))
    yield sqlalchemy.make_url(URL).set(database=database).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE "{database}" WITH (FORCE)'))
    admin.dispose()


def test_three_workers_started_at_once_on_an_empty_database(tmp_path, env, fresh_database):
    # Schema and study are created by whichever worker comes first (Optuna issues #1092,
    # #5385: concurrent create_all races); all three must work, each grid point once.
    (tmp_path / "s.toml").write_text(study_toml("at-once", seed="[0, 1, 2]", epochs=1))
    env = {**env, "LRSWEEP_STORAGE": fresh_database}
    procs = [subprocess.Popen(lrsweep("run", str(tmp_path / "s.toml"), "--pack", "1"), env=env,
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
    study = optuna.load_study(study_name="at-once", storage=fresh_database)
    points = grid_points(study)
    assert len(points) == 6 and len(set(points)) == 6
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_a_killed_workers_trials_are_finished_by_another(tmp_path, env, name):
    (tmp_path / "s.toml").write_text(study_toml(
        name, scheduler='["constant", "sqrt", "cosine", "poly"]', epochs=5))
    doomed = subprocess.Popen(lrsweep("run", str(tmp_path / "s.toml"), "--pack", "2"),
                              env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    for line in doomed.stderr:
        if "trials 0–1 epoch 2/5" in line:
            doomed.send_signal(signal.SIGKILL)
            break
    doomed.communicate(timeout=60)
    survivor = subprocess.run(lrsweep("worker", name, "--pack", "2"), env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
    assert survivor.returncode == 0, survivor.stderr
    assert "trial 0 was interrupted: continuing from its checkpoint after epoch" in survivor.stderr
    study = optuna.load_study(study_name=name, storage=URL)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert all(len(trial_curves(t)["val_acc"]) == 5 for t in study.trials)


def test_a_worker_that_dies_while_another_works_has_its_trials_finished_by_it(tmp_path, env,
                                                                             name):
    # Two workers start together and take a pack each. One is killed halfway through its
    # pack; the other, done with its own pack before the dead one's lease expires, must not
    # exit leaving those trials RUNNING: it waits, takes them over, finishes them.
    # Timing: epochs that evaluate the whole test set (about a second each here), so that
    # both workers, which start seconds apart, are inside their packs at the kill; and a
    # grace longer than the survivor's remaining six epochs, so that it finishes its pack
    # while the dead worker's lease still holds. (With 300 test images and a 5 s grace the
    # first worker could finish before the second reached the kill's epoch.)
    (tmp_path / "s.toml").write_text(study_toml(
        name, scheduler='["constant", "sqrt", "cosine", "poly"]', epochs=12).replace(
        f"test_subset = {TEST_IMAGES}", "test_subset = 0"))
    env = {**env, "LRSWEEP_GRACE_SECONDS": "20"}
    procs = [subprocess.Popen(lrsweep("run", str(tmp_path / "s.toml"), "--pack", "2"), env=env,
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    logs: list[list[str]] = [[], []]
    readers = [threading.Thread(target=lambda p=p, log=log: log.extend(p.stderr))
               for p, log in zip(procs, logs)]
    for reader in readers:
        reader.start()
    deadline = time.time() + 120
    while time.time() < deadline and not all(
            any("epoch 6/12" in line for line in log) for log in logs):
        time.sleep(0.05)
    procs[0].send_signal(signal.SIGKILL)
    assert procs[1].wait(timeout=300) == 0, "".join(logs[1])
    for reader in readers:
        reader.join(timeout=10)
    doomed = [int(n) for n in re.findall(r"trial (\d+) started", "".join(logs[0]))]
    told = "".join(logs[1])
    assert len(doomed) == 2, logs
    assert "waiting for 2 trial(s) running in other workers" in told
    for number in doomed:
        assert f"trial {number} was interrupted: continuing from its checkpoint after epoch" \
            in told
    study = optuna.load_study(study_name=name, storage=URL)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert all(len(trial_curves(t)["val_acc"]) == 12 for t in study.trials)


def test_reports_read_postgresql_as_they_read_sqlite(tmp_path, env, name):
    (tmp_path / "s.toml").write_text(study_toml(name, scheduler='["constant", "cosine"]'))
    sqlite = f"sqlite:///{tmp_path / 'same.db'}"
    for url in (URL, sqlite):
        proc = subprocess.run(lrsweep("run", str(tmp_path / "s.toml"), "--storage", url,
                                      "--pack", "1"), env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
    drop = ["seconds"]
    from_pg = read.trials_frame(name, URL).drop(columns=drop)
    from_sqlite = read.trials_frame(name, sqlite).drop(columns=drop)
    assert from_pg.to_dict("records") == from_sqlite.to_dict("records")
    curves_pg = read.curves_frame(name, URL).drop(columns="epoch_seconds")
    curves_sqlite = read.curves_frame(name, sqlite).drop(columns="epoch_seconds")
    assert curves_pg.to_dict("records") == curves_sqlite.to_dict("records")


def test_readers_leave_an_empty_database_without_tables(lrsweep_cli):
    """Optuna's storage makes its tables when it opens: a reader pointed at a database that
    holds none (a mistyped URL, a study name asked of the wrong database) must not."""
    schema = f"lrsweep_empty_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(URL)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    try:
        empty = f"{URL}?options=-csearch_path%3D{schema}"
        for args in (("ls",), ("show", "nosuch"), ("resume", "nosuch")):
            proc = lrsweep_cli(*args, "--storage", empty)
            assert proc.returncode == 2, proc.stderr
            assert "holds no lrsweep store yet" in proc.stderr
        with engine.connect() as conn:
            assert sqlalchemy.inspect(conn).get_table_names(schema=schema) == []
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def test_a_rerun_file_never_holds_the_stores_password(fresh_database):
    # The file is written to be shared and committed; trust authentication on the test
    # server takes any password, so the URL below opens the store.
    from test_rerun import search_study
    from lrsweep.report import rerun
    url = sqlalchemy.make_url(fresh_database)
    user = url.username or getpass.getuser()  # libpq's default role: the user's own name
    with_password = url.set(username=user, password="s3cret-word").render_as_string(
        hide_password=False)
    text = rerun.best_study_file("search", search_study(with_password), top=1, seeds=2)
    assert "s3cret-word" not in text and f"{user}:***@" in text


def test_ls_names_its_store_without_the_password(fresh_database, env, tmp_path):
    # Given on the command line or by LRSWEEP_STORAGE, the table's title hides it.
    from test_rerun import search_study
    url = sqlalchemy.make_url(fresh_database)
    user = url.username or getpass.getuser()
    with_password = url.set(username=user, password="s3cret-word").render_as_string(
        hide_password=False)
    search_study(with_password)
    for args in (("ls", "--storage", with_password), ("ls",)):
        proc = subprocess.run(lrsweep(*args), cwd=tmp_path, capture_output=True, text=True,
                              env={**env, "LRSWEEP_STORAGE": with_password, "COLUMNS": "200"},
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "s3cret-word" not in proc.stdout and f"{user}:***@" in proc.stdout



def test_suggested_commands_hide_the_password_given_on_the_command_line(fresh_database, env,
                                                                          tmp_path):
    # `show` and `rerun` suggest the next command with the user's --storage: it printed the
    # password in clear, against "a password in a storage URL is never printed".
    from test_rerun import search_study
    url = sqlalchemy.make_url(fresh_database)
    user = url.username or getpass.getuser()
    with_password = url.set(username=user, password="s3cret-word").render_as_string(
        hide_password=False)
    search_study(with_password)
    hidden = shlex.quote(with_password.replace(":s3cret-word@", ":***@"))
    for args, suggested in ((("show", "search"), f"lrsweep report search --storage {hidden}"),
                            (("rerun", "search", "--out", "re.toml"),
                             f"lrsweep run re.toml --storage {hidden}")):
        proc = subprocess.run(lrsweep(*args, "--storage", with_password), cwd=tmp_path,
                              capture_output=True, text=True, env={**env, "COLUMNS": "200"},
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "s3cret-word" not in proc.stdout + proc.stderr
        assert suggested in proc.stdout, proc.stdout
