"""The exercise sections of reports, on synthetic trials with known values: which sections
appear, and that their numbers (intervals, targets, divergence counts, the book verdicts) are
the ones computed by hand here."""

from __future__ import annotations

import doctest
import math
import statistics

import pandas as pd
import pytest

from conftest import study_toml
from lrsweep.report import (book, ex1_fixed_rate, ex2_decay, ex3_model_size, ex4_warmup,
                            ex5_sampling, exercises, importance, sections, stats)
from lrsweep.search import spec

T_975 = {1: 12.706204736174698, 2: 4.302652729911275}  # Student t quantiles by dof


def pm(values, digits=3):
    mean = statistics.fmean(values)
    half = T_975[len(values) - 1] * statistics.stdev(values) / math.sqrt(len(values))
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def frames(configs: dict, keys: tuple[str, ...]):
    """trials and curves frames as report.py makes them, from {config: [per-seed curves]} where
    a curve is a dict of per-epoch lists (val_acc, test_acc, train_acc, train_loss) and an
    optional 'state'."""
    trials, curves, number = [], [], 0
    for config, seeds in configs.items():
        params = dict(zip(keys, config))
        for seed, curve in enumerate(seeds):
            state = curve.get("state", "complete")
            final = {m: curve[m][-1] for m in ("val_acc", "test_acc", "train_acc", "train_loss")}
            trials.append({"trial": number, "state": state, "value": final["val_acc"], **params,
                           "seed": seed, **final})
            for epoch in range(len(curve["val_acc"])):
                curves.append({"trial": number, "state": state, "seed": seed, **params,
                               "epoch": epoch, **{m: curve[m][epoch] for m in final}})
            number += 1
    return pd.DataFrame(trials), pd.DataFrame(curves)


def curve(val, train=None, test=None, loss=None, state="complete"):
    return {"val_acc": val, "test_acc": test or val, "train_acc": train or val,
            "train_loss": loss or [1.0] * len(val), "state": state}


# --- exercise 1 ----------------------------------------------------------------------------

EX1 = {
    (0.01,): [curve([0.5, 0.6, 0.7], loss=[2.0, 1.5, 1.2]),
              curve([0.5, 0.6, 0.72], loss=[2.0, 1.5, 1.1]),
              curve([0.5, 0.6, 0.71], loss=[2.0, 1.5, 1.3])],
    (0.1,): [curve([0.80, 0.86, 0.84], train=[0.8, 0.9, 0.95], test=[0.8, 0.85, 0.83],
                   loss=[0.6, 0.4, 0.3]),
             curve([0.81, 0.87, 0.85], train=[0.8, 0.9, 0.96], test=[0.8, 0.85, 0.84],
                   loss=[0.6, 0.4, 0.25]),
             curve([0.82, 0.85, 0.86], train=[0.8, 0.91, 0.97], test=[0.81, 0.84, 0.85],
                   loss=[0.6, 0.4, 0.2])],
    (1.0,): [curve([0.7, 0.75, 0.8]), curve([0.7, 0.72, 0.78]),
             curve([0.6, 0.1, 0.1], state="diverged (collapsed)")],
}
EX1_SPEC = spec.parse(study_toml("ex1", scheduler='"constant"', base_lr="[0.01, 0.1, 1.0]",
                                 seed="[0, 1, 2]"), source="ex1.toml")


