"""Cache-blocked convolution: im2col and its product a few samples at a time.

A stride-1 3x3 layer's columns are 9x its input: 113 MB for a 128x24x32x32 batch.
Built for the whole batch at once (``conv.to_columns``), they are written to memory
and read back by the matrix product, and the product then needs a layout change
to NCHW. Here the batch is cut into blocks of ``BLOCK_BYTES`` of columns: a block
is built, multiplied and dropped while it is still in the core's cache, and its
product is already NCHW. Two threads take blocks in turn, each with its own
buffers and its products on one BLAS thread (``blas.one_thread``).
Measured on the CIFAR CNN's layers (docs/performance.md, section 12): forward +
backward 20-35% faster than the whole-batch layout, e.g. 81 -> 55 ms for
24 -> 24 channels at 32x32.

Stride-1 windows use conv's wide layout (each output row computed over the whole
padded row): a kernel tap of one channel is then one contiguous run to copy. Padding
is done per block too, into a buffer whose zero frame is written once per thread
(``_PaddedBlock``): padding the whole batch cost ~1 ms per layer and pass, most of it
writing the frame's left and right columns one element per row.

``forward`` is the convolution; the input gradient of a stride-1 convolution is
``forward`` of the output gradient with the flipped kernel (``conv.Conv2d``), and
``weight_grad`` sums ``g @ columns^T`` block by block. Only ``groups == 1``.

This is a blocking of the batch for the cache, not a loop over samples: a block
holds as many samples as fit in ``BLOCK_BYTES`` (11 for a 96-channel 8x8 layer).
"""

from __future__ import annotations

from typing import Any

from ember import blas, parallel
from ember.backend import xp

__all__ = ["forward", "weight_grad", "on_blocks", "BLOCK_BYTES", "THREADS"]

BLOCK_BYTES = 3 << 20  # columns per block: about a core's L2 (2 MiB here) plus some L3
THREADS = True  # as many threads as BLAS has take blocks (tests switch it off)

_as_strided = xp.lib.stride_tricks.as_strided


class _PaddedBlock:
    """One thread's zero-padded copy of a block of samples, flat with ``win.slack``
    elements to spare (the last wide row reads past the image). Its frame and slack are
    zeroed once; each block then only copies its samples into the inside, in cache,
    so the batch is never padded as a whole."""

    def __init__(self, dtype: Any, win: Any, size: int) -> None:
        self.win, self.sample = win, win.c * win.hp * win.wp
        self.buf = xp.zeros(size * self.sample + win.slack, dtype)
        img = self.buf[:size * self.sample].reshape(size, win.c, win.hp, win.wp)
        self.inside = img[:, :, win.top:win.top + win.h, win.left:win.left + win.w]

    def load(self, x: Any, start: int, count: int) -> None:
        xp.copyto(self.inside[:count], x[start:start + count])

    def taps(self, count: int, samples_first: bool) -> Any:
        """A read-only view of the kernel taps of the loaded samples: (count, c, kh, kw,
        oh, wq) when ``samples_first``, else (c, kh, kw, count, oh, wq). In the wide
        layout (wq = wp) one tap of one channel is a single contiguous run of oh*wp
        elements, which NumPy copies about 3x faster than rows of ow."""
        win, item, plane = self.win, self.buf.itemsize, self.win.hp * self.win.wp
        tap = (plane * item, win.dh * win.wp * item, win.dw * item)
        pixel, sample = (win.sh * win.wp * item, win.sw * item), self.sample * item
        sizes = (win.c, win.kh, win.kw)
        if samples_first:
            shape, strides = (count, *sizes, win.oh, win.wq), (sample, *tap, *pixel)
        else:
            shape, strides = (*sizes, count, win.oh, win.wq), (*tap, sample, *pixel)
        return _as_strided(self.buf, shape, strides, writeable=False)


