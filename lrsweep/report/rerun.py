"""`lrsweep rerun NAME`: a study file that re-runs a study's best configurations over seeds.

A search ranks configurations on one seed each, and one seed cannot rank them (the chapter's
own runs move by 3 points between builds). The file written here lists the top K
configurations as [[run]] tables with the original [train] settings and N seeds the search
never trained (the seed a configuration won on would flatter it: the winner's curse), so
`lrsweep run` on it gives each an unbiased mean and a confidence interval. Reads the store
only.

    >>> from lrsweep.report import rerun
    >>> text = rerun.best_study_file("joint", "sqlite:///results/lrsweep.db", top=3,
    ...                              seeds=5)                      # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import asdict
from typing import Any

from lrsweep import names as study_names
from lrsweep.search import spec as spec_mod
from lrsweep.report.outcome_counts import failed_text
from lrsweep.report.aside import set_aside
from lrsweep.report.read import stored_study_file, trials_frame
from lrsweep.report.status import run_and_report
from lrsweep.report.stats import config_columns, config_table, finished, lower_is_better
from lrsweep.store.failures import hide_passwords
from lrsweep.store import storage as store
from lrsweep.store.storage import StorageError, load_study

MAX_SEEDS = 100_000  # a re-run of 100,000 seeds a configuration is already months of training


def best_study_file(name: str, url: str, *, top: int = 3, seeds: int = 5,
                    new_name: str | None = None) -> str:
    """The text of a study file re-running the `top` best configurations of study `name`
    (by mean final objective over their finished trials) with `seeds` seeds, the ones after
    the largest seed any of the study's trials used."""
    if top < 1 or seeds < 1:
        raise spec_mod.SpecError(f"--top {top} --seeds {seeds}: both must be at least 1")
    if seeds > MAX_SEEDS:  # the file lists every seed: 5e9 of them had filled 24 GB of memory
        raise spec_mod.SpecError(f"--seeds {seeds}: at most {MAX_SEEDS:,} (each configuration "
                                 "is trained once a seed)")
    _check_new_name(new_name, name)
    study = load_study(name, url)
    source = stored_study_file(study, name, url)
    trials = trials_frame(name, url, study=study)
    metric = source.study.metric
    done, earlier = _rankable(study, trials, source, f"study {name!r} in {url}")
    # Ranked by the stored objective, Optuna's value: what the search itself compared.
    ranked = config_table(done, ["value"], higher_is_better=not lower_is_better(metric))
    runs = _runs(ranked.head(top), config_columns(done), source, metric, name)
    command = shlex.join(["lrsweep", "rerun", name, "--top", str(top), "--seeds", str(seeds),
                          *(["--name", new_name] if new_name is not None else [])])
    new_name = f"{name}-best" if new_name is None else new_name
    fresh = _fresh_seeds(trials, seeds)
    train = source.train
    shown_url = hide_passwords(url)  # the file is shared: the store's URL without its password
    what = ("The best configuration" if len(runs) == 1 else
            f"The {len(runs)} best configurations")
    over = "1 seed" if seeds == 1 else f"{seeds} seeds"
    lines = [
        f"# {what} of study {name!r} ({shown_url}), re-run over {over} each,",
        f"# written by `{command}`; none of these seeds",
        f"# trained in {name}: the seed a configuration won on would flatter it.",
        f"#   {run_and_report('THIS_FILE', new_name, shown_url)}",
        *([f"# {earlier} trial(s) trained under an earlier study file of {name} (changed "
           "with --allow-changed) are not ranked: they trained otherwise."] if earlier else []),
        "",
        "[study]",
        f"name = {json.dumps(new_name)}",
        f"description = {json.dumps(f'{what} of {name}, over {over}.')}",
        f"metric = {json.dumps(metric)}",
        'sampler = "grid"',
        "",
        "[train]",  # every setting, defaults included: the re-run trains exactly as the search
        *(f"{key} = {_toml(key, value)}" for key, value in asdict(train).items()),
        "",
        "[space]",
        f"seed = {fresh}",
    ]
    for label, chosen, note in runs:
        lines += ["", "[[run]]", f"label = {json.dumps(label)}  # {note}"]
        lines += [f"{k} = {_toml(k, v)}" for k, v in chosen.items()]
    text = "\n".join(lines) + "\n"
    written = spec_mod.parse(text, source="rerun")  # what is written must be a valid study file
    _check_name_free(written, url, shown_url)
    return text