def test_fixed_rate_answers_with_the_numbers_of_the_trials(tmp_path):
    trials, curves = frames(EX1, ("base_lr",))
    section = ex1_fixed_rate.fixed_rate(trials, curves, EX1_SPEC, "val_acc", tmp_path)
    text = section.paragraphs[0]
    assert "Best fixed rate: **η = 0.1**" in text
    assert f"final val_acc {pm([0.84, 0.85, 0.86])}" in text
    assert f"test accuracy {pm([0.83, 0.84, 0.85])}" in text
    assert (f"Too small is slow: at η = 0.01 the train loss after 3 epochs is "
            f"{pm([1.2, 1.1, 1.3])}, against {pm([0.3, 0.25, 0.2])} at η = 0.1; paired by seed, "
            "Δ train_loss +0.950") in text
    assert "η = 1: 1 of 3 (1 collapsed)" in text  # the diverged seed, counted by outcome
    # the runner-up (η = 0.01) against the best seed by seed: the t interval of the differences
    diffs = [0.70 - 0.84, 0.72 - 0.85, 0.71 - 0.86]
    mean, ci, _ = stats.mean_ci(pd.Series(diffs))
    assert f"paired by seed, Δ val_acc {mean:+.3f} ± {ci:.3f} (n = 3): the seeds separate them" \
        in text
    assert section.table.set_index("base_lr").loc[0.01, "Δ val_acc vs η = 0.1 (paired)"] == \
        f"{mean:+.3f} ± {ci:.3f}"
    # the train − test gap at the best rate, at the last epoch; the peak epoch (1-based)
    # from the epoch before the last (epoch 5 in a longer study), not from the last to itself
    assert "Overfitting: at η = 0.1 the train − test accuracy gap" in text  # above 0, by its CI
    assert (f"gap goes from {pm([0.9 - 0.85, 0.9 - 0.85, 0.91 - 0.84])} at epoch 2 to "
            f"{pm([0.95 - 0.83, 0.96 - 0.84, 0.97 - 0.85])} at epoch 3") in text
    assert f"peaks at epoch {statistics.fmean([2, 2, 3]):.1f} on average" in text
    # Stopped at each seed's validation peak, judged on test accuracy against the last epoch.
    mean, ci, _ = stats.mean_ci(pd.Series([0.85 - 0.83, 0.85 - 0.84, 0.85 - 0.85]))
    assert (f"stopped there, test accuracy changes by {mean:+.3f} ± {ci:.3f} against the last "
            "epoch (paired by seed, n = 3): these seeds cannot tell an early-stopped model from "
            "the last epoch's.") in text
    assert list(section.table["base_lr"]) == [0.01, 0.1, 1.0]
    assert section.figures[0].is_file() and section.figures[0].stat().st_size > 10_000


@pytest.mark.parametrize("tests, verdict", [
    ([0.86, 0.84], "the best model a fixed rate gives here is an early-stopped one."),
    ([0.82, 0.84], "stopping early loses: the last epoch's model is the better one."),
])
def test_an_early_stop_is_judged_on_test_accuracy_not_on_its_own_peak(tmp_path, tests, verdict):
    # Validation peaks at epoch 2 on every seed, above the last epoch as a peak always is;
    # whether stopping there pays is the test accuracy at that epoch against the last one's.
    early, last = tests
    best = [curve([0.80, 0.88, 0.85], test=[0.8, early + d, last + d]) for d in (0, .001, .003)]
    trials, curves = frames({**EX1, (0.1,): best}, ("base_lr",))
    text = ex1_fixed_rate.fixed_rate(trials, curves, EX1_SPEC, "val_acc", tmp_path).paragraphs[0]
    assert "a peak is at least the last by construction" in text and text.endswith(verdict)


def test_fixed_rate_claims_only_what_its_intervals_separate(tmp_path):
    # η = 0.01's train loss no different from the best's seed by seed, and test accuracy above
    # train at the best rate: neither "slow" nor "overfitting" is said.
    close = {**EX1, (0.01,): [curve([0.5, 0.6, 0.7], loss=[2.0, 1.5, 0.2]),
                              curve([0.5, 0.6, 0.72], loss=[2.0, 1.5, 0.3]),
                              curve([0.5, 0.6, 0.71], loss=[2.0, 1.5, 0.25])],
             (0.1,): [curve([0.80, 0.86, 0.84 + d], train=[0.8, 0.8, 0.8], test=[0.8, 0.85, 0.9],
                            loss=[0.6, 0.4, 0.3 - d]) for d in (0.0, 0.01, 0.02)]}
    trials, curves = frames(close, ("base_lr",))
    text = ex1_fixed_rate.fixed_rate(trials, curves, EX1_SPEC, "val_acc", tmp_path).paragraphs[0]
    assert "slow" not in text and "Overfitting" not in text
    assert "At η = 0.01 the train loss after 3 epochs is" in text
    assert "at η = 0.1; paired by seed, Δ train_loss -0.040 ± 0.138 (n = 3): these seeds " \
        "cannot separate them." in text
    assert "Train against test: at η = 0.1 the train − test accuracy gap goes from" in text


def test_fixed_rate_figure_shows_only_rates_at_which_some_seed_did_not_fail(tmp_path,
                                                                           monkeypatch):
    # A seed at chance whose validation accuracy spiked once did not learn: all seeds of
    # η = 1 failed, so the gap panel leaves it out, as the text counts it failed.
    failing = {**EX1, (1.0,): [curve([0.1, 0.4, 0.1], train=[0.1, 0.1, 0.1])] * 3}
    trials, curves = frames(failing, ("base_lr",))
    drawn = []
    monkeypatch.setattr(ex1_fixed_rate, "_fixed_rate_figure",
                        lambda table, rows, metric, learned, folder: drawn.append(learned))
    text = ex1_fixed_rate.fixed_rate(trials, curves, EX1_SPEC, "val_acc", tmp_path).paragraphs[0]
    assert "η = 1: 3 of 3 (3 never learned)" in text
    assert drawn == [[0.01, 0.1]]