def _samples_per_block(win: Any, itemsize: int) -> int:
    return max(1, BLOCK_BYTES // (win.c * win.kh * win.kw * win.oh * win.wq * itemsize))


def on_blocks(run: Any, n: int, per_block: int) -> list:
    """``run(starts)`` on one thread per BLAS thread, each with products on one BLAS
    thread; ``starts`` is one shared iterator over the blocks' first samples, so a
    thread takes the next block when it is done with one and none waits for a slower
    one at the end (fixed halves left ~10 ms per CIFAR step of such waiting)."""
    starts = iter(range(0, n, per_block))
    count = min(blas.get_num_threads() if THREADS else 1, -(-n // per_block))
    with blas.one_thread():
        return parallel.on_threads(lambda: run(starts), count)


def forward(x: Any, weight: Any, win: Any, bias: Any = None) -> Any:
    """``conv2d`` of an (n, c, h, w) input, padded as ``win`` says, by a (C_out, c*kh*kw)
    weight matrix, plus an optional (C_out,) bias: (n, C_out, oh, ow)."""
    c_out, length = weight.shape[0], win.oh * win.wq
    out = xp.empty((win.n, c_out, win.oh, win.ow), x.dtype)
    per_block = _samples_per_block(win, x.itemsize)
    column = bias.reshape(c_out, 1, 1) if bias is not None else None

    def run(starts: Any) -> None:
        size = min(per_block, win.n)
        padded = _PaddedBlock(x.dtype, win, size)
        cols = xp.empty((size, weight.shape[1], length), x.dtype)
        products = xp.empty((size, c_out, length), x.dtype)
        for start in starts:
            count = min(per_block, win.n - start)
            padded.load(x, start, count)
            taps = padded.taps(count, True)
            xp.copyto(cols[:count].reshape(taps.shape), taps)  # the block's im2col
            product = xp.matmul(weight, cols[:count], out=products[:count])
            product = product.reshape(count, c_out, win.oh, win.wq)[..., :win.ow]
            if column is None:  # NCHW without the wide layout's extra columns
                xp.copyto(out[start:start + count], product)
            else:
                xp.add(product, column, out=out[start:start + count])
    on_blocks(run, win.n, per_block)
    return out


def weight_grad(x: Any, g: Any, win: Any) -> Any:
    """``sum over samples of g[s] @ columns(x)[s]^T`` for an (n, C_out, oh, ow) output
    gradient, as a (C_out, c*kh*kw) matrix (a transposed view): one product per block,
    with the block's pixels as its long inner dimension."""
    c_out, rows = g.shape[1], win.c * win.kh * win.kw
    per_block = _samples_per_block(win, x.itemsize)

    def run(starts: Any) -> Any:
        size = min(per_block, win.n) * win.oh * win.wq
        padded = _PaddedBlock(x.dtype, win, min(per_block, win.n))
        cols, grads = xp.empty(rows * size, x.dtype), xp.empty(c_out * size, g.dtype)
        parts = {}  # block start -> its (rows, C_out) product (transposed: see below)
        for start in starts:
            count = min(per_block, win.n - start)
            padded.load(x, start, count)
            taps = padded.taps(count, False)
            block = cols[:taps.size].reshape(taps.shape)
            xp.copyto(block, taps)
            g_block = grads[:c_out * count * win.oh * win.wq].reshape(
                c_out, count, win.oh, win.wq)
            g_block[..., win.ow:] = 0  # the wide layout's extra columns add nothing
            xp.copyto(g_block[..., :win.ow], g[start:start + count].transpose(1, 0, 2, 3))
            # columns @ g^T rather than g @ columns^T: OpenBLAS runs this orientation of
            # a long inner dimension 1.1-1.4x faster (53 -> 73 GFLOP/s at 24 channels)
            parts[start] = xp.matmul(block.reshape(rows, -1), g_block.reshape(c_out, -1).T)
        return parts
    parts = {start: part for found in on_blocks(run, win.n, per_block)
             for start, part in found.items()}
    # summed in block order, whichever thread made each: the same bits on every run
    ordered = [parts[start] for start in sorted(parts)]
    return sum(ordered[1:], ordered[0]).T
