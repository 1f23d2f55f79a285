"""Importers of ONNX's elementwise, activation, reduction and shape ops, in ember ops.

Floating results go through ember's differentiable ops, so an imported model
trains; integer-only results (shapes, indices) are computed directly as constants.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ember.autograd import FUNCTIONS, Function
from ember.onnx.registry import (Node, axes_of, constant, importer, ints, normalized)
from ember.tensor import Tensor

_SQRT_2 = math.sqrt(2.0)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _is_float(t: Tensor) -> bool:
    return t.dtype.kind == "f"


def _numpy(fn: Any, *tensors: Tensor, dtype: Any = None) -> Tensor:
    """A non-differentiable result computed in NumPy (integer maths, comparisons)."""
    out = np.asarray(fn(*[t.array for t in tensors]))
    return constant(out.astype(dtype or out.dtype, copy=False))


# ---------------------------------------------------------------- arithmetic
@importer("Add")
def add(node: Node, inputs: list) -> Tensor:
    return inputs[0] + inputs[1]


@importer("Sub")
def sub(node: Node, inputs: list) -> Tensor:
    return inputs[0] - inputs[1]


@importer("Mul")
def mul(node: Node, inputs: list) -> Tensor:
    return inputs[0] * inputs[1]


def _trunc_divide(x: Any, y: Any) -> Any:
    """C's integer division (towards zero), as ONNX's Div on integers."""
    with np.errstate(divide="ignore"):
        q, r = np.floor_divide(x, y), np.remainder(x, y)
    return q + ((r != 0) & ((x < 0) ^ (y < 0))).astype(q.dtype)


@importer("Div")
def div(node: Node, inputs: list) -> Tensor:
    a, b = inputs
    if not _is_float(a):
        return _numpy(_trunc_divide, a, b, dtype=a.dtype)
    return a / b


class _Mod(Function):
    """ONNX's Mod on floats: Python's modulo (fmod=0) or C's fmod (fmod=1), with the
    remainder's gradient (1 for a, -quotient for b)."""

    arity = 2

    def forward(self, a, b, fmod):
        self.shapes, self.fmod = (a.shape, b.shape), fmod
        with np.errstate(all="ignore"):
            self.quotient = (np.trunc if fmod else np.floor)(a / b)
            return (np.fmod if fmod else np.mod)(a, b)

    def backward(self, g):
        from ember.autograd import unbroadcast
        ga = unbroadcast(g, self.shapes[0]) if self.needs_input_grad[0] else None
        gb = unbroadcast(-g * self.quotient, self.shapes[1]) if self.needs_input_grad[1] else None
        return ga, gb


@importer("Mod")
def mod(node: Node, inputs: list) -> Tensor:
    a, b = inputs
    fmod = int(node.attr("fmod", 0))
    if _is_float(a):
        return _Mod.apply(a, b, fmod)
    return _numpy(np.fmod if fmod else np.mod, a, b)


@importer("Pow")
def pow_(node: Node, inputs: list) -> Tensor:
    base, exponent = inputs
    if not _is_float(base):  # ONNX: the result has the base's type
        return _numpy(lambda a, b: np.power(a.astype(np.float64), b), base, exponent,
                      dtype=base.dtype)
    if exponent.dtype != base.dtype:
        exponent = exponent.cast(base.dtype) if _is_float(exponent) else \
            constant(exponent.array.astype(base.dtype))
    return base ** exponent


def _variadic(op: str) -> Any:
    def run(node: Node, inputs: list) -> Tensor:
        out = inputs[0]
        for t in inputs[1:]:
            out = FUNCTIONS[op](out, t)
        return out
    return run


importer("Max")(_variadic("maximum"))
importer("Min")(_variadic("minimum"))
importer("Sum")(_variadic("add"))


@importer("MatMul")
def matmul(node: Node, inputs: list) -> Tensor:
    return inputs[0] @ inputs[1]


@importer("Gemm")
def gemm(node: Node, inputs: list) -> Tensor:
    a, b, c = (inputs + [None])[:3]
    a = a.T if node.attr("transA", 0) else a
    b = b.T if node.attr("transB", 0) else b
    out = a @ b
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    if alpha != 1.0:
        out = out * alpha
    if c is not None and beta != 0.0:
        out = out + (c * beta if beta != 1.0 else c)
    return out


@importer("Where")
def where(node: Node, inputs: list) -> Tensor:
    cond, x, y = inputs
    return FUNCTIONS["where"](cond, x, y)


def _compare(fn: Any) -> Any:
    return lambda node, inputs: _numpy(fn, *inputs)


