"""default_collate: a list of samples becomes one batch of ember Tensors, like torch's.

Tensors and arrays are stacked (dtype kept); Python ints become int64, floats
float32 (ember's default float; torch would give float64), bools bool; strings
stay a list; dicts, tuples, lists and namedtuples are collated field by field
(a tuple of fields becomes a list, as in torch).
"""

from __future__ import annotations

import collections.abc
from collections.abc import Sequence
from typing import Any

import numpy as np

from ember.tensor import Tensor

__all__ = ["default_collate"]

_ERR = ("default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; "
        "found {}")


def _stack(arrays: Sequence[np.ndarray]) -> Tensor:
    first = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.shape != first:
            raise RuntimeError("stack expects each tensor to be equal size, but got "
                               f"{list(first)} at entry 0 and {list(a.shape)} at entry {i}")
    return Tensor._make(np.stack(arrays), False, None)


def _numbers(batch: Sequence[Any]) -> Tensor:
    array = np.array(batch)
    if array.dtype.kind == "f":
        array = array.astype(np.float32)
    elif array.dtype.kind in "iu":
        array = array.astype(np.int64)
    elif array.dtype.kind != "b":
        raise TypeError(_ERR.format(type(batch[0]).__name__))
    return Tensor._make(array, False, None)


def _sequences(batch: Sequence[Any]) -> Any:
    elem = batch[0]
    if any(len(sample) != len(elem) for sample in batch):
        raise RuntimeError("each element in list of batch should be of equal size")
    fields = [default_collate(list(samples)) for samples in zip(*batch)]
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*fields)
    return fields


def default_collate(batch: Sequence[Any]) -> Any:
    """Stack a list of samples into a batch.

    >>> default_collate([(ember.zeros(2), 0), (ember.ones(2), 1)])
    [tensor([[0., 0.],
            [1., 1.]]), tensor([0, 1])]
    """
    elem = batch[0]
    if isinstance(elem, Tensor):
        return _stack([t.array for t in batch])
    if isinstance(elem, np.ndarray) or (isinstance(elem, np.generic) and elem.dtype.kind in "biuf"):
        if elem.dtype.kind in "SUOaV":
            raise TypeError(_ERR.format(elem.dtype))
        return _stack([np.asarray(a) for a in batch])
    if isinstance(elem, (bool, int, float)):
        return _numbers(batch)
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, collections.abc.Mapping):
        return {key: default_collate([d[key] for d in batch]) for key in elem}
    if isinstance(elem, collections.abc.Sequence):
        return _sequences(batch)
    raise TypeError(_ERR.format(type(elem).__name__))
