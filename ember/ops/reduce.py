"""Reductions (sum, prod, amax, logsumexp, cumsum...) and softmax.

``dim`` is an int, a tuple of ints or None (all dims); ``keepdim`` keeps the
reduced dims with size 1. A reduction's backward spreads the gradient back
over the reduced dims.
"""

from __future__ import annotations

import warnings
from collections import namedtuple
from typing import Any

from ember.autograd import Function, register, register_composed
from ember.backend import xp
from ember.tensor import Tensor


def normalize_dims(dim: Any, ndim: int) -> tuple:
    """Reduced axes as sorted non-negative ints; ``None`` means all of them."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    rank = max(ndim, 1)
    for d in dims:
        if not -rank <= d < rank:
            raise IndexError(f"dim {d} is out of range for a tensor with {ndim} dims")
    return tuple(sorted({d % rank for d in dims})) if ndim else ()


def _count(shape: tuple, axes: tuple) -> int:
    n = 1
    for ax in axes:
        n *= shape[ax]
    return n


class _Reduction(Function):
    """Keeps what every reduction's backward needs: axes, keepdim, input shape."""

    def setup(self, a: Any, dim: Any, keepdim: bool) -> tuple:
        self.axes = normalize_dims(dim, a.ndim)
        self.keepdim = keepdim
        self.in_shape = a.shape
        return self.axes

    def kept(self, g: Any) -> Any:
        """The gradient with reduced dims restored as size 1."""
        return g if self.keepdim else xp.expand_dims(g, self.axes)

    def reduce_to_onnx(self, g, op_type: str, inputs, output, since: int = 18) -> None:
        """A Reduce* node over ``self.axes`` (an input from opset ``since``, else an attribute)."""
        if not self.axes:  # a 0-d input: nothing to reduce
            g.node("Identity", inputs, output)
            return
        g.axes_node(op_type, inputs, output, self.axes, since, keepdims=int(self.keepdim))


@register("sum")
class Sum(_Reduction):
    def forward(self, a, dim=None, keepdim=False):
        axes = self.setup(a, dim, keepdim)
        return a.sum(axis=axes, keepdims=keepdim)

    def backward(self, g):  # every summed element gets the gradient of the sum
        return xp.broadcast_to(self.kept(g), self.in_shape)

    def to_onnx(self, g, inputs, output):
        self.reduce_to_onnx(g, "ReduceSum", inputs, output, since=13)


