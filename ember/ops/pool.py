"""Pooling: max, average, adaptive average/max, and max-unpooling, forward and backward.

A k x k pool is a loop over the k*k kernel offsets; each offset is one strided
view of the (padded) input covering every window at once, so the work is a few
whole-array operations per offset and no Python loop touches samples or pixels.
Max pooling remembers which offset won (a uint8 array); its backward sends each
gradient to that offset. When windows do not overlap (the common 2x2, stride 2
case) the input is sliced in place, with no padded copy, and the backward
writes each offset's share instead of accumulating it (into an uninitialised
array when the windows tile the input). These slices are exactly the views a
reshape to (N, C, H/2, 2, W/2, 2) gives; NumPy's reductions over those small
strided axes measured ~20x slower than the per-offset loop, so there is no
separate reshape-and-reduce path. Each strided tap is first copied to a
contiguous buffer: comparisons on stride-2 views run ~10x slower than on
contiguous memory.

Adaptive pools are separable: they reduce along the width, then along the
height, looping over output positions only (out_h + out_w iterations).
"""

from __future__ import annotations

import functools
from typing import Any

from ember import parallel
from ember.autograd import FUNCTIONS, Function, register
from ember.backend import offset_empty, strided_friendly, xp
from ember.blas import matmul
from ember.ops import kernels
from ember.ops.conv import Window, copy, fill_border, interior, pair
from ember.tensor import Tensor

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
           "max_unpool2d", "pool_window"]

FAST_PATHS = True  # tests switch this off to check the in-place paths against the general ones


