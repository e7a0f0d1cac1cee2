"""Find Fashion-MNIST, load it once per process as tensors on the device, and split it.

Look-up order: an explicit folder (`--data-dir` / `LRSWEEP_DATA`), then
Debian's `dataset-fashion-mnist` folder, then earlier downloads in the cache folder, then a
torchvision download into that cache folder.

    >>> from lrsweep.train import data
    >>> d = data.load("cpu", validation=10_000, subset=2_000)     # doctest: +SKIP
    >>> d.train_x.shape, d.val_x.shape, d.test_x.shape              # doctest: +SKIP
    (torch.Size([2000, 1, 28, 28]), torch.Size([10000, 1, 28, 28]), torch.Size([10000, 1, 28, 28]))
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SPLIT_SEED = 0  # fixed, so every trial of every study validates on the same images
_IMAGES_MAGIC, _LABELS_MAGIC = 0x0803, 0x0801


class DataError(Exception):
    """The dataset is missing, truncated or corrupt; the message says which file and how."""


@dataclass(frozen=True)
class Splits:
    """Images as float32 in [0, 1], shape (N, 1, 28, 28); labels as int64; all on one device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: Path
    classes: int = 10      # labels are 0 … classes − 1


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lrsweep"


def load(device: str | torch.device = "cpu", *, data_dir: str | Path | None = None,
         validation: int = 10_000, subset: int = 0, test_subset: int = 0,
         download: bool = True) -> Splits:
    """Fashion-MNIST on `device`: `validation` images held out of the 60k (stratified, fixed
    seed), then `subset` training images kept (0 = all the rest); `test_subset` of the 10k
    test images (stratified, 0 = all; fixed for given `subset` and `test_subset`: drawn after
    the training subset from the same generator)."""
    folder = locate(data_dir, download=download)
    key = (str(folder), str(torch.device(device)), validation, subset, test_subset)
    if key not in _SPLITS:
        _SPLITS[key] = _split(_read_folder(folder), torch.device(device), validation, subset,
                              test_subset, folder)
    return _SPLITS[key]


def locate(data_dir: str | Path | None = None, *, download: bool = True) -> Path:
    """The folder holding the four IDX files, found or downloaded; DataError if none."""
    explicit = data_dir or os.environ.get("LRSWEEP_DATA")
    if explicit:
        folder = Path(explicit).expanduser()
        missing = _missing_files(folder)
        if missing:
            how = "--data-dir" if data_dir else "LRSWEEP_DATA"
            raise DataError(f"{how}={folder} holds no Fashion-MNIST: {missing[0]}[.gz] is missing")
        return folder
    downloaded = cache_dir() / "FashionMNIST" / "raw"
    for folder in (DEBIAN_DIR, downloaded):
        if not _missing_files(folder):
            return folder
    reason = "download disabled"
    if download:
        try:
            import torchvision  # only users without the data pay for this import

            torchvision.datasets.FashionMNIST(str(cache_dir()), train=True, download=True)
            torchvision.datasets.FashionMNIST(str(cache_dir()), train=False, download=True)
            if not _missing_files(downloaded):
                return downloaded
            reason = f"the download left no IDX files in {downloaded}"
        except Exception as exc:  # offline, proxy, disk full: all end in the same advice
            reason = f"download failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    raise DataError(
        "Fashion-MNIST not found. Point --data-dir or LRSWEEP_DATA at a folder with its four IDX "
        f"files, or `apt-get install dataset-fashion-mnist` (fills {DEBIAN_DIR}), or go online so "
        f"torchvision can download it into {cache_dir()} ({reason})")


