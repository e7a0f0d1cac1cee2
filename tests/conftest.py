"""Shared fixtures: a Fashion-MNIST folder (Debian's real files, else a small generated one),
study files on a tiny subset, a way to run the `lrsweep` command, and each formulation of a
pack's convolutions in turn."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrsweep.train.device import CONVOLUTIONS_ENV
from lrsweep.train.model import CONVOLUTIONS

REAL_DATA = Path("/usr/share/datasets/fashion-mnist")
HAVE_REAL_DATA = all((REAL_DATA / f"{n}.gz").is_file() for n in (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
REPO = Path(__file__).resolve().parents[1]
# Test images a training test evaluates on, each trial and epoch: evaluation on all 10,000 was
# most of the suite's time. 300 make two CPU passes (256 + 44) and fit the stand-in data;
# test_engine checks evaluation on the whole test set once.
TEST_IMAGES = 300


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes (gzip when the name ends in .gz), typed from the format."""
    magic = struct.pack(">HBB", 0, 0x08, array.ndim)
    header = magic + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def write_learnable_fashion(folder: Path, n_train: int = 3000, n_test: int = 300) -> Path:
    """A Fashion-MNIST-shaped folder whose classes are learnable: class c lights up a band of
    rows, plus noise. Balanced labels."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c + 4: 2 * c + 7, :] += 180
        write_idx(folder / f"{part}-images-idx3-ubyte.gz", np.clip(images, 0, 255))
        write_idx(folder / f"{part}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory) -> Path:
    """Debian's real Fashion-MNIST when installed, else a small generated stand-in."""
    if HAVE_REAL_DATA:
        return REAL_DATA
    return write_learnable_fashion(tmp_path_factory.mktemp("fashion"))


def study_toml(name: str, *, scheduler='["constant", "cosine"]', trials: int | None = None,
               sampler: str = "grid", pruner: str = "none", epochs: int = 2, extra: str = "",
               seed: str = "0", base_lr: str = "0.1") -> str:
    """A study file on a tiny subset: seconds per trial on a CPU."""
    trials_line = f"trials = {trials}" if trials is not None else ""
    return f"""
[study]
name = "{name}"
sampler = "{sampler}"
pruner = "{pruner}"
{trials_line}

[train]
epochs = {epochs}
validation = 200
subset = 400
test_subset = {TEST_IMAGES}
batch_size = 64

[space]
scheduler = {scheduler}
base_lr = {base_lr}
seed = {seed}
{extra}
"""


@pytest.fixture
def lrsweep_cli(fashion_dir, tmp_path):
    """Run `python -m lrsweep ARGS` in tmp_path with the test data (and `env` over the
    environment); returns CompletedProcess."""
    def run(*args: str, timeout: float = 300, env: dict | None = None,
            **kwargs) -> subprocess.CompletedProcess:
        env = {**os.environ, "LRSWEEP_DATA": str(fashion_dir), "PYTHONPATH": str(REPO),
               **(env or {})}
        env.pop("LRSWEEP_STORAGE", None)
        return subprocess.run([sys.executable, "-m", "lrsweep", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=timeout, **kwargs)
    return run


@pytest.fixture(params=CONVOLUTIONS)
def convolutions(request, monkeypatch):
    """Each formulation of a LeNet pack's convolutions in turn, chosen as a user chooses it
    (LRSWEEP_CONVOLUTIONS): the engine's tests on the CPU and on a GPU run with both."""
    monkeypatch.setenv(CONVOLUTIONS_ENV, request.param)
    return request.param
