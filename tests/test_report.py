"""Reports from the store: a synthetic study with known values (the intervals and the answer
come out as computed by hand), and a small real study through the command line."""

from __future__ import annotations

import csv
import doctest
import math
import re
import shlex
import shutil
import subprocess
import statistics
import sys

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from conftest import REPO, study_toml
from lrsweep.report import read, render, stats
from lrsweep.search import surplus
from lrsweep.store.storage import StorageError

T_975 = {2: 4.302652729911275, 3: 3.182446305284263}  # Student t quantiles, by degrees of freedom
COSINE = [0.80, 0.82, 0.84]
CONSTANT = [0.70, 0.75, 0.65, 0.10]  # the last seed diverged at chance level


def add(study, scheduler, seed, val_acc, state=TrialState.COMPLETE, diverged=None):
    curve = [val_acc / 2, val_acc]
    study.add_trial(create_trial(
        state=state, value=val_acc if state == TrialState.COMPLETE else None,
        params={"scheduler": scheduler, "seed": seed},
        distributions={"scheduler": CategoricalDistribution(["constant", "cosine"]),
                       "seed": CategoricalDistribution([0, 1, 2, 3])},
        user_attrs={"lr": [0.3, 0.2], "train_loss": [2.0, 1.0], "train_acc": [0.5, 0.7],
                    "val_loss": [1.5, 1.2], "val_acc": curve, "test_acc": curve,
                    "epoch_seconds": [1.0, 1.0], "seed": seed, "diverged": diverged,
                    "pack_size": 1, "device": "cpu (test)"},
        intermediate_values={0: curve[0], 1: curve[1]} if state == TrialState.COMPLETE else {}))


@pytest.fixture
def synthetic(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="synthetic", storage=url, direction="maximize")
    study.set_user_attr("study_file", study_toml("synthetic", sampler="random", trials=12,
                                                 scheduler='["constant", "cosine"]',
                                                 seed="[0, 1, 2, 3]"))
    for seed, value in enumerate(COSINE):
        add(study, "cosine", seed, value)
    for seed, value in enumerate(CONSTANT):
        add(study, "constant", seed, value, diverged="nonfinite" if value < 0.2 else None)
    add(study, "cosine", 3, 0.5, state=TrialState.PRUNED)
    add(study, "constant", 0, 0.5, state=TrialState.FAIL)
    return url


def t_interval(values):
    return statistics.fmean(values), T_975[len(values) - 1] * statistics.stdev(values) / math.sqrt(len(values))


def test_intervals_are_student_t_over_seeds_with_diverged_seeds_counted(synthetic, tmp_path):
    written = render.write_report("synthetic", synthetic, tmp_path / "out")
    configs = {row["config"]: row for row in
               csv.DictReader((written.folder / "configs.csv").open())}
    for label, values in (("scheduler=cosine", COSINE), ("scheduler=constant", CONSTANT)):
        mean, ci = t_interval(values)
        assert float(configs[label]["val_acc_mean"]) == pytest.approx(mean, abs=1e-6)
        assert float(configs[label]["val_acc_ci"]) == pytest.approx(ci, abs=1e-6)
    assert configs["scheduler=constant"]["nonfinite"] == "1"
    assert configs["scheduler=constant"]["failed"] == "1"
    assert configs["scheduler=constant"]["seeds"] == "4"  # the pruned and failed are not in
    # The pruned cosine seed is counted where it belongs, and said to be out of the interval.
    assert (configs["scheduler=cosine"]["pruned"], configs["scheduler=constant"]["pruned"]) == (
        "1", "0")
    text = written.markdown.read_text()
    assert ("1 pruned trial(s) of these configurations did not finish: counted in the table's "
            "pruned column, not in its intervals.") in text