for _op, _fn in {"Equal": np.equal, "Greater": np.greater, "Less": np.less,
                 "GreaterOrEqual": np.greater_equal, "LessOrEqual": np.less_equal,
                 "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor,
                 "Not": np.logical_not, "Floor": np.floor, "Ceil": np.ceil,
                 "Sign": np.sign, "Round": np.round}.items():
    importer(_op)(_compare(_fn))


# ---------------------------------------------------------------- unary maths and activations
_UNARY = {"Neg": "neg", "Abs": "abs", "Reciprocal": "reciprocal", "Sqrt": "sqrt", "Exp": "exp",
          "Log": "log", "Sin": "sin", "Cos": "cos", "Tanh": "tanh", "Sigmoid": "sigmoid",
          "Relu": "relu", "Softplus": "softplus"}


def _unary(name: str) -> Any:
    return lambda node, inputs: FUNCTIONS[name](inputs[0])


for _op, _name in _UNARY.items():
    importer(_op)(_unary(_name))


class _Erf(Function):
    """erf, for graphs that spell GELU out (ember has no public erf op)."""

    def forward(self, a):
        from ember.ops.elementwise import _erf
        self.save(a)
        return _erf(a).astype(a.dtype, copy=False)

    def backward(self, g):  # d erf(a) / da = 2/sqrt(pi) exp(-a^2)
        (a,) = self.saved
        return (g * _TWO_OVER_SQRT_PI * np.exp(-a * a)).astype(g.dtype, copy=False)


importer("Erf")(lambda node, inputs: _Erf.apply(inputs[0]))


@importer("LeakyRelu")
def leaky_relu(node: Node, inputs: list) -> Tensor:
    return FUNCTIONS["leaky_relu"](inputs[0], node.attr("alpha", 0.01))


@importer("Elu")
def elu(node: Node, inputs: list) -> Tensor:
    return FUNCTIONS["elu"](inputs[0], node.attr("alpha", 1.0))


def _check_gelu(node: Node) -> str | None:
    if node.attr("approximate", "none") not in ("none", "tanh"):
        return f"approximate={node.attr('approximate')!r}"
    return None


@importer("Gelu", check=_check_gelu)
def gelu(node: Node, inputs: list) -> Tensor:
    return FUNCTIONS["gelu"](inputs[0], node.attr("approximate", "none"))


def _softmax(name: str) -> Any:
    def run(node: Node, inputs: list) -> Tensor:
        x = inputs[0]
        if node.opset >= 13:
            return FUNCTIONS[name](x, node.attr("axis", -1))
        # before opset 13 the input is seen as 2-D: dims before axis x dims from axis on
        axis = node.attr("axis", 1) % max(x.ndim, 1)
        rows = math.prod(x.shape[:axis])
        return FUNCTIONS[name](x.reshape(rows, -1), 1).reshape(*x.shape)
    return run


importer("Softmax")(_softmax("softmax"))
importer("LogSoftmax")(_softmax("log_softmax"))


@importer("Clip")
def clip(node: Node, inputs: list) -> Tensor:
    x = inputs[0]
    if node.opset < 11:
        low, high = node.attr("min"), node.attr("max")
    else:
        low, high = [None if t is None else t.array.item() for t in (inputs + [None] * 2)[1:3]]
    if low is None and high is None:
        return x
    return FUNCTIONS["clamp"](x, low, high)


def _check_cast(node: Node) -> str | None:
    from ember.onnx.load import _NUMPY_TYPES, onnx_type_name
    target = onnx_type_name(node.attr("to"))
    return None if target in _NUMPY_TYPES else f"casting to {target}"


@importer("Cast", check=_check_cast)
def cast(node: Node, inputs: list) -> Tensor:
    from onnx import helper
    dtype = helper.tensor_dtype_to_np_dtype(node.attr("to"))
    x = inputs[0]
    if _is_float(x) and np.dtype(dtype).kind == "f":
        return x.cast(dtype)
    return constant(x.array.astype(dtype))


