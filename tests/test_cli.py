"""The study end to end through the `lrsweep` command on a tiny subset: what the store holds,
continuing to the total, resume, Ctrl-C, a changed study file, and plain Optuna reading it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import TEST_IMAGES, study_toml
from lrsweep.store.records import trial_curves

CURVES = ("lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_acc", "epoch_seconds")


def storage_url(tmp_path):
    return f"sqlite:///{tmp_path / 'store.db'}"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path, name):
    return optuna.load_study(study_name=name, storage=storage_url(tmp_path))


def states(study):
    return [t.state for t in study.get_trials(deepcopy=False)]


def test_run_stores_what_design_section_4_lists(lrsweep_cli, tmp_path):
    path = write(tmp_path, "s.toml", study_toml("e2e"))
    proc = lrsweep_cli("run", str(path), "--storage", storage_url(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "study e2e: 2/2 trials finished (2 in this run" in proc.stdout
    assert "best" in proc.stdout and "cosine" in proc.stdout  # the summary table
    # The finished store is one file: its write-ahead log folded in (copy it alone, lose
    # nothing), the -wal and -shm gone, and a reader leaves it so.
    assert list(tmp_path.glob("*.db")) and not list(tmp_path.glob("*.db-*"))
    assert lrsweep_cli("ls", "--storage", storage_url(tmp_path)).returncode == 0
    assert not list(tmp_path.glob("*.db-*"))
    study = load(tmp_path, "e2e")
    assert study.user_attrs["study_file"] == path.read_text()
    assert len(study.user_attrs["study_file_sha256"]) == 64
    assert set(study.user_attrs["versions"]) >= {"lrsweep", "torch", "optuna"}
    assert "git_commit" in study.user_attrs
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert sorted(t.params["scheduler"] for t in trials) == ["constant", "cosine"]
    for t in trials:
        assert set(t.params) == {"scheduler"}  # fixed values are not suggested
        for key in CURVES:
            assert len(trial_curves(t)[key]) == 2, key
        assert t.user_attrs["seed"] == 0 and t.user_attrs["diverged"] is None
        assert t.user_attrs["pack_size"] == 2 and t.user_attrs["device"].startswith("cpu")
        assert t.value == trial_curves(t)["val_acc"][-1]
        assert [t.intermediate_values[e] for e in range(2)] == trial_curves(t)["val_acc"]
    cosine = next(t for t in trials if t.params["scheduler"] == "cosine")
    assert trial_curves(cosine)["lr"] == pytest.approx([0.1, 0.05])  # max_update = epochs = 2
    assert "\nstudy e2e: 0/2" not in proc.stderr  # progress went to stderr, from 0
    assert "trials 0–1 epoch 2/2" in proc.stderr  # one pack of two


def test_rerun_adds_nothing_and_a_higher_total_continues(lrsweep_cli, tmp_path):
    path = write(tmp_path, "s.toml", study_toml("again", sampler="random", trials=2,
                                                scheduler='["constant", "sqrt"]'))
    url = storage_url(tmp_path)
    assert lrsweep_cli("run", str(path), "--storage", url).returncode == 0
    second = lrsweep_cli("run", str(path), "--storage", url)
    assert second.returncode == 0 and "2/2 trials finished (0 in this run" in second.stdout
    assert len(load(tmp_path, "again").trials) == 2
    path.write_text(path.read_text().replace("trials = 2", "trials = 3"))  # not a new study
    third = lrsweep_cli("run", str(path), "--storage", url)
    assert third.returncode == 0, third.stderr
    assert states(load(tmp_path, "again")) == [TrialState.COMPLETE] * 3
    path.write_text(path.read_text().replace("trials = 3", "trials = 1"))  # lower: kept
    fourth = lrsweep_cli("run", str(path), "--storage", url)
    assert fourth.returncode == 0 and "3/1 trials finished (0 in this run" in fourth.stdout
    assert "already has 3 finished trials, more than the 1" in fourth.stdout
    assert "again: top 3 of 3 trials (1 asked for), best first" in fourth.stdout
    shown = lrsweep_cli("show", "again", "--storage", url)  # the total of the file stored last
    assert shown.returncode == 0 and "top 3 of 3 trials (1 asked for)" in shown.stdout
    assert states(load(tmp_path, "again")) == [TrialState.COMPLETE] * 3


def test_changed_study_file_is_refused_then_allowed(lrsweep_cli, tmp_path):
    path = write(tmp_path, "s.toml", study_toml("changed", sampler="random", trials=1))
    url = storage_url(tmp_path)
    assert lrsweep_cli("run", str(path), "--storage", url).returncode == 0
    original = path.read_text()
    path.write_text(original.replace("epochs = 2", "epochs = 3").replace("trials = 1", "trials = 2"))
    refused = lrsweep_cli("run", str(path), "--storage", url)
    assert refused.returncode == 2
    assert "[train] epochs: 2 → 3" in refused.stderr and "--allow-changed" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    study = load(tmp_path, "changed")
    assert len(study.trials) == 1 and study.user_attrs["study_file"] == original
    allowed = lrsweep_cli("run", str(path), "--storage", url, "--allow-changed")
    assert allowed.returncode == 0, allowed.stderr
    study = load(tmp_path, "changed")
    assert len(study.trials) == 2 and study.user_attrs["study_file_previous"] == original
    assert len(trial_curves(study.trials[-1])["lr"]) == 3


def test_set_overrides_are_stored_and_resume_keeps_them(lrsweep_cli, tmp_path):
    path = write(tmp_path, "s.toml", study_toml("base", scheduler='"constant"', trials=1,
                                                sampler="random"))
    url = storage_url(tmp_path)
    proc = lrsweep_cli("run", str(path), "--storage", url, "--set", "study.name=small",
                       "--set", "train.epochs=1", "--set", "study.trials=2")
    assert proc.returncode == 0, proc.stderr
    study = load(tmp_path, "small")
    assert study.user_attrs["study_overrides"] == ["study.name=small", "train.epochs=1",
                                                   "study.trials=2"]
    assert [len(trial_curves(t)["lr"]) for t in study.trials] == [1, 1]
    resumed = lrsweep_cli("resume", "small", "--storage", url)
    assert resumed.returncode == 0 and "2/2 trials finished (0 in this run" in resumed.stdout
    # The same file with other overrides is a changed study: refused, store untouched.
    refused = lrsweep_cli("run", str(path), "--storage", url, "--set", "study.name=small",
                          "--set", "study.trials=2")
    assert refused.returncode == 2 and "[train] epochs: 1 → 2" in refused.stderr
    report = lrsweep_cli("report", "small", "--storage", url)
    assert report.returncode == 0, report.stderr
    markdown = (tmp_path / "results" / "small" / "report.md").read_text()
    assert "--set study.name=small --set train.epochs=1 --set study.trials=2" in markdown


def test_plain_optuna_and_its_command_read_the_study(lrsweep_cli, tmp_path):
    path = write(tmp_path, "s.toml", study_toml("plain", scheduler='"poly"', extra="exponent = [1.0, 2.0]"))
    url = storage_url(tmp_path)
    assert lrsweep_cli("run", str(path), "--storage", url).returncode == 0
    study = optuna.load_study(study_name="plain", storage=url)
    assert sorted(t.params["exponent"] for t in study.trials) == [1.0, 2.0]
    assert study.best_trial.value == max(t.value for t in study.trials)
    optuna_cli = Path(sys.executable).parent / "optuna"  # the environment running the tests
    listed = subprocess.run([str(optuna_cli), "trials", "--study-name", "plain", "--storage", url,
                             "-f", "json"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 2 and {r["state"] for r in rows} == {"COMPLETE"}


def test_ls_and_show_describe_the_store(lrsweep_cli, tmp_path):
    path = write(tmp_path, "s.toml", study_toml("listed"))
    url = storage_url(tmp_path)
    assert lrsweep_cli("run", str(path), "--storage", url).returncode == 0
    listed = lrsweep_cli("ls", "--storage", url)
    assert listed.returncode == 0 and "listed" in listed.stdout and "(max)" in listed.stdout
    shown = lrsweep_cli("show", "listed", "--storage", url, "--top", "1")
    assert shown.returncode == 0 and "top 1 of 2 trials, best first" in shown.stdout
    assert "avg_test" not in shown.stdout  # SGLD's columns, empty in an SGD study: not shown
    assert f"no report in {Path('results', 'listed')}: lrsweep report listed" in shown.stdout



def test_ls_tells_trials_a_worker_holds_from_those_interrupted(lrsweep_cli, tmp_path):
    from lrsweep.store import leases
    path = write(tmp_path, "s.toml", study_toml("held"))
    url = storage_url(tmp_path)
    assert lrsweep_cli("run", str(path), "--storage", url).returncode == 0
    study = load(tmp_path, "held")
    ids = [study.ask()._trial_id for _ in range(3)]
    leases.record_heartbeats(study, ids)       # one worker trains all three...
    leases.release_trials(study, ids[1:])      # ...and hands two back (Ctrl-C)
    listed = lrsweep_cli("ls", "--storage", url, env={"COLUMNS": "200"})
    assert listed.returncode == 0, listed.stderr
    head, row = (line.replace("never learned", "never_learned").split()
                 for line in listed.stdout.splitlines()[1:4:2])
    counts = dict(zip(head, row))
    assert (counts["running"], counts["interrupted"]) == ("1", "2")
    # Its two told trials ended at chance (2 epochs of 400 images): counted as the report
    # counts them, not as Optuna's COMPLETE.
    assert (counts["never_learned"], "complete" in counts) == ("2", False)
    hint = f"held: 2 interrupted trials continue with lrsweep resume held --storage {url}"
    assert hint in listed.stdout
    # show marks them and says the same; so does the report (test_report)
    shown = lrsweep_cli("show", "held", "--storage", url, env={"COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    rows = [line.split() for line in shown.stdout.splitlines()]
    assert sorted(row[1] for row in rows if row and row[0] in "2 3 4".split()) == [
        "interrupted", "interrupted", "running"]
    assert hint in shown.stdout
    # Their curves are stored when they end: no epochs, and no seconds, are claimed for them
    # (they said 0); their outcome is their state, as in a report, whatever else the study
    # holds (it had been "–" beside finished trials).
    epochs = lrsweep_cli("show", "held", "--storage", url, "--columns",
                         "trial,state,epochs,seconds,outcome", env={"COLUMNS": "200"})
    cells = {row[0]: row[2:] for row in map(str.split, epochs.stdout.splitlines())
             if row and row[0].isdigit()}
    assert {n: cells[n] for n in "234"} == {"2": ["–", "–", "running"],
                                            "3": ["–", "–", "interrupted"],
                                            "4": ["–", "–", "interrupted"]}, epochs.stdout
    assert cells["0"][0] == "2" and cells["0"][2:] == ["never", "learned"]


# Each bad study file: (what replaces a line of a valid file, the one line expected).
BAD_FILES = {
    "malformed": (("[study]", "[study"), "bad.toml: invalid TOML: "),
    "unknown-key": (("[train]", "[train]\nepoch = 3"), "[train] unknown key 'epoch'; did you mean 'epochs'?"),
    "scheduler": (('scheduler = "constant"', 'scheduler = "cosin"'), 'unknown schedule "cosin"; did you mean "cosine"?'),
    "rate-zero": (("base_lr = 0.1", "base_lr = 0"), "[space] base_lr: must be a number > 0, got 0"),
    "rate-text": (("base_lr = 0.1", 'base_lr = "fast"'), '[space] base_lr: must be a number > 0, got "fast"'),
    "inverted": (("base_lr = 0.1", "base_lr = { low = 1.0, high = 0.1 }"), "[space] base_lr: low (1.0) must be below high (0.1)"),
    "empty-list": (("base_lr = 0.1", "base_lr = []"), "[space] base_lr: an empty list"),
    "warmup": (("base_lr = 0.1", "base_lr = 0.1\nwarmup_steps = 2"), "[space] warmup_steps: 2 must be below the trial's 2 epochs"),
    "exponent": (("base_lr = 0.1", "base_lr = 0.1\nexponent = 1.0"), "[space] exponent: none of the schedulers (constant) takes it"),
}


@pytest.mark.parametrize("args, message", [
    (("run", "missing.toml"), "missing.toml: no such study file"),
    (("resume", "nobody"), "no study named 'nobody'"),
    (("show", "nobody"), "no study named 'nobody'"),
    (("export", "nobody", "--trial", "0"), "no study named 'nobody'"),
    (("run", "good.toml", "--device", "cuda:7"), "device 'cuda:7'"),
    (("run", "good.toml", "--pack", "0"), "--pack"),
    (("run", "good.toml", "--set", "train.epochs=0"), "[train] epochs: must be a whole number"),
    (("run", "good.toml", "--set", "tran.epochs=3"), "did you mean 'train'?"),
    (("report", "other", "--out", "good.toml"), "--out good.toml: a file is there"),
] + [(("run", "bad.toml", key), message) for key, (_, message) in BAD_FILES.items()],
    ids=lambda v: v[-1] if isinstance(v, tuple) else None)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(lrsweep_cli, tmp_path, args, message):
    url = storage_url(tmp_path)
    optuna.create_study(study_name="other", storage=url)  # so the store exists for resume/show
    before = (tmp_path / "store.db").read_bytes()
    good = study_toml("bad", scheduler='"constant"')
    write(tmp_path, "good.toml", good)
    if args[1] == "bad.toml":
        (old, new), _ = BAD_FILES[args[2]]
        assert old in good
        write(tmp_path, "bad.toml", good.replace(old, new, 1))
        args = args[:2]
    proc = lrsweep_cli(*args, "--storage", url)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert optuna.study.get_all_study_names(url) == ["other"]
    assert not (tmp_path / "results").exists()
    assert (tmp_path / "store.db").read_bytes() == before


@pytest.mark.parametrize("command", ["run", "bench"])
@pytest.mark.parametrize("name, value, message", [
    ("LRSWEEP_CONVOLUTIONS", "gemm",
     "LRSWEEP_CONVOLUTIONS='gemm' is not a formulation of the convolutions; use grouped or "
     "patches"),
    ("LRSWEEP_CUDA_GRAPHS", "false",
     "LRSWEEP_CUDA_GRAPHS='false' is not an on/off setting; use 1 (on) or 0 (off)"),
    ("LRSWEEP_KEEP_HOST_MEMORY", "no",
     "LRSWEEP_KEEP_HOST_MEMORY='no' is not an on/off setting; use 1 (on) or 0 (off)"),
])
def test_a_bad_engine_setting_in_the_environment_is_one_line_exit_2_and_writes_nothing(
        lrsweep_cli, tmp_path, monkeypatch, command, name, value, message):
    url = storage_url(tmp_path)
    optuna.create_study(study_name="other", storage=url)
    before = (tmp_path / "store.db").read_bytes()
    write(tmp_path, "good.toml", study_toml("settings"))
    monkeypatch.setenv(name, value)
    args = (("run", "good.toml", "--storage", url) if command == "run" else
            ("bench", "--packs", "1", "--no-chapter", "--out", "bench.json"))
    proc = lrsweep_cli(*args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"lrsweep: error: {message}"]
    assert optuna.study.get_all_study_names(url) == ["other"]
    assert (tmp_path / "store.db").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.toml", "store.db"]


def test_a_changed_study_file_leaves_the_store_byte_for_byte(lrsweep_cli, tmp_path):
    path = write(tmp_path, "s.toml", study_toml("frozen", sampler="random", trials=1))
    url = storage_url(tmp_path)
    assert lrsweep_cli("run", str(path), "--storage", url).returncode == 0
    with sqlite3.connect(tmp_path / "store.db") as conn:  # fold the WAL into the file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = (tmp_path / "store.db").read_bytes()
    path.write_text(path.read_text().replace("epochs = 2", "epochs = 3"))
    proc = lrsweep_cli("run", str(path), "--storage", url)
    assert proc.returncode == 2 and "[train] epochs: 2 → 3" in proc.stderr
    assert (tmp_path / "store.db").read_bytes() == before


@pytest.mark.parametrize("storage, message", [
    ("nosuchdb://x", "cannot be opened"),
    ("sqlite:///{tmp}/a-file/store.db", "cannot open"),
])
def test_a_store_that_cannot_be_opened_is_exit_2(lrsweep_cli, tmp_path, storage, message):
    (tmp_path / "a-file").write_text("not a folder")
    path = write(tmp_path, "s.toml", study_toml("nostore"))
    proc = lrsweep_cli("run", str(path), "--storage", storage.format(tmp=tmp_path))
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_corrupt_dataset_is_exit_2_naming_the_file(lrsweep_cli, tmp_path, fashion_dir):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(fashion_dir, broken)
    labels = broken / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:40])
    path = write(tmp_path, "s.toml", study_toml("corrupt"))
    proc = lrsweep_cli("run", str(path), "--data-dir", str(broken),
                       "--storage", storage_url(tmp_path))
    assert proc.returncode == 2 and "t10k-labels-idx1-ubyte.gz" in proc.stderr
    assert "truncated or corrupt" in proc.stderr
    assert not (tmp_path / "store.db").exists()


@pytest.mark.parametrize("given", ["--data-dir", "LRSWEEP_DATA"])
def test_missing_dataset_is_exit_2_before_the_store_is_touched(lrsweep_cli, tmp_path, given):
    path = write(tmp_path, "s.toml", study_toml("nodata"))
    empty = tmp_path / "empty"
    args = ["--data-dir", str(empty)] if given == "--data-dir" else []
    proc = lrsweep_cli("run", str(path), *args, "--storage", storage_url(tmp_path),
                       env=None if args else {"LRSWEEP_DATA": str(empty)})
    assert proc.returncode == 2, proc.stderr
    assert f"{given}={empty} holds no Fashion-MNIST" in proc.stderr  # the setting the user gave
    assert not (tmp_path / "store.db").exists()


def test_schedules_command_writes_a_png(lrsweep_cli, tmp_path):
    proc = lrsweep_cli("schedules", "--out", "shapes.png")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "shapes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_export_writes_weights_for_the_plain_lenet_and_the_curves(lrsweep_cli, tmp_path,
                                                                   fashion_dir):
    import torch

    from lrsweep.train import data
    from lrsweep.train.model import lenet

    path = write(tmp_path, "s.toml", study_toml("exported"))
    url = storage_url(tmp_path)
    assert lrsweep_cli("run", str(path), "--storage", url).returncode == 0
    proc = lrsweep_cli("export", "exported", "--storage", url, "--trial", "1", "--out", "w.pt",
                       "--csv", "curves.csv")
    assert proc.returncode == 0, proc.stderr
    net = lenet()
    net.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    test = data.load("cpu", data_dir=fashion_dir, validation=200, subset=400,
                     test_subset=TEST_IMAGES)
    with torch.no_grad():
        acc = (net(test.test_x).argmax(1) == test.test_y).float().mean().item()
    trial = load(tmp_path, "exported").trials[1]
    assert acc == pytest.approx(trial_curves(trial)["test_acc"][-1], abs=1e-6)
    lines = (tmp_path / "curves.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 2 and lines[0].startswith("trial,state,value")
    missing = lrsweep_cli("export", "exported", "--storage", url, "--trial", "9")
    assert missing.returncode == 2 and "no trial 9" in missing.stderr