def test_answer_and_status_are_computed_from_the_trials(synthetic, tmp_path):
    text = render.write_report("synthetic", synthetic, tmp_path / "out").markdown.read_text()
    mean, ci = t_interval(COSINE)
    assert f"**scheduler=cosine** — val_acc {mean:.4f} ± {ci:.4f}" in text
    other_mean, other_ci = t_interval(CONSTANT)
    # an accuracy's interval that runs past 1 is cut there and shown by its ends
    assert other_mean + other_ci > 1
    assert (f"Runner-up: scheduler=constant with {other_mean:.4f} "
            f"[{other_mean - other_ci:.4f}, 1.0000]") in text
    # the same seeds: compared seed by seed (constant − cosine per seed, its t interval)
    diffs = [c - k for c, k in zip(CONSTANT, COSINE)]
    d_mean, d_ci = t_interval(diffs)
    assert f"paired by seed, Δ val_acc {d_mean:+.3f} ± {d_ci:.3f} (n = {len(diffs)})" in text
    assert "1 of 9 trials failed (1 non-finite)" in text
    assert "incomplete: 8 of 12 trials finished" in text  # 6 complete + 1 diverged + 1 pruned


def test_the_status_tells_running_trials_from_interrupted_ones(synthetic, tmp_path):
    from lrsweep.store import leases
    study = optuna.load_study(study_name="synthetic", storage=synthetic)
    ids = [study.ask()._trial_id for _ in range(3)]
    leases.record_heartbeats(study, ids)
    leases.release_trials(study, ids[:2])  # Ctrl-C handed two back; a worker trains the third
    text = render.write_report("synthetic", synthetic, tmp_path / "out").markdown.read_text()
    assert (f"incomplete: 8 of 12 trials finished** (1 running, 2 interrupted; `lrsweep "
            f"resume synthetic --storage {synthetic}` continues it)") in text
    assert "fail 1, interrupted 2, running 1." in text  # outcomes, named alike


def test_trials_a_racing_worker_asked_beyond_the_total_are_no_trials_of_the_study(synthetic,
                                                                                  tmp_path):
    # Failed at once and never trained (search.surplus): no table or report counts them.
    study = optuna.load_study(study_name="synthetic", storage=synthetic)
    surplus.within_total(study, [study.ask(), study.ask()], total=1)
    assert sum(t.state == TrialState.FAIL for t in study.trials) == 3
    text = render.write_report("synthetic", synthetic, tmp_path / "out").markdown.read_text()
    assert "1 of 9 trials failed (1 non-finite)" in text
    assert "fail 1" in text and "fail 3" not in text
    assert len(read.trials_frame("synthetic", synthetic)) == 9
    assert read.curves_frame("synthetic", synthetic)["trial"].max() == 8
    listed = read.studies_frame(synthetic).iloc[0]
    # Counted as the report counts them: the non-finite trial Optuna holds as COMPLETE is no
    # complete trial; the surplus trials are no trials.
    assert {k: listed[k] for k in ("complete", "non-finite", "pruned", "fail")} == {
        "complete": 6, "non-finite": 1, "pruned": 1, "fail": 1}


def test_ls_counts_trials_by_the_outcome_the_report_gives_them(synthetic, tmp_path):
    # A trial Optuna holds as COMPLETE that ended at chance, without a recorded outcome (a
    # store from before outcomes were kept): `ls` and the report both say "never learned".
    study = optuna.load_study(study_name="synthetic", storage=synthetic)
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, value=0.1, params={"scheduler": "cosine", "seed": 3},
        distributions={"scheduler": CategoricalDistribution(["constant", "cosine"]),
                       "seed": CategoricalDistribution([0, 1, 2, 3])},
        user_attrs={"lr": [0.3, 0.2], "train_acc": [0.1, 0.1], "val_acc": [0.1, 0.1],
                    "seed": 3, "pack_size": 1}))
    listed = read.studies_frame(synthetic).iloc[0]
    assert (listed["complete"], listed["never learned"], listed["non-finite"]) == (6, 1, 1)
    text = render.write_report("synthetic", synthetic, tmp_path / "out").markdown.read_text()
    assert "complete 6, never learned 1, non-finite 1, pruned 1, fail 1" in text


