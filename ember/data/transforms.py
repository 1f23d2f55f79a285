"""Transforms for samples and whole batches, torchvision's names and formulas.

Each transform is called on one sample (``t(x)``) and, when ``t.batchable`` is
true, also on a batch with a leading sample axis (``t.batch(xs)``) giving the
stack of what ``t`` gives per sample; array-backed datasets use ``batch`` for
the DataLoader's fast path. Inputs may be NumPy arrays or ember Tensors;
ToTensor and OneHot return Tensors, the others return the kind they were given.

>>> tf = Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])
>>> tf(np.zeros((28, 28), np.uint8)).shape
(1, 28, 28)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ember.tensor import Tensor

__all__ = ["Transform", "Compose", "ToTensor", "Normalize", "Standardize", "MinMaxScale",
           "OneHot", "Lambda"]


def _unwrap(x: Any) -> tuple[np.ndarray, bool]:
    """The array inside ``x`` and whether ``x`` was a Tensor."""
    if isinstance(x, Tensor):
        return x.array, True
    return np.asarray(x), False


def _wrap(array: np.ndarray, as_tensor: bool) -> Any:
    return Tensor._make(array, False, None) if as_tensor else array


def _float_of(array: np.ndarray) -> np.ndarray:
    """Floats stay as they are; integers and bools become float32."""
    return array if array.dtype.kind == "f" else array.astype(np.float32)


class Transform:
    """Base class: ``__call__`` transforms one sample, ``batch`` a stack of them."""

    batchable = True

    def __call__(self, x: Any) -> Any:
        raise NotImplementedError

    def batch(self, xs: Any) -> Any:
        return self(xs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Compose(Transform):
    """Apply transforms in order; batchable when every one of them is.

    >>> Compose([Lambda(lambda x: x + 1), Lambda(lambda x: x * 2)])(1)
    4
    """

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    @property
    def batchable(self) -> bool:
        return all(getattr(t, "batchable", False) and callable(getattr(t, "batch", None))
                   for t in self.transforms)

    def __call__(self, x: Any) -> Any:
        for t in self.transforms:
            x = t(x)
        return x

    def batch(self, xs: Any) -> Any:
        for t in self.transforms:
            xs = t.batch(xs)
        return xs

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


class ToTensor(Transform):
    """HW or HWC image → CHW Tensor; uint8 is scaled to float32 in [0, 1] (torchvision's rule).

    Other dtypes keep their dtype and values, as in torchvision. ``batch`` takes NHW or NHWC.

    >>> ToTensor()(np.full((2, 2), 255, np.uint8)).tolist()
    [[[1.0, 1.0], [1.0, 1.0]]]
    """

    def __call__(self, image: Any) -> Tensor:
        array, _ = _unwrap(image)
        if array.ndim not in (2, 3):
            raise ValueError(f"ToTensor: expected an HW or HWC image, got shape {array.shape}")
        chw = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return Tensor._make(self._scale(chw), False, None)

    def batch(self, images: Any) -> Tensor:
        array, _ = _unwrap(images)
        if array.ndim not in (3, 4):
            raise ValueError(f"ToTensor.batch: expected NHW or NHWC images, got shape "
                             f"{array.shape}")
        nchw = array[:, None] if array.ndim == 3 else array.transpose(0, 3, 1, 2)
        return Tensor._make(self._scale(nchw), False, None)

    @staticmethod
    def _scale(array: np.ndarray) -> np.ndarray:
        if array.dtype == np.uint8:
            return array.astype(np.float32) / np.float32(255)
        return np.ascontiguousarray(array)


class Normalize(Transform):
    """``(x - mean[c]) / std[c]`` per channel of a (..., C, H, W) float image or batch.

    >>> Normalize((0.5,), (0.5,))(ember.ones(1, 2, 2)).tolist()
    [[[1.0, 1.0], [1.0, 1.0]]]
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if self.mean.ndim != 1 or self.std.ndim != 1:
            raise ValueError("Normalize: mean and std must be sequences of per-channel values")

    def __call__(self, x: Any) -> Any:
        array, was_tensor = _unwrap(x)
        if array.dtype.kind != "f":
            raise TypeError(f"Normalize: input should be a float tensor, got {array.dtype}; "
                            "apply ToTensor() first")
        if array.ndim < 3:
            raise ValueError("Normalize: expected a (..., C, H, W) image, got shape "
                             f"{array.shape}")
        mean, std = self._per_channel(array)
        return _wrap((array - mean) / std, was_tensor)

    def _per_channel(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        channels = array.shape[-3]
        mean, std = self.mean.astype(array.dtype), self.std.astype(array.dtype)
        if (std == 0).any():
            raise ValueError(f"std evaluated to zero after conversion to {array.dtype}, "
                             "leading to division by zero.")
        for name, v in (("mean", mean), ("std", std)):
            if len(v) not in (1, channels):
                raise ValueError(f"Normalize: {len(v)} {name} values for an image with "
                                 f"{channels} channels (shape {array.shape})")
        return mean[:, None, None], std[:, None, None]

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class _Fitted(Transform):
    """A transform whose statistics come from ``fit(train_data)``."""

    def __init__(self, per_feature: bool) -> None:
        self.per_feature = per_feature
        self.fitted = False

    def _stats_input(self, data: Any) -> np.ndarray:
        array, _ = _unwrap(data)
        if array.ndim == 0 or len(array) == 0:
            raise ValueError(f"{type(self).__name__}.fit: needs a non-empty array of samples "
                             f"(N, ...), got shape {array.shape}")
        return array.astype(np.float64)

    def _axis(self) -> Any:
        return 0 if self.per_feature else None

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__}: call .fit(train_data) before "
                               "transforming (the statistics come from the training set)")


