"""Exercise 5: optimization and sampling. SGD's final iterate, SGLD's posterior average,
and SGLD without its noise (the control), paired by seed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lrsweep.report.figures import clipped_err, plotting, save
from lrsweep.report.outcome_counts import count_outcomes, failed_text, outcome_column
from lrsweep.report.sections import Section, by_config, varies
from lrsweep.report.stats import (config_columns, difference_bounds, finished, format_ci, mean_ci,
                                  metric_bounds)
from lrsweep.search.spec import StudySpec


CONTROL = "sgld_without_noise"  # SGLD less its noise: SGD, the prior's decay, averaging


def sampling(trials: pd.DataFrame, curves: pd.DataFrame, spec: StudySpec | None,
             metric: str, folder: Path) -> Section | None:
    optimizers = set(trials["optimizer"].dropna()) if "optimizer" in trials else set()
    if optimizers not in ({"sgd", "sgld"}, {"sgd", "sgld", CONTROL}):
        return None
    done = finished(trials)
    if done.empty or "avg_test_acc" not in done:
        return None
    # Pairs are the same configuration and seed under each optimizer: group by every other
    # parameter the study varies (the decay exponent first).
    others = [c for c in config_columns(done) if c != "optimizer" and varies(done, c, 2)]
    keys = (["exponent"] if varies(done, "exponent", 1) else []) + \
        [c for c in others if c != "exponent"]
    outcomes = ["test_acc", "test_nll", "test_ece"]
    control = CONTROL in optimizers
    langevin = done[done["optimizer"] == "sgld"]
    rows, lines, against_control = [], [], []
    for values, group in (langevin.groupby(keys) if keys else [((), langevin)]):
        values = values if isinstance(values, tuple) else (values,)
        where = dict(zip(keys, values))
        peers = {}
        for name in ("sgd", CONTROL) if control else ("sgd",):
            frame = done[done["optimizer"] == name]
            for key, value in where.items():
                frame = frame[frame[key] == value]
            peers[name] = frame
        # Failed seeds count in the means below with the value they reached: said per optimizer.
        row = {**where, "seeds": len(group), "failed (SGD / SGLD)": " / ".join(
            failed_text(count_outcomes(outcome_column(f))) for f in (peers["sgd"], group))}
        shown = [("SGD iterate", peers["sgd"], "")]
        if control:
            shown.append(("no-noise average", peers[CONTROL], "avg_"))
        shown += [("SGLD iterate", group, ""), ("SGLD average", group, "avg_")]
        for name, frame, prefix in shown:
            for m in outcomes:
                row[f"{name} {m[5:]}"] = format_ci(*mean_ci(frame[prefix + m])[:2],
                                                        bounds=metric_bounds(m))
        label = ", ".join(f"γ = {v:g}" if k == "exponent" else f"{k} = {v}"
                          for k, v in where.items()) or "all"
        lines.append(_paired_line(label, group, peers["sgd"], outcomes, ""))
        if control:
            against_control.append(_paired_line(label, group, peers[CONTROL], outcomes, "avg_"))
        rows.append(row)
    intro = _intro(spec, control)
    texts = ["Posterior average minus SGD's final iterate, paired by seed (mean ± 95% CI; "
             "lower NLL and ECE are better): " + "; ".join(lines) + "."]
    if control:
        texts.append("Posterior average minus the no-noise average, paired by seed (what the "
                     "noise adds): " + "; ".join(against_control) + ".")
    figure = _sampling_figure(done, keys, control, folder)
    return Section("Exercise 5: optimization and sampling (SGLD)", [intro, *texts],
                   pd.DataFrame(rows), [figure])


def _intro(spec: StudySpec | None, control: bool) -> str:
    """What the optimizers do, in words, with the study's burn-in and thinning."""
    burn_in = spec.train.burn_in if spec else 0
    thin = spec.train.thin if spec else 1
    every = "every epoch" if thin == 1 else f"every {thin} epochs"
    intro = (
        "SGD and SGLD take the same steps η_t from the same schedule; SGLD adds Gaussian noise "
        "of variance ε_t = 2η_t/N and a Gaussian prior, and from epoch "
        f"{burn_in + 1} on, {every}, its weights are samples whose predictions are averaged. With "
        "steps that decay to zero while their sum diverges (γ ≤ 1) and the sum of their "
        "squares converges (γ > 0.5), the injected noise outgrows the mini-batch noise and the "
        "iterates sample the posterior (Welling & Teh 2011): decaying the rate is what turns "
        "the optimizer into a sampler. SGD's final iterate is a single point estimate.")
    if control:
        intro += (" The control, SGLD without its noise (SGD with the prior as a weight decay "
                  "of λ/N, its predictions averaged over the same epochs), separates what "
                  "sampling adds from what averaging and the prior add.")
    return intro


def _paired_line(label: str, group: pd.DataFrame, base: pd.DataFrame, outcomes: list[str],
                 prefix: str) -> str:
    """SGLD's posterior average minus `base` (its `prefix` columns), seed by seed, in words."""
    paired = (group.set_index("seed")[[f"avg_{m}" for m in outcomes]].rename(
        columns=lambda c: c[4:]) - base.set_index("seed")[[prefix + m for m in outcomes]]
        .rename(columns=lambda c: c[len(prefix):])).dropna()
    diffs = {m: mean_ci(paired[m]) for m in outcomes}
    shown = {m: format_ci(*diffs[m][:2], bounds=difference_bounds(m)) for m in outcomes}
    return (f"{label}: NLL {shown['test_nll']}, ECE {shown['test_ece']}, accuracy "
            f"{shown['test_acc']} (n = {diffs['test_nll'][2]})")


def _sampling_figure(done: pd.DataFrame, keys: list[str], control: bool, folder: Path) -> Path:
    plt, _ = plotting()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    x = keys[0] if keys else None
    lines = [("SGD iterate", "sgd", ""), ("SGLD iterate", "sgld", ""),
             ("SGLD average", "sgld", "avg_")]
    if control:
        lines.insert(1, ("no-noise average", CONTROL, "avg_"))
    for ax, m in zip(axes, ("test_acc", "test_nll", "test_ece")):
        for name, optimizer, prefix in lines:
            frame, column = done[done["optimizer"] == optimizer], prefix + m
            table = by_config(frame.assign(_all=0), [x or "_all"], [column])
            ax.errorbar(table[x or "_all"], table[f"{column}_mean"],
                        yerr=clipped_err(table[f"{column}_mean"], table[f"{column}_ci"], m),
                        marker="o", capsize=3, label=name)
        ax.set(xlabel="decay exponent γ" if x else "", ylabel=m, title=f"final {m} (mean, 95% t-interval)")
        ax.legend()
    return save(fig, folder / "ex5_sgld.png", axes)