def test_fixed_rate_says_so_when_every_rate_failed(tmp_path):
    # At a scale too small to learn, no rate answers: the section says so, not nothing.
    failing = {rate: [curve([0.1, 0.1, 0.1], train=[0.1, 0.1, 0.1])] * 2
               for rate in ((0.01,), (0.1,), (1.0,))}
    trials, curves = frames(failing, ("base_lr",))
    section = ex1_fixed_rate.fixed_rate(trials, curves, EX1_SPEC, "val_acc", tmp_path)
    assert section.paragraphs[0].startswith("No answer at this scale: every seed of every rate "
                                            "failed (0.01, 0.1, 1)")
    assert list(section.table["failed"]) == ["2 never learned"] * 3


def test_fixed_rate_section_needs_a_constant_schedule_and_several_rates(tmp_path):
    trials, curves = frames(EX1, ("base_lr",))
    cosine = spec.parse(study_toml("c", scheduler='"cosine"', base_lr="[0.01, 0.1, 1.0]"),
                        source="c.toml")
    assert ex1_fixed_rate.fixed_rate(trials, curves, cosine, "val_acc", tmp_path) is None
    two = trials[trials["base_lr"] != 1.0]
    assert ex1_fixed_rate.fixed_rate(two, curves, EX1_SPEC, "val_acc", tmp_path) is None


# --- exercise 2 ----------------------------------------------------------------------------

EX2 = {
    ("poly", 0.0): [curve([0.70, 0.80, 0.82]), curve([0.70, 0.79, 0.80])],
    ("poly", 1.0): [curve([0.75, 0.84, 0.88]), curve([0.74, 0.86, 0.87])],
    ("poly", 2.0): [curve([0.60, 0.70, 0.86]), curve([0.60, 0.72, 0.85])],
}


def test_decay_exponent_finds_best_exponent_and_epochs_to_target(tmp_path):
    trials, curves = frames(EX2, ("scheduler", "exponent"))
    section = ex2_decay.decay_exponent(trials, curves, None, "val_acc", tmp_path)
    text = " ".join(section.paragraphs)
    # target: one point below the best mean (0.875), floored to two decimals → 0.86
    assert "val_acc ≥ 0.86" in text
    assert f"best exponent **1** (val_acc {pm([0.88, 0.87])})" in text
    assert f"worst 0 ({pm([0.82, 0.80])})" in text
    # exponent 1 reaches 0.86 at epoch 3 (seed 0) and epoch 2 (seed 1): 2.5 epochs
    assert "exponent 1, in 2.5 epochs on average (2 of 2 seeds got there)" in text
    assert "Never reached it: exponent 0." in text
    row = section.table.set_index("exponent").loc[2.0]
    assert row["epochs to 0.86"] == "3.0 (1/2)"


# --- exercise 4 ----------------------------------------------------------------------------

EX4 = {
    (1.0, 0): [curve([0.1, 0.1, 0.1], state="diverged (nonfinite)"),
               curve([0.5, 0.7, 0.8])],
    (1.0, 2): [curve([0.4, 0.75, 0.85]), curve([0.42, 0.77, 0.86])],
    (0.3, 0): [curve([0.6, 0.8, 0.84]), curve([0.62, 0.8, 0.85])],
    (0.3, 2): [curve([0.3, 0.7, 0.83]), curve([0.3, 0.72, 0.84])],
}