def test_a_collapse_stored_before_the_loss_bound_counts_as_the_engine_now_judges_it(
        synthetic, tmp_path):
    # Stores trained before the loss bound called a trial "collapsed" once its accuracy fell,
    # though its train loss had blown up past 100× guessing's (2.3 for 10 classes): today's
    # engine calls it non-finite, and so must ls, show and the report. A collapse whose loss
    # stayed in range stays a collapse.
    study = optuna.load_study(study_name="synthetic", storage=synthetic)
    for seed, loss in ((2, 121734.0), (3, 2.31)):
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=0.1, params={"scheduler": "cosine", "seed": seed},
            distributions={"scheduler": CategoricalDistribution(["constant", "cosine"]),
                           "seed": CategoricalDistribution([0, 1, 2, 3])},
            user_attrs={"lr": [0.3, 0.2], "train_acc": [0.8, 0.1], "val_acc": [0.8, 0.1],
                        "train_loss": [0.5, loss], "test_nll": [0.5, 2.3], "seed": seed,
                        "diverged": "collapsed", "pack_size": 1}))
    listed = read.studies_frame(synthetic).iloc[0]
    assert (listed["collapsed"], listed["non-finite"]) == (1, 2)
    frame = read.trials_frame("synthetic", synthetic)
    assert list(frame["state"].tail(2)) == ["diverged (nonfinite)", "diverged (collapsed)"]
    curves = read.curves_frame("synthetic", synthetic).groupby("trial").last().tail(2)
    assert list(curves["state"]) == list(frame["state"].tail(2))  # as export --csv writes it
    assert list(curves["diverged"]) == ["nonfinite", "collapsed"]
    text = render.write_report("synthetic", synthetic, tmp_path / "out").markdown.read_text()
    assert "complete 6, collapsed 1, non-finite 2, pruned 1, fail 1" in text


def test_a_repeated_configuration_and_seed_counts_once(synthetic, tmp_path):
    # Workers that drew alike trained (cosine, seed 0) again: the same numbers, no new seed.
    study = optuna.load_study(study_name="synthetic", storage=synthetic)
    add(study, "cosine", 0, COSINE[0])
    written = render.write_report("synthetic", synthetic, tmp_path / "out")
    configs = {row["config"]: row for row in
               csv.DictReader((written.folder / "configs.csv").open())}
    mean, ci = t_interval(COSINE)
    cosine = configs["scheduler=cosine"]
    assert (cosine["seeds"], cosine["val_acc_n"]) == (str(len(COSINE)), str(len(COSINE)))
    assert float(cosine["val_acc_ci"]) == pytest.approx(ci, abs=1e-6)
    text = written.markdown.read_text()
    repeat = len(COSINE) + len(CONSTANT) + 2  # after the pruned and the failed trial
    assert (f"fail 1 (#{repeat} repeats the configuration, seed and epochs of an earlier "
            "trial: intervals, tests and figures count each once)." in text)
    assert len(list(csv.DictReader((written.folder / "trials.csv").open()))) == repeat + 1


def test_the_answer_says_when_the_best_configurations_seeds_failed(synthetic, tmp_path):
    # A tiny study can rank first a configuration a seed of which never learned (by the value
    # it reached): the answer says so beside its interval.
    study = optuna.load_study(study_name="synthetic", storage=synthetic)
    recorded = study.trials[0]
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, value=0.95, params={**recorded.params, "seed": 3},
        distributions=recorded.distributions, intermediate_values={0: 0.9, 1: 0.95},
        user_attrs={**recorded.user_attrs, "seed": 3, "outcome": "never learned"}))
    text = render.write_report("synthetic", synthetic, tmp_path / "out").markdown.read_text()
    assert ("**scheduler=cosine** — val_acc" in text
            and "over 4 seed(s), of which 1 never learned: it ranks by the values they reached."
            in text)


def test_one_seed_trained_twice_is_still_one_seed(tmp_path):
    # Two configurations, each trained twice on seed 0: n = 2 with a zero-width interval made
    # the answer say their intervals did not overlap.
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    study = optuna.create_study(study_name="twice", storage=url, direction="maximize")
    study.set_user_attr("study_file", study_toml("twice", sampler="random", trials=4,
                                                 scheduler='["constant", "cosine"]'))
    for scheduler, value in (("cosine", 0.8), ("constant", 0.6)) * 2:
        add(study, scheduler, 0, value)
    text = render.write_report("twice", url, tmp_path / "out").markdown.read_text()
    assert "one seed each: no interval, so no ranking can be trusted" in text
    assert "do not overlap" not in text and "#2, #3 repeat the configuration" in text
    from lrsweep.report.rerun import best_study_file
    assert "val_acc 0.6000 over 1 trial(s)" in best_study_file("twice", url)  # not 2


