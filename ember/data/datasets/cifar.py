"""CIFAR-10 from its official binary version (or its python version), md5-checked.

Binary version (``cifar-10-batches-bin/``): ``data_batch_1.bin`` .. ``data_batch_5.bin``
and ``test_batch.bin``, each 10,000 records of one label byte then 3072 pixel bytes
(the 1024 red, then green, then blue values of a 32x32 image, rows in order), and
``batches.meta.txt`` with the ten class names, one a line.

Python version (``cifar-10-batches-py/``): ``data_batch_1`` .. ``data_batch_5``,
``test_batch`` and ``batches.meta``, pickles read with a restricted unpickler that
builds plain data and NumPy arrays only (see ``_pickle.py``): a file that tries to
call anything else is refused before it can run.

Where the files are looked for: ``root`` itself, then ``root/cifar-10-batches-bin``
(or ``-py``), then ``root/cifar-10/cifar-10-batches-bin`` (or ``-py``); the binary
version wins where both are present. Without a root, ``$EMBER_DATA`` plays that part,
then ``~/.cache/ember/datasets``. ``download=True`` fetches the official binary archive
(md5-checked, kept beside the data) and extracts its seven files atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ember.data.datasets._arrays import ImageArrayDataset
from ember.data.datasets._files import (DatasetError, check_md5, download_file,
                                        extract_members, md5sum)
from ember.data.datasets._pickle import restricted_load
from ember.data.datasets.mnist import DATA_ENV, DEFAULT_DOWNLOAD_ROOT

__all__ = ["CIFAR10", "CIFAR10_BINARY_MD5", "CIFAR10_PYTHON_MD5", "CIFAR10_BINARY_URL",
           "CIFAR10_BINARY_ARCHIVE_MD5", "CIFAR10_MIRRORS", "read_cifar_binary"]

CIFAR10_MIRRORS = ["https://www.cs.toronto.edu/~kriz/"]
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_BINARY_URL = CIFAR10_MIRRORS[0] + CIFAR10_ARCHIVE
CIFAR10_BINARY_ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_BINARY_MD5 = {
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}
# The python version's sums, as published with torchvision's CIFAR10.
CIFAR10_PYTHON_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
IMAGE_SHAPE = (32, 32, 3)
PIXELS = 32 * 32 * 3
RECORD_BYTES = 1 + PIXELS
NUM_CLASSES = 10
BINARY, PYTHON = "binary", "python"


def _planes_to_hwc(pixels: np.ndarray) -> np.ndarray:
    """(N, 3072) rows of R, G, B planes → (N, 32, 32, 3), a view."""
    return pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _check_labels(labels: np.ndarray, path: Path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        bad = labels[(labels < 0) | (labels >= NUM_CLASSES)][0]
        raise DatasetError(f"{path}: label {bad} is outside the {NUM_CLASSES} CIFAR-10 classes")


def _record_count(path: Path) -> int:
    size = path.stat().st_size
    if size == 0 or size % RECORD_BYTES:
        raise DatasetError(f"{path}: {size} bytes is not a whole number of CIFAR-10 records "
                           f"({RECORD_BYTES} bytes each: 1 label byte + {PIXELS} pixel bytes)")
    return size // RECORD_BYTES


def read_cifar_binary(paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, np.ndarray]:
    """The records of CIFAR-10 binary files, one after another: images (N, 32, 32, 3) uint8
    (HWC) and labels (N,) int64."""
    paths = [Path(p) for p in paths]
    counts = [_record_count(p) for p in paths]
    images = np.empty((sum(counts), *IMAGE_SHAPE), np.uint8)
    labels = np.empty(sum(counts), np.int64)
    start = 0
    for path, count in zip(paths, counts):
        records = np.fromfile(path, np.uint8, count=count * RECORD_BYTES)
        if records.size != count * RECORD_BYTES:
            raise DatasetError(f"{path}: the file shrank while it was being read")
        records = records.reshape(count, RECORD_BYTES)
        _check_labels(records[:, 0], path)
        labels[start:start + count] = records[:, 0]
        images[start:start + count] = _planes_to_hwc(records[:, 1:])
        start += count
    return images, labels


def _str_keys(entry: Any, path: Path) -> dict[str, Any]:
    """A pickled batch's dict with its keys as str (Python 2 pickles give bytes or str)."""
    if not isinstance(entry, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(entry).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _read_python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    entry = _str_keys(restricted_load(path), path)
    data, labels = entry.get("data"), entry.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != PIXELS:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{path}: 'data' should be a uint8 array of shape (N, {PIXELS}), "
                           f"got {what}")
    if not isinstance(labels, list) or len(labels) != len(data) \
            or not all(type(y) is int for y in labels):
        raise DatasetError(f"{path}: 'labels' should be a list of {len(data)} ints")
    labels = np.asarray(labels, np.int64)
    _check_labels(labels, path)
    return _planes_to_hwc(data), labels


