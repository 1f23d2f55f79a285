"""Small seeded toy data sets: logic gates, two moons, spirals, circles, blobs, 1-D regression.

Every generator returns NumPy arrays ``(X, y)``: ``X`` float32 of shape (N, 2) (or
(N, 1) for ``regression_1d``, (N, d) for ``blobs`` with d-dimensional centers);
``y`` int64 class indices of shape (N,) for the classification sets (what
CrossEntropyLoss takes; ``y[:, None].astype(np.float32)`` suits BCE), float32 (N, 1)
targets for ``regression_1d``. ``TensorDataset(X, y)`` makes a dataset of them.

``seed``: an int, a ``numpy.random.Generator``, or None for ember's global
generator (so ``ember.manual_seed(s)`` repeats the data). ``noise`` is the standard
deviation of Gaussian noise added to every coordinate of X (to y for regression).
Noise-free points lie exactly on the shapes described in each docstring.

>>> X, y = two_moons(200, noise=0.1, seed=0)
>>> X.shape, X.dtype, y.dtype, np.bincount(y).tolist()
((200, 2), dtype('float32'), dtype('int64'), [100, 100])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ember.data.dataset import resolve_generator

__all__ = ["xor", "logic_gate", "two_moons", "spirals", "circles", "blobs", "regression_1d",
           "LOGIC_GATES", "REGRESSION_FUNCTIONS", "SPIRAL_SWEEP"]

# Each gate's output for the inputs (0, 0), (0, 1), (1, 0), (1, 1).
LOGIC_GATES: dict[str, tuple[int, int, int, int]] = {
    "AND": (0, 0, 0, 1),
    "OR": (0, 1, 1, 1),
    "NAND": (1, 1, 1, 0),
    "NOR": (1, 0, 0, 0),
    "XOR": (0, 1, 1, 0),
}
_GATE_INPUTS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float64)

REGRESSION_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: 2 * x + 1,
    "sin": lambda x: np.sin(np.pi * x),
    "abs": np.abs,
    "step": lambda x: (x > 0).astype(np.float64),
    "poly": lambda x: x ** 3 - x,
}

SPIRAL_SWEEP = 3 * math.pi  # each arm turns 1.5 times from the centre to radius 1


# ------------------------------------------------------------ argument checks
def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    try:
        return resolve_generator(seed)
    except TypeError:
        raise TypeError("seed must be an int, a numpy.random.Generator or None, got "
                        f"{type(seed).__name__}") from None


def _count(n: Any, owner: str, name: str = "n", minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {n!r}")
    return int(n)


def _std(noise: Any, owner: str, name: str = "noise") -> float:
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not noise >= 0:
        raise ValueError(f"{owner}: {name} must be a non-negative number, got {noise!r}")
    return float(noise)


def _split(n: int, parts: int) -> np.ndarray:
    """Class labels for n samples in ``parts`` near-equal runs (the last get the remainder)."""
    counts = np.full(parts, n // parts)
    counts[parts - n % parts:] += 1
    return np.repeat(np.arange(parts), counts)


def _finish(X: np.ndarray, y: np.ndarray, noise: float, rng: np.random.Generator,
            shuffle: bool) -> tuple[np.ndarray, np.ndarray]:
    """Add the noise (drawn first), then shuffle the rows (drawn second)."""
    if noise:
        X = X + rng.normal(0.0, noise, size=X.shape)
    if shuffle:
        order = rng.permutation(len(X))
        X, y = X[order], y[order]
    return X.astype(np.float32), y.astype(np.int64)


# ------------------------------------------------------------ generators
def logic_gate(name: str, noise: float = 0.0, repeats: int = 1,
               seed: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """A logic gate's truth table: X the inputs (0,0), (0,1), (1,0), (1,1) in that order,
    repeated ``repeats`` times; y the gate's output. Gates: AND, OR, NAND, NOR, XOR.

    >>> logic_gate("AND")[1].tolist()
    [0, 0, 0, 1]
    """
    gate = LOGIC_GATES.get(str(name).upper())
    if gate is None:
        raise ValueError(f"logic_gate: unknown gate {name!r}; choose one of "
                         f"{', '.join(LOGIC_GATES)}")
    repeats = _count(repeats, "logic_gate", "repeats")
    X = np.tile(_GATE_INPUTS, (repeats, 1))
    y = np.tile(np.array(gate), repeats)
    return _finish(X, y, _std(noise, "logic_gate"), _rng(seed), shuffle=False)


def xor(noise: float = 0.0, repeats: int = 1, seed: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The XOR problem: ``logic_gate("XOR", noise, repeats, seed)``.

    >>> X, y = xor()
    >>> X.tolist(), y.tolist()
    ([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], [0, 1, 1, 0])
    """
    return logic_gate("XOR", noise, repeats, seed)