def test_csv_tables_keep_whole_numbers_whole_beside_a_trial_that_recorded_none(synthetic,
                                                                              tmp_path,
                                                                              lrsweep_cli):
    # Trials without a parameter count (crashed before it was recorded, or stored before it
    # was kept) leave the column floats in pandas: it is written as whole numbers, their cells
    # empty.
    study = optuna.load_study(study_name="synthetic", storage=synthetic)
    recorded = study.trials[0]  # as trials have recorded it since 2026-11-29
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, value=recorded.value, params=recorded.params,
        distributions=recorded.distributions, intermediate_values=recorded.intermediate_values,
        user_attrs={**recorded.user_attrs, "parameters": 61706, "pack_trials": [4, 4]}))
    written = render.write_report("synthetic", synthetic, tmp_path / "out")
    rows = list(csv.DictReader((written.folder / "trials.csv").open()))
    assert {row["param_count"] for row in rows} == {"61706", ""}
    assert all(row["seed"] in {"0", "1", "2", "3"} for row in rows)
    curves = list(csv.DictReader((written.folder / "curves.csv").open()))
    assert all("." not in row["seed"] + row["pack_trials"] for row in curves)
    assert {row["pack_trials"] for row in curves} == {"4", ""}
    # `export --csv` writes the same curves the same way (it wrote pack_trials as "4.0").
    assert lrsweep_cli("export", "synthetic", "--storage", synthetic, "--csv",
                       "exported.csv").returncode == 0
    assert (tmp_path / "exported.csv").read_text() == (written.folder / "curves.csv").read_text()


def test_a_total_lowered_below_the_finished_trials_is_said_so(synthetic, tmp_path):
    study = optuna.load_study(study_name="synthetic", storage=synthetic)
    study.set_user_attr("study_file", study_toml("synthetic", sampler="random", trials=5,
                                                 scheduler='["constant", "cosine"]',
                                                 seed="[0, 1, 2, 3]"))
    text = render.write_report("synthetic", synthetic, tmp_path / "out").markdown.read_text()
    assert "complete: 8 trials finished, more than the 5 its study file now asks for" in text
    assert "of 5 trials finished" not in text
    # The command it gives makes all 8 again, not the 5 the file now asks for.
    reproduce = next(line for line in text.splitlines() if line.startswith("Reproduce"))
    assert "lrsweep run studies/synthetic.toml --set study.trials=8 --storage" in reproduce


def test_the_reproduce_and_resume_commands_paste_whole_in_a_shell(synthetic, tmp_path):
    study = optuna.load_study(study_name="synthetic", storage=synthetic)
    study.set_user_attr("study_file_source", "my studies/it's.toml")
    add(study, "cosine", 3, 0.5, state=TrialState.RUNNING)
    text = render.write_report("synthetic", synthetic, tmp_path / "out").markdown.read_text()
    reproduce = next(line for line in text.splitlines() if line.startswith("Reproduce"))
    command = reproduce.split("`")[1]
    assert shlex.split(command) == ["lrsweep", "run", "my studies/it's.toml", "--storage",
                                    synthetic, "&&", "lrsweep", "report", "synthetic",
                                    "--storage", synthetic]
    # An unfinished study's report names the study and store its resume command continues.
    assert f"`lrsweep resume synthetic --storage {synthetic}` continues it" in text


def test_html_is_self_contained(synthetic, tmp_path):
    written = render.write_report("synthetic", synthetic, tmp_path / "out")
    page = written.html.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//|[^"'#d])""", page)
    images = re.findall(r'<img [^>]*src="data:image/png;base64,', page)
    assert len(images) == len(written.figures) >= 2
    for figure in written.figures:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for table in written.tables:
        assert table.read_text().count("\n") >= 2


