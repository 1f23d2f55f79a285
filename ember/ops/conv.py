"""Convolutions: ``conv2d``, ``conv1d`` and ``conv_transpose2d``, forward and backward.

One sliding-window geometry (``Window``) and four array routines carry all of it:

* ``to_columns`` (im2col): every kernel tap of every window as one row of a
  (C*kh*kw, M) matrix, copied from strided views of the padded input;
* ``from_columns`` (col2im): the adjoint, adding such a matrix back into an
  input-shaped gradient with one strided add per kernel offset;
* ``to_wide`` / ``from_wide``: (N, C, OH, OW) arrays to and from the (C, M)
  layout of the matrix products.

A convolution is then one matrix product ``W @ columns`` (batched over groups),
its weight gradient ``g @ columns^T`` and its input gradient either
``from_columns(W^T @ g)`` or, for stride 1 when C_out is not much larger than
C_in, the convolution of the padded gradient with the flipped kernel, which moves
less memory (measured 1.3-2x faster on CIFAR-sized layers, 2-3x slower on
LeNet's 6->16 layer, hence the choice). In that stride-1 case the gradient's
columns give the weight gradient too, so the forward keeps its input instead of
its kh*kw times larger columns. A transposed convolution is the same pieces in
the other order. For stride-1 windows the columns are "wide": each output row is computed
over the whole padded row, so one kernel offset of one channel is a single
contiguous run of OH*Wp elements and the im2col copy moves long runs; the few
extra (garbage) columns are dropped by ``from_wide`` and zero in ``to_wide``.

Which layout a conv2d takes: small layers (per-sample work up to ``SAMPLE_MAX_WORK``)
keep per-sample columns (below; their im2col and col2im are compiled loops when Numba
is installed, ember/ops/kernels.py); larger stride-1, one-group layers work through the
batch in cache-sized blocks (ember/ops/conv_blocked.py, the CIFAR CNN's layers); the
rest (strided, grouped) use the whole-batch (C*kh*kw, M) layout. Where ember's AVX-512
kernels run (float32, ``simd.wanted()``), the per-sample-sized stride-1 layers, and the
blocked ones whose output rows fill the vectors, are computed directly instead, without
columns (ember/ops/simd_conv.py; ``direct_conv_grads`` says which gradients follow).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ember import parallel
from ember.ops import conv_blocked, kernels, simd, simd_conv
from ember.autograd import FUNCTIONS, Function, register, register_composed
from ember.backend import xp
from ember.tensor import Tensor

__all__ = ["Window", "conv2d", "conv1d", "conv_transpose2d", "to_columns", "from_columns",
           "pair", "check_floating_pair"]

WIDE_OVERHEAD = 0.5  # compute wide rows when the garbage columns cost at most this fraction
GRAD_CONV_MAX_RATIO = 2.0  # input gradient as a convolution while C_out <= this * C_in
BACK_COLUMNS_BYTES = 32 << 20  # the backward columns of a stride-1 conv, batch slice by slice
BLOCKED = True  # stride-1 layers above the per-sample size: conv_blocked (tests switch it off)


# ---------------------------------------------------------------- arguments
def pair(value: Any, name: str, op: str, dims: int = 2) -> tuple:
    """``3`` or ``(3, 4)`` as a tuple of ``dims`` ints (torch's int-or-tuple arguments)."""
    if isinstance(value, Tensor):
        value = value.array.tolist()
    if isinstance(value, (int, xp.integer)) and not isinstance(value, bool):
        return (int(value),) * dims
    if isinstance(value, (tuple, list)) and len(value) == dims and all(
            isinstance(v, (int, xp.integer)) and not isinstance(v, bool) for v in value):
        return tuple(int(v) for v in value)
    raise ValueError(f"{op}: expected {name} to be a single integer value or a list of {dims} "
                     f"values to match the {dims}-D window, but got {name}={value!r}")


def check_floating_pair(op: str, x: Any, weight: Any) -> None:
    if x.dtype != weight.dtype:
        raise TypeError(f"{op}: input dtype {x.dtype} does not match weight dtype "
                        f"{weight.dtype}; cast one of them (e.g. x.to({weight.dtype}))")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating input, got {x.dtype}")


# ---------------------------------------------------------------- geometry
class Window(NamedTuple):
    """A 2-D sliding window: an (n, c, h, w) input padded by top/bottom/left/right,
    scanned by a (kh, kw) kernel with strides (sh, sw) and dilations (dh, dw),
    giving (oh, ow) positions."""

    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    top: int
    bottom: int
    left: int
    right: int
    oh: int
    ow: int

    @property
    def hp(self) -> int:
        return self.h + self.top + self.bottom

    @property
    def wp(self) -> int:
        return self.w + self.left + self.right

    @property
    def wide(self) -> bool:
        """Compute over whole padded rows (stride 1, little waste): long copy runs."""
        return self.sw == 1 and self.sh == 1 and self.wp - self.ow <= WIDE_OVERHEAD * self.ow

    @property
    def wq(self) -> int:
        """Columns per output row in the matrix layout (Wp when wide, else OW)."""
        return self.wp if self.wide else self.ow

    @property
    def m(self) -> int:
        """Columns of the matrix layout: one per (sample, output row, output column)."""
        return self.n * self.oh * self.wq

    @property
    def padded(self) -> bool:
        return bool(self.top or self.bottom or self.left or self.right)

    @property
    def slack(self) -> int:
        """Elements read past the padded input by the last wide row's garbage columns."""
        if not self.n or not self.oh:
            return 0
        last = ((self.oh - 1) * self.sh + (self.kh - 1) * self.dh) * self.wp + \
            (self.wq - 1) * self.sw + (self.kw - 1) * self.dw
        return max(0, last + 1 - self.hp * self.wp)


def window_size(size: int, kernel: int, stride: int, dilation: int, pad: int) -> int:
    """Output positions of a floor-mode window: ``(size + pad - d(k-1) - 1) // s + 1``."""
    return (size + pad - dilation * (kernel - 1) - 1) // stride + 1


def same_padding(kernel: tuple, dilation: tuple) -> tuple:
    """torch's padding='same': total d(k-1) per dim, the odd extra on the bottom/right."""
    totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
    return tuple((t // 2, t - t // 2) for t in totals)


def conv_padding(padding: Any, kernel: tuple, stride: tuple, dilation: tuple, op: str,
                 dims: int) -> tuple:
    """Padding argument as ((before, after), ...) per spatial dim."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * dims
        if padding != "same":
            raise ValueError(f"{op}: invalid padding string {padding!r}, should be one of "
                             "{'valid', 'same'}")
        if any(s != 1 for s in stride):
            raise ValueError(f"{op}: padding='same' is not supported for strided convolutions "
                             f"(got stride={stride})")
        return same_padding(kernel, dilation)
    pads = pair(padding, "padding", op, dims)
    if any(p < 0 for p in pads):
        raise ValueError(f"{op}: negative padding is not supported, got padding={padding!r}")
    return tuple((p, p) for p in pads)


def check_hyper(op: str, stride: tuple, dilation: tuple, groups: int) -> None:
    if any(s <= 0 for s in stride):
        raise ValueError(f"{op}: non-positive stride is not supported, got stride={stride}")
    if any(d <= 0 for d in dilation):
        raise ValueError(f"{op}: dilation should be greater than zero, got dilation={dilation}")
    if not isinstance(groups, (int, xp.integer)) or groups <= 0:
        raise ValueError(f"{op}: non-positive groups is not supported, got groups={groups!r}")


def check_conv_shapes(op: str, x_shape: tuple, w_shape: tuple, bias: Any, groups: int,
                      transposed: bool = False) -> None:
    """torch's conv shape checks: weight rank, groups divisibility, channels, bias size."""
    in_channels = x_shape[1]
    if transposed:  # weight (C_in, C_out/groups, kh, kw)
        if w_shape[0] != in_channels:
            raise ValueError(f"{op}: weight of size {list(w_shape)} expects input {list(x_shape)}"
                             f" to have {w_shape[0]} channels, but got {in_channels} channels")
        if in_channels % groups:
            raise ValueError(f"{op}: given groups={groups}, expected weight to be divisible by "
                             f"{groups} at dimension 0, but got weight of size {list(w_shape)}")
        out_channels = w_shape[1] * groups
    else:  # weight (C_out, C_in/groups, kh, kw)
        if w_shape[0] % groups:
            raise ValueError(f"{op}: given groups={groups}, expected weight to be divisible by "
                             f"{groups} at dimension 0, but got weight of size {list(w_shape)}")
        if w_shape[1] * groups != in_channels:
            raise ValueError(f"{op}: given groups={groups}, weight of size {list(w_shape)}, "
                             f"expected input{list(x_shape)} to have {w_shape[1] * groups} "
                             f"channels, but got {in_channels} channels instead")
        out_channels = w_shape[0]
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"{op}: expected bias to be 1-dimensional with {out_channels} elements "
                         f"(one per output channel), but got bias of size {list(bias.shape)}")


def check_kernel_fits(op: str, padded: tuple, kernel: tuple, dilation: tuple) -> None:
    effective = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    if any(e > p for e, p in zip(effective, padded)):
        raise ValueError(f"{op}: calculated padded input size per channel: "
                         f"({' x '.join(map(str, padded))}). Effective kernel size "
                         f"(dilation*(kernel-1)+1): ({' x '.join(map(str, effective))}). "
                         "Kernel size can't be greater than actual input size")


# ---------------------------------------------------------------- array routines
def padded_flat(x: Any, win: Window, fill: float = 0.0) -> Any:
    """The padded input as one flat array with ``win.slack`` extra elements."""
    n, c, h, w = x.shape
    size, slack = n * c * win.hp * win.wp, win.slack
    if not win.padded and not slack:
        return x.reshape(-1)
    buf = xp.empty(size + slack, x.dtype)
    img = buf[:size].reshape(n, c, win.hp, win.wp)
    fill_border(img, win, fill)
    copy(img[:, :, win.top:win.top + h, win.left:win.left + w], x)
    buf[size:] = fill
    return buf


def padded_planes(x: Any, win: Window) -> Any:
    """The padded input as an (n, c, hp, wp) array (``padded_flat`` without its slack)."""
    return padded_flat(x, win)[:win.n * win.c * win.hp * win.wp].reshape(
        win.n, win.c, win.hp, win.wp)


def copy(dst: Any, src: Any) -> None:
    """``dst[...] = src``, shared between threads when big (ember.parallel)."""
    parallel.rows(xp.copyto, dst, src)


def _add_into(dst: Any, src: Any) -> None:
    xp.add(dst, src, out=dst)


def add_into(dst: Any, src: Any) -> None:
    """``dst += src`` in place, shared between threads when big."""
    parallel.rows(_add_into, dst, src)


def interior(img: Any, win: Window) -> Any:
    """The unpadded part of a padded (n, c, hp, wp) image, as a new contiguous array."""
    out = xp.empty((win.n, win.c, win.h, win.w), img.dtype)
    copy(out, img[:, :, win.top:win.top + win.h, win.left:win.left + win.w])
    return out


def fill_border(img: Any, win: Window, fill: float) -> None:
    """Set the padding frame of a padded (n, c, hp, wp) image, leaving the inside."""
    img[:, :, :win.top] = fill
    img[:, :, win.top + win.h:] = fill
    img[:, :, :, :win.left] = fill
    img[:, :, :, win.left + win.w:] = fill


def tap_strides(win: Window, itemsize: int) -> tuple:
    """Element strides of (c, kh, kw, n, oh, wq) over the flat padded input."""
    plane = win.hp * win.wp
    return tuple(s * itemsize for s in (plane, win.dh * win.wp, win.dw, win.c * plane,
                                        win.sh * win.wp, win.sw))


def to_columns(x: Any, win: Window) -> Any:
    """im2col: (n, c, h, w) -> (c*kh*kw, n*oh*wq), one row per (channel, kernel tap)."""
    buf = padded_flat(x, win)
    shape = (win.c, win.kh, win.kw, win.n, win.oh, win.wq)
    taps = xp.lib.stride_tricks.as_strided(buf, shape, tap_strides(win, buf.itemsize),
                                           writeable=False)
    cols = xp.empty(shape, x.dtype)
    copy(cols, taps)  # the one copy
    return cols.reshape(win.c * win.kh * win.kw, win.m)


def from_columns(cols: Any, win: Window) -> Any:
    """col2im, the adjoint of ``to_columns``: add every tap back where it was read."""
    size = win.n * win.c * win.hp * win.wp
    buf = xp.zeros(size + win.slack, cols.dtype)
    strides = tap_strides(win, buf.itemsize)
    target_strides = (strides[3], strides[0], strides[4], strides[5])  # (n, c, oh, wq)
    taps = cols.reshape(win.c, win.kh, win.kw, win.n, win.oh, win.wq)
    for i in range(win.kh):
        for j in range(win.kw):
            start = i * win.dh * win.wp + j * win.dw
            target = xp.lib.stride_tricks.as_strided(
                buf[start:], (win.n, win.c, win.oh, win.wq), target_strides)
            add_into(target, taps[:, i, j].transpose(1, 0, 2, 3))
    img = buf[:size].reshape(win.n, win.c, win.hp, win.wp)
    return interior(img, win) if win.padded else img


def to_wide(y: Any, win: Window) -> Any:
    """(n, C, oh, ow) -> (C, n*oh*wq), with zeros in the wide layout's extra columns."""
    n, channels, oh, ow = y.shape
    out = xp.empty((channels, n, oh, win.wq), y.dtype)
    if win.wq > ow:
        out[..., ow:] = 0
    copy(out[..., :ow], y.transpose(1, 0, 2, 3))
    return out.reshape(channels, win.m)


def from_wide(y: Any, win: Window, bias: Any = None) -> Any:
    """(C, n*oh*wq) -> (n, C, oh, ow), dropping extra columns and adding the bias."""
    channels = y.shape[0]
    view = y.reshape(channels, win.n, win.oh, win.wq).transpose(1, 0, 2, 3)[..., :win.ow]
    out = xp.empty((win.n, channels, win.oh, win.ow), y.dtype)
    if bias is None:
        copy(out, view)
    else:
        parallel.rows(_add_to, out, view, bias.reshape(channels, 1, 1))
    return out


def _add_to(out: Any, a: Any, b: Any) -> None:
    xp.add(a, b, out=out)


def channel_sums(g: Any) -> Any:
    """Per-channel sums of an (n, C, h, w) gradient: the bias gradient (einsum is ~3x
    faster than ``sum(axis=(0, 2, 3))`` here)."""
    return xp.einsum("nchw->c", g)


def grouped_matmul(a: Any, b: Any) -> Any:
    """``a @ b`` for (g, p, q) @ (g, q, r) stacks; a plain 2-D product when g == 1."""
    if a.shape[0] == 1:
        return (a[0] @ b[0])[None]
    return xp.matmul(a, b)


def long_inner_matmul(a: Any, b: Any) -> Any:
    """``a @ b^T`` for (g, p, M) and (g, q, M) stacks with a long M (weight gradients),
    computed as ``(b @ a^T)^T``: OpenBLAS runs that orientation faster."""
    return swap(grouped_matmul(b, swap(a)))


def grouped(matrix: Any, groups: int) -> Any:
    """A (rows, cols) matrix as (groups, rows/groups, cols)."""
    return matrix.reshape(groups, matrix.shape[0] // groups, matrix.shape[-1])


def swap(stack: Any) -> Any:
    return stack.transpose(0, 2, 1)


# ---------------------------------------------------------------- per-sample layout
# conv2d keeps its columns per sample, (n, C*kh*kw, oh*ow): ``W @ columns`` is then a
# stack of n small GEMMs (NumPy's matmul loops over the stack inside C) whose result
# is already (n, C_out, oh*ow), i.e. NCHW: no transpose or copy after the product, and
# the output gradient needs none before the backward products. Each small GEMM fits
# in cache; LeNet's conv1 product ran 3-4x faster than one (6, 25) @ (25, n*oh*ow).
# Rows are never computed wide here: with no output copy left to drop the extra
# columns, the narrow layout measured 5-35% faster on the LeNet and CIFAR layers.
# Only layers whose per-sample product is small take this layout: OpenBLAS runs a GEMM
# of m*n*k <= 4*65536 on one thread, so such a stack costs no thread hand-offs, while
# a stack of n threaded GEMMs pays n of them (with 2 threads on a busy machine the
# CIFAR 24- and 48-channel layers ran 1.2-3x slower so, against 0.8-0.9x on one).
SAMPLE_LAYOUT = True  # tests switch this off to check it against the (C*kh*kw, M) layout
SAMPLE_MAX_WORK = 1 << 20  # C_out * C_in*kh*kw * oh*ow per sample; ~4x OpenBLAS's cut
SAMPLE_THREADS = True  # split the per-sample product stacks between threads (sample_matmul)
SAMPLE_MAX_ROWS = 64  # where blocking is possible, only layers this narrow stay per sample
SAMPLE_MAX_COLUMNS_BYTES = 16 << 20  # ... and only while their batch's columns are this small
STREAM_COLUMNS_BYTES: int | None = 1 << 20  # bigger per-sample columns: built in blocks
STREAM_BLOCK_BYTES = 1 << 20  # ... of about this size (None above: never streamed)


def per_sample(win: Window, c_out: int) -> bool:
    work = c_out * (win.c * win.kh * win.kw) * (win.oh * win.ow)
    return SAMPLE_LAYOUT and work <= SAMPLE_MAX_WORK


def sample_columns(x: Any, win: Window) -> Any:
    """im2col per sample: (n, c, h, w) -> (n, c*kh*kw, oh*ow)."""
    shape = (win.n, win.c, win.kh, win.kw, win.oh, win.ow)
    cols = xp.empty(shape, x.dtype)
    if kernels.enabled(x.dtype):  # compiled loops: NumPy copies these taps in rows of ow
        kernels.im2col(padded_planes(x, win), cols, win)
    else:
        buf = padded_flat(x, win)
        c, kh, kw, n, oh, ow = tap_strides(win, buf.itemsize)
        copy(cols, xp.lib.stride_tricks.as_strided(buf, shape, (n, c, kh, kw, oh, ow),
                                                   writeable=False))  # the one copy
    return cols.reshape(win.n, win.c * win.kh * win.kw, win.oh * win.ow)


def sample_from_columns(cols: Any, win: Window) -> Any:
    """col2im for (n, c*kh*kw, oh*wq) columns: one strided add per kernel offset, no
    transposes. Wide rows (wq = wp, extra columns zero) make each add move runs of
    oh*wp elements; narrow ones (runs of ow) measured 1.2-1.7x slower."""
    size = win.n * win.c * win.hp * win.wp
    wq = cols.shape[-1] // win.oh
    buf = xp.zeros(size + (win.slack if wq == win.wq else 0), cols.dtype)
    c, kh, kw, n, oh, step = tap_strides(win, buf.itemsize)
    taps = cols.reshape(win.n, win.c, win.kh, win.kw, win.oh, wq)
    for i in range(win.kh):
        for j in range(win.kw):
            start = i * win.dh * win.wp + j * win.dw
            target = xp.lib.stride_tricks.as_strided(
                buf[start:], (win.n, win.c, win.oh, wq), (n, c, oh, step))
            add_into(target, taps[:, :, i, j])
    img = buf[:size].reshape(win.n, win.c, win.hp, win.wp)
    return interior(img, win) if win.padded else img


def widened(g: Any, win: Window) -> Any:
    """(n, C, oh, ow) -> (n, C, oh*wq), zeros in the wide layout's extra columns."""
    n, channels, oh, ow = g.shape
    if win.wq == ow:
        return g.reshape(n, channels, oh * ow)
    out = xp.empty((n, channels, oh, win.wq), g.dtype)
    out[..., ow:] = 0
    copy(out[..., :ow], g)
    return out.reshape(n, channels, oh * win.wq)


def sample_matmul(w: Any, cols: Any) -> Any:
    """A (groups, P, Q) weight stack times (n, groups*Q, L) columns -> (n, groups*P, L).

    The samples' products are independent small GEMMs (each on one OpenBLAS thread),
    so the stack is split by samples between threads (``SAMPLE_THREADS``): the second
    core does half of them, with no BLAS hand-offs."""
    groups, p, q = w.shape
    n, _, length = cols.shape
    out = xp.empty((n, groups * p, length), xp.result_type(w, cols))

    def products(out_block: Any, cols_block: Any) -> None:
        if groups == 1:
            simd.matmul(w[0], cols_block, out=out_block)
        else:
            xp.matmul(w, cols_block.reshape(len(cols_block), groups, q, length),
                      out=out_block.reshape(len(out_block), groups, p, length))
    parallel.rows(products, out, cols, enabled=SAMPLE_THREADS)
    return out


def sample_weight_grad(g: Any, cols: Any, groups: int) -> Any:
    """sum over samples of ``g[s] @ cols[s]^T`` as (C_out, K/groups), for an (n, C_out, L)
    gradient: computed as ``cols[s] @ g[s]^T`` (measured ~1.5x faster in OpenBLAS)."""
    n, c_out, length = g.shape
    k = cols.shape[1]
    gy = g.reshape(n, groups, c_out // groups, length)
    c = cols.reshape(n, groups, k // groups, length)
    products = xp.empty((n, groups, k // groups, c_out // groups), xp.result_type(c, gy))
    # the samples' products on every core (they are the work), their sum in sample
    # order on one: the same bits for any number of threads
    parallel.rows(_products_into, c, gy.transpose(0, 1, 3, 2), products,
                  enabled=SAMPLE_THREADS)
    return swap(products.sum(axis=0)).reshape(c_out, k // groups)


def _products_into(a: Any, b: Any, out: Any) -> None:
    """``out = a @ b`` for (n, groups, ...) stacks: one group on ``simd``'s kernels."""
    if a.shape[1] == 1:
        simd.matmul(a[:, 0], b[:, 0], out=out[:, 0])
    else:
        xp.matmul(a, b, out=out)


def _column_blocks(x: Any, win: Window, use: Any) -> None:
    """Build per-sample columns a block of samples at a time (compiled im2col) into a
    buffer each thread reuses, calling ``use(start, stop, columns)`` on each block while
    it is in cache: the layer's columns are never all in memory at once."""
    n = win.n
    img = padded_planes(x, win)
    per_block = max(1, STREAM_BLOCK_BYTES // (win.c * win.kh * win.kw * win.oh * win.ow *
                                                x.itemsize))

    def run(starts: Any) -> None:
        cols = xp.empty((min(per_block, n), win.c, win.kh, win.kw, win.oh, win.ow), x.dtype)
        for start in starts:
            stop = min(start + per_block, n)
            block = cols[:stop - start]
            kernels.im2col(img[start:stop], block, win)
            use(start, stop, block.reshape(stop - start, win.c * win.kh * win.kw, -1))
    conv_blocked.on_blocks(run, n, per_block)


def streamed_forward(x: Any, w: Any, win: Window) -> Any:
    """``sample_matmul(w, sample_columns(x, win))`` with the columns in blocks."""
    groups, p, q = w.shape
    out = xp.empty((win.n, groups * p, win.oh * win.ow), xp.result_type(w, x))

    def use(start: int, stop: int, cols: Any) -> None:
        if groups == 1:
            simd.matmul(w[0], cols, out=out[start:stop])
        else:
            xp.matmul(w, cols.reshape(stop - start, groups, q, -1),
                      out=out[start:stop].reshape(stop - start, groups, p, -1))
    _column_blocks(x, win, use)
    return out


def streamed_input_grad(gy: Any, w: Any, win: Window) -> Any:
    """col2im of ``W^T @ g`` per sample, a block of samples at a time: each block's
    columns are made, added back into the (padded) input gradient by the compiled col2im
    and dropped while in cache, never all in memory (3.8 MB for LeNet-5's second layer)."""
    groups, p, q = w.shape
    n, length = win.n, win.oh * win.ow
    img = xp.zeros((n, win.c, win.hp, win.wp), xp.result_type(w, gy))
    per_block = max(1, STREAM_BLOCK_BYTES // (groups * q * length * img.itemsize))
    w_t = xp.ascontiguousarray(swap(w))  # (groups, q, p): small; simd takes it contiguous

    def run(starts: Any) -> None:
        cols = xp.empty((min(per_block, n), groups, q, length), img.dtype)
        for start in starts:
            stop = min(start + per_block, n)
            block = cols[:stop - start]
            g_block = gy[start:stop].reshape(stop - start, groups, p, length)
            if groups == 1:
                simd.matmul(w_t[0], g_block[:, 0], out=block[:, 0])
            else:
                xp.matmul(w_t, g_block, out=block)
            kernels.col2im_into(block.reshape(stop - start, win.c, win.kh, win.kw, win.oh,
                                              win.ow), img[start:stop], win)
    conv_blocked.on_blocks(run, n, per_block)
    return interior(img, win) if win.padded else img


def streamed_weight_grad(g: Any, x: Any, win: Window, groups: int) -> Any:
    """``sample_weight_grad`` with the columns in blocks: the same per-sample products
    summed in the same order, so the same bits as from kept columns."""
    n, c_out, length = g.shape
    k = win.c * win.kh * win.kw
    gy = g.reshape(n, groups, c_out // groups, length).transpose(0, 1, 3, 2)
    products = xp.empty((n, groups, k // groups, c_out // groups), xp.result_type(x, g))

    def use(start: int, stop: int, cols: Any) -> None:
        _products_into(cols.reshape(stop - start, groups, k // groups, length), gy[start:stop],
                       products[start:stop])
    _column_blocks(x, win, use)
    return swap(products.sum(axis=0)).reshape(c_out, k // groups)


def sample_output(y: Any, win: Window, bias: Any = None) -> Any:
    """(n, C, oh*ow) -> (n, C, oh, ow), adding the bias in place."""
    out = y.reshape(y.shape[0], y.shape[1], win.oh, win.ow)
    if bias is not None:
        out += bias.reshape(-1, 1, 1)
    return out


# ---------------------------------------------------------------- conv2d
@register("conv2d", method=False)
class Conv2d(Function):
    """2-D cross-correlation: ``out = W @ im2col(x) + b``, one matrix product per group.

    Backward: ``gb = sum(g)``; for stride-1 windows (and C_out <= 2 C_in) ``gx`` is the
    convolution of ``g`` with the flipped kernel and ``gW`` comes from the same columns
    (``back_conv_grads``); otherwise ``gx = col2im(W^T @ g)`` and ``gW = g @ cols^T``.
    """

    arity = None  # (x, weight) or (x, weight, bias); the geometry comes as keywords

    def forward(self, x, weight, bias=None, *, window, groups):
        self.window, self.groups, self.has_bias = window, groups, bias is not None
        self.small = per_sample(window, weight.shape[0])
        self.blocked = blocked(window, groups) and not stays_per_sample(window, weight.shape[0])
        self.per_sample = not self.blocked and self.small
        # direct for any batch size of a per-sample-sized layer (it builds no columns), and
        # for a blocked one whose rows fill the vectors, where the blocked layout's products
        # would be simd's (against OpenBLAS's AVX-512 ones and Winograd: not measured)
        self.direct = simd_conv.fits(window, groups, x.dtype) and (self.small or (
            self.blocked and simd_conv.rows_fill(window.ow) and simd.wanted()))
        if self.direct:  # no columns: the input, alive anyway as a parent, serves the backward
            self.save(x, weight)
            return simd_conv.forward(x, weight, window, bias)
        if self.blocked:  # the batch in cache-sized blocks; the input serves the backward
            self.save(x, weight)
            return conv_blocked.forward(x, weight.reshape(weight.shape[0], -1), window, bias)
        if self.per_sample:
            w = grouped(weight.reshape(weight.shape[0], -1), groups)
            self.streams = streams_columns(window, x)
            if self.streams:  # the input is kept (alive anyway as this op's parent)
                self.save(x, weight)
                return sample_output(streamed_forward(x, w, window), window, bias)
            cols = sample_columns(x, window)
            self.save(cols, weight)
            return sample_output(sample_matmul(w, cols), window, bias)
        cols = to_columns(x, window)
        w = grouped(weight.reshape(weight.shape[0], -1), groups)
        y = grouped_matmul(w, grouped(cols, groups))
        # A stride-1 backward im2cols the output gradient anyway, and those columns give
        # the weight gradient as well (back_conv_grads): keep the input, alive anyway as
        # this op's parent, rather than columns kh*kw times its size.
        self.keeps_input = gradient_as_conv(weight, window)
        self.save(x if self.keeps_input else cols, weight)
        return from_wide(y.reshape(weight.shape[0], window.m), window, bias)

    def backward(self, g):
        saved, weight = self.saved
        win, groups, need = self.window, self.groups, self.needs_input_grad
        if self.direct:
            gx, gw = direct_conv_grads(g, saved, weight, win, need, self.blocked, self.small)
        elif self.blocked:
            gx, gw = blocked_conv_grads(g, saved, weight, win, need)
        elif self.per_sample and self.streams:  # the input was kept, not its columns
            gx, gw = sample_conv_grads(g, None, weight, win, groups, (need[0], False))
            if need[1]:
                gw = streamed_weight_grad(g.reshape(win.n, g.shape[1], -1), saved, win,
                                          groups).reshape(weight.shape)
        elif self.per_sample:
            gx, gw = sample_conv_grads(g, saved, weight, win, groups, need)
        elif self.keeps_input and not need[0] and win.c < weight.shape[0]:
            # only the weight gradient (e.g. a first layer): the input's columns are the
            # smaller ones (C_in < C_out), so build those again rather than g's
            gx, gw = conv_grads(g, to_columns(saved, win), weight, win, groups, need)
        elif self.keeps_input:
            gx, gw = back_conv_grads(g, saved, weight, win, groups, need)
        else:
            gx, gw = conv_grads(g, saved, weight, win, groups, need)
        if not self.has_bias:
            return gx, gw
        return gx, gw, (channel_sums(g) if need[2] else None)

    def to_onnx(self, g, inputs, output):  # ONNX form (ember.onnx.export)
        w = self.window
        g.node("Conv", inputs, output, kernel_shape=[w.kh, w.kw], strides=[w.sh, w.sw],
               dilations=[w.dh, w.dw], pads=[w.top, w.left, w.bottom, w.right],
               group=self.groups)


def streams_columns(win: Window, x: Any) -> bool:
    """Whether a per-sample layer builds its columns a block at a time, in the forward and
    again in the backward, rather than all at once and kept for the backward: with the
    compiled im2col, for columns above ``STREAM_COLUMNS_BYTES`` (both of LeNet-5's layers
    at batch 64: 5 and 3.8 MB of columns against 0.2 MB inputs; each block's products then
    run beside its im2col on both threads; docs/performance.md, sections 13 and 32)."""
    size = win.n * win.c * win.kh * win.kw * win.oh * win.ow * x.itemsize
    return STREAM_COLUMNS_BYTES is not None and size > STREAM_COLUMNS_BYTES and \
        kernels.enabled(x.dtype)


def blocked(win: Window, groups: int) -> bool:
    """Whether conv2d can take the cache-blocked path (ember/ops/conv_blocked.py): one
    group, and an input gradient that is a stride-1 convolution of the output gradient."""
    return BLOCKED and groups == 1 and gradient_padding(win) is not None


def stays_per_sample(win: Window, c_out: int) -> bool:
    """A small layer with few column rows (C_in*kh*kw, e.g. a first layer on 1-3 input
    channels) whose whole-batch columns are small keeps the per-sample layout even
    where it could be blocked: it saves its columns for the weight gradient, which
    measured faster there (LeNet-5's first layer at batch 64: 1.9 vs 3.0 ms forward +
    backward; the CIFAR CNN's: 9.9 vs 11.4). Wider layers (LeNet's second: 5.7 vs 4.0)
    and big batches (LeNet's first at batch 1000, inference: 14.3 vs 6.7) are blocked.
    With the compiled kernels (ember/ops/kernels.py) the per-sample copies are cheap and
    every layer within the per-sample size stays (docs/performance.md, section 13)."""
    rows = win.c * win.kh * win.kw
    columns_bytes = win.n * rows * win.oh * win.ow * 4  # as float32 (the default dtype)
    narrow = rows <= SAMPLE_MAX_ROWS or kernels.enabled()
    return per_sample(win, c_out) and narrow and columns_bytes <= SAMPLE_MAX_COLUMNS_BYTES


def blocked_conv_grads(g: Any, x: Any, weight: Any, win: Window, need: tuple) -> tuple:
    """Input and weight gradients in cache-sized blocks of the batch: ``gx`` is the
    output gradient convolved with the flipped kernel, ``gW`` sums ``g @ columns^T``."""
    gx = gw = None
    if need[0]:
        flipped = flipped_weight(weight, 1).reshape(win.c, -1)
        back = gradient_window(g.shape, win)
        gx = conv_blocked.forward(g, flipped, back)
    if need[1]:
        gw = conv_blocked.weight_grad(x, g, win).reshape(weight.shape)
    return gx, gw


def direct_conv_grads(g: Any, x: Any, weight: Any, win: Window, need: tuple,
                      is_blocked: bool, small: bool) -> tuple:
    """Gradients of a ``simd_conv`` forward. The input gradient: ``simd_conv.forward`` of
    the output gradient with the flipped kernel where input rows fill the vectors
    (``direct_input_grad``); otherwise as the layer's layout makes it. The weight gradient:
    direct for a small layer whose pixels' rows or channels fill the vectors
    (``simd_conv.weight_grad_fits``), else from columns (on the CIFAR CNN's 16x16 and 32x32
    layers the direct kernel, streaming every sample's gradient per tile, took 2x)."""
    gx = gw = None
    if need[0] and direct_input_grad(weight, win, is_blocked):
        gx = simd_conv.forward(g, flipped_weight(weight, 1), gradient_window(g.shape, win))
    elif need[0]:
        gx = blocked_conv_grads(g, x, weight, win, (True, False))[0] if is_blocked else \
            sample_conv_grads(g, None, weight, win, 1, (True, False))[0]
    if need[1] and small and simd_conv.weight_grad_fits(win, weight.shape[0]):
        gw = simd_conv.weight_grad(simd_conv.padded(x, win), g, win).reshape(weight.shape)
    elif need[1] and is_blocked:
        gw = conv_blocked.weight_grad(x, g, win).reshape(weight.shape)
    elif need[1]:
        n, c_out = g.shape[:2]
        gw = streamed_weight_grad(g.reshape(n, c_out, -1), x, win, 1).reshape(weight.shape)
    return gx, gw


def direct_input_grad(weight: Any, win: Window, is_blocked: bool) -> bool:
    """Whether a direct layer's input gradient runs as ``simd_conv.forward`` of the padded
    output gradient: its input rows fill the vectors, and either the layer is blocked (whose
    own path convolves the same padded gradient, so an infinite weight meets the padding's
    zeros either way) or the weight is finite. The forward skips the padding's rows then
    (``simd_conv.forward``), which made LeNet-5's second layer's gradient, 14x14 pixels from
    a 10x10 gradient padded to 18x18, 261 -> 199 us against its per-sample columns; a
    per-sample layer's columns never meet the padding, so a weight with an inf or NaN keeps
    them and their NaN pattern (torch's)."""
    return simd_conv.rows_fill(win.w) and gradient_padding(win) is not None and \
        (is_blocked or bool(xp.isfinite(weight).all()))


def conv_grads(g: Any, cols: Any, weight: Any, win: Window, groups: int, need: tuple) -> tuple:
    """Input and weight gradients in the (C*kh*kw, M) layout from the input's columns, for
    windows whose input gradient is not a stride-1 convolution (``back_conv_grads``), and
    for a weight gradient alone when the input has fewer channels than the output:
    ``gx = col2im(W^T @ g)``, ``gW = g @ cols^T``."""
    gy = to_wide(g, win)
    gx = gw = None
    if need[0]:
        w = grouped(weight.reshape(weight.shape[0], -1), groups)
        gcols = grouped_matmul(swap(w), grouped(gy, groups))
        gx = from_columns(gcols.reshape(win.c * win.kh * win.kw, win.m), win)
    if need[1]:
        gw = long_inner_matmul(grouped(gy, groups), grouped(cols, groups))
        gw = gw.reshape(weight.shape)
    return gx, gw


def back_conv_grads(g: Any, x: Any, weight: Any, win: Window, groups: int,
                    need: tuple) -> tuple:
    """``back_conv_grads_of`` in slices of the batch whose columns fit in
    ``BACK_COLUMNS_BYTES``: the output gradient's columns are 9x an activation for a 3x3
    kernel (113 MB for 128x24x32x32), the largest array of a CNN's step. The weight
    gradient is summed over the slices; the products stay wide (>= 10^4 columns)."""
    n, c_out, h, w = g.shape
    per_sample = c_out * win.kh * win.kw * h * w * g.itemsize
    step = max(1, BACK_COLUMNS_BYTES // per_sample)
    if step >= n:
        return back_conv_grads_of(g, x, weight, win, groups, need)
    gx = xp.empty(x.shape, x.dtype) if need[0] else None
    gw = None
    for start in range(0, n, step):
        part = slice(start, start + step)
        gx_part, gw_part = back_conv_grads_of(g[part], x[part], weight, win, groups, need)
        if need[0]:
            gx[part] = gx_part
        if need[1]:
            gw = gw_part if gw is None else xp.add(gw, gw_part, out=gw)
    return gx, gw


def back_conv_grads_of(g: Any, x: Any, weight: Any, win: Window, groups: int,
                       need: tuple) -> tuple:
    """Input and weight gradients of a stride-1 convolution from one im2col of the
    output gradient ``g`` over the backward window (``gradient_window``).

    Its columns hold ``g[n, o, u + top - i*dh, v + left - j*dw]`` in row (o, flipped
    tap (i, j)) and column (n, u, v) of the input. So ``gx`` is the flipped kernel
    times them, and ``gW[o, c, i, j] = sum over (n, u, v) of x[n, c, u, v]`` times that
    same entry: ``x @ columns^T`` with the taps flipped back. The forward's own
    columns need not be kept.
    """
    back = gradient_window(g.shape, win)
    gcols = grouped(to_columns(g, back), groups)  # (groups, C_out/groups * kh*kw, M)
    gx = gw = None
    if need[0]:
        flipped = grouped(flipped_weight(weight, groups).reshape(win.c, -1), groups)
        gx = from_wide(grouped_matmul(flipped, gcols).reshape(win.c, back.m), back)
    if need[1]:
        c_out, c_in_g, kh, kw = weight.shape
        per_tap = long_inner_matmul(grouped(to_wide(x, back), groups), gcols)
        per_tap = per_tap.reshape(groups, c_in_g, c_out // groups, kh, kw)[..., ::-1, ::-1]
        gw = per_tap.transpose(0, 2, 1, 3, 4).reshape(weight.shape)
    return gx, gw


def sample_conv_grads(g: Any, cols: Any, weight: Any, win: Window, groups: int,
                      need: tuple) -> tuple:
    """Input and weight gradients in the per-sample layout."""
    gy = g.reshape(win.n, g.shape[1], win.oh * win.ow)
    gx = gw = None
    if need[0] and gradient_as_conv(weight, win):
        back = gradient_window(g.shape, win)
        flipped = flipped_weight(weight, groups).reshape(win.c, -1)
        gx = sample_output(sample_matmul(grouped(flipped, groups), sample_columns(g, back)),
                           back)
    elif need[0] and kernels.enabled(g.dtype):
        gx = streamed_input_grad(gy, grouped(weight.reshape(weight.shape[0], -1), groups), win)
    elif need[0]:  # col2im in wide rows (NumPy's strided adds move longer runs)
        w = grouped(weight.reshape(weight.shape[0], -1), groups)
        gx = sample_from_columns(sample_matmul(swap(w), widened(g, win)), win)
    if need[1]:
        gw = sample_weight_grad(gy, cols, groups).reshape(weight.shape)
    return gx, gw


def gradient_window(g_shape: tuple, win: Window) -> Window:
    """The stride-1 window that convolves the output gradient back to the input."""
    n, c_out, oh, ow = g_shape
    return Window(n, c_out, oh, ow, win.kh, win.kw, 1, 1, win.dh, win.dw,
                  *gradient_padding(win), win.h, win.w)


def gradient_as_conv(weight: Any, win: Window) -> bool:
    return gradient_padding(win) is not None and weight.shape[0] <= GRAD_CONV_MAX_RATIO * win.c


def gradient_padding(win: Window) -> tuple | None:
    """Padding that turns the input gradient into a stride-1 convolution of the
    output gradient (None when the stride or a large padding rules it out)."""
    if win.sh != 1 or win.sw != 1:
        return None
    reach_h, reach_w = win.dh * (win.kh - 1), win.dw * (win.kw - 1)
    pads = (reach_h - win.top, reach_h - win.bottom, reach_w - win.left, reach_w - win.right)
    return pads if min(pads) >= 0 else None


def flipped_weight(weight: Any, groups: int) -> Any:
    """(C_out, C_in/g, kh, kw) -> (C_in, C_out/g, kh, kw), each kernel rotated 180 degrees."""
    c_out, c_in_g, kh, kw = weight.shape
    per_group = weight.reshape(groups, c_out // groups, c_in_g, kh, kw)
    return per_group.transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1].reshape(
        groups * c_in_g, c_out // groups, kh, kw)


def conv_window(op: str, x_shape: tuple, w_shape: tuple, stride: Any, padding: Any,
                dilation: Any) -> Window:
    """The Window of a convolution of an (n, c, h, w) input by a (., ., kh, kw) weight."""
    kernel = tuple(w_shape[2:])
    stride, dilation = pair(stride, "stride", op), pair(dilation, "dilation", op)
    check_hyper(op, stride, dilation, 1)
    (top, bottom), (left, right) = conv_padding(padding, kernel, stride, dilation, op, 2)
    n, c, h, w = x_shape
    check_kernel_fits(op, (h + top + bottom, w + left + right), kernel, dilation)
    oh = window_size(h, kernel[0], stride[0], dilation[0], top + bottom)
    ow = window_size(w, kernel[1], stride[1], dilation[1], left + right)
    return Window(n, c, h, w, *kernel, *stride, *dilation, top, bottom, left, right, oh, ow)


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None,  # noqa: A002
           stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-D convolution of an (N, C_in, H, W) input (or unbatched (C_in, H, W)) with a
    (C_out, C_in/groups, kH, kW) weight, as ``torch.nn.functional.conv2d``.

    ``padding`` is an int, a pair, ``'valid'`` or ``'same'`` (stride 1 only).

    >>> F.conv2d(ember.ones(1, 3, 8, 8), ember.ones(4, 3, 3, 3), padding=1).shape
    (1, 4, 8, 8)
    """
    return _conv2d("conv2d", input, weight, bias, stride, padding, dilation, groups)


def _conv2d(op: str, x: Tensor, weight: Tensor, bias: Any, stride: Any, padding: Any,
            dilation: Any, groups: int) -> Tensor:
    if x.ndim == 3:  # unbatched, as torch
        return _conv2d(op, x.unsqueeze(0), weight, bias, stride, padding, dilation,
                       groups).squeeze(0)
    if x.ndim != 4:
        raise ValueError(f"{op}: expected 3-D (unbatched) or 4-D (batched) input, but got "
                         f"input of shape {tuple(x.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D weight (C_out, C_in/groups, kH, kW), got "
                         f"shape {tuple(weight.shape)}")
    check_hyper(op, (1,), (1,), groups)
    check_conv_shapes(op, tuple(x.shape), tuple(weight.shape), bias, groups)
    check_floating_pair(op, x, weight)
    win = conv_window(op, tuple(x.shape), tuple(weight.shape), stride, padding, dilation)
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return Conv2d.apply(*tensors, window=win, groups=int(groups))


FUNCTIONS["conv2d"] = conv2d


# ---------------------------------------------------------------- conv1d
def _padding_1d(padding: Any) -> Any:
    if isinstance(padding, str):
        return padding
    (p,) = pair(padding, "padding", "conv1d", 1)
    return (0, p)


@register_composed("conv1d", method=False)
def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None,  # noqa: A002
           stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """1-D convolution of an (N, C_in, L) input (or unbatched (C_in, L)) with a
    (C_out, C_in/groups, k) weight: ``conv2d`` on a height-1 view.

    >>> F.conv1d(ember.ones(2, 3, 10), ember.ones(4, 3, 3), padding='same').shape
    (2, 4, 10)
    """
    if input.ndim not in (2, 3):
        raise ValueError(f"conv1d: expected 2-D (unbatched) or 3-D (batched) input, but got "
                         f"input of shape {tuple(input.shape)}")
    if weight.ndim != 3:
        raise ValueError(f"conv1d: expected a 3-D weight (C_out, C_in/groups, k), got shape "
                         f"{tuple(weight.shape)}")
    (s,) = pair(stride, "stride", "conv1d", 1)
    (d,) = pair(dilation, "dilation", "conv1d", 1)
    out = _conv2d("conv1d", input.unsqueeze(-2), weight.unsqueeze(-2), bias, (1, s),
                  _padding_1d(padding), (1, d), groups)
    return out.squeeze(-2)


# ---------------------------------------------------------------- conv_transpose2d
@register("conv_transpose2d", method=False)
class ConvTranspose2d(Function):
    """The adjoint of conv2d in its input: ``y = col2im(W^T @ x) + b``.

    ``window`` is the geometry of the matching convolution, which maps ``y``'s
    shape to ``x``'s. Backward: ``gx = W @ im2col(g)``, ``gW = x @ im2col(g)^T``.
    """

    arity = None

    def forward(self, x, weight, bias=None, *, window, groups):
        self.window, self.groups, self.has_bias = window, groups, bias is not None
        xw = to_wide(x, window)
        w = grouped(weight.reshape(weight.shape[0], -1), groups)
        cols = grouped_matmul(swap(w), grouped(xw, groups))
        y = from_columns(cols.reshape(window.c * window.kh * window.kw, window.m), window)
        if bias is not None:
            y += bias.reshape(-1, 1, 1)
        self.save(xw, weight)
        return y

    def backward(self, g):
        xw, weight = self.saved
        win, groups, need = self.window, self.groups, self.needs_input_grad
        gcols = grouped(to_columns(g, win), groups)
        gx = gw = None
        if need[0]:
            w = grouped(weight.reshape(weight.shape[0], -1), groups)
            gx = from_wide(grouped_matmul(w, gcols).reshape(xw.shape), win)
        if need[1]:
            gw = long_inner_matmul(grouped(xw, groups), gcols).reshape(weight.shape)
        if not self.has_bias:
            return gx, gw
        return gx, gw, (channel_sums(g) if need[2] else None)

    def to_onnx(self, g, inputs, output):  # ONNX form: pads and output_padding of the window
        w = self.window  # the matching convolution's geometry: its input is our output
        extra = [size - ((n - 1) * s - lo - hi + d * (k - 1) + 1) for size, n, s, lo, hi, d, k
                 in ((w.h, w.oh, w.sh, w.top, w.bottom, w.dh, w.kh),
                     (w.w, w.ow, w.sw, w.left, w.right, w.dw, w.kw))]
        g.node("ConvTranspose", inputs, output, kernel_shape=[w.kh, w.kw],
               strides=[w.sh, w.sw], dilations=[w.dh, w.dw],
               pads=[w.top, w.left, w.bottom, w.right], output_padding=extra, group=self.groups)


def transpose_window(x_shape: tuple, w_shape: tuple, stride: Any, padding: Any,
                     output_padding: Any, dilation: Any, groups: int) -> Window:
    """The Window of the convolution whose adjoint this transposed convolution is."""
    op = "conv_transpose2d"
    kernel = tuple(w_shape[2:])
    stride, dilation = pair(stride, "stride", op), pair(dilation, "dilation", op)
    check_hyper(op, stride, dilation, groups)
    pads, extra = pair(padding, "padding", op), pair(output_padding, "output_padding", op)
    if any(p < 0 for p in pads + extra):
        raise ValueError(f"{op}: negative padding is not supported, got padding={padding!r}, "
                         f"output_padding={output_padding!r}")
    if any(e >= s and e >= d for e, s, d in zip(extra, stride, dilation)):
        raise ValueError(f"{op}: output padding must be smaller than either stride or "
                         f"dilation, but got output_padding={extra}, stride={stride}, "
                         f"dilation={dilation}")
    n, _, h, w = x_shape
    out = [(size - 1) * s - 2 * p + d * (k - 1) + e + 1
           for size, s, p, d, k, e in zip((h, w), stride, pads, dilation, kernel, extra)]
    if any(o <= 0 for o in out):
        raise ValueError(f"{op}: given input of shape {list(x_shape)}, the calculated output "
                         f"size {tuple(out)} is too small")
    c_out = w_shape[1] * groups
    return Window(n, c_out, out[0], out[1], *kernel, *stride, *dilation, pads[0], pads[0],
                  pads[1], pads[1], h, w)


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None,  # noqa: A002
                     stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                     groups: int = 1, dilation: Any = 1) -> Tensor:
    """Transposed 2-D convolution ("deconvolution") of an (N, C_in, H, W) input with a
    (C_in, C_out/groups, kH, kW) weight, as ``torch.nn.functional.conv_transpose2d``.

    >>> F.conv_transpose2d(ember.ones(1, 4, 5, 5), ember.ones(4, 2, 3, 3), stride=2).shape
    (1, 2, 11, 11)
    """
    op = "conv_transpose2d"
    if input.ndim == 3:
        return conv_transpose2d(input.unsqueeze(0), weight, bias, stride, padding,
                                output_padding, groups, dilation).squeeze(0)
    if input.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"{op}: expected a 4-D input (N, C_in, H, W) and a 4-D weight "
                         f"(C_in, C_out/groups, kH, kW), got shapes {tuple(input.shape)} and "
                         f"{tuple(weight.shape)}")
    check_hyper(op, (1,), (1,), groups)
    check_conv_shapes(op, tuple(input.shape), tuple(weight.shape), bias, groups, True)
    check_floating_pair(op, input, weight)
    win = transpose_window(tuple(input.shape), tuple(weight.shape), stride, padding,
                           output_padding, dilation, groups)
    tensors = (input, weight) if bias is None else (input, weight, bias)
    return ConvTranspose2d.apply(*tensors, window=win, groups=int(groups))


FUNCTIONS["conv_transpose2d"] = conv_transpose2d
