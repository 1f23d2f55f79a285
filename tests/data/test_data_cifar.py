"""CIFAR-10: the real binary files, a python-version copy built here, md5 checks, and the
restricted unpickler refusing malicious pickles."""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

import ember
from ember.data import DataLoader
from ember.data.datasets import (CIFAR10, CIFAR10_BINARY_MD5, DatasetError, UnsafePickleError,
                                 read_cifar_binary, restricted_load)
from ember.data.datasets import cifar as cifar_module
from ember.data.transforms import ToTensor

REPO = Path(__file__).resolve().parents[2]
BIN = "cifar-10-batches-bin"
RECORD = 3073
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]


def hand_read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A binary batch read without ember: split each record into its three colour planes and
    interleave them as the last axis."""
    raw = np.frombuffer(path.read_bytes(), np.uint8).reshape(-1, RECORD)
    red, green, blue = raw[:, 1:1025], raw[:, 1025:2049], raw[:, 2049:]
    images = np.stack([red, green, blue], axis=-1).reshape(-1, 32, 32, 3)
    return images, raw[:, 0].astype(np.int64)


@pytest.fixture(scope="module")
def bin_folder(cifar_root) -> Path:
    return cifar_root / BIN


@pytest.fixture(scope="module")
def cifar_train(cifar_root):
    return CIFAR10(cifar_root, train=True)


@pytest.fixture(scope="module")
def cifar_test(cifar_root):
    return CIFAR10(cifar_root, train=False)


# ------------------------------------------------------------ the real binary files
def test_md5_table_matches_the_authoritative_sums(cifar_root):
    lines = (cifar_root.parent / "MD5SUMS").read_text().splitlines()
    pairs = (line.split() for line in lines if line.strip())
    sums = {Path(name).name: md5 for md5, name in pairs
            if name.startswith(f"cifar-10/{BIN}/") and name.endswith(".bin")}
    assert CIFAR10.binary_md5s == CIFAR10_BINARY_MD5 == sums and len(sums) == 6


def test_full_train_split(cifar_train, bin_folder):
    ds = cifar_train
    assert len(ds) == 50000 and ds.format == "binary" and ds.root == bin_folder
    assert ds.images.shape == (50000, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.images.flags.c_contiguous
    assert ds.labels.shape == (50000,) and ds.labels.dtype == np.int64
    assert np.bincount(ds.labels).tolist() == [5000] * 10
    for k, name in enumerate(TRAIN_FILES):
        images, labels = hand_read(bin_folder / name)
        np.testing.assert_array_equal(ds.images[k * 10000:(k + 1) * 10000], images)
        np.testing.assert_array_equal(ds.labels[k * 10000:(k + 1) * 10000], labels)


def test_full_test_split(cifar_test, bin_folder):
    ds = cifar_test
    assert len(ds) == 10000 and ds.images.shape == (10000, 32, 32, 3)
    assert np.bincount(ds.labels).tolist() == [1000] * 10
    images, labels = hand_read(bin_folder / "test_batch.bin")
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)


def test_first_record_matches_bytes_read_by_hand(cifar_train, bin_folder):
    with open(bin_folder / "data_batch_1.bin", "rb") as f:
        record = f.read(RECORD)
    image, label = cifar_train[0]
    assert isinstance(image, ember.Tensor) and image.shape == (32, 32, 3)
    assert type(label) is int and label == record[0]
    for row in range(32):
        for col in range(32):
            for channel in range(3):
                want = record[1 + channel * 1024 + row * 32 + col]
                assert image.array[row, col, channel] == want
    assert cifar_train.classes[label] == "frog"
    # The first ten labels of data_batch_1, as published alongside the data set.
    assert cifar_train.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]


def test_classes_come_from_batches_meta(cifar_test, bin_folder):
    names = (bin_folder / "batches.meta.txt").read_text().split()
    assert cifar_test.classes == names == CLASS_NAMES
    assert cifar_test.class_to_idx["truck"] == 9


def test_to_tensor_gives_the_files_colour_planes(cifar_test, bin_folder):
    ds = CIFAR10(bin_folder, train=False, transform=ToTensor())
    with open(bin_folder / "test_batch.bin", "rb") as f:
        f.seek(5 * RECORD)
        record = np.frombuffer(f.read(RECORD), np.uint8)
    image, _ = ds[5]
    assert image.shape == (3, 32, 32) and image.dtype == np.float32
    planes = record[1:].reshape(3, 32, 32)  # the file's own CHW order
    np.testing.assert_array_equal(image.array, planes.astype(np.float32) / np.float32(255))


def test_loader_fast_path_equals_per_sample_batches(bin_folder):
    ds_tf = CIFAR10(bin_folder, train=False, transform=ToTensor())
    fast = DataLoader(ds_tf, batch_size=100, shuffle=True, generator=np.random.default_rng(3))
    slow = DataLoader(ds_tf, batch_size=100, shuffle=True, generator=np.random.default_rng(3),
                      collate_fn=ember.data.default_collate)
    assert fast.uses_fast_path and not slow.uses_fast_path
    for (xf, yf), (xs, ys) in zip(list(fast)[:3], list(slow)[:3]):
        assert xf.shape == (100, 3, 32, 32) and xf.dtype == np.float32
        np.testing.assert_array_equal(xf.array, xs.array)
        np.testing.assert_array_equal(yf.array, ys.array)


def test_root_layouts_and_ember_data_env(data_root, cifar_root, bin_folder, cifar_test,
                                         monkeypatch):
    for root in (data_root, cifar_root, bin_folder):
        ds = CIFAR10(root, train=False)
        assert ds.root == bin_folder
        np.testing.assert_array_equal(ds.labels, cifar_test.labels)
    monkeypatch.setenv("EMBER_DATA", str(data_root))
    assert CIFAR10(train=False).root == bin_folder
    assert "split=test, samples=10000" in repr(cifar_test)


def test_md5_is_hashed_once_per_file(bin_folder, cifar_test, monkeypatch):
    monkeypatch.setattr(hashlib, "md5", lambda *a: pytest.fail("hashed twice"))
    CIFAR10(bin_folder, train=False)


# ------------------------------------------------------------ missing and corrupt files
def test_missing_data_names_the_file_its_md5_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("EMBER_DATA", raising=False)
    monkeypatch.setattr(cifar_module, "DEFAULT_DOWNLOAD_ROOT", tmp_path / "nothing")
    for call in (lambda: CIFAR10(tmp_path), lambda: CIFAR10()):
        with pytest.raises(FileNotFoundError) as err:
            call()
        message = str(err.value)
        for part in ("data_batch_1.bin", CIFAR10_BINARY_MD5["data_batch_1.bin"],
                     "cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", "EMBER_DATA",
                     BIN):
            assert part in message


def test_one_missing_batch_is_named(tmp_path, bin_folder):
    for name in [*TRAIN_FILES, "batches.meta.txt"]:
        if name != "data_batch_3.bin":
            (tmp_path / name).symlink_to(bin_folder / name)
    with pytest.raises(FileNotFoundError, match="data_batch_3.bin.*942cd6a4bcdd0dd3c604fbe9"):
        CIFAR10(tmp_path)


def test_missing_meta_file_is_named(tmp_path, bin_folder):
    (tmp_path / "test_batch.bin").symlink_to(bin_folder / "test_batch.bin")
    with pytest.raises(FileNotFoundError, match=r"batches\.meta\.txt not found"):
        CIFAR10(tmp_path, train=False)


def test_md5_mismatch_names_the_file_and_the_expected_sum(tmp_path, bin_folder):
    with open(bin_folder / "test_batch.bin", "rb") as f:
        damaged = bytearray(f.read(RECORD * 3))
    damaged[100] ^= 0xFF
    (tmp_path / "test_batch.bin").write_bytes(bytes(damaged))
    with pytest.raises(DatasetError) as err:
        CIFAR10(tmp_path, train=False)
    message = str(err.value)
    assert str(tmp_path / "test_batch.bin") in message
    assert CIFAR10_BINARY_MD5["test_batch.bin"] in message and "corrupt" in message


def fake_binary(path: Path, labels, rng) -> np.ndarray:
    """Write records with these labels and random pixels; returns the records."""
    records = rng.integers(0, 256, (len(labels), RECORD), dtype=np.uint8)
    records[:, 0] = labels
    path.write_bytes(records.tobytes())
    return records


def accept_files(monkeypatch, folder: Path, attribute: str = "binary_md5s") -> None:
    """Let CIFAR10 accept the (fake) files in ``folder`` by patching its md5 table."""
    sums = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    monkeypatch.setattr(CIFAR10, attribute, {**getattr(CIFAR10, attribute), **sums})


def test_malformed_binary_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    (tmp_path / "batches.meta.txt").write_text("\n".join(CLASS_NAMES) + "\n\n")
    records = fake_binary(tmp_path / "test_batch.bin", [3, 0, 9], rng)
    accept_files(monkeypatch, tmp_path)
    ds = CIFAR10(tmp_path, train=False)  # any whole number of records, trailing blank lines
    assert ds.labels.tolist() == [3, 0, 9] and ds.classes == CLASS_NAMES
    assert ds.images[2, 31, 0, 2] == records[2, 1 + 2048 + 31 * 32]
    (tmp_path / "test_batch.bin").write_bytes(records.tobytes()[:-5])
    accept_files(monkeypatch, tmp_path)
    with pytest.raises(DatasetError, match="not a whole number of CIFAR-10 records"):
        CIFAR10(tmp_path, train=False)
    fake_binary(tmp_path / "test_batch.bin", [1, 10], rng)
    accept_files(monkeypatch, tmp_path)
    with pytest.raises(DatasetError, match="test_batch.bin: label 10 is outside"):
        CIFAR10(tmp_path, train=False)
    (tmp_path / "batches.meta.txt").write_text("cat\ndog\n")
    fake_binary(tmp_path / "test_batch.bin", [1], rng)
    accept_files(monkeypatch, tmp_path)
    with pytest.raises(DatasetError, match="expected 10 class names"):
        CIFAR10(tmp_path, train=False)


def test_read_cifar_binary_concatenates_files(tmp_path):
    rng = np.random.default_rng(1)
    a = fake_binary(tmp_path / "a.bin", [1, 2], rng)
    b = fake_binary(tmp_path / "b.bin", [3], rng)
    images, labels = read_cifar_binary([tmp_path / "a.bin", tmp_path / "b.bin"])
    assert labels.tolist() == [1, 2, 3]
    both = np.concatenate([a, b])
    np.testing.assert_array_equal(images, both[:, 1:].reshape(3, 3, 32, 32).transpose(0, 2, 3, 1))


def test_missing_dataset_folder_fails_in_ci(tmp_path):
    """End to end: with CI=true a missing dataset folder is an error, not a skip."""
    env = {**os.environ, "CI": "true", "EMBER_DATA": str(tmp_path / "no-datasets-here")}
    test = f"{Path(__file__).relative_to(REPO)}::test_full_test_split"
    result = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p",
                             "no:cacheprovider", test], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "1 error" in output
    assert "no-datasets-here is missing" in output and "EMBER_DATA" in output


def test_missing_dataset_folder_skips_outside_ci(tmp_path, monkeypatch):
    import importlib.util
    spec = importlib.util.spec_from_file_location("data_conftest", Path(__file__).with_name(
        "conftest.py"))
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-datasets-here is missing"):
        conftest._require(tmp_path / "no-datasets-here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-datasets-here is missing"):
        conftest._require(tmp_path / "no-datasets-here")
    assert conftest._require(tmp_path) == tmp_path


# ------------------------------------------------------------ download=True
def make_archive(served: Path, rng, symlinked: str | None = None) -> dict:
    """A small cifar-10-binary.tar.gz in ``served`` (2 records a file, a readme, and a
    ``../evil.txt`` member); returns {name: records} and sets ``"md5s"``, ``"archive_md5"``."""
    served.mkdir(exist_ok=True)
    contents, md5s = {}, {}
    for k, name in enumerate([*TRAIN_FILES, "test_batch.bin"]):
        records = rng.integers(0, 256, (2, RECORD), dtype=np.uint8)
        records[:, 0] = [k, 9 - k]
        contents[name] = records
        md5s[name] = hashlib.md5(records.tobytes()).hexdigest()
    files = {f"{BIN}/{n}": r.tobytes() for n, r in contents.items()}
    files[f"{BIN}/batches.meta.txt"] = ("\n".join(CLASS_NAMES) + "\n\n").encode()
    files[f"{BIN}/readme.html"] = b"<html></html>"
    files["../evil.txt"] = b"should never be written"
    archive = served / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if name == f"{BIN}/{symlinked}":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
                continue
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return {"records": contents, "md5s": md5s,
            "archive_md5": hashlib.md5(archive.read_bytes()).hexdigest()}


def serve(monkeypatch, served: Path, made: dict) -> None:
    monkeypatch.setattr(CIFAR10, "binary_md5s", made["md5s"])
    monkeypatch.setattr(CIFAR10, "archive_md5", made["archive_md5"])
    monkeypatch.setattr(CIFAR10, "mirrors", [served.as_uri() + "/"])


def test_download_extracts_the_archive_and_reuses_it(tmp_path, monkeypatch):
    made = make_archive(tmp_path / "served", np.random.default_rng(4))
    serve(monkeypatch, tmp_path / "served", made)
    root = tmp_path / "data"
    test = CIFAR10(root, train=False, download=True)
    assert test.root == root / BIN and test.labels.tolist() == [5, 4]
    records = made["records"]["test_batch.bin"]
    np.testing.assert_array_equal(test.images[1].transpose(2, 0, 1).reshape(-1), records[1, 1:])
    assert sorted(p.name for p in root.iterdir()) == [BIN, "cifar-10-binary.tar.gz"]
    assert sorted(p.name for p in (root / BIN).iterdir()) == sorted(
        [*made["md5s"], "batches.meta.txt"])  # exactly the seven files: no readme, no .part
    assert not (tmp_path / "evil.txt").exists()
    (tmp_path / "served" / "cifar-10-binary.tar.gz").unlink()  # no second fetch from now on
    train = CIFAR10(root, train=True, download=True)
    assert len(train) == 10 and train.labels.tolist()[::2] == [0, 1, 2, 3, 4]
    (root / BIN / "data_batch_2.bin").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="data_batch_2.bin has md5"):
        CIFAR10(root, train=True)
    assert len(CIFAR10(root, train=True, download=True)) == 10  # re-extracted from the archive


def test_download_without_root_goes_under_ember_data(tmp_path, monkeypatch):
    made = make_archive(tmp_path / "served", np.random.default_rng(5))
    serve(monkeypatch, tmp_path / "served", made)
    monkeypatch.setenv("EMBER_DATA", str(tmp_path / "env"))
    ds = CIFAR10(train=False, download=True)
    assert ds.root == tmp_path / "env" / "cifar-10" / BIN and len(ds) == 2


def test_download_refuses_a_bad_archive_and_leaves_nothing(tmp_path, monkeypatch):
    made = make_archive(tmp_path / "served", np.random.default_rng(6))
    serve(monkeypatch, tmp_path / "served", {**made, "archive_md5": "0" * 32})
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match=f"md5 {made['archive_md5']} does not match the "
                                           f"expected {'0' * 32}"):
        CIFAR10(root, download=True)
    assert [p.name for p in root.iterdir()] == []
    made = make_archive(tmp_path / "served", np.random.default_rng(6), symlinked="test_batch.bin")
    serve(monkeypatch, tmp_path / "served", made)
    with pytest.raises(DatasetError, match=f"has no regular file {BIN}/test_batch.bin"):
        CIFAR10(root, train=False, download=True)


# ------------------------------------------------------------ the python version
class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` and names NumPy's old ``numpy.core`` module, like the
    pickles in the official cifar-10-python.tar.gz (made with Python 2's cPickle)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def write_pickle(path: Path, obj, py2: bool) -> None:
    with open(path, "wb") as f:
        if py2:
            Py2Pickler(f, protocol=2).dump(obj)
        else:
            pickle.dump(obj, f, protocol=4)


def python_batch(images_hwc: np.ndarray, labels: np.ndarray, name: str) -> dict:
    """A batch dict in the official python version's layout."""
    planes = images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), 3072)
    return {b"batch_label": name.encode(), b"labels": [int(y) for y in labels],
            b"data": np.ascontiguousarray(planes),
            b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}


