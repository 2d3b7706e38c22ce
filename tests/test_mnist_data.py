"""Tests for training.mnist_data: IDX round trips, tiny folders, every failure, downloads."""

import gzip
import hashlib
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from custom_modules.training import mnist_data
from custom_modules.training.mnist_data import MnistDataError, load_mnist, read_idx, write_idx

NAMES = tuple(mnist_data.CHECKSUMS)
REAL_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def tiny_arrays(n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Random uint8 images and 0..9 labels under the four standard file names."""
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_folder(folder: Path, arrays: dict[str, np.ndarray], suffix: str = ".gz") -> None:
    for name, array in arrays.items():
        write_idx(folder / f"{name}{suffix}", array)


def replace_file(folder: Path, name: str, data: bytes, suffix: str = "") -> Path:
    """Drop every spelling of a file and write raw bytes in its place."""
    for old in folder.glob(f"{name}*"):
        old.unlink()
    path = folder / f"{name}{suffix}"
    path.write_bytes(data)
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape) + array.tobytes()


def load_error(folder: Path, download: bool = False) -> str:
    """Load a folder that must fail; return the error message, checked to be one line."""
    with pytest.raises(MnistDataError) as info:
        load_mnist(folder, download=download)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_folder(tmp_path, tiny_arrays())
    return tmp_path


# --- IDX round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 3, 4, 5)])
def test_write_read_round_trip(tmp_path: Path, suffix: str, shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / f"x-idx{suffix}"
    write_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(str(path))
    assert back.dtype == np.uint8 and back.shape == shape
    np.testing.assert_array_equal(back, array)
    back[...] = 0  # a writable copy, safe for torch.from_numpy
    assert list(tmp_path.iterdir()) == [path]


def test_write_idx_rejects_non_uint8(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


def test_write_idx_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("custom_modules.atomic_file.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_idx(tmp_path / "x.gz", np.zeros(3, dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


# --- loading a tiny folder -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_load_tiny_folder(tmp_path: Path, suffix: str) -> None:
    arrays = tiny_arrays()
    write_folder(tmp_path, arrays, suffix)
    mnist = load_mnist(tmp_path, download=False)
    loaded = (mnist.train_images, mnist.train_labels, mnist.test_images, mnist.test_labels)
    for got, want in zip(loaded, arrays.values(), strict=True):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)
    assert mnist.train_images.shape == (20, 28, 28) and mnist.test_labels.shape == (10,)


def test_load_dotted_spelling(tmp_path: Path) -> None:
    arrays = tiny_arrays()
    for name, array in arrays.items():
        write_idx(tmp_path / name.replace("-idx", ".idx"), array)
    mnist = load_mnist(tmp_path, download=False)
    np.testing.assert_array_equal(mnist.test_labels, arrays["t10k-labels-idx1-ubyte"])


# --- every failure: MnistDataError, one line, naming the file ------------------------------------


def test_wrong_magic_garbage(folder: Path) -> None:
    replace_file(folder, NAMES[0], b"\x12\x34\x56\x78" + bytes(100))
    message = load_error(folder)
    assert NAMES[0] in message and "0x12345678" in message and "0x00000803" in message


def test_wrong_magic_labels_in_images_slot(folder: Path) -> None:
    replace_file(folder, NAMES[2], idx_bytes(np.zeros(10, dtype=np.uint8)))
    message = load_error(folder)
    assert NAMES[2] in message and "expected 0x00000803, got 0x00000801" in message


def test_truncated(folder: Path) -> None:
    data = idx_bytes(tiny_arrays()[NAMES[0]])
    replace_file(folder, NAMES[0], data[:-5])
    message = load_error(folder)
    assert NAMES[0] in message and "truncated" in message


def test_truncated_header(folder: Path) -> None:
    replace_file(folder, NAMES[1], b"\x00\x00\x08")
    message = load_error(folder)
    assert NAMES[1] in message and "truncated" in message


def test_extra_bytes(folder: Path) -> None:
    data = idx_bytes(tiny_arrays()[NAMES[1]])
    replace_file(folder, NAMES[1], gzip.compress(data + b"\x00"), ".gz")
    message = load_error(folder)
    assert NAMES[1] in message and "extra bytes" in message


@pytest.mark.parametrize("cut", ["junk", "cut short"])
def test_corrupt_gzip(folder: Path, cut: str) -> None:
    good = gzip.compress(idx_bytes(tiny_arrays()[NAMES[3]]))
    bad = good[:10] + b"not deflate data" * 4 if cut == "junk" else good[: len(good) // 2]
    replace_file(folder, NAMES[3], bad, ".gz")
    message = load_error(folder)
    assert f"{NAMES[3]}.gz" in message and "corrupt gzip" in message


def test_count_mismatch(folder: Path) -> None:
    write_idx(folder / f"{NAMES[3]}.gz", np.zeros(9, dtype=np.uint8))
    message = load_error(folder)
    assert NAMES[2] in message and NAMES[3] in message and "10 images" in message


def test_bad_image_shape(folder: Path) -> None:
    write_idx(folder / f"{NAMES[0]}.gz", np.zeros((20, 32, 32), dtype=np.uint8))
    message = load_error(folder)
    assert NAMES[0] in message and "32x32" in message and "28x28" in message


def test_label_out_of_range(folder: Path) -> None:
    labels = np.zeros(20, dtype=np.uint8)
    labels[7] = 12
    write_idx(folder / f"{NAMES[1]}.gz", labels)
    message = load_error(folder)
    assert NAMES[1] in message and "label 12 at index 7" in message


@pytest.mark.parametrize("name, count", [(NAMES[1], 60000), (NAMES[3], 10000)])
def test_checksum_mismatch_for_standard_count(folder: Path, name: str, count: int) -> None:
    write_idx(folder / f"{name}.gz", np.zeros(count, dtype=np.uint8))
    message = load_error(folder)
    assert name in message and "checksum mismatch" in message and "re-download" in message


def test_missing_file_without_download(folder: Path) -> None:
    (folder / f"{NAMES[2]}.gz").unlink()
    message = load_error(folder)
    assert NAMES[2] in message and str(folder) in message


def test_missing_folder_without_download(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nowhere")
    assert "nowhere" in message and "does not exist" in message


def test_folder_in_place_of_file_counts_as_missing(folder: Path) -> None:
    (folder / f"{NAMES[0]}.gz").unlink()
    (folder / NAMES[0]).mkdir()  # a folder where a file should be is skipped, so it is "missing"
    message = load_error(folder)
    assert NAMES[0] in message


# --- downloads (no network: _fetch is monkeypatched) ---------------------------------------------


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Serve tiny gzipped files from a fake second mirror (the first always fails) and log calls."""
    arrays = tiny_arrays(seed=3)
    served = {f"{name}.gz": gzip.compress(idx_bytes(a)) for name, a in arrays.items()}
    checksums = {name: (60000, hashlib.md5(idx_bytes(a)).hexdigest()) for name, a in arrays.items()}
    calls: list[str] = []

    def fetch(url: str) -> bytes:
        calls.append(url)
        if url.startswith("https://down/"):
            raise urllib.error.URLError("mirror down")
        return served[url.rsplit("/", 1)[1]]

    monkeypatch.setattr(mnist_data, "MIRRORS", ("https://down/", "https://up/"))
    monkeypatch.setattr(mnist_data, "CHECKSUMS", checksums)
    monkeypatch.setattr(mnist_data, "_fetch", fetch)
    return {"arrays": arrays, "served": served, "calls": calls}


def test_download_missing_files(tmp_path: Path, mirror: dict) -> None:
    folder = tmp_path / "new" / "mnist"
    mnist = load_mnist(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(mirror["served"])
    np.testing.assert_array_equal(mnist.train_images, mirror["arrays"][NAMES[0]])
    np.testing.assert_array_equal(mnist.test_labels, mirror["arrays"][NAMES[3]])
    assert len(mirror["calls"]) == 8  # each file: first mirror fails, second serves it
    mirror["calls"].clear()
    load_mnist(folder)
    assert mirror["calls"] == []


def test_download_only_what_is_missing(tmp_path: Path, mirror: dict) -> None:
    write_folder(tmp_path, {n: a for n, a in mirror["arrays"].items() if n.startswith("train")})
    load_mnist(tmp_path)
    assert {url.rsplit("/", 1)[1] for url in mirror["calls"]} == {
        f"{NAMES[2]}.gz",
        f"{NAMES[3]}.gz",
    }


def test_download_all_mirrors_fail(
    tmp_path: Path, mirror: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fetch(url: str) -> bytes:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(mnist_data, "_fetch", fetch)
    message = load_error(tmp_path, download=True)
    assert f"{NAMES[0]}.gz" in message and "download failed" in message
    assert "no route to host" in message and str(tmp_path) in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("body", ["wrong content", "corrupt gzip"])
def test_download_bad_body_leaves_nothing(
    tmp_path: Path, mirror: dict, monkeypatch: pytest.MonkeyPatch, body: str
) -> None:
    wrong = gzip.compress(idx_bytes(np.ones((20, 28, 28), dtype=np.uint8)))
    blob = wrong if body == "wrong content" else wrong[:20]
    monkeypatch.setattr(mnist_data, "_fetch", lambda url: blob)
    message = load_error(tmp_path, download=True)
    assert f"{NAMES[0]}.gz" in message and "download failed" in message
    assert ("checksum mismatch" in message) == (body == "wrong content")
    assert list(tmp_path.iterdir()) == []


# --- the real data -------------------------------------------------------------------------------


@pytest.mark.skipif(not REAL_DATA_DIR.is_dir(), reason=f"no MNIST at {REAL_DATA_DIR}")
def test_real_mnist() -> None:
    mnist = load_mnist(REAL_DATA_DIR, download=False)
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_labels.shape == (60000,)
    assert mnist.test_images.shape == (10000, 28, 28) and mnist.test_labels.shape == (10000,)
    for labels in (mnist.train_labels, mnist.test_labels):
        assert labels.min() == 0 and labels.max() == 9
        assert len(np.unique(labels)) == 10
    assert mnist.train_images.max() == 255