def test_report_of_a_real_study_through_the_command(lrsweep_cli, tmp_path):
    (tmp_path / "s.toml").write_text(study_toml("real", seed="[0, 1]"))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert lrsweep_cli("run", "s.toml", "--storage", url).returncode == 0
    proc = lrsweep_cli("report", "real", "--storage", url)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "results" / "real"
    text = (folder / "report.md").read_text()
    assert "complete: 4 of 4 trials finished" in text
    assert (f"Reproduce (in the folder it ran from, with the study file below): `lrsweep run s.toml --storage {url} && lrsweep report real "
            f"--storage {url}`") in text
    for name in ("report.html", "curves.png", "history.png", "trials.csv", "curves.csv",
                 "configs.csv"):
        assert (folder / name).is_file(), name
    shown = lrsweep_cli("show", "real", "--storage", url)
    assert "report: results/real/report.html" in shown.stdout
    missing = lrsweep_cli("report", "nobody", "--storage", url)
    assert missing.returncode == 2 and "no study named 'nobody'" in missing.stderr


def test_stats_doctest():
    assert doctest.testmod(stats).failed == 0


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium (Debian: apt-get install chromium)")
def test_html_renders_in_headless_chromium(synthetic, tmp_path):
    from PIL import Image

    written = render.write_report("synthetic", synthetic, tmp_path / "out")
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600",
                    f"--screenshot={shot}", written.html.as_uri()],
                   capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1600)
    colours = image.getcolors(maxcolors=1_000_000)
    assert len(colours) > 50  # text, tables and the embedded figures, not a blank page
    # The figures sit below the tables: the lower half holds more than white and black text.
    lower = image.crop((0, 800, 1200, 1600)).getcolors(maxcolors=1_000_000)
    assert len(lower) > 20


def loss_study(tmp_path, metric, blown_up=None):
    """A minimize study on `metric`: cosine's three seeds, and constant's two with one that
    diverged (its losses not finite, so stored as null; or, `blown_up`, its last evaluation
    still finite though its loss blew up)."""
    url = f"sqlite:///{tmp_path / 'loss.db'}"
    study = optuna.create_study(study_name="loss", storage=url, direction="minimize")
    study.set_user_attr("study_file", study_toml("loss", sampler="random", trials=5,
                                                 scheduler='["constant", "cosine"]',
                                                 seed="[0, 1, 2]").replace(
        'pruner = "none"', f'pruner = "none"\nmetric = "{metric}"'))
    for scheduler, seed, loss in (("cosine", 0, 0.5), ("cosine", 1, 0.6), ("cosine", 2, 0.7),
                                  ("constant", 0, 0.2), ("constant", 1, None)):
        diverged = "nonfinite" if loss is None else None
        loss = blown_up if diverged else loss
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=math.inf if diverged else loss,
            params={"scheduler": scheduler, "seed": seed},
            distributions={"scheduler": CategoricalDistribution(["constant", "cosine"]),
                           "seed": CategoricalDistribution([0, 1, 2])},
            user_attrs={"lr": [0.3, 0.2], "train_loss": [1.0, loss], "train_acc": [0.5, 0.7],
                        "val_loss": [1.0, loss], "val_acc": [0.5, 0.6], "test_acc": [0.5, 0.6],
                        "epoch_seconds": [1.0, 1.0], "seed": seed, "diverged": diverged,
                        "pack_size": 1, "device": "cpu (test)"}))
    return url


@pytest.mark.parametrize("blown_up", [None, 0.1], ids=["null", "finite"])
@pytest.mark.parametrize("metric", ["val_loss", "train_loss"])
def test_a_loss_metric_ranks_a_configuration_with_a_diverged_seed_last(tmp_path, metric,
                                                                       blown_up):
    written = render.write_report("loss", loss_study(tmp_path, metric, blown_up),
                                  tmp_path / "out")
    configs = list(csv.DictReader((written.folder / "configs.csv").open()))
    assert [c["config"] for c in configs] == ["scheduler=cosine", "scheduler=constant"]
    assert float(configs[0][f"{metric}_mean"]) == pytest.approx(0.6)
    constant = configs[1]
    assert constant["seeds"] == "2" and constant[f"{metric}_n"] == "2"  # the diverged seed too
    assert float(constant[f"{metric}_mean"]) == math.inf
    text = written.markdown.read_text()
    assert f"**scheduler=cosine** — {metric} 0.6000" in text
    assert "Runner-up: scheduler=constant with ∞" in text