def _check_name_free(written: spec_mod.StudySpec, url: str, shown_url: str) -> None:
    """The re-run's study must be new, or one this same file made (running it again continues
    it): a study of that name made otherwise would refuse the file only when it is run."""
    name = written.study.name
    if name not in store.study_names(store.open_storage(url, create=False)):
        return
    stored = spec_mod.from_stored(load_study(name, url).user_attrs, source="stored")
    if stored is None or stored.canonical() != written.canonical():
        raise spec_mod.SpecError(f"the re-run's name {name!r}: a study of that name in "
                                 f"{shown_url} was made from another file; give the re-run "
                                 "another name with --name")


def _rankable(study: Any, trials: Any, source: spec_mod.StudySpec, where: str
              ) -> tuple[Any, int]:
    """The finished trials to rank, and how many finished ones are left out: those trained
    under an earlier study file (--allow-changed), which trained otherwise than the [train]
    written. Diverged seeds count, as in the reports: a configuration that diverged on some
    seeds must not rank on the one that survived. Pruned trials did not finish."""
    done = finished(trials) if len(trials) else trials
    if done.empty:
        raise StorageError(f"{where} has no finished trial to re-run yet")
    # What the reports' statistics leave out, left out here too: trials of an earlier file,
    # and repeats of a trial's configuration, seed and epochs (counted once).
    aside = set_aside(study, source, done)
    earlier = done["trial"].isin(aside.earlier)
    if earlier.all():
        raise StorageError(f"{where}: every finished trial trained under an earlier study file "
                           "(--allow-changed); none to re-run with its current one")
    return done[~done["trial"].isin(aside.trials)], int(earlier.sum())


def _check_new_name(new_name: str | None, name: str) -> None:
    """--name: a name a new study may have, and not the study re-run (its stored file would
    then differ from the one written, and running it would be refused only later)."""
    if new_name is None:  # NAME-best: a name of 124 characters or more has no room for it
        why = study_names.problem(f"{name}-best")
        if why:
            raise spec_mod.SpecError(f"the re-run's name {name + '-best'!r}: {why}; give it "
                                     "one with --name")
        return
    why = ("empty" if not new_name.strip() else
           "the study re-run; give the new study another name" if new_name == name else
           study_names.problem(new_name))
    if why:
        raise spec_mod.SpecError(f"--name {new_name!r}: {why}")


def _runs(best: Any, columns: list[str], source: spec_mod.StudySpec, metric: str, name: str
          ) -> list[tuple[str, dict[str, Any], str]]:
    """Each best configuration as a [[run]]: its label, the values its schedule takes, and a
    note of how it scored."""
    fixed = {k: d.value for k, d in source.space if isinstance(d, spec_mod.Fixed)}
    runs = []
    for rank, (_, row) in enumerate(best.iterrows(), start=1):
        values = {**fixed, **{c: _plain(row[c]) for c in columns if _present(row[c])}}
        if source.runs and "run" in values:  # a [[run]] study: start from that run's values
            values = {**dict(next(r for r in source.runs if r.label == values["run"]).values)}
        scheduler = values["scheduler"]
        chosen = {k: values[k] for k in source.keys_for(scheduler)
                  if k in values and k not in ("seed", spec_mod.RUN_KEY)}
        label = _label(rank, row["config"])
        note = f"{metric} {row['value_mean']:.4f} over {int(row['value_n'])} trial(s) in {name}"
        if row["failed"]:  # ranked by the metric alone: say when its seeds did not learn
            note += f"; failed: {failed_text(row)}"
        runs.append((label, chosen, note))
    return runs


def _label(rank: int, config: str) -> str:
    """A run's label: its rank and what the search varied, as reports label it, shortened to
    the labels' limit (a search over many dimensions); the rank keeps it unique."""
    label = f"#{rank} " + re.sub(r"^#\d+ ", "", config)  # a re-run's re-run: one rank
    limit = spec_mod.MAX_LABEL
    return label if len(label) <= limit else label[:limit - 1] + "…"


def _fresh_seeds(trials: Any, n: int) -> list[int]:
    """`n` seeds none of the study's trials (finished, pruned or failed) trained with: the
    ones after the largest used, or the smallest unused where those would pass the limit."""
    used = {int(s) for s in trials["seed"].dropna()} if len(trials) else set()
    start = max(used) + 1 if used else 0
    if start + n - 1 <= spec_mod.MAX_SEED:
        return list(range(start, start + n))
    return [s for s in range(len(used) + n) if s not in used][:n]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value  # numpy scalars → Python


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _toml(key: str, value: Any) -> str:
    if key == "milestones":
        return json.dumps(json.loads(value) if isinstance(value, str) else list(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and key not in spec_mod.INTEGER_KEYS:
        return repr(value)
    if isinstance(value, float) and key in spec_mod.INTEGER_KEYS:
        return str(int(value))  # pandas made a whole-number column float
    return json.dumps(value) if isinstance(value, str) else repr(value)