class Standardize(_Fitted):
    """``(x - mean) / std`` with mean and std from ``fit(train)``: per feature (over axis 0)
    or, with ``per_feature=False``, one scalar each. Constant features get std 1.

    >>> s = Standardize().fit(np.array([[0.0, 1.0], [2.0, 1.0]]))
    >>> s(np.array([2.0, 3.0])).tolist()
    [1.0, 2.0]
    """

    def __init__(self, per_feature: bool = True) -> None:
        super().__init__(per_feature)

    def fit(self, data: Any) -> Standardize:
        array = self._stats_input(data)
        self.mean = array.mean(axis=self._axis())
        std = array.std(axis=self._axis())
        self.std = np.where(std == 0, 1.0, std)
        self.fitted = True
        return self

    def __call__(self, x: Any) -> Any:
        self._check_fitted()
        array, was_tensor = _unwrap(x)
        array = _float_of(array)
        out = (array - self.mean.astype(array.dtype)) / self.std.astype(array.dtype)
        return _wrap(out, was_tensor)


class MinMaxScale(_Fitted):
    """Scale to ``feature_range`` with min and max from ``fit(train)``:
    ``(x - min) / (max - min) * (hi - lo) + lo``. Constant features get range 1.

    >>> MinMaxScale().fit(np.array([[0.0], [4.0]]))(np.array([1.0])).tolist()
    [0.25]
    """

    def __init__(self, feature_range: tuple[float, float] = (0.0, 1.0),
                 per_feature: bool = True) -> None:
        super().__init__(per_feature)
        lo, hi = feature_range
        if not lo < hi:
            raise ValueError(f"MinMaxScale: feature_range must be (low, high) with low < high, "
                             f"got {feature_range}")
        self.feature_range = (float(lo), float(hi))

    def fit(self, data: Any) -> MinMaxScale:
        array = self._stats_input(data)
        self.min = array.min(axis=self._axis())
        span = array.max(axis=self._axis()) - self.min
        self.span = np.where(span == 0, 1.0, span)
        self.fitted = True
        return self

    def __call__(self, x: Any) -> Any:
        self._check_fitted()
        array, was_tensor = _unwrap(x)
        array = _float_of(array)
        lo, hi = self.feature_range
        dt = array.dtype.type
        out = (array - self.min.astype(array.dtype)) / self.span.astype(array.dtype)
        return _wrap(out * dt(hi - lo) + dt(lo), was_tensor)


class OneHot(Transform):
    """Class index → one-hot vector of ``num_classes`` (float32 by default; a batch of
    N indices → (N, num_classes)).

    >>> OneHot(3)(1).tolist()
    [0.0, 1.0, 0.0]
    """

    def __init__(self, num_classes: int, dtype: Any = np.float32) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
                or num_classes < 1:
            raise ValueError(f"OneHot: num_classes must be a positive integer, got "
                             f"{num_classes!r}")
        self.num_classes = int(num_classes)
        self.dtype = np.dtype(dtype)

    def __call__(self, label: Any) -> Tensor:
        array, _ = _unwrap(label)
        if array.dtype.kind not in "iu":
            raise TypeError(f"OneHot: class indices must be integers, got {array.dtype}")
        bad = (array < 0) | (array >= self.num_classes)
        if bad.any():
            raise ValueError(f"OneHot: class index {array[bad].flat[0]} is out of range for "
                             f"num_classes={self.num_classes}")
        eye = np.eye(self.num_classes, dtype=self.dtype)
        return Tensor._make(eye[array], False, None)

    def __repr__(self) -> str:
        return f"OneHot(num_classes={self.num_classes})"


class Lambda(Transform):
    """Wrap a function as a transform. ``batched=True`` promises ``fn`` also works on a
    whole batch (then the fast path may use it); otherwise it runs per sample only.

    >>> Lambda(lambda x: x * 2)(3)
    6
    """

    def __init__(self, fn: Callable[[Any], Any], batched: bool = False) -> None:
        if not callable(fn):
            raise TypeError(f"Lambda: fn should be callable, got {type(fn).__name__}")
        self.fn = fn
        self.batchable = bool(batched)

    def __call__(self, x: Any) -> Any:
        return self.fn(x)

    def batch(self, xs: Any) -> Any:
        if not self.batchable:
            raise RuntimeError("Lambda(fn) was not declared batched=True")
        return self.fn(xs)

    def __repr__(self) -> str:
        return f"Lambda({getattr(self.fn, '__name__', repr(self.fn))})"
