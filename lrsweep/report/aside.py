"""The finished trials a report's statistics leave out, and why: trained under an earlier
study file (`--allow-changed`), or repeating an earlier trial's configuration, seed and
epochs. Its tables and trials.csv list them all; the report names both kinds."""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd

from lrsweep.report.read import trained_under_earlier_files
from lrsweep.report.stats import repeated_trials


class Aside(NamedTuple):
    """Finished trials the statistics leave out (trials.csv and the tables list them all)."""
    earlier: list[int]  # trained under an earlier study file (--allow-changed), as rerun's
    repeats: list[int]  # repeating an earlier trial's configuration, seed and epochs

    @property
    def trials(self) -> list[int]:
        return self.earlier + self.repeats


def set_aside(study, study_spec, trials: pd.DataFrame, stored=None) -> Aside:
    """`stored`: the study's trials, when the caller has read them (else they are read)."""
    earlier = sorted(trained_under_earlier_files(study, study_spec, stored))
    return Aside(earlier, repeated_trials(trials[~trials["trial"].isin(earlier)]))
