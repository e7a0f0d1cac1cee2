"""`lrsweep report NAME`: a study in the store → report.md, a self-contained report.html,
the figures as PNG and the tables as CSV. Reads the store only; never trains, never imports
torch. Every number in the text is computed here from the stored trials.

    >>> from lrsweep.report import render
    >>> render.write_report("quickstart", "sqlite:///results/lrsweep.db")   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lrsweep.names import folder_name
from lrsweep.outcomes import OUTCOMES
from lrsweep.report import exercises, importance, pages
from lrsweep.search import spec as spec_mod
from lrsweep.report.outcome_counts import count_outcomes, failed_text, failed_words, outcome_column
from lrsweep.report.aside import Aside, set_aside
from lrsweep.report.csv_tables import write_tables
from lrsweep.report.figures import carry_forward, mean_band, plotting
from lrsweep.report.paired import paired
from lrsweep.report.sections import Section
from lrsweep.report.status import reproduce_command, resume_command, status_sentence
from lrsweep.report.read import curves_frame, stored_study_file, trials_frame
from lrsweep.report.stats import (config_columns, config_key, config_table, finished, format_ci,
                                  intervals_overlap, lower_is_better, metric_bounds)
from lrsweep.store.failures import hide_passwords
from lrsweep.store.storage import load_study

METRICS = ["val_acc", "test_acc", "train_loss"]
MAX_CURVES = 12  # configurations drawn in the curve figures (the best by the objective)
CURVE_PANELS = ("val_acc", "test_acc", "train_loss", "lr")


@dataclass(frozen=True)
class Report:
    folder: Path
    markdown: Path
    html: Path
    figures: list[Path]
    tables: list[Path]


def write_report(name: str, url: str, out: str | Path | None = None) -> Report:
    """Write the report of study `name` into `out` (default results/NAME/, NAME as
    `names.folder_name` makes it safe)."""
    study = load_study(name, url)
    study_spec = stored_study_file(  # before anything is written
        study, name, url, ": a report states its scale and the command that makes it again; "
        "optuna-dashboard reads any Optuna study")
    folder = Path(out) if out else Path("results") / folder_name(name)  # no name leaves results/
    folder.mkdir(parents=True, exist_ok=True)
    trials = trials_frame(name, url, study=study)
    if len(trials):  # every trial's outcome, as recorded or derived the same way (trials.csv)
        trials["outcome"] = outcome_column(trials)
    curves = curves_frame(name, url, study=study)
    metric = study_spec.study.metric
    metrics = [metric] + [m for m in METRICS if m != metric]
    stored = study.get_trials(deepcopy=False)  # read once: their attributes hold the curves
    aside = set_aside(study, study_spec, trials, stored)
    counted, counted_curves = (f[~f["trial"].isin(aside.trials)] for f in (trials, curves))
    configs = (config_table(counted, metrics, higher_is_better=not lower_is_better(metric))
               if not counted.empty else pd.DataFrame())

    tables = write_tables(folder, trials, curves, configs)
    figures = _figures(folder, study, study_spec, counted_curves, configs, counted, metric)
    sections = _sections(name, url, study, study_spec, trials, configs, metric, stored, aside)
    # The exercises' own sections come right after the general answer.
    found = exercises.sections(counted, counted_curves, study_spec, metric, folder)
    found += [s for s in [importance.importance(study, study_spec, metric, folder, aside.trials)]
              if s]
    sections[2:2] = found
    markdown = folder / "report.md"
    markdown.write_text(pages.markdown(name, sections, figures, folder))
    page = folder / "report.html"
    page.write_text(pages.html_page(name, sections, figures))
    figures += [p for section in sections for p in section.figures]
    return Report(folder, markdown, page, figures, tables)


# --- content -------------------------------------------------------------------------------

def _sections(name, url, study, study_spec, trials, configs, metric, stored,
              aside: Aside) -> list[Section]:
    shown_url = hide_passwords(url)  # a report is shared: never a password in it
    counts = trials["state"].str.split(" ").str[0].value_counts().to_dict() if len(trials) else {}
    total = study_spec.study.trials
    status, ended = status_sentence(counts, total, resume_command(name, shown_url))
    source = study.user_attrs.get("study_file_source", f"studies/{name}.toml")
    device = next((t.user_attrs.get("device") for t in stored if t.user_attrs.get("device")), "–")
    # The arithmetic (precision.describe), recorded with each trial from [train] precision on.
    arithmetic = next((t.user_attrs["precision"] for t in stored if t.user_attrs.get("precision")),
                      None)
    # How LeNet packs computed their convolutions (model.CONVOLUTIONS; LRSWEEP_CONVOLUTIONS, so
    # a study continued under another setting holds both: each is named).
    formulations = sorted({t.user_attrs["convolutions"] for t in stored
                           if t.user_attrs.get("convolutions")})
    if formulations:
        arithmetic = ", ".join(filter(None, [arithmetic,
                                             f"{' and '.join(formulations)} convolutions"]))
    versions = study.user_attrs.get("versions", {})
    tr = study_spec.train
    images = (f"{tr.train_images} training images" if not tr.folder else
              f"{tr.subset or 'all'} training images of {tr.folder} at {tr.image_size} px")
    tested = f"{tr.test_subset} test images" if tr.test_subset else "all test images"
    scale = (f"{' and '.join(study_spec.models)}, {tr.epochs} epochs per trial, {images} "
             f"(validation {tr.validation}, {tested}), batch {tr.batch_size}, schedule unit "
             f"{tr.unit}; sampler {study_spec.study.sampler}, pruner {study_spec.study.pruner}")
    what = Section("What was studied", [
        study_spec.study.description or "",
        f"Scale: {scale}." + _changed_file(aside.earlier),
        f"Trials: {status}. Outcomes: " + _outcomes_line(trials) + _repeats_line(aside.repeats)
        + ".",
        f"Hardware: {device}" + (f", {arithmetic}" if arithmetic else "") + ". Versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; git commit {study.user_attrs.get('git_commit') or '–'}.",
        "Reproduce (in the folder it ran from, with the study file below): `"
        + reproduce_command(source, name, shown_url, study_spec.overrides,
                            total=total, finished=ended) + "`.",
    ], code=_study_file_text(study_spec))
    answer = Section("Answer", [_answer(configs, metric, trials[~trials["trial"].isin(
        aside.trials)], changed=bool(aside.earlier))])
    shown = _config_view(configs, metric)
    table = Section("Configurations (mean ± 95% CI over seeds, final epoch)", [
        "Student-t intervals over the seeds of each configuration; failed seeds count with "
        f"the value they reached ({failed_words()})."], shown)
    best = trials.dropna(subset=["value"]).sort_values(
        "value", ascending=trials.attrs.get("direction") == "minimize").head(10)
    best = best.drop(columns=[c for c in ("val_acc_curve", "classes") if c in best])
    best = best.dropna(axis=1, how="all")  # e.g. the SGLD columns of an SGD study
    top = Section("Best trials", [f"The {len(best)} best of {len(trials)} trials by {metric}; "
                                  "trials.csv lists every trial." if len(trials) > len(best)
                                  else ""], best)
    return [what, answer, table, top]


def _changed_file(earlier: list[int]) -> str:
    """A sentence for a study continued with --allow-changed: which finished trials trained
    under an earlier study file than the one this report describes."""
    if not earlier:
        return ""
    shown = ", ".join(f"#{n}" for n in earlier[:10]) + (", …" if len(earlier) > 10 else "")
    return (f" **The study file was changed during the study** (`--allow-changed`): "
            f"{len(earlier)} trial(s) ({shown}) were trained under an earlier one, not at this "
            "scale: the intervals, tests and figures leave them out (as `rerun` does), and the "
            "command below does not reproduce them (every file is stored with the study, user "
            "attributes `study_file:…`).")


def _study_file_text(study_spec: spec_mod.StudySpec) -> str:
    if not study_spec.overrides:
        return study_spec.text
    return (study_spec.text.rstrip() + "\n\n# run with these overrides of the file:\n"
            + "\n".join(f"#   --set {o}" for o in study_spec.overrides))


def _answer(configs: pd.DataFrame, metric: str, trials: pd.DataFrame, changed: bool) -> str:
    if configs.empty:
        return f"No trial has finished{' under this study file' * changed} yet: nothing to compare."
    ranked = configs  # config_table ranks best first
    best = ranked.iloc[0]
    text = (f"Best configuration by mean final {metric}: **{best['config']}** — "
            f"{metric} {_pm(best, metric)}, test accuracy {_pm(best, 'test_acc')} "
            f"over {best[f'{metric}_n']} seed(s)" + (
                f", of which {failed_text(best)}: it ranks by the values they reached"
                if best["failed"] else "") + ".")
    if len(ranked) > 1:
        second = ranked.iloc[1]
        done = finished(trials)
        done = done.assign(config_key=[config_key(row, config_columns(done))
                                       for _, row in done.iterrows()])
        pair = paired(done, ["config_key"], second, best, metric)
        overlap = intervals_overlap(best, second, metric)
        verdict = ("their 95% intervals overlap: these seeds cannot separate the two"
                   if overlap else "their 95% intervals do not overlap")
        if pair.n >= 2:  # the same seeds: compared seed by seed
            verdict = pair.text(metric)
        elif overlap is None:
            verdict = "one seed each: no interval, so no ranking can be trusted — add seeds"
        text += (f" Runner-up: {second['config']} with {_pm(second, metric)}; {verdict}.")
    failed = count_outcomes(outcome_column(trials)) if len(trials) else {"failed": 0}
    if failed["failed"]:
        text += f" {failed['failed']} of {len(trials)} trials failed ({failed_text(failed)})."
    if configs["pruned"].any():
        text += (f" {int(configs['pruned'].sum())} pruned trial(s) of these configurations did "
                 "not finish: counted in the table's pruned column, not in its intervals.")
    return text


def _outcomes_line(trials: pd.DataFrame) -> str:
    """"complete 30, never learned 3, pruned 2": every trial's outcome (or state, running)."""
    if trials.empty:
        return "none yet"
    counts = outcome_column(trials).value_counts()
    order = [o for o in OUTCOMES if o in counts] + sorted(set(counts.index) - set(OUTCOMES))
    return ", ".join(f"{o} {counts[o]}" for o in order)