# ---------------------------------------------------------------- geometry
def pool_size(size: int, kernel: int, stride: int, pad: int, dilation: int,
              ceil_mode: bool) -> int:
    """torch's pooling_output_shape: in ceil mode the last window must start inside
    the input or the left padding."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_window(op: str, shape: tuple, kernel_size: Any, stride: Any, padding: Any,
                dilation: Any, ceil_mode: bool) -> Window:
    """The Window of a pool; the bottom/right padding grows to hold ceil-mode windows."""
    kernel = pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None or (isinstance(stride, (tuple, list)) and not stride) \
        else pair(stride, "stride", op)
    pads, dilation = pair(padding, "padding", op), pair(dilation, "dilation", op)
    if any(k <= 0 for k in kernel) or any(s <= 0 for s in stride):
        raise ValueError(f"{op}: kernel_size and stride must be positive, got "
                         f"kernel_size={kernel}, stride={stride}")
    if any(d <= 0 for d in dilation):
        raise ValueError(f"{op}: dilation must be positive, got dilation={dilation}")
    if any(p < 0 or p > k // 2 for p, k in zip(pads, kernel)):
        raise ValueError(f"{op}: pad should be at most half of kernel size, but got "
                         f"padding={pads} and kernel_size={kernel}")
    n, c, h, w = shape
    out = [pool_size(size, k, s, p, d, ceil_mode)
           for size, k, s, p, d in zip((h, w), kernel, stride, pads, dilation)]
    if any(o < 1 for o in out):
        raise ValueError(f"{op}: given input size ({c}x{h}x{w}), the calculated output size "
                         f"({c}x{out[0]}x{out[1]}) is too small")
    reach = [(o - 1) * s + d * (k - 1) + 1 for o, s, d, k in zip(out, stride, dilation, kernel)]
    bottom = max(pads[0], reach[0] - h - pads[0])
    right = max(pads[1], reach[1] - w - pads[1])
    return Window(n, c, h, w, *kernel, *stride, *dilation, pads[0], bottom, pads[1], right,
                  *out)


def disjoint(win: Window) -> bool:
    """Windows never overlap, so every input element is read by at most one offset."""
    return win.sh >= win.dh * (win.kh - 1) + 1 and win.sw >= win.dw * (win.kw - 1) + 1


def tiles(win: Window) -> bool:
    """The windows cover the padded input exactly once (dense kernels, stride = kernel)."""
    return all(stride == kernel and (dilation == 1 or kernel == 1) and out * stride == size
               for stride, kernel, dilation, out, size in
               ((win.sh, win.kh, win.dh, win.oh, win.hp), (win.sw, win.kw, win.dw, win.ow, win.wp)))


def padded_image(x: Any, win: Window, fill: float) -> Any:
    """x itself when every window lies inside it, else a padded copy filled with ``fill``;
    either way placed where its strided offset views run at full speed (x is copied when
    it is not: ``strided_friendly``)."""
    if not win.padded and FAST_PATHS:
        return strided_friendly(x)
    img = offset_empty((win.n, win.c, win.hp, win.wp), x.dtype)
    fill_border(img, win, fill)
    copy(img[:, :, win.top:win.top + win.h, win.left:win.left + win.w], x)
    return img


def unpadded(img: Any, win: Window) -> Any:
    return interior(img, win) if win.padded else img


def offsets(win: Window) -> list:
    return [(i, j) for i in range(win.kh) for j in range(win.kw)]


def offset_view(img: Any, win: Window, i: int, j: int) -> Any:
    """The (n, c, oh, ow) view of kernel tap (i, j) of every window."""
    r, c = i * win.dh, j * win.dw
    return img[:, :, r:r + (win.oh - 1) * win.sh + 1:win.sh, c:c + (win.ow - 1) * win.sw + 1:win.sw]


def spread(g: Any, win: Window, which: Any = None) -> Any:
    """Adjoint of reading every offset: ``g`` goes back to each offset's view (only where
    ``which`` names that offset, for max pooling). Disjoint windows assign, others add.

    The masked share is formed in a contiguous buffer first: arithmetic on the strided
    offset views is several times slower than one strided copy. Big batches are split
    between threads by samples (ember.parallel)."""
    if which is not None and compiled_2x2(win, g.dtype):
        return unpadded(kernels.max_pool_2x2_grad(g, which, win), win)
    if which is not None and kernels.enabled(g.dtype):
        img = xp.zeros((win.n, win.c, win.hp, win.wp), g.dtype)
        kernels.max_pool_grad_into(g, which, img, win)
        return unpadded(img, win)
    assign = FAST_PATHS and disjoint(win)
    img = offset_empty((win.n, win.c, win.hp, win.wp), g.dtype)  # written through views
    parallel.rows(functools.partial(_spread_into, win=win, assign=assign), img, g, which)
    return unpadded(img, win)


def _spread_into(img: Any, g: Any, which: Any, win: Window, assign: bool) -> None:
    """``spread`` for a block of samples, into ``img``."""
    if not (assign and tiles(win)):  # unless every element is written, start from zero
        img[...] = 0
    share = g if which is None else xp.empty_like(g)
    for o, (i, j) in enumerate(offsets(win)):
        view = offset_view(img, win, i, j)
        if which is not None:
            xp.equal(which, o, out=share, casting="unsafe")
            share *= g
        if assign:
            view[...] = share
        else:
            view += share


# ---------------------------------------------------------------- max pool
def compiled_2x2(win: Window, dtype: Any) -> bool:
    """The common 2x2, stride-2 max pool runs as a compiled kernel when Numba is there
    (ember/ops/kernels.py): 4-6x faster than the per-offset passes."""
    return kernels.enabled(dtype) and (win.kh, win.kw, win.sh, win.sw, win.dh, win.dw) == \
        (2, 2, 2, 2, 1, 1)


def max_offsets(img: Any, win: Window) -> tuple:
    """Window maxima and the first offset (row-major) that holds each, as torch picks it;
    a window with a NaN gives NaN and its last NaN's offset.

    Offsets are scanned in increasing order, so the winning offset is the largest one
    that beat the running maximum: ``which = max(which, o * better)``, two cheap
    integer passes instead of a masked copy. Big batches are split between threads."""
    if compiled_2x2(win, img.dtype):
        return kernels.max_pool_2x2(img, win)
    shape = (win.n, win.c, win.oh, win.ow)
    best = xp.empty(shape, img.dtype)
    which = xp.empty(shape, xp.uint8 if win.kh * win.kw < 256 else xp.int32)
    parallel.rows(functools.partial(_max_offsets_into, win=win), best, which, img)
    return best, which


def _max_offsets_into(best: Any, which: Any, img: Any, win: Window) -> None:
    """``max_offsets`` for a block of samples, into ``best`` and ``which``."""
    taps, index_type = offsets(win), which.dtype.type
    xp.copyto(best, offset_view(img, win, 0, 0))
    which[...] = 0
    better = xp.empty(best.shape, bool)
    step = xp.empty(best.shape, index_type)
    tap = xp.empty_like(best)  # contiguous copy: comparisons on strided views are slow
    for o, (i, j) in enumerate(taps[1:], 1):
        xp.copyto(tap, offset_view(img, win, i, j))
        xp.greater(tap, best, out=better)
        xp.maximum(best, tap, out=best)  # propagates NaN, unlike the strict comparison
        xp.multiply(better, index_type(o), out=step)
        xp.maximum(which, step, out=which)
    if xp.isnan(best).any():
        for o, (i, j) in enumerate(taps):
            xp.copyto(which, o, where=xp.isnan(offset_view(img, win, i, j)))


def flat_indices(which: Any, win: Window) -> Any:
    """Offsets of the maxima as torch's indices: flat positions over each H*W plane."""
    i, j = xp.divmod(which.astype(xp.int64), win.kw)
    rows = (xp.arange(win.oh) * win.sh - win.top)[:, None] + i * win.dh
    cols = xp.arange(win.ow) * win.sw - win.left + j * win.dw
    return rows * win.w + cols


