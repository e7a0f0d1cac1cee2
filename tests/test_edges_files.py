"""Files and stores at the edges (issue 19): a full disk, a damaged checkpoint, read-only
media, files that are no store, storage-URL typos, kills that leave temporary files or would
add a second weights artifact, and `export` without the artifact folder."""

from __future__ import annotations

import contextlib
import errno
import gc
import io
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import torch

from conftest import REPO, study_toml
from lrsweep import atomic
from lrsweep.store import artifacts, failures, optuna_private, records, storage, urls
from lrsweep.store.records import trial_curves
from lrsweep.train import checkpoint
from lrsweep.train.checkpoint import Checkpoints, CheckpointWriteError, DamagedCheckpoint
from lrsweep.train.model import PackedLeNet, lenet
from lrsweep.train.trials import EpochMetrics, PackState, Resume


def curve(epochs: int) -> list[EpochMetrics]:
    return [EpochMetrics(e, 0.1, 2.0 - e, 0.5, 1.0, 0.6, 0.6, 1.5, 0.9, 0.05, 0.61, 0.8,
                         0.02, e) for e in range(epochs)]


def packed(epochs: int) -> PackState:
    net = PackedLeNet([lenet(0), lenet(1)])
    return PackState(net.LAYOUT, net.pack_state(), {7: 0, 8: 1},
                     {7: Resume(None, curve(epochs)), 8: Resume(None, curve(epochs))})


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def flip_weights(path: Path, n: int = 8) -> None:
    """Flip `n` bytes in the middle of the largest tensor of a checkpoint (torch keeps them
    raw in its zip), leaving the file loadable by torch."""
    data = bytearray(path.read_bytes())
    start = data.index(b"PK\x03\x04")  # after the checksum line, if any
    with zipfile.ZipFile(io.BytesIO(bytes(data[start:]))) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
    local = start + info.header_offset
    name_len, extra_len = struct.unpack("<HH", data[local + 26:local + 30])
    middle = local + 30 + name_len + extra_len + info.file_size // 2
    for i in range(middle, middle + n):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


# --- 1. a full disk while a checkpoint is written -------------------------------------------

def test_a_failed_checkpoint_write_leaves_nothing_behind_and_says_so(tmp_path, monkeypatch):
    ckpts = Checkpoints(tmp_path)
    ckpts.save("s", "pack-7", packed(1))

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(CheckpointWriteError) as caught:
        ckpts.save("s", "pack-7", packed(2))
    path = ckpts.path("s", "pack-7")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert str(caught.value) == f"cannot write the checkpoint {path}: No space left on device"
    assert [p.name for p in path.parent.iterdir()] == ["pack-7.pt"]  # no temporary file
    assert len(ckpts.load("s", "pack-7")[7].epochs) == 1  # the last good one, untouched
    monkeypatch.undo()  # space freed: the next write simply works
    ckpts.save("s", "pack-7", packed(3))
    assert len(ckpts.load("s", "pack-7")[7].epochs) == 3


