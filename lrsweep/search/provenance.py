"""A study in the store and where it came from: created with its study file, the versions and
the git commit that ran it; or loaded, and checked to be the same study file."""

from __future__ import annotations

import platform
import subprocess
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from lrsweep import __version__
from lrsweep.search import space
from lrsweep.search import spec as spec_mod
from lrsweep.search.pruning import make_pruner
from lrsweep.search.spec import Choice, Fixed, SpecError, StudySpec
from lrsweep.store.storage import StorageError, load_study
from lrsweep.train.device import torch_version


def load_stored_spec(name: str, storage: str) -> StudySpec:
    """The study file a stored study was started from."""
    study = load_study(name, storage)
    stored = spec_mod.from_stored(study.user_attrs, source=f"{name} (stored in {storage})",
                                  to_run=True)
    if stored is None:
        raise StorageError(f"study {name!r} in {storage} was not made by lrsweep (no stored study file)")
    return stored


def create_or_load(spec: StudySpec, rdb: optuna.storages.RDBStorage, url: str,
                    allow_changed: bool) -> optuna.Study:
    name = spec.study.name
    if name in optuna.study.get_all_study_names(rdb):
        study = optuna.load_study(study_name=name, storage=rdb, pruner=make_pruner(spec))
        _check_same_spec(study, spec, url, allow_changed)
        _name_metric(study, spec)  # studies stored before lrsweep named it
        return study
    study = optuna.create_study(study_name=name, storage=rdb, direction=spec.direction,
                                pruner=make_pruner(spec), load_if_exists=True)
    _check_same_objective(study, None, spec, url)  # another worker may have just made it
    _store_spec(study, spec)
    _name_metric(study, spec)
    for key, value in provenance().items():
        study.set_user_attr(key, value)
    return study


def _name_metric(study: optuna.Study, spec: StudySpec) -> None:
    """Give Optuna the objective's name, so the dashboard and Optuna's plots label it
    `val_acc` and not "Objective 0"."""
    if study.metric_names == [spec.study.metric]:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # set_metric_names is marked experimental (Optuna 3.2+)
        study.set_metric_names([spec.study.metric])


def _check_same_objective(study: optuna.Study, stored: StudySpec | None, spec: StudySpec,
                          url: str) -> None:
    """The metric and its direction are the study's identity, changed by no --allow-changed:
    one study of accuracies and losses has no best trial."""
    old = stored.study.metric if stored is not None else None
    direction = study.direction.name.lower()
    if (old is None or old == spec.study.metric) and direction == spec.direction:
        return
    was = f"{old} ({direction})" if old else f"its objective ({direction})"
    raise SpecError(f"{spec.source}: study {spec.study.name!r} in {url} optimizes {was}, not "
                    f"{spec.study.metric} ({spec.direction}); a study keeps its metric even with "
                    "--allow-changed: give this one a new [study] name")


def _check_same_spec(study: optuna.Study, spec: StudySpec, url: str, allow_changed: bool) -> None:
    stored_text = study.user_attrs.get("study_file")
    if stored_text is None and not study.get_trials(deepcopy=False):
        # Another worker created it an instant ago and is storing its file: ours is the same
        # or will be checked against it by every later run.
        _check_same_objective(study, None, spec, url)
        _store_spec(study, spec)
        return
    if stored_text is None:
        raise StorageError(f"study {spec.study.name!r} in {url} was not made by lrsweep; "
                           "choose another [study] name")
    if spec_mod.is_stored_file(study.user_attrs, spec):
        _remember(study, spec)  # a study stored before files were remembered
        return
    stored = spec_mod.from_stored(study.user_attrs, source="stored")
    _check_same_objective(study, stored, spec, url)
    changes = _differences(stored, spec)
    if changes and not allow_changed:
        raise SpecError(f"{spec.source}: study {spec.study.name!r} in {url} was last run with a "
                        f"different study file ({'; '.join(changes[:3])}); give the study a new "
                        "[study] name, or pass --allow-changed to continue it with this file")
    if changes:
        _check_continuable(study, spec, url)
        study.set_user_attr("study_file_previous", stored_text)
        _remember(study, stored)  # a study stored before files were remembered
    _store_spec(study, spec)  # a new total or new comments are no change of study


class StoredFileChanged(SpecError):
    """Another run replaced the study's stored file with one that trains otherwise, while this
    one ran (`stored_file_changed`): `run FILE` stops on it, `resume` and `worker` reload the
    stored file and go on."""


def stored_file_changed(study: optuna.Study, spec: StudySpec) -> StoredFileChanged | None:
    """Whether the study's stored file no longer trains as this run's does (the error to
    raise), read before asking trials. Another run may have continued the study with
    --allow-changed in an instant when none of this run's trials was running (it refuses
    while any is): this run then asks no more, finishes the trials it holds, and stops."""
    attrs = study.user_attrs
    stored = {"text": attrs.get("study_file"), "overrides": attrs.get("study_overrides", [])}
    if stored["text"] is None or spec_mod.is_stored_file(attrs, spec):
        return None
    if spec_mod.stored_trains_like(stored, spec):
        return None
    name = spec.study.name
    return StoredFileChanged(
        f"{spec.source}: another run has continued study {name!r} meanwhile (--allow-changed) "
        "under a study file that trains otherwise, or that this lrsweep cannot read; this run "
        f"stopped asking trials under its own: continue under the stored file (`lrsweep resume "
        f"{name}` on the same store)")


