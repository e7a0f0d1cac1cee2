"""Tests for lrsweep.folders: image folders written here with PIL, read back as Splits.

Every image is one flat colour that encodes its class and its number, v = 20 + 60·c + 3·i
(c: the class's rank in sorted name order, i: the image's number), so where an image landed
and whether its label still fits it can be read off its pixels. Flat images stay flat under
resizing and cropping, so their values are known exactly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from lrsweep.train import folders
from lrsweep.train.data import DataError

CLASSES = ["cat", "dog", "emu"]  # labels 0, 1, 2: sorted names
PER_CLASS, PER_CLASS_VAL = 12, 4


def value(c: int, i: int) -> int:
    return 20 + 60 * c + 3 * i


def rgb(v: int) -> tuple[int, int, int]:
    return (v, 255 - v, v // 2)


def write_images(folder: Path, numbers: range, mode: str = "L",
                 size: tuple[int, int] = (28, 28)) -> None:
    """One PNG per number in every class folder; classes written in reverse order, so that
    label order must come from sorting, not from the order of creation."""
    for c, name in reversed(list(enumerate(CLASSES))):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in numbers:
            colour = value(c, i) if mode == "L" else rgb(value(c, i))
            Image.new(mode, size, colour).save(folder / name / f"{i:03d}.png")


@pytest.fixture
def split_layout(tmp_path) -> Path:
    """ROOT/train and ROOT/val, greyscale; val's images are numbered after train's."""
    write_images(tmp_path / "train", range(PER_CLASS))
    write_images(tmp_path / "val", range(PER_CLASS, PER_CLASS + PER_CLASS_VAL))
    return tmp_path


def decode(x: torch.Tensor) -> list[int]:
    """Each image's value v back from its (flat) pixels."""
    return [round(float(v) * 255) for v in x[:, 0, 0, 0]]


def class_of(v: int) -> int:
    return (v - 20) // 60


def assert_well_formed(x: torch.Tensor, y: torch.Tensor, channels: int = 1,
                       size: int = 28) -> None:
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (len(y), channels, size, size)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # Flat images, and labels that fit their pixels (so labels follow sorted class names).
    assert (x == x[:, :, :1, :1]).all()
    assert [class_of(v) for v in decode(x)] == y.tolist()


def test_train_and_val_folders(split_layout):
    d = folders.load_imagefolder(split_layout)
    assert_well_formed(d.train_x, d.train_y)
    assert_well_formed(d.test_x, d.test_y)
    assert sorted(decode(d.train_x)) == sorted(value(c, i) for c in range(3)
                                               for i in range(PER_CLASS))
    assert sorted(decode(d.test_x)) == sorted(  # the test set is val/, whole
        value(c, i) for c in range(3) for i in range(PER_CLASS, PER_CLASS + PER_CLASS_VAL))
    assert d.val_x.shape == (0, 1, 28, 28) and d.val_y.shape == (0,)
    assert d.source == split_layout


def test_validation_and_subset_are_stratified_and_disjoint(split_layout):
    d = folders.load_imagefolder(split_layout, validation=6, subset=9)
    assert_well_formed(d.val_x, d.val_y)
    assert_well_formed(d.train_x, d.train_y)
    assert torch.bincount(d.val_y).tolist() == [2, 2, 2]
    assert torch.bincount(d.train_y).tolist() == [3, 3, 3]
    train, val = set(decode(d.train_x)), set(decode(d.val_x))
    assert not train & val
    assert train | val <= {value(c, i) for c in range(3) for i in range(PER_CLASS)}
    # The split has a fixed seed: the same folder elsewhere splits the same way.
    copy = split_layout.parent / "copy"
    shutil.copytree(split_layout, copy)
    again = folders.load_imagefolder(copy, validation=6, subset=9)
    assert set(decode(again.val_x)) == val and set(decode(again.train_x)) == train


def test_test_subset_takes_a_stratified_part_of_val(split_layout):
    d = folders.load_imagefolder(split_layout, validation=6, test_subset=3)
    assert_well_formed(d.test_x, d.test_y)
    assert torch.bincount(d.test_y).tolist() == [1, 1, 1]
    whole = folders.load_imagefolder(split_layout, validation=6)
    assert set(decode(d.test_x)) <= set(decode(whole.test_x))
    assert decode(d.train_x) == decode(whole.train_x) and decode(d.val_x) == decode(whole.val_x)


@pytest.mark.parametrize("under_train", [False, True])
def test_without_val_a_stratified_sixth_is_the_test_set(tmp_path, under_train):
    write_images(tmp_path / "train" if under_train else tmp_path, range(PER_CLASS))
    d = folders.load_imagefolder(tmp_path, validation=3)
    for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)):
        assert_well_formed(x, y)
    assert torch.bincount(d.test_y).tolist() == [2, 2, 2]   # 36 / 6
    assert torch.bincount(d.val_y).tolist() == [1, 1, 1]
    assert len(d.train_y) == 36 - 6 - 3
    parts = [set(decode(x)) for x in (d.train_x, d.val_x, d.test_x)]
    assert set.union(*parts) == {value(c, i) for c in range(3) for i in range(PER_CLASS)}
    assert sum(map(len, parts)) == 36  # disjoint


def test_colour_images_get_three_channels(tmp_path):
    write_images(tmp_path, range(6), mode="RGB")
    d = folders.load_imagefolder(tmp_path)
    assert d.train_x.shape[1:] == (3, 28, 28)
    for x, y in ((d.train_x, d.train_y), (d.test_x, d.test_y)):
        for image, label in zip(x, y.tolist()):
            colours = [rgb(value(label, i)) for i in range(6)]
            pixel = tuple(round(float(v) * 255) for v in image[:, 5, 7])
            assert pixel in colours
            assert (image == image[:, :1, :1]).all()


