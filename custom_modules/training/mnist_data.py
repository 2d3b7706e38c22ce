"""A torch-free MNIST loader: reads the four IDX files, gzipped or raw, downloading missing ones.

Files live in one folder, each as NAME.gz or NAME (the dotted spelling, e.g.
train-images.idx3-ubyte, is accepted too). Images come back as (N, 28, 28) uint8 arrays and
labels as (N,) uint8 arrays; cast labels with .astype(np.int64) for a cross-entropy loss.

Checksum rule: checksums are md5s of the uncompressed IDX bytes, so a recompressed .gz still
passes. A file whose header count is the standard one (60000 for train, 10000 for t10k) must match
the published checksum; a file with any other count is taken as the user's own (e.g. subset)
data and is only structurally validated. Downloads are always checked before they are kept.

Every failure raises MnistDataError with a one-line message naming the file and what to do.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import struct
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from custom_modules.atomic_file import replaced_atomically
from custom_modules.contract import IMAGE_SIZE, NUM_CLASSES
from custom_modules.messages import one_line

DEFAULT_DATA_DIR = Path.home() / ".cache" / "mnist"
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
TIMEOUT_S = 30.0

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
# file name -> (standard count, md5 of the uncompressed IDX bytes)
CHECKSUMS = {
    "train-images-idx3-ubyte": (60000, "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (60000, "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (10000, "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (10000, "27ae3e4e09519cfbb04c329615203637"),
}
_REPLACE = "delete or replace the file (a missing MNIST file is re-downloaded)"
_DOWNLOAD_ERRORS = (OSError, EOFError, zlib.error, http.client.HTTPException, ValueError)


class MnistDataError(RuntimeError):
    """A missing, corrupt or inconsistent MNIST file, or a failed download."""


@dataclass(frozen=True, eq=False)
class Mnist:
    """MNIST in memory: images are (N, 28, 28) uint8 in 0..255, labels are (N,) uint8 in 0..9."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def split_indices(
    n_train: int, val_size: int = 5000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(validation, training) indices of the training images: the seeded hold-out every choice
    is made on."""
    if not 0 < val_size < n_train:
        raise ValueError(f"val_size {val_size} must be between 1 and {n_train - 1}")
    order = np.random.default_rng(seed).permutation(n_train)
    return order[:val_size], order[val_size:]


def _read_bytes(path: Path) -> bytes:
    """Return a file's uncompressed bytes, gunzipping it when it is named .gz or looks gzipped."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MnistDataError(
            f"{path}: cannot read file ({one_line(e)}); check its permissions"
        ) from None
    if path.suffix == ".gz" or data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise MnistDataError(
                f"{path}: corrupt gzip stream ({one_line(e)}); {_REPLACE}"
            ) from None
    return data


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Parse the bytes of a uint8 IDX file (magic 0x000008NN, NN dims) into a writable array."""
    if len(data) < 4:
        raise MnistDataError(
            f"{path}: truncated IDX file ({len(data)} bytes, no header); {_REPLACE}"
        )
    (magic,) = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim == 0:
        raise MnistDataError(
            f"{path}: bad IDX magic number 0x{magic:08x} (expected 0x{IMAGES_MAGIC:08x} for images "
            f"or 0x{LABELS_MAGIC:08x} for labels); {_REPLACE}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MnistDataError(f"{path}: truncated IDX header ({len(data)} bytes); {_REPLACE}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected, found = math.prod(shape), len(data) - header
    if found != expected:
        problem = "truncated" if found < expected else "extra bytes in"
        raise MnistDataError(
            f"{path}: {problem} IDX file (header {tuple(shape)} promises {expected} data bytes, "
            f"found {found}); {_REPLACE}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape).copy()


def read_idx(path: str | Path) -> np.ndarray:
    """Read one uint8 IDX file, gzipped (.gz) or raw, as a writable array of the header's shape."""
    path = Path(path)
    return _parse_idx(_read_bytes(path), path)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write data to path via a temporary file in the same folder, so path is never partial."""
    with replaced_atomically(path) as tmp_path:
        tmp_path.write_bytes(data)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, gzipped when path ends in .gz; atomic (temp + rename)."""
    path, array = Path(path), np.asarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 255:
        raise ValueError(
            f"write_idx needs a uint8 array with 1..255 dims, got {array.dtype} {array.shape}"
        )
    header = struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape)
    data = header + np.ascontiguousarray(array).tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=6, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, data)