@register("max_pool2d", method=False)
class MaxPool2d(Function):
    """Max over each window; the gradient goes to the (first) maximum of the window."""

    def forward(self, x, window, indices_out=None):
        self.window = window
        # the compiled pool reads x in place wherever it lies (no strided_friendly copy)
        plain = not window.padded and compiled_2x2(window, x.dtype)
        best, which = max_offsets(x if plain else padded_image(x, window, -xp.inf), window)
        self.save(which)
        if indices_out is not None:
            indices_out.append(flat_indices(which, window))
        return best

    def backward(self, g):
        (which,) = self.saved
        return spread(g, self.window, which)

    def to_onnx(self, g, inputs, output):  # explicit pads hold ceil-mode windows: ceil_mode 0
        w = self.window
        g.node("MaxPool", inputs, output, kernel_shape=[w.kh, w.kw], strides=[w.sh, w.sw],
               dilations=[w.dh, w.dw], pads=[w.top, w.left, w.bottom, w.right])


def _batched(x: Tensor, op: str) -> tuple:
    """(N, C, H, W) input, or an unbatched (C, H, W) one given a batch of 1."""
    if x.ndim not in (3, 4):
        raise ValueError(f"{op}: expected 3-D (unbatched) or 4-D (batched) input, but got "
                         f"input of shape {tuple(x.shape)}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating input, got {x.dtype}")
    return (x.unsqueeze(0), True) if x.ndim == 3 else (x, False)


def _unbatched(out: Any, squeeze: bool) -> Any:
    if not squeeze:
        return out
    if isinstance(out, tuple):
        return tuple(o.squeeze(0) for o in out)
    return out.squeeze(0)


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None,  # noqa: A002
               padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    """2-D max pooling over an (N, C, H, W) or (C, H, W) input, as torch's.

    With ``return_indices`` also returns each maximum's flat index in its H*W plane.

    >>> F.max_pool2d(ember.arange(16.0).reshape(1, 1, 4, 4), 2)
    tensor([[[[ 5.,  7.],
              [13., 15.]]]])
    """
    x, squeeze = _batched(input, "max_pool2d")
    win = pool_window("max_pool2d", tuple(x.shape), kernel_size, stride, padding, dilation,
                      ceil_mode)
    sink = [] if return_indices else None
    out = MaxPool2d.apply(x, win, sink)
    if return_indices:
        return _unbatched((out, Tensor._make(sink[0], False, None)), squeeze)
    return _unbatched(out, squeeze)


FUNCTIONS["max_pool2d"] = max_pool2d


# ---------------------------------------------------------------- avg pool
def avg_divisors(size: int, out: int, kernel: int, stride: int, pad: int,
                 count_include_pad: bool) -> Any:
    """torch's per-axis window size: clipped to the padded input, or to the input."""
    start = xp.arange(out) * stride - pad
    end = xp.minimum(start + kernel, size + pad)
    if count_include_pad:
        return end - start
    return xp.minimum(end, size) - xp.maximum(start, 0)


