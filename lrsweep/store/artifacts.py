"""Trained weights as Optuna artifacts (optuna-dashboard lists them; `lrsweep export` reads
them).

A trial has one weights artifact, whatever happens: its id is a function of the trial (the
study, the trial's id and the instant the store made it), so a trial told again after a kill
writes the same file and the same attribute instead of a second of each. Files are written
whole or not at all (a temporary file renamed), and temporary files of killed processes are
removed when a study loop next opens the folder.
"""

from __future__ import annotations

import io
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import BinaryIO

import optuna

from lrsweep.atomic import remove_orphans, write_atomically
from lrsweep.store import leases, optuna_private
from lrsweep.store.places import folder_beside
from lrsweep.store.storage import StorageError, load_study, open_storage


WEIGHTS_MIMETYPE = "application/x-pytorch"
# A namespace of lrsweep's own for the artifact ids derived from trials (uuid5).
_IDS = uuid.UUID("5d0c2f8e-6a43-4b59-9f4e-0b7c1e2a9d31")


class AtomicArtifactStore(optuna.artifacts.FileSystemArtifactStore):
    """Optuna's file-system artifact store, writing each file whole or not at all: a kill
    mid-write leaves a temporary file (removed at the next start), never a truncated artifact
    under the id a trial records."""

    def __init__(self, folder: str | Path) -> None:
        super().__init__(str(folder))
        self.folder = Path(folder)

    def path(self, artifact_id: str) -> Path:
        return self.folder / artifact_id

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        target = self.path(artifact_id)
        try:
            write_atomically(target, content_body)  # lrsweep.atomic: the checkpoints' rule
        except OSError as error:
            if error.filename is None:  # say which file
                raise OSError(error.errno, error.strerror, str(target)) from error
            raise

    def remove_orphans(self) -> list[Path]:
        """Remove temporary files no write will finish; returns those removed."""
        return remove_orphans(self.folder)


def artifact_store(url: str) -> AtomicArtifactStore:
    """The store's trained weights, as Optuna artifacts (see `folder_beside`), for a study
    loop: the folder is made, and cleared of temporary files that killed processes left."""
    folder = folder_beside(url, "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    store = AtomicArtifactStore(folder)
    store.remove_orphans()
    return store


def artifact_id(study: optuna.Study, trial: optuna.Trial, filename: str) -> str:
    """The id of a trial's artifact named `filename`: the same each time the trial is told.
    The trial's id alone repeats across stores sharing one artifact folder (two PostgreSQL
    databases and `results/artifacts/`, or a store made anew beside an old folder), so the
    study's name and the instant the store made the trial are in it too, to the second (the
    process that asked the trial holds Optuna's own clock reading; one that took it over, the
    store's copy, which some databases keep to the second)."""
    started = trial.datetime_start
    stamp = started.replace(microsecond=0).isoformat() if started else ""
    key = f"{study.study_name}\0{optuna_private.trial_id(trial)}\0{stamp}\0{filename}"
    return str(uuid.uuid5(_IDS, key))


def write_artifact(study: optuna.Study, trial: optuna.Trial,
                   store: optuna.artifacts.FileSystemArtifactStore, filename: str,
                   payload: bytes, mimetype: str) -> dict[str, str]:
    """Optuna's `upload_artifact` in two halves: the file is written into the artifact store
    now, and the returned trial system attribute (what makes it the trial's artifact, listed
    by `get_all_artifact_meta` and optuna-dashboard) goes to the store with the trial's other
    attributes (`record_trial`), not in a commit of its own. Writing a trial's artifact again
    replaces the file and returns the same attribute. Where this Optuna's artifact layout is
    not known, it is uploaded through the public API now (a new id each time), and nothing is
    returned."""
    identity = artifact_id(study, trial, filename)
    attrs = optuna_private.artifact_attrs(identity, filename, mimetype)
    if attrs is None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / filename
            path.write_bytes(payload)
            optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path),
                                             study_or_trial=trial, mimetype=mimetype)
        return {}
    store.write(identity, io.BytesIO(payload))
    return attrs


# How a trial that did not complete ended (its recorded outcome), for export's warning.
_ENDED = {"pruned": "was pruned", "never learned": "never learned", "collapsed": "collapsed",
          "non-finite": "went non-finite"}


def export_weights(name: str, url: str, number: int, out: str | Path) -> tuple[Path, str]:
    """Copy trial `number`'s trained weights (a state_dict for the plain LeNet, or ResNet-18)
    to `out`; returns the path and the model's name. Nothing is created unless the weights
    are there to copy: a missing artifact file is a StorageError naming the folder."""
    study = load_study(name, url)
    rdb = open_storage(url, create=False)  # the public way to read a trial's artifacts
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        has = f"it has 0–{len(trials) - 1}" if trials else "it has no trials yet"
        raise StorageError(f"study {name!r} has no trial {number} ({has})")
    metas = [m for m in optuna.artifacts.get_all_artifact_meta(trials[number], storage=rdb)
             if m.mimetype == WEIGHTS_MIMETYPE]
    if not metas:
        (state,) = leases.state_names(study, [trials[number]])
        raise StorageError(f"trial {number} of {name!r} has no stored weights (state {state}; "
                           "only finished trials have them)")
    folder = folder_beside(url, "artifacts")
    source = folder / metas[-1].artifact_id
    if not source.is_file():
        raise StorageError(f"trial {number}'s weights ({metas[-1].filename}) are not in the "
                           f"store's artifact folder {folder}/ (file {metas[-1].artifact_id}): "
                           "copy that folder along with the store, or point LRSWEEP_ARTIFACTS "
                           "at it")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as weights:
        AtomicArtifactStore(out.parent).write(out.name, weights)
    ended = _ENDED.get(trials[number].user_attrs.get("outcome"))
    if ended:  # copied all the same: what a failed trial's weights look like is worth a look
        warnings.warn(f"trial {number} of {name!r} {ended}: {out} holds the weights its last "
                      "epoch left", stacklevel=2)
    # The artifact's file name begins with the model's: "resnet18-…" or "lenet-…".
    return out, metas[-1].filename.split("-", 1)[0]
