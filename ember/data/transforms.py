"""Transforms for samples and whole batches, torchvision's names and formulas.

Each transform is called on one sample (``t(x)``) and, when ``t.batchable`` is
true, also on a batch with a leading sample axis (``t.batch(xs)``) giving the
stack of what ``t`` gives per sample; array-backed datasets use ``batch`` for
the DataLoader's fast path. Inputs may be NumPy arrays or ember Tensors;
ToTensor and OneHot return Tensors, the others return the kind they were given.

Random augmentations (RandomCrop, RandomHorizontalFlip, RandomVerticalFlip,
RandomErasing) read the image layout from the input's kind, as torchvision does
from PIL images and tensors: a NumPy array is an image as datasets store it and
ToTensor takes it, HW or HWC (a batch NHW or NHWC); an ember Tensor is what
ToTensor gives, (H, W) or (C, H, W) (a batch (N, H, W) or (N, C, H, W)). They
draw from ``batch_generator()``, so a DataLoader repeats them exactly whatever
its ``num_workers``; ``batch`` draws vectorised (every sample's first parameter,
then every sample's second, ...), so a batch differs from the same samples
transformed one at a time, each being seeded and repeatable.

>>> tf = Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])
>>> tf(np.zeros((28, 28), np.uint8)).shape
(1, 28, 28)
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ember.data.loader import batch_generator
from ember.ops import kernels
from ember.tensor import Tensor

__all__ = ["Transform", "Compose", "ToTensor", "Normalize", "Standardize", "MinMaxScale",
           "OneHot", "Lambda", "RandomCrop", "RandomHorizontalFlip", "RandomVerticalFlip",
           "RandomErasing"]


def _unwrap(x: Any) -> tuple[np.ndarray, bool]:
    """The array inside ``x`` and whether ``x`` was a Tensor."""
    if isinstance(x, Tensor):
        return x.array, True
    return np.asarray(x), False


def _wrap(array: np.ndarray, as_tensor: bool) -> Any:
    return Tensor._make(array, False, None) if as_tensor else array


def _as_nchw(images: np.ndarray) -> np.ndarray:
    """An NHW or NHWC batch as an (N, C, H, W) view."""
    return images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)


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
        transforms, i = self.transforms, 0
        while i < len(transforms):
            t = transforms[i]
            following = transforms[i + 1] if i + 1 < len(transforms) else None
            if type(t) is ToTensor and type(following) is Normalize:
                fused = t.batch_normalized(xs, following)
                if fused is not None:  # the pair in one pass (uint8 images, kernels on)
                    xs, i = fused, i + 2
                    continue
            xs, i = t.batch(xs), i + 1
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
        return Tensor._make(self._scale(_as_nchw(array)), False, None)

    def batch_normalized(self, images: Any, normalize: Normalize) -> Tensor | None:
        """``normalize.batch(self.batch(images))`` in one compiled pass for uint8 images
        (the same float32 roundings, in a third of the time of NumPy's three passes: it
        showed in a batch-10 MNIST step); None where that kernel cannot run."""
        array, _ = _unwrap(images)
        if array.dtype != np.uint8 or array.ndim not in (3, 4) or \
                not kernels.enabled(np.dtype(np.float32)):
            return None
        nchw = _as_nchw(array)
        table = normalize.byte_table(nchw.shape[1])
        return Tensor._make(kernels.unit_normalize(nchw, table), False, None)

    @staticmethod
    def _scale(array: np.ndarray) -> np.ndarray:
        if array.dtype == np.uint8:  # one pass: the ufunc casts to float32 as it divides
            return np.divide(array, np.float32(255), dtype=np.float32)
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
        out = np.subtract(array, mean)
        out /= std
        return _wrap(out, was_tensor)

    def _per_channel(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """mean and std as (C, 1, 1) arrays of the input's dtype, checked once per
        dtype, channel count and values (a batch of 10 MNIST images is ~15 us of work,
        so re-validating every call showed)."""
        return self._cached((array.dtype, array.shape[-3]),
                            lambda: self._checked_per_channel(array))

    def channel_vectors(self, dtype: Any, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """mean and std as contiguous (channels,) vectors of ``dtype``, checked as a
        call on such images would check them (cached the same way)."""
        def make() -> tuple[np.ndarray, np.ndarray]:
            mean, std = self._checked_per_channel(np.empty((channels, 1, 1), dtype))
            return tuple(np.ascontiguousarray(np.broadcast_to(np.ravel(v), (channels,)))
                         for v in (mean, std))
        return self._cached(("vectors", np.dtype(dtype), channels), make)

    def byte_table(self, channels: int) -> np.ndarray:
        """(channels, 256) float32: what ToTensor then this transform make of each byte
        value in each channel (``kernels.normalize_table``), cached as ``channel_vectors``."""
        def make() -> np.ndarray:
            table = kernels.normalize_table(*self.channel_vectors(np.float32, channels))
            table.flags.writeable = False  # shared by every later batch
            return table
        return self._cached(("table", channels), make)

    def _cached(self, key: tuple, make: Callable[[], Any]) -> Any:
        """``make()``, kept under ``key`` and the statistics' current values (``mean`` and
        ``std`` may be reassigned or edited in place: the cache follows them)."""
        key += (self.mean.tobytes(), self.std.tobytes())
        cache = self.__dict__.setdefault("_cache", {})
        value = cache.get(key)
        if value is None:
            value = cache[key] = make()
        return value

    def _checked_per_channel(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        channels = array.shape[-3]
        mean, std = self.mean.astype(array.dtype), self.std.astype(array.dtype)
        if (std == 0).any():
            raise ValueError(f"std evaluated to zero after conversion to {array.dtype}, "
                             "leading to division by zero.")
        for name, v in (("mean", mean), ("std", std)):
            if len(v) not in (1, channels):
                raise ValueError(f"Normalize: {len(v)} {name} values for an image with "
                                 f"{channels} channels (shape {array.shape})")
        if len(mean) == len(std) == 1:  # NumPy scalars: the same values, less broadcasting
            return mean[0], std[0]
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


# ------------------------------------------------------------ random augmentations
class _Images(NamedTuple):
    """A batch of images with a leading sample axis, and where its axes are."""

    array: np.ndarray
    was_tensor: bool
    h_axis: int  # the width axis is h_axis + 1
    c_axis: int | None  # None for single-channel HW images


def _as_images(x: Any, owner: str, batched: bool) -> _Images:
    """``x`` as a batch (a single image gets a leading axis of 1), its layout read from its
    kind: arrays are HW/HWC (NHW/NHWC), Tensors (H, W)/(C, H, W) (with N in front)."""
    array, was_tensor = _unwrap(x)
    ndim = array.ndim - 1 if batched else array.ndim
    if ndim not in (2, 3):
        where = f"{owner}.batch" if batched else owner
        lead = "N, " if batched else ""
        raise ValueError(f"{where}: expected an image array ({lead}H, W) or ({lead}H, W, C), "
                         f"or a Tensor ({lead}H, W) or ({lead}C, H, W), got shape {array.shape}")
    batch = array if batched else array[None]
    if ndim == 2:
        return _Images(batch, was_tensor, 1, None)
    return _Images(batch, was_tensor, 2, 1) if was_tensor else _Images(batch, was_tensor, 1, 3)


class _RandomImageTransform(Transform):
    """Per-sample random image transforms, computed for a whole batch at once.

    Subclasses define ``_apply(images, rng) -> array``; a single sample runs as a
    batch of one.
    """

    def __call__(self, image: Any) -> Any:
        images = _as_images(image, type(self).__name__, batched=False)
        return _wrap(self._apply(images, batch_generator())[0], images.was_tensor)

    def batch(self, images: Any) -> Any:
        batch = _as_images(images, type(self).__name__, batched=True)
        return _wrap(self._apply(batch, batch_generator()), batch.was_tensor)

    def _apply(self, images: _Images, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


def _check_probability(p: Any, owner: str) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"{owner}: p should be a probability in [0, 1], got {p!r}")
    return float(p)


def _pair(value: Any, owner: str, what: str) -> tuple[int, int]:
    """torchvision's size rule: an int n means (n, n); else a sequence (h, w) or (n,)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif isinstance(value, Sequence) and len(value) in (1, 2):
        pair = (int(value[0]), int(value[-1]))
    else:
        raise ValueError(f"{owner}: please provide only two dimensions (h, w) for {what}, "
                         f"got {value!r}")
    if min(pair) <= 0:
        raise ValueError(f"{owner}: {what} must be positive, got {value!r}")
    return pair


