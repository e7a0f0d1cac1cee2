"""Tests for lrsweep.data: finding Fashion-MNIST, reading IDX files, splitting.

The IDX files are written here with `struct` and `gzip` straight from the format (a
big-endian header: magic 0x00000803 + N, 28, 28 for images, 0x00000801 + N for labels, then
uint8 data), sharing no code with lrsweep.  Every generated image carries its own index in
its first two pixels and its label in the third, so a split can be checked by content:
which originals landed where, and whether each label still belongs to its image.

No test downloads anything: `locate`/`load` run with download=False, with an explicit folder,
or with torchvision's FashionMNIST class replaced by a fake that writes IDX files.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

from lrsweep.train import data
from lrsweep.train.data import DataError

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
NAMES = {  # the file names Fashion-MNIST ships with, spelled out independently of data.FILES
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
N_TRAIN, N_TEST = 200, 50  # balanced: label of image i is i % 10


# --- writing IDX files -----------------------------------------------------------------------

def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload


def image_pixels(i: int, label: int) -> bytes:
    """28×28 bytes: index low byte, index high byte, label, then 255 and 51 (→ 1.0 and 0.2)."""
    return bytes([i % 256, i // 256, label, 255, 51]) + bytes(28 * 28 - 5)


def write(path: Path, content: bytes, gz: bool = True) -> Path:
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def write_fashion(folder: Path, n_train: int = N_TRAIN, n_test: int = N_TEST, gz: bool = True,
                  **override: bytes) -> Path:
    """The four files in `folder`; `override` maps a NAMES key to replacement file content."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("test", n_test)):
        labels = [i % 10 for i in range(n)]
        content = {
            f"{part}_images": idx_bytes(IMAGES_MAGIC, (n, 28, 28),
                                        b"".join(image_pixels(i, y) for i, y in enumerate(labels))),
            f"{part}_labels": idx_bytes(LABELS_MAGIC, (n,), bytes(labels)),
        }
        for key, body in content.items():
            write(folder / NAMES[key], override.get(key, body), gz)
    return folder


def ids(x: torch.Tensor) -> list[int]:
    """The original index of each image, decoded from its first two pixels."""
    flat = (x.reshape(len(x), -1)[:, :2] * 255).round().long()
    return (flat[:, 0] + 256 * flat[:, 1]).tolist()


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Fresh per-process caches, no LRSWEEP_DATA from the caller's shell, and an empty cache
    folder, so that no test sees another's results or the developer's own downloads."""
    monkeypatch.setattr(data, "_RAW", {})
    monkeypatch.setattr(data, "_SPLITS", {})
    monkeypatch.delenv("LRSWEEP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def fashion(tmp_path) -> Path:
    """A folder with a small, balanced, gz-compressed Fashion-MNIST."""
    return write_fashion(tmp_path / "fashion")


@pytest.fixture
def no_debian(monkeypatch, tmp_path) -> Path:
    """Debian's folder replaced by an empty one, whatever this machine has installed."""
    empty = tmp_path / "debian-empty"
    empty.mkdir()
    monkeypatch.setattr(data, "DEBIAN_DIR", empty)
    return empty


def clear_caches(monkeypatch):
    monkeypatch.setattr(data, "_RAW", {})
    monkeypatch.setattr(data, "_SPLITS", {})


# --- reading ---------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_gives_the_stated_shape_and_bytes(tmp_path, gz):
    pixels = b"".join(image_pixels(i, 7) for i in range(3))
    path = write(tmp_path / "x-idx3-ubyte", idx_bytes(IMAGES_MAGIC, (3, 28, 28), pixels), gz)
    x = data.read_idx(path)
    assert x.dtype == torch.uint8 and x.shape == (3, 28, 28)
    assert x[2, 0, :5].tolist() == [2, 0, 7, 255, 51]
    y = data.read_idx(write(tmp_path / "y-idx1-ubyte",
                            idx_bytes(LABELS_MAGIC, (4,), bytes([9, 0, 3, 1])), gz))
    assert y.shape == (4,) and y.tolist() == [9, 0, 3, 1]


