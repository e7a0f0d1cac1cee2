"""What the terminal shows, read as text at 80 and 120 columns (no screenshots): tables that fit
without cutting a header, the metric named, a live display that keeps its count and clock, and
suggested commands that paste as they are."""

from __future__ import annotations

import io
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

import lrsweep
from lrsweep import progress, tables
from lrsweep.cli_options import suggest
from lrsweep.report.read import STUDY_COUNTS

REPO = Path(__file__).resolve().parents[1]
JOINT = REPO / "results" / "joint" / "joint.db"  # committed: 40 trials of four parameters
EX1 = REPO / "results" / "ex1-fixed-lr" / "ex1-fixed-lr.db"


def joint_like(n: int = 12) -> pd.DataFrame:
    """A frame shaped as report.read.trials_frame makes it for the joint study: conditional
    parameters, SGLD columns empty in an SGD study, a 30-epoch curve."""
    rows = []
    for i in range(n):
        factor = i % 3 == 1
        rows.append({"trial": i, "state": "diverged (collapsed)" if i == 5 else "complete",
                     "value": 0.8 + i / 1000, "scheduler": "factor" if factor else "constant",
                     "base_lr": 0.1 + i / 97, "warmup_steps": i % 7, "seed": 0,
                     "train_loss": 0.3, "train_acc": 0.88, "val_loss": 0.4,
                     "val_acc": 0.8 + i / 1000, "test_acc": 0.85, "test_nll": 0.41,
                     "test_ece": 0.0293, "avg_test_acc": None, "avg_test_nll": None,
                     "avg_test_ece": None, "val_acc_curve": [0.1 + e / 40 for e in range(30)],
                     "classes": 10, "epochs": 30, "seconds": 28.15,
                     "factor": 0.87 if factor else None, "exponent": None})
    frame = pd.DataFrame(rows)
    frame.attrs["direction"] = "maximize"
    return frame


def render(renderable, width: int) -> list[str]:
    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=False).print(renderable)
    return buffer.getvalue().splitlines()


def header(lines: list[str]) -> list[str]:
    """The header row's names (the row above the rule)."""
    rule = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"})
    return lines[rule - 1].split()


@pytest.mark.parametrize("width", [80, 120])
def test_trials_table_fits_and_names_the_metric(width):
    console = Console(width=width, file=io.StringIO())
    fitted = tables.trials(joint_like(), "joint: top 10", 10, console, metric="val_acc")
    lines = render(fitted.table, width)
    assert max(map(len, lines)) <= width
    names = header(lines)
    # The default: trial, metric, outcome, the parameters that vary; never the seed that does not.
    assert names == ["trial", "state", "val_acc", "scheduler", "base_lr", "warmup_steps",
                     "factor"]
    assert "value" not in names and "…" not in " ".join(lines)
    note = tables.not_shown(fitted, width, dropped_how="pick", hidden_how="--all")
    assert note.startswith("not shown: seed, train_loss") and len(note) <= width
    assert "avg_test_acc" not in note  # empty in every shown trial: nothing to see


@pytest.mark.parametrize("width", [80, 120])
def test_all_columns_drop_whole_columns_never_letters(width):
    console = Console(width=width, file=io.StringIO())
    fitted = tables.trials(joint_like(), "t", 10, console, metric="val_acc", show_all=True)
    lines = render(fitted.table, width)
    assert max(map(len, lines)) <= width
    names = header(lines)
    assert all(len(name) > 2 for name in names) and names[:3] == ["trial", "state", "val_acc"]
    assert fitted.dropped and not set(fitted.dropped) & set(names)
    assert set(names) | set(fitted.dropped) == {
        "trial", "state", "val_acc", "scheduler", "base_lr", "warmup_steps", "seed",
        "train_loss", "train_acc", "val_loss", "test_acc", "test_nll", "test_ece", "epochs",
        "seconds", "factor", "val_acc_curve", "outcome"}
    note = tables.not_shown(fitted, width, dropped_how="pick with --columns", hidden_how="")
    assert note.startswith(f"no room for: {fitted.dropped[0]}") and len(note) <= width