def _fetch(url: str) -> bytes:
    """Return the body at url (the one network call; tests monkeypatch it)."""
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        return response.read()


def _download(data_dir: Path, name: str) -> Path:
    """Fetch NAME.gz from the first mirror serving it with the right checksum; return its path."""
    target = data_dir / f"{name}.gz"
    md5 = CHECKSUMS[name][1]
    reason = "no mirrors configured"
    for mirror in MIRRORS:
        url = mirror + target.name
        try:
            blob = _fetch(url)
            got = hashlib.md5(gzip.decompress(blob), usedforsecurity=False).hexdigest()
        except _DOWNLOAD_ERRORS as e:
            reason = f"{url}: {one_line(e)}"
            continue
        if got != md5:
            reason = f"{url}: checksum mismatch (md5 {got}, expected {md5})"
            continue
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            _atomic_write(target, blob)
        except OSError as e:
            raise MnistDataError(
                f"{target}: cannot save download ({one_line(e)}); check the folder is writable"
            ) from None
        return target
    raise MnistDataError(
        f"{target}: download failed ({reason}); place the four MNIST IDX files in {data_dir} "
        "or check your network"
    )


def _find(data_dir: Path, name: str) -> Path | None:
    """Return the first existing spelling of a file: raw, gzipped, then the dotted variant."""
    dotted = name.replace("-idx", ".idx")
    for candidate in (name, f"{name}.gz", dotted, f"{dotted}.gz"):
        if (data_dir / candidate).is_file():
            return data_dir / candidate
    return None


def _load_file(data_dir: Path, name: str, download: bool) -> tuple[np.ndarray, Path]:
    """Find (or download) one of the four files, read and validate it; return it and its path."""
    path = _find(data_dir, name)
    if path is None and not download:
        raise MnistDataError(
            f"{data_dir / name}[.gz] not found; place the four MNIST IDX files in {data_dir} "
            "or use download=True"
        )
    path = path or _download(data_dir, name)
    data = _read_bytes(path)
    array = _parse_idx(data, path)
    is_images = "images" in name
    magic = IMAGES_MAGIC if is_images else LABELS_MAGIC
    got = 0x0800 | array.ndim
    if got != magic:
        kind = "images" if is_images else "labels"
        raise MnistDataError(
            f"{path}: wrong IDX magic number for {kind} (expected 0x{magic:08x}, got 0x{got:08x}); "
            f"{_REPLACE}"
        )
    if is_images and array.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise MnistDataError(
            f"{path}: images are {array.shape[1]}x{array.shape[2]}, expected "
            f"{IMAGE_SIZE}x{IMAGE_SIZE}; {_REPLACE}"
        )
    if not is_images and array.size and array.max() >= NUM_CLASSES:
        index = int(np.argmax(array >= NUM_CLASSES))
        raise MnistDataError(
            f"{path}: label {array[index]} at index {index} is outside 0..{NUM_CLASSES - 1}; "
            f"{_REPLACE}"
        )
    count, md5 = CHECKSUMS[name]
    if len(array) == count:
        got_md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if got_md5 != md5:
            raise MnistDataError(
                f"{path}: checksum mismatch (md5 of the uncompressed IDX is {got_md5}, expected "
                f"{md5} for the standard {count}-item file); delete it and rerun to re-download"
            )
    return array, path


def load_mnist(data_dir: str | Path = DEFAULT_DATA_DIR, download: bool = True) -> Mnist:
    """Load MNIST from data_dir, downloading any missing file when download is True."""
    data_dir = Path(data_dir).expanduser()
    if not download and not data_dir.is_dir():
        raise MnistDataError(
            f"{data_dir}: MNIST folder does not exist; create it and place the four MNIST IDX "
            "files there, or use download=True"
        )
    split = {}
    for prefix in ("train", "t10k"):
        images, images_path = _load_file(data_dir, f"{prefix}-images-idx3-ubyte", download)
        labels, labels_path = _load_file(data_dir, f"{prefix}-labels-idx1-ubyte", download)
        if len(images) != len(labels):
            raise MnistDataError(
                f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} "
                "labels; use an images file and labels file from the same set"
            )
        split[prefix] = images, labels
    return Mnist(*split["train"], *split["t10k"])