def two_moons(n: int = 100, noise: float = 0.0, seed: Any = None,
              shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles (scikit-learn's make_moons).

    Class 0 (n // 2 points): the upper unit half circle (cos t, sin t), t in [0, pi].
    Class 1 (the rest): (1 - cos t, 0.5 - sin t), the lower half circle of radius 1
    around (1, 0.5). Points are evenly spaced in t.

    >>> X, y = two_moons(4, shuffle=False)
    >>> y.tolist()
    [0, 0, 1, 1]
    """
    n = _count(n, "two_moons", minimum=2)
    n_outer = n // 2
    t_outer = np.linspace(0, np.pi, n_outer)
    t_inner = np.linspace(0, np.pi, n - n_outer)
    X = np.concatenate([np.stack([np.cos(t_outer), np.sin(t_outer)], 1),
                        np.stack([1 - np.cos(t_inner), 0.5 - np.sin(t_inner)], 1)])
    return _finish(X, _split(n, 2), _std(noise, "two_moons"), _rng(seed), shuffle)


def spirals(n: int = 100, classes: int = 2, noise: float = 0.0, seed: Any = None,
            shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``classes`` interleaved spiral arms around the origin.

    Arm k holds about n / classes points at t = 1/m, 2/m, ..., 1 (m its size): radius t,
    angle ``2 pi k / classes + SPIRAL_SWEEP * t``, i.e. (t cos a, t sin a).

    >>> X, y = spirals(300, classes=3, noise=0.05, seed=0)
    >>> np.bincount(y).tolist()
    [100, 100, 100]
    """
    n, classes = _count(n, "spirals"), _count(classes, "spirals", "classes", minimum=2)
    if n < classes:
        raise ValueError(f"spirals: n={n} is fewer than one point per class ({classes})")
    y = _split(n, classes)
    sizes = np.bincount(y, minlength=classes)
    t = (np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 1) / sizes[y]
    angle = 2 * np.pi * y / classes + SPIRAL_SWEEP * t
    X = np.stack([t * np.cos(angle), t * np.sin(angle)], 1)
    return _finish(X, y, _std(noise, "spirals"), _rng(seed), shuffle)


def circles(n: int = 100, noise: float = 0.0, factor: float = 0.5, seed: Any = None,
            shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric circles (scikit-learn's make_circles): class 0 (n // 2 points) on
    the unit circle, class 1 on the circle of radius ``factor``, evenly spaced in angle.

    >>> X, y = circles(8, factor=0.5, shuffle=False)
    >>> np.hypot(X[:, 0], X[:, 1]).round(3).tolist()
    [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]
    """
    n = _count(n, "circles", minimum=2)
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not 0 <= factor < 1:
        raise ValueError(f"circles: factor has to be between 0 and 1 (the inner radius), "
                         f"got {factor!r}")
    y = _split(n, 2)
    sizes = np.bincount(y, minlength=2)
    position = np.arange(n) - np.where(y == 1, sizes[0], 0)
    angle = 2 * np.pi * position / sizes[y]
    radius = np.where(y == 0, 1.0, float(factor))
    X = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
    return _finish(X, y, _std(noise, "circles"), _rng(seed), shuffle)


def _blob_centers(centers: Any, box: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    if isinstance(centers, numbers.Integral) and not isinstance(centers, bool):
        k = _count(centers, "blobs", "centers")
        low, high = box
        if not low < high:
            raise ValueError(f"blobs: box must be (low, high) with low < high, got {box!r}")
        return rng.uniform(low, high, size=(k, 2))
    array = np.asarray(centers, dtype=np.float64)
    if array.ndim != 2 or len(array) == 0:
        raise ValueError("blobs: centers must be a count or an array of shape (k, d), got "
                         f"shape {array.shape}")
    return array


def _blob_stds(std: Any, k: int) -> np.ndarray:
    try:
        stds = np.asarray(std, dtype=np.float64)
    except (TypeError, ValueError):
        stds = np.array([np.nan])
    if stds.ndim > 1 or stds.size not in (1, k) or not (stds >= 0).all():
        raise ValueError(f"blobs: std must be a non-negative number or one per center ({k}), "
                         f"got {std!r}")
    return np.broadcast_to(stds.reshape(-1), (k,))


def blobs(n: int = 100, centers: int | Sequence[Sequence[float]] = 3, std: Any = 1.0,
          seed: Any = None, box: tuple[float, float] = (-10.0, 10.0), shuffle: bool = True,
          return_centers: bool = False) -> tuple[np.ndarray, ...]:
    """Isotropic Gaussian blobs (scikit-learn's make_blobs): class k holds about n / k
    points drawn around ``centers[k]`` with standard deviation ``std`` (one, or one per
    center). ``centers``: a count (2-D centers drawn uniformly in ``box``, drawn first)
    or an array (k, d). With ``return_centers`` the centers come back third.

    >>> X, y, c = blobs(90, centers=[[0, 0], [5, 5], [0, 5]], std=0.1, seed=0,
    ...                 return_centers=True)
    >>> np.bincount(y).tolist(), c.shape
    ([30, 30, 30], (3, 2))
    """
    n = _count(n, "blobs")
    rng = _rng(seed)
    center_array = _blob_centers(centers, box, rng)
    k = len(center_array)
    stds = _blob_stds(std, k)
    y = _split(n, k)
    X = center_array[y] + stds[y, None] * rng.standard_normal((n, center_array.shape[1]))
    X, y = _finish(X, y, 0.0, rng, shuffle)
    return (X, y, center_array.astype(np.float32)) if return_centers else (X, y)


def regression_1d(fn: str = "sin", n: int = 100, noise: float = 0.0, seed: Any = None,
                  low: float = -1.0, high: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """x uniform in [low, high), y = f(x) + noise, both float32 (N, 1). f is one of
    ``REGRESSION_FUNCTIONS``: linear 2x + 1, sin sin(pi x), abs |x|, step (x > 0),
    poly x^3 - x. x is drawn first, then the noise.

    >>> X, y = regression_1d("abs", 5, seed=0)
    >>> bool(np.all(y == np.abs(X)))
    True
    """
    f = REGRESSION_FUNCTIONS.get(fn)
    if f is None:
        raise ValueError(f"regression_1d: unknown fn {fn!r}; choose one of "
                         f"{', '.join(REGRESSION_FUNCTIONS)}")
    n, noise = _count(n, "regression_1d"), _std(noise, "regression_1d")
    if not low < high:
        raise ValueError(f"regression_1d: need low < high, got low={low!r}, high={high!r}")
    rng = _rng(seed)
    x = rng.uniform(low, high, size=(n, 1))
    y = f(x)
    if noise:
        y = y + rng.normal(0.0, noise, size=y.shape)
    return x.astype(np.float32), y.astype(np.float32)
