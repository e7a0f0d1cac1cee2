"""The `lrsweep` command: thin commands over the study loop (`search.loop`) and the reports
(`report.render`). How they fail (one line, exit codes) is `cli_errors`.
Commands that only read the store import neither torch nor the engine, so they start fast.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from lrsweep import cli_options as opt
from lrsweep import tables
from lrsweep.cli_errors import err, handle_errors, run_app
from lrsweep.names import folder_name

app = typer.Typer(cls=opt.Group, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  rich_markup_mode="rich",  # help text escapes its brackets: cli_options.default
                  help="Optuna studies of learning-rate schedules (D2L §12.11) for LeNet on "
                       "Fashion-MNIST.")
command = functools.partial(app.command, cls=opt.Command)
out = Console(highlight=False)
if not out.is_terminal and "COLUMNS" not in os.environ:
    out = Console(highlight=False, width=200)  # logs and pipes: no 80-column tables
# A warning for a user (a damaged checkpoint, a late heartbeat) is one line, not a source
# location and a line of lrsweep's code.
warnings.formatwarning = lambda message, category, *_, **__: f"lrsweep: warning: {message}\n"


@app.callback()
def _top(version: bool = opt.Version) -> None:
    """The options before a command (`lrsweep --version`)."""


@command()
@handle_errors(trains=True)
def run(study_file: Path = opt.StudyFile,
        storage: Optional[str] = opt.Storage, device: str = opt.Device,
        data_dir: Optional[str] = opt.DataDir, pack: Optional[int] = opt.Pack,
        allow_changed: bool = opt.AllowChanged, overrides: list[str] = opt.Overrides) -> None:
    """Create a study from STUDY_FILE, or continue it until its total of trials is reached."""
    from lrsweep.search import spec
    _run(spec.load(study_file, overrides), storage, device, data_dir, pack, allow_changed)


@command()
@handle_errors(trains=True)
def resume(name: str = typer.Argument(..., help="The study's name"),
           storage: Optional[str] = opt.Storage, device: str = opt.Device,
           data_dir: Optional[str] = opt.DataDir, pack: Optional[int] = opt.Pack) -> None:
    """Continue a stored study from the study file stored with it.

    If another run stores a new file meanwhile (run --allow-changed), it goes on under that one."""
    from lrsweep.store.storage import default_storage
    from lrsweep.search.provenance import StoredFileChanged, load_stored_spec
    while True:
        try:
            _run(load_stored_spec(name, storage or default_storage()), storage, device, data_dir,
                 pack, False)
            return
        except StoredFileChanged:
            # Another run continued the study with --allow-changed: the stored file is the
            # study's now, and this command follows it (`run FILE` stops instead).
            err.print(f"study {name}: another run changed its study file (--allow-changed); "
                      "continuing under the new one", markup=False, soft_wrap=True)


@command()
@handle_errors(trains=True)
def worker(name: str = typer.Argument(..., help="The study's name"),
           storage: Optional[str] = opt.Storage, device: str = opt.Device,
           data_dir: Optional[str] = opt.DataDir, pack: Optional[int] = opt.Pack) -> None:
    """Work on a stored study until its total is reached.

    For clusters: it needs only the study's name and the storage URL; start as many as you like.

    If another run stores a new file meanwhile (run --allow-changed), it goes on under that one."""
    resume(name, storage, device, data_dir, pack)


@command()
@handle_errors()
def rerun(name: str = typer.Argument(..., help="The study's name"),
          storage: Optional[str] = opt.Storage, top: int = opt.RerunTop,
          seeds: int = opt.Seeds, new_name: Optional[str] = opt.NewName,
          out_file: Optional[Path] = opt.RerunOut) -> None:
    """Write a study file that re-runs a study's best configurations over several seeds."""
    from lrsweep.report.rerun import best_study_file
    from lrsweep.store.storage import default_storage
    url = storage or default_storage()
    text = best_study_file(name, url, top=top, seeds=seeds, new_name=new_name)
    path = out_file or Path("studies") / f"{folder_name(name).replace('-', '_')}_best.toml"
    if path.exists():
        raise typer.BadParameter(f"{path} exists; choose another --out")
    opt.output_file(path, "--out", url)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    new = new_name or f"{name}-best"
    out.print(f"wrote {path}: run it with `{opt.suggest(storage, 'run', str(path))}` and read "
              f"`{opt.suggest(storage, 'report', new)}`", markup=False, soft_wrap=True)