def build_python_version(folder: Path, source: CIFAR10, train: bool, py2: bool,
                         per_file: int = 6) -> np.ndarray:
    """A cifar-10-batches-py folder holding ``per_file`` real records of each binary file;
    returns their indices in ``source``."""
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    picked = []
    for k, name in enumerate(names):
        idx = np.arange(per_file) * 997 + k * 10000 + 13
        batch = python_batch(source.images[idx], source.labels[idx], name)
        write_pickle(folder / name, batch, py2)
        picked.append(idx)
    meta = {b"label_names": [n.encode() for n in CLASS_NAMES], b"num_cases_per_batch": 10000,
            b"num_vis": 3072}
    write_pickle(folder / "batches.meta", meta, py2)
    return np.concatenate(picked)


@pytest.mark.parametrize("py2", [False, True])
def test_python_version_agrees_with_the_binary_one(tmp_path, cifar_train, monkeypatch, py2):
    folder = tmp_path / "cifar-10-batches-py"
    idx = build_python_version(folder, cifar_train, train=True, py2=py2)
    accept_files(monkeypatch, folder, "python_md5s")
    for root in (tmp_path, folder):
        ds = CIFAR10(root, train=True)
        assert ds.format == "python" and ds.root == folder and len(ds) == 30
        assert ds.images.shape == (30, 32, 32, 3) and ds.images.flags.c_contiguous
        np.testing.assert_array_equal(ds.images, cifar_train.images[idx])
        np.testing.assert_array_equal(ds.labels, cifar_train.labels[idx])
        assert ds.labels.dtype == np.int64 and ds.classes == CLASS_NAMES