def test_columns_left_out_are_named_where_the_hint_alone_wraps():
    # At 60 columns the command that shows them takes more than a line: cutting names to
    # "1 column" would not keep the line within the width, only hide what was dropped.
    fitted = tables.trials(joint_like(), "t", 10, Console(width=60, file=io.StringIO()),
                           metric="val_acc")
    how = "lrsweep show joint --storage sqlite:///results/joint/joint.db --all"
    note = tables.not_shown(fitted, 60, dropped_how="pick with --columns", hidden_how=how)
    assert fitted.dropped and note.startswith(f"no room for: {', '.join(fitted.dropped)} (")
    assert f"not shown: {', '.join(fitted.hidden)} ({how})" in note


def test_a_study_without_validation_offers_no_validation_columns():
    # chapter.toml: validation = 0, its metric train_loss; every val_acc is missing.
    frame = joint_like().assign(val_acc=None, val_loss=None,
                                val_acc_curve=[[None] * 30] * 12).__finalize__(joint_like())
    fitted = tables.trials(frame, "t", 10, Console(width=250, file=io.StringIO()),
                           metric="train_loss", show_all=True)
    shown = header(render(fitted.table, 250))
    assert not {"val_acc", "val_loss", tables.CURVE} & set(shown + fitted.dropped)
    with pytest.raises(tables.UnknownColumn, match="no column 'bogus' in this table") as info:
        tables.trials(frame, "t", 10, Console(width=250, file=io.StringIO()),
                      metric="train_loss", columns=["bogus"])
    assert "val_" not in str(info.value)  # the list --all shows, not more
    # Asked by name, a column no trial has is refused, not shown as a column of "–".
    with pytest.raises(tables.UnknownColumn, match="no trial of this study has a value of "
                       "'val_acc' \\(its filled columns: trial, state, train_loss, "):
        tables.trials(frame, "t", 10, Console(width=250, file=io.StringIO()),
                      metric="train_loss", columns=["trial", "val_acc"])


def test_wider_terminal_shows_more_columns():
    shown = {w: len(header(render(tables.trials(joint_like(), "t", 10, Console(
        width=w, file=io.StringIO()), metric="val_acc", show_all=True).table, w)))
        for w in (80, 120, 250)}
    assert shown[80] < shown[120] < shown[250] == 18


def test_chosen_columns_in_their_order_and_unknown_ones_named():
    console = Console(width=80, file=io.StringIO())
    fitted = tables.trials(joint_like(), "t", 3, console, metric="val_acc",
                           columns=["test_acc", "value", "trial"])
    assert header(render(fitted.table, 80)) == ["test_acc", "val_acc", "trial"]
    with pytest.raises(tables.UnknownColumn, match="no column 'lr'.*base_lr") as info:
        tables.trials(joint_like(), "t", 3, console, metric="val_acc", columns=["lr"])
    assert "avg_test_acc" not in str(info.value)  # an SGD study's table offers no SGLD column


@pytest.mark.parametrize("width", [80, 120])
def test_studies_table_names_metric_and_keeps_the_date(width):
    zeros = dict.fromkeys(STUDY_COUNTS, 0)
    frame = pd.DataFrame([{**zeros, "study": "ex2-decay-exponent", "complete": 68,
                           "non-finite": 2, "best": 0.90658,
                           "direction": "maximize", "last": "2026-11-29 21:48:07.123"},
                          {**zeros, "study": "loss", "complete": 3, "pruned": 1, "fail": 1,
                           "best": 0.25, "direction": "minimize", "last": None}])
    frame["last"] = pd.to_datetime(frame["last"])  # as read: the study without one is NaT
    console = Console(width=width, file=io.StringIO())
    fitted = tables.studies(frame, "sqlite:///results/lrsweep.db",
                            {"ex2-decay-exponent": "val_acc", "loss": "val_loss"}, console)
    text = render(fitted.table, width)
    assert max(map(len, text)) <= width
    assert "val_acc 0.9066 (max)" in text[3] and "2026-11-29 21:48" in text[3]
    assert "val_loss 0.25 (min)" in text[4] and text[4].rstrip().endswith("–")
    names = header(text)
    # By priority: the counts least asked for go first when there is no room; the outcomes
    # in the reports' order, then the states of trials without one.
    assert names == {80: ["study", "complete", "pruned", "best", "last", "started"],
                     120: ["study", "complete", "non-finite", "pruned", "fail", "best", "last",
                           "started"]}[width]
    assert fitted.dropped == {80: ["non-finite", "fail"], 120: []}[width]
    assert fitted.hidden == ["running", "interrupted", "never learned", "collapsed", "waiting"]