def _check_continuable(study: optuna.Study, spec: StudySpec, url: str) -> None:
    """What --allow-changed cannot change, refused before the stored file is replaced: a
    searched dimension's kind, scale or list of choices (Optuna refuses a parameter drawn
    otherwise than the study's trials drew it, at the first trial that draws it), and the
    settings of trials begun under the stored file and not finished (continued under this one,
    they would be stored as if trained under it from their first epoch)."""
    trials = study.get_trials(deepcopy=False)
    drawn: dict[str, BaseDistribution] = {}
    for trial in trials:
        for key, distribution in trial.distributions.items():
            drawn.setdefault(key, distribution)
    where = f"{spec.source}: study {spec.study.name!r} in {url}"
    for key, new in space.distributions(spec).items():
        try:
            if key in drawn:
                optuna.distributions.check_distribution_compatibility(drawn[key], new)
        except ValueError:
            what = "[[run]] labels" if key == spec_mod.RUN_KEY else f"[space] {key}"
            raise SpecError(f"{where}: its trials drew {what} from {_drawn(drawn[key])}, this "
                            f"file from {_drawn(new)}; a study keeps each dimension's kind, "
                            "scale and choices, even with --allow-changed: give this file a "
                            "new [study] name") from None
    unfinished = [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    if unfinished:
        numbers = ", ".join(f"#{n}" for n in unfinished[:5]) + (", …" if len(unfinished) > 5
                                                                else "")
        which = f"trial {numbers} began" if len(unfinished) == 1 else f"trials {numbers} began"
        raise SpecError(f"{where}: {which} under its stored file and not finished, running "
                        "in a worker or interrupted (continued under this file, each would be "
                        "stored as if trained under it): let it finish, or finish the study "
                        f"under its stored file first (`lrsweep resume {spec.study.name}` on the "
                        "same store), or give this file a new [study] name")


def _drawn(distribution: BaseDistribution) -> str:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return f"the choices {list(distribution.choices)}"
    kind = "whole numbers" if isinstance(distribution, optuna.distributions.IntDistribution) \
        else "numbers"
    scale = " on a log scale" if distribution.log else ""
    return f"{kind} in [{distribution.low}, {distribution.high}]{scale}"


def _store_spec(study: optuna.Study, spec: StudySpec) -> None:
    study.set_user_attr("study_file", spec.text)
    study.set_user_attr("study_file_sha256", spec.sha256)
    study.set_user_attr("study_file_source", spec.source)
    study.set_user_attr("study_overrides", list(spec.overrides))
    _remember(study, spec)


def _remember(study: optuna.Study, spec: StudySpec) -> None:
    """Every study file the study has run under, by identity (`STUDY_FILE_ATTR` names each
    trial's): after --allow-changed, the trials trained before still say how they trained
    (`report.read.trained_under_earlier_files`)."""
    if spec.identity not in spec_mod.stored_files(study.user_attrs):
        study.set_user_attr(spec_mod.STUDY_FILE_PREFIX + spec.identity,
                            {"text": spec.text, "overrides": list(spec.overrides)})


def _differences(old: StudySpec, new: StudySpec) -> list[str]:
    if old.trains_like(new):
        return []
    changes = []
    for section in ("study", "train"):
        a, b = asdict(getattr(old, section)), asdict(getattr(new, section))
        changes += [f"[{section}] {k}: {a[k]!r} → {b[k]!r}" for k in a
                    if a[k] != b[k] and k != "trials"]
    a, b = dict(old.space), dict(new.space)
    changes += [f"[space] {k}: {_show(a.get(k))} → {_show(b.get(k))}"
                for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    old_runs = {r.label: r.values for r in old.runs}
    new_runs = {r.label: r.values for r in new.runs}
    changes += [f"[[run]] {label!r}: " + ("added" if label not in old_runs else "removed"
                                         if label not in new_runs else "changed")
                for label in sorted(set(old_runs) | set(new_runs))
                if old_runs.get(label) != new_runs.get(label)]
    return changes


def _show(dim: Any) -> str:
    if dim is None:
        return "absent"
    if isinstance(dim, Fixed):
        return repr(dim.value)
    if isinstance(dim, Choice):
        return repr(list(dim.values))
    return f"{{low = {dim.low}, high = {dim.high}, log = {str(dim.log).lower()}}}"


def provenance() -> dict[str, Any]:
    return {"versions": {"lrsweep": __version__, "torch": torch_version(),
                         "optuna": optuna.__version__, "python": platform.python_version()},
            "git_commit": git_commit(), "host": platform.node()}


def git_commit() -> str | None:
    """HEAD's commit, marked "-dirty" when the package's own files differ from it: the code
    that ran is then not the commit's."""
    package = Path(__file__).resolve().parents[1]  # lrsweep/, not only this room
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=package, timeout=5)
        commit = out.stdout.strip()
        if not commit:
            return None
        changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "."], cwd=package,
                                 capture_output=True, timeout=5).returncode == 1
        return commit + ("-dirty" if changed else "")
    except (OSError, subprocess.SubprocessError):
        return None