def test_colour_images_asked_for_in_grey(tmp_path):
    write_images(tmp_path, range(6), mode="RGB")
    d = folders.load_imagefolder(tmp_path, grayscale=True)
    assert d.train_x.shape[1:] == (1, 28, 28)
    # ITU-R 601-2 luma, L = 0.299 R + 0.587 G + 0.114 B, as PIL converts (to within rounding).
    lumas = {c: [0.299 * r + 0.587 * g + 0.114 * b for r, g, b in
                 (rgb(value(c, i)) for i in range(6))] for c in range(3)}
    for image, label in zip(d.train_x, d.train_y.tolist()):
        grey = float(image[0, 0, 0]) * 255
        assert min(abs(grey - luma) for luma in lumas[label]) <= 0.51


def test_grey_images_asked_for_in_colour(tmp_path):
    write_images(tmp_path, range(6))
    d = folders.load_imagefolder(tmp_path, grayscale=False)
    assert d.train_x.shape[1:] == (3, 28, 28)
    assert (d.train_x[:, 0] == d.train_x[:, 1]).all() and (d.train_x[:, 1] == d.train_x[:, 2]).all()


def test_resize_then_centre_crop(tmp_path):
    # 40 wide × 30 high: Resize(30) keeps it, CenterCrop(30) drops 5 columns each side, where
    # the image is dark; what is left is the bright middle.
    for name in CLASSES:
        (tmp_path / name).mkdir()
        for i in range(6):
            image = Image.new("L", (40, 30), 10)
            image.paste(200, (5, 0, 35, 30))
            image.save(tmp_path / name / f"{i}.png")
    d = folders.load_imagefolder(tmp_path, image_size=30)
    assert d.train_x.shape[1:] == (1, 30, 30)
    assert (d.train_x == 200 / 255).all()
    small = folders.load_imagefolder(tmp_path, image_size=12)
    assert small.train_x.shape[1:] == (1, 12, 12)


def test_too_large_for_memory_is_refused(split_layout, monkeypatch):
    monkeypatch.setattr(folders, "MEMORY_SHARE", 1e-12)
    with pytest.raises(DataError, match=r"GiB as float32"):
        folders.load_imagefolder(split_layout, image_size=20)


# --- bad input: one line, naming the path ---------------------------------------------------

def no_folder(tmp: Path) -> tuple[Path, str]:
    return tmp / "absent", "no such folder"


def a_file(tmp: Path) -> tuple[Path, str]:
    (tmp / "file").write_text("x")
    return tmp / "file", "not a folder"


def no_class_folders(tmp: Path) -> tuple[Path, str]:
    (tmp / "loose.png").write_bytes(b"")
    return tmp, "no class folders"


def empty_class(tmp: Path) -> tuple[Path, str]:
    write_images(tmp, range(2))
    (tmp / "fox").mkdir()
    (tmp / "fox" / "notes.txt").write_text("no images here")
    return tmp, "fox: no images"


def one_class(tmp: Path) -> tuple[Path, str]:
    # Trained, it stored val_acc 1 and outcome "never learned": nothing to tell apart.
    write_images(tmp, range(2))
    for extra in CLASSES[1:]:
        shutil.rmtree(tmp / extra)
    return tmp, f"one class folder ({CLASSES[0]}); a classifier needs two or more"


def class_missing_from_val(tmp: Path) -> tuple[Path, str]:
    write_images(tmp / "train", range(2))
    write_images(tmp / "val", range(2))
    shutil.rmtree(tmp / "val" / "dog")
    return tmp, "no folder for class 'dog'"


def class_only_in_val(tmp: Path) -> tuple[Path, str]:
    write_images(tmp / "train", range(2))
    write_images(tmp / "val", range(2))
    shutil.copytree(tmp / "val" / "dog", tmp / "val" / "fox")
    return tmp, "fox: class not in"


def val_without_train(tmp: Path) -> tuple[Path, str]:
    write_images(tmp / "val", range(2))
    return tmp, "has val/ but no train/"


def garbage_image(tmp: Path) -> tuple[Path, str]:
    write_images(tmp, range(3))
    (tmp / "dog" / "001.png").write_bytes(b"this is not a png at all")
    return tmp, "001.png: not a readable image"


def truncated_image(tmp: Path) -> tuple[Path, str]:
    write_images(tmp, range(3))
    image = tmp / "emu" / "002.png"
    Image.effect_noise((28, 28), 40).save(image)  # noise: its pixel data is not tiny
    image.write_bytes(image.read_bytes()[:200])
    return tmp, "002.png: not a readable image"


@pytest.mark.parametrize("make", [no_folder, a_file, no_class_folders, empty_class, one_class,
                                  class_missing_from_val, class_only_in_val, val_without_train,
                                  garbage_image, truncated_image])
def test_bad_folders_raise_one_line_naming_the_path(tmp_path, make):
    root, what = make(tmp_path)
    with pytest.raises(DataError) as info:
        folders.load_imagefolder(root)
    message = str(info.value)
    assert what in message and str(tmp_path) in message
    assert "\n" not in message


@pytest.mark.parametrize("settings, what", [
    ({"validation": 36}, "validation = 36"),    # 36 training images: at least one must stay
    ({"validation": -1}, "validation = -1"),
    ({"validation": 30, "subset": 7}, "subset = 7 exceeds the 6"),
    ({"image_size": 0}, "image_size = 0"),
    ({"test_subset": 1000}, "test_subset = 1000 exceeds the"),
])
def test_impossible_sizes(split_layout, settings, what):
    with pytest.raises(DataError, match=what):
        folders.load_imagefolder(split_layout, **settings)
