"""The options of the `lrsweep` commands (`cli.py`), how their help shows them, and the
command lines they suggest (`suggest`).

Help text is Rich markup: a literal "[default: …]" must be escaped (`default`), or Rich takes
it for a style and the default silently disappears from --help.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


def default(text: str) -> str:
    """A default that --help cannot show by itself (it depends on the machine or the study)."""
    return f"\\[default: {text}]"


def suggest(storage: str | None, *words: str) -> str:
    """A command to paste: it names the store the user gave, unless the environment gives it
    (LRSWEEP_STORAGE). A password in the URL is shown as *** (quoted, so no shell globs it):
    never printed, as everywhere; the README says to put it back or use LRSWEEP_STORAGE."""
    from lrsweep.store.failures import hide_passwords  # SQLAlchemy: only when a command says
    given = storage and storage != os.environ.get("LRSWEEP_STORAGE")
    return shlex.join(["lrsweep", *words,
                       *(["--storage", hide_passwords(storage)] if given else [])])


class Command(TyperCommand):
    """A command whose flags (--allow-changed, --all, --help) show no value type: Typer 0.29
    labels each `<bool>`, which reads as if it took `true` or `false`, and it takes neither."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            _as_flag(param)

    def get_help_option(self, ctx: Any) -> Any:
        return _as_flag(super().get_help_option(ctx))


class Group(TyperGroup):
    """The top level (`lrsweep --help`), its flags (--version, --help) shown as in `Command`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            _as_flag(param)

    def get_help_option(self, ctx: Any) -> Any:
        return _as_flag(super().get_help_option(ctx))


def _as_flag(param: Any) -> Any:
    if getattr(param, "is_flag", False):
        param.metavar = ""  # shown as the type's column: empty
    return param


def _storage_given(value: str | None) -> str | None:
    """--storage '' is a mistake, not a request for the default."""
    if value is not None and not value.strip():
        raise typer.BadParameter("an empty storage URL; give one, or leave --storage out for "
                                 "sqlite:///results/lrsweep.db")
    return value


def _path_given(value: str | Path) -> Path:
    """A file or folder option given as '' (an empty variable, say) is a mistake: Path('') is
    '.', which would name the current folder (a report written into it, a file refused as "a
    folder is there")."""
    if isinstance(value, Path):  # a default
        return value
    if not value.strip():
        raise typer.BadParameter("an empty path names no file or folder")
    return Path(value)


def _file_given(value: str | Path) -> Path:
    """A file option (`_path_given`) whose value ends in a separator names a folder: Path()
    would drop the separator and write a file where the user named a folder."""
    path = _path_given(value)
    if isinstance(value, str) and value.rstrip().endswith(("/", os.sep)):
        raise typer.BadParameter(f"{value} ends in '{value.rstrip()[-1]}', which names a folder: "
                                 "give a file")
    return path


def _print_version(asked: bool) -> None:
    if asked:
        from lrsweep import __version__
        typer.echo(f"lrsweep {__version__}")
        raise typer.Exit()


StudyFile = typer.Argument(..., parser=_path_given, metavar="STUDY_FILE",
                           help="A study file, e.g. studies/quickstart.toml")
Version = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                       help="Print lrsweep's version and exit")
Storage = typer.Option(None, "--storage", envvar="LRSWEEP_STORAGE", show_envvar=True,
                       callback=_storage_given,
                       help="Optuna storage URL " + default("sqlite:///results/lrsweep.db"))
Device = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:1, …")
Pack = typer.Option(None, "--pack", help="Trials trained together as one network "
                                         + default("4 on a CPU, from free memory on a GPU"))
# Not typer's envvar: `data.locate` reads LRSWEEP_DATA itself, so that an error names the
# setting the user gave (typer hands an environment value over as if it were --data-dir).
DataDir = typer.Option(None, "--data-dir",
                       help="Folder with the four Fashion-MNIST IDX files \\[env var: "
                            "LRSWEEP_DATA]")
AllowChanged = typer.Option(False, "--allow-changed",
                            help="Continue a study whose study file has changed")
Overrides = typer.Option(
    [], "--set", metavar="SECTION.KEY=VALUE", show_default=False,
    help="Override one key of the study file (a TOML value), e.g. --set train.epochs=10 "
         "--set study.name=ex1-small; repeatable; stored with the study")

# show
Top = typer.Option(10, "--top", min=1, help="How many trials to list")
Columns = typer.Option(None, "--columns", metavar="NAME,NAME,…",
                       help="These columns, in this order (`value` is the metric) "
                            + default("the metric, the outcome, the parameters that vary"))
All = typer.Option(False, "--all", help="Every column the table has (those that do not fit "
                                        "the terminal are named below it: pick them with "
                                        "--columns)")

# rerun
RerunTop = typer.Option(3, "--top", min=1, help="How many of the best configurations")
Seeds = typer.Option(5, "--seeds", min=1, help="Seeds per configuration")
NewName = typer.Option(None, "--name", help="The new study's name " + default("NAME-best"))
RerunOut = typer.Option(None, "--out", parser=_file_given, help="Write the study file here "
                        + default("studies/NAME_best.toml, NAME's - written _"))

# report, export, schedules
ReportOut = typer.Option(None, "--out", parser=_path_given,
                         help="Folder " + default("results/NAME/"))
Trial = typer.Option(None, "--trial", min=0, help="Write this trial's trained weights")
WeightsOut = typer.Option(None, "--out", parser=_file_given, help="Where the weights go "
                                              + default("results/NAME/trial-N.pt"))
Csv = typer.Option(None, "--csv", parser=_file_given,
                   help="Write every trial's per-epoch curves here")