def avg_scale(win: Window, pads: tuple, count_include_pad: bool, divisor_override: Any,
              dtype: Any) -> Any:
    """1/divisor per output position: a scalar when all are equal, else an (oh, ow) grid."""
    if divisor_override is not None:
        return dtype.type(1.0 / divisor_override)
    rows = avg_divisors(win.h, win.oh, win.kh, win.sh, pads[0], count_include_pad)
    cols = avg_divisors(win.w, win.ow, win.kw, win.sw, pads[1], count_include_pad)
    grid = rows[:, None] * cols
    if (grid == grid.flat[0]).all():
        return dtype.type(1.0 / grid.flat[0])
    with xp.errstate(divide="ignore"):
        scale = xp.where(grid > 0, 1.0 / xp.maximum(grid, 1), 0.0)
    return scale.astype(dtype)


@register("avg_pool2d", method=False)
class AvgPool2d(Function):
    """Mean over each window (sum of the k*k offset views, times 1/divisor)."""

    def forward(self, x, window, scale):
        self.window, self.scale = window, scale
        img = padded_image(x, window, 0.0)
        taps = offsets(window)
        total = offset_view(img, window, *taps[0]).copy()
        tap = xp.empty_like(total)  # contiguous copy: adds on strided views are slower
        for i, j in taps[1:]:
            xp.copyto(tap, offset_view(img, window, i, j))
            total += tap
        total *= scale
        return total

    def backward(self, g):
        return spread(g * self.scale, self.window)

    def to_onnx(self, g, inputs, output):  # AveragePool divides by kh*kw; a Mul fixes divisors
        w = self.window
        mean = g.node("AveragePool", inputs, kernel_shape=[w.kh, w.kw], strides=[w.sh, w.sw],
                      pads=[w.top, w.left, w.bottom, w.right], count_include_pad=1)
        correction = xp.asarray(self.scale, dtype=xp.float64) * (w.kh * w.kw)
        if xp.allclose(correction, 1.0, rtol=0, atol=1e-12):
            g.node("Identity", [mean], output)
        else:
            g.node("Mul", [mean, g.const(correction, g.dtype(output))], output)


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None,  # noqa: A002
               padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    """2-D average pooling over an (N, C, H, W) or (C, H, W) input, as torch's.

    >>> F.avg_pool2d(ember.ones(1, 1, 4, 4), 2, padding=1, count_include_pad=False).shape
    (1, 1, 3, 3)
    """
    x, squeeze = _batched(input, "avg_pool2d")
    if divisor_override is not None and divisor_override == 0:
        raise ValueError("avg_pool2d: divisor_override must be non-zero")
    win = pool_window("avg_pool2d", tuple(x.shape), kernel_size, stride, padding, 1, ceil_mode)
    pads = pair(padding, "padding", "avg_pool2d")
    scale = avg_scale(win, pads, count_include_pad, divisor_override, x.dtype)
    return _unbatched(AvgPool2d.apply(x, win, scale), squeeze)


FUNCTIONS["avg_pool2d"] = avg_pool2d


# ---------------------------------------------------------------- adaptive pools
def adaptive_bounds(size: int, out: int) -> tuple:
    """torch's adaptive windows: [floor(i*size/out), ceil((i+1)*size/out))."""
    i = xp.arange(out)
    return (i * size) // out, ((i + 1) * size + out - 1) // out


def output_pair(output_size: Any, shape: tuple, op: str) -> tuple:
    """``output_size`` as two ints; None entries keep the input's size."""
    if output_size is None or isinstance(output_size, (int, xp.integer)):
        output_size = (output_size, output_size)
    if not isinstance(output_size, (tuple, list)) or len(output_size) != 2:
        raise ValueError(f"{op}: output_size must be an int or a pair, got {output_size!r}")
    sizes = tuple(int(s if s is not None else d) for s, d in zip(output_size, shape[-2:]))
    if any(s <= 0 for s in sizes):
        raise ValueError(f"{op}: output_size must be positive, got {output_size!r}")
    if any(d == 0 for d in shape[-2:]):
        raise ValueError(f"{op}: expected non-empty spatial dimensions, got input of shape "
                         f"{tuple(shape)}")
    return sizes


