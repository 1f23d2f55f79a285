"""MNIST and Fashion-MNIST from their four original gzipped IDX files, md5-checked.

Where the files are looked for: ``root`` itself, then ``root/mnist`` (or
``root/fashion-mnist``), then torchvision's ``root/MNIST/raw``. Without a root,
``$EMBER_DATA`` plays that part; without either, MNIST falls back to the small
subset shipped inside ember (see ``ember/data/sample/PROVENANCE.md``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ember.data.datasets._arrays import ImageArrayDataset
from ember.data.datasets._files import DatasetError, check_md5, download_file, md5sum
from ember.data.datasets.idx import read_idx_gz

__all__ = ["MNIST", "FashionMNIST", "MNIST_MIRRORS", "FASHION_MNIST_MIRRORS", "MNIST_MD5",
           "FASHION_MNIST_MD5", "SAMPLE_PATH", "DATA_ENV", "DEFAULT_DOWNLOAD_ROOT"]

DATA_ENV = "EMBER_DATA"
DEFAULT_DOWNLOAD_ROOT = Path("~/.cache/ember/datasets")
SAMPLE_PATH = Path(__file__).resolve().parent.parent / "sample" / "mnist_sample.npz"

MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
FASHION_MNIST_MIRRORS = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
]
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
IMAGE_SHAPE = (28, 28)


class MNIST(ImageArrayDataset):
    """The MNIST digits: ``ds[i]`` is ``(image, label)``.

    image: ``transform(uint8 array of shape (28, 28))``, or without a transform a
    uint8 Tensor of shape (28, 28) (torchvision would give a PIL image; use
    ``ToTensor()`` for float32 (1, 28, 28) in [0, 1]). label: an int (or
    ``target_transform(int)``). ``images`` (N, 28, 28) uint8 and ``labels`` (N,)
    int64 hold the whole split; ``data``/``targets`` are the same as Tensors.

    root: the folder with the four ``.gz`` files (None: ``$EMBER_DATA``, else the
    packaged sample). download: fetch missing files from ``mirrors``.
    sample: use the subset shipped with ember (10,000 train / 2,000 test).

    >>> train = MNIST(sample=True, transform=ToTensor())
    >>> image, label = train[0]
    >>> image.shape, image.dtype
    ((1, 28, 28), dtype('float32'))
    """

    folder_name = "mnist"
    mirrors: list[str] = MNIST_MIRRORS
    md5s: dict[str, str] = MNIST_MD5
    has_sample = True
    classes = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five",
               "6 - six", "7 - seven", "8 - eight", "9 - nine"]

    def __init__(self, root: str | os.PathLike | None = None, train: bool = True,
                 transform: Callable | None = None, target_transform: Callable | None = None,
                 download: bool = False, sample: bool = False) -> None:
        self.train = bool(train)
        self.transform = transform
        self.target_transform = target_transform
        self.root: Path | None = None
        self.is_sample = sample or self._base_folder(root, download) is None
        if self.is_sample:
            self.images, self.labels = self._load_sample()
        else:
            self.root = self._resolve_folder(self._base_folder(root, download), root, download)
            self.images, self.labels = self._load_files()

    def __repr__(self) -> str:
        where = "packaged sample" if self.is_sample else str(self.root)
        return (f"{type(self).__name__}(split={'train' if self.train else 'test'}, "
                f"samples={len(self)}, root={where})")

    # ------------------------------------------------------------ files
    def split_files(self) -> tuple[str, str]:
        prefix = "train" if self.train else "t10k"
        return f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"

    def _base_folder(self, root: Any, download: bool) -> Path | None:
        """Where to look: ``root``, else ``$EMBER_DATA``, else the download cache when it is
        wanted or filled, else None (the packaged sample)."""
        if root is not None:
            return Path(root).expanduser()
        if os.environ.get(DATA_ENV):
            return Path(os.environ[DATA_ENV]).expanduser()
        cache = DEFAULT_DOWNLOAD_ROOT.expanduser()
        filled = (cache / self.folder_name / self.split_files()[0]).is_file()
        return cache if download or filled or not self.has_sample else None

    def _candidates(self, base: Path) -> list[Path]:
        return [base, base / self.folder_name, base / type(self).__name__ / "raw"]

    def _resolve_folder(self, base: Path, root: Any, download: bool) -> Path:
        """The candidate folder holding this split's files; downloading into one if asked."""
        images_file = self.split_files()[0]
        for folder in self._candidates(base):
            if (folder / images_file).is_file():
                if download:
                    self._download_missing(folder)
                return folder
        if not download:
            raise self._missing_error(base, images_file)
        target = base if root is not None else base / self.folder_name
        self._download_missing(target)
        return target

    def _download_missing(self, folder: Path) -> None:
        for name, md5 in self.md5s.items():
            path = folder / name
            if not path.is_file() or md5sum(path) != md5:
                download_file(name, folder, md5, self.mirrors)

    def _missing_error(self, base: Path, name: str) -> FileNotFoundError:
        looked = ", ".join(str(c) for c in self._candidates(base)[1:])
        cls = type(self).__name__
        return FileNotFoundError(
            f"{cls}: {name} (expected md5 {self.md5s[name]}) not found in {base} (also looked "
            f"in {looked}). Get the data with {cls}(root={str(base)!r}, download=True), or set "
            f"{DATA_ENV} to a folder holding {self.folder_name}/ with the four original .gz "
            "files.")

    def _checked_file(self, name: str) -> Path:
        path = self.root / name
        if not path.is_file():
            raise self._missing_error(self.root, name)
        return check_md5(path, self.md5s[name], type(self).__name__,
                         f"Delete it and fetch it again with download=True, or point {DATA_ENV} "
                         "at a good copy.")

    def _load_files(self) -> tuple[np.ndarray, np.ndarray]:
        images_name, labels_name = self.split_files()
        images = read_idx_gz(self._checked_file(images_name), 3)
        labels = read_idx_gz(self._checked_file(labels_name), 1).astype(np.int64)
        if images.shape[1:] != IMAGE_SHAPE:
            raise DatasetError(f"{self.root / images_name}: images are {images.shape[1:]}, "
                               f"expected {IMAGE_SHAPE}")
        if len(images) != len(labels):
            raise DatasetError(f"{type(self).__name__}: {images_name} holds {len(images)} "
                               f"images but {labels_name} holds {len(labels)} labels")
        return images, labels

    def _load_sample(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.has_sample:
            raise ValueError(f"{type(self).__name__}: no sample ships with ember; give root= "
                             f"(or set {DATA_ENV}), or use download=True")
        split = "train" if self.train else "test"
        with np.load(SAMPLE_PATH) as sample:
            return sample[f"{split}_images"], sample[f"{split}_labels"].astype(np.int64)


class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST: MNIST's layout and file names, clothes instead of digits.

    No sample ships for it: give ``root``, set ``$EMBER_DATA``, or ``download=True``
    (which, without a root, uses ``~/.cache/ember/datasets/fashion-mnist``).

    >>> FashionMNIST.classes[0]
    'T-shirt/top'
    >>> test = FashionMNIST(root="data", train=False)  # data/ or data/fashion-mnist/ has the files
    """

    folder_name = "fashion-mnist"
    mirrors = FASHION_MNIST_MIRRORS
    md5s = FASHION_MNIST_MD5
    has_sample = False
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]
