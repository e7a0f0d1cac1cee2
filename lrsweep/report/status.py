"""Where a study stands (the report's status sentence) and the command that makes it again.

    >>> status_sentence({"complete": 5, "pruned": 1}, total=4)[1]
    6
    >>> reproduce_options(("train.epochs=3", "study.trials=4"), total=4, finished=6)
    ' --set train.epochs=3 --set study.trials=6'
"""

from __future__ import annotations

import shlex
from typing import Sequence


def status_sentence(counts: dict[str, int], total: int) -> tuple[str, int]:
    """The report's sentence on whether the study is complete (it ends without its full
    stop), and how many trials finished (complete, pruned or diverged), from the counts of
    the trials' states and the total the study file asks for."""
    ended = counts.get("complete", 0) + counts.get("pruned", 0) + counts.get("diverged", 0)
    if ended == total:
        return f"complete: {ended} of {total} trials finished", ended
    if ended > total:
        return (f"complete: {ended} trials finished, more than the {total} its study file now "
                "asks for (a lower total stops new trials and removes none)"), ended
    return (f"**incomplete: {ended} of {total} trials finished** "
            f"({counts.get('running', 0)} running — the study is still running or was "
            "interrupted; `lrsweep resume` continues it). The numbers below cover the "
            "finished trials only"), ended


def reproduce_options(overrides: Sequence[str], total: int, finished: int) -> str:
    """The study file's `--set` options for the reproduce command. A study whose total was
    lowered below the trials it finished makes them all again only with its total raised
    back (a later `--set` of a key wins, so an earlier one of the total is left out)."""
    if finished > total:
        overrides = [o for o in overrides if o.partition("=")[0].strip() != "study.trials"]
        overrides.append(f"study.trials={finished}")
    return "".join(f" --set {shlex.quote(o)}" for o in overrides)