@command("ls")
@handle_errors()
def list_studies(storage: Optional[str] = opt.Storage) -> None:
    """List the studies in the store: trials by outcome, best values."""
    from lrsweep.report.read import studies_frame
    from lrsweep.store.failures import hide_passwords
    from lrsweep.store.storage import default_storage
    url = storage or default_storage()
    frame = studies_frame(url)
    if frame.empty:
        out.print(f"no studies in {hide_passwords(url)}", markup=False)
        return
    _print(tables.studies(frame, hide_passwords(url), tables.study_metrics(url), out),
           dropped_how="a wider terminal shows them", hidden_how="0 in every study")
    for name, n in frame.loc[frame["interrupted"] > 0, ["study", "interrupted"]].values:
        out.print(tables.resume_hint(name, n, opt.suggest(storage, "resume", name)),
                  markup=False, soft_wrap=True)


@command()
@handle_errors()
def show(name: str = typer.Argument(..., help="The study's name"),
         storage: Optional[str] = opt.Storage, top: int = opt.Top,
         columns: Optional[str] = opt.Columns, show_all: bool = opt.All) -> None:
    """Show a study's best trials: metric, outcome and varying parameters by default."""
    from lrsweep.report.read import trials_frame
    from lrsweep.search import spec as spec_mod
    from lrsweep.store.storage import default_storage, load_study
    url = storage or default_storage()
    chosen = [c.strip() for c in columns.split(",")] if columns is not None else []
    if columns is not None and not all(chosen):  # as --packs: '' between commas is a slip
        raise typer.BadParameter(f"--columns {columns!r}: name columns separated by commas")
    twice = opt.given_twice(chosen)
    if twice:
        raise typer.BadParameter(f"--columns {columns!r}: {', '.join(twice)} named twice")
    if chosen and show_all:
        raise typer.BadParameter("--all and --columns: give one of them")
    study = load_study(name, url)
    frame = trials_frame(name, url, study=study)
    if frame.empty:
        out.print(f"study {name} has no trials yet", markup=False)
        return
    stored = spec_mod.from_stored(study.user_attrs, source=f"{name} (stored)")
    title = tables.trials_title(name, len(frame), min(top, len(frame)),
                                stored.study.trials if stored else None)
    metric = tables.metric_of(study.user_attrs)
    try:
        fitted = tables.trials(frame, title, top, out, metric=metric, columns=chosen,
                               show_all=show_all)
    except tables.UnknownColumn as exc:
        raise typer.BadParameter(str(exc)) from None
    _print(fitted, dropped_how="pick with --columns NAME,…",
           hidden_how="see them with --all or --columns NAME,…")
    if (stopped := int((frame["state"] == "interrupted").sum())):
        out.print(tables.resume_hint(name, stopped, opt.suggest(storage, "resume", name)),
                  markup=False, soft_wrap=True)
    page = Path("results") / folder_name(name) / "report.html"
    # A report written with --out is not looked for. soft_wrap: a command the terminal wraps,
    # not one broken into lines, so it pastes whole.
    out.print(f"report: {page}" if page.is_file()
              else f"no report in {page.parent}: {opt.suggest(storage, 'report', name)}",
              markup=False, soft_wrap=True)


@command()
@handle_errors()
def report(name: str = typer.Argument(..., help="The study's name"),
           storage: Optional[str] = opt.Storage, out_dir: Optional[Path] = opt.ReportOut) -> None:
    """Write a study's report: report.md, a self-contained report.html, figures, CSV tables."""
    from lrsweep.report.render import write_report
    from lrsweep.store.storage import default_storage
    url = storage or default_storage()
    folder = out_dir or Path("results") / folder_name(name)  # write_report's default
    opt.output_folder(folder, "--out" if out_dir else "the report's folder", url)
    written = write_report(name, url, folder)
    out.print(f"wrote {written.markdown} and {written.html} ({len(written.figures)} figures, "
              f"{len(written.tables)} tables)", markup=False)


