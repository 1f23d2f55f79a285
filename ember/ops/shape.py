"""Shape ops: reshape, permute, expand, repeat, cat, pad, flip, roll, tril/triu.

Their backward moves the gradient back into the input's layout; composed
forms (flatten, squeeze, transpose, stack, split...) need no backward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ember.autograd import FUNCTIONS, Function, register, register_composed, unbroadcast
from ember.backend import xp
from ember.tensor import Tensor


def shape_args(args: Sequence[Any]) -> tuple:
    """Accept ``f(2, 3)`` and ``f((2, 3))`` alike, as torch does."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = args[0]
    return tuple(map(int, args))


def _dim(d: int, ndim: int) -> int:
    n = ndim or 1  # a 0-d tensor accepts dims -1 and 0, as in torch
    if not -n <= d < n:
        raise IndexError(f"dim {d} is out of range for a tensor with {ndim} dims")
    return d % n


@register("reshape", "view")
class Reshape(Function):
    def forward(self, a, *shape):
        self.in_shape = a.shape
        return a.reshape(shape_args(shape))

    def backward(self, g):  # the same elements, in the input's shape
        return g.reshape(self.in_shape)

    def to_onnx(self, g, inputs, output):  # Flatten, or a Reshape that follows the batch size
        g.reshape(inputs[0], g.shape(output), output)


@register("permute")
class Permute(Function):
    def forward(self, a, *dims):
        dims = shape_args(dims)
        if sorted(d % max(a.ndim, 1) for d in dims) != list(range(a.ndim)):
            raise ValueError(f"dims {dims} are not a permutation of {a.ndim} dims")
        self.dims = dims
        return a.transpose(dims)

    def backward(self, g):  # undo the permutation
        return g.transpose(xp.argsort([d % g.ndim for d in self.dims]))

    def to_onnx(self, g, inputs, output):
        ndim = len(g.shape(inputs[0]))
        g.node("Transpose", inputs, output, perm=[d % max(ndim, 1) for d in self.dims])


@register("expand")
class Expand(Function):
    """Broadcast to a larger shape without copying; -1 keeps a dim's size."""

    def forward(self, a, *sizes):
        sizes = shape_args(sizes)
        lead = len(sizes) - a.ndim
        if lead < 0:
            raise ValueError(f"cannot expand shape {a.shape} to {sizes}: too few dims")
        target = tuple(a.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes))
        self.in_shape = a.shape
        return xp.broadcast_to(a, target)

    def backward(self, g):  # copies of one element sum their gradients
        return unbroadcast(g, self.in_shape)

    def to_onnx(self, g, inputs, output):
        target = list(g.shape(output))
        if g.is_batched(inputs[0]):  # Expand broadcasts both ways: 1 keeps the input's batch
            target[len(target) - len(self.in_shape)] = 1
        g.node("Expand", [inputs[0], g.ints(target)], output)


@register("repeat")
class Repeat(Function):
    """Tile the tensor ``repeats[i]`` times along dim i (torch's ``repeat``)."""

    def forward(self, a, *repeats):
        repeats = shape_args(repeats)
        if len(repeats) < a.ndim:
            raise ValueError(f"repeat needs at least {a.ndim} repeat counts, got {len(repeats)}")
        self.repeats = repeats
        self.in_shape = a.shape
        return xp.tile(a, repeats)

    def backward(self, g):  # view as (r0, s0, r1, s1, ...) and sum over the copies
        padded = (1,) * (len(self.repeats) - len(self.in_shape)) + self.in_shape
        split = [n for pair in zip(self.repeats, padded) for n in pair]
        summed = g.reshape(split).sum(axis=tuple(range(0, len(split), 2)))
        return summed.reshape(self.in_shape)

    def to_onnx(self, g, inputs, output):
        x, extra = inputs[0], len(self.repeats) - len(self.in_shape)
        if extra:  # torch's repeat may add leading dims; Tile may not
            x = g.axes_node("Unsqueeze", [x], g.fresh("Unsqueeze"), range(extra), 13)
        g.node("Tile", [x, g.ints(self.repeats)], output)


@register("cat", "concat", method=False)
class Cat(Function):
    arity = None

    def forward(self, *arrays, dim=0):
        if not arrays:
            raise ValueError("expected a non-empty list of tensors")
        self.axis = _dim(dim, arrays[0].ndim)
        self.sizes = [a.shape[self.axis] for a in arrays]
        return xp.concatenate(arrays, axis=self.axis)

    def backward(self, g):  # each input gets its own slice of the gradient
        cuts = xp.cumsum(self.sizes)[:-1]
        return tuple(xp.split(g, cuts, axis=self.axis))

    def to_onnx(self, g, inputs, output):
        g.elementwise("Concat", inputs, output, axis=self.axis)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors along an existing dim.

    >>> ember.cat([ember.ones(2), ember.zeros(1)]).tolist()
    [1.0, 1.0, 0.0]
    """
    return Cat.apply(*tensors, dim=dim)


FUNCTIONS["cat"] = FUNCTIONS["concat"] = cat


@register_composed("stack", method=False)
def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors along a new dim."""
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack: all tensors must have the same shape, got {sorted(shapes)}")
    return cat([t.unsqueeze(dim) for t in tensors], dim)


