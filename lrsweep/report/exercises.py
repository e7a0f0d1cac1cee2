"""Report sections that answer the chapter's exercises, each computed from the stored trials.

A section appears when the study varies what it is about, whatever the study is called: a
fixed-rate study varies base_lr under the constant schedule (exercise 1), a decay study varies
the exponent (exercise 2), a warmup study varies warmup_steps (exercise 4), and a study whose
[[run]] tables carry the book's printed numbers is a replication (the chapter's runs).
Exercises 1–4 also need the study to vary nothing else but the seed (`sections.only_varies`).
Every number in a section's text comes from the frames it is given; nothing is typed in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from lrsweep.report.book import replication
from lrsweep.report.ex1_fixed_rate import fixed_rate
from lrsweep.report.ex2_decay import decay_exponent
from lrsweep.report.ex3_model_size import model_size
from lrsweep.report.ex4_warmup import warmup
from lrsweep.report.ex5_sampling import sampling
from lrsweep.report.sections import Section
from lrsweep.search.spec import StudySpec


SECTIONS: list[Callable[..., Section | None]] = [replication, fixed_rate, decay_exponent,
                                                  model_size, warmup, sampling]


def sections(trials: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec | None, metric: str,
             folder: Path) -> list[Section]:
    """The exercise sections that apply to this study, in the chapter's order."""
    if trials.empty or curves.empty:
        return []
    found = [s for s in (make(trials, curves, spec, metric, folder) for make in SECTIONS) if s]
    # Each section counts the seeds that finished: a pruned one is in none of its groups.
    pruned = int((trials["state"] == "pruned").sum())
    for section in found if pruned else []:
        section.paragraphs.append(
            f"{pruned} pruned trial(s) did not finish and are left out of this section: its "
            "seeds are those that finished (the configurations table counts the pruned ones).")
    return found