def segment_mean(x: Any, axis: int, out: int) -> Any:
    """Means of the adaptive windows along ``axis`` (2 or 3 of an NCHW array)."""
    size = x.shape[axis]
    if size % out == 0:
        split = x.shape[:axis] + (out, size // out) + x.shape[axis + 1:]
        return x.reshape(split).mean(axis=axis + 1)
    starts, ends = adaptive_bounds(size, out)
    shape = list(x.shape)
    shape[axis] = out
    result = xp.empty(shape, x.dtype)
    for k, (s, e) in enumerate(zip(starts, ends)):
        index = (slice(None),) * axis + (slice(k, k + 1),)
        result[index] = x[(slice(None),) * axis + (slice(s, e),)].mean(axis=axis, keepdims=True)
    return result


def segment_mean_grad(g: Any, axis: int, size: int) -> Any:
    """Adjoint of ``segment_mean``: each output's gradient spread over its window."""
    out = g.shape[axis]
    if size % out == 0:
        k = size // out
        return xp.repeat(g * g.dtype.type(1.0 / k), k, axis=axis)
    starts, ends = adaptive_bounds(size, out)
    shape = list(g.shape)
    shape[axis] = size
    grad = xp.zeros(shape, g.dtype)
    for k, (s, e) in enumerate(zip(starts, ends)):
        part = g[(slice(None),) * axis + (slice(k, k + 1),)] * g.dtype.type(1.0 / (e - s))
        grad[(slice(None),) * axis + (slice(s, e),)] += part
    return grad


@register("adaptive_avg_pool2d", method=False)
class AdaptiveAvgPool2d(Function):
    """Mean over torch's adaptive windows, separably: along W, then along H."""

    def forward(self, x, output_size):
        self.size = x.shape[2:]
        n, c, h, w = x.shape
        if FAST_PATHS and tuple(output_size) == (1, 1) and h * w and x.dtype.kind == "f":
            # global pooling: one product with a vector of 1/(h w)
            # (NumPy's mean of 16-element rows ran at a quarter of its speed: 0.28 vs
            # 0.07 ms for the CIFAR CNN's 128x96x4x4, and the separable form took 1.1)
            weights = xp.full(h * w, 1 / (h * w), x.dtype)
            return matmul(x.reshape(n * c, h * w), weights).reshape(n, c, 1, 1)
        return segment_mean(segment_mean(x, 3, output_size[1]), 2, output_size[0])

    def backward(self, g):
        return segment_mean_grad(segment_mean_grad(g, 2, self.size[0]), 3, self.size[1])

    def to_onnx(self, g, inputs, output):  # GlobalAveragePool, or even windows
        g.adaptive_pool("AveragePool", "GlobalAveragePool", inputs, output, self.size)


def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:  # noqa: A002
    """Average pooling to a fixed (out_h, out_w) whatever the input size, as torch's.

    >>> F.adaptive_avg_pool2d(ember.ones(2, 3, 7, 7), (3, 1)).shape
    (2, 3, 3, 1)
    """
    x, squeeze = _batched(input, "adaptive_avg_pool2d")
    sizes = output_pair(output_size, tuple(x.shape), "adaptive_avg_pool2d")
    return _unbatched(AdaptiveAvgPool2d.apply(x, sizes), squeeze)


FUNCTIONS["adaptive_avg_pool2d"] = adaptive_avg_pool2d


def segment_argmax(x: Any, axis: int, out: int) -> Any:
    """Index along ``axis`` of the first maximum of each adaptive window."""
    size = x.shape[axis]
    starts, ends = adaptive_bounds(size, out)
    shape = list(x.shape)
    shape[axis] = out
    result = xp.empty(shape, xp.int64)
    for k, (s, e) in enumerate(zip(starts, ends)):
        window = x[(slice(None),) * axis + (slice(s, e),)]
        result[(slice(None),) * axis + (slice(k, k + 1),)] = \
            window.argmax(axis=axis)[(slice(None),) * axis + (None,)] + s
    return result


@register("adaptive_max_pool2d", method=False)
class AdaptiveMaxPool2d(Function):
    """Max over torch's adaptive windows, separably: the row-wise maxima of each
    column window, then the maximum of those over each row window."""

    def forward(self, x, output_size, indices_out=None):
        n, c, h, w = self.shape = x.shape
        cols = segment_argmax(x, 3, output_size[1])           # (n, c, h, ow)
        col_max = xp.take_along_axis(x, cols, axis=3)
        rows = segment_argmax(col_max, 2, output_size[0])     # (n, c, oh, ow)
        out = xp.take_along_axis(col_max, rows, axis=2)
        flat = rows * w + xp.take_along_axis(cols, rows, axis=2)
        self.save(flat)
        if indices_out is not None:
            indices_out.append(flat)
        return out

    def backward(self, g):
        (flat,) = self.saved
        return scatter_planes(g, flat, self.shape)

    def to_onnx(self, g, inputs, output):  # GlobalMaxPool, or even windows
        g.adaptive_pool("MaxPool", "GlobalMaxPool", inputs, output, self.shape[2:])


def scatter_planes(g: Any, flat: Any, shape: tuple) -> Any:
    """Sum ``g`` into an array of ``shape`` at flat per-(n, c)-plane indices ``flat``."""
    n, c = shape[:2]
    plane = shape[2] * shape[3]
    base = (xp.arange(n * c) * plane).reshape(n, c, 1, 1)
    total = xp.bincount((flat + base).reshape(-1), weights=g.reshape(-1),
                        minlength=n * c * plane)
    return total.astype(g.dtype, copy=False).reshape(shape)


def adaptive_max_pool2d(input: Tensor, output_size: Any,  # noqa: A002
                        return_indices: bool = False) -> Any:
    """Max pooling to a fixed (out_h, out_w) whatever the input size, as torch's.

    >>> F.adaptive_max_pool2d(ember.ones(2, 3, 5, 5), 2).shape
    (2, 3, 2, 2)
    """
    x, squeeze = _batched(input, "adaptive_max_pool2d")
    sizes = output_pair(output_size, tuple(x.shape), "adaptive_max_pool2d")
    sink = [] if return_indices else None
    out = AdaptiveMaxPool2d.apply(x, sizes, sink)
    if return_indices:
        return _unbatched((out, Tensor._make(sink[0], False, None)), squeeze)
    return _unbatched(out, squeeze)


FUNCTIONS["adaptive_max_pool2d"] = adaptive_max_pool2d


# ---------------------------------------------------------------- max unpool
@register("max_unpool2d", method=False)
class MaxUnpool2d(Function):
    """Put each value at its flat index in a zero (oh, ow) plane: the inverse of
    max_pool2d's index output. Backward gathers the gradient at those indices."""

    arity = 2  # (input, indices); indices get no gradient

    def forward(self, x, indices, out_size):
        n, c = x.shape[:2]
        plane = out_size[0] * out_size[1]
        flat = indices.reshape(n, c, -1).astype(xp.int64, copy=False)
        if flat.size and (flat.min() < 0 or flat.max() >= plane):
            bad = flat[(flat < 0) | (flat >= plane)][0]
            raise IndexError(f"found an invalid max index {bad} (output planes are of size "
                             f"{out_size[0]}x{out_size[1]})")
        out = xp.zeros((n, c, plane), x.dtype)
        xp.put_along_axis(out, flat, x.reshape(n, c, -1), axis=2)
        self.save(flat)
        self.in_shape = x.shape
        return out.reshape(n, c, *out_size)

    def backward(self, g):
        (flat,) = self.saved
        n, c = g.shape[:2]
        gx = xp.take_along_axis(g.reshape(n, c, -1), flat, axis=2).reshape(self.in_shape)
        return gx, None


def max_unpool2d(input: Tensor, indices: Tensor, kernel_size: Any,  # noqa: A002
                 stride: Any = None, padding: Any = 0, output_size: Any = None) -> Tensor:
    """Partial inverse of ``max_pool2d``: values back at their indices, zeros elsewhere.

    >>> out, idx = F.max_pool2d(ember.randn(1, 1, 4, 4), 2, return_indices=True)
    >>> F.max_unpool2d(out, idx, 2).shape
    (1, 1, 4, 4)
    """
    op = "max_unpool2d"
    x, squeeze = _batched(input, op)
    if tuple(indices.shape) != tuple(input.shape):
        raise ValueError(f"{op}: expected indices of the input's shape {tuple(input.shape)}, "
                         f"got {tuple(indices.shape)}")
    kernel = pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None else pair(stride, "stride", op)
    pads = pair(padding, "padding", op)
    if output_size is None:
        out = tuple((size - 1) * s - 2 * p + k
                    for size, s, p, k in zip(x.shape[2:], stride, pads, kernel))
    else:
        out = tuple(int(v) for v in tuple(output_size)[-2:])
    if any(o <= 0 for o in out):
        raise ValueError(f"{op}: the output size {out} must be positive")
    idx = indices.unsqueeze(0) if squeeze else indices
    return _unbatched(MaxUnpool2d.apply(x, idx, out), squeeze)


FUNCTIONS["max_unpool2d"] = max_unpool2d
