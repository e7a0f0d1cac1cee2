"""The `lrsweep` command: thin commands over the study loop (`search.loop`) and the reports
(`report.render`).

Exit codes: 0 success, 2 bad input (one line saying what and where), 1 failure, 130 Ctrl-C.
Commands that only read the store import neither torch nor the engine, so they start fast.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console

from lrsweep import tables

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Optuna studies of learning-rate schedules (D2L §12.11) for LeNet on "
                       "Fashion-MNIST.")
out = Console(highlight=False)
if not out.is_terminal:
    out = Console(highlight=False, width=200)  # logs and pipes: no 80-column wrapping of tables
err = Console(stderr=True, highlight=False)

StorageOpt = typer.Option(None, "--storage", envvar="LRSWEEP_STORAGE", show_envvar=True,
                          help="Optuna storage URL [default: sqlite:///results/lrsweep.db]")
DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:1, …")
PackOpt = typer.Option(None, "--pack",
                       help="Trials trained together as one network [default: 4 on a CPU, "
                            "from free memory on a GPU]")
DataDirOpt = typer.Option(None, "--data-dir", envvar="LRSWEEP_DATA", show_envvar=True,
                          help="Folder with the four Fashion-MNIST IDX files")


def _handle_errors(command: Callable) -> Callable:
    """Bad input → one line and exit 2; Ctrl-C → exit 130; anything else → one line, exit 1."""
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            err.print("lrsweep: interrupted; finished trials are stored — run the same command "
                      "again to continue", markup=False, soft_wrap=True)
            raise typer.Exit(130)
        except Exception as exc:
            if _is_bad_input(exc):
                err.print(f"lrsweep: error: {exc}", markup=False, soft_wrap=True)
                raise typer.Exit(2)
            if os.environ.get("LRSWEEP_DEBUG"):
                raise
            err.print(f"lrsweep: failed: {type(exc).__name__}: {exc} "
                      "(set LRSWEEP_DEBUG=1 for the traceback)", markup=False, soft_wrap=True)
            raise typer.Exit(1)
    return wrapper


def _is_bad_input(exc: Exception) -> bool:
    from lrsweep.train.data import DataError
    from lrsweep.search.spec import SpecError
    from lrsweep.store.storage import StorageError
    if isinstance(exc, (SpecError, StorageError, DataError, typer.BadParameter)):
        return True
    # The engine (and torch with it) is imported only by the commands that train.
    devices = sys.modules.get("lrsweep.train.device")
    return devices is not None and isinstance(exc, devices.DeviceError)


@app.command()
@_handle_errors
def run(study_file: Path = typer.Argument(..., help="A study file, e.g. studies/quickstart.toml"),
        storage: Optional[str] = StorageOpt, device: str = DeviceOpt,
        data_dir: Optional[str] = DataDirOpt, pack: Optional[int] = PackOpt,
        allow_changed: bool = typer.Option(False, "--allow-changed",
                                           help="Continue a study whose study file has changed"),
        overrides: list[str] = typer.Option(
            [], "--set", metavar="SECTION.KEY=VALUE",
            help="Override one key of the study file (a TOML value), e.g. --set train.epochs=10 "
                 "--set study.name=ex1-small; repeatable; stored with the study")
        ) -> None:
    """Create a study from STUDY_FILE, or continue it until its total of trials is reached."""
    from lrsweep.search import spec
    _run(spec.load(study_file, overrides), storage, device, data_dir, pack, allow_changed)


@app.command()
@_handle_errors
def resume(name: str = typer.Argument(..., help="The study's name"),
           storage: Optional[str] = StorageOpt, device: str = DeviceOpt,
           data_dir: Optional[str] = DataDirOpt, pack: Optional[int] = PackOpt) -> None:
    """Continue a stored study from the study file stored with it."""
    from lrsweep.store.storage import default_storage
    from lrsweep.search.provenance import load_stored_spec
    _run(load_stored_spec(name, storage or default_storage()), storage, device, data_dir, pack,
         False)


@app.command()
@_handle_errors
def worker(name: str = typer.Argument(..., help="The study's name"),
           storage: Optional[str] = StorageOpt, device: str = DeviceOpt,
           data_dir: Optional[str] = DataDirOpt, pack: Optional[int] = PackOpt) -> None:
    """Work on a stored study until its total is reached (for clusters: needs only the study's
    name and the storage URL; as many workers as you like, on any machines)."""
    resume(name, storage, device, data_dir, pack)


@app.command()
@_handle_errors
def rerun(name: str = typer.Argument(..., help="The study's name"),
          storage: Optional[str] = StorageOpt,
          top: int = typer.Option(3, "--top", min=1, help="How many of the best configurations"),
          seeds: int = typer.Option(5, "--seeds", min=1, help="Seeds per configuration"),
          new_name: Optional[str] = typer.Option(None, "--name",
                                                 help="The new study's name [default: NAME-best]"),
          out_file: Optional[Path] = typer.Option(None, "--out",
                                                  help="Write the study file here [default: "
                                                       "studies/NAME_best.toml]")) -> None:
    """Write a study file that re-runs a study's best configurations over several seeds."""
    from lrsweep.report.rerun import best_study_file
    from lrsweep.store.storage import default_storage
    text = best_study_file(name, storage or default_storage(), top=top, seeds=seeds,
                           new_name=new_name)
    path = out_file or Path("studies") / f"{name.replace('-', '_')}_best.toml"
    if path.exists():
        raise typer.BadParameter(f"{path} exists; choose another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    new = new_name or f"{name}-best"
    out.print(f"wrote {path}: run it with `lrsweep run {path}` and read `lrsweep report {new}`",
              markup=False)


@app.command("ls")
@_handle_errors
def list_studies(storage: Optional[str] = StorageOpt) -> None:
    """List the studies in the store: trial states and best values."""
    from lrsweep.report.read import studies_frame
    from lrsweep.store.storage import default_storage
    url = storage or default_storage()
    frame = studies_frame(url)
    if frame.empty:
        out.print(f"no studies in {url}", markup=False)
        return
    table = tables.studies(frame, url)
    out.print(table)


@app.command()
@_handle_errors
def show(name: str = typer.Argument(..., help="The study's name"),
         storage: Optional[str] = StorageOpt,
         top: int = typer.Option(10, "--top", min=1, help="How many trials to list")) -> None:
    """Show a study's best trials and a summary of their curves."""
    from lrsweep.report.read import trials_frame
    from lrsweep.store.storage import default_storage
    url = storage or default_storage()
    frame = trials_frame(name, url)
    if frame.empty:
        out.print(f"study {name} has no trials yet", markup=False)
        return
    out.print(tables.trials(frame, f"{name}: top {min(top, len(frame))} of {len(frame)} trials", top))
    page = Path("results") / name / "report.html"
    out.print(f"report: {page}" if page.is_file() else f"no report yet: lrsweep report {name}",
              markup=False)


@app.command()
@_handle_errors
def report(name: str = typer.Argument(..., help="The study's name"),
           storage: Optional[str] = StorageOpt,
           out_dir: Optional[Path] = typer.Option(None, "--out",
                                                  help="Folder [default: results/NAME/]")) -> None:
    """Write a study's report: report.md, a self-contained report.html, figures, CSV tables."""
    from lrsweep.report.render import write_report
    from lrsweep.store.storage import default_storage
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise typer.BadParameter(f"--out {out_dir}: a file is there; give a folder")
    written = write_report(name, storage or default_storage(), out_dir)
    out.print(f"wrote {written.markdown} and {written.html} ({len(written.figures)} figures, "
              f"{len(written.tables)} tables)", markup=False)


@app.command()
@_handle_errors
def export(name: str = typer.Argument(..., help="The study's name"),
           storage: Optional[str] = StorageOpt,
           trial: Optional[int] = typer.Option(None, "--trial", min=0,
                                               help="Write this trial's trained weights"),
           out_file: Optional[Path] = typer.Option(None, "--out", help="Where the weights go "
                                                   "[default: results/NAME/trial-N.pt]"),
           csv: Optional[Path] = typer.Option(None, "--csv",
                                              help="Write every trial's per-epoch curves here")
           ) -> None:
    """Export a trial's weights (a state_dict for the plain LeNet) or the curves as CSV."""
    from lrsweep.store.artifacts import export_weights
    from lrsweep.store.storage import default_storage
    url = storage or default_storage()
    if trial is None and csv is None:
        raise typer.BadParameter("say what to export: --trial N (weights) and/or --csv PATH")
    if trial is not None:
        path, model = export_weights(name, url, trial,
                                     out_file or Path("results") / name / f"trial-{trial}.pt")
        builder = ("lrsweep.train.resnet.resnet18(…)" if model == "resnet18"
                   else "lrsweep.train.model.lenet()")
        out.print(f"wrote {path}  (torch.load it into {builder})", markup=False)
    if csv is not None:
        from lrsweep.report.read import curves_frame
        frame = curves_frame(name, url)
        csv.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(csv, index=False)
        out.print(f"wrote {csv} ({len(frame)} rows: trials × epochs)", markup=False)


@app.command()
@_handle_errors
def schedules(out_file: Path = typer.Option(Path("results/schedules.png"), "--out",
                                            help="Where to write the PNG"),
              epochs: int = typer.Option(30, "--epochs", min=1, help="Epochs to plot")) -> None:
    """Plot the shape of every schedule (the chapter's plots, one figure)."""
    from lrsweep.report.figures import plot_schedules
    path = plot_schedules(out_file, epochs)
    out.print(f"wrote {path}", markup=False)


@app.command()
@_handle_errors
def bench(device: str = DeviceOpt, data_dir: Optional[str] = DataDirOpt,
          subset: Optional[int] = typer.Option(
              None, "--subset", min=0, help="Training images [default: all on a GPU, 10000 on a "
                                            "CPU]; the 10k test images are evaluated each epoch"),
          packs: Optional[str] = typer.Option(
              None, "--packs", help="Pack sizes, e.g. 1,8,32 [default: 1,8,32,128 on a GPU, "
                                    "1,2,4,8,16,32 on a CPU]"),
          epochs: int = typer.Option(3, "--epochs", min=1,
                                     help="Epochs per configuration; the first is warm-up"),
          chapter: bool = typer.Option(True, "--chapter/--no-chapter",
                                       help="Also time the chapter's own loop"),
          out_file: Optional[Path] = typer.Option(
              None, "--out", help="JSON record [default: results/benchmarks/bench-DEVICE-DATE.json]"),
          ) -> None:
    """Trial-epochs per second: the chapter's loop vs lrsweep's engine at several pack sizes."""
    from lrsweep import bench as bench_mod
    from lrsweep.train.device import resolve_device
    sizes = None
    if packs:
        try:
            sizes = [int(p) for p in packs.split(",")]
        except ValueError:
            sizes = []
        if not sizes or min(sizes) < 1:
            raise typer.BadParameter(f"--packs {packs!r}: give whole numbers ≥ 1 separated by commas")
    dev = resolve_device(device)
    if subset is None:
        subset = 0 if dev.type == "cuda" else 10_000
    record = bench_mod.run(device, subset=subset, packs=sizes, epochs=epochs, data_dir=data_dir,
                           chapter=chapter, log=lambda line: err.print(line, markup=False))
    record["command"] = " ".join(["lrsweep", *sys.argv[1:]])  # how to make it again
    out.print(tables.bench(record))
    store = record["storage"]
    out.print(f"storage: {store['batched_ms_per_trial']:.1f} ms per trial (ask, record "
              f"{store['epochs']} epochs, tell) batched; {store['per_value_ms_per_trial']:.1f} ms "
              "through Optuna's per-value API", markup=False)
    out.print(f"wrote {bench_mod.save(record, out_file, dev.type)}", markup=False)


def _run(spec: Any, storage: Optional[str], device: str, data_dir: Optional[str],
         pack: Optional[int], allow_changed: bool) -> None:
    from lrsweep import progress
    from lrsweep.search import loop
    from lrsweep.report.read import trials_frame
    summary = loop.run(spec, storage=storage, device=device, data_dir=data_dir,
                       allow_changed=allow_changed, pack=pack,
                       progress=progress.for_console(err))
    frame = trials_frame(summary.name, summary.storage)
    if not frame.empty:
        out.print(tables.trials(frame, f"{summary.name}: best trials", 10))
    out.print(f"study {summary.name}: {summary.finished}/{summary.total} trials finished "
              f"({summary.new} in this run, {summary.seconds:.1f} s) in {summary.storage}",
              markup=False)
    if summary.finished > summary.total:
        out.print(f"the study already has {summary.finished} finished trials, more than the "
                  f"{summary.total} its file now asks for: a lower total stops new trials, it "
                  "removes none (reports show them all)", markup=False)


def main() -> None:
    app(prog_name="lrsweep")


if __name__ == "__main__":
    sys.exit(main())