SchedulesOut = typer.Option(Path("results/schedules.png"), "--out", parser=_file_given,
                            help="Where to write the figure (.png, .pdf, .svg, …)")
SchedulesEpochs = typer.Option(30, "--epochs", min=1, max=10_000,
                               help="Epochs to plot, of the chapter's parameters (cosine turns "
                               "at 20, multistep at 15 and 30, whatever this is); a report "
                               "plots what its study's trials trained")


# The files and folders a command writes, checked before it does any work.
def output_file(path: Path, option: str, storage: str | None = None) -> Path:
    """A file a command is about to write, checked before any work: not a folder, not the
    study's own store (nor its journal), in a folder that can be made and written."""
    if path.is_dir():
        raise typer.BadParameter(f"{option} {path}: a folder is there; give a file name")
    if storage and storage.startswith("sqlite:///"):
        store = Path(storage.removeprefix("sqlite:///")).resolve()
        journals = {store, *(store.with_name(store.name + end)
                             for end in ("-wal", "-shm", "-journal"))}
        if path.resolve() in journals:
            raise typer.BadParameter(f"{option} {path}: that is the study's store; give another "
                                     "file")
    _outside_store_folders(path, option, storage, "file")
    _check_writable(path.parent, f"{option} {path}")
    return path


def output_folder(path: Path, option: str, storage: str | None = None) -> Path:
    """A folder a command is about to write into, checked before any work: not inside the
    folders where the store keeps its files."""
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{option} {path}: a file is there; give a folder")
    _outside_store_folders(path, option, storage, "folder")
    _check_writable(path, f"{option} {path}")
    return path


def _outside_store_folders(path: Path, option: str, storage: str | None, what: str) -> None:
    """The store's checkpoint and artifact folders hold its trials' weights, under names it
    chose: what a user writes there could be taken for them, or removed with them."""
    if not storage:
        return
    from lrsweep.store.places import folder_beside
    where = path.resolve()
    for kind in ("checkpoints", "artifacts"):
        folder = folder_beside(storage, kind).resolve()
        if where == folder or folder in where.parents:
            raise typer.BadParameter(f"{option} {path}: that is in the store's {kind} folder "
                                     f"({folder_beside(storage, kind)}); give another {what}")


def _check_writable(folder: Path, what: str) -> None:
    """The folder, or the nearest folder above it that exists (where it would be made), must
    be a folder this process may write in."""
    from lrsweep.store.places import cannot_write, nearest_existing
    folder = nearest_existing(folder)
    if not folder.is_dir():
        raise typer.BadParameter(f"{what}: {folder} is a file, not a folder")
    why = cannot_write(folder)
    if why:
        raise typer.BadParameter(f"{what}: {folder} cannot be written ({why})")


def image_file(path: Path) -> Path:
    """`schedules --out`: a file of a format matplotlib writes, by its suffix."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    output_file(path, "--out")
    formats = FigureCanvasAgg.get_supported_filetypes()
    if not shutil.which(matplotlib.rcParams["pgf.texsystem"]):
        formats.pop("pgf", None)  # written through LaTeX (xelatex by default): not here
    if path.suffix.lstrip(".").lower() not in formats:
        raise typer.BadParameter(f"--out {path}: give a file ending in one of "
                                 f"{', '.join('.' + f for f in sorted(formats))}")
    return path


# bench
def check_precision(precision: str) -> None:
    """--precision as a study's [train] precision takes it."""
    from lrsweep.search.spec_types import PRECISIONS  # no torch before training
    if precision not in PRECISIONS:
        raise typer.BadParameter(f"--precision {precision!r}: give one of "
                                 f"{', '.join(PRECISIONS)}")


def pack_sizes(packs: str | None) -> list[int] | None:
    """--packs 1,8,32 as numbers; None when not given."""
    if packs is None:
        return None
    try:
        sizes = [int(p) for p in packs.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter(f"--packs {packs!r}: give whole numbers ≥ 1 separated by commas")
    twice = given_twice(sizes)
    if twice:  # each would be timed twice and recorded as two rows of one configuration
        raise typer.BadParameter(f"--packs {packs!r}: {', '.join(map(str, twice))} given twice")
    return sizes


def given_twice(items: list) -> list:
    """The items of a comma-separated option given more than once, sorted: a mistake, not a
    request to repeat (--packs, show --columns)."""
    return sorted({item for item in items if items.count(item) > 1})


Subset = typer.Option(None, "--subset", min=0,
                      help="Training images (0: all 60k); the 10k test images are evaluated "
                           "each epoch "
                           + default("all on a GPU, 10000 on a CPU"))
Packs = typer.Option(None, "--packs", help="Pack sizes, e.g. 1,8,32 "
                                           + default("1,8,32,128 on a GPU, 1,2,4,8,16,32 on a CPU"))
BenchEpochs = typer.Option(3, "--epochs", min=1,
                           help="Epochs per configuration; the first is warm-up")
Repeats = typer.Option(1, "--repeats", min=1, max=100,
                       help="Rounds: every configuration timed once a round, in turn; from 2, "
                            "each pack's speed against the chapter is a paired ratio with a "
                            "95% interval")
Chapter = typer.Option(True, "--chapter/--no-chapter", help="Also time the chapter's own loop")
Precision = typer.Option("fp32", "--precision",
                         help="The packs' arithmetic, as a study's [train] precision: fp32, "
                              "tf32 or bf16")
BenchOut = typer.Option(None, "--out", parser=_file_given,
                        help="JSON record " + default("results/benchmarks/bench-DEVICE-DATE.json"))