@pytest.mark.parametrize("width", [60, 80, 120])
def test_live_display_keeps_count_and_clock(width):
    view = progress.LiveView()
    view.total, view.done, view.best = 40, 13, 0.8652
    view.started = time.monotonic() - 312
    view.epoch, view.epochs = 3, 30
    view.slots = "trial 7 epoch 9/30, trials 12–19 epoch 3/30"
    view.summary = "val_acc 0.5200–0.5900 (best: trial 19), 8 training (1.5 s)"
    lines = render(view, width)
    assert len(lines) == 2 and max(map(len, lines)) <= width
    assert re.match(r"trials ━+─+ 13/40 0:05:12 best 0\.8652$", lines[0])
    assert re.match(r"epoch  ━+─+ 3/30  trial 7 epoch 9/30", lines[1])
    assert lines[0].index("13/40") == lines[1].index("3/30")  # the bars line up
    if width >= 120:
        assert "epoch 3/30: val_acc 0.5200" in lines[1]


def test_live_display_narrower_than_60_still_counts():
    view = progress.LiveView()
    view.total, view.done = 40, 13
    view.started = time.monotonic() - 5
    lines = render(view, 30)
    assert lines == ["trials 13/40 0:00:05 best –"]
    assert render(view, 14) == ["13/40 0:00:05"]


def test_suggested_commands_carry_the_storage(monkeypatch):
    monkeypatch.delenv("LRSWEEP_STORAGE", raising=False)
    assert suggest(None, "report", "joint") == "lrsweep report joint"
    assert suggest("sqlite:///a b.db", "report", "x") == "lrsweep report x --storage 'sqlite:///a b.db'"
    monkeypatch.setenv("LRSWEEP_STORAGE", "postgresql://u:secret@h/db")  # pastes in this shell
    assert suggest("postgresql://u:secret@h/db", "report", "x") == "lrsweep report x"


@pytest.fixture
def stores(tmp_path):
    """Copies of two committed stores (readers must never touch results/)."""
    if not (JOINT.is_file() and EX1.is_file()):
        pytest.skip("the committed stores are not in this checkout")
    shutil.copy(JOINT, tmp_path / "joint.db")
    shutil.copy(EX1, tmp_path / "ex1.db")
    return {"joint": f"sqlite:///{tmp_path / 'joint.db'}", "ex1": f"sqlite:///{tmp_path / 'ex1.db'}"}


@pytest.mark.parametrize("columns", ["0", "wide"])
def test_a_columns_that_is_no_width_is_read_as_unset(lrsweep_cli, stores, columns):
    # As Python's shutil reads it; rich alone would print every table 0 columns wide.
    listed = lrsweep_cli("ls", "--storage", stores["joint"], env={"COLUMNS": columns})
    assert listed.returncode == 0 and re.search(r"joint +16 +2 +22 ", listed.stdout)
    assert "no report in" in lrsweep_cli("show", "joint", "--storage", stores["joint"],
                                         env={"COLUMNS": columns}).stdout


