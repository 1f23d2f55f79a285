"""MNIST and Fashion-MNIST: the real files, md5 checks, corrupt files, the shipped sample."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import ember
from ember.data.datasets import (MNIST, SAMPLE_PATH, DatasetError, FashionMNIST, md5sum,
                                 read_idx_gz)
from ember.data.datasets import mnist as mnist_module
from ember.data.transforms import ToTensor

REPO = Path(__file__).resolve().parents[2]
FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
# Per-digit counts of MNIST's training labels, as published with the data set.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def read_by_hand(path: Path) -> np.ndarray:
    """An IDX .gz read with zlib and struct, a code path independent of ember's reader."""
    raw = zlib.decompress(path.read_bytes(), 16 + zlib.MAX_WBITS)
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw[4 + 4 * ndim:], np.uint8).reshape(dims)


def md5_table(root: Path) -> dict[str, str]:
    lines = (root.parent / "MD5SUMS").read_text().splitlines()
    pairs = (line.split() for line in lines if line.strip())
    return {Path(name).name: md5 for md5, name in pairs if name.startswith(root.name + "/")}


@pytest.fixture(scope="module")
def mnist_train(mnist_root):
    return MNIST(mnist_root, train=True)


# ------------------------------------------------------------ the real files
def test_md5_tables_match_the_authoritative_sums(mnist_root, fashion_root):
    assert MNIST.md5s == md5_table(mnist_root)
    assert FashionMNIST.md5s == md5_table(fashion_root)