# ---------------------------------------------------------------- reductions
def _reduce(name: str, since: int) -> Any:
    def run(node: Node, inputs: list) -> Tensor:
        x = inputs[0]
        axes = axes_of(node, inputs[1] if len(inputs) > 1 else None, since)
        keep = bool(node.attr("keepdims", 1))
        if not axes:
            if node.attr("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.ndim))
        if not x.ndim:
            return x
        return _reduction(name, x, tuple(normalized(axes, x.ndim)), keep)
    return run


_EMPTY = {"sum": 0, "mean": np.nan, "prod": 1, "amax": -np.inf, "amin": np.inf,
          "logsumexp": -np.inf}


def _reduction(name: str, x: Tensor, axes: tuple, keep: bool) -> Tensor:
    if any(x.shape[a] == 0 for a in axes):  # ONNX: the reduction's identity element
        shape = [1 if i in axes else n for i, n in enumerate(x.shape) if keep or i not in axes]
        fill = _EMPTY[name]
        if x.dtype.kind != "f" and not np.isfinite(fill):
            fill = np.iinfo(x.dtype).max if fill > 0 else np.iinfo(x.dtype).min \
                if x.dtype.kind in "iu" else fill > 0
        return constant(np.full(shape, fill, dtype=x.dtype))
    if not _is_float(x):
        fn = {"sum": np.sum, "mean": np.mean, "prod": np.prod, "amax": np.max,
              "amin": np.min}[name]
        return constant(np.asarray(fn(x.array, axis=axes, keepdims=keep)).astype(x.dtype))
    return FUNCTIONS[name](x, axes, keep)


for _op, _name, _since in [("ReduceSum", "sum", 13), ("ReduceMean", "mean", 18),
                           ("ReduceProd", "prod", 18), ("ReduceMax", "amax", 18),
                           ("ReduceMin", "amin", 18), ("ReduceLogSumExp", "logsumexp", 18)]:
    importer(_op)(_reduce(_name, _since))


@importer("CumSum")
def cumsum(node: Node, inputs: list) -> Tensor:
    x, axis = inputs[0], ints(inputs[1])[0]
    if node.attr("reverse", 0):
        x = x.flip(axis)
    out = FUNCTIONS["cumsum"](x, axis) if _is_float(x) else \
        constant(np.cumsum(x.array, axis=axis, dtype=x.dtype))
    if node.attr("exclusive", 0):
        out = out - x
    return out.flip(axis) if node.attr("reverse", 0) else out


# ---------------------------------------------------------------- shapes
@importer("Identity")
def identity(node: Node, inputs: list) -> Tensor:
    return inputs[0]


@importer("Shape")
def shape(node: Node, inputs: list) -> Tensor:
    dims = list(inputs[0].shape)
    start, end = node.attr("start", 0), node.attr("end", len(dims))
    return constant(np.asarray(dims[slice(start, end)], dtype=np.int64))


@importer("Size")
def size(node: Node, inputs: list) -> Tensor:
    return constant(np.asarray(inputs[0].array.size, dtype=np.int64))


@importer("Reshape")
def reshape(node: Node, inputs: list) -> Tensor:
    x, target = inputs[0], ints(inputs[1]) if node.opset >= 5 else list(node.attr("shape"))
    if not node.attr("allowzero", 0):  # 0 copies the input's dim
        target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return x.reshape(*target) if target else x.reshape(())


@importer("Flatten")
def flatten(node: Node, inputs: list) -> Tensor:
    x, axis = inputs[0], node.attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    rows = math.prod(x.shape[:axis])
    return x.reshape(rows, math.prod(x.shape[axis:]))


@importer("Transpose")
def transpose(node: Node, inputs: list) -> Tensor:
    x = inputs[0]
    perm = node.attr("perm") or list(reversed(range(x.ndim)))
    return x.permute(*perm) if x.ndim else x


@importer("Squeeze")
def squeeze(node: Node, inputs: list) -> Tensor:
    x = inputs[0]
    axes = axes_of(node, inputs[1] if len(inputs) > 1 else None, 13)
    drop = set(normalized(axes, x.ndim)) if axes else {i for i, n in enumerate(x.shape) if n == 1}
    if any(x.shape[a] != 1 for a in drop):
        raise node.fail(f"cannot squeeze axes {sorted(drop)} of shape {tuple(x.shape)}")
    return x.reshape(*[n for i, n in enumerate(x.shape) if i not in drop])


@importer("Unsqueeze")
def unsqueeze(node: Node, inputs: list) -> Tensor:
    x = inputs[0]
    axes = axes_of(node, inputs[1] if len(inputs) > 1 else None, 13)
    rank = x.ndim + len(axes)
    new, dims, shape = set(normalized(axes, rank)), iter(x.shape), []
    for i in range(rank):
        shape.append(1 if i in new else next(dims))
    return x.reshape(*shape)


@importer("Concat")
def concat(node: Node, inputs: list) -> Tensor:
    tensors = [t for t in inputs if t is not None]
    return FUNCTIONS["cat"](tensors, node.attr("axis"))


@importer("Expand")
def expand(node: Node, inputs: list) -> Tensor:
    x, target = inputs[0], tuple(ints(inputs[1]))
    shape = np.broadcast_shapes(tuple(x.shape), target)
    return x.expand(*shape) if tuple(shape) != tuple(x.shape) else x


@importer("Tile")
def tile(node: Node, inputs: list) -> Tensor:
    return inputs[0].repeat(*ints(inputs[1]))


@importer("Gather")
def gather(node: Node, inputs: list) -> Tensor:
    x, index = inputs
    axis = node.attr("axis", 0) % max(x.ndim, 1)
    return x[(slice(None),) * axis + (index.array.astype(np.int64),)]


@importer("GatherElements")
def gather_elements(node: Node, inputs: list) -> Tensor:
    x, index = inputs
    return x.gather(node.attr("axis", 0), constant(index.array.astype(np.int64)))


def _check_scatter(node: Node) -> str | None:
    if node.attr("reduction", "none") not in ("none", "add"):
        return f"reduction={node.attr('reduction')!r}"
    return None


@importer("ScatterElements", check=_check_scatter)
def scatter_elements(node: Node, inputs: list) -> Tensor:
    data, index, updates = inputs
    axis = node.attr("axis", 0) % data.ndim
    index = constant(np.where(index.array < 0, index.array + data.shape[axis], index.array))
    if node.attr("reduction", "none") == "add":
        return data.scatter_add(axis, index, updates)
    hit = np.zeros(data.shape, bool)
    np.put_along_axis(hit, index.array, True, axis=axis)
    scattered = constant(np.zeros_like(data.array)).scatter_add(axis, index, updates)
    return FUNCTIONS["where"](constant(hit), scattered, data)


@importer("Slice")
def slice_(node: Node, inputs: list) -> Tensor:
    x = inputs[0]
    if node.opset < 10:
        starts, ends = node.attr("starts"), node.attr("ends")
        axes, steps = node.attr("axes"), None
    else:
        starts, ends = ints(inputs[1]), ints(inputs[2])
        axes, steps = [ints(t) if t is not None else None for t in (inputs + [None] * 2)[3:5]]
    axes = normalized(axes or range(len(starts)), x.ndim)
    steps = steps or [1] * len(starts)
    index = [slice(None)] * x.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps):
        index[axis] = slice(start, end, step)
    return x[tuple(index)]


