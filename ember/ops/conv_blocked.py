"""Cache-blocked convolution: im2col and its product a few samples at a time.

A stride-1 3x3 layer's columns are 9x its input: 113 MB for a 128x24x32x32 batch.
Built for the whole batch at once (``conv.to_columns``), they are written to memory
and read back by the matrix product, and the product then needs a layout change
to NCHW. Here the batch is cut into blocks of ``BLOCK_BYTES`` of columns: a block
is built, multiplied and dropped while it is still in the core's cache, and its
product is already NCHW. The two halves of the batch run on two threads, each
with its own buffers and products on one BLAS thread (``blas.one_thread``).
Measured on the CIFAR CNN's layers (docs/performance.md, section 12): forward +
backward 20-35% faster than the whole-batch layout, e.g. 81 -> 55 ms for
24 -> 24 channels at 32x32.

``forward`` is the convolution; the input gradient of a stride-1 convolution is
``forward`` of the output gradient with the flipped kernel (``conv.Conv2d``), and
``weight_grad`` sums ``g @ columns^T`` block by block. Only ``groups == 1``.

This is a blocking of the batch for the cache, not a loop over samples: a block
holds as many samples as fit in ``BLOCK_BYTES`` (16 for a 96-channel 8x8 layer).
"""

from __future__ import annotations

from typing import Any

from ember import blas, parallel
from ember.backend import xp

__all__ = ["forward", "weight_grad", "BLOCK_BYTES", "THREADS"]

BLOCK_BYTES = 3 << 20  # columns per block: about a core's L2 (2 MiB here) plus some L3
THREADS = True  # split the batch between BLAS's thread count (tests switch it off)

_as_strided = xp.lib.stride_tricks.as_strided


def _padded(x: Any, win: Any) -> Any:
    """The zero-padded (n, c, hp, wp) input (``x`` itself when there is no padding)."""
    if not win.padded:
        return xp.ascontiguousarray(x)
    img = xp.zeros((win.n, win.c, win.hp, win.wp), x.dtype)
    img[:, :, win.top:win.top + win.h, win.left:win.left + win.w] = x
    return img


def _taps(img: Any, win: Any, start: int, count: int, samples_first: bool) -> Any:
    """A read-only view of the kernel taps of samples ``start:start+count``:
    (count, c, kh, kw, oh, ow) if ``samples_first``, else (c, kh, kw, count, oh, ow)."""
    s_n, s_c, s_h, s_w = img.strides
    tap = (s_c, win.dh * s_h, win.dw * s_w)
    pixel = (win.sh * s_h, win.sw * s_w)
    sizes = (win.c, win.kh, win.kw)
    if samples_first:
        shape, strides = (count, *sizes, win.oh, win.ow), (s_n, *tap, *pixel)
    else:
        shape, strides = (*sizes, count, win.oh, win.ow), (*tap, s_n, *pixel)
    return _as_strided(img[start:], shape, strides, writeable=False)


def _samples_per_block(win: Any, itemsize: int) -> int:
    return max(1, BLOCK_BYTES // (win.c * win.kh * win.kw * win.oh * win.ow * itemsize))


def forward(x: Any, weight: Any, win: Any, bias: Any = None) -> Any:
    """``conv2d`` of an (n, c, h, w) input by a (C_out, c*kh*kw) weight matrix, plus an
    optional (C_out,) bias: (n, C_out, oh, ow)."""
    img = _padded(x, win)
    c_out, length = weight.shape[0], win.oh * win.ow
    out = xp.empty((win.n, c_out, length), x.dtype)
    per_block = _samples_per_block(win, x.itemsize)
    column = bias.reshape(c_out, 1) if bias is not None else None

    def run(lo: int, hi: int) -> None:
        cols = xp.empty((min(per_block, hi - lo), weight.shape[1], length), x.dtype)
        for start in range(lo, hi, per_block):
            count = min(per_block, hi - start)
            taps = _taps(img, win, start, count, True)
            block = cols[:count]
            xp.copyto(block.reshape(taps.shape), taps)  # the block's im2col
            product = out[start:start + count]
            xp.matmul(weight, block, out=product)
            if column is not None:
                product += column  # while the block is in cache
    with blas.one_thread() as threads:
        parallel.spans(run, win.n, threads if THREADS else 1)
    return out.reshape(win.n, c_out, win.oh, win.ow)


def weight_grad(x: Any, g: Any, win: Any) -> Any:
    """``sum over samples of g[s] @ columns(x)[s]^T`` for an (n, C_out, oh, ow) output
    gradient, as a (C_out, c*kh*kw) matrix: one product per block with the block's
    pixels as its long inner dimension."""
    img = _padded(x, win)
    c_out, length = g.shape[1], win.oh * win.ow
    rows = win.c * win.kh * win.kw
    per_block = _samples_per_block(win, x.itemsize)
    gy = g.reshape(win.n, c_out, length)

    def run(lo: int, hi: int) -> Any:
        size = min(per_block, hi - lo)
        cols = xp.empty(rows * size * length, x.dtype)
        grads = xp.empty(c_out * size * length, g.dtype)
        total = xp.zeros((c_out, rows), g.dtype)
        part = xp.empty_like(total)
        for start in range(lo, hi, per_block):
            count = min(per_block, hi - start)
            taps = _taps(img, win, start, count, False)
            block = cols[:taps.size].reshape(taps.shape)
            xp.copyto(block, taps)
            g_block = grads[:c_out * count * length].reshape(c_out, count, length)
            xp.copyto(g_block, gy[start:start + count].transpose(1, 0, 2))
            xp.matmul(g_block.reshape(c_out, -1), block.reshape(rows, -1).T, out=part)
            total += part
        return total
    with blas.one_thread() as threads:
        totals = parallel.spans(run, win.n, threads if THREADS else 1)
    return sum(totals[1:], totals[0])
