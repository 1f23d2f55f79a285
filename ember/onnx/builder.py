"""The graph builder that ops write their ONNX form into.

Each op class carries ``to_onnx(self, g, inputs, output)``: ``g`` is a
``GraphBuilder``, ``inputs`` the ONNX value names of the op's tensor inputs and
``output`` the name its result must get. The op reads its own attributes (the
fields its ``forward`` stored, and ``self.attrs``) and calls ``g.node``,
``g.const`` and ``g.ints``. The builder knows the traced shape and dtype of
every named value and whether its dim 0 is the symbolic batch dim, so forms can
emit shapes that work at any batch size.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["GraphBuilder", "OnnxExportError"]


class OnnxExportError(RuntimeError):
    """The model (or one op's configuration) has no ONNX form."""


class GraphBuilder:
    """Collects ONNX nodes and initializers for one exported graph.

    >>> g = GraphBuilder(opset=17)
    >>> g.node("Relu", ["x"])
    'Relu_0'
    """

    def __init__(self, opset: int, batch_size: int | None = None) -> None:
        self.opset = opset
        self.batch_size = batch_size  # the traced batch size when dim 0 is symbolic
        self.nodes: list = []
        self.initializers: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple] = {}
        self.dtypes: dict[str, np.dtype] = {}
        self.batched: set[str] = set()
        self._count = itertools.count()

    # ------------------------------------------------------------ what forms call
    def node(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str] | str | None = None,
             **attrs: Any) -> Any:
        """Add a node; returns its output name (or names, when several were asked for).

        ``inputs`` may hold "" for an omitted optional input; attributes whose value
        is None are left out.
        """
        from onnx import helper

        single = outputs is None or isinstance(outputs, str)
        if outputs is None:
            outputs = [self.fresh(op_type)]
        elif isinstance(outputs, str):
            outputs = [outputs]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs),
                                           name=f"{op_type}_{len(self.nodes)}", **attrs))
        return outputs[0] if single else list(outputs)

    def const(self, value: Any, dtype: Any = None, name: str | None = None) -> str:
        """An initializer holding ``value``; returns its name."""
        array = np.asarray(value, dtype=dtype)
        name = name or self.fresh("const")
        self.initializers[name] = array
        self.shapes[name], self.dtypes[name] = array.shape, array.dtype
        return name

    def ints(self, values: Sequence[int]) -> str:
        """A 1-D int64 initializer (shapes, axes, pads, ...)."""
        return self.const(np.asarray(list(values), dtype=np.int64).reshape(-1))

    def scalar(self, value: Any, like: str) -> str:
        """A 0-d initializer of the dtype of value ``like``."""
        return self.const(np.asarray(value, dtype=self.dtype(like)))

    def axes_node(self, op_type: str, inputs: Sequence[str], output: str, axes: Sequence[int],
                  since: int, **attrs: Any) -> str:
        """A node whose ``axes`` became an input at opset ``since`` (Squeeze, Reduce*)."""
        axes = [int(a) for a in axes]
        if self.opset >= since:
            return self.node(op_type, [*inputs, self.ints(axes)], output, **attrs)
        return self.node(op_type, list(inputs), output, axes=axes, **attrs)

    def cast(self, name: str, dtype: Any) -> str:
        """``name`` converted to ``dtype`` (itself when it already has that dtype)."""
        if self.dtype(name) == np.dtype(dtype):
            return name
        out = self.node("Cast", [name], to=onnx_dtype(dtype))
        self.note(out, self.shape(name), dtype, self.is_batched(name))
        return out

    def elementwise(self, op_type: str, inputs: Sequence[str], output: str, **attrs: Any) -> str:
        """An elementwise node whose inputs are first cast to the output's dtype (ember
        promotes int to float, and float32 with float64; ONNX wants equal types)."""
        dtype = self.dtype(output)
        return self.node(op_type, [self.cast(n, dtype) for n in inputs], output, **attrs)

    def reshape(self, source: str, shape: Sequence[int], output: str) -> str:
        """``source`` reshaped to ``shape``: Flatten when the result is a 2-D split of the
        input's dims (batch-safe), else Reshape with a batch-safe target."""
        shape, in_shape = [int(s) for s in shape], list(self.shape(source))
        if shape == in_shape:
            return self.node("Identity", [source], output)
        for axis in range(1, len(in_shape)):
            if len(in_shape) > 2 and shape == [_prod(in_shape[:axis]), _prod(in_shape[axis:])]:
                return self.node("Flatten", [source], output, axis=axis)
        return self.node("Reshape", [source, self.ints(self.reshape_target(source, shape))],
                         output)

    def args(self, fn: Any) -> dict:
        """The op's non-tensor forward arguments by name, defaults filled in."""
        signature = inspect.signature(type(fn).forward)
        extra, kwargs = fn.attrs
        bound = signature.bind(None, *([None] * len(fn.parents)), *extra, **kwargs)
        bound.apply_defaults()
        return dict(list(bound.arguments.items())[1 + len(fn.parents):])

    def adaptive_pool(self, op_type: str, global_op: str, inputs: Sequence[str], output: str,
                      in_size: Sequence[int]) -> str:
        """Adaptive pooling from ``in_size`` to the output's size: the global pool for 1x1,
        else a pool whose kernel and stride are the (even) window size."""
        out_size = tuple(self.shape(output)[2:])
        if out_size == (1,) * len(out_size):
            return self.node(global_op, inputs, output)
        if any(i % o for i, o in zip(in_size, out_size)):
            raise self.fail(op_type, f"adaptive pooling from {tuple(in_size)} to {out_size} "
                                     "has uneven windows (only sizes that divide the input "
                                     "export)")
        kernel = [int(i) // int(o) for i, o in zip(in_size, out_size)]
        return self.node(op_type, inputs, output, kernel_shape=kernel, strides=kernel)

    def fail(self, op: str, reason: str) -> OnnxExportError:
        """The error a form raises for a configuration ONNX (or this exporter) cannot express."""
        return OnnxExportError(f"{op}: cannot export to ONNX opset {self.opset}: {reason}")

    # ------------------------------------------------------------ what forms read
    def shape(self, name: str) -> tuple:
        return self.shapes[name]

    def dtype(self, name: str) -> np.dtype:
        return self.dtypes[name]

    def onnx_type(self, name: str) -> int:
        """The ONNX data type code of value ``name``."""
        return onnx_dtype(self.dtype(name))

    def is_batched(self, name: str) -> bool:
        """Whether dim 0 of ``name`` is the symbolic batch dim."""
        return name in self.batched

    def reshape_target(self, source: str, shape: Sequence[int]) -> list[int]:
        """``shape`` as a Reshape target that works at any batch size.

        A reshape that keeps the batch dim in front gets 0 there (ONNX: copy the
        input's dim); one that folds the batch into another dim gets -1 in the
        first dim that the traced batch size divides.
        """
        shape = [int(s) for s in shape]
        if not self.is_batched(source) or not shape:
            return shape
        n = self.batch_size
        if shape[0] == n:
            return [0] + shape[1:]
        for i, s in enumerate(shape):
            if n and s % n == 0 and s:
                return shape[:i] + [-1] + shape[i + 1:]
        return shape

    # ------------------------------------------------------------ bookkeeping
    def fresh(self, stem: str) -> str:
        return f"{stem}_{next(self._count)}"

    def note(self, name: str, shape: Sequence[int], dtype: Any, batched: bool) -> None:
        self.shapes[name], self.dtypes[name] = tuple(shape), np.dtype(dtype)
        if batched:
            self.batched.add(name)


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


_ONNX_DTYPES = {
    "float32": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6, "int64": 7,
    "bool": 9, "float16": 10, "float64": 11, "uint32": 12, "uint64": 13,
}


def onnx_dtype(dtype: Any) -> int:
    """The ONNX TensorProto data type code of a NumPy dtype."""
    name = np.dtype(dtype).name
    if name not in _ONNX_DTYPES:
        raise OnnxExportError(f"dtype {name} has no ONNX equivalent here")
    return _ONNX_DTYPES[name]
