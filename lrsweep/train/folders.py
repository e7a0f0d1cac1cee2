"""Image-folder datasets (ImageNet's layout) loaded once as `data.Splits` on the device.

Two layouts are understood, class folders named as the classes (labels follow their sorted
names, as torchvision's ImageFolder gives them):

    ROOT/train/<class>/*.png|jpg|…  and  ROOT/val/<class>/…   val/ is the test set
    ROOT/train/<class>/…  alone, or  ROOT/<class>/…          a stratified 1/6 is the test set

Images go through the standard transforms, Resize(image_size) (the short side) then
CenterCrop(image_size), and become float32 in [0, 1] exactly as ToTensor makes them, with 1
channel for greyscale images and 3 for colour (`grayscale`, else decided by the first image).
`validation` training images are held out (stratified, fixed seed `data.SPLIT_SEED`), then
`subset` of the rest kept; only the images kept are decoded.

Like `data.load`, everything stays resident on the device: the engine slices batches out of
device tensors and has no data loader. A folder too large for that is out of scope for now:
kept images need N·C·S²·4 bytes (ImageNet's 1.28M training images at 64×64 in colour: 63 GB),
and more than half the device's memory (the CPU's RAM, or the GPU's) is refused with a
DataError rather than swapped or run out of memory. Decoding is single-process: on one CPU
core about 9,000 28×28 PNGs or 1,400 213×160 JPEGs a second (measured), so a full-size
ImageNet would take over an hour.

    >>> from lrsweep.train import folders
    >>> d = folders.load_imagefolder("imagenette2-160", "cuda", image_size=64,
    ...                              validation=1000)                        # doctest: +SKIP
    >>> d.train_x.shape, d.test_x.shape                                      # doctest: +SKIP
    (torch.Size([8469, 3, 64, 64]), torch.Size([3925, 3, 64, 64]))
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

from lrsweep.train.data import SPLIT_SEED, DataError, Splits, stratified_take, take_test

TEST_SHARE = 1 / 6      # of all images, the test set of a folder without val/
MEMORY_SHARE = 0.5      # of the device's memory, the most the resident images may take
GREY_MODES = {"1", "L", "LA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N", "La"}

_CACHE: dict[tuple, Splits] = {}  # one decode per process and settings, as data.load


def load_imagefolder(root: str | Path, device: str | torch.device = "cpu", *,
                     image_size: int = 28, grayscale: bool | None = None, validation: int = 0,
                     subset: int = 0, test_subset: int = 0) -> Splits:
    """The folder's images as Splits on `device` (see the module docstring); DataError, one
    line naming the path, when the folder is missing, empty, inconsistent or unreadable."""
    root = Path(root).expanduser()
    device = torch.device(device)
    key = (str(root.resolve()), str(device), image_size, grayscale, validation, subset,
           test_subset)
    if key not in _CACHE:
        _CACHE[key] = _load(root, device, image_size, grayscale, validation, subset, test_subset)
    return _CACHE[key]


def _load(root: Path, device: torch.device, image_size: int, grayscale: bool | None,
          validation: int, subset: int, test_subset: int) -> Splits:
    if image_size < 1:
        raise DataError(f"image_size = {image_size} must be at least 1 pixel")
    train_dir, test_dir = _layout(root)
    train, test = _datasets(train_dir, test_dir)
    if grayscale is None:
        with _open(train.samples[0][0]) as first:
            grayscale = first.mode in GREY_MODES
    mode = "L" if grayscale else "RGB"
    # PILToTensor then /255 on the device: ToTensor's values, with 4× less host memory.
    transform = transforms.Compose([transforms.Resize(image_size),
                                    transforms.CenterCrop(image_size),
                                    transforms.PILToTensor()])
    for ds in (train, test):
        if ds is not None:
            ds.loader = functools.partial(_load_image, mode=mode)
            ds.transform = transform

    labels = torch.tensor(train.targets, dtype=torch.long)
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    pool = torch.arange(len(labels))
    if test is None:
        test_idx, pool = stratified_take(labels, pool, round(len(pool) * TEST_SHARE),
                                         generator)
        test, test_labels = train, labels
    else:
        test_idx, test_labels = torch.arange(len(test.targets)), torch.tensor(test.targets)
    if not 0 <= validation < len(pool):
        raise DataError(f"{root}: validation = {validation} must be ≥ 0 and below the "
                        f"{len(pool)} training images")
    val_idx, train_idx = stratified_take(labels, pool, validation, generator)
    if subset:
        if not 0 < subset <= len(train_idx):
            raise DataError(f"{root}: subset = {subset} exceeds the {len(train_idx)} training "
                            f"images left after holding out {validation} for validation")
        train_idx, _ = stratified_take(labels, train_idx, subset, generator)
    test_idx = take_test(test_labels, test_subset, generator, test_dir or root, pool=test_idx)

    channels = 1 if grayscale else 3
    _check_fits(root, len(train_idx) + len(val_idx) + len(test_idx), channels, image_size,
                device)

    def images(ds: ImageFolder, idx: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(idx), channels, image_size, image_size, dtype=torch.uint8)
        for row, i in enumerate(idx.tolist()):
            out[row] = ds[i][0]
        return out.to(device).float().div_(255)

    return Splits(
        train_x=images(train, train_idx), train_y=labels[train_idx].to(device),
        val_x=images(train, val_idx), val_y=labels[val_idx].to(device),
        test_x=images(test, test_idx), test_y=test_labels[test_idx].to(device),
        source=root, classes=len(train.classes))


def _datasets(train_dir: Path, test_dir: Path | None) -> tuple[ImageFolder, ImageFolder | None]:
    """The training folder's dataset and the test folder's, which must hold the same classes."""
    train = _dataset(train_dir)
    test = _dataset(test_dir) if test_dir else None
    if test is not None and test.classes != train.classes:
        missing = sorted(set(train.classes) - set(test.classes))
        if missing:
            raise DataError(f"{test_dir}: no folder for class {missing[0]!r} of {train_dir}")
        extra = min(set(test.classes) - set(train.classes))
        raise DataError(f"{test_dir / extra}: class not in {train_dir}")
    return train, test


def _layout(root: Path) -> tuple[Path, Path | None]:
    """The training folder and the test folder (None: split the test set off the training)."""
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    if (root / "train").is_dir():
        return root / "train", root / "val" if (root / "val").is_dir() else None
    if (root / "val").is_dir():
        raise DataError(f"{root}: has val/ but no train/ beside it")
    return root, None


def _dataset(folder: Path) -> ImageFolder:
    try:
        classes, _ = find_classes(str(folder))
    except FileNotFoundError:
        raise DataError(f"{folder}: no class folders (expected {folder}/<class>/<image>)") from None
    if len(classes) < 2:  # nothing to tell apart: every answer right, "never learned" at 100%
        raise DataError(f"{folder}: one class folder ({classes[0]}); a classifier needs two "
                        "or more")
    try:
        return ImageFolder(str(folder))
    except FileNotFoundError:  # some class folder holds no image: say which
        for name in classes:
            if not any(f.lower().endswith(IMG_EXTENSIONS)
                       for _, _, files in os.walk(folder / name, followlinks=True)
                       for f in files):
                raise DataError(f"{folder / name}: no images ({', '.join(IMG_EXTENSIONS)})"
                                ) from None
        raise


def _open(path: str) -> Image.Image:
    try:
        return Image.open(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({_first_line(exc)})") from None


def _load_image(path: str, mode: str) -> Image.Image:
    with _open(path) as image:
        try:
            return image.convert(mode)  # decodes: a truncated file fails here
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{path}: not a readable image ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_fits(root: Path, n: int, channels: int, size: int, device: torch.device) -> None:
    need = n * channels * size * size * 4
    if device.type == "cuda":
        total = torch.cuda.mem_get_info(device)[1]
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > MEMORY_SHARE * total:
        raise DataError(f"{root}: {n} images of {channels}×{size}×{size} need "
                        f"{need / 2**30:.1f} GiB as float32, more than {MEMORY_SHARE:.0%} of "
                        f"{device}'s {total / 2**30:.1f} GiB; use a smaller image_size or subset")