@importer("Pad")
def pad(node: Node, inputs: list) -> Tensor:
    x = inputs[0]
    if node.opset < 11:
        pads, value = list(node.attr("pads")), node.attr("value", 0.0)
        axes = list(range(x.ndim))
    else:
        pads = ints(inputs[1])
        value = inputs[2].array.item() if len(inputs) > 2 and inputs[2] is not None else 0
        axes = normalized(ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None
                          else range(x.ndim), x.ndim)
    widths = [(0, 0)] * x.ndim
    for i, axis in enumerate(axes):
        widths[axis] = (pads[i], pads[i + len(axes)])
    mode = node.attr("mode", "constant")
    if mode == "constant":
        return pad_widths(x, widths, value)
    for axis, (lo, hi) in enumerate(widths):  # edge/reflect/wrap: gather the source indices
        if lo or hi:
            x = x[(slice(None),) * axis + (_pad_index(mode, x.shape[axis], lo, hi),)]
    return x


def _pad_index(mode: str, n: int, lo: int, hi: int) -> np.ndarray:
    """The source index of each padded position along one dim."""
    index = np.arange(-lo, n + hi)
    if mode == "edge":
        return np.clip(index, 0, n - 1)
    if mode == "wrap":
        return index % n
    period = 2 * (n - 1) if n > 1 else 1  # reflect: mirror without repeating the edge
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


def pad_widths(x: Tensor, widths: list, value: Any = 0) -> Tensor:
    """Pad (or, for negative widths, crop) each dim by (before, after)."""
    crop = tuple(slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(widths, x.shape))
    if any(lo < 0 or hi < 0 for lo, hi in widths):
        x = x[crop]
    flat = []
    for lo, hi in reversed(widths):  # ember's pad lists (before, after) from the last dim
        flat += [max(lo, 0), max(hi, 0)]
    if not any(flat):
        return x
    return FUNCTIONS["pad"](x, flat, "constant", value)


@importer("Trilu")
def trilu(node: Node, inputs: list) -> Tensor:
    x = inputs[0]
    k = ints(inputs[1])[0] if len(inputs) > 1 and inputs[1] is not None else 0
    return x.triu(k) if node.attr("upper", 1) else x.tril(k)


def _check_constant(node: Node) -> str | None:
    known = {"value", "value_float", "value_floats", "value_int", "value_ints"}
    if not known & set(node.attrs):
        return f"attribute {sorted(node.attrs)} (strings and sparse tensors)"
    value = node.attrs.get("value")
    if isinstance(value, np.ndarray) and value.dtype.kind not in "biuf":
        return f"a {value.dtype} value"
    return None


@importer("Constant", check=_check_constant)
def constant_node(node: Node, inputs: list) -> Tensor:
    for key, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in node.attrs:
            return constant(np.asarray(node.attrs[key], dtype=dtype))
    raise node.unsupported(f"attribute {sorted(node.attrs)}")
