"""Where a study stands (the report's status sentence) and the command that makes it again.

    >>> status_sentence({"complete": 5, "pruned": 1}, total=4, resume="lrsweep resume s")[1]
    6
    >>> status_sentence({"complete": 1, "interrupted": 2}, 4, "lrsweep resume s")[0][:70]
    '**incomplete: 1 of 4 trials finished** (2 interrupted; `lrsweep resume'
    >>> reproduce_options(("train.epochs=3", "study.trials=4"), total=4, finished=6)
    ' --set train.epochs=3 --set study.trials=6'
    >>> print(reproduce_command("my s.toml", "s", "sqlite:///s.db", (), total=1, finished=1))
    lrsweep run 'my s.toml' --storage sqlite:///s.db && lrsweep report s --storage sqlite:///s.db
"""

from __future__ import annotations

import shlex
from typing import Sequence


def status_sentence(counts: dict[str, int], total: int, resume: str) -> tuple[str, int]:
    """The report's sentence on whether the study is complete (it ends without its full
    stop), and how many trials finished (complete, pruned or diverged), from the counts of
    the trials' states (RUNNING split into `running`, a worker holds them, and
    `interrupted`), the total the study file asks for and the command that resumes it."""
    ended = counts.get("complete", 0) + counts.get("pruned", 0) + counts.get("diverged", 0)
    if ended == total:
        return f"complete: {ended} of {total} trials finished", ended
    if ended > total:
        return (f"complete: {ended} trials finished, more than the {total} its study file now "
                "asks for (a lower total stops new trials and removes none)"), ended
    now = ", ".join(f"{counts[state]} {state}" for state in ("running", "interrupted")
                    if counts.get(state))
    return (f"**incomplete: {ended} of {total} trials finished** ({now + '; ' if now else ''}"
            f"`{resume}` continues it). The numbers below cover the finished trials only"), ended


def reproduce_options(overrides: Sequence[str], total: int, finished: int) -> str:
    """The study file's `--set` options for the reproduce command. A study whose total was
    lowered below the trials it finished makes them all again only with its total raised
    back (a later `--set` of a key wins, so an earlier one of the total is left out)."""
    if finished > total:
        overrides = [o for o in overrides if o.partition("=")[0].strip() != "study.trials"]
        overrides.append(f"study.trials={finished}")
    return "".join(f" --set {shlex.quote(o)}" for o in overrides)


def reproduce_command(source: str, name: str, url: str, overrides: Sequence[str], *,
                      total: int, finished: int) -> str:
    """The shell command that runs the study again into a store and writes its report, each
    word quoted as a shell needs (a file or study name with spaces or quotes pastes whole;
    a password hidden as *** is not expanded as a pattern)."""
    return run_and_report(source, name, url, reproduce_options(overrides, total, finished))


def run_and_report(source: str, name: str, url: str, options: str = "") -> str:
    """`lrsweep run SOURCE OPTIONS --storage URL && lrsweep report NAME --storage URL`,
    each word quoted as a shell needs (`options`: already quoted)."""
    store = f"--storage {shlex.quote(url)}"
    return (f"lrsweep run {shlex.quote(source)}{options} {store} && "
            f"lrsweep report {shlex.quote(name)} {store}")


def resume_command(name: str, url: str) -> str:
    """The command that continues the study's interrupted trials, quoted as above."""
    return f"lrsweep resume {shlex.quote(name)} --storage {shlex.quote(url)}"