def test_warmup_counts_divergence_and_finds_the_shortest_safe_warmup(tmp_path):
    trials, curves = frames(EX4, ("base_lr", "warmup_steps"))
    section = ex4_warmup.warmup(trials, curves, None, "val_acc", tmp_path)
    text = " ".join(section.paragraphs)
    assert "η = 1: with 0 epochs of warmup 1 of 2 seeds failed; shortest warmup with no " \
        "failure: 2 epochs" in text
    assert "η = 0.3: with 0 epochs of warmup 0 of 2 seeds failed; shortest warmup with no " \
        "failure: 0 epochs" in text
    assert f"Overall best: warmup 2 epochs at η = 1, val_acc {pm([0.85, 0.86])}" in text
    # The best mean, but two seeds cannot tell it from the next best: no rule is drawn.
    assert ("At that rate the shortest warmup with no failed seed also has the best mean; "
            "against the next best, 0 epochs: paired by seed") in text
    assert "these seeds cannot separate them." in text and "just long enough" not in text
    table = section.table.set_index(["base_lr", "warmup_steps"])
    assert table.loc[(1.0, 0), "failed"] == "1 non-finite"
    # At η = 0.3 alone no warmup is best, and every seed says so: warmup does not pay there.
    trials, curves = frames({k: v for k, v in EX4.items() if k[0] == 0.3},
                            ("base_lr", "warmup_steps"))
    text = " ".join(ex4_warmup.warmup(trials, curves, None, "val_acc", tmp_path).paragraphs)
    assert ("At that rate no warmup also has the best mean; against the next best, 2 epochs: "
            "paired by seed, Δ val_acc -0.010 ± 0.000 (n = 2): the seeds separate them, so "
            "warmup does not pay at this rate.") in text
    assert table.loc[(1.0, 2), "val_acc at epoch 3"] == pm([0.85, 0.86])


def test_a_seed_that_ends_at_chance_counts_as_failed(tmp_path):
    # one seed never learns, one learns a little and collapses; neither diverged
    stuck = {(1.5, 0): [curve([0.10, 0.11, 0.10]), curve([0.5, 0.7, 0.8])],
             (1.5, 1): [curve([0.3, 0.35, 0.10]), curve([0.5, 0.7, 0.8])],
             (1.5, 3): [curve([0.3, 0.6, 0.82]), curve([0.3, 0.62, 0.8])]}
    trials, curves = frames(stuck, ("base_lr", "warmup_steps"))
    section = ex4_warmup.warmup(trials, curves, None, "val_acc", tmp_path)
    assert "with 0 epochs of warmup 1 of 2 seeds failed; shortest warmup with no failure: 3" \
        in section.paragraphs[0]
    assert section.table.set_index("warmup_steps").loc[1, "failed"] == "1 never learned"


def test_chance_follows_the_number_of_classes_and_warmup_speaks_in_the_study_unit(tmp_path):
    # 0.52 is far from chance among 10 classes, but barely above guessing between 2.
    ends = {(0,): [curve([0.5, 0.52, 0.52]), curve([0.6, 0.8, 0.9])],
            (10,): [curve([0.6, 0.8, 0.9]), curve([0.6, 0.8, 0.92])]}
    trials, curves = frames(ends, ("warmup_steps",))
    steps = spec.parse(study_toml("w", scheduler='"constant"', seed="[0, 1]",
                                  extra="warmup_steps = [0, 10]").replace(
                                      "[train]", '[train]\nunit = "step"'), source="w.toml")
    ten = ex4_warmup.warmup(trials, curves, steps, "val_acc", tmp_path).paragraphs[0]
    assert "with 0 steps of warmup 0 of 2 seeds failed" in ten
    two = ex4_warmup.warmup(trials.assign(classes=2), curves, steps, "val_acc", tmp_path)
    text = " ".join(two.paragraphs)
    assert "with 0 steps of warmup 1 of 2 seeds failed; shortest warmup with no failure: " \
        "10 steps" in text
    assert "(chance is 0.5," in text


def test_figures_count_whole_epochs_and_warmups_in_the_study_unit(tmp_path, monkeypatch):
    # A short study's axes had ticks at epoch 1.5 and warmup 0.25, and a warmup counted in
    # steps was labelled "warmup epochs".
    drawn = []
    monkeypatch.setattr(ex4_warmup, "save", lambda fig, path, axes: drawn.append(fig) or path)
    trials, curves = frames({(0,): [curve([0.5, 0.8]), curve([0.6, 0.8])],
                             (1,): [curve([0.6, 0.8]), curve([0.6, 0.9])]}, ("warmup_steps",))
    steps = spec.parse(study_toml("w", scheduler='"constant"', seed="[0, 1]",
                                  extra="warmup_steps = [0, 1]").replace(
                                      "[train]", '[train]\nunit = "step"'), source="w.toml")
    ex4_warmup.warmup(trials, curves, steps, "val_acc", tmp_path)
    (fig,) = drawn
    fig.canvas.draw()
    for ax in fig.axes[1:]:  # final accuracy against warmup; a metric against epochs
        low, high = ax.get_xlim()
        shown = [t for t in ax.get_xticks() if low <= t <= high]
        assert shown and all(float(t).is_integer() for t in shown), (ax.get_xlabel(), shown)
    assert fig.axes[1].get_xlabel() == "warmup (steps)"
    # One base rate: the failure panel is a bar chart, labelled as the heatmap is titled.
    assert fig.axes[0].get_xlabel() == "warmup (steps)"
    assert fig.axes[0].get_title().startswith("share of seeds failed")