@register_composed("mean")
def mean(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Average over ``dim``: a sum divided by the number of summed elements."""
    if x.dtype.kind != "f":
        raise TypeError(f"mean: expected a floating tensor, got {x.dtype_name}")
    n = _count(x.shape, normalize_dims(dim, x.ndim))
    return x.sum(dim, keepdim) / n


@register("prod")
class Prod(_Reduction):
    def forward(self, a, dim=None, keepdim=False):
        axes = self.setup(a, dim, keepdim)
        self.save(a)
        return a.prod(axis=axes, keepdims=keepdim)

    def backward(self, g):
        # d prod / d a_i = product of all the other elements. Exclusive cumulative
        # products from both ends give it without dividing, so zeros are exact.
        (a,) = self.saved
        kept_axes = [i for i in range(a.ndim) if i not in self.axes]
        order = kept_axes + list(self.axes)
        lead = [a.shape[i] for i in kept_axes]
        flat = a.transpose(order).reshape(lead + [_count(a.shape, self.axes)])
        ones = xp.ones(lead + [1], a.dtype)
        left = xp.cumprod(xp.concatenate([ones, flat[..., :-1]], -1), -1)
        right = xp.cumprod(xp.concatenate([ones, flat[..., :0:-1]], -1), -1)[..., ::-1]
        g_lead = self.kept(g).reshape(lead + [1])
        moved = (g_lead * left * right).reshape([a.shape[i] for i in order])
        return moved.transpose(xp.argsort(order))

    def to_onnx(self, g, inputs, output):
        self.reduce_to_onnx(g, "ReduceProd", inputs, output)


class _Extreme(_Reduction):
    """amax/amin: the gradient is shared evenly among tied extremes, as in torch."""

    pick = None

    def forward(self, a, dim=None, keepdim=False):
        axes = self.setup(a, dim, keepdim)
        if a.size == 0:
            raise ValueError("cannot reduce an empty tensor to its extreme value")
        out = type(self).pick(a, axis=axes, keepdims=True)
        self.save(a, out)
        return out if keepdim else out.squeeze(axes)

    def backward(self, g):
        a, out = self.saved
        hits = (a == out).astype(g.dtype)
        return self.kept(g) * hits / hits.sum(axis=self.axes, keepdims=True)


@register("amax")
class Amax(_Extreme):
    pick = staticmethod(xp.max)

    def to_onnx(self, g, inputs, output):
        self.reduce_to_onnx(g, "ReduceMax", inputs, output)


@register("amin")
class Amin(_Extreme):
    pick = staticmethod(xp.min)

    def to_onnx(self, g, inputs, output):
        self.reduce_to_onnx(g, "ReduceMin", inputs, output)


class _ArgExtreme(Function):
    differentiable = False
    pick = None

    def forward(self, a, dim=None, keepdim=False):
        if dim is None:
            return xp.asarray(type(self).pick(a.reshape(-1)), dtype=xp.int64)
        (axis,) = normalize_dims(dim, a.ndim) or (None,)
        if axis is None:  # 0-d input
            return xp.zeros((), xp.int64)
        return type(self).pick(a, axis=axis, keepdims=keepdim).astype(xp.int64)


@register("argmax")
class Argmax(_ArgExtreme):
    pick = staticmethod(xp.argmax)


@register("argmin")
class Argmin(_ArgExtreme):
    pick = staticmethod(xp.argmin)


MinMax = namedtuple("MinMax", ["values", "indices"])


def _extreme_along(x: Tensor, dim: Any, keepdim: bool, arg: str, whole: str, pair: str) -> Any:
    if dim is None:
        return getattr(x, whole)()
    if isinstance(dim, Tensor):  # torch.max(a, b) is maximum(a, b)
        return getattr(x, pair)(dim)
    idx = getattr(x, arg)(dim, keepdim=True)
    values = x.gather(dim, idx)
    if not keepdim and x.ndim:
        values, idx = values.squeeze(dim), idx.squeeze(dim)
    return MinMax(values, idx)


@register_composed("max")
def max_(x: Tensor, dim: Any = None, keepdim: bool = False) -> Any:
    """``x.max()`` is the largest value; ``x.max(dim)`` gives (values, indices)."""
    return _extreme_along(x, dim, keepdim, "argmax", "amax", "maximum")


@register_composed("min")
def min_(x: Tensor, dim: Any = None, keepdim: bool = False) -> Any:
    """``x.min()`` is the smallest value; ``x.min(dim)`` gives (values, indices)."""
    return _extreme_along(x, dim, keepdim, "argmin", "amin", "minimum")


@register_composed("var")
def var(x: Tensor, dim: Any = None, correction: int = 1, keepdim: bool = False,
        unbiased: bool | None = None) -> Tensor:
    """Variance, dividing by ``N - correction`` (1: unbiased, as torch's default)."""
    if unbiased is not None:
        correction = int(unbiased)
    n = _count(x.shape, normalize_dims(dim, x.ndim))
    centred = x - x.mean(dim, keepdim=True)
    squares = (centred * centred).sum(dim, keepdim)
    if n - correction > 0:
        return squares / (n - correction)
    # torch's warning and NaN; dividing by zero would give the NaN too, but its backward
    # makes inf * 0 and a NumPy warning from deep inside autograd
    warnings.warn("var(): degrees of freedom is <= 0. Correction should be strictly less "
                  "than the reduction factor (input numel divided by output numel).",
                  UserWarning, stacklevel=2)
    return squares * float("nan")


@register_composed("std")
def std(x: Tensor, dim: Any = None, correction: int = 1, keepdim: bool = False,
        unbiased: bool | None = None) -> Tensor:
    """Standard deviation: the square root of ``var``."""
    return var(x, dim, correction, keepdim, unbiased).sqrt()


@register_composed("norm")
def norm(x: Tensor, p: Any = 2, dim: Any = None, keepdim: bool = False) -> Tensor:
    """Vector p-norm over ``dim`` (``'fro'`` and 2 are Euclidean, ``inf`` the max)."""
    if p in ("fro", 2):
        return (x * x).sum(dim, keepdim).sqrt()
    if p == 1:
        return x.abs().sum(dim, keepdim)
    if p == float("inf"):
        return x.abs().amax(dim, keepdim)
    return (x.abs() ** p).sum(dim, keepdim) ** (1.0 / p)


@register("logsumexp")
class LogSumExp(_Reduction):
    """``log(sum(exp(x)))`` computed as ``m + log(sum(exp(x - m)))``, m the max."""

    def forward(self, a, dim=None, keepdim=False):
        axes = self.setup(a, dim, keepdim)
        m = a.max(axis=axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)  # all -inf (or an inf) must not give nan
        with xp.errstate(divide="ignore"):
            out = xp.log(xp.exp(a - m).sum(axis=axes, keepdims=True)) + m
        self.save(a, out)
        return out if keepdim else out.squeeze(axes)

    def backward(self, g):  # d lse / d x_i = softmax(x)_i
        a, out = self.saved
        return self.kept(g) * xp.exp(a - out)

    def to_onnx(self, g, inputs, output):
        self.reduce_to_onnx(g, "ReduceLogSumExp", inputs, output)


@register("cumsum")
class CumSum(Function):
    def forward(self, a, dim):
        (self.axis,) = normalize_dims(dim, a.ndim) or (0,)
        return xp.cumsum(a, axis=self.axis) if a.ndim else a.copy()

    def backward(self, g):  # each input feeds every later output: a reversed cumsum
        if g.ndim == 0:
            return g
        return xp.flip(xp.cumsum(xp.flip(g, self.axis), axis=self.axis), self.axis)

    def to_onnx(self, g, inputs, output):
        if not g.shape(inputs[0]):
            g.node("Identity", inputs, output)
            return
        g.node("CumSum", [inputs[0], g.const(self.axis, "int64")], output)


def _shifted(a, axis: int):
    """``a - max(a)`` along ``axis``. A row of all -inf stays -inf (its softmax is then
    0/0 = NaN, as torch's, without an invalid-value warning on the way); a row whose
    maximum is +inf becomes NaN, as in torch (``inf - inf``)."""
    m = a.max(axis=axis, keepdims=True)
    with xp.errstate(invalid="ignore"):
        return a - xp.where(m == -xp.inf, 0, m)


def log_softmax_array(a, axis: int | None):
    """``(a - m) - log(sum(exp(a - m)))`` along ``axis``, m the maximum (``_shifted``'s
    rules for infinite rows); also cross-entropy's, on its (samples, classes) logits."""
    z = _shifted(a, axis)
    with xp.errstate(divide="ignore", invalid="ignore"):  # all -inf: NaN, as in torch
        return z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))


