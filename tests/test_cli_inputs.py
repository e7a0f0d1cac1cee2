"""Bad input to the command line beyond study files: where a command writes (--out, --csv),
option values, the lease settings and folders in the environment, passwords in storage URLs.
Each is one line, exit 2, and nothing written; nothing printed shows a password."""

from __future__ import annotations

import signal

import optuna
import pytest
import typer

from conftest import study_toml
from lrsweep import cli_errors
from lrsweep.store.failures import hide_passwords


def store(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    optuna.create_study(study_name="other", storage=url)
    return url, (tmp_path / "store.db").read_bytes()


def one_line(proc, message):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and message in lines[0], proc.stderr


@pytest.mark.parametrize("args, message", [
    (("export", "other", "--csv", "store.db"), "--csv store.db: that is the study's store"),
    (("export", "other", "--csv", "store.db-wal"), "that is the study's store"),
    (("export", "other", "--trial", "0", "--out", "store.db"), "--out store.db: that is the "
                                                                "study's store"),
    (("export", "other", "--csv", "."), "--csv .: a folder is there; give a file name"),
    (("export", "other", "--trial", "0", "--out", "same.x", "--csv", "./same.x"),
     "--csv same.x: the weights go to that file too; give two files"),
    (("export", "other", "--csv", "a-file/curves.csv"), "a-file is a file, not a folder"),
    (("report", "other", "--out", "a-file/report"), "a-file is a file, not a folder"),
    # The store's own folders: what it keeps there is its trials' weights, under its names.
    (("report", "other", "--out", "store.db.artifacts/r"), "--out store.db.artifacts/r: that is "
                                                           "in the store's artifacts folder"),
    (("report", "other", "--out", "store.db.checkpoints"), "in the store's checkpoints folder"),
    (("export", "other", "--csv", "store.db.artifacts/c.csv"), "in the store's artifacts"),
    # Not writable even by root: the check writes there, it does not read permission bits.
    (("export", "other", "--csv", "/sys/curves.csv"), "--csv /sys/curves.csv: /sys cannot be "
                                                      "written ("),
    (("report", "other", "--out", "/sys/lrsweep"), "--out /sys/lrsweep: /sys cannot be written"),
    (("schedules", "--out", "shapes.txt"), "--out shapes.txt: give a file ending in one of"),
    (("schedules", "--out", "."), "--out .: a folder is there"),
    (("bench", "--packs", "1", "--out", "."), "--out .: a folder is there"),
    (("bench", "--packs", ""), "--packs '': give whole numbers"),
    # '' would be Path('.'): a report written into the current folder, a file "a folder".
    (("report", "other", "--out", ""), "Invalid value for '--out': an empty path names no file"),
    (("export", "other", "--csv", " "), "Invalid value for '--csv': an empty path names no"),
    (("export", "other", "--trial", "0", "--out", ""), "'--out': an empty path names no file"),
    (("rerun", "other", "--out", ""), "'--out': an empty path names no file or folder"),
    (("schedules", "--out", ""), "'--out': an empty path names no file or folder"),
    (("bench", "--packs", "1", "--out", ""), "'--out': an empty path names no file or folder"),
    (("run", ""), "lrsweep run: error: Invalid value for 'STUDY_FILE': an empty path names no"),
    # A file named with a folder's separator: Path() would drop it and write the file.
    (("schedules", "--out", "shapes.png/"), "'--out': shapes.png/ ends in '/', which names a "
                                            "folder: give a file"),
    (("export", "other", "--csv", "c.csv/"), "'--csv': c.csv/ ends in '/', which names a folder"),
    (("bench", "--packs", "1", "--subset", "70000"), "--subset 70000 exceeds the 60000 training"),
    (("rerun", "other", "--name", ""), "--name '': empty"),
    (("rerun", "other", "--name", "other"), "--name 'other': the study re-run"),
    (("ls", "--storage", ""), "an empty storage URL"),
    (("ls", "--storage", "postgresql://localhost:abc/test"), "the port, after the host's ':', "
                                                             "must be a number"),
    (("bench", "--packs", "1,8,1"), "--packs '1,8,1': 1 given twice"),
    (("report", "other", "--out", "r" * 300), "a name longer than the file system takes"),
    (("export", "other", "--csv", "c" * 5000 + ".csv"), "a name longer than the file system"),
    (("export", "other", "--trial", "-1"), "lrsweep export: error: Invalid value for '--trial'"),
    (("show", "other", "--colour"), "lrsweep show: error: No such option: --colour"),
    (("show", "other", "--storage", "sqlite:///store.db", "--top"),
     "lrsweep show: error: Option '--top' requires an argument. (see `lrsweep show --help`)"),
    (("nosuch",), "lrsweep: error: No such command 'nosuch'"),
], ids=lambda v: " ".join(v) if isinstance(v, tuple) else None)
def test_bad_output_paths_and_option_values_are_one_line_and_write_nothing(
        lrsweep_cli, tmp_path, args, message):
    url, before = store(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    storage = [] if "--storage" in args or args[0] in ("schedules", "bench", "nosuch") else [
        "--storage", url]
    one_line(lrsweep_cli(*args, *storage), message)
    assert (tmp_path / "store.db").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "store.db"]


def test_a_pgf_figure_without_latex_is_refused_before_plotting(lrsweep_cli, tmp_path):
    # PGF is written through LaTeX (xelatex): without it on PATH, the format is not offered.
    proc = lrsweep_cli("schedules", "--out", "shapes.pgf", env={"PATH": str(tmp_path)})
    one_line(proc, "--out shapes.pgf: give a file ending in one of")
    assert ".pgf," not in proc.stderr and ".png" in proc.stderr  # the list offers no .pgf
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("env, message", [
    ({"LRSWEEP_GRACE_SECONDS": "abc"}, "LRSWEEP_GRACE_SECONDS='abc': give a number of seconds"),
    ({"LRSWEEP_GRACE_SECONDS": "-1"}, "LRSWEEP_GRACE_SECONDS='-1': give a number of seconds"),
    ({"LRSWEEP_HEARTBEAT_SECONDS": "nan"}, "LRSWEEP_HEARTBEAT_SECONDS='nan'"),
    ({"LRSWEEP_GRACE_SECONDS": "5"}, "LRSWEEP_HEARTBEAT_SECONDS=10 must be shorter than "
                                     "LRSWEEP_GRACE_SECONDS=5"),
    ({"LRSWEEP_CHECKPOINTS": "a-file"}, "LRSWEEP_CHECKPOINTS=a-file: "),
    ({"LRSWEEP_ARTIFACTS": "a-file/artifacts"}, "a-file is a file, not a folder"),
    # Not writable even by root: the check writes there, it does not read permission bits.
    ({"LRSWEEP_CHECKPOINTS": "/sys/lrsweep"}, "LRSWEEP_CHECKPOINTS=/sys/lrsweep: cannot write "
                                              "in /sys ("),
    ({"LRSWEEP_ARTIFACTS": "/sys/lrsweep"}, "LRSWEEP_ARTIFACTS=/sys/lrsweep: cannot write in "),
], ids=lambda v: "-".join(f"{k}={w}" for k, w in v.items()) if isinstance(v, dict) else None)
def test_bad_lease_settings_and_folders_are_refused_before_the_store_is_made(
        lrsweep_cli, tmp_path, monkeypatch, env, message):
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "s.toml").write_text(study_toml("leases"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    one_line(lrsweep_cli("run", "s.toml", "--storage", f"sqlite:///{tmp_path / 'store.db'}"),
             message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "s.toml"]


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite+pysqlite://"])
def test_an_in_memory_store_is_refused_before_anything_trains(lrsweep_cli, tmp_path, url):
    # It would train every trial, then lose them all (and leave checkpoints in results/).
    (tmp_path / "s.toml").write_text(study_toml("memory"))
    one_line(lrsweep_cli("run", "s.toml", "--storage", url),
             f"storage {url}: an in-memory database ends with the run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_the_studys_own_checkpoint_folder_is_checked_before_the_store_is_made(
        lrsweep_cli, tmp_path, monkeypatch):
    # Checkpoints go in a folder of the study's own, which another user of a shared folder
    # may have made: here a file stands in its place (as root, nothing else is unwritable).
    (tmp_path / "shared" / "leases").mkdir(parents=True)
    (tmp_path / "shared" / "leases" / "other").write_text("")
    (tmp_path / "shared" / "own").write_text("not a folder")
    (tmp_path / "s.toml").write_text(study_toml("own"))
    monkeypatch.setenv("LRSWEEP_CHECKPOINTS", "shared")
    one_line(lrsweep_cli("run", "s.toml", "--storage", "sqlite:///store.db"),
             "LRSWEEP_CHECKPOINTS=shared: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml", "shared"]


@pytest.mark.parametrize("args", [("run", "s.toml", "--set", "study.name=a\nb"),
                                  ("run", "s\u2028.toml"),
                                  ("run", "s.toml", "--set", "study.name=a\u202eb")])
def test_an_error_that_quotes_a_line_break_stays_one_line(lrsweep_cli, tmp_path, args):
    # A value echoed in an error (a --set value, a path, a name) has its breaks escaped.
    (tmp_path / "s.toml").write_text(study_toml("one"))
    proc = lrsweep_cli(*args, "--storage", "sqlite:///store.db")
    one_line(proc, "\\n" if "\n" in "".join(args) else "\\u")
    assert not (tmp_path / "store.db").exists()


def test_a_bad_lease_setting_does_not_stop_commands_that_do_not_run_a_study(
        lrsweep_cli, tmp_path, monkeypatch):
    url, _ = store(tmp_path)
    monkeypatch.setenv("LRSWEEP_GRACE_SECONDS", "abc")  # read when imported: no crash there
    listed = lrsweep_cli("ls", "--storage", url)
    assert listed.returncode == 0 and "other" in listed.stdout


def test_a_password_in_the_storage_url_is_never_printed(lrsweep_cli):
    # Nothing listens on port 1: the error names the URL, with its password hidden.
    proc = lrsweep_cli("ls", "--storage",
                       "postgresql://lrsweep:s3cret@localhost:1/nosuch?connect_timeout=2")
    assert proc.returncode == 2
    assert "s3cret" not in proc.stderr + proc.stdout
    assert "postgresql://lrsweep:***@localhost:1/nosuch" in proc.stderr


def test_a_password_never_reaches_a_python_callers_traceback():
    # A notebook shows the exception as it is: the readers' errors hide it themselves.
    from lrsweep.report import read
    from lrsweep.store.failures import StorageError
    url = "postgresql://lrsweep:s3cret@localhost:1/nosuch?connect_timeout=2"
    for call in (lambda: read.studies_frame(url), lambda: read.trials_frame("x", url)):
        with pytest.raises(StorageError) as caught:
            call()
        assert "s3cret" not in str(caught.value) and "lrsweep:***@localhost:1" in str(
            caught.value)


@pytest.mark.parametrize("text, shown", [
    ("postgresql://ann:s3cret@db/test", "postgresql://ann:***@db/test"),
    ("in postgresql+psycopg://ann:p%40ss@db:5432/x; it has: a",
     "in postgresql+psycopg://ann:***@db:5432/x; it has: a"),
    ("postgresql://ann@db/test and sqlite:///results/a.db", None),  # nothing to hide
    ("postgresql://db:5432/test", None),
])
def test_hide_passwords(text, shown):
    assert hide_passwords(text) == (shown or text)


@pytest.mark.parametrize("trains, expected", [
    (True, "lrsweep: interrupted; finished trials are stored — run the same command again to "
           "continue"),
    (False, "lrsweep: interrupted"),
])
def test_ctrl_c_says_to_run_again_only_where_a_command_trains(capsys, trains, expected):
    @cli_errors.handle_errors(trains=trains)
    def command() -> None:
        raise KeyboardInterrupt

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(typer.Exit) as stopped:
            command()
        # What is left is exiting: further signals are ignored (test_edges_signals).
        assert {sig: signal.getsignal(sig) for sig in before} == dict.fromkeys(
            before, signal.SIG_IGN)
    finally:  # this test's process goes on
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert stopped.value.exit_code == 130
    assert capsys.readouterr().err.strip() == expected



def test_a_damaged_store_is_named_in_the_databases_own_words(lrsweep_cli, tmp_path):
    """Pages in the middle of a store overwritten: one line with SQLite's own words, not the
    message Optuna wraps every failed commit in."""
    import os
    import sqlite3

    url = f"sqlite:///{tmp_path / 'store.db'}"
    study = optuna.create_study(study_name="damaged", storage=url)
    for value in range(40):
        trial = study.ask()
        trial.set_user_attr("curve", [value / 7] * 30)
        study.tell(trial, value)
    with sqlite3.connect(tmp_path / "store.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(tmp_path / "store.db", "r+b") as f:
        f.seek(4096 * 5)
        f.write(os.urandom(4096 * 3))
    proc = lrsweep_cli("show", "damaged", "--storage", url)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "database disk image is malformed" in lines[0]
    assert "exceeding max length" not in lines[0]