def split_by(configs: dict, values: tuple) -> dict:
    """Each configuration's seeds dealt round-robin to `values` of another dimension: the
    study then varies that dimension too (its one seed a configuration)."""
    return {key + (value,): [seed] for key, seeds in configs.items()
            for value, seed in zip(values * len(seeds), seeds)}


@pytest.mark.parametrize("section, configs, keys, other, spec_", [
    (ex1_fixed_rate.fixed_rate, EX1, ("base_lr",), ("warmup_steps", (0, 1)), EX1_SPEC),
    (ex2_decay.decay_exponent, EX2, ("scheduler", "exponent"), ("base_lr", (0.1, 0.3)), None),
    (ex4_warmup.warmup, EX4, ("base_lr", "warmup_steps"), ("scheduler", ("cosine", "poly")),
     None),
], ids=["ex1-and-warmup", "ex2-and-rate", "ex4-and-scheduler"])
def test_a_section_is_left_out_where_the_study_varies_more_than_its_dimensions(
        tmp_path, section, configs, keys, other, spec_):
    # Its groups would count other configurations as seeds ("4 of 4 seeds failed" of one
    # seed and four schedules): the configurations table, grouped by everything, answers.
    assert section(*frames(configs, keys), spec_, "val_acc", tmp_path) is not None
    name, values = other
    mixed = frames(split_by(configs, values), keys + (name,))
    assert section(*mixed, spec_, "val_acc", tmp_path) is None


def test_exercise_sections_say_when_pruned_trials_are_left_out(tmp_path):
    # A section counts the seeds that finished: a pruned seed of η = 0.1 is in none of its
    # groups, and the section says so rather than showing fewer seeds without a word.
    pruned = {**EX1, (0.1,): EX1[(0.1,)] + [curve([0.5], state="pruned")]}
    found = exercises.sections(*frames(pruned, ("base_lr",)), EX1_SPEC, "val_acc", tmp_path)
    assert [s.paragraphs[-1] for s in found] == [
        "1 pruned trial(s) did not finish and are left out of this section: its seeds are those "
        "that finished (the configurations table counts the pruned ones)."]
    unpruned = exercises.sections(*frames(EX1, ("base_lr",)), EX1_SPEC, "val_acc", tmp_path)
    assert "pruned" not in unpruned[0].paragraphs[-1]


def test_no_exercise_section_for_a_study_that_varies_none_of_their_dimensions(tmp_path):
    trials, curves = frames({("cosine",): [curve([0.5, 0.8])], ("sqrt",): [curve([0.5, 0.7])]},
                            ("scheduler",))
    assert exercises.sections(trials, curves, None, "val_acc", tmp_path) == []


# --- the chapter's runs against the book ---------------------------------------------------

BOOK = """
[study]
name = "book"
metric = "train_loss"
[train]
epochs = 2
validation = 0
[space]
seed = [0, 1, 2]
[[run]]
label = "cosine, as printed"
scheduler = "cosine"
base_lr = 0.3
lag = 1
book = { test_acc = [0.905, 0.95] }
[[run]]
label = "cosine, as intended"
scheduler = "cosine"
base_lr = 0.3
"""


def test_replication_places_the_books_numbers_inside_or_outside_our_intervals(tmp_path):
    printed = [curve([0.5, v], loss=[1.0, 0.2]) for v in (0.90, 0.91, 0.92)]
    intended = [curve([0.5, v], loss=[1.0, 0.2]) for v in (0.91, 0.93, 0.92)]
    trials, curves = frames({("cosine, as printed",): printed,
                             ("cosine, as intended",): intended}, ("run",))
    section = book.replication(trials, curves, spec.parse(BOOK, source="b.toml"),
                                    "train_loss", tmp_path)
    # ours: 0.91 ± 4.303·0.01/√3 = ±0.0248 → 0.905 is inside, 0.95 above
    row = section.table.set_index("run").loc["cosine, as printed"]
    assert row["test_acc (book)"] == "0.905 (in), 0.950 (above)"
    assert row["test_acc (ours)"] == pm([0.90, 0.91, 0.92])
    text = " ".join(section.paragraphs)
    assert "**1 fall inside** our 95% intervals and **1 outside**" in text
    assert "differ by up to 0.045 in test accuracy" in text
    # 2 epochs is not the book's recipe: the section says so before placing its numbers
    assert text.startswith("This study trained at another scale than the book's: 2 epochs "
                           "(the book's 30 epochs). Its numbers are that scale's")
    # paired by seed: intended − printed = 0.01, 0.02, 0.00
    assert f"cosine {pm([0.01, 0.02, 0.0])} (n = 3)" in text
    # Each run against the best by test accuracy (intended, 0.92 on average), seed by seed:
    # printed − intended = -0.01, -0.02, 0.00.
    vs_best = section.table.set_index("run")["Δ test_acc vs best (paired)"]
    assert vs_best["cosine, as intended"] == "reference"
    mean, ci, _ = stats.mean_ci(pd.Series([-0.01, -0.02, 0.0]))
    assert vs_best["cosine, as printed"] == f"{mean:+.3f} ± {ci:.3f}"
    assert "minus that of the best run by it, cosine, as intended, seed by seed" in text


