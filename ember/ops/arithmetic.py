"""Arithmetic: + - * / // % **, matmul, comparisons and logic, min/max/where/clamp.

Each class states its forward and, right beside it, its local derivative.
Binary ops broadcast like NumPy; ``unbroadcast`` sums gradients back down.
"""

from __future__ import annotations

from typing import Any

from ember import dtypes
from ember.autograd import FUNCTIONS, Function, register, register_composed, unbroadcast
from ember.backend import xp
from ember.blas import matmul
from ember.tensor import Tensor, as_tensor_like


class _Binary(Function):
    arity = 2
    promote = True

    def reduce(self, ga: Any, gb: Any) -> tuple:
        """Both input gradients, summed back to the inputs' shapes (read from the
        parents the graph keeps anyway, so the forward saves nothing for this)."""
        a, b = self.parents if self._inputs is not None else (self._first, self._second)
        if ga is not None and ga.shape != a.array.shape:  # broadcast in the forward
            ga = unbroadcast(ga, a.array.shape)
        if gb is not None and gb.shape != b.array.shape:
            gb = unbroadcast(gb, b.array.shape)
        return ga, gb


@register("add", "__add__", "__radd__")
class Add(_Binary):
    def forward(self, a, b):
        return a + b

    def backward(self, g):  # d(a+b)/da = 1, d(a+b)/db = 1
        return self.reduce(g, g)

    def to_onnx(self, g, inputs, output):
        g.elementwise("Add", inputs, output)


@register("sub", "__sub__")
class Sub(_Binary):
    def forward(self, a, b):
        return a - b

    def backward(self, g):  # d(a-b)/da = 1, d(a-b)/db = -1
        return self.reduce(g, -g if self.needs_input_grad[1] else None)

    def to_onnx(self, g, inputs, output):
        g.elementwise("Sub", inputs, output)


@register("mul", "__mul__", "__rmul__")
class Mul(_Binary):
    def forward(self, a, b):
        self.saved = (a, b)
        return a * b

    def backward(self, g):  # d(ab)/da = b, d(ab)/db = a
        a, b = self.saved
        need_a, need_b = self.needs_input_grad
        return self.reduce(g * b if need_a else None, g * a if need_b else None)

    def to_onnx(self, g, inputs, output):
        g.elementwise("Mul", inputs, output)


@register("div", "__truediv__", "true_divide")
class Div(_Binary):
    def forward(self, a, b):
        self.save(a, b)
        with xp.errstate(divide="ignore", invalid="ignore"):
            out = a / b
        if a.dtype.kind != "f" and b.dtype.kind != "f":
            out = out.astype(dtypes.DEFAULT_FLOAT)  # torch: int / int is float32
        return out

    def backward(self, g):  # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
        a, b = self.saved
        need_a, need_b = self.needs_input_grad
        with xp.errstate(divide="ignore", invalid="ignore"):
            ga = g / b if need_a else None
            gb = -g * a / (b * b) if need_b else None
        return self.reduce(ga, gb)

    def to_onnx(self, g, inputs, output):  # int / int is float here: cast first, then divide
        g.elementwise("Div", inputs, output)


@register("floor_divide", "__floordiv__")
class FloorDivide(_Binary):
    differentiable = False  # piecewise constant, as in torch

    def forward(self, a, b):
        with xp.errstate(divide="ignore", invalid="ignore"):
            return xp.floor_divide(a, b)


@register("remainder", "__mod__", "fmod_python")
class Remainder(_Binary):
    """Python-style modulo (sign of the divisor), like ``torch.remainder``."""

    def forward(self, a, b):
        self.save(a, b)
        with xp.errstate(divide="ignore", invalid="ignore"):
            return xp.mod(a, b)

    def backward(self, g):  # a mod b = a - b*floor(a/b): d/da = 1, d/db = -floor(a/b)
        a, b = self.saved
        with xp.errstate(divide="ignore", invalid="ignore"):
            gb = -g * xp.floor(a / b) if self.needs_input_grad[1] else None
        return self.reduce(g, gb)

    def to_onnx(self, g, inputs, output):  # a - b floor(a / b): ONNX Mod is C's fmod on floats
        a, b = (g.cast(n, g.dtype(output)) for n in inputs)
        floor = g.node("Floor", [g.node("Div", [a, b])])
        g.node("Sub", [a, g.node("Mul", [b, floor])], output)