def test_python_test_split_and_md5_check(tmp_path, cifar_test, monkeypatch):
    folder = tmp_path / "cifar-10" / "cifar-10-batches-py"
    idx = build_python_version(folder, cifar_test, train=False, py2=False)
    with pytest.raises(DatasetError, match="test_batch has md5 .* expected "
                                           "40351d587109b95175f43aff81a1287e"):
        CIFAR10(tmp_path, train=False)
    accept_files(monkeypatch, folder, "python_md5s")
    ds = CIFAR10(tmp_path, train=False, transform=ToTensor())
    image, label = ds[2]
    assert label == cifar_test.labels[idx[2]] and image.shape == (3, 32, 32)
    np.testing.assert_array_equal(image.array, ToTensor()(cifar_test.images[idx[2]]).array)


def test_binary_version_wins_where_both_are_present(tmp_path, bin_folder, cifar_test,
                                                    monkeypatch):
    build_python_version(tmp_path / "cifar-10-batches-py", cifar_test, train=False, py2=False)
    (tmp_path / BIN).symlink_to(bin_folder)
    assert CIFAR10(tmp_path, train=False).format == "binary"


def test_python_batch_with_wrong_contents(tmp_path, monkeypatch):
    folder = tmp_path / "py"
    folder.mkdir()
    meta = {b"label_names": [n.encode() for n in CLASS_NAMES]}
    write_pickle(folder / "batches.meta", meta, py2=False)
    cases = [({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8 array"),
             ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "list of 2 ints"),
             ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}, "label 12 is outside"),
             ([1, 2, 3], "expected a pickled dict")]
    for batch, message in cases:
        write_pickle(folder / "test_batch", batch, py2=False)
        accept_files(monkeypatch, folder, "python_md5s")
        with pytest.raises(DatasetError, match=message):
            CIFAR10(folder, train=False)
    (folder / "test_batch").write_bytes(pickle.dumps({b"labels": [1]})[:-4])
    accept_files(monkeypatch, folder, "python_md5s")
    with pytest.raises(DatasetError, match="not a valid pickle"):
        CIFAR10(folder, train=False)