@pytest.mark.parametrize("train,counts", [(True, MNIST_TRAIN_COUNTS), (False, MNIST_TEST_COUNTS)])
def test_full_mnist_shapes_dtypes_and_label_counts(mnist_root, mnist_train, train, counts):
    ds = mnist_train if train else MNIST(mnist_root, train=False)
    n = sum(counts)
    assert len(ds) == n == (60000 if train else 10000)
    assert ds.images.shape == (n, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (n,) and ds.labels.dtype == np.int64
    assert np.bincount(ds.labels).tolist() == counts
    prefix = "train" if train else "t10k"
    by_hand = read_by_hand(mnist_root / f"{prefix}-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(ds.images, by_hand)
    np.testing.assert_array_equal(ds.labels,
                                  read_by_hand(mnist_root / f"{prefix}-labels-idx1-ubyte.gz"))


def test_first_sample_matches_a_hand_read(mnist_root, mnist_train):
    images = read_by_hand(mnist_root / "train-images-idx3-ubyte.gz")
    labels = read_by_hand(mnist_root / "train-labels-idx1-ubyte.gz")
    image, label = mnist_train[0]
    assert isinstance(image, ember.Tensor) and image.dtype == np.uint8 and image.shape == (28, 28)
    np.testing.assert_array_equal(image.array, images[0])
    assert type(label) is int and label == int(labels[0]) == 5
    last_image, last_label = mnist_train[-1]
    np.testing.assert_array_equal(last_image.array, images[-1])
    assert last_label == int(labels[-1])
    assert mnist_train.data.shape == (60000, 28, 28) and mnist_train.targets.dtype == np.int64


@pytest.mark.parametrize("train", [True, False])
def test_full_fashion_mnist(fashion_root, train):
    ds = FashionMNIST(fashion_root, train=train)
    n = 60000 if train else 10000
    assert ds.images.shape == (n, 28, 28) and ds.images.dtype == np.uint8
    assert np.bincount(ds.labels).tolist() == [n // 10] * 10  # Fashion-MNIST is balanced
    prefix = "train" if train else "t10k"
    by_hand = read_by_hand(fashion_root / f"{prefix}-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(ds.images, by_hand)
    image, label = FashionMNIST(fashion_root, train=train, transform=ToTensor())[0]
    assert image.shape == (1, 28, 28) and image.dtype == np.float32
    assert label == int(read_by_hand(fashion_root / f"{prefix}-labels-idx1-ubyte.gz")[0])
    assert ds.classes[label] in FashionMNIST.classes


def test_root_layouts_and_ember_data_env(data_root, mnist_root, tmp_path, monkeypatch):
    by_parent = MNIST(data_root, train=False)
    assert by_parent.root == mnist_root
    raw = tmp_path / "MNIST" / "raw"  # torchvision's layout
    raw.mkdir(parents=True)
    for name in FILES[2:]:
        (raw / name).symlink_to(mnist_root / name)
    assert MNIST(tmp_path, train=False).root == raw
    monkeypatch.setenv("EMBER_DATA", str(data_root))
    from_env = MNIST(train=False)
    assert not from_env.is_sample and from_env.root == mnist_root
    np.testing.assert_array_equal(from_env.images, by_parent.images)


def test_md5_is_hashed_once_per_file(mnist_root, monkeypatch):
    path = mnist_root / "t10k-labels-idx1-ubyte.gz"
    first = md5sum(path)
    monkeypatch.setattr(hashlib, "md5", lambda *a: pytest.fail("hashed twice"))
    assert md5sum(path) == first == MNIST.md5s[path.name]


# ------------------------------------------------------------ missing and corrupt files
def test_missing_file_names_it_with_its_md5_and_how_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        MNIST(tmp_path)
    message = str(err.value)
    for part in ("train-images-idx3-ubyte.gz", MNIST.md5s["train-images-idx3-ubyte.gz"],
                 str(tmp_path), "download=True", "EMBER_DATA"):
        assert part in message


def test_missing_labels_file_is_reported(tmp_path, mnist_root):
    shutil.copy(mnist_root / "t10k-images-idx3-ubyte.gz", tmp_path)
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz.*ec29112d"):
        MNIST(tmp_path, train=False)


def copy_test_split(src: Path, dst: Path) -> Path:
    for name in FILES[2:]:
        shutil.copy(src / name, dst / name)
    return dst / "t10k-labels-idx1-ubyte.gz"


def test_md5_mismatch_names_the_file_and_the_expected_sum(tmp_path, mnist_root):
    labels = copy_test_split(mnist_root, tmp_path)
    data = bytearray(labels.read_bytes())
    data[len(data) // 2] ^= 0xFF
    labels.write_bytes(bytes(data))
    with pytest.raises(DatasetError) as err:
        MNIST(tmp_path, train=False)
    message = str(err.value)
    assert str(labels) in message and MNIST.md5s[labels.name] in message
    assert "download=True" in message
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_gzip_names_the_file(tmp_path, mnist_root, monkeypatch, damage):
    images = copy_test_split(mnist_root, tmp_path).with_name("t10k-images-idx3-ubyte.gz")
    data = bytearray(images.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        for i in range(1000, 1100):
            data[i] ^= 0x5A
    images.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="md5"):  # the checksum catches it first
        MNIST(tmp_path, train=False)
    # With the damaged file's own md5 accepted, the gzip layer must still name it.
    monkeypatch.setattr(MNIST, "md5s", {**MNIST.md5s, images.name: md5sum(images)})
    with pytest.raises(DatasetError) as err:
        MNIST(tmp_path, train=False)
    assert str(images) in str(err.value) and "gzip" in str(err.value)


def test_bad_magic_and_mismatched_counts(tmp_path, fake_mnist, write_idx_gz, monkeypatch):
    md5s, _ = fake_mnist(tmp_path)
    monkeypatch.setattr(MNIST, "md5s", md5s)
    assert len(MNIST(tmp_path, train=True)) == 12
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    md5s[bad.name] = write_idx_gz(bad, np.zeros(5, np.uint8), magic=0x0803)
    with pytest.raises(DatasetError, match=r"t10k-labels.*magic number is 0x00000803, expected "
                                           r"0x00000801"):
        MNIST(tmp_path, train=False)
    md5s[bad.name] = write_idx_gz(bad, np.zeros(4, np.uint8))
    with pytest.raises(DatasetError, match="5 images but t10k-labels-idx1-ubyte.gz holds 4"):
        MNIST(tmp_path, train=False)


def test_idx_size_disagreeing_with_header(tmp_path):
    path = tmp_path / "x.gz"
    header = struct.pack(">IIII", 0x0803, 3, 28, 28)
    path.write_bytes(gzip.compress(header + bytes(100)))
    with pytest.raises(DatasetError, match=r"x.gz: IDX header declares shape \(3, 28, 28\)"):
        read_idx_gz(path, 3)
    path.write_bytes(gzip.compress(header + bytes(3 * 784 + 1)))
    with pytest.raises(DatasetError, match="more data than its IDX header"):
        read_idx_gz(path, 3)


# ------------------------------------------------------------ the packaged sample
def test_sample_is_small_balanced_and_loads_without_data(tmp_path, monkeypatch):
    folder = SAMPLE_PATH.parent
    total = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    assert total <= 2_000_000, f"the packaged sample is {total} bytes, over 2 MB"
    assert (folder / "PROVENANCE.md").is_file()
    monkeypatch.delenv("EMBER_DATA", raising=False)
    monkeypatch.setattr(mnist_module, "DEFAULT_DOWNLOAD_ROOT", tmp_path / "empty-cache")
    train, test = MNIST(), MNIST(sample=True, train=False)
    assert train.is_sample and "packaged sample" in repr(train)
    assert train.images.shape == (10000, 28, 28) and train.images.dtype == np.uint8
    assert test.images.shape == (2000, 28, 28)
    assert np.bincount(train.labels).tolist() == [1000] * 10
    assert np.bincount(test.labels).tolist() == [200] * 10
    with pytest.raises(ValueError, match="no sample ships"):
        FashionMNIST(sample=True)


def test_sample_is_real_mnist_at_its_recorded_indices(mnist_root):
    with np.load(SAMPLE_PATH) as sample:
        for split, prefix in (("train", "train"), ("test", "t10k")):
            idx = sample[f"{split}_indices"].astype(np.int64)
            assert np.all(np.diff(idx) > 0)
            images = read_by_hand(mnist_root / f"{prefix}-images-idx3-ubyte.gz")
            labels = read_by_hand(mnist_root / f"{prefix}-labels-idx1-ubyte.gz")
            np.testing.assert_array_equal(sample[f"{split}_images"], images[idx])
            np.testing.assert_array_equal(sample[f"{split}_labels"], labels[idx])


def test_sample_follows_the_documented_rule(mnist_root):
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_mnist_sample",
                                                  REPO / "tools" / "make_mnist_sample.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rebuilt = tool.build_sample(mnist_root)
    with np.load(SAMPLE_PATH) as sample:
        assert sorted(sample.files) == sorted(rebuilt)
        for name, array in rebuilt.items():
            assert sample[name].dtype == array.dtype
            np.testing.assert_array_equal(sample[name], array)
    provenance = (SAMPLE_PATH.parent / "PROVENANCE.md").read_text()
    assert str(tool.SEED) in provenance and "CC BY-SA 3.0" in provenance
    for md5 in MNIST.md5s.values():
        assert md5 in provenance


def test_getitem_with_transforms_and_bad_indices():
    ds = MNIST(sample=True, train=False, transform=ToTensor(), target_transform=lambda y: y + 100)
    image, label = ds[3]
    np.testing.assert_array_equal(image.array[0], ds.images[3].astype(np.float32) / 255)
    assert label == int(ds.labels[3]) + 100
    with pytest.raises(IndexError, match="MNIST index 2000 is out of range for length 2000"):
        ds[2000]
    assert ds.class_to_idx["7 - seven"] == 7


def test_without_root_a_filled_download_cache_wins_over_the_sample(tmp_path, monkeypatch,
                                                                   fake_mnist):
    md5s, arrays = fake_mnist(tmp_path / "cache" / "mnist")
    monkeypatch.setattr(MNIST, "md5s", md5s)
    monkeypatch.delenv("EMBER_DATA", raising=False)
    monkeypatch.setattr(mnist_module, "DEFAULT_DOWNLOAD_ROOT", tmp_path / "cache")
    ds = MNIST(train=False)
    assert not ds.is_sample and ds.root == tmp_path / "cache" / "mnist"
    np.testing.assert_array_equal(ds.images, arrays["t10k"][0])
    with pytest.raises(FileNotFoundError, match="FashionMNIST.*download=True"):
        FashionMNIST(train=False)