def test_a_background_write_on_a_full_disk_is_a_checkpoint_write_error(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    writer = checkpoint.BackgroundWriter(Checkpoints(tmp_path), "s", "pack-7")
    writer.save(packed(1))
    with pytest.raises(CheckpointWriteError):
        writer.wait()
    assert [p.name for p in (tmp_path / "s").iterdir()] == []


def test_temporary_files_of_dead_processes_are_removed_at_the_next_start(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    host, dead = atomic.HOST, dead_pid()
    orphans = [folder / f"pack-1.tmp{dead}",                 # the naming before
               folder / f"pack-2.pt.tmp-{host}-{dead}",
               folder / f"pack-3.pt.tmp-elsewhere-{os.getpid()}"]  # another machine's, old
    kept = [folder / f"pack-4.pt.tmp-elsewhere-{os.getpid()}",    # another machine's, new
            folder / f"pack-5.pt.tmp-{host}-{os.getpid()}",       # a live process's
            folder / "pack-6.pt"]
    for path in orphans + kept:
        path.write_bytes(b"x")
    hours_ago = time.time() - 2 * atomic.ORPHAN_SECONDS
    os.utime(orphans[2], (hours_ago, hours_ago))
    Checkpoints(tmp_path).load("s", "pack-9")  # the next start looks in the folder
    assert sorted(folder.iterdir()) == sorted(kept)


# --- 2. a full SQLite store --------------------------------------------------------------------

def test_a_full_sqlite_store_is_said_to_be_full_and_where(tmp_path):
    path = tmp_path / "s.db"
    url = f"sqlite:///{path}"
    rdb = storage.open_storage(url)
    study = optuna.create_study(storage=rdb, study_name="s")
    pages = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]
    # SQLite's own full-disk error, as on a disk with no room for another page.
    sqlalchemy.event.listen(rdb.engine, "connect",
                            lambda conn, _: conn.execute(f"PRAGMA max_page_count = {pages}"))
    rdb.engine.dispose()
    trial = study.ask()
    with pytest.raises(Exception) as caught:
        trial.set_user_attr("curve", [0.5] * 200_000)
    assert "exceeding max length" in str(caught.value)  # what Optuna says of it
    line = failures.disk_full(caught.value, url)
    assert line is not None and line.startswith(f"the disk is full: cannot write {path} (")
    assert "MiB free on its disk" in line and "\n" not in line
    assert failures.disk_full(ValueError("other"), url) is None


def test_a_full_disk_under_a_checkpoint_or_an_opening_store_is_said_so(tmp_path, monkeypatch):
    error = CheckpointWriteError(errno.ENOSPC, "No space left on device", "/ck/s/pack-1.pt")
    try:
        raise RuntimeError("the pack's checkpoint could not be written") from error
    except RuntimeError as wrapped:
        assert failures.disk_full(wrapped) == ("the disk is full: cannot write /ck/s/pack-1.pt; "
                                              "free some space (or move the store) and run "
                                              "the same command again: finished trials are "
                                              "kept")

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(storage.sqlite3, "connect", full)
    with pytest.raises(storage.StorageError, match=r"the disk is full: cannot write .*s\.db"):
        storage.open_storage(f"sqlite:///{tmp_path / 's.db'}")


FULL_DISK = """
import json, os, sys
from pathlib import Path
import optuna
from lrsweep.store import storage
from lrsweep.train.checkpoint import Checkpoints, CheckpointWriteError
from test_edges_files import packed
disk, out = Path(sys.argv[1]), {}
url = f"sqlite:///{disk}/s.db"
rdb = storage.open_storage(url)
optuna.create_study(storage=rdb, study_name="s").optimize(
    lambda t: t.suggest_float("x", 0, 1), n_trials=1)
rdb.engine.dispose()  # the store closed: its -wal and -shm are gone
Checkpoints(disk).save("s", "pack-1", packed(1))
fd = os.open(disk / "fill", os.O_WRONLY | os.O_CREAT)
for chunk in (1 << 16, 1 << 12, 1 << 9, 1):  # the disk fills up
    try:
        while True:
            os.write(fd, bytes(chunk))
    except OSError:
        pass
out["read"] = len(storage.load_study("s", url).trials)
try:
    rdb = storage.open_storage(url)
    optuna.load_study(study_name="s", storage=rdb).set_user_attr("big", "x" * 4_000_000)
except Exception as error:
    out["write"] = str(error) if isinstance(error, storage.StorageError) else \
        failures.disk_full(error, url)
    rdb.engine.dispose()  # what the failed write took of the -wal file is given back
try:
    Checkpoints(disk).save("s", "pack-1", packed(2))
except CheckpointWriteError as error:
    out["checkpoint"] = [error.errno, sorted(p.name for p in (disk / "s").iterdir())]
os.close(fd)
os.remove(disk / "fill")  # space freed: the next write works
Checkpoints(disk).save("s", "pack-1", packed(3))
out["after"] = len(Checkpoints(disk).load("s", "pack-1")[7].epochs)
print(json.dumps(out))
"""


def test_a_real_full_disk(tmp_path):
    """On a small tmpfs (root, in a private mount namespace; skipped elsewhere): the store is
    still read, a write says the disk is full and where, a checkpoint write fails cleanly and
    the next one, once space is freed, works."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a real full disk needs root and unshare (a private tmpfs mount)")
    disk = tmp_path / "disk"
    disk.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}
    proc = subprocess.run(["unshare", "--mount", "sh", "-c",
                           f"mount -t tmpfs -o size=2m tmpfs {disk} && exec {sys.executable} "
                           f"-c '{FULL_DISK}' {disk}"],
                          env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and "mount" in proc.stderr.split("\n", 1)[0]:
        pytest.skip(f"no private tmpfs mount here ({proc.stderr.strip()})")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["read"] == 1
    assert result["write"].endswith(f"the disk is full: cannot write {disk}/s.db (0.0 MiB free "
                                    "on its disk); free some space (or move the store) and run "
                                    "the same command again: finished trials are kept")
    assert result["checkpoint"] == [errno.ENOSPC, ["pack-1.pt"]]
    assert result["after"] == 3


# --- 3. a damaged checkpoint -------------------------------------------------------------------

def test_a_checkpoint_with_flipped_bytes_is_refused_with_one_warning(tmp_path):
    ckpts = Checkpoints(tmp_path)
    ckpts.save("s", "pack-7", packed(2))
    path = ckpts.path("s", "pack-7")
    flip_weights(path)
    with pytest.warns(DamagedCheckpoint, match="fails its checksum.*start over") as caught:
        assert ckpts.load("s", "pack-7") == {}
    assert len(caught) == 1


def test_a_checkpoint_written_before_checksums_still_loads(tmp_path):
    ckpts = Checkpoints(tmp_path)
    ckpts.save("s", "pack-7", packed(2))
    path = ckpts.path("s", "pack-7")
    data = path.read_bytes()
    assert data.startswith(checkpoint.MAGIC)
    path.write_bytes(data[data.index(b"\n") + 1:])  # the payload alone, as before checksums
    back = ckpts.load("s", "pack-7")
    assert list(back) == [7, 8] and len(back[8].epochs) == 2


@pytest.fixture
def env(fashion_dir):
    return {**os.environ, "LRSWEEP_DATA": str(fashion_dir), "PYTHONPATH": str(REPO),
            "LRSWEEP_GRACE_SECONDS": "2", "LRSWEEP_HEARTBEAT_SECONDS": "0.5"}


def test_a_damaged_checkpoint_restarts_its_trials_with_an_uninterrupted_runs_numbers(
        tmp_path, env):
    (tmp_path / "s.toml").write_text(study_toml("damaged", scheduler='["constant", "cosine"]',
                                                epochs=4))

    def run(store: str, **kwargs):
        args = [sys.executable, "-m", "lrsweep", "run", str(tmp_path / "s.toml"),
                "--storage", f"sqlite:///{tmp_path / store}", "--pack", "2"]
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **kwargs)

    def results(store: str):
        study = optuna.load_study(study_name="damaged", storage=f"sqlite:///{tmp_path / store}")
        return [(t.state, t.value, trial_curves(t)["val_acc"]) for t in study.trials]

    assert run("ref.db").wait(timeout=300) == 0
    proc = run("s.db")
    for line in proc.stderr:  # Ctrl-C after epoch 2: the run stops once it is checkpointed
        if "epoch 2/4" in line:
            proc.send_signal(signal.SIGINT)
            break
    proc.communicate(timeout=120)
    (path,) = (tmp_path / "s.db.checkpoints").rglob("*.pt")
    flip_weights(path)
    again = run("s.db")
    _, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert stderr.count("fails its checksum") == 1
    assert "continuing from its checkpoint" not in stderr
    assert results("s.db") == results("ref.db")


# --- 4, 5. readers: read-only media, files that are no store -----------------------------------

def make_store(folder: Path, *, keep_wal: bool = False) -> None:
    """A WAL store with a study of one finished trial. keep_wal: copied while a worker still
    had it open (its last trial in the -wal file, beside the -shm)."""
    folder.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{folder / 's.db'}"
    study = optuna.create_study(storage=storage.open_storage(url), study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    if not keep_wal:
        return
    hold = sqlite3.connect(folder / "s.db")  # keeps the -wal from being folded in
    hold.execute("PRAGMA wal_autocheckpoint = 0")
    hold.execute("SELECT 1").fetchall()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    copy = folder.parent / "copy"
    copy.mkdir()
    for suffix in ("", "-wal", "-shm"):
        shutil.copy(folder / f"s.db{suffix}", copy / f"s.db{suffix}")
    hold.close()
    shutil.rmtree(folder)
    copy.rename(folder)
    assert (folder / "s.db-wal").stat().st_size > 0


READ = ("from lrsweep.store import storage; "
        "print(len(storage.load_study('s', 'sqlite:///{db}').trials))")


def read_only(folder: Path, args: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run python `args` (default: read the store in `folder`) in `folder` as if the folder
    were on read-only media: chmod'ed when not root; as root (whom chmod does not stop), in a
    private mount namespace where the folder is bound read-only. Skips where neither can be
    had."""
    args = args or ["-c", READ.format(db=folder / "s.db")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if os.geteuid() != 0:
        for path in folder.iterdir():
            path.chmod(0o444)
        folder.chmod(0o555)
        try:
            return subprocess.run([sys.executable, *args], env=env, capture_output=True,
                                  text=True, timeout=120, cwd=folder)
        finally:
            folder.chmod(0o755)
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: no way to make a folder read-only")
    script = (f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && "
              f"! touch {folder}/probe 2>/dev/null && cd {folder} && "
              f"exec {shlex.join([sys.executable, *args])}")
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script], env=env,
                          capture_output=True, text=True, timeout=120)
    if "unshare failed" in proc.stderr or "mount:" in proc.stderr or proc.returncode == 1 \
            and not proc.stderr:
        pytest.skip(f"root, but no private read-only mount here ({proc.stderr.strip()})")
    return proc