@pytest.mark.parametrize("gz", [True, False])
def test_load_scales_shapes_and_types(fashion, tmp_path, gz):
    folder = fashion if gz else write_fashion(tmp_path / "raw", gz=False)
    d = data.load("cpu", data_dir=folder, validation=0)
    assert d.source == folder
    assert d.train_x.shape == (N_TRAIN, 1, 28, 28) and d.test_x.shape == (N_TEST, 1, 28, 28)
    for x in (d.train_x, d.val_x, d.test_x):
        assert x.dtype == torch.float32
    for y in (d.train_y, d.val_y, d.test_y):
        assert y.dtype == torch.int64
    assert float(d.train_x.min()) == 0.0 and float(d.train_x.max()) == 1.0
    assert d.train_x[0, 0, 0, 3] == 1.0                               # 255 → 1
    assert d.train_x[0, 0, 0, 4] == pytest.approx(0.2)                # 51 → 0.2
    assert d.test_y.tolist() == [i % 10 for i in range(N_TEST)]
    assert ids(d.test_x) == list(range(N_TEST))                        # test set whole, in order


def test_load_from_mixed_raw_and_gz_folder(tmp_path):
    # Each file may be raw or .gz independently (e.g. someone gunzipped only the big ones).
    folder = write_fashion(tmp_path / "mixed")
    for key in ("train_images", "test_labels"):
        gz = folder / f"{NAMES[key]}.gz"
        (folder / NAMES[key]).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    d = data.load("cpu", data_dir=folder, validation=0)
    assert ids(d.train_x) == list(range(N_TRAIN)) and len(d.test_y) == N_TEST


def test_load_via_env_var(fashion, monkeypatch, no_debian):
    monkeypatch.setenv("LRSWEEP_DATA", str(fashion))
    d = data.load("cpu", validation=50, download=False)
    assert d.source == fashion and len(d.train_y) == 150


def test_load_is_cached_per_process(fashion):
    first = data.load("cpu", data_dir=fashion, validation=50)
    assert data.load("cpu", data_dir=fashion, validation=50) is first


# --- splitting -------------------------------------------------------------------------------

def test_labels_stay_with_their_images(fashion):
    d = data.load("cpu", data_dir=fashion, validation=50, subset=100)
    for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)):
        assert (x[:, 0, 0, 2] * 255).round().long().tolist() == y.tolist()
        assert [i % 10 for i in ids(x)] == y.tolist()


def test_validation_is_stratified_disjoint_and_complete(fashion):
    d = data.load("cpu", data_dir=fashion, validation=50)
    assert torch.bincount(d.val_y, minlength=10).tolist() == [5] * 10
    assert torch.bincount(d.train_y, minlength=10).tolist() == [15] * 10
    train, val = ids(d.train_x), ids(d.val_x)
    assert len(set(train)) == len(train) == 150 and len(set(val)) == len(val) == 50
    assert not set(train) & set(val)
    assert set(train) | set(val) == set(range(N_TRAIN))


@pytest.mark.parametrize("validation", [1, 7, 13, 99, 199])
def test_uneven_validation_sizes_keep_proportions(fashion, validation):
    # Largest remainder: the exact size, and every class within one of its fair share.
    d = data.load("cpu", data_dir=fashion, validation=validation)
    assert len(d.val_y) == validation and len(d.train_y) == N_TRAIN - validation
    fair = validation / 10
    for count in torch.bincount(d.val_y, minlength=10).tolist():
        assert int(fair) <= count <= int(fair) + 1


def test_subset_is_stratified_and_avoids_validation(fashion):
    d = data.load("cpu", data_dir=fashion, validation=50, subset=100)
    assert torch.bincount(d.train_y, minlength=10).tolist() == [10] * 10
    train, val = set(ids(d.train_x)), set(ids(d.val_x))
    assert len(train) == 100 and not train & val
    # The validation set does not depend on the subset: trials with different subsets
    # must still be compared on the same images.
    full = data.load("cpu", data_dir=fashion, validation=50)
    assert set(ids(full.val_x)) == val and train <= set(ids(full.train_x))


def test_split_is_deterministic_across_loads(fashion, monkeypatch):
    torch.manual_seed(1)
    first = data.load("cpu", data_dir=fashion, validation=50, subset=100)
    clear_caches(monkeypatch)
    torch.manual_seed(2)  # the global RNG must not matter: the split has its own seed
    again = data.load("cpu", data_dir=fashion, validation=50, subset=100)
    assert again is not first
    assert ids(again.train_x) == ids(first.train_x) and ids(again.val_x) == ids(first.val_x)
    assert torch.equal(again.train_y, first.train_y) and torch.equal(again.val_y, first.val_y)


def test_validation_zero_keeps_everything_for_training(fashion):
    d = data.load("cpu", data_dir=fashion, validation=0)
    assert len(d.val_x) == len(d.val_y) == 0 and d.val_x.shape[1:] == (1, 28, 28)
    assert ids(d.train_x) == list(range(N_TRAIN))


