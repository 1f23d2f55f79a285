"""The importer's op table: one function per ONNX op type, written with ember ops.

An importer takes the ``Node`` (its attributes and the model's opset) and the
node's input tensors (None for an omitted optional input) and returns one tensor
or a list of them (one per output). ``check`` functions run at load time and
name what an importer does not support, so an unusable model is refused before
it runs. Integer tensors (shapes, axes, indices) are plain constants: reading
their values with ``ints`` is how shape-valued inputs are used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.tensor import Tensor

__all__ = ["Node", "IMPORTERS", "CHECKS", "importer", "OnnxImportError", "OnnxUnsupportedError",
           "constant", "ints", "floats"]


class OnnxImportError(RuntimeError):
    """The ONNX model cannot be read or run by ember."""


class OnnxUnsupportedError(OnnxImportError):
    """The model uses ops, attributes or types ember's importer does not implement."""


@dataclass
class Node:
    """One ONNX node, with its attributes as Python values and the model's opset."""

    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    opset: int = 1
    domain: str = ""

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def unsupported(self, what: str) -> OnnxUnsupportedError:
        return OnnxUnsupportedError(f"ONNX {self.op_type} node {self.name!r} (opset {self.opset})"
                                    f": {what} is not supported by ember's importer")

    def fail(self, what: str) -> OnnxImportError:
        return OnnxImportError(f"ONNX {self.op_type} node {self.name!r}: {what}")


Importer = Callable[[Node, list], Any]
IMPORTERS: dict[str, Importer] = {}
CHECKS: dict[str, Callable[[Node], str | None]] = {}


def importer(*op_types: str, check: Callable[[Node], str | None] | None = None) -> Callable:
    """Register ``fn`` as the importer of ``op_types`` (and ``check`` as their load-time test)."""
    def deco(fn: Importer) -> Importer:
        for op in op_types:
            IMPORTERS[op] = fn
            if check is not None:
                CHECKS[op] = check
        return fn
    return deco


# ---------------------------------------------------------------- helpers for importers
def constant(array: Any) -> Tensor:
    """A tensor outside any graph (shapes, masks, integer results)."""
    return Tensor._make(np.asarray(array), False, None)


def ints(t: Tensor | None, default: Sequence[int] | None = None) -> list[int] | None:
    """The values of an integer tensor input (shapes, axes, pads) as Python ints."""
    if t is None:
        return None if default is None else list(default)
    return [int(v) for v in np.asarray(t.array).reshape(-1)]


def floats(t: Tensor | None) -> list[float] | None:
    if t is None:
        return None
    return [float(v) for v in np.asarray(t.array).reshape(-1)]


def axes_of(node: Node, t: Tensor | None, since: int) -> list[int] | None:
    """``axes``: an input from opset ``since`` on, an attribute before."""
    if node.opset >= since:
        return ints(t)
    axes = node.attr("axes")
    return None if axes is None else list(axes)


def normalized(axes: Sequence[int], ndim: int) -> list[int]:
    return [a % ndim if ndim else 0 for a in axes]