def _repeats_line(repeats: list[int]) -> str:
    if not repeats:
        return ""
    shown = ", ".join(f"#{n}" for n in repeats[:10]) + (", …" if len(repeats) > 10 else "")
    return (f" ({shown} repeat{'s' if len(repeats) == 1 else ''} the configuration, seed and "
            "epochs of an earlier trial: intervals, tests and figures count each once)")


def _pm(row: pd.Series, metric: str) -> str:
    return format_ci(row[f"{metric}_mean"], row[f"{metric}_ci"], digits=4,
                     bounds=metric_bounds(metric))


def _config_view(configs: pd.DataFrame, metric: str) -> pd.DataFrame:
    if configs.empty:
        return configs
    view = pd.DataFrame({"config": configs["config"], "seeds": configs["seeds"],
                         "failed": [failed_text(row) for _, row in configs.iterrows()]})
    if configs["pruned"].any():  # seeds that did not finish: counted, not in the intervals
        view["pruned"] = configs["pruned"]
    for m in [metric] + [m for m in METRICS if m != metric]:
        view[m] = [_pm(row, m) for _, row in configs.iterrows()]
    return view


# --- files ---------------------------------------------------------------------------------

def _figures(folder: Path, study, study_spec, curves: pd.DataFrame, configs: pd.DataFrame,
             trials: pd.DataFrame, metric: str) -> list[Path]:
    plt, _ = plotting()
    paths = []
    if not curves.empty and not configs.empty:
        columns = config_columns(trials)
        curves = curves.copy()
        labels = dict(zip(configs["config_key"], configs["config"]))
        curves["config"] = [labels.get(config_key(row, columns)) for _, row in curves.iterrows()]
        keep = list(configs["config"].head(MAX_CURVES))
        # Trials that ran to the end (a pruned trial's short curve would bend the mean); a
        # failed one at the value it reached.
        ran = finished(curves[curves["config"].isin(keep)])
        shown = carry_forward(ran, CURVE_PANELS[:-1])  # the rate as it was: not carried
        fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), sharex=True)
        for ax, panel in zip(axes.flat, CURVE_PANELS):
            mean_band(ax, ran if panel == "lr" else shown, panel, "config", keep)
            ax.set(xlabel="epoch", ylabel=panel,
                   title=f"{panel} per epoch: mean over seeds, band its 95% t-interval")
            ax.title.set_fontsize(9)
            ax.grid(alpha=0.3)
        axes.flat[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
        left_out = len(configs) - len(keep)
        fig.suptitle((f"The {len(keep)} best configurations by final {metric}; {left_out} "
                      "more left out (all in configs.csv)" if left_out else
                      f"All {len(keep)} configurations")
                     + ". A seed that failed stays at the value it reached.", fontsize=10)
        fig.tight_layout()
        path = folder / "curves.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    import optuna
    import warnings
    # Optuna's history and slice views plot COMPLETE trials only (a pruned trial has a value
    # too, its last report): with fewer, they would be empty, and Optuna logs a warning.
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib views experimental
            ax = optuna.visualization.matplotlib.plot_optimization_history(study)
        path = folder / "history.png"
        ax.figure.set_size_inches(8, 4.5)
        ax.figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        paths.append(path)
    searched = [n for n, d in study_spec.space if isinstance(d, spec_mod.Range)]
    if searched and len(complete) >= importance.MIN_TRIALS_FOR_IMPORTANCE:
        # A search's slice view: each searched value against the objective, trial by trial.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            axes = optuna.visualization.matplotlib.plot_slice(study, params=searched)
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        first.figure.set_size_inches(4.5 * len(searched), 4)
        path = folder / "slice.png"
        first.figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(first.figure)
        paths.append(path)
    return paths