@pytest.mark.parametrize("validation, subset", [
    (N_TRAIN, 0),       # nothing left to train on
    (N_TRAIN + 1, 0),
    (-1, 0),
    (50, 151),          # only 150 left after the hold-out
    (0, N_TRAIN + 1),
    (50, -5),
])
def test_bad_validation_or_subset(fashion, validation, subset):
    with pytest.raises(DataError, match="validation|subset"):
        data.load("cpu", data_dir=fashion, validation=validation, subset=subset)


def test_test_subset_is_stratified_and_leaves_the_other_splits_alone(fashion, monkeypatch):
    d = data.load("cpu", data_dir=fashion, validation=50, subset=100, test_subset=20)
    assert torch.bincount(d.test_y, minlength=10).tolist() == [2] * 10
    test = ids(d.test_x)
    assert len(set(test)) == 20 and set(test) <= set(range(N_TEST)) and test == sorted(test)
    assert [i % 10 for i in test] == d.test_y.tolist()
    whole = data.load("cpu", data_dir=fashion, validation=50, subset=100)
    assert ids(whole.test_x) == list(range(N_TEST))
    assert ids(whole.train_x) == ids(d.train_x) and ids(whole.val_x) == ids(d.val_x)
    clear_caches(monkeypatch)
    again = data.load("cpu", data_dir=fashion, validation=50, subset=100, test_subset=20)
    assert ids(again.test_x) == test  # fixed: every trial of every study tests on the same


@pytest.mark.parametrize("subset, test_subset", [(-5, 0), (0, -1)])
def test_a_negative_subset_is_called_negative_not_too_large(fashion, subset, test_subset):
    with pytest.raises(DataError, match=f"subset = {subset}, test_subset = {test_subset}: each "
                       "must be ≥ 0"):
        data.load("cpu", data_dir=fashion, validation=50, subset=subset, test_subset=test_subset)


@pytest.mark.parametrize("test_subset", [N_TEST + 1, 10_000])
def test_test_subset_larger_than_the_test_set(fashion, test_subset):
    with pytest.raises(DataError, match=f"test_subset = {test_subset} exceeds the {N_TEST} test"):
        data.load("cpu", data_dir=fashion, validation=50, test_subset=test_subset)


def test_subset_equal_to_what_is_left_is_allowed(fashion):
    d = data.load("cpu", data_dir=fashion, validation=50, subset=150)
    assert len(d.train_y) == 150


# --- corrupt files ---------------------------------------------------------------------------

def gz_of(content: bytes) -> bytes:
    return gzip.compress(content)


def images(n: int, rows: int = 28, cols: int = 28, magic: int = IMAGES_MAGIC) -> bytes:
    return idx_bytes(magic, (n, rows, cols), bytes(n * rows * cols))


def labels(values: list[int], magic: int = LABELS_MAGIC) -> bytes:
    return idx_bytes(magic, (len(values),), bytes(values))


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name, damage", [
    ("truncated gz", lambda gz: gz[: len(gz) // 2]),
    ("gz missing its trailer", lambda gz: gz[:-6]),
    ("not gzip at all", lambda gz: b"this is plain text, not gzip"),
])
def test_damaged_gzip_names_the_file(tmp_path, name, damage):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(damage(gz_of(images(20))))
    with pytest.raises(DataError) as exc:
        data.read_idx(path)
    assert str(path) in one_line(exc)


@pytest.mark.parametrize("magic", [
    0x00000804,   # four dimensions
    0x00000802,   # two dimensions
    0x00000903,   # signed bytes, not unsigned
    0x01000803,   # first two bytes must be zero
])
def test_wrong_magic_names_the_file(tmp_path, magic):
    path = write(tmp_path / "train-images-idx3-ubyte",
                 idx_bytes(magic, (2, 28, 28), bytes(2 * 784)))
    with pytest.raises(DataError, match="magic") as exc:
        data.read_idx(path)
    assert str(path) in one_line(exc)


@pytest.mark.parametrize("gz", [True, False])
def test_header_promising_more_than_the_file_holds(tmp_path, gz):
    body = idx_bytes(IMAGES_MAGIC, (300, 28, 28), bytes(200 * 784))
    path = write(tmp_path / "train-images-idx3-ubyte", body, gz)
    with pytest.raises(DataError, match="truncated") as exc:
        data.read_idx(path)
    assert str(path) in one_line(exc)