@register("log_softmax")
class LogSoftmax(Function):
    """``x - logsumexp(x)``, computed as ``(x - m) - log(sum(exp(x - m)))`` so
    that no exponent is ever positive and no precision is lost to ``m``."""

    def forward(self, a, dim=-1):
        (self.axis,) = normalize_dims(dim, a.ndim) or (None,)
        out = log_softmax_array(a, self.axis)
        self.save(out)
        return out

    def backward(self, g):  # d/dx_j = g_j - softmax_j * sum(g)
        (out,) = self.saved
        return g - xp.exp(out) * g.sum(axis=self.axis, keepdims=True)

    def to_onnx(self, g, inputs, output):
        _softmax_to_onnx(g, "LogSoftmax", self.axis, inputs, output)


@register("softmax")
class Softmax(Function):
    """``exp(x - m) / sum(exp(x - m))``: the shift by the max keeps it finite."""

    def forward(self, a, dim=-1):
        (self.axis,) = normalize_dims(dim, a.ndim) or (None,)
        e = xp.exp(_shifted(a, self.axis))
        with xp.errstate(invalid="ignore"):  # a row of all -inf: 0/0, NaN as in torch
            out = e / e.sum(axis=self.axis, keepdims=True)
        self.save(out)
        return out

    def backward(self, g):  # the softmax Jacobian: s * (g - sum(g * s))
        (out,) = self.saved
        return out * (g - (g * out).sum(axis=self.axis, keepdims=True))

    def to_onnx(self, g, inputs, output):
        _softmax_to_onnx(g, "Softmax", self.axis, inputs, output)


def _softmax_to_onnx(g, op_type: str, axis: int | None, inputs, output) -> None:
    if axis is None:
        raise g.fail(op_type, "a 0-d input has no axis to normalise over")
    g.node(op_type, inputs, output, axis=int(axis))