@register("pow", "__pow__")
class Pow(_Binary):
    def forward(self, a, b):
        with xp.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = xp.power(a, b)
        self.save(a, b, out)
        return out

    def backward(self, g):  # d(a^b)/da = b a^(b-1), d(a^b)/db = a^b ln a
        a, b, out = self.saved
        need_a, need_b = self.needs_input_grad
        with xp.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ga = g * b * xp.power(a, b - 1) if need_a else None
            # torch's convention: 0^b with b >= 0 contributes 0, not 0 * -inf
            gb = g * xp.where((a == 0) & (b >= 0), 0, out * xp.log(a)) if need_b else None
        return self.reduce(ga, gb)

    def to_onnx(self, g, inputs, output):
        g.elementwise("Pow", inputs, output)


@register("neg", "__neg__", "negative")
class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):  # d(-a)/da = -1
        return -g

    def to_onnx(self, g, inputs, output):
        g.node("Neg", inputs, output)


@register("abs", "__abs__", "absolute")
class Abs(Function):
    def forward(self, a):
        self.save(a)
        return xp.abs(a)

    def backward(self, g):  # d|a|/da = sign(a), 0 at 0 as in torch
        (a,) = self.saved
        return g * xp.sign(a)

    def to_onnx(self, g, inputs, output):
        g.node("Abs", inputs, output)


@register("sign")
class Sign(Function):
    differentiable = False

    def forward(self, a):
        return xp.sign(a)


@register("reciprocal")
class Reciprocal(Function):
    def forward(self, a):
        with xp.errstate(divide="ignore"):
            out = 1.0 / a if a.dtype.kind == "f" else (1.0 / a).astype(dtypes.DEFAULT_FLOAT)
        self.save(out)
        return out

    def backward(self, g):  # d(1/a)/da = -1/a^2 = -out^2
        (out,) = self.saved
        return -g * out * out

    def to_onnx(self, g, inputs, output):
        g.elementwise("Reciprocal", inputs, output)