def _side_padding(padding: Any) -> tuple[int, int, int, int]:
    """torchvision's padding rule → (left, top, right, bottom)."""
    if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
        sides = (int(padding),) * 4
    elif isinstance(padding, Sequence) and len(padding) in (1, 2, 4):
        values = [int(v) for v in padding]
        sides = tuple(values * 4 if len(values) == 1 else values * 2 if len(values) == 2
                      else values)
    else:
        raise ValueError("RandomCrop: padding must be an int or a 1, 2, or 4 element tuple, "
                         f"got {padding!r}")
    if min(sides) < 0:
        raise ValueError(f"RandomCrop: padding must be non-negative, got {padding!r}")
    return sides


def _channel_values(value: Any, images: _Images, owner: str) -> np.ndarray:
    """A scalar or per-channel fill value, shaped to broadcast against the batch."""
    array = images.array
    values = np.asarray(value, dtype=np.float64).reshape(-1)
    channels = 1 if images.c_axis is None else array.shape[images.c_axis]
    if len(values) not in (1, channels):
        raise ValueError(f"{owner}: if value is a sequence, it should have either a single "
                         f"value or {channels} (number of input channels), got {len(values)}")
    shape = [1] * array.ndim
    if len(values) > 1:
        shape[images.c_axis] = channels
    return values.astype(array.dtype).reshape(shape)