def _read_class_names(path: Path, fmt: str) -> list[str]:
    if fmt == BINARY:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        names = _str_keys(restricted_load(path), path).get("label_names")
        if not isinstance(names, list):
            raise DatasetError(f"{path}: expected a 'label_names' list")
        names = [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]
    names = [n for n in names if n]  # copies of the text file may end with blank lines
    if len(names) != NUM_CLASSES or not all(isinstance(n, str) for n in names):
        raise DatasetError(f"{path}: expected {NUM_CLASSES} class names, got {names!r}")
    return names


class CIFAR10(ImageArrayDataset):
    """CIFAR-10: 50,000 training and 10,000 test 32x32 colour images in 10 classes.

    ``ds[i]`` is ``(image, label)``. image: ``transform(uint8 array (32, 32, 3))``, HWC
    as torchvision's ``.data`` holds it (``ToTensor()`` makes it float32 (3, 32, 32) in
    [0, 1]), or without a transform a uint8 Tensor (32, 32, 3). label: an int.
    ``images`` (N, 32, 32, 3) uint8 and ``labels`` (N,) int64 hold the whole split;
    ``classes`` come from the files' meta data; ``format`` says which version was read.

    root: the folder holding ``cifar-10-batches-bin/`` (or ``-py/``), or that folder
    itself (None: ``$EMBER_DATA``, else ``~/.cache/ember/datasets``). download: fetch
    and extract the binary version into ``root`` unless a valid copy is already there.

    Images are kept HWC (channels last) because that is what ``ToTensor`` and the
    random crops and flips take: one gather per batch, and one transposing copy
    in ``ToTensor``.

    >>> train = CIFAR10(root="data", transform=ToTensor())  # data/cifar-10-batches-bin/
    >>> image, label = train[0]
    >>> image.shape, train.classes[label]
    ((3, 32, 32), 'frog')
    """

    base_folder = "cifar-10"
    binary_folder = "cifar-10-batches-bin"
    python_folder = "cifar-10-batches-py"
    binary_md5s: dict[str, str] = CIFAR10_BINARY_MD5
    python_md5s: dict[str, str] = CIFAR10_PYTHON_MD5
    archive_name = CIFAR10_ARCHIVE
    archive_md5 = CIFAR10_BINARY_ARCHIVE_MD5
    mirrors: list[str] = CIFAR10_MIRRORS

    def __init__(self, root: str | os.PathLike | None = None, train: bool = True,
                 transform: Callable | None = None, target_transform: Callable | None = None,
                 download: bool = False) -> None:
        self.train = bool(train)
        self.transform = transform
        self.target_transform = target_transform
        base = self._base_folder(root)
        if download:
            self._download(base, base if root is not None else base / self.base_folder)
        self.root, self.format = self._find_folder(base)
        if self.format == BINARY:
            self.images, self.labels = read_cifar_binary(
                [self._checked_file(name) for name in self.split_files(BINARY)])
        else:
            self.images, self.labels = self._read_python_split()
        self.classes = _read_class_names(self._meta_file(), self.format)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(split={'train' if self.train else 'test'}, "
                f"samples={len(self)}, root={self.root}, format={self.format})")

    # ------------------------------------------------------------ files
    def split_files(self, fmt: str = BINARY) -> list[str]:
        names = [f"data_batch_{i}" for i in range(1, 6)] if self.train else ["test_batch"]
        return [name + ".bin" for name in names] if fmt == BINARY else names

    @staticmethod
    def meta_name(fmt: str) -> str:
        return "batches.meta.txt" if fmt == BINARY else "batches.meta"

    @staticmethod
    def _base_folder(root: Any) -> Path:
        if root is not None:
            return Path(root).expanduser()
        if os.environ.get(DATA_ENV):
            return Path(os.environ[DATA_ENV]).expanduser()
        return DEFAULT_DOWNLOAD_ROOT.expanduser()

    def _candidates(self, base: Path) -> list[Path]:
        nested = base / self.base_folder
        return [base, base / self.binary_folder, base / self.python_folder,
                nested / self.binary_folder, nested / self.python_folder]

    def _holds(self, folder: Path, fmt: str) -> bool:
        names = [*self.split_files(fmt), self.meta_name(fmt)]
        return any((folder / name).is_file() for name in names)

    def _find_folder(self, base: Path) -> tuple[Path, str]:
        """The first candidate folder holding either version's files for this split."""
        for folder in self._candidates(base):
            for fmt in (BINARY, PYTHON):
                if self._holds(folder, fmt):
                    return folder, fmt
        raise self._missing_error(base, self.split_files(BINARY)[0], searched=True)

    def _md5s(self) -> dict[str, str]:
        return self.binary_md5s if self.format == BINARY else self.python_md5s

    def _missing_error(self, folder: Path, name: str, searched: bool = False,
                       ) -> FileNotFoundError:
        md5 = {**self.binary_md5s, **self.python_md5s}.get(name)
        checksum = f" (expected md5 {md5})" if md5 else ""
        looked = ""
        if searched:
            looked = " (also looked in " + ", ".join(
                str(c) for c in self._candidates(folder)[1:]) + ")"
        cls = type(self).__name__
        return FileNotFoundError(
            f"{cls}: {name}{checksum} not found in {folder}{looked}. Get the data with "
            f"{cls}(root={str(folder)!r}, download=True), or fetch {CIFAR10_BINARY_URL} (md5 "
            f"{CIFAR10_BINARY_ARCHIVE_MD5}) and unpack it with `tar xzf {self.archive_name} -C "
            f"<root>` (it makes {self.binary_folder}/), or set {DATA_ENV} to a folder holding "
            f"{self.base_folder}/{self.binary_folder}/.")

    def _checked_file(self, name: str) -> Path:
        path = self.root / name
        if not path.is_file():
            raise self._missing_error(self.root, name)
        return check_md5(path, self._md5s()[name], type(self).__name__,
                         "Delete it and fetch it again with download=True (the binary "
                         f"version, from {CIFAR10_BINARY_URL}), or point {DATA_ENV} at a good "
                         "copy.")

    def _meta_file(self) -> Path:
        name = self.meta_name(self.format)
        if self.format == PYTHON:
            return self._checked_file(name)
        path = self.root / name
        if not path.is_file():  # its bytes vary between copies, so it has no md5 to check
            raise self._missing_error(self.root, name)
        return path

    # ------------------------------------------------------------ download
    def _binary_complete(self, folder: Path) -> bool:
        return (folder / self.meta_name(BINARY)).is_file() and all(
            (folder / name).is_file() and md5sum(folder / name) == md5
            for name, md5 in self.binary_md5s.items())

    def _download(self, base: Path, target: Path) -> None:
        """Unless a candidate folder already holds the whole binary version, fetch the
        archive into ``target`` (reusing a valid one there) and extract it."""
        if any(self._binary_complete(folder) for folder in self._candidates(base)):
            return
        archive = target / self.archive_name
        if not archive.is_file() or md5sum(archive) != self.archive_md5:
            download_file(self.archive_name, target, self.archive_md5, self.mirrors)
        names = [*self.binary_md5s, self.meta_name(BINARY)]
        extract_members(archive, {f"{self.binary_folder}/{name}":
                                  target / self.binary_folder / name for name in names})

    def _read_python_split(self) -> tuple[np.ndarray, np.ndarray]:
        parts = [_read_python_batch(self._checked_file(name))
                 for name in self.split_files(PYTHON)]
        images = np.empty((sum(len(p[1]) for p in parts), *IMAGE_SHAPE), np.uint8)
        start = 0
        for batch_images, batch_labels in parts:  # copy into one C-ordered NHWC array
            images[start:start + len(batch_labels)] = batch_images
            start += len(batch_labels)
        return images, np.concatenate([p[1] for p in parts])
