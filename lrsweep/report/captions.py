"""Every figure a report draws, said in words: what it shows, how its intervals are made, and
what it leaves out. The pages put these under the figures (report.md and report.html)."""

from __future__ import annotations

from pathlib import Path

BANDS = ("Lines are means over seeds; bands and bars are 95% Student-t intervals over seeds, the "
         "tables' intervals, cut to what the metric can be. A seed that failed stays at the "
         "value it reached.")

CAPTIONS = {
    "curves": "Each configuration's curves per epoch (the best ones by the objective; the "
              "title says how many were left out). " + BANDS,
    "history": "Optuna's optimization history: each complete trial's objective by trial "
               "number (the order trials were asked; in packs and across workers they finish "
               "in another), and the best so far in that order.",
    "slice": "Each searched parameter against the objective, one dot a finished trial.",
    "importances": "fANOVA importances of the searched parameters for the final objective "
                   "(the seed, a repeat and no parameter, left out).",
    "ex1_fixed_rate": "Left: final accuracies against the constant rate. Right: the train − "
                      "test accuracy gap per epoch for the rates at which some seed learned. "
                      + BANDS,
    "ex2_decay_exponent": "Left: final accuracy against the decay exponent, per scheduler. "
                          "Right: the objective per epoch, one line an exponent. " + BANDS,
    "ex2_steps": "The train loss against optimizer steps (each epoch's mean loss at the step "
                 "where the epoch ends, log scale): runs of any training-set size compare. "
                 + BANDS,
    "ex3_model_size": "Each schedule at its best base rate, per model: final test accuracy, "
                      "mean and 95% t-interval over seeds.",
    "ex4_warmup": "Left: the share of seeds that failed (never learned, collapsed or "
                  "non-finite) per base rate and warmup. Middle: the final objective against "
                  "the warmup length. Right: the first epochs at the highest rate. " + BANDS,
    "ex5_sgld": "Test accuracy, negative log-likelihood and calibration error of the SGD and "
                "SGLD iterates and of the posterior averages, mean and 95% t-interval over "
                "seeds.",
    "chapter_vs_book": "The chapter's runs: each of our seeds (small dots), their mean and 95% "
                       "t-interval, and the test accuracy the book printed for each run in its "
                       "two builds (red markers).",
}


def caption(path: Path) -> str:
    """The words under a figure; its file name for one without."""
    return CAPTIONS.get(path.stem, path.stem)
