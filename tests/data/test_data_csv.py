"""CSVDataset: numeric CSVs and Kaggle digit-recognizer files, and the parse errors' wording."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import ember
from ember.data import DataLoader, default_collate
from ember.data.datasets import CSVDataset, DatasetError
from ember.data.datasets import csvfile as csvfile_module
from ember.data.transforms import Compose, Normalize, OneHot, Standardize, ToTensor

RNG = np.random.default_rng(7)


def write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def kaggle_file(path: Path, n: int, labelled: bool = True):
    pixels = RNG.integers(0, 256, (n, 784))
    labels = RNG.integers(0, 10, n)
    header = (["label"] if labelled else []) + [f"pixel{i}" for i in range(784)]
    rows = np.column_stack([labels, pixels]) if labelled else pixels
    write_csv(path, header, rows.tolist())
    return pixels, labels


def test_numeric_csv_with_a_named_target(tmp_path):
    x = RNG.standard_normal((20, 3)).round(6)
    y = RNG.integers(0, 4, 20)
    path = write_csv(tmp_path / "t.csv", ["a", "target", "b", "c"],
                     np.column_stack([x[:, 0], y, x[:, 1:]]).tolist())
    ds = CSVDataset(path, target="target")
    assert len(ds) == 20 and ds.columns == ["a", "b", "c"]
    assert ds.features.dtype == np.float32 and ds.targets.dtype == np.int64
    np.testing.assert_array_equal(ds.features, x.astype(np.float32))
    np.testing.assert_array_equal(ds.targets, y)
    features, target = ds[4]
    assert isinstance(features, ember.Tensor) and features.shape == (3,)
    assert target == y[4]
    by_index = CSVDataset(path, target=1, dtype=ember.float64)
    np.testing.assert_array_equal(by_index.features, x)


def test_float_targets_and_unlabelled_files(tmp_path):
    rows = [[0.5, 1.25], [1.0, -2.5], [3.0, 0.125]]
    ds = CSVDataset(write_csv(tmp_path / "r.csv", ["x", "y"], rows), target="y")
    assert ds.targets.dtype == np.float32 and ds.targets.tolist() == [1.25, -2.5, 0.125]
    unlabelled = CSVDataset(tmp_path / "r.csv", target=None)
    assert unlabelled.targets is None and unlabelled.features.shape == (3, 2)
    assert unlabelled[1].tolist() == [1.0, -2.5]  # features alone, no tuple
    batch = next(iter(DataLoader(unlabelled, batch_size=3)))
    assert isinstance(batch, ember.Tensor) and batch.shape == (3, 2)
    explicit = CSVDataset(tmp_path / "r.csv", target="y", target_dtype=ember.float64)
    assert explicit.targets.dtype == np.float64


def test_kaggle_digits_train_and_test_files(tmp_path):
    pixels, labels = kaggle_file(tmp_path / "train.csv", 9)
    train = CSVDataset.kaggle_digits(tmp_path / "train.csv", transform=ToTensor())
    assert train.features.shape == (9, 28, 28) and train.features.dtype == np.uint8
    np.testing.assert_array_equal(train.features.reshape(9, -1), pixels)
    np.testing.assert_array_equal(train.targets, labels)
    image, label = train[2]
    assert image.shape == (1, 28, 28) and label == labels[2]
    np.testing.assert_array_equal(image.array[0] * 255, pixels[2].reshape(28, 28))
    test_pixels, _ = kaggle_file(tmp_path / "test.csv", 4, labelled=False)
    test = CSVDataset.kaggle_digits(tmp_path / "test.csv")
    assert test.targets is None and test[0].dtype == np.uint8 and test[0].shape == (28, 28)
    np.testing.assert_array_equal(test.features.reshape(4, -1), test_pixels)


def test_good_files_are_parsed_without_the_line_by_line_scan(tmp_path, monkeypatch):
    kaggle_file(tmp_path / "train.csv", 30)
    monkeypatch.setattr(csvfile_module, "_data_lines",
                        lambda *a: pytest.fail("the per-line scan ran on a good file"))
    assert len(CSVDataset.kaggle_digits(tmp_path / "train.csv")) == 30


# ------------------------------------------------------------ errors
def test_bad_value_names_file_line_and_column(tmp_path):
    rows = [[1, 2, 3], [4, 5, 6], [7, "abc", 9], [1, 1, 1]]
    path = write_csv(tmp_path / "train.csv", ["label", "pixel0", "pixel1"], rows)
    with pytest.raises(DatasetError, match=r"^train.csv line 4, column 'pixel0': could not "
                                           r"convert 'abc' to a number$"):
        CSVDataset(path)


def test_line_numbers_count_blank_lines(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("label,pixel0,pixel1\n1,2,3\n\n4,5,6\n\n7,8,\n")
    with pytest.raises(DatasetError, match=r"gaps.csv line 6, column 'pixel1': could not "
                                           r"convert '' to a number"):
        CSVDataset(path)


def test_wrong_column_counts_are_reported(tmp_path):
    ragged = write_csv(tmp_path / "ragged.csv", ["label", "a", "b"], [[1, 2, 3], [4, 5], [6, 7, 8]])
    with pytest.raises(DatasetError, match=r"ragged.csv line 3: expected 3 columns \(as in the "
                                           r"header\), found 2"):
        CSVDataset(ragged)
    narrow = write_csv(tmp_path / "narrow.csv", ["label", "a", "b"], [[1, 2], [4, 5]])
    with pytest.raises(DatasetError, match="narrow.csv line 2: expected 3 columns"):
        CSVDataset(narrow)


def test_out_of_range_pixel_in_a_kaggle_file(tmp_path):
    kaggle_file(tmp_path / "train.csv", 5)
    lines = (tmp_path / "train.csv").read_text().splitlines()
    fields = lines[3].split(",")
    fields[6] = "300"  # column pixel5 of the third data row, line 4
    lines[3] = ",".join(fields)
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"train.csv line 4, column 'pixel5': could not "
                                           r"convert '300' to uint8"):
        CSVDataset.kaggle_digits(tmp_path / "train.csv")


def test_other_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        CSVDataset(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DatasetError, match="empty.csv line 1: expected a header row"):
        CSVDataset(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("label,x\n")
    with pytest.raises(DatasetError, match="header.csv: a header but no data rows"):
        CSVDataset(tmp_path / "header.csv")
    path = write_csv(tmp_path / "ok.csv", ["label", "x"], [[1, 2]])
    with pytest.raises(ValueError, match=r"ok.csv has no column 'target'; its columns are "
                                         r"\['label', 'x'\]"):
        CSVDataset(path, target="target")
    with pytest.raises(ValueError, match=r"image_shape \(2, 2\) needs 4 feature columns"):
        CSVDataset(path, image_shape=(2, 2))
    with pytest.raises(IndexError, match="CSVDataset index 1 is out of range"):
        CSVDataset(path)[1]


# ------------------------------------------------------------ with the DataLoader
def test_csv_fast_path_equals_per_sample_path(tmp_path):
    kaggle_file(tmp_path / "train.csv", 23)
    ds = CSVDataset.kaggle_digits(
        tmp_path / "train.csv", transform=Compose([ToTensor(), Normalize((0.5,), (0.2,))]),
        target_transform=OneHot(10))
    ember.manual_seed(0)
    fast = list(DataLoader(ds, batch_size=5, shuffle=True))
    ember.manual_seed(0)
    slow = list(DataLoader(ds, batch_size=5, shuffle=True, collate_fn=default_collate))
    assert len(fast) == len(slow) == 5
    for (fx, fy), (sx, sy) in zip(fast, slow):
        assert fx.dtype == sx.dtype == np.float32 and fx.shape == sx.shape
        np.testing.assert_array_equal(fx.array, sx.array)
        np.testing.assert_array_equal(fy.array, sy.array)


def test_standardize_fitted_on_csv_features(tmp_path):
    x = RNG.standard_normal((40, 4)) * 5 + 1
    path = write_csv(tmp_path / "s.csv", ["a", "b", "c", "d", "label"],
                     np.column_stack([x, RNG.integers(0, 2, 40)]).tolist())
    raw = CSVDataset(path, dtype=ember.float64)
    ds = CSVDataset(path, dtype=ember.float64, transform=Standardize().fit(raw.features))
    features, _ = next(iter(DataLoader(ds, batch_size=40)))
    np.testing.assert_allclose(features.array, (x - x.mean(0)) / x.std(0), rtol=1e-10)