@register("pad", method=False)
class Pad(Function):
    """Constant padding; ``pad`` lists (left, right) pairs from the last dim back."""

    def forward(self, a, pad, mode="constant", value=0.0):
        if mode != "constant":
            raise ValueError(f"only mode='constant' is supported, got {mode!r}")
        if len(pad) % 2 or len(pad) // 2 > a.ndim:
            raise ValueError(f"pad {tuple(pad)} needs an even length of at most 2*{a.ndim}")
        if any(p < 0 for p in pad):
            raise ValueError(f"negative padding {tuple(pad)} is not supported")
        widths = [(0, 0)] * a.ndim
        for i in range(len(pad) // 2):
            widths[a.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
        self.crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, a.shape))
        return xp.pad(a, widths, constant_values=value)

    def backward(self, g):  # the gradient of the unpadded part
        return g[self.crop]

    def to_onnx(self, g, inputs, output):
        args = g.args(self)
        pad, ndim = list(args["pad"]), len(self.crop)
        widths = [(0, 0)] * (ndim - len(pad) // 2) + \
            [(pad[2 * i], pad[2 * i + 1]) for i in reversed(range(len(pad) // 2))]
        pads = [lo for lo, _ in widths] + [hi for _, hi in widths]
        g.node("Pad", [inputs[0], g.ints(pads), g.scalar(args["value"], output)], output)


@register("flip")
class Flip(Function):
    def forward(self, a, *dims):
        self.dims = shape_args(dims)
        return xp.flip(a, self.dims)

    def backward(self, g):
        return xp.flip(g, self.dims)

    def to_onnx(self, g, inputs, output):  # a step -1 Slice from the end past the start
        k = len(self.dims)
        g.node("Slice", [inputs[0], g.ints([-1] * k), g.ints([-2 ** 63] * k),
                         g.ints(self.dims), g.ints([-1] * k)], output)


@register("roll")
class Roll(Function):
    def forward(self, a, shifts, dims=None):
        self.shifts, self.dims = shifts, dims
        return xp.roll(a, shifts, dims)

    def backward(self, g):  # roll back the other way
        neg = tuple(-s for s in self.shifts) if isinstance(self.shifts, tuple) else -self.shifts
        return xp.roll(g, neg, self.dims)

    def to_onnx(self, g, inputs, output):  # per dim: the last `shift` elements, then the rest
        x, shape = inputs[0], g.shape(inputs[0])
        if self.dims is None:
            if g.is_batched(x):
                raise g.fail("Roll", "rolling the flattened tensor mixes the batch dim")
            flat = g.node("Reshape", [x, g.ints([-1])])
            rolled = _roll_to_onnx(g, flat, int(self.shifts), math.prod(shape))
            g.node("Reshape", [rolled, g.ints(shape)], output)
            return
        shifts = self.shifts if isinstance(self.shifts, (tuple, list)) else (self.shifts,)
        dims = self.dims if isinstance(self.dims, (tuple, list)) else (self.dims,)
        for shift, dim in zip(shifts, dims):
            x = _roll_to_onnx(g, x, int(shift), shape[dim], dim % len(shape))
        g.node("Identity", [x], output)


def _trilu_to_onnx(g, inputs, output, k: int, upper: int) -> None:
    if g.opset < 14:
        raise g.fail("Trilu", "tril/triu need opset 14 or later")
    g.node("Trilu", [inputs[0], g.const(k, "int64")], output, upper=upper)


def _roll_to_onnx(g, x: str, shift: int, size: int, axis: int = 0) -> str:
    cut = size - shift % size if size else 0
    if cut in (0, size):
        return x
    head = g.node("Slice", [x, g.ints([cut]), g.ints([size]), g.ints([axis])])
    tail = g.node("Slice", [x, g.ints([0]), g.ints([cut]), g.ints([axis])])
    return g.node("Concat", [head, tail], axis=axis)


@register("tril")
class Tril(Function):
    def forward(self, a, diagonal=0):
        self.k = diagonal
        return xp.tril(a, diagonal)

    def backward(self, g):
        return xp.tril(g, self.k)

    def to_onnx(self, g, inputs, output):
        _trilu_to_onnx(g, inputs, output, self.k, upper=0)


@register("triu")
class Triu(Function):
    def forward(self, a, diagonal=0):
        self.k = diagonal
        return xp.triu(a, diagonal)

    def backward(self, g):
        return xp.triu(g, self.k)

    def to_onnx(self, g, inputs, output):
        _trilu_to_onnx(g, inputs, output, self.k, upper=1)


@register("clone")
class Clone(Function):
    def forward(self, a):
        return a.copy()

    def backward(self, g):
        return g

    def to_onnx(self, g, inputs, output):
        g.node("Identity", inputs, output)


# ---------------------------------------------------------------- composed
@register_composed("flatten")
def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dims ``start_dim..end_dim`` into one."""
    shape = x.array.shape  # read once: this runs in every MLP's forward
    ndim = len(shape)
    if start_dim == 1 and end_dim == -1 and ndim > 2:  # nn.Flatten of a batch: no checks left
        return x.reshape(shape[0], math.prod(shape[1:]))
    start, end = _dim(start_dim, ndim), _dim(end_dim, ndim)
    if ndim == 0:
        return x.reshape(1)
    if start == end:  # nothing to merge: the input itself, as torch returns it
        return x
    return x.reshape(shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])


@register_composed("unflatten")
def unflatten(x: Tensor, dim: int, sizes: Sequence[int]) -> Tensor:
    """Split dim ``dim`` into ``sizes``."""
    d = _dim(dim, x.ndim)
    return x.reshape(x.shape[:d] + tuple(sizes) + x.shape[d + 1:])


@register_composed("squeeze")
def squeeze(x: Tensor, dim: Any = None) -> Tensor:
    """Drop size-1 dims (all of them, or those in ``dim`` that have size 1)."""
    if dim is None:
        dims = set(range(x.ndim))
    else:
        dims = {_dim(d, x.ndim) for d in ((dim,) if isinstance(dim, int) else dim)}
    return x.reshape(tuple(n for i, n in enumerate(x.shape) if not (i in dims and n == 1)))


@register_composed("unsqueeze")
def unsqueeze(x: Tensor, dim: int) -> Tensor:
    """Insert a size-1 dim at ``dim``."""
    if not -x.ndim - 1 <= dim <= x.ndim:
        raise IndexError(f"unsqueeze: dim {dim} is out of range for a tensor with {x.ndim} dims")
    d = dim % (x.ndim + 1)
    return x.reshape(x.shape[:d] + (1,) + x.shape[d:])


@register_composed("transpose", "swapaxes")
def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    """Swap two dims."""
    dims = list(range(x.ndim))
    a, b = _dim(dim0, x.ndim), _dim(dim1, x.ndim)
    dims[a], dims[b] = dims[b], dims[a]
    return x.permute(*dims) if x.ndim else x


@register_composed("t")
def t(x: Tensor) -> Tensor:
    """The transpose of a matrix (``transpose(0, 1)``); 0-D and 1-D tensors as they are."""
    if x.ndim > 2:
        raise ValueError(f"t: expects a tensor with <= 2 dims, but it has {x.ndim} "
                         f"(shape {x.shape}); use transpose(dim0, dim1) or .mT")
    return transpose(x, 0, 1) if x.ndim == 2 else x


Tensor.T = property(lambda self: self.permute(*reversed(range(self.ndim))))
Tensor.mT = property(lambda self: transpose(self, -2, -1), doc="The last two dims swapped.")


@register_composed("broadcast_to")
def broadcast_to(x: Tensor, shape: Sequence[int]) -> Tensor:
    """Broadcast to ``shape`` (an expand with NumPy's rule)."""
    try:
        target = xp.broadcast_shapes(tuple(x.shape), tuple(shape))
    except ValueError:
        raise ValueError(f"broadcast_to: shape {x.shape} cannot be broadcast to "
                         f"{tuple(shape)}") from None
    if target != tuple(shape):
        raise ValueError(f"broadcast_to: shape {x.shape} cannot be broadcast to {tuple(shape)}")
    return x.expand(*shape)


@register_composed("tile")
def tile(x: Tensor, *reps: Any) -> Tensor:
    """Like ``repeat``, but fewer reps than dims are padded with leading 1s."""
    reps = shape_args(reps)
    return x.repeat(*((1,) * (x.ndim - len(reps)) + reps))


@register_composed("split")
def split(x: Tensor, split_size_or_sections: Any, dim: int = 0) -> tuple:
    """Pieces of ``split_size`` along ``dim`` (the last may be smaller), or of the given sizes."""
    d = _dim(dim, x.ndim)
    n = x.shape[d]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0:
            raise ValueError(f"split: split_size must be positive, got {step}")
        sizes = [min(step, n - i) for i in range(0, n, step)] or [0]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise ValueError(f"split: sections {sizes} do not sum to dim size {n}")
    pieces, start = [], 0
    for size in sizes:
        pieces.append(x[(slice(None),) * d + (slice(start, start + size),)])
        start += size
    return tuple(pieces)


@register_composed("chunk")
def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple:
    """Split into ``chunks`` pieces of ``ceil(n / chunks)`` (the last may be smaller)."""
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be positive, got {chunks}")
    n = x.shape[_dim(dim, x.ndim)]
    return split(x, max(math.ceil(n / chunks), 1), dim)