_PAD_MODES = ("constant", "edge", "reflect", "symmetric")


class RandomCrop(_RandomImageTransform):
    """Crop a random ``size`` window from each image, optionally padded first (torchvision's).

    size: int or (h, w). padding: int, (left/right, top/bottom) or (left, top, right,
    bottom), added before cropping. pad_if_needed: pad images smaller than ``size``.
    fill (alias pad_value): the constant padding value, a scalar or one per channel.
    padding_mode: constant, edge, reflect or symmetric.
    ``batch`` pads the whole batch once and gathers every sample's window with one
    fancy-indexing step; the window offsets are drawn as ``integers(0, H - h + 1,
    size=N)`` then the same for the left edges.

    >>> RandomCrop(32, padding=4).batch(np.zeros((8, 32, 32, 3), np.uint8)).shape
    (8, 32, 32, 3)
    """

    def __init__(self, size: int | Sequence[int], padding: Any = None,
                 pad_if_needed: bool = False, fill: Any = 0, padding_mode: str = "constant",
                 *, pad_value: Any = None) -> None:
        self.size = _pair(size, "RandomCrop", "size")
        self.padding = None if padding is None else _side_padding(padding)
        if padding_mode not in _PAD_MODES:
            raise ValueError("RandomCrop: padding mode should be either constant, edge, reflect "
                             f"or symmetric, got {padding_mode!r}")
        self.pad_if_needed = bool(pad_if_needed)
        self.fill = fill if pad_value is None else pad_value
        self.padding_mode = padding_mode

    def _apply(self, images: _Images, rng: np.random.Generator) -> np.ndarray:
        array = self._pad(images, self.padding or (0, 0, 0, 0))
        array = self._pad(images._replace(array=array), self._missing_padding(array, images))
        height, width = array.shape[images.h_axis:images.h_axis + 2]
        th, tw = self.size
        if height < th or width < tw:
            raise ValueError(f"RandomCrop: required crop size {(th, tw)} is larger than input "
                             f"image size {(height, width)}")
        n = len(array)
        top = rng.integers(0, height - th + 1, size=n)
        left = rng.integers(0, width - tw + 1, size=n)
        return _gather_windows(array, images.h_axis, top, left, (th, tw))

    def _missing_padding(self, array: np.ndarray, images: _Images) -> tuple[int, int, int, int]:
        """pad_if_needed: what a too-small image still lacks, on both sides (torchvision's)."""
        if not self.pad_if_needed:
            return (0, 0, 0, 0)
        height, width = array.shape[images.h_axis:images.h_axis + 2]
        dh, dw = max(self.size[0] - height, 0), max(self.size[1] - width, 0)
        return (dw, dh, dw, dh)

    def _pad(self, images: _Images, sides: tuple[int, int, int, int]) -> np.ndarray:
        array, h = images.array, images.h_axis
        left, top, right, bottom = sides
        if not any(sides):
            return array
        if self.padding_mode != "constant":
            widths = [(0, 0)] * array.ndim
            widths[h], widths[h + 1] = (top, bottom), (left, right)
            return np.pad(array, widths, mode=self.padding_mode)
        shape = list(array.shape)
        shape[h] += top + bottom
        shape[h + 1] += left + right
        out = np.empty(shape, array.dtype)
        out[...] = _channel_values(self.fill, images, "RandomCrop")
        inner = [slice(None)] * array.ndim
        inner[h] = slice(top, top + array.shape[h])
        inner[h + 1] = slice(left, left + array.shape[h + 1])
        out[tuple(inner)] = array
        return out

    def __repr__(self) -> str:
        return (f"RandomCrop(size={self.size}, padding={self.padding}, "
                f"pad_if_needed={self.pad_if_needed}, fill={self.fill}, "
                f"padding_mode={self.padding_mode!r})")