def test_module_doctest():
    assert doctest.testmod(sections).failed == 0


# --- a joint search: importances -----------------------------------------------------------

def test_importance_names_the_dimension_that_drives_the_value(tmp_path):
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    study = optuna.create_study(direction="maximize")
    rng = __import__("random").Random(0)
    dists = {"scheduler": CategoricalDistribution(["constant", "cosine"]),
             "base_lr": FloatDistribution(0.01, 1.0, log=True),
             "warmup_steps": CategoricalDistribution([0, 1, 2])}
    for _ in range(30):
        params = {"scheduler": rng.choice(["constant", "cosine"]),
                  "base_lr": 10 ** rng.uniform(-2, 0), "warmup_steps": rng.choice([0, 1, 2])}
        value = 0.9 - 0.3 * abs(math.log10(params["base_lr"]) + 1)  # only the rate matters
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  value=value))
    joint = spec.parse(study_toml("j", sampler="random", trials=30, epochs=4,
                                  scheduler='["constant", "cosine", "poly"]',
                                  base_lr="{ low = 0.01, high = 1.0, log = true }",
                                  extra="warmup_steps = [0, 1, 2]\nexponent = [1.0, 2.0]"),
                       source="j.toml")
    section = importance.importance(study, joint, "val_acc", tmp_path)
    assert "**base_lr** explains the largest share" in section.paragraphs[0]
    assert "(exponent) are not in every trial" in section.paragraphs[0]
    assert section.table.iloc[0]["dimension"] == "base_lr"
    assert float(section.table.iloc[0]["importance"]) > 0.8
    # A dimension given one value (--set space.optimizer=["sgd"]) varies nothing: not weighed.
    one = optuna.create_study(direction="maximize")
    for trial in study.get_trials():
        one.add_trial(optuna.trial.create_trial(
            params={**trial.params, "optimizer": "sgd"}, value=trial.value,
            distributions={**trial.distributions,
                           "optimizer": CategoricalDistribution(["sgd"])}))
    listed = importance.importance(one, joint, "val_acc", tmp_path).table["dimension"]
    assert "optimizer" not in list(listed) and "base_lr" in list(listed)
    grid = spec.parse(study_toml("g", scheduler='"constant"', base_lr="[0.1, 0.3]"), source="g")
    assert importance.importance(study, grid, "val_acc", tmp_path) is None  # a grid searches not
    # Trials the report sets aside (an earlier study file's, repeats) are not weighed: here
    # 30 more in which only the scheduler mattered.
    for trial in study.get_trials():
        study.add_trial(optuna.trial.create_trial(
            params=trial.params, distributions=trial.distributions,
            value=0.9 if trial.params["scheduler"] == "cosine" else 0.1))
    earlier = list(range(30, 60))
    assert importance.importance(study, joint, "val_acc", tmp_path).table.iloc[0][
        "dimension"] == "scheduler"
    counted = importance.importance(study, joint, "val_acc", tmp_path, set_aside=earlier)
    assert counted.table.iloc[0]["dimension"] == "base_lr"
    assert "over the final values of 30 trials (those not pruned" in counted.paragraphs[0]
    assert "Left out: the 30 trial(s)" in counted.paragraphs[0]


# --- exercise 5 ----------------------------------------------------------------------------