@command()
@handle_errors()
def export(name: str = typer.Argument(..., help="The study's name"),
           storage: Optional[str] = opt.Storage, trial: Optional[int] = opt.Trial,
           out_file: Optional[Path] = opt.WeightsOut, csv: Optional[Path] = opt.Csv) -> None:
    """Export a trial's weights (a state_dict for the plain LeNet) or the curves as CSV."""
    from lrsweep.store.artifacts import export_weights
    from lrsweep.store.storage import default_storage
    url = storage or default_storage()
    if trial is None and csv is None:
        raise typer.BadParameter("say what to export: --trial N (weights) and/or --csv PATH")
    weights = out_file or Path("results") / folder_name(name) / f"trial-{trial}.pt"
    if trial is not None and csv is not None and weights.absolute() == csv.absolute():
        raise typer.BadParameter(f"--csv {csv}: the weights go to that file too; give two "
                                 "files")
    for path, option in ((weights if trial is not None else None,
                          "--out" if out_file else "the weights' file"), (csv, "--csv")):
        if path is not None:
            opt.output_file(path, option, url)
    if trial is not None:
        # export_weights makes the folder once the weights are found (a store without its
        # artifact folder is refused before anything is written): none is made here.
        path, model = export_weights(name, url, trial, weights)
        builder = ("lrsweep.train.resnet.resnet18(…)" if model == "resnet18"
                   else "lrsweep.train.model.lenet()")
        out.print(f"wrote {path}  (torch.load it into {builder})", markup=False)
    if csv is not None:
        from lrsweep.report.csv_tables import write_csv
        from lrsweep.report.read import curves_frame
        frame = curves_frame(name, url)  # read first: a study that cannot be read makes no folder
        csv.parent.mkdir(parents=True, exist_ok=True)
        write_csv(frame, csv)
        out.print(f"wrote {csv} ({len(frame)} rows: trials × epochs)", markup=False)


@command()
@handle_errors()
def schedules(out_file: Path = opt.SchedulesOut, epochs: int = opt.SchedulesEpochs) -> None:
    """Plot the shape of every schedule (the chapter's plots, one figure)."""
    from lrsweep.report.figures import plot_schedules
    path = plot_schedules(opt.image_file(out_file), epochs)
    out.print(f"wrote {path}", markup=False)


@command()
@handle_errors()
def bench(device: str = opt.Device, data_dir: Optional[str] = opt.DataDir,
          subset: Optional[int] = opt.Subset, packs: Optional[str] = opt.Packs,
          epochs: int = opt.BenchEpochs, repeats: int = opt.Repeats,
          chapter: bool = opt.Chapter,
          precision: str = opt.Precision, out_file: Optional[Path] = opt.BenchOut) -> None:
    """Trial-epochs per second: the chapter's loop vs lrsweep's engine at several pack sizes."""
    from lrsweep import bench as bench_mod
    from lrsweep.train.device import resolve_device
    opt.check_precision(precision)
    sizes = opt.pack_sizes(packs)
    if out_file is not None:
        opt.output_file(out_file, "--out")
    else:  # checked before minutes of measuring, as --out is
        opt.output_folder(bench_mod.RECORDS, "the records' folder")
    dev = resolve_device(device)
    if subset is None:
        subset = 0 if dev.type == "cuda" else 10_000
    record = bench_mod.run(device, subset=subset, packs=sizes, epochs=epochs, repeats=repeats,
                           data_dir=data_dir, chapter=chapter, precision=precision,
                           log=lambda line: err.print(line, markup=False))
    record["command"] = " ".join(["lrsweep", *sys.argv[1:]])  # how to make it again
    out.print(tables.bench(record))
    out.print(tables.bench_storage(record), markup=False)
    out.print(f"wrote {bench_mod.save(record, out_file, dev.type)}", markup=False)


def _run(spec: Any, storage: Optional[str], device: str, data_dir: Optional[str],
         pack: Optional[int], allow_changed: bool) -> None:
    from lrsweep import progress
    from lrsweep.search import loop
    from lrsweep.report.read import trials_frame
    from lrsweep.store.failures import hide_passwords
    summary = loop.run(spec, storage=storage, device=device, data_dir=data_dir,
                       allow_changed=allow_changed, pack=pack,
                       progress=progress.for_console(err))
    frame = trials_frame(summary.name, summary.storage)
    if not frame.empty:
        title = tables.trials_title(summary.name, len(frame), min(10, len(frame)),
                                    summary.total)
        show = opt.suggest(storage, "show", summary.name)
        _print(tables.trials(frame, title, 10, out, metric=spec.study.metric),
               dropped_how=f"{show} --columns NAME,…", hidden_how=f"{show} --all")
    out.print(f"study {summary.name}: {summary.finished}/{summary.total} trials finished "
              f"({summary.new} in this run, {summary.seconds:.1f} s) in "
              f"{hide_passwords(summary.storage)}", markup=False)
    if summary.finished > summary.total:
        out.print(f"the study already has {summary.finished} finished trials, more than the "
                  f"{summary.total} its file now asks for: a lower total stops new trials, it "
                  "removes none (reports show them all)", markup=False)


def _print(fitted: tables.Fitted, **how: str) -> None:
    """A table and, under it, the one line naming the columns it left out and how to see
    them (`tables.not_shown`)."""
    out.print(fitted.table)
    line = tables.not_shown(fitted, out.width, **how)
    if line:
        out.print(line, markup=False, soft_wrap=True)


def main() -> int:
    return run_app(app)


if __name__ == "__main__":
    sys.exit(main())