@register("matmul", "__matmul__")
class MatMul(Function):
    """Matrix product with NumPy's rules: 1-D operands and broadcast batch dims."""

    arity = 2

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("both operands must have at least 1 dimension")
        k_a = a.shape[-1]
        k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
        if k_a != k_b:
            raise ValueError(f"shapes {a.shape} and {b.shape} cannot be multiplied "
                             f"({k_a} != {k_b})")
        self.save(a, b)
        return matmul(a, b)

    def backward(self, g):  # dA = G B^T, dB = A^T G, with 1-D operands made 2-D first
        a, b = self.saved
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g[..., None] if b.ndim == 1 else g
        g2 = g2[..., None, :] if a.ndim == 1 else g2
        need_a, need_b = self.needs_input_grad
        ga = gb = None
        if need_a:
            ga = unbroadcast(matmul(g2, xp.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
        if need_b:
            gb = unbroadcast(matmul(xp.swapaxes(a2, -1, -2), g2), b2.shape).reshape(b.shape)
        return ga, gb

    def to_onnx(self, g, inputs, output):
        g.elementwise("MatMul", inputs, output)


def _rmatmul(self: Tensor, other: Any) -> Tensor:
    return MatMul.apply(other, self)


Tensor.__rmatmul__ = _rmatmul


def _reflected(cls: type[Function]) -> Any:
    return lambda self, other: cls.apply(other, self)


Tensor.__rsub__ = _reflected(Sub)
Tensor.__rtruediv__ = _reflected(Div)
Tensor.__rfloordiv__ = _reflected(FloorDivide)
Tensor.__rmod__ = _reflected(Remainder)
Tensor.__rpow__ = _reflected(Pow)


# ---------------------------------------------------------------- comparisons and logic
def _comparison(name: str, alias: str, ufunc: Any) -> type[Function]:
    """Comparisons return bool tensors and carry no gradient."""
    cls = type(name.capitalize(), (_Binary,), {
        "differentiable": False,
        "forward": lambda self, a, b: ufunc(a, b),
        "__doc__": f"Elementwise ``{alias}`` as a bool tensor (no gradient).",
    })
    return register(name, alias)(cls)


Eq = _comparison("eq", "__eq__", xp.equal)
Ne = _comparison("ne", "__ne__", xp.not_equal)
Lt = _comparison("lt", "__lt__", xp.less)
Le = _comparison("le", "__le__", xp.less_equal)
Gt = _comparison("gt", "__gt__", xp.greater)
Ge = _comparison("ge", "__ge__", xp.greater_equal)
LogicalAnd = _comparison("logical_and", "__and__", xp.logical_and)
LogicalOr = _comparison("logical_or", "__or__", xp.logical_or)


@register("logical_not", "__invert__")
class LogicalNot(Function):
    differentiable = False

    def forward(self, a):
        return xp.logical_not(a)


# ---------------------------------------------------------------- selection
@register("maximum")
class Maximum(_Binary):
    def forward(self, a, b):
        self.save(a, b)
        return xp.maximum(a, b)

    def backward(self, g):  # the larger input gets g; ties split it in half, as in torch
        a, b = self.saved
        share = xp.where(a == b, 0.5, (a > b).astype(g.dtype))
        return self.reduce(g * share, g * (1 - share))

    def to_onnx(self, g, inputs, output):
        g.elementwise("Max", inputs, output)


@register("minimum")
class Minimum(_Binary):
    def forward(self, a, b):
        self.save(a, b)
        return xp.minimum(a, b)

    def backward(self, g):  # the smaller input gets g; ties split it in half
        a, b = self.saved
        share = xp.where(a == b, 0.5, (a < b).astype(g.dtype))
        return self.reduce(g * share, g * (1 - share))

    def to_onnx(self, g, inputs, output):
        g.elementwise("Min", inputs, output)


@register("where", method=False)
class Where(Function):
    """``where(cond, x, y)``: x where cond holds, else y."""

    arity = 3

    def forward(self, cond, x, y):
        self.save(cond)
        self.shapes = (x.shape, y.shape)
        return xp.where(cond, x, y)

    def backward(self, g):  # gradient flows to whichever input was chosen
        (cond,) = self.saved
        need_x, need_y = self.needs_input_grad[1:]
        gx = unbroadcast(xp.where(cond, g, 0), self.shapes[0]) if need_x else None
        gy = unbroadcast(xp.where(cond, 0, g), self.shapes[1]) if need_y else None
        return None, gx, gy

    def to_onnx(self, g, inputs, output):
        cond, x, y = inputs
        g.node("Where", [g.cast(cond, bool), *(g.cast(n, g.dtype(output)) for n in (x, y))],
               output)


def where(condition: Tensor, input: Any, other: Any) -> Tensor:  # noqa: A002
    """``ember.where(cond, x, y)``; x and y may be Python numbers.

    >>> ember.where(ember.tensor([True, False]), 1.0, ember.tensor([5.0, 6.0]))
    tensor([1., 6.])
    """
    x, y = as_tensor_like([input, other])
    cond = condition if isinstance(condition, Tensor) else Tensor(condition)
    if cond.dtype != dtypes.bool_:
        cond = Tensor._make(cond.array.astype(bool), False, None)
    return Where.apply(cond, x, y)


FUNCTIONS["where"] = where
Tensor.where = lambda self, condition, other: where(condition, self, other)


@register("clamp", "clip")
class Clamp(Function):
    def forward(self, a, min=None, max=None):  # noqa: A002
        if min is None and max is None:
            raise ValueError("at least one of 'min' or 'max' must not be None")
        self.save(a)
        self.bounds = (min, max)
        return xp.clip(a, min, max).astype(a.dtype, copy=False)

    def backward(self, g):  # 1 inside [min, max] (bounds included, as in torch), else 0
        (a,) = self.saved
        lo, hi = self.bounds
        inside = xp.ones(a.shape, bool)
        if lo is not None:
            inside &= a >= lo
        if hi is not None:
            inside &= a <= hi
        return g * inside

    def to_onnx(self, g, inputs, output):
        bounds = [None if b is None else xp.asarray(getattr(b, "array", b)) for b in self.bounds]
        if all(b is None or b.ndim == 0 for b in bounds):
            names = ["" if b is None else g.const(b, g.dtype(output)) for b in bounds]
            return g.node("Clip", [inputs[0], *names], output)
        low, high = ("" if b is None else g.const(b, g.dtype(output)) for b in bounds)
        out = g.node("Max", [inputs[0], low]) if low else inputs[0]  # Clip wants scalar bounds
        return g.node("Min", [out, high], output) if high else g.node("Identity", [out], output)


@register_composed("outer", "ger")
def outer(a: Tensor, b: Tensor) -> Tensor:
    """Outer product of two 1-D tensors: ``a[:, None] * b[None, :]``."""
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"outer: expected two 1-D tensors, got shapes {a.shape} and {b.shape}")
    return a.reshape(-1, 1) * b.reshape(1, -1)


@register_composed("lerp")
def lerp(start: Tensor, end: Any, weight: Any) -> Tensor:
    """``start + weight * (end - start)``."""
    return start + weight * (end - start)


@register_composed("square")
def square(x: Tensor) -> Tensor:
    return x * x