def test_a_study_without_trials_gets_a_report_that_says_so(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    study = optuna.create_study(study_name="empty", storage=url, direction="maximize")
    study.set_user_attr("study_file", study_toml("empty", trials=2))
    written = render.write_report("empty", url, tmp_path / "out")
    assert "No trial has finished yet" in written.markdown.read_text()


def test_the_best_trials_table_says_how_many_it_leaves_to_trials_csv(synthetic, tmp_path):
    study = optuna.load_study(study_name="synthetic", storage=synthetic)
    for seed in range(4):  # 13 trials, 11 with a value: the table holds 10 of them
        add(study, "cosine", seed, 0.5 + seed / 100)
    written = render.write_report("synthetic", synthetic, tmp_path / "out")
    text = written.markdown.read_text()
    assert "## Best trials\n\nThe 10 best of 13 trials by val_acc; trials.csv lists every " \
        "trial." in text
    assert len(list(csv.DictReader((written.folder / "trials.csv").open()))) == 13


def test_a_study_lrsweep_did_not_make_gets_no_report(tmp_path):
    # Without its study file a report would invent its scale and a command that makes it.
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    optuna.create_study(study_name="plain", storage=url)
    with pytest.raises(StorageError, match=r"^study 'plain' in .* was not made by lrsweep \(no "
                                           r"stored study file\)"):
        render.write_report("plain", url, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_study_of_pruned_trials_only_gets_no_empty_optuna_views(tmp_path, capsys):
    """Pruned trials carry a value (their last report), but Optuna's history and slice views
    plot complete ones only: with none, no empty figure and no warning from Optuna."""
    url = f"sqlite:///{tmp_path / 'pruned.db'}"
    study = optuna.create_study(study_name="pruned", storage=url, direction="maximize")
    study.set_user_attr("study_file", study_toml("pruned", sampler="random", trials=3,
                                                 scheduler='["constant", "cosine"]',
                                                 seed="[0, 1, 2, 3]"))
    for seed in range(3):
        trial = study.ask()
        trial.suggest_categorical("scheduler", ["constant", "cosine"])
        trial.suggest_categorical("seed", [0, 1, 2, 3])
        trial.report(0.3 + seed / 10, 0)
        study.tell(trial, state=TrialState.PRUNED)
    assert all(t.value is not None for t in study.trials)
    written = render.write_report("pruned", url, tmp_path / "out")
    assert not any(p.name == "history.png" for p in written.figures)
    assert "There are no complete trials" not in capsys.readouterr().err


def test_configurations_that_differ_past_four_digits_stay_apart():
    import pandas as pd
    trials = pd.DataFrame({"state": ["complete"] * 3, "base_lr": [0.123412, 0.123449, 0.33494],
                           "seed": [0, 0, 0], "val_acc": [0.8, 0.7, 0.6]})
    table = stats.config_table(trials, ["val_acc"])
    # Only the two the rounded label cannot tell apart get their exact values.
    assert list(table["config"]) == ["base_lr=0.123412", "base_lr=0.123449", "base_lr=0.3349"]
    assert list(table["val_acc_n"]) == [1, 1, 1]
    assert stats.config_label(pd.Series({"base_lr": 0.3}), ["base_lr"]) == "base_lr=0.3"


def test_reading_and_reporting_never_import_torch():
    # `ls`, `show` and `report` start fast and run where torch is absent.
    code = ("import sys, importlib, pkgutil, lrsweep.cli, lrsweep.report\n"
            "for m in pkgutil.iter_modules(lrsweep.report.__path__):\n"
            "    importlib.import_module('lrsweep.report.' + m.name)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_a_model_varying_study_reports_where_torch_cannot_be_imported(tmp_path):
    # Exercise 3 names each model's size: counted when the trial trained, read back here.
    url = f"sqlite:///{tmp_path / 'm.db'}"
    study = optuna.create_study(study_name="models", storage=url, direction="maximize")
    study.set_user_attr("study_file", study_toml(
        "models", scheduler='["constant", "cosine"]', seed="[0, 1]",
        extra='model = ["lenet", "resnet18"]'))
    dists = {"scheduler": CategoricalDistribution(["constant", "cosine"]),
             "model": CategoricalDistribution(["lenet", "resnet18"]),
             "seed": CategoricalDistribution([0, 1])}
    for model, size in (("lenet", 123), ("resnet18", 4567)):
        for scheduler, gain in (("constant", 0.0), ("cosine", 0.02)):
            for seed in (0, 1):
                value = 0.8 + gain + 0.01 * seed
                study.add_trial(create_trial(
                    value=value, params={"scheduler": scheduler, "model": model, "seed": seed},
                    distributions=dists,
                    user_attrs={"lr": [0.1], "train_loss": [0.5], "train_acc": [0.8],
                                "val_loss": [0.6], "val_acc": [value], "test_acc": [value],
                                "epoch_seconds": [1.0], "seed": seed, "pack_size": 1,
                                "parameters": size}))
    code = ("import sys\n"
            "class NoTorch:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
            "            raise ImportError('torch is not installed here')\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "from lrsweep.report import render\n"
            f"print(render.write_report('models', {url!r}, {str(tmp_path / 'out')!r})"
            ".markdown.read_text())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "## Exercise 3: cosine on a larger model" in out.stdout
    assert "LeNet (123 parameters)" in out.stdout and "ResNet-18 (4,567 parameters)" in out.stdout


def test_outcome_paired_and_bounded_interval_doctests():
    from lrsweep import outcomes
    from lrsweep.report import outcome_counts, paired, status
    for module in (outcomes, outcome_counts, paired, status):
        assert doctest.testmod(module).failed == 0, module.__name__


@pytest.mark.parametrize("metric, mean, ci, shown", [
    ("val_acc", 0.408, 0.524, "0.408 [0.000, 0.932]"),    # below 0: cut at 0
    ("val_acc", 0.741, 0.445, "0.741 [0.296, 1.000]"),    # above 1: cut at 1
    ("val_acc", 0.881, 0.007, "0.881 ± 0.007"),           # inside: as it is
    ("train_loss", 0.3, 0.5, "0.300 [0.000, 0.800]"),     # a loss is never negative
    ("gap", -0.9, 0.3, "-0.900 [-1.000, -0.600]"),
])
def test_an_interval_is_cut_to_what_the_metric_can_be(metric, mean, ci, shown):
    assert stats.format_ci(mean, ci, bounds=stats.metric_bounds(metric)) == shown


def test_outcomes_are_read_as_recorded_or_derived_the_same_way():
    from lrsweep.report.outcome_counts import outcome_column
    frame = pd.DataFrame({
        "state": ["complete", "complete", "diverged (collapsed)", "diverged (nonfinite)",
                  "pruned", "running", "complete"],
        "train_acc": [0.9, 0.15, 0.1, None, 0.5, None, 0.15],
        "classes": [10] * 7,
        "outcome": [None, None, None, None, None, None, "complete"]})  # the last recorded
    assert list(outcome_column(frame)) == ["complete", "never learned", "collapsed",
                                           "non-finite", "pruned", "running", "complete"]


def test_figures_draw_epochs_from_1_as_the_text_counts_them():
    from lrsweep.report.figures import mean_band, plotting
    plt, _ = plotting()
    rows = pd.DataFrame({"epoch": [0, 1, 2] * 2, "step": [10, 20, 30] * 2, "config": "a",
                         "val_acc": [0.5, 0.6, 0.7, 0.52, 0.62, 0.72]})
    fig, (by_epoch, by_step) = plt.subplots(1, 2)
    mean_band(by_epoch, rows, "val_acc", "config", ["a"])
    mean_band(by_step, rows, "val_acc", "config", ["a"], x="step")
    assert list(by_epoch.lines[0].get_xdata()) == [1, 2, 3]
    assert list(by_step.lines[0].get_xdata()) == [10, 20, 30]  # other axes as they are
    assert list(by_epoch.lines[0].get_ydata()) == pytest.approx([0.51, 0.61, 0.71])
    plt.close(fig)