# ------------------------------------------------------------ malicious pickles
class TouchFile:
    """Unpickling this runs ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


class PopenCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.marker)],))


@pytest.mark.parametrize("payload,refused", [(TouchFile, "system"), (EvalCall, "builtins.eval"),
                                             (PopenCall, "subprocess.Popen")])
@pytest.mark.parametrize("nested", [False, True])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, monkeypatch, payload, refused,
                                                      nested):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"
    evil = payload(marker)
    batch = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [evil]} if nested else evil
    write_pickle(folder / "test_batch", batch, py2=False)
    write_pickle(folder / "batches.meta", {b"label_names": [b"a"] * 10}, py2=False)
    with pytest.raises(DatasetError, match="md5"):  # not the official file: refused unread
        CIFAR10(tmp_path, train=False)
    accept_files(monkeypatch, folder, "python_md5s")  # past the md5: the unpickler must hold
    with pytest.raises(UnsafePickleError) as err:
        CIFAR10(tmp_path, train=False)
    message = str(err.value)
    assert refused in message and "test_batch" in message and "Nothing from it was run" in message
    with pytest.raises(pickle.UnpicklingError):
        restricted_load(folder / "test_batch")
    assert not marker.exists()


def test_restricted_load_admits_plain_data_and_arrays(tmp_path):
    data = {b"a": [1, "two", b"three", 4.5, None, True, (6, 7)],
            "arr": np.arange(12, dtype=np.float64).reshape(3, 4)}
    path = tmp_path / "ok.pkl"
    for protocol in (3, 4):
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        got = restricted_load(path)
        assert got[b"a"] == data[b"a"]
        np.testing.assert_array_equal(got["arr"], data["arr"])
    path.write_bytes(pickle.dumps(np.int64(3)))  # a NumPy scalar needs numpy's scalar global
    with pytest.raises(UnsafePickleError, match=r"multiarray\.scalar"):
        restricted_load(path)