@pytest.mark.parametrize("width", [80, 120])
def test_show_and_ls_fit_the_terminal(lrsweep_cli, stores, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    shown = lrsweep_cli("show", "joint", "--storage", stores["joint"])
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    # All but the suggested command, one line the terminal wraps (so that it pastes whole).
    assert max(len(line) for line in lines if not line.startswith("no report in")) <= width
    assert header(lines)[:5] == ["trial", "state", "val_acc", "scheduler", "base_lr"]
    assert (f"no report in {Path('results', 'joint')}: lrsweep report joint --storage "
            f"{stores['joint']}") in lines
    listed = lrsweep_cli("ls", "--storage", stores["joint"])
    assert listed.returncode == 0 and max(map(len, listed.stdout.splitlines())) <= width
    # By outcome, as its report counts them: 16 complete, 2 collapsed (told COMPLETE to
    # Optuna), 22 pruned.
    assert re.search(r"joint +16 +2 +22 +val_acc 0\.8652 \(max\) +2026-11-21 15:17 ", listed.stdout)
    assert header(listed.stdout.splitlines())[:4] == ["study", "complete", "collapsed", "pruned"]


def test_unknown_column_is_one_line_exit_2(lrsweep_cli, stores):
    proc = lrsweep_cli("show", "joint", "--storage", stores["joint"], "--columns", "trial,lr")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert "no column 'lr'" in proc.stderr and "base_lr" in proc.stderr
    twice = lrsweep_cli("show", "joint", "--storage", stores["joint"], "--columns",
                        "val_acc,seed,val_acc")
    assert twice.returncode == 2 and twice.stderr.strip().splitlines() == [
        "lrsweep: error: --columns 'val_acc,seed,val_acc': val_acc named twice"]
    # `value` is the metric's other name: one column, not two, and not one silently.
    alias = lrsweep_cli("show", "joint", "--storage", stores["joint"], "--columns",
                        "value,val_acc")
    assert alias.returncode == 2 and alias.stderr.strip().splitlines() == [
        "lrsweep: error: --columns: val_acc named twice (`value` is the metric, val_acc)"]
    # A name left out between commas is a slip, as in --packs.
    gap = lrsweep_cli("show", "joint", "--storage", stores["joint"], "--columns", "trial,,value")
    assert gap.returncode == 2 and "--columns 'trial,,value': name columns separated by " \
        "commas" in gap.stderr
    both = lrsweep_cli("show", "joint", "--storage", stores["joint"], "--all", "--columns", "seed")
    assert both.returncode == 2 and both.stderr.startswith("lrsweep: error: --all and --columns")


def test_rerun_suggests_commands_that_paste(lrsweep_cli, stores, tmp_path):
    proc = lrsweep_cli("rerun", "ex1-fixed-lr", "--storage", stores["ex1"], "--out", "best.toml")
    assert proc.returncode == 0, proc.stderr
    assert f"`lrsweep run best.toml --storage {stores['ex1']}`" in proc.stdout
    assert f"`lrsweep report ex1-fixed-lr-best --storage {stores['ex1']}`" in proc.stdout


def test_help_shows_defaults_and_flags_as_flags(lrsweep_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    text = lrsweep_cli("run", "--help").stdout
    assert "[default: sqlite:///results/lrsweep.db]" in text
    assert "[default: 4 on a CPU, from free memory on a GPU]" in text
    assert "<bool>" not in text and re.search(r"--allow-changed +Continue", text)
    bench = lrsweep_cli("bench", "--help").stdout
    assert "[default: all on a GPU, 10000 on a CPU]" in bench and "<bool>" not in bench
    top = lrsweep_cli("--help").stdout
    assert "<bool>" not in top and re.search(r"--help +Show this message", top)
    assert re.search(r"--version +Print lrsweep's version", top)
    # Each command's summary is one line of the list (a docstring's line break is kept).
    listed = [line for line in top[top.index("Commands"):].splitlines() if line[:1] == "│"]
    assert all(re.match(r"│ [a-z]+ ", line) for line in listed), listed


def test_version_is_printed_alone(lrsweep_cli):
    proc = lrsweep_cli("--version")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout == f"lrsweep {lrsweep.__version__}\n"


def test_plain_lrsweep_prints_its_help_once_and_exits_2(lrsweep_cli):
    proc = lrsweep_cli()
    assert proc.returncode == 2 and proc.stderr == ""
    assert proc.stdout.count("Usage: lrsweep") == 1 and "Commands" in proc.stdout


def test_export_from_a_store_without_its_artifacts(lrsweep_cli, stores, tmp_path):
    """The committed stores travel without their weights: one line, exit 2, no folder."""
    proc = lrsweep_cli("export", "ex1-fixed-lr", "--storage", stores["ex1"], "--trial", "0")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "artifact" in proc.stderr.lower() and "ArtifactNotFound" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_a_trial_that_never_learned_shows_its_outcome():
    # "complete" says nothing of a trial that ended at chance: the outcome column appears
    # when some trial never learned (derived from its last train accuracy in older stores).
    frame = joint_like()
    frame.loc[3, "train_acc"] = 0.1
    fitted = tables.trials(frame, "joint: top 12", 12, Console(width=120, file=io.StringIO()),
                           metric="val_acc")
    lines = render(fitted.table, 120)
    assert "outcome" in header(lines)
    assert any("never learned" in line for line in lines)
    plain = tables.trials(joint_like(), "joint: top 12", 12,
                          Console(width=120, file=io.StringIO()), metric="val_acc")
    assert "outcome" not in header(render(plain.table, 120))