@pytest.mark.parametrize("keep_wal", [False, True], ids=["closed", "copied-while-open"])
def test_a_store_on_read_only_media_is_read(tmp_path, keep_wal):
    folder = tmp_path / "media"
    make_store(folder, keep_wal=keep_wal)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    proc = read_only(folder)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("2" if keep_wal else "1")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.parametrize("args, message", [
    (("report", "s", "--storage"), "the report's folder results/s: {folder} cannot be written ("),
    (("export", "s", "--trial", "0", "--storage"),
     "the weights' file results/s/trial-0.pt: {folder} cannot be written ("),
    (("bench", "--packs", "1", "--data-dir"),
     "the records' folder results/benchmarks: {folder} cannot be written ("),
], ids=["report", "export", "bench"])
def test_a_command_in_a_read_only_folder_says_so_before_it_reads(tmp_path, args, message):
    # The default output folder (results/ in the working folder), checked as --out is.
    folder = tmp_path / "media"
    make_store(folder)
    last = f"sqlite:///{folder}/s.db" if args[-1] == "--storage" else str(folder)  # no data
    proc = read_only(folder, ["-m", "lrsweep", *args, last])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(folder=folder) in lines[0], proc.stderr


def read_in_a_process(folder: Path) -> str:
    """The number of trials a reader in another process finds in the store in `folder`."""
    proc = subprocess.run([sys.executable, "-c", READ.format(db=folder / "s.db")],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def journal_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("s.db-*"))