def read_idx(path: str | Path) -> torch.Tensor:
    """One IDX file (raw or .gz) as a uint8 tensor of its stated shape; DataError if damaged."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'IDX'} "
                        f"({exc}); the file is truncated or corrupt") from None
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        raise DataError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: the IDX header is cut short")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if _product(shape) == 0:  # nothing to train or test on (and torch cannot view no bytes)
        what = "images" if ndim == 3 else "labels"
        raise DataError(f"{path}: holds no {what} (its header gives shape {shape}); the file is "
                        "empty or damaged")
    expected = header + _product(shape)
    if len(raw) != expected:
        raise DataError(f"{path}: holds {len(raw)} bytes but its header {shape} needs {expected}; "
                        "the file is truncated or corrupt")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).view(*shape)


# --- helpers -------------------------------------------------------------------------------

_RAW: dict[str, dict[str, torch.Tensor]] = {}  # folder -> the four tensors, read once per process
_SPLITS: dict[tuple, Splits] = {}


def _missing_files(folder: Path) -> list[str]:
    return [name for name in FILES.values()
            if not (folder / name).is_file() and not (folder / f"{name}.gz").is_file()]


def _read_folder(folder: Path) -> dict[str, torch.Tensor]:
    if str(folder) not in _RAW:
        tensors = {}
        for key, name in FILES.items():
            path = folder / f"{name}.gz"
            tensors[key] = read_idx(path if path.is_file() else folder / name)
        for part in ("train", "test"):
            images, labels = tensors[f"{part}_images"], tensors[f"{part}_labels"]
            if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
                raise DataError(f"{folder}: {part} images have shape {tuple(images.shape)}, "
                                "not N×28×28")
            if labels.dim() != 1 or len(labels) != len(images):
                raise DataError(f"{folder}: {len(images)} {part} images but "
                                f"{labels.shape[0]} labels")
            if len(labels) and int(labels.max()) > 9:
                raise DataError(f"{folder}: {part} labels go up to {int(labels.max())}, not 0–9")
        _RAW[str(folder)] = tensors
    return _RAW[str(folder)]


def _split(raw: dict[str, torch.Tensor], device: torch.device, validation: int, subset: int,
           test_subset: int, folder: Path) -> Splits:
    images, labels = raw["train_images"], raw["train_labels"]
    n = len(labels)
    if not 0 <= validation < n:
        raise DataError(f"validation = {validation} must be ≥ 0 and below the {n} training images")
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    val_idx, train_idx = stratified_take(labels, torch.arange(n), validation, generator)
    if subset < 0 or test_subset < 0:
        raise DataError(f"subset = {subset}, test_subset = {test_subset}: each must be ≥ 0 "
                        "(0: all)")
    if subset:
        if subset > len(train_idx):
            raise DataError(f"subset = {subset} exceeds the {len(train_idx)} training images left "
                            f"after holding out {validation} for validation")
        train_idx, _ = stratified_take(labels, train_idx, subset, generator)
    # Taken last, so the training and validation images do not depend on it.
    test_idx = take_test(raw["test_labels"], test_subset, generator, folder)

    def images_on_device(x: torch.Tensor) -> torch.Tensor:
        return (x.to(device).unsqueeze(1).float() / 255).contiguous()

    return Splits(
        train_x=images_on_device(images[train_idx]), train_y=labels[train_idx].long().to(device),
        val_x=images_on_device(images[val_idx]), val_y=labels[val_idx].long().to(device),
        test_x=images_on_device(raw["test_images"][test_idx]),
        test_y=raw["test_labels"][test_idx].long().to(device), source=folder)


def take_test(labels: torch.Tensor, test_subset: int, generator: torch.Generator,
              where: Path, pool: torch.Tensor | None = None) -> torch.Tensor:
    """The test images' indices in `pool` (default: all): `test_subset` of them, stratified by
    class, or all for 0. A CPU-scale study evaluates a few thousand test images each epoch."""
    pool = torch.arange(len(labels)) if pool is None else pool
    if not test_subset:
        return pool
    if test_subset > len(pool):
        raise DataError(f"{where}: test_subset = {test_subset} exceeds the {len(pool)} test images")
    return stratified_take(labels, pool, test_subset, generator)[0]


def stratified_take(labels: torch.Tensor, pool: torch.Tensor, k: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Split `pool` (indices into labels) into k taken and the rest, each class contributing
    its share (largest remainder), chosen at random within the class; both ascending."""
    pool = pool[torch.randperm(len(pool), generator=generator)]
    pool_labels = labels[pool].long()  # uint8 labels would index as a mask below
    counts = torch.bincount(pool_labels, minlength=int(labels.max()) + 1)
    exact = counts.double() * k / max(len(pool), 1)
    quota = exact.floor().long()
    short = k - int(quota.sum())
    quota[torch.argsort(exact - exact.floor(), descending=True, stable=True)[:short]] += 1
    by_class = torch.argsort(pool_labels, stable=True)  # grouped by class, random within
    starts = counts.cumsum(0) - counts
    rank = torch.arange(len(pool)) - starts[pool_labels[by_class]]
    taken = torch.zeros(len(pool), dtype=torch.bool)
    taken[by_class] = rank < quota[pool_labels[by_class]]
    return pool[taken].sort().values, pool[~taken].sort().values


def _product(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out
