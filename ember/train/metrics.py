"""Metrics the Trainer accumulates over an epoch: loss, accuracy, top-k, and your own.

Each metric is averaged over samples: ``update(outputs, targets, n)`` with a batch,
``compute()`` at the end. A plain function ``fn(outputs, targets) -> float`` (NumPy
arrays in, a batch mean out) becomes a metric named ``fn.__name__``.

>>> metrics = build_metrics(["accuracy", "top5"])
>>> [m.name for m in metrics]
['accuracy', 'top5']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from ember.tensor import Tensor

__all__ = ["Metric", "MeanMetric", "Accuracy", "TopK", "FunctionMetric", "build_metrics",
           "as_array"]


def as_array(x: Any) -> np.ndarray:
    """The NumPy array inside a Tensor (or ``np.asarray(x)``)."""
    return x.array if isinstance(x, Tensor) else np.asarray(x)


class Metric:
    """A running, sample-weighted mean of a per-batch value; subclasses define ``batch_value``."""

    name = "metric"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, outputs: Any, targets: Any, n: int | None = None) -> None:
        outputs, targets = as_array(outputs), as_array(targets)
        n = len(outputs) if n is None else n
        self.total += self.batch_value(outputs, targets) * n
        self.count += n

    def batch_value(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        raise NotImplementedError

    def compute(self) -> float:
        return self.total / self.count if self.count else float("nan")


class MeanMetric(Metric):
    """The sample-weighted mean of values given directly (the Trainer's loss)."""

    def __init__(self, name: str = "loss") -> None:
        self.name = name
        super().__init__()

    def add(self, value: float, n: int) -> None:
        self.total += value * n
        self.count += n


def _class_targets(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Class indices: one-hot or probability targets (shaped like outputs) are argmax-ed."""
    if targets.shape == outputs.shape and outputs.ndim > 1:
        return targets.argmax(axis=1)
    return targets


class Accuracy(Metric):
    """The fraction of samples whose highest output (over dim 1) is the target class."""

    name = "accuracy"

    def batch_value(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        if outputs.ndim < 2:
            raise ValueError(f"accuracy: expected outputs of shape (N, classes, ...), got "
                             f"{outputs.shape}")
        return float((outputs.argmax(axis=1) == _class_targets(outputs, targets)).mean())


class TopK(Metric):
    """The fraction of samples whose target is among the ``k`` highest outputs.

    >>> TopK(5).name
    'top5'
    """

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"TopK: k must be a positive integer, got {k!r}")
        self.k = k
        self.name = f"top{k}"
        super().__init__()

    def batch_value(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        if outputs.ndim != 2 or outputs.shape[1] < self.k:
            raise ValueError(f"{self.name}: expected outputs of shape (N, classes >= {self.k}), "
                             f"got {outputs.shape}")
        targets = _class_targets(outputs, targets)
        target_scores = np.take_along_axis(outputs, targets.reshape(-1, 1), axis=1)
        higher = (outputs > target_scores).sum(axis=1)  # ties count in the target's favour
        return float((higher < self.k).mean())


class FunctionMetric(Metric):
    """Wrap ``fn(outputs, targets) -> float`` (NumPy arrays, a batch mean) as a metric."""

    def __init__(self, fn: Callable[[np.ndarray, np.ndarray], float], name: str | None = None,
                 ) -> None:
        if not callable(fn):
            raise TypeError(f"metric {name or fn!r} is not callable")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        super().__init__()

    def batch_value(self, outputs: np.ndarray, targets: np.ndarray) -> float:
        return float(self.fn(outputs, targets))


_NAMED = {"accuracy": Accuracy, "acc": Accuracy}


def _one(spec: Any) -> Metric:
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, str):
        if spec in _NAMED:
            return _NAMED[spec]()
        if spec.startswith("top") and spec[3:].isdigit():
            return TopK(int(spec[3:]))
        raise ValueError(f"unknown metric {spec!r}; known: loss, accuracy, topK (e.g. 'top5'), "
                         "a Metric, or a function fn(outputs, targets) -> float")
    return FunctionMetric(spec)


def _named(name: str, spec: Any) -> Metric:
    metric = _one(spec) if isinstance(spec, (Metric, str)) else FunctionMetric(spec, name)
    metric.name = name
    return metric


def build_metrics(specs: Iterable[Any] | Mapping[str, Any]) -> list[Metric]:
    """Metric objects for names, Metric instances, functions, or a ``{name: fn}`` dict.

    'loss' is left out: the Trainer always tracks the loss itself.
    """
    if isinstance(specs, Mapping):
        metrics = [_named(name, spec) for name, spec in specs.items() if name != "loss"]
    else:
        metrics = [_one(spec) for spec in specs if not (isinstance(spec, str) and spec == "loss")]
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise ValueError(f"metric names must be unique, got {names}")
    return metrics