@pytest.mark.parametrize("content", [
    b"",
    b"\x00\x00",
    struct.pack(">I", IMAGES_MAGIC) + b"\x00\x00\x00",   # header stops inside N
])
def test_file_too_short_for_a_header(tmp_path, content):
    path = write(tmp_path / "t10k-labels-idx1-ubyte", content, gz=False)
    with pytest.raises(DataError) as exc:
        data.read_idx(path)
    assert str(path) in one_line(exc)


def test_damaged_file_in_folder_fails_load_with_its_name(tmp_path):
    folder = write_fashion(tmp_path / "f")
    bad = folder / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(DataError) as exc:
        data.load("cpu", data_dir=folder)
    assert str(bad) in one_line(exc)


@pytest.mark.parametrize("override, words", [
    ({"train_images": images(N_TRAIN, 28, 27)}, ["train", "28×28"]),
    ({"test_images": images(N_TEST, 32, 32)}, ["test", "28×28"]),
    ({"train_images": labels([0] * N_TRAIN)}, ["train", "28×28"]),     # a labels file in its place
    ({"train_labels": labels([i % 10 for i in range(N_TRAIN - 1)])},
     ["200 train images", "199 labels"]),
    ({"test_labels": labels([i % 10 for i in range(N_TEST + 3)])}, ["50 test images", "53 labels"]),
    ({"train_labels": labels([i % 10 for i in range(N_TRAIN - 1)] + [12])}, ["train labels", "12"]),
    ({"test_labels": labels([255] + [0] * (N_TEST - 1))}, ["test labels", "255"]),
])
def test_inconsistent_folder(tmp_path, override, words):
    folder = write_fashion(tmp_path / "f", **override)
    with pytest.raises(DataError) as exc:
        data.load("cpu", data_dir=folder)
    message = one_line(exc)
    assert str(folder) in message
    for word in words:
        assert word in message