def test_a_reader_leaves_the_store_one_file(tmp_path):
    make_store(tmp_path)
    gc.collect()  # the writer's storage closed: SQLite removed its -wal and -shm
    assert journal_files(tmp_path) == []
    before = (tmp_path / "s.db").read_bytes()
    assert read_in_a_process(tmp_path) == "1"
    assert journal_files(tmp_path) == []  # a read-only reader alone would leave both
    assert (tmp_path / "s.db").read_bytes() == before


def test_a_reader_beside_a_live_writer_leaves_its_journal(tmp_path):
    make_store(tmp_path)
    gc.collect()
    url = f"sqlite:///{tmp_path / 's.db'}"
    rdb = storage.open_storage(url)  # a worker still at work: its last trial in the -wal
    optuna.load_study(study_name="s", storage=rdb).optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert (tmp_path / "s.db-wal").stat().st_size > 0
    assert read_in_a_process(tmp_path) == "2"
    assert journal_files(tmp_path) == ["s.db-shm", "s.db-wal"]
    assert (tmp_path / "s.db-wal").stat().st_size > 0
    rdb.engine.dispose()  # the worker finishes: its close folds the log in and removes both
    assert journal_files(tmp_path) == []
    assert len(storage.load_study("s", url).trials) == 2


def test_a_reader_leaves_a_log_that_holds_data_as_it_was(tmp_path):
    make_store(tmp_path, keep_wal=True)  # copied while a worker wrote: no one has it open
    before = {name: (tmp_path / name).read_bytes() for name in ("s.db", "s.db-wal")}
    assert read_in_a_process(tmp_path) == "2"
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_a_reader_cannot_write(tmp_path):
    make_store(tmp_path)
    rdb = storage.open_storage(f"sqlite:///{tmp_path / 's.db'}", create=False)
    with pytest.raises(Exception, match="readonly|read-only|exceeding max length"):
        optuna.create_study(storage=rdb, study_name="written")
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path / 's.db'}") == ["s"]


