"""Map-style datasets: the base class, tensors as a dataset, subsets, concatenation.

A dataset is anything with ``__len__`` and ``__getitem__(int)``. Array-backed
datasets may also offer ``get_batch(indices)``, returning the same batch that
``default_collate([ds[i] for i in indices])`` would, built with one fancy-indexing
step; the DataLoader uses it when the dataset's ``batchable`` is true.
"""

from __future__ import annotations

import bisect
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ember import random as ember_random
from ember.tensor import Tensor

__all__ = ["Dataset", "TensorDataset", "Subset", "ConcatDataset", "random_split",
           "resolve_generator", "is_batchable_transform", "as_batch"]


class Dataset:
    """Base class of map-style datasets: subclasses define ``__getitem__`` and ``__len__``.

    >>> class Squares(Dataset):
    ...     def __len__(self): return 4
    ...     def __getitem__(self, i): return i * i
    >>> len(Squares() + Squares())
    8
    """

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __add__(self, other: Dataset) -> ConcatDataset:
        return ConcatDataset([self, other])


def resolve_generator(generator: Any = None) -> np.random.Generator:
    """The NumPy generator to draw from: ``generator`` itself, the one it holds, or ember's.

    ``None`` means ember's global generator, looked up now, so that a later
    ``ember.manual_seed(s)`` takes effect.
    """
    if generator is None:
        return ember_random.generator()
    if isinstance(generator, np.random.Generator):
        return generator
    for name in ("generator", "rng"):
        held = getattr(generator, name, None)
        if isinstance(held, np.random.Generator):
            return held
    raise TypeError("generator must be a numpy.random.Generator (or an object whose "
                    f".generator is one), got {type(generator).__name__}")


def is_batchable_transform(transform: Any) -> bool:
    """Whether ``transform`` (None or a transform object) can run on a whole batch."""
    if transform is None:
        return True
    return bool(getattr(transform, "batchable", False)) and callable(
        getattr(transform, "batch", None))


def as_batch(batch: Any) -> Any:
    """A whole-batch transform's result as ``default_collate`` would give it: arrays
    become Tensors (so the fast path matches the per-sample path)."""
    if isinstance(batch, np.ndarray):
        return Tensor._make(batch, False, None)
    return batch


def _check_index(index: Any, length: int, owner: str) -> int:
    """A plain int index in range (negative counts from the end), as sequences accept."""
    try:
        i = int(np.asarray(index).item()) if not isinstance(index, int) else index
    except (TypeError, ValueError):
        raise TypeError(f"{owner} indices must be integers, got {type(index).__name__}") from None
    if not -length <= i < length:
        raise IndexError(f"{owner} index {i} is out of range for length {length}")
    return i + length if i < 0 else i


class TensorDataset(Dataset):
    """Samples are tuples ``(t[i] for t in tensors)``; all tensors share their first size.

    >>> ds = TensorDataset(ember.arange(6).reshape(3, 2), ember.tensor([0, 1, 0]))
    >>> ds[1]
    (tensor([2, 3]), tensor(1))
    """

    batchable = True

    def __init__(self, *tensors: Any) -> None:
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        self.tensors = tuple(t if isinstance(t, Tensor) else Tensor(np.asarray(t))
                             for t in tensors)
        sizes = [t.shape[0] if t.ndim else None for t in self.tensors]
        if None in sizes or len(set(sizes)) != 1:
            raise ValueError("Size mismatch between tensors: TensorDataset needs tensors with "
                             f"the same first dimension, got shapes "
                             f"{[tuple(t.shape) for t in self.tensors]}")

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, index: int) -> tuple:
        return tuple(t[index] for t in self.tensors)

    def get_batch(self, indices: np.ndarray) -> list:
        """The collated batch for ``indices``: one stacked tensor per stored tensor."""
        return [Tensor._make(t.array[indices], False, None) for t in self.tensors]


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order.

    >>> Subset(TensorDataset(ember.arange(5)), [4, 0])[0]
    (tensor(4),)
    """

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        i = _check_index(index, len(self.indices), "Subset")
        return self.dataset[int(self.indices[i])]

    @property
    def batchable(self) -> bool:
        return bool(getattr(self.dataset, "batchable", False)) and hasattr(
            self.dataset, "get_batch")

    def get_batch(self, indices: np.ndarray) -> Any:
        return self.dataset.get_batch(self.indices[np.asarray(indices)])


class ConcatDataset(Dataset):
    """Several datasets one after another; ``len`` is the sum of theirs.

    >>> len(ConcatDataset([TensorDataset(ember.zeros(2)), TensorDataset(ember.ones(3))]))
    5
    """

    def __init__(self, datasets: Sequence[Any]) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("datasets should not be an empty iterable")
        self.cumulative_sizes = list(np.cumsum([len(d) for d in self.datasets]).tolist())

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, index: int) -> Any:
        i = _check_index(index, len(self), "ConcatDataset")
        which = bisect.bisect_right(self.cumulative_sizes, i)
        start = self.cumulative_sizes[which - 1] if which else 0
        return self.datasets[which][i - start]


def _split_lengths(total: int, lengths: Sequence[float]) -> list[int]:
    """torch's rule: fractions summing to 1 become counts, the remainder dealt round-robin."""
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        if any(not 0 <= f <= 1 for f in lengths):
            raise ValueError(f"random_split: fractions must lie in [0, 1], got {list(lengths)}")
        counts = [int(math.floor(total * f)) for f in lengths]
        for i in range(total - sum(counts)):
            counts[i % len(counts)] += 1
        for i, n in enumerate(counts):
            if n == 0:
                warnings.warn(f"Length of split at index {i} is 0. This might result in an "
                              "empty dataset.", stacklevel=3)
        return counts
    if any(int(n) != n or n < 0 for n in lengths):
        raise ValueError(f"random_split: lengths must be non-negative integers or fractions "
                         f"summing to 1, got {list(lengths)}")
    return [int(n) for n in lengths]


def random_split(dataset: Any, lengths: Sequence[float], generator: Any = None) -> list[Subset]:
    """Split ``dataset`` into non-overlapping random subsets of the given lengths.

    ``lengths`` are counts summing to ``len(dataset)`` or fractions summing to 1;
    the permutation comes from ``generator`` (default: ember's global one).

    >>> train, val = random_split(TensorDataset(ember.arange(10)), [0.8, 0.2])
    >>> len(train), len(val)
    (8, 2)
    """
    counts = _split_lengths(len(dataset), lengths)
    if sum(counts) != len(dataset):
        raise ValueError("Sum of input lengths does not equal the length of the input dataset! "
                         f"(lengths {counts} sum to {sum(counts)}, the dataset has "
                         f"{len(dataset)} samples)")
    order = resolve_generator(generator).permutation(len(dataset))
    bounds = np.cumsum([0, *counts])
    return [Subset(dataset, order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
