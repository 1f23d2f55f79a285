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


def _selections_first(index: Any) -> tuple | None:
    """torch's order for an index that mixes integers with index arrays: the integers
    select first, then the rest indexes what is left. NumPy counts the integers as
    index arrays instead, which moves the result's dims: for a (1, 2, 1) ``x``,
    ``x[0, :, [0]]`` is (2, 1) in torch but (1, 2) in NumPy. Returns (selections, rest),
    or None when NumPy's single step gives torch's result already."""
    parts = index if isinstance(index, tuple) else (index,)
    if not any(_is_int(p) for p in parts) or not any(
            isinstance(p, xp.ndarray) and p.ndim > 0 for p in parts):
        return None
    selections, rest = [], []
    for p in parts:
        if _is_int(p):
            selections.append(p)
        elif p is None:
            rest.append(p)
        else:
            consumed = p.ndim if isinstance(p, xp.ndarray) and p.dtype == bool else 1
            selections += [p] if p is Ellipsis else [slice(None)] * consumed
            rest.append(p)
    return tuple(selections), tuple(rest)


@register("getitem", "__getitem__")
class GetItem(Function):
    def forward(self, a, index):
        index = _plain_index(index)
        self.index, self.in_shape = index, a.shape
        self.steps = _selections_first(index)
        if self.steps is None:
            return a[index]
        selections, rest = self.steps
        return a[selections][rest]

    def backward(self, g):  # put the gradient back where it was read from
        grad = xp.zeros(self.in_shape, g.dtype)
        target, index = grad, self.index
        if self.steps is not None:  # the selections are a view: write through it
            target, index = grad[self.steps[0]], self.steps[1]
        if _has_int_array(index):
            xp.add.at(target, index, g)  # repeated indices accumulate
        else:
            target[index] = g
        return grad

    def to_onnx(self, g, inputs, output):
        _index_to_onnx(g, inputs[0], self.index, self.in_shape, output)


def _is_int(part: Any) -> bool:
    return isinstance(part, (int, xp.integer)) and not isinstance(part, bool) or (
        isinstance(part, xp.ndarray) and part.ndim == 0 and part.dtype.kind in "iu")


def _expand_index(index: Any, ndim: int, g: Any) -> list:
    """The index as one entry per input dim (plus Nones), Ellipsis spelled out."""
    parts = list(index) if isinstance(index, tuple) else [index]
    arrays = [p for p in parts if isinstance(p, xp.ndarray) and not _is_int(p)]
    if any(a.dtype.kind not in "iu" for a in arrays):
        raise g.fail("GetItem", "boolean-mask indexing has a data-dependent shape")
    if len(arrays) > 1 or (arrays and any(_is_int(p) for p in parts)):
        raise g.fail("GetItem", "only one integer index array (with slices) is supported")
    used = sum(1 for p in parts if p is not None and p is not Ellipsis)
    at = next((i for i, p in enumerate(parts) if p is Ellipsis), len(parts))
    fill = [slice(None)] * (ndim - used)
    return parts[:at] + fill + [p for p in parts[at + 1:]]


def _index_to_onnx(g: Any, x: str, index: Any, shape: tuple, output: str) -> None:
    """Basic indexing as Slice, then Gather per integer (or index array), then Unsqueeze."""
    parts = _expand_index(index, len(shape), g)
    dims = [p for p in parts if p is not None]  # one per input dim
    slices = [(axis, *p.indices(shape[axis])) for axis, p in enumerate(dims)
              if isinstance(p, slice) and p.indices(shape[axis]) != (0, shape[axis], 1)]
    if slices:
        axes, starts, stops, steps = zip(*slices)
        stops = [-2 ** 63 if step < 0 and stop < 0 else stop for stop, step in zip(stops, steps)]
        x = g.node("Slice", [x, g.ints(starts), g.ints(stops), g.ints(axes), g.ints(steps)])
    for axis in reversed(range(len(dims))):  # from the back, so earlier axes keep their place
        if not isinstance(dims[axis], slice):
            x = g.node("Gather", [x, g.const(dims[axis], "int64")], axis=axis)
    new_axes, position = [], 0
    for p in parts:
        if p is None:
            new_axes.append(position)
        position += 0 if _is_int(p) else (p.ndim if isinstance(p, xp.ndarray) else 1)
    if new_axes:
        x = g.axes_node("Unsqueeze", [x], g.fresh("Unsqueeze"), new_axes, 13)
    g.node("Identity", [x], output)


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

    def to_onnx(self, g, inputs, output):
        index = g.args(self)["index"]
        index = g.const(getattr(index, "array", index), "int64")
        g.node("GatherElements", [inputs[0], index], output, axis=self.dim)


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

    def to_onnx(self, g, inputs, output):
        if g.opset < 16:
            raise g.fail("ScatterElements", "reduction='add' needs opset 16 or later")
        index = g.args(self)["index"]
        index = xp.asarray(getattr(index, "array", index), dtype=xp.int64)
        src = inputs[1]
        if tuple(self.src_shape) != index.shape:  # only src's leading block is scattered
            src = g.node("Slice", [src, g.ints([0] * index.ndim), g.ints(index.shape)])
        g.node("ScatterElements", [inputs[0], g.const(index), src], output, axis=self.dim,
               reduction="add")


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
        index = a if a.dtype == dtypes.int64 else a.astype(dtypes.int64)
        top = largest_unsigned(index) if a.size else -1
        if num_classes == -1:  # as many classes as the largest value needs
            num_classes = top + 1 if top < 2**63 else 0
        n = max(num_classes, 0)
        if top >= n:
            raise ValueError(_one_hot_range_error(a, num_classes))
        if n <= _IDENTITY_MAX:  # rows of a cached identity matrix (take: a fresh array)
            return _identity(n).take(index, axis=0)
        out = xp.zeros(a.shape + (n,), dtypes.int64)
        out.reshape(a.size, n)[xp.arange(a.size), index.reshape(-1)] = 1
        return out


def largest_unsigned(index: Any) -> int:
    """The largest of int64 ``index`` seen as unsigned, so that one maximum checks both
    bounds (negatives are then the largest). A batch of labels takes Python's ``max``: a
    NumPy reduction costs ~2 µs before its first element, 4x ``max`` over 64 numbers."""
    unsigned = index.view(xp.uint64)
    if unsigned.size <= 64:
        return max(unsigned.ravel().tolist())
    return int(xp.maximum.reduce(unsigned, axis=None))


def _identity(n: int) -> Any:
    """The n x n int64 identity matrix, made once per size and never written to."""
    eye = _IDENTITIES.get(n)
    if eye is None:
        eye = _IDENTITIES[n] = xp.eye(n, dtype=dtypes.int64)
        eye.flags.writeable = False
    return eye


_IDENTITIES: dict[int, Any] = {}
_IDENTITY_MAX = 256  # 512 KiB; wider one-hots (vocabularies) write one 1 per row instead


def _one_hot_range_error(a: Any, num_classes: int) -> str:
    low, high = int(a.min()), int(a.max())
    if low < 0:
        return f"one_hot: class values must be non-negative, got {low}"
    return f"one_hot: class value {high} is out of range for {num_classes} classes"