@pytest.mark.parametrize("content, words", [
    (b"", "is an empty file (0 bytes), not an lrsweep store"),
    (b"study,trials\nquickstart,12\n", "is not an SQLite database (it begins b'study"),
])
def test_a_file_that_is_no_store_is_refused_and_left_as_it_was(tmp_path, content, words):
    path = tmp_path / "x.db"
    path.write_bytes(content)
    with pytest.raises(storage.StorageError, match=re.escape(words)):
        storage.open_storage(f"sqlite:///{path}", create=False)
    assert path.read_bytes() == content and sorted(tmp_path.iterdir()) == [path]


def test_ls_and_report_on_an_empty_file_write_nothing(lrsweep_cli, tmp_path):
    (tmp_path / "x.db").write_bytes(b"")
    for args in (("ls",), ("report", "s")):
        proc = lrsweep_cli(*args, "--storage", "sqlite:///x.db")
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            "lrsweep: error: storage sqlite:///x.db: x.db is an empty file (0 bytes), not an "
            "lrsweep store; give the store's file, or `lrsweep run` to make one"]
    assert (tmp_path / "x.db").read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.db"]


def test_ls_on_another_programs_database_says_so_and_leaves_it_as_it_was(lrsweep_cli, tmp_path):
    with contextlib.closing(sqlite3.connect(tmp_path / "other.db")) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE notes (text)")
        db.commit()
    before = (tmp_path / "other.db").read_bytes()
    proc = lrsweep_cli("ls", "--storage", "sqlite:///other.db")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "lrsweep: error: storage sqlite:///other.db: other.db is an SQLite "
        "database without Optuna's tables, not an lrsweep store; give the store's file, or "
        "`lrsweep run` to make one"]
    # The failed read-only open made a -wal and -shm; they went at exit.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]
    assert (tmp_path / "other.db").read_bytes() == before


def test_a_store_whose_making_was_interrupted_is_called_so_and_run_finishes_it(lrsweep_cli,
                                                                              tmp_path):
    # Killed between Optuna's making its tables and stamping their version: the tables are
    # there, the version is not. A reader must not call it another program's database.
    url = f"sqlite:///{tmp_path / 'half.db'}"
    storage.open_storage(url).engine.dispose()
    with contextlib.closing(sqlite3.connect(tmp_path / "half.db")) as db:
        db.execute("DROP TABLE alembic_version")
        db.commit()
    proc = lrsweep_cli("ls", "--storage", "sqlite:///half.db")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "lrsweep: error: storage sqlite:///half.db: half.db is a store whose making was "
        "interrupted (Optuna's tables without their version); `lrsweep run` finishes it"]
    storage.open_storage(url).engine.dispose()  # what `lrsweep run` opens it with
    assert lrsweep_cli("ls", "--storage", "sqlite:///half.db").returncode == 0


