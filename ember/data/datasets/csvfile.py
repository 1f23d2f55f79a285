"""CSVDataset: numeric CSV files with a header row, parsed by NumPy in one pass.

A parse failure is located afterwards by a slow, exact scan, so the error names
the file, the line and the column (``train.csv line 17, column 'pixel5': could
not convert 'abc' to a number``) instead of NumPy's row count.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ember.data.dataset import Dataset, _check_index, as_batch, is_batchable_transform
from ember.data.datasets._files import DatasetError
from ember.tensor import Tensor

__all__ = ["CSVDataset"]


def _data_lines(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line after the header, split as loadtxt does."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if number > 1 and line.strip():
                yield number, line.rstrip("\r\n").split(delimiter)


def _parses(field: str, dtype: np.dtype) -> bool:
    """Whether NumPy's loadtxt accepts ``field`` as a value of ``dtype``."""
    if not field.strip():
        return False
    try:
        np.loadtxt([field], dtype=dtype, delimiter="\x00", comments=None, ndmin=1)
        return True
    except (ValueError, OverflowError):
        return False


def _what(dtype: np.dtype) -> str:
    return "a number" if dtype.kind == "f" else f"{dtype.name} (whole numbers in range)"


class CSVDataset(Dataset):
    """Rows of a numeric CSV file as ``(features, target)`` samples.

    path: a CSV file whose first line names the columns. target: the target
    column's name (or index), or None for unlabelled data, whose samples are
    the features alone. dtype: the features' dtype. target_dtype: None gives
    int64 when every target is a whole number, else ``dtype``. image_shape:
    reshape each row of features, e.g. (28, 28). features: ``transform(array)``
    or a Tensor; target: a NumPy scalar, or ``target_transform(scalar)``.

    >>> ds = CSVDataset("houses.csv", target="price", target_dtype=ember.float32)
    >>> digits = CSVDataset.kaggle_digits("train.csv", transform=ToTensor())
    >>> image, label = digits[0]       # float32 (1, 28, 28) and an int64 label
    """

    def __init__(self, path: str | os.PathLike, target: str | int | None = "label",
                 dtype: Any = np.float32, target_dtype: Any = None,
                 image_shape: Sequence[int] | None = None, transform: Callable | None = None,
                 target_transform: Callable | None = None, delimiter: str = ",") -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        if self.dtype.kind not in "iuf":
            raise ValueError(f"CSVDataset: dtype must be a number type, got {self.dtype}")
        self.delimiter = delimiter
        self.transform, self.target_transform = transform, target_transform
        self.header = self._read_header()
        self.target_column = self._target_index(target)
        table = self._parse()
        keep = [i for i in range(len(self.header)) if i != self.target_column]
        self.columns = [self.header[i] for i in keep]
        self.features = self._shaped(table[:, keep].astype(self.dtype), image_shape)
        self.targets = (None if self.target_column is None
                        else self._targets(table[:, self.target_column], target_dtype))

    def _shaped(self, features: np.ndarray, image_shape: Sequence[int] | None) -> np.ndarray:
        if image_shape is None:
            return features
        if int(np.prod(image_shape)) != features.shape[1]:
            raise ValueError(f"CSVDataset: image_shape {tuple(image_shape)} needs "
                             f"{int(np.prod(image_shape))} feature columns, {self.path.name} "
                             f"has {features.shape[1]}")
        return features.reshape(len(features), *image_shape)

    @classmethod
    def kaggle_digits(cls, path: str | os.PathLike, transform: Callable | None = None,
                      target_transform: Callable | None = None) -> CSVDataset:
        """Kaggle's digit-recognizer ``train.csv`` (label, pixel0..783) or ``test.csv``
        (no label): uint8 (28, 28) images like MNIST's, so the same transforms apply."""
        with open(path, newline="") as f:
            first = next(csv.reader(f), [])
        target = "label" if "label" in first else None
        return cls(path, target=target, dtype=np.uint8, image_shape=(28, 28),
                   transform=transform, target_transform=target_transform)

    # ------------------------------------------------------------ samples
    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> Any:
        i = _check_index(index, len(self), "CSVDataset")
        row = self.features[i]
        x = self.transform(row) if self.transform else Tensor._make(row.copy(), False, None)
        if self.targets is None:
            return x
        y = self.targets[i]
        return x, (self.target_transform(y) if self.target_transform else y)

    @property
    def batchable(self) -> bool:
        return is_batchable_transform(self.transform) and is_batchable_transform(
            self.target_transform)

    def get_batch(self, indices: np.ndarray) -> Any:
        """The collated batch for ``indices``: features (and targets), transformed as a batch."""
        rows = self.features[indices]
        x = as_batch(self.transform.batch(rows) if self.transform else rows)
        if self.targets is None:
            return x
        ys = self.targets[indices]
        return [x, as_batch(self.target_transform.batch(ys) if self.target_transform else ys)]

    def __repr__(self) -> str:
        return f"CSVDataset({str(self.path)!r}, samples={len(self)}, features={len(self.columns)})"

    # ------------------------------------------------------------ parsing
    def _read_header(self) -> list[str]:
        if not self.path.is_file():
            raise FileNotFoundError(f"CSVDataset: no such file {self.path}")
        with open(self.path, newline="") as f:
            header = next(csv.reader(f, delimiter=self.delimiter), None)
        if not header:
            raise DatasetError(f"{self.path.name} line 1: expected a header row naming the "
                               "columns, found an empty file")
        return [name.strip() for name in header]

    def _target_index(self, target: str | int | None) -> int | None:
        if target is None:
            return None
        if isinstance(target, int) and not isinstance(target, bool):
            if not -len(self.header) <= target < len(self.header):
                raise ValueError(f"CSVDataset: target column {target} is out of range for "
                                 f"{len(self.header)} columns in {self.path.name}")
            return target % len(self.header)
        if target not in self.header:
            more = " ..." if len(self.header) > 8 else ""
            raise ValueError(f"CSVDataset: {self.path.name} has no column {target!r}; its "
                             f"columns are {self.header[:8]}{more}")
        return self.header.index(target)

    def _parse_dtype(self) -> np.dtype:
        """Integers parse as int64 (then range-checked), everything else as float64."""
        return np.dtype(np.int64) if self.dtype.kind in "iu" else np.dtype(np.float64)

    def _column_dtypes(self) -> list[np.dtype]:
        """What each column must parse as: features as ``dtype``, the target as parsed."""
        return [self._parse_dtype() if i == self.target_column else self.dtype
                for i in range(len(self.header))]

    def _parse(self) -> np.ndarray:
        """The whole table, in one NumPy pass; on failure, the exact bad line and column."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
                table = np.loadtxt(self.path, delimiter=self.delimiter, skiprows=1, ndmin=2,
                                   dtype=self._parse_dtype(), comments=None, encoding="utf-8")
        except (ValueError, OverflowError):
            self._raise_first_problem()
        if table.shape[0] == 0:
            raise DatasetError(f"{self.path.name}: a header but no data rows")
        if table.shape[1] != len(self.header) or not self._in_range(table):
            self._raise_first_problem()
        return table

    def _in_range(self, table: np.ndarray) -> bool:
        """Whether integer features fit ``dtype`` (uint8 pixels in 0..255, say)."""
        if self.dtype.kind not in "iu":
            return True
        info = np.iinfo(self.dtype)
        features = np.delete(table, self.target_column, axis=1) \
            if self.target_column is not None else table
        return bool(features.min() >= info.min and features.max() <= info.max)

    def _raise_first_problem(self) -> NoReturn:
        """Scan line by line for the first wrong column count or unparsable value."""
        name, width, dtypes = self.path.name, len(self.header), self._column_dtypes()
        for number, fields in _data_lines(self.path, self.delimiter):
            if len(fields) != width:
                raise DatasetError(f"{name} line {number}: expected {width} columns (as in "
                                   f"the header), found {len(fields)}")
            for column, field, dtype in zip(self.header, fields, dtypes):
                if not _parses(field, dtype):
                    raise DatasetError(f"{name} line {number}, column {column!r}: could not "
                                       f"convert {field!r} to {_what(dtype)}")
        raise DatasetError(f"{name}: NumPy could not parse the file, but no line-level "
                           "problem was found (is the delimiter right?)")

    def _targets(self, column: np.ndarray, target_dtype: Any) -> np.ndarray:
        if target_dtype is not None:
            return column.astype(target_dtype)
        if column.dtype.kind in "iu" or np.array_equal(column, np.round(column)):
            return column.astype(np.int64)
        return column.astype(self.dtype if self.dtype.kind == "f" else np.float32)