def test_sampling_pairs_the_posterior_average_with_sgds_final_iterate(tmp_path):
    rows = []
    for seed, (acc, nll, ece) in enumerate([(0.80, 0.60, 0.10), (0.82, 0.55, 0.08),
                                            (0.81, 0.58, 0.09)]):
        base = {"state": "complete", "exponent": 0.55, "seed": seed, "train_loss": 0.3,
                "train_acc": 0.9, "val_acc": acc}
        rows.append({**base, "trial": 2 * seed, "optimizer": "sgd", "test_acc": acc,
                     "test_nll": nll, "test_ece": ece})
        rows.append({**base, "trial": 2 * seed + 1, "optimizer": "sgld", "test_acc": acc - 0.01,
                     "test_nll": nll + 0.1, "test_ece": ece, "avg_test_acc": acc + 0.01 * seed,
                     "avg_test_nll": nll - 0.1 * (seed + 1), "avg_test_ece": ece / 2})
    trials = pd.DataFrame(rows)
    curves = trials.assign(epoch=0)
    section = ex5_sampling.sampling(trials, curves, None, "val_acc", tmp_path)
    text = section.paragraphs[1]
    # paired: NLL differences −0.1, −0.2, −0.3; ECE −0.05, −0.04, −0.045; accuracy 0, .01, .02
    assert f"γ = 0.55: NLL {pm([-0.1, -0.2, -0.3])}" in text
    assert f"ECE {pm([-0.05, -0.04, -0.045])}" in text
    assert f"accuracy {pm([0.0, 0.01, 0.02])} (n = 3)" in text
    row = section.table.iloc[0]
    assert row["SGD iterate nll"] == pm([0.60, 0.55, 0.58])
    assert row["SGLD average ece"] == pm([0.05, 0.04, 0.045])
    assert row["failed (SGD / SGLD)"] == "0 / 0"
    # An SGD seed that never learned is in SGD's mean with its value: the table says so.
    stuck = trials.assign(outcome=["never learned" if t == 0 else "complete"
                                   for t in trials["trial"]])
    row = ex5_sampling.sampling(stuck, curves, None, "val_acc", tmp_path).table.iloc[0]
    assert row["failed (SGD / SGLD)"] == "1 never learned / 0"
    assert ex5_sampling.sampling(trials[trials["optimizer"] == "sgd"], curves, None, "val_acc",
                              tmp_path) is None


def test_sampling_pairs_the_posterior_average_with_the_noiseless_control(tmp_path):
    rows = []
    for seed, (acc, nll) in enumerate([(0.80, 0.60), (0.82, 0.55), (0.81, 0.58)]):
        base = {"state": "complete", "exponent": 0.55, "seed": seed, "train_loss": 0.3,
                "train_acc": 0.9, "val_acc": acc, "test_acc": acc, "test_nll": nll,
                "test_ece": 0.1}
        rows.append({**base, "trial": 3 * seed, "optimizer": "sgd"})
        rows.append({**base, "trial": 3 * seed + 1, "optimizer": "sgld_without_noise",
                     "avg_test_acc": acc + 0.01, "avg_test_nll": nll - 0.05,
                     "avg_test_ece": 0.08})
        rows.append({**base, "trial": 3 * seed + 2, "optimizer": "sgld",
                     "avg_test_acc": acc + 0.01 + 0.005 * seed,
                     "avg_test_nll": nll - 0.05 - 0.01 * (seed + 1), "avg_test_ece": 0.06})
    trials = pd.DataFrame(rows)
    section = ex5_sampling.sampling(trials, trials.assign(epoch=0), None, "val_acc", tmp_path)
    against_sgd, against_control = section.paragraphs[1], section.paragraphs[2]
    assert f"γ = 0.55: NLL {pm([-0.06, -0.07, -0.08])}" in against_sgd
    # What the noise adds: the posterior average minus the control's average, seed by seed.
    assert "no-noise average" in against_control
    assert f"γ = 0.55: NLL {pm([-0.01, -0.02, -0.03])}" in against_control
    assert f"accuracy {pm([0.0, 0.005, 0.01])} (n = 3)" in against_control
    row = section.table.iloc[0]
    assert row["no-noise average ece"] == pm([0.08, 0.08, 0.08])


def test_searched_ranges_and_run_tables_get_no_grid_sections(tmp_path):
    trials, curves = frames(EX2, ("scheduler", "exponent"))
    searched = spec.parse(study_toml("s", sampler="random", trials=6, scheduler='"poly"',
                                     extra="exponent = { low = 0.5, high = 2.0 }"), source="s")
    assert ex2_decay.decay_exponent(trials, curves, searched, "val_acc", tmp_path) is None
    runs = spec.parse(BOOK, source="b.toml")
    assert ex2_decay.decay_exponent(trials, curves, runs, "val_acc", tmp_path) is None


