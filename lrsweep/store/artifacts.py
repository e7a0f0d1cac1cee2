"""Trained weights as Optuna artifacts (optuna-dashboard lists them; `lrsweep export` reads
them)."""

from __future__ import annotations

import io
import tempfile
import uuid
from pathlib import Path

import optuna

from lrsweep.store import optuna_private
from lrsweep.store.storage import StorageError, folder_beside, load_study, open_storage


WEIGHTS_MIMETYPE = "application/x-pytorch"


def artifact_store(url: str) -> optuna.artifacts.FileSystemArtifactStore:
    """The store's trained weights, as Optuna artifacts (see `folder_beside`)."""
    folder = folder_beside(url, "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return optuna.artifacts.FileSystemArtifactStore(str(folder))


def write_artifact(study: optuna.Study, trial: optuna.Trial,
                   store: optuna.artifacts.FileSystemArtifactStore, filename: str,
                   payload: bytes, mimetype: str) -> dict[str, str]:
    """Optuna's `upload_artifact` in two halves: the file is written into the artifact store
    now, and the returned trial system attribute (what makes it the trial's artifact, listed
    by `get_all_artifact_meta` and optuna-dashboard) goes to the store with the trial's other
    attributes (`record_trial`), not in a commit of its own. Where this Optuna's artifact
    layout is not known, it is uploaded through the public API now, and nothing is returned."""
    artifact_id = str(uuid.uuid4())
    attrs = optuna_private.artifact_attrs(artifact_id, filename, mimetype)
    if attrs is None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / filename
            path.write_bytes(payload)
            optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path),
                                             study_or_trial=trial, mimetype=mimetype)
        return {}
    store.write(artifact_id, io.BytesIO(payload))
    return attrs


def export_weights(name: str, url: str, number: int, out: str | Path) -> tuple[Path, str]:
    """Copy trial `number`'s trained weights (a state_dict for the plain LeNet, or ResNet-18)
    to `out`; returns the path and the model's name."""
    study = load_study(name, url)
    rdb = open_storage(url, create=False)  # the public way to read a trial's artifacts
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise StorageError(f"study {name!r} has no trial {number} (it has 0–{len(trials) - 1})")
    metas = [m for m in optuna.artifacts.get_all_artifact_meta(trials[number], storage=rdb)
             if m.mimetype == WEIGHTS_MIMETYPE]
    if not metas:
        raise StorageError(f"trial {number} of {name!r} has no stored weights (state "
                           f"{trials[number].state.name.lower()}; only finished trials have them)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    optuna.artifacts.download_artifact(artifact_store=artifact_store(url), file_path=str(out),
                                       artifact_id=metas[-1].artifact_id)
    # The artifact's file name begins with the model's: "resnet18-…" or "lenet-…".
    return out, metas[-1].filename.split("-", 1)[0]
