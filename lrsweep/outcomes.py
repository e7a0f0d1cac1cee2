"""What accuracy counts as chance, and as learned, for a number of classes: the engine's test
for a collapsed network and the reports' thresholds share it. Free of torch and pandas.

    >>> chance_levels(10)
    (0.2, 0.5)
"""

from __future__ import annotations


def chance_levels(classes: int) -> tuple[float, float]:
    """(at chance, learned) accuracies for `classes` classes: a network whose train accuracy
    once reached `learned` and falls to `at chance` or below has collapsed. For 10 classes
    0.2 and 0.5; for others the same fractions (1/9, 4/9) of the way from guessing (1/classes)
    to perfect, so two classes do not count 0.5 as learned nor ten thousand 0.2 as chance."""
    return (classes + 8) / (9 * classes), (4 * classes + 5) / (9 * classes)