# --- 6. storage-URL typos ----------------------------------------------------------------------

@pytest.mark.parametrize("url, says", [
    ("sqlite:/x.db", "did you mean sqlite:///x.db?"),
    ("sqlite:x.db", "did you mean sqlite:///x.db?"),
    ("sqlite://x.db", "did you mean sqlite:///x.db?"),
    ("SQLite:////data/x.db", "did you mean sqlite:////data/x.db?"),
    ("sqlite3:///x.db", "did you mean sqlite:///x.db?"),
    ("postgres://me@host/db", "did you mean postgresql://me@host/db?"),
    ("postgres+psycopg2://me@host/db", "did you mean postgresql+psycopg2://me@host/db?"),
    ("results/x.db", "not a URL; for an SQLite file say sqlite:///results/x.db"),
    ("/data/x.db", "not a URL; for an SQLite file say sqlite:////data/x.db"),
    ("nosuchdb://x", "lrsweep takes sqlite:///FILE or postgresql://USER@HOST/DATABASE"),
])
def test_a_storage_url_typo_is_answered_with_the_right_form(url, says):
    with pytest.raises(storage.StorageError) as caught:
        storage.open_storage(url, create=False)
    assert says in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("url, says", [
    (Path("/data/x.db"), "storage PosixPath('/data/x.db'): not a URL string; for an SQLite "
                         "file say sqlite:////data/x.db"),
    (None, "storage: no URL given"),
])
def test_a_path_object_from_python_is_answered_with_the_url_it_means(url, says):
    with pytest.raises(storage.StorageError) as caught:
        storage.open_storage(url, create=False)  # had been an AttributeError ('partition')
    assert str(caught.value) == says


@pytest.mark.parametrize("url", ["sqlite:///x.db", "sqlite:////data/x.db", "sqlite://",
                                 "postgresql://me@host/db", "postgresql+psycopg://h/db"])
def test_well_formed_urls_pass(url):
    urls.check_url(url)


