"""Exercise 3: cosine on a larger model. Each schedule at its best rate per model, and
cosine's lead over the best other schedule, paired by seed."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lrsweep.report.figures import clipped_err, plotting, save
from lrsweep.report.outcome_counts import failed_text
from lrsweep.report.paired import seed_values
from lrsweep.report.sections import Section, by_config, only_varies, pm_row, varies
from lrsweep.report.stats import finished, format_ci, lower_is_better, mean_ci
from lrsweep.search.spec import StudySpec


def model_size(trials: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec | None,
               metric: str, folder: Path) -> Section | None:
    """Cosine against the other schedules, each at its own best base rate, for every model:
    does cosine's lead grow with the model? Rates are chosen on the study's metric (validation)
    and compared on test accuracy, so the choice does not flatter the comparison."""
    if not varies(trials, "model", 2) or "scheduler" not in trials:
        return None
    done = finished(trials)
    schedulers = set(done["scheduler"].dropna())
    if "cosine" not in schedulers or len(schedulers) < 2:
        return None
    lower = lower_is_better(metric)
    rate_key = ["base_lr"] if "base_lr" in done else []
    if not only_varies(done, ["model", "scheduler"] + rate_key):
        return None
    table = by_config(done, ["model", "scheduler"] + rate_key, [metric, "test_acc"])
    # A rate at which any seed failed loses to one at which none did.
    table["_rank"] = table[f"{metric}_mean"] if lower else -table[f"{metric}_mean"]
    tuned = (table.sort_values(["failed", "_rank"], na_position="last")
             .groupby(["model", "scheduler"], sort=False).head(1))
    sizes = {m: parameter_count(done, m) for m in tuned["model"].unique()}
    # Smallest first; a model whose size is unknown goes by its name's usual order.
    models = sorted(sizes, key=lambda m: (sizes[m] or KNOWN_SIZES.get(m, 0), m))
    rows, lines, leads = [], [], {}
    for model in models:
        mine = tuned[tuned["model"] == model].sort_values(["failed", "_rank"],
                                                          na_position="last")
        cosine = mine[mine["scheduler"] == "cosine"]
        others = mine[mine["scheduler"] != "cosine"]
        if cosine.empty or others.empty:
            continue
        cosine, rival = cosine.iloc[0], others.iloc[0]
        keys = ["model", "scheduler", *rate_key]
        lead = (seed_values(done, keys, cosine, "test_acc")
                - seed_values(done, keys, rival, "test_acc")).dropna()
        leads[model] = lead
        mean, ci, n = mean_ci(lead)
        size = f"{sizes[model]:,} parameters" if sizes[model] else "parameters not recorded"
        lines.append(f"{_model_name(model)} ({size}): cosine "
                     f"{pm_row(cosine, 'test_acc')} vs {rival['scheduler']} "
                     f"{pm_row(rival, 'test_acc')}, lead {format_ci(mean, ci, bounds=(-1, 1))} "
                     f"(n = {n})")
        for _, row in mine.iterrows():
            rows.append({"model": model, "scheduler": row["scheduler"],
                         **({"best base_lr": f"{row['base_lr']:g}"} if rate_key else {}),
                         "seeds": int(row["n"]), "failed": failed_text(row),
                         metric: pm_row(row, metric), "test_acc": pm_row(row, "test_acc")})
    if not lines:
        return None
    text = ("Each schedule at its best base rate for each model (chosen on the final "
            f"{metric}, a rate where no seed failed before one where some did); "
            "test accuracy, mean ± 95% CI over seeds; cosine's lead over the best "
            "other schedule is paired by seed: " + "; ".join(lines) + ".")
    text += _growth(leads, models)
    figure = _model_size_figure(tuned, models, folder)
    return Section("Exercise 3: cosine on a larger model", [text], pd.DataFrame(rows), [figure])


def _growth(leads: dict[str, pd.Series], models: list[str]) -> str:
    """How cosine's lead changes from the smallest model to the largest, paired by seed."""
    small, large = models[0], models[-1]
    if small not in leads or large not in leads or small == large:
        return ""
    growth = (leads[large] - leads[small]).dropna()
    mean, ci, n = mean_ci(growth)
    if math.isnan(ci):
        verdict = "with one seed there is no interval to judge it by"
    elif mean - ci > 0:
        verdict = "cosine's advantage grows with the model here"
    elif mean + ci < 0:
        verdict = "cosine's advantage shrinks with the model here"
    else:
        verdict = ("the interval includes zero: at this scale the data cannot tell whether "
                   "cosine's advantage grows with the model")
    return (f" The lead's change from {_model_name(small)} to {_model_name(large)}, paired "
            f"by seed: {format_ci(mean, ci)} (n = {n}); {verdict}.")


# Trainable parameters of the two models on one-channel 28 × 28 images of 10 classes, for
# stores made before trials recorded their own count (tests check them against the models).
KNOWN_SIZES = {"lenet": 61_706, "resnet18": 11_172_810}


def parameter_count(done: pd.DataFrame, model: str) -> int | None:
    """The model's trainable parameters, as its trials recorded them; for stores made before
    they did, the known count for Fashion-MNIST-shaped data; else None."""
    if "param_count" in done:
        recorded = done.loc[done["model"] == model, "param_count"].dropna()
        if not recorded.empty:
            return int(recorded.iloc[0])
    classes = int(done["classes"].iloc[0]) if "classes" in done and len(done) else 10
    return KNOWN_SIZES.get(model) if classes == 10 else None


def _model_name(model: str) -> str:
    return {"lenet": "LeNet", "resnet18": "ResNet-18"}.get(model, model)


def _model_size_figure(tuned, models, folder) -> Path:
    plt, _ = plotting()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    schedulers = sorted(tuned["scheduler"].unique())
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        mine = tuned[tuned["model"] == model].set_index("scheduler").reindex(schedulers)
        x = [j + (i - (len(models) - 1) / 2) * width for j in range(len(schedulers))]
        ax.errorbar(x, mine["test_acc_mean"], yerr=clipped_err(mine["test_acc_mean"], mine["test_acc_ci"],
                                                           "test_acc"), marker="o",
                    linestyle="none", capsize=3, label=_model_name(model))
    ax.set_xticks(range(len(schedulers)), schedulers)
    ax.set(ylabel="final test accuracy",
           title="each schedule at its best rate (mean, 95% t-interval over seeds)")
    ax.legend()
    return save(fig, folder / "ex3_model_size.png", [ax])
