"""How a trial ended, one vocabulary for the engine, the store and every report; and what
accuracy counts as chance, and as learned, for a number of classes. Free of torch and pandas.

    >>> chance_levels(10)
    (0.2, 0.5)
    >>> outcome("complete", None, final_train_acc=0.11, classes=10)
    'never learned'
"""

from __future__ import annotations

import math

# A trial ends in one of these. "complete": ran its epochs and learned; "never learned": ran
# its epochs and ended at chance without ever having learned; "collapsed": learned, then fell
# back to chance; "non-finite": its loss became NaN or infinite, or left every range a
# network that is still computing anything reaches (`loss_bound`); "pruned": stopped by the
# pruner. The last three and "never learned" are the failed outcomes.
OUTCOMES = ("complete", "never learned", "collapsed", "non-finite", "pruned")
FAILED = ("never learned", "collapsed", "non-finite")


def chance_levels(classes: int) -> tuple[float, float]:
    """(at chance, learned) accuracies for `classes` classes: a network whose train accuracy
    once reached `learned` and falls to `at chance` or below has collapsed. For 10 classes
    0.2 and 0.5; for others the same fractions (1/9, 4/9) of the way from guessing (1/classes)
    to perfect, so two classes do not count 0.5 as learned nor ten thousand 0.2 as chance."""
    return (classes + 8) / (9 * classes), (4 * classes + 5) / (9 * classes)


def loss_bound(classes: int) -> float:
    """A mean cross-entropy above which training has blown up though its loss is still
    finite: 100 times the loss of guessing (ln classes; 230 for 10 classes). A network that
    only guesses sits at 1×; one that has blown up reaches 1e9 and may stay finite for many
    epochs, still counted as training."""
    return 100 * math.log(classes)


def outcome(status: str, diverged: str | None, final_train_acc: float | None,
            classes: int) -> str:
    """A finished trial's outcome from what the engine said (status, diverged kind) and its
    last epoch's train accuracy: a complete trial still at chance never learned (had it
    learned, the engine would have called its fall a collapse)."""
    if status == "pruned":
        return "pruned"
    if status == "diverged":
        return "collapsed" if diverged == "collapsed" else "non-finite"
    at_chance = chance_levels(classes)[0]
    if final_train_acc is not None and not final_train_acc > at_chance:
        return "never learned"
    return "complete"
