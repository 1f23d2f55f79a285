"""Indexing: ``x[...]``, gather, scatter_add, index_select, masked_fill, one_hot.

Where an index can pick the same element twice (integer arrays), the backward
scatter-adds, so repeated indices get the sum of their gradients.
"""

from __future__ import annotations

from typing import Any

from ember import dtypes
from ember.autograd import FUNCTIONS, Function, register, register_composed
from ember.backend import xp
from ember.tensor import Tensor, _plain_index


def _has_int_array(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, xp.ndarray) and p.dtype.kind in "iu" for p in parts)


@register("getitem", "__getitem__")
class GetItem(Function):
    def forward(self, a, index):
        index = _plain_index(index)
        self.index, self.in_shape = index, a.shape
        return a[index]

    def backward(self, g):  # put the gradient back where it was read from
        grad = xp.zeros(self.in_shape, g.dtype)
        if _has_int_array(self.index):
            xp.add.at(grad, self.index, g)  # repeated indices accumulate
        else:
            grad[self.index] = g
        return grad


def _along(index: Any, dim: int) -> tuple:
    """Full coordinates for ``index`` laid along ``dim`` (torch's gather/scatter rule)."""
    grid = list(xp.indices(index.shape, sparse=True))
    grid[dim] = index
    return tuple(grid)


def _check_index(index: Any, size: int, op: str) -> Any:
    index = xp.asarray(index)
    if index.dtype.kind not in "iu":
        raise TypeError(f"{op}: index must be an integer tensor, got {index.dtype}")
    if index.size and (index.min() < -size or index.max() >= size):
        raise IndexError(f"{op}: index out of range for a dim of size {size} "
                         f"(got values in [{index.min()}, {index.max()}])")
    return index


@register("gather")
class Gather(Function):
    """``out[i][j] = x[index[i][j]][j]`` for dim 0, and so on."""

    def forward(self, a, dim, index):
        index = _plain_index(index)
        if index.ndim != a.ndim:
            raise ValueError(f"index has {index.ndim} dims but the input has {a.ndim}")
        self.dim = dim % max(a.ndim, 1)
        index = _check_index(index, a.shape[self.dim] if a.ndim else 1, "gather")
        self.coords, self.in_shape = _along(index, self.dim), a.shape
        return a[self.coords]

    def backward(self, g):  # scatter-add the gradient back to the gathered positions
        grad = xp.zeros(self.in_shape, g.dtype)
        xp.add.at(grad, self.coords, g)
        return grad


@register("scatter_add", method=False)
class ScatterAdd(Function):
    """``out = x.copy(); out[index[i][j]][j] += src[i][j]`` for dim 0."""

    arity = 2

    def forward(self, a, src, dim, index):
        index = _plain_index(index)
        self.dim = dim % max(a.ndim, 1)
        index = _check_index(index, a.shape[self.dim], "scatter_add")
        self.coords = _along(index, self.dim)
        self.src_shape, self.index_shape = src.shape, index.shape
        out = a.copy()
        xp.add.at(out, self.coords, src[tuple(slice(0, n) for n in index.shape)])
        return out

    def backward(self, g):  # x passes g through; src gets g read at its target positions
        gsrc = None
        if self.needs_input_grad[1]:
            gsrc = xp.zeros(self.src_shape, g.dtype)
            gsrc[tuple(slice(0, n) for n in self.index_shape)] = g[self.coords]
        return g, gsrc


def scatter_add(x: Tensor, dim: int, index: Any, src: Tensor) -> Tensor:
    """torch's argument order: ``x.scatter_add(dim, index, src)``."""
    return ScatterAdd.apply(x, src, dim, index)


FUNCTIONS["scatter_add"] = scatter_add
Tensor.scatter_add = scatter_add


@register_composed("index_select")
def index_select(x: Tensor, dim: int, index: Any) -> Tensor:
    """The slices of ``x`` along ``dim`` named by a 1-D integer ``index``."""
    index = _plain_index(index)
    d = dim % max(x.ndim, 1)
    _check_index(index, x.shape[d], "index_select")
    return x[(slice(None),) * d + (xp.asarray(index).reshape(-1),)]


@register_composed("masked_fill")
def masked_fill(x: Tensor, mask: Any, value: Any) -> Tensor:
    """``value`` where ``mask`` is True, else ``x``."""
    from ember.ops.arithmetic import where
    return where(mask, value, x)


@register("one_hot", method=False)
class OneHot(Function):
    """Class indices to int64 one-hot rows (no gradient)."""

    differentiable = False

    def forward(self, a, num_classes=-1):
        if a.dtype.kind not in "iu":
            raise TypeError(f"one_hot: expected an integer tensor, got {a.dtype}")
        if a.size and a.min() < 0:
            raise ValueError(f"one_hot: class values must be non-negative, got {a.min()}")
        n = int(a.max()) + 1 if num_classes == -1 and a.size else num_classes
        if a.size and a.max() >= n:
            raise ValueError(f"one_hot: class value {a.max()} is out of range for {n} classes")
        return (a[..., None] == xp.arange(n)).astype(dtypes.int64)
