"""The report's tables as CSV files (trials.csv, curves.csv, configs.csv), and `export
--csv`'s curves, written alike: whole-number columns as whole numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

# Columns of whole numbers: a trial that failed before they were recorded leaves them empty,
# and pandas then holds the column as floats ("5.0"); written as whole numbers, empty or not.
WHOLE_NUMBERS = ("trial", "seed", "epoch", "epochs", "classes", "param_count", "pack_trials")


def write_tables(folder: Path, trials: pd.DataFrame, curves: pd.DataFrame,
                 configs: pd.DataFrame) -> list[Path]:
    paths = []
    for stem, frame in (("trials", trials.drop(columns=["val_acc_curve"], errors="ignore")),
                        ("curves", curves),
                        ("configs", configs.drop(columns=["config_key"], errors="ignore"))):
        path = folder / f"{stem}.csv"
        write_csv(frame, path)
        paths.append(path)
    return paths


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    whole_numbers(frame).to_csv(path, index=False)


def whole_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in WHOLE_NUMBERS:
        if column in frame and pd.api.types.is_float_dtype(frame[column]):
            values = frame[column].dropna()
            if (values == values.round()).all():
                frame[column] = frame[column].astype("Int64")
    return frame