def test_missing_file_named_with_the_flag(fashion):
    (fashion / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as exc:
        data.load("cpu", data_dir=fashion)
    message = one_line(exc)
    assert "train-labels-idx1-ubyte" in message and "--data-dir" in message
    assert str(fashion) in message


def test_missing_file_named_with_the_env_var(fashion, monkeypatch):
    (fashion / "t10k-images-idx3-ubyte.gz").unlink()
    monkeypatch.setenv("LRSWEEP_DATA", str(fashion))
    with pytest.raises(DataError) as exc:
        data.locate(download=False)
    message = one_line(exc)
    assert "t10k-images-idx3-ubyte" in message and "LRSWEEP_DATA" in message
    assert "--data-dir" not in message


def test_explicit_folder_that_does_not_exist(tmp_path):
    with pytest.raises(DataError, match="--data-dir"):
        data.locate(tmp_path / "nowhere", download=False)


# --- look-up order ---------------------------------------------------------------------------

def cache_raw() -> Path:
    return data.cache_dir() / "FashionMNIST" / "raw"


def test_cache_dir_honours_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert data.cache_dir() == tmp_path / "c" / "lrsweep"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "lrsweep"


def test_cache_dir_treats_empty_xdg_as_unset(tmp_path, monkeypatch):
    # XDG Base Directory spec: "If $XDG_CACHE_HOME is either not set or empty, a default
    # equal to $HOME/.cache should be used."  An empty value must not mean "./lrsweep".
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "lrsweep"


def test_explicit_folder_wins_over_debian(tmp_path, monkeypatch):
    debian = write_fashion(tmp_path / "debian")
    mine = write_fashion(tmp_path / "mine")
    monkeypatch.setattr(data, "DEBIAN_DIR", debian)
    assert data.locate(mine, download=False) == mine
    monkeypatch.setenv("LRSWEEP_DATA", str(mine))
    assert data.locate(download=False) == mine


def test_data_dir_argument_wins_over_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("LRSWEEP_DATA", str(write_fashion(tmp_path / "env")))
    arg = write_fashion(tmp_path / "arg")
    assert data.locate(arg, download=False) == arg


def test_debian_wins_over_cache(tmp_path, monkeypatch):
    debian = write_fashion(tmp_path / "debian")
    write_fashion(cache_raw())
    monkeypatch.setattr(data, "DEBIAN_DIR", debian)
    assert data.locate(download=False) == debian


@pytest.mark.parametrize("debian_state", ["empty", "absent", "incomplete"])
def test_cache_used_when_debian_lacks_the_files(tmp_path, monkeypatch, debian_state):
    debian = tmp_path / "debian"
    if debian_state == "empty":
        debian.mkdir()
    elif debian_state == "incomplete":
        write_fashion(debian)
        (debian / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setattr(data, "DEBIAN_DIR", debian)
    cached = write_fashion(cache_raw(), gz=False)  # torchvision leaves raw files there
    assert data.locate(download=False) == cached
    assert data.load("cpu", validation=50, download=False).source == cached


def test_nothing_found_names_all_three_remedies(no_debian):
    with pytest.raises(DataError) as exc:
        data.locate(download=False)
    message = one_line(exc)
    assert "--data-dir" in message and "LRSWEEP_DATA" in message
    assert "apt-get install dataset-fashion-mnist" in message and str(no_debian) in message
    assert str(data.cache_dir()) in message and "download" in message
    assert not cache_raw().exists()  # download=False must not even create the folder


# --- the download branch, offline ------------------------------------------------------------

@pytest.fixture
def torchvision():
    return pytest.importorskip("torchvision")


class FakeFashionMNIST:
    """Stands in for torchvision.datasets.FashionMNIST: writes IDX files where torchvision
    would (root/FashionMNIST/raw, uncompressed) and records how it was called."""

    calls: list[tuple[str, bool, bool]] = []

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        type(self).calls.append((str(root), train, download))
        raw = Path(root) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        part = "train" if train else "t10k"
        n = N_TRAIN if train else N_TEST
        values = [i % 10 for i in range(n)]
        pixels = b"".join(image_pixels(i, y) for i, y in enumerate(values))
        write(raw / f"{part}-images-idx3-ubyte", idx_bytes(IMAGES_MAGIC, (n, 28, 28), pixels),
              gz=False)
        write(raw / f"{part}-labels-idx1-ubyte", idx_bytes(LABELS_MAGIC, (n,), bytes(values)),
              gz=False)


def test_download_branch_fills_the_cache(torchvision, monkeypatch, no_debian):
    monkeypatch.setattr(FakeFashionMNIST, "calls", [])
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    assert data.locate(download=True) == cache_raw()
    assert FakeFashionMNIST.calls == [(str(data.cache_dir()), True, True),
                                      (str(data.cache_dir()), False, True)]
    d = data.load("cpu", validation=50, download=True)  # now found in the cache, no new call
    assert len(FakeFashionMNIST.calls) == 2
    assert d.source == cache_raw() and len(d.train_y) == 150 and len(d.test_y) == N_TEST


def test_failed_download_gives_the_advice_and_the_reason(torchvision, monkeypatch, no_debian):
    class Offline:
        def __init__(self, *args, **kwargs):
            raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>\n"
                          "and a second line that must not reach the message")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", Offline)
    with pytest.raises(DataError) as exc:
        data.locate(download=True)
    message = one_line(exc)
    assert "apt-get install dataset-fashion-mnist" in message and "LRSWEEP_DATA" in message
    assert "name resolution" in message


def test_download_that_leaves_nothing(torchvision, monkeypatch, no_debian):
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", lambda *a, **k: None)
    with pytest.raises(DataError) as exc:
        data.locate(download=True)
    assert str(cache_raw()) in one_line(exc)


# --- the real data set -----------------------------------------------------------------------

REAL = Path("/usr/share/datasets/fashion-mnist")
HAVE_REAL = all((REAL / n).is_file() or (REAL / f"{n}.gz").is_file() for n in NAMES.values())


@pytest.mark.skipif(not HAVE_REAL, reason=f"Fashion-MNIST not installed in {REAL} "
                                          "(apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist():
    d = data.load("cpu", validation=10_000, download=False)
    assert d.source == REAL
    assert d.train_x.shape == (50_000, 1, 28, 28) and len(d.train_y) == 50_000
    assert d.val_x.shape == (10_000, 1, 28, 28) and len(d.val_y) == 10_000
    assert d.test_x.shape == (10_000, 1, 28, 28) and len(d.test_y) == 10_000
    assert torch.bincount(d.val_y, minlength=10).tolist() == [1_000] * 10
    assert torch.bincount(d.train_y, minlength=10).tolist() == [5_000] * 10
    assert torch.bincount(d.test_y, minlength=10).tolist() == [1_000] * 10
    for x in (d.train_x, d.val_x, d.test_x):
        assert x.dtype == torch.float32 and float(x.min()) == 0.0 and float(x.max()) == 1.0