def _gather_windows(array: np.ndarray, h_axis: int, top: np.ndarray, left: np.ndarray,
                    size: tuple[int, int]) -> np.ndarray:
    """``array[k]``'s ``size`` window at ``(top[k], left[k])`` for every k, in one gather."""
    windows = sliding_window_view(array, size, axis=(h_axis, h_axis + 1))
    index = [np.arange(len(array))] + [slice(None)] * (h_axis - 1) + [top, left]
    picked = windows[tuple(index)]  # (N, other axes..., h, w) for both layouts
    return np.ascontiguousarray(np.moveaxis(picked, (-2, -1), (h_axis, h_axis + 1)))


class RandomHorizontalFlip(_RandomImageTransform):
    """Mirror each image left-right with probability ``p`` (torchvision's).

    ``batch`` draws ``random(N) < p`` and mirrors the chosen samples with one masked copy.

    >>> RandomHorizontalFlip(p=1.0)(np.array([[1, 2, 3]])).tolist()
    [[3, 2, 1]]
    """

    axis_offset = 1  # the width axis is h_axis + 1

    def __init__(self, p: float = 0.5) -> None:
        self.p = _check_probability(p, type(self).__name__)

    def _apply(self, images: _Images, rng: np.random.Generator) -> np.ndarray:
        array = images.array
        flip = rng.random(len(array)) < self.p
        out = array.copy()  # then overwrite the flipped samples: cheaper than np.where
        out[flip] = np.flip(array[flip], axis=images.h_axis + self.axis_offset)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class RandomVerticalFlip(RandomHorizontalFlip):
    """Mirror each image top-bottom with probability ``p`` (torchvision's).

    >>> RandomVerticalFlip(p=1.0)(np.array([[1], [2]])).tolist()
    [[2], [1]]
    """

    axis_offset = 0


