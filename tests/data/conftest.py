"""Fixtures for the data tests: where the real datasets are.

The datasets folder is ``$EMBER_DATA`` or ``../shared/datasets`` beside the
repository. Missing data skips the tests that need it, except in CI
(``CI=true``), where it is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _datasets_folder() -> Path:
    env = os.environ.get("EMBER_DATA")
    return Path(env) if env else REPO.parent / "shared" / "datasets"


def _require(folder: Path) -> Path:
    if folder.is_dir():
        return folder
    message = (f"dataset folder {folder} is missing: set EMBER_DATA to the folder holding "
               "mnist/ and fashion-mnist/ (the original .gz files) and "
               "cifar-10/cifar-10-batches-bin/, or put them in ../shared/datasets beside the "
               "repository")
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder holding mnist/, fashion-mnist/, cifar-10/ ..."""
    return _require(_datasets_folder())


@pytest.fixture(scope="session")
def mnist_root(data_root: Path) -> Path:
    return _require(data_root / "mnist")


@pytest.fixture(scope="session")
def fashion_root(data_root: Path) -> Path:
    return _require(data_root / "fashion-mnist")


@pytest.fixture(scope="session")
def cifar_root(data_root: Path) -> Path:
    """The folder holding cifar-10-batches-bin/ (the official binary version)."""
    _require(data_root / "cifar-10" / "cifar-10-batches-bin")
    return data_root / "cifar-10"


@pytest.fixture(name="write_idx_gz")
def write_idx_gz_fixture():
    """``write_idx_gz(path, array, magic=None) -> md5``, for tests that build IDX files."""
    return write_idx_gz


def write_idx_gz(path: Path, array, magic: int | None = None) -> str:
    """Write ``array`` (uint8) as a gzipped IDX file, written here independently of ember;
    returns its md5."""
    import gzip
    import hashlib
    import struct

    import numpy as np

    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = (0x08 << 8) | array.ndim if magic is None else magic
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes(), mtime=0))
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_mnist(tmp_path: Path):
    """Make a folder of four small but valid MNIST-layout files; returns a function
    ``make(folder) -> (md5 table, arrays)`` so tests can patch the expected sums."""
    import numpy as np

    def make(folder: Path, n_train: int = 12, n_test: int = 5, seed: int = 0):
        rng = np.random.default_rng(seed)
        folder.mkdir(parents=True, exist_ok=True)
        arrays, md5s = {}, {}
        for prefix, n in (("train", n_train), ("t10k", n_test)):
            arrays[prefix] = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                              rng.integers(0, 10, n, dtype=np.uint8))
            for kind, array, nd in (("images", arrays[prefix][0], 3),
                                    ("labels", arrays[prefix][1], 1)):
                name = f"{prefix}-{kind}-idx{nd}-ubyte.gz"
                md5s[name] = write_idx_gz(folder / name, array)
        return md5s, arrays
    return make
