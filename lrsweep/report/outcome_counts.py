"""Every table, answer and figure counts a configuration's failed seeds the same way: by the
outcome each trial ended with (lrsweep.outcomes: never learned, collapsed, non-finite).

    >>> import pandas as pd
    >>> trials = pd.DataFrame({"state": ["complete", "complete", "diverged (nonfinite)"],
    ...                        "train_acc": [0.9, 0.1, None], "classes": [10, 10, 10]})
    >>> list(outcome_column(trials))
    ['complete', 'never learned', 'non-finite']
    >>> failed_text(count_outcomes(outcome_column(trials)))
    '1 never learned, 1 non-finite'
"""

from __future__ import annotations

import math

import pandas as pd

from lrsweep.outcomes import FAILED, outcome

# Column names of the counts (a failed outcome's words are no column name): never_learned,
# collapsed, nonfinite.
COUNT_COLUMNS = {name: name.replace(" ", "_").replace("-", "") for name in FAILED}


def outcome_column(trials: pd.DataFrame) -> pd.Series:
    """Each trial's outcome: as recorded (`outcome`, trials told since outcomes were stored),
    else from its state ("diverged (collapsed)", …) and its last epoch's train accuracy, the
    same rule the recording uses. Running and failed (crashed) trials keep their state."""
    recorded = trials["outcome"] if "outcome" in trials else pd.Series(None, index=trials.index)

    def one(row: pd.Series, stored) -> str:
        if isinstance(stored, str):
            return stored
        state = str(row["state"])
        status = state.split(" ")[0]
        if status not in ("complete", "pruned", "diverged"):
            return status
        kind = state[state.find("(") + 1:-1] if "(" in state else None
        acc = row.get("train_acc")
        acc = None if acc is None or (isinstance(acc, float) and math.isnan(acc)) else acc
        classes = row.get("classes")
        classes = 10 if classes is None or pd.isna(classes) else int(classes)
        return outcome(status, kind, acc, classes)

    return pd.Series([one(row, recorded[i]) for i, row in trials.iterrows()],
                     index=trials.index, dtype=object)


def count_outcomes(outcomes: pd.Series) -> dict[str, int]:
    """{never_learned, collapsed, nonfinite, failed}: how many of these trials failed, how."""
    counts = {column: int((outcomes == name).sum()) for name, column in COUNT_COLUMNS.items()}
    counts["failed"] = sum(counts.values())
    return counts


def failed_text(row) -> str:
    """"2 never learned, 1 non-finite", or "0": a table's `failed` cell."""
    parts = [f"{int(row[column])} {name}" for name, column in COUNT_COLUMNS.items()
             if row[column]]
    return ", ".join(parts) or "0"


def failed_words() -> str:
    """What the `failed` column counts, for a report's notes."""
    return ("failed: seeds that never learned (ended at chance), collapsed (learned, then "
            "fell back to chance) or went non-finite (a NaN, infinite or exploded loss)")