@pytest.mark.parametrize("name, says", [
    ("q?x", "an SQLite store's URL takes no '?'"),
    ("s.db?mode=ro", "an SQLite store's URL takes no '?'"),
    ("a%41b", "a URL reads '%XX' as an escaped character, which names the file 'aAb/s.db'"),
])
def test_a_path_that_sqlalchemy_reads_as_another_file_is_refused_and_nothing_written(
        lrsweep_cli, tmp_path, name, says):
    # SQLAlchemy read sqlite:///q?x/s.db as the file q, while lrsweep kept its checkpoints
    # and journal beside q?x/s.db: the study went to a file that lrsweep did not look after.
    url = f"sqlite:///{name}" if name.startswith("s.db") else f"sqlite:///{name}/s.db"
    (tmp_path / "study.toml").write_text(study_toml("s"))
    proc = lrsweep_cli("run", "study.toml", "--storage", url)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"lrsweep: error: storage {url}: {says}")
    assert line.endswith("rename the file or its folder)" if "?" in url else
                         "rename the file or its folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]


@pytest.mark.parametrize("name", ["a b", "a#b", "100%", "é"])
def test_a_store_in_a_folder_with_url_characters_is_written_read_and_tidied(tmp_path, name):
    folder = tmp_path / name  # quoted into SQLite's file: URIs by the reader and the tidier
    make_store(folder)
    gc.collect()
    assert read_in_a_process(folder) == "1"
    assert journal_files(folder) == []


# --- 7. artifacts: one per trial, whole or not at all; export without them ---------------------

def told_study(url: str, store, payload: bytes = b"weights", outcome: str = "complete"
               ) -> optuna.Study:
    """A study whose trial 0 is told with a weights artifact, the way `Teller` tells it."""
    study = optuna.create_study(storage=storage.open_storage(url), study_name="s",
                                direction="maximize")
    trial = study.ask()
    trial.set_user_attr("outcome", outcome)
    attrs = artifacts.write_artifact(study, trial, store, "lenet-s-trial-0.pt", payload,
                                     artifacts.WEIGHTS_MIMETYPE)
    records.record_trial(study, trial, {"seed": 0}, {}, attrs)
    study.tell(trial, 0.5)
    return study


def test_a_trial_told_again_after_a_kill_keeps_one_weights_artifact(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = artifacts.artifact_store(url)
    study = optuna.create_study(storage=storage.open_storage(url), study_name="s")
    trial = study.ask()
    for attempt in range(2):  # killed after its records were written, then told again
        retold = optuna.trial.Trial(study, optuna_private.trial_id(trial)) if attempt \
            else trial
        attrs = artifacts.write_artifact(study, retold, store, "lenet-s-trial-0.pt",
                                         b"weights", artifacts.WEIGHTS_MIMETYPE)
        records.record_trial(study, retold, {"seed": 0}, {}, attrs)
    study.tell(trial, 0.5)
    metas = optuna.artifacts.get_all_artifact_meta(study.trials[0], storage=study._storage)
    assert len(metas) == 1
    assert [p.name for p in store.folder.iterdir()] == [metas[0].artifact_id]


def test_an_artifact_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    store = artifacts.artifact_store(f"sqlite:///{tmp_path / 's.db'}")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        store.write("some-id", io.BytesIO(b"weights"))
    assert list(store.folder.iterdir()) == []


def test_artifact_temporary_files_of_dead_processes_are_removed_at_the_next_start(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    folder = artifacts.artifact_store(url).folder
    orphan = folder / f"0b8e.tmp-{atomic.HOST}-{dead_pid()}"
    live = folder / f"0b8f.tmp-{atomic.HOST}-{os.getpid()}"
    for path in (orphan, live, folder / "0b90"):
        path.write_bytes(b"x")
    artifacts.artifact_store(url)
    assert sorted(p.name for p in folder.iterdir()) == [live.name, "0b90"]


def test_export_without_the_artifact_folder_names_it_and_creates_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    told_study(url, artifacts.artifact_store(url))
    out = tmp_path / "results" / "s" / "trial-0.pt"
    assert artifacts.export_weights("s", url, 0, out)[0].read_bytes() == b"weights"
    shutil.rmtree(tmp_path / "results")
    shutil.rmtree(tmp_path / "s.db.artifacts")
    with pytest.raises(storage.StorageError, match=r"trial 0's weights \(lenet-s-trial-0.pt\) "
                       r"are not in the store's artifact folder .*s\.db\.artifacts/"):
        artifacts.export_weights("s", url, 0, out)
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "s.db.artifacts").exists()


def test_export_of_a_failed_trial_warns_and_copies_its_weights(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    told_study(url, artifacts.artifact_store(url), outcome="never learned")
    with pytest.warns(UserWarning, match="trial 0 of 's' never learned: .*w.pt holds the "
                                         "weights its last epoch left"):
        path, _ = artifacts.export_weights("s", url, 0, tmp_path / "w.pt")
    assert path.read_bytes() == b"weights"


def test_export_writes_the_weights_whole(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    payload = torch.arange(10.0).numpy().tobytes()
    told_study(url, artifacts.artifact_store(url), payload)
    path, model = artifacts.export_weights("s", url, 0, tmp_path / "out" / "w.pt")
    assert (path.read_bytes(), model) == (payload, "lenet")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["w.pt"]  # no temporary file


def test_export_names_what_the_study_has_when_the_trial_is_not_there(tmp_path):
    from lrsweep.store import leases
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    with pytest.raises(storage.StorageError, match=r"^study 's' has no trial 0 \(it has no "
                                                   r"trials yet\)$"):
        artifacts.export_weights("s", url, 0, tmp_path / "w.pt")
    # A trial handed back by Ctrl-C: called interrupted, as `show` calls it.
    trial_id = study.ask()._trial_id
    leases.record_heartbeats(study, [trial_id])
    leases.release_trials(study, [trial_id])
    with pytest.raises(storage.StorageError, match=r"has no stored weights \(state "
                                                   r"interrupted; only finished"):
        artifacts.export_weights("s", url, 0, tmp_path / "w.pt")
    assert not (tmp_path / "w.pt").exists()