class RandomErasing(_RandomImageTransform):
    """Cutout: with probability ``p`` erase a random rectangle of each image (torchvision's
    RandomErasing, Zhong et al. 2017).

    The rectangle covers a fraction of the image drawn from ``scale`` with an aspect ratio
    drawn log-uniformly from ``ratio``; of 10 tries per image the first that fits is used
    (none fits: the image is kept). value: a number, one per channel, or ``"random"``
    (standard normal noise, float images only). Usually placed after ToTensor/Normalize,
    on (C, H, W) float Tensors; HWC uint8 arrays work too, values cast to uint8.
    ``batch`` draws, for all N samples at once: ``random(N) < p``, the (N, 10) scales,
    the (N, 10) log-ratios, then the top and left edges, and erases with one broadcast
    rectangle mask. inplace=True writes into the input (never a dataset's stored images).

    >>> RandomErasing(p=1.0, value=0)(ember.ones(3, 8, 8)).sum().item() < 3 * 64
    True
    """

    attempts = 10

    def __init__(self, p: float = 0.5, scale: Sequence[float] = (0.02, 0.33),
                 ratio: Sequence[float] = (0.3, 3.3), value: Any = 0,
                 inplace: bool = False) -> None:
        if not isinstance(value, (numbers.Number, str, tuple, list)):
            raise TypeError("RandomErasing: argument value should be either a number or str or "
                            f"a sequence, got {type(value).__name__}")
        if isinstance(value, (tuple, list)) and not all(
                isinstance(v, numbers.Real) for v in value):
            raise TypeError(f"RandomErasing: a sequence value should hold numbers, got "
                            f"{value!r}")
        if isinstance(value, str) and value != "random":
            raise ValueError(f"RandomErasing: if value is str, it should be 'random', got "
                             f"{value!r}")
        for name, pair in (("scale", scale), ("ratio", ratio)):
            if not isinstance(pair, Sequence) or len(pair) != 2:
                raise TypeError(f"RandomErasing: {name} should be a sequence (min, max), got "
                                f"{pair!r}")
        if scale[0] > scale[1] or ratio[0] > ratio[1]:
            warnings.warn("Scale and ratio should be of kind (min, max)", stacklevel=2)
        if scale[0] < 0 or scale[1] > 1:
            raise ValueError(f"RandomErasing: scale should be between 0 and 1, got {scale!r}")
        if min(ratio) <= 0:
            raise ValueError(f"RandomErasing: ratio values must be positive, got {ratio!r}")
        self.p = _check_probability(p, "RandomErasing")
        self.scale, self.ratio = tuple(map(float, scale)), tuple(map(float, ratio))
        self.value, self.inplace = value, bool(inplace)

    def _apply(self, images: _Images, rng: np.random.Generator) -> np.ndarray:
        array, h = images.array, images.h_axis
        height, width = array.shape[h:h + 2]
        top, left, eh, ew, erase = self._rectangles(len(array), height, width, rng)
        rows, cols = np.arange(height), np.arange(width)
        inside = ((rows >= top[:, None]) & (rows < (top + eh)[:, None]))[:, :, None] \
            & ((cols >= left[:, None]) & (cols < (left + ew)[:, None]))[:, None, :] \
            & erase[:, None, None]  # (N, H, W)
        mask = inside.reshape(inside.shape[:1] + (1,) * (h - 1) + inside.shape[1:]
                              + (1,) * (array.ndim - h - 2))
        out = array if self.inplace else array.copy()
        self._fill(out, np.broadcast_to(mask, out.shape), images, rng)
        return out

    def _rectangles(self, n: int, height: int, width: int, rng: np.random.Generator) -> tuple:
        """Each sample's (top, left, height, width) and whether it is erased at all."""
        erase = rng.random(n) < self.p
        areas = height * width * rng.uniform(*self.scale, size=(n, self.attempts))
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        aspect = np.exp(rng.uniform(*log_ratio, size=(n, self.attempts)))
        eh = np.round(np.sqrt(areas * aspect)).astype(np.int64)
        ew = np.round(np.sqrt(areas / aspect)).astype(np.int64)
        fits = (eh < height) & (ew < width)
        first = fits.argmax(axis=1)  # the first attempt that fits, as torchvision's loop takes
        found = fits[np.arange(n), first]
        eh = np.where(found, eh[np.arange(n), first], 0)
        ew = np.where(found, ew[np.arange(n), first], 0)
        top = rng.integers(0, height - eh + 1)
        left = rng.integers(0, width - ew + 1)
        return top, left, eh, ew, erase & found

    def _fill(self, out: np.ndarray, mask: np.ndarray, images: _Images,
              rng: np.random.Generator) -> None:
        if not isinstance(self.value, str):
            np.copyto(out, _channel_values(self.value, images, "RandomErasing"), where=mask)
            return
        if out.dtype.kind != "f":
            raise TypeError(f"RandomErasing: value='random' needs float images, got "
                            f"{out.dtype}; apply ToTensor() first")
        out[mask] = rng.standard_normal(int(mask.sum())).astype(out.dtype)

    def __repr__(self) -> str:
        return (f"RandomErasing(p={self.p}, scale={self.scale}, ratio={self.ratio}, "
                f"value={self.value!r}, inplace={self.inplace})")
