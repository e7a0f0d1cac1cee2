"""How the `lrsweep` command fails: one line on stderr and an exit code, never a traceback
(unless LRSWEEP_DEBUG is set), and never a password.

Exit codes: 0 success, 2 bad input (one line saying what and where), 1 failure, 130 Ctrl-C,
143 SIGTERM (128 + the signal, as shells report it).
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
import threading
import unicodedata
from typing import Any, Callable

import typer
from rich.console import Console

# COLUMNS=0, or a word, is no width: Python's shutil reads it as unset, and so does lrsweep
# (rich would take 0 and print every table as nothing). Read before any console is made.
_columns = os.environ.get("COLUMNS")
if _columns is not None and not (_columns.isdigit() and int(_columns) > 0):
    del os.environ["COLUMNS"]
err = Console(stderr=True, highlight=False)


def say(line: str) -> None:
    """One line on stderr, as it is (no markup), with any password in a URL hidden and any
    character that would break or reorder the line (a newline in a --set value or a path, a
    bidirectional override) shown as its escape."""
    from lrsweep.store.failures import hide_passwords  # Optuna's world: only when there is a line
    err.print(hide_passwords(one_line(line)), markup=False, soft_wrap=True)


def one_line(text: str) -> str:
    """`text` with control, format and line-separating characters escaped as Python writes
    them (`\\n`, `\\u2028`)."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in _BREAKING else c for c in text)


_BREAKING = {"Cc", "Cf", "Zl", "Zp"}


def handle_errors(trains: bool = False) -> Callable[[Callable], Callable]:
    """A command's errors: bad input → one line and exit 2; Ctrl-C → exit 130 (SIGTERM 143);
    anything else → one line, exit 1. `trains`: the command trains trials, so an interrupted
    run can be continued, and the line says how."""
    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return command(*args, **kwargs)
            except typer.Exit:
                raise
            except KeyboardInterrupt as stop:
                _ignore_further_signals()
                say("lrsweep: interrupted; finished trials are stored — run the same command "
                    "again to continue" if trains else "lrsweep: interrupted")
                raise typer.Exit(143 if str(stop) == "SIGTERM" else 130)  # search.interrupt
            except Exception as exc:
                _fail(exc, kwargs.get("storage"))
        return wrapper
    return decorate


def _ignore_further_signals() -> None:
    """The command stops: what is left is closing the store and exiting. Another Ctrl-C (or
    SIGTERM) then has nothing to hurry, and would only interrupt Python's own clean-up
    with a traceback (a weakref callback's "Exception ignored")."""
    from lrsweep.search.interrupt import SIGNALS  # the signals a run stops on
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def _fail(exc: Exception, storage: str | None) -> None:
    if is_bad_input(exc):
        say(f"lrsweep: error: {exc}")
        raise typer.Exit(2)
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:  # a path the user gave
        name = str(exc.filename)
        shown = name if len(name) <= 120 else f"{name[:60]}…{name[-50:]}"
        say(f"lrsweep: error: {shown}: a name longer than the file system takes (255 bytes a "
            "name, 4096 a path)")
        raise typer.Exit(2)
    if os.environ.get("LRSWEEP_DEBUG"):
        raise exc
    from lrsweep.store.failures import disk_full, driver_error, first_line
    from lrsweep.store.storage import default_storage
    full = disk_full(exc, storage or default_storage())
    if full is not None:  # no bug: the machine ran out of space
        say(f"lrsweep: failed: {full}")
        raise typer.Exit(1)
    exc = driver_error(exc)  # the database's own words, not Optuna's wrapper
    say(f"lrsweep: failed: {type(exc).__name__}: {first_line(exc)} "
        "(set LRSWEEP_DEBUG=1 for the traceback)")
    raise typer.Exit(1)


def is_bad_input(exc: Exception) -> bool:
    from lrsweep.train.data import DataError
    from lrsweep.search.spec import SpecError
    from lrsweep.store.storage import StorageError
    if isinstance(exc, (SpecError, StorageError, DataError, typer.BadParameter)):
        return True
    # The engine (and torch with it) is imported only by the commands that train.
    devices = sys.modules.get("lrsweep.train.device")
    return devices is not None and isinstance(exc, devices.DeviceError)


def run_app(app: typer.Typer) -> int:
    """Run the command line; a usage error (an unknown option, a value out of range, a missing
    argument) is one line too, naming the command and where its options are listed."""
    try:
        from typer import _click as click  # the Click that Typer vendors (Typer ≥ 0.20)
    except ImportError:
        import click
    if len(sys.argv) == 1:
        # Plain `lrsweep`: its help, once, and exit 2 as for any missing command. Asked of
        # Typer directly: its no-args error prints the help itself in some versions (0.29)
        # and not in others.
        app(prog_name="lrsweep", args=["--help"], standalone_mode=False)
        return 2
    try:
        code = app(prog_name="lrsweep", standalone_mode=False)
    except click.ClickException as error:
        command = (getattr(getattr(error, "ctx", None), "command_path", None)
                   or _command_named(app))
        say(f"{command}: error: {error.format_message()} (see `{command} --help`)")
        return error.exit_code
    except typer.Abort:  # end of input where a prompt waited
        return 130
    return code if isinstance(code, int) else 0


def _command_named(app: typer.Typer) -> str:
    """`lrsweep COMMAND` when the command line names one: Click's error for an option given
    without its value (`run … --set`) knows no command."""
    names = getattr(typer.main.get_command(app), "commands", {})
    return f"lrsweep {sys.argv[1]}" if sys.argv[1] in names else "lrsweep"