# --- exercise 3 ----------------------------------------------------------------------------

def acc(val, test):
    return curve([0.1, val], test=[0.1, test])


EX3 = {
    ("lenet", "cosine", 0.1): [acc(0.80, 0.80), acc(0.81, 0.81), acc(0.82, 0.82)],
    ("lenet", "cosine", 0.3): [acc(0.85, 0.84), acc(0.86, 0.85), acc(0.87, 0.86)],
    ("lenet", "constant", 0.1): [acc(0.83, 0.83), acc(0.84, 0.83), acc(0.85, 0.84)],
    ("lenet", "constant", 0.3): [acc(0.70, 0.70), acc(0.70, 0.70), acc(0.70, 0.70)],
    ("resnet18", "cosine", 0.1): [acc(0.90, 0.90), acc(0.91, 0.91), acc(0.92, 0.93)],
    ("resnet18", "cosine", 0.3): [acc(0.50, 0.50), acc(0.50, 0.50), acc(0.50, 0.50)],
    ("resnet18", "constant", 0.1): [acc(0.86, 0.85), acc(0.87, 0.86), acc(0.88, 0.87)],
    # The best mean, but one seed diverged: a rate that diverges is not the tuned one.
    ("resnet18", "constant", 0.3): [acc(0.95, 0.95), acc(0.95, 0.95),
                                    {**acc(0.95, 0.95), "state": "diverged (non-finite loss)"}],
}


def test_model_size_compares_each_schedule_at_its_best_rate_paired_by_seed(tmp_path):
    import torchvision
    trials, curves = frames(EX3, ("model", "scheduler", "base_lr"))
    section = ex3_model_size.model_size(trials, curves, None, "val_acc", tmp_path)
    text = section.paragraphs[0]
    # Parameter counts from independent sources: the chapter's LeNet layer by layer, and
    # torchvision's ResNet-18 with its 3×7×7 RGB stem swapped for a 1×3×3 one.
    lenet = (6 * 25 + 6) + (16 * 6 * 25 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    resnet = sum(p.numel() for p in torchvision.models.resnet18(num_classes=10).parameters())
    resnet += 64 * 1 * 3 * 3 - 64 * 3 * 7 * 7
    small = [0.84 - 0.83, 0.85 - 0.83, 0.86 - 0.84]       # cosine at 0.3 − constant at 0.1
    large = [0.90 - 0.85, 0.91 - 0.86, 0.93 - 0.87]       # cosine at 0.1 − constant at 0.1
    assert (f"LeNet ({lenet:,} parameters): cosine {pm([0.84, 0.85, 0.86])} vs constant "
            f"{pm([0.83, 0.83, 0.84])}, lead {pm(small)} (n = 3)") in text
    assert (f"ResNet-18 ({resnet:,} parameters): cosine {pm([0.90, 0.91, 0.93])} vs constant "
            f"{pm([0.85, 0.86, 0.87])}, lead {pm(large)} (n = 3)") in text
    growth = [b - a for a, b in zip(small, large)]
    assert f"ResNet-18, paired by seed: {pm(growth)} (n = 3)" in text
    assert "cosine's advantage grows with the model here" in text  # the interval is above 0
    tuned = section.table.set_index(["model", "scheduler"])["best base_lr"]
    assert tuned.to_dict() == {("lenet", "cosine"): "0.3", ("lenet", "constant"): "0.1",
                               ("resnet18", "cosine"): "0.1", ("resnet18", "constant"): "0.1"}
    assert (tmp_path / "ex3_model_size.png").exists()


def test_model_size_says_when_the_interval_includes_zero(tmp_path):
    noisy = {**EX3, ("resnet18", "cosine", 0.1): [acc(0.90, 0.80), acc(0.91, 0.95),
                                                   acc(0.92, 0.90)]}
    trials, curves = frames(noisy, ("model", "scheduler", "base_lr"))
    text = ex3_model_size.model_size(trials, curves, None, "val_acc", tmp_path).paragraphs[0]
    assert "the interval includes zero" in text


def test_model_size_needs_two_models_and_cosine_beside_another_schedule(tmp_path):
    trials, curves = frames(EX3, ("model", "scheduler", "base_lr"))
    one_model = trials["model"] == "lenet"
    assert ex3_model_size.model_size(trials[one_model], curves, None, "val_acc", tmp_path) is None
    no_rival = trials["scheduler"] == "cosine"
    assert ex3_model_size.model_size(trials[no_rival], curves, None, "val_acc", tmp_path) is None
