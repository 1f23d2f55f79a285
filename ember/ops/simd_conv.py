"""Direct float32 convolutions on ``simd``'s AVX-512 vectors, for stride-1 layers.

Why: a small layer's im2col and products (LeNet-5's second layer: 16 x 150 by 150 x 100 a
sample) are short products whose tiles are mostly edge, after a copy of the input 25
times over. torch's oneDNN computes such layers directly; so does this module, from the
padded input, with no columns built (docs/performance.md, section 34). ``conv.Conv2d``
decides which layers run here: every per-sample-sized one, and blocked ones whose output
rows fill the vectors (the CIFAR CNN's 32x32 and 16x16 layers, whose forward is then the
columns' products bit for bit, without the columns).

How (``row_kernel``): sixteen output pixels of one output row are one vector, a row of
``ow`` pixels ``ceil(ow / 16)`` vectors, the last with ``ow % 16`` lanes stored
(``vstore_first``). For one kernel tap the sixteen pixels read one contiguous run of the
padded input. A tile is 6 output channels by two such vectors: 12 vectors of sums, and per
tap two loads of the input and six broadcast weights, so the loop is bound by the FMA
units (~95% of one core's peak on LeNet-5's first layer; lanes past a row's end are the
waste: 3/8 for a 10-pixel row).

The weight gradient is a tile of dot products over every sample's pixels, each weight's
sum one vector of 16 lanes: the pixels of a row as the lanes (``weight_grad_kernel``, 6
output channels by 3 taps) or the output channels (``channel_grad_kernel``, 16 by 12
taps), whichever fills more of them. The lanes restart every sample and add into the
tile's totals (``add_into``), which keeps the rounding error at the columns' level. Lanes
past a row's end load as zeros from both operands (``vload_first``), so no 0 * inf appears
that the sum would not have. It runs where rows or channels fill the vectors
(``weight_grad_fits``); the input gradient is ``forward``'s or the layer's layout's
(``conv.direct_conv_grads``).

The sums run in another order than OpenBLAS's products, so results agree with them to
rounding. Each output depends only on its operands: the same bits on any number of threads.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from ember.backend import xp
from ember.ops import conv_blocked, kernels, simd

__all__ = ["enabled", "fits", "forward", "weight_grad", "weight_grad_fits", "rows_fill",
           "padded", "ENABLED", "MIN_LANES"]

ENABLED = True  # tests and probes switch the direct path off
MIN_LANES = 0.75  # rows_fill, weight_grad_fits
CHUNKS = 8  # work items per call, shared out between threads (_on_threads)
BLOCK_BYTES = 1 << 19  # forward: padded samples per block (half of a core's L2 here)
SKIP_PADDING = True  # forward: skip the padding's rows for a finite weight (tests switch it)
SLACK = 16  # elements past a padded input (plus kw) that a row's last vector may read
_lock = threading.Lock()
_compiled: Any = None


def enabled() -> bool:
    """Whether the direct convolutions run in this process: ``ENABLED`` and an AVX-512 CPU
    with Numba (``simd.vectors_wanted``)."""
    return ENABLED and bool(_kernels())


def fits(win: Any, groups: int, dtype: Any) -> bool:
    """Whether a conv2d can run here (``conv.Conv2d`` decides which do): ``enabled()``,
    float32, one group, stride and dilation 1."""
    return dtype == xp.float32 and groups == 1 and win.n > 0 and \
        (win.sh, win.sw, win.dh, win.dw) == (1, 1, 1, 1) and enabled()


def _kernels() -> Any:
    """The compiled kernels where ``simd.vectors_wanted()``, else None (compiled once)."""
    global _compiled
    if not simd.vectors_wanted():
        return None
    if _compiled is None:
        with _lock:
            if _compiled is None:
                _compiled = _compile()
    return _compiled


def _compile() -> Any:
    """The kernels, compiled with ``simd``'s vector intrinsics as module globals (where
    Numba looks them up, as in ``simd._compile``)."""
    global vload, vstore, vsplat, vzero, vfma, vadd, vload_first, vstore_first
    import numba
    vload, vstore, vsplat, vzero, vfma = simd.vload, simd.vstore, simd.vsplat, simd.vzero, \
        simd.vfma
    vadd = simd.vadd
    vload_first, vstore_first = simd.vload_first, simd.vstore_first
    jit = kernels.jit_compiler(numba)
    for name in ("row_kernel", "add_into", "tap_offset", "weight_grad_tile",
                 "weight_grad_kernel", "channel_grad_tile", "channel_grad_kernel"):  # callees first
        globals()[name] = jit(globals()[name])
    return SimpleNamespace(rows=row_kernel, weight_grad=weight_grad_kernel,
                           channel_grad=channel_grad_kernel)


def padded(x: Any, win: Any) -> Any:
    """The padded input, flat, with ``SLACK + kw`` elements to spare: the last vector of an
    output row reads up to 15 + kw - 1 elements past the row's last pixel."""
    n = x.shape[0]
    buf = xp.zeros(n * win.c * win.hp * win.wp + SLACK + win.kw, x.dtype)
    img = buf[:n * win.c * win.hp * win.wp].reshape(n, win.c, win.hp, win.wp)
    img[:, :, win.top:win.top + win.h, win.left:win.left + win.w] = x
    return buf


def forward(x: Any, weight: Any, win: Any, bias: Any = None) -> Any:
    """conv2d of an (n, c, h, w) input, padded as ``win`` says, by an (C_out, c, kh, kw)
    weight, plus an optional bias: (n, C_out, oh, ow). The threads take blocks of
    ``BLOCK_BYTES`` of padded samples in turn, each padding its block into its own buffer
    (padding the whole batch first, a pass over memory, cost as much as the kernel saved
    on the CIFAR CNN's 16x16 layers). The kernel skips the padding's rows where the weight
    is finite (``row_kernel``)."""
    n, c_out, dtype = win.n, weight.shape[0], x.dtype
    out = xp.empty((n, c_out, win.oh, win.ow), dtype)
    w = xp.ascontiguousarray(weight, dtype=dtype).reshape(-1)
    shift = xp.zeros(c_out, dtype) if bias is None else xp.ascontiguousarray(bias, dtype=dtype)
    per = max(1, min(-(-n // CHUNKS), BLOCK_BYTES // (win.c * win.hp * win.wp * x.itemsize)))
    kernel = _kernels().rows
    # 0 * w adds nothing unless w is inf or NaN: then the padding's rows are multiplied too,
    # for the NaN pattern of the columns' products, which meet every padding zero
    skip = (win.top, win.bottom) if SKIP_PADDING and xp.isfinite(w).all() else (0, 0)

    def run(starts: Any) -> None:
        block = conv_blocked.PaddedBlock(dtype, win, min(per, n), True, slack=SLACK + win.kw)
        for start in starts:
            count = min(per, n - start)
            block.load(x, start, count)
            kernel(block.buf, w, shift, out[start:start + count].reshape(-1), 0, count, win.c,
                   win.hp, win.wp, c_out, win.kh, win.kw, win.oh, win.ow, *skip)
    conv_blocked.on_blocks(run, n, per)
    return out


def filled(size: int) -> float:
    """The share of the lanes that ``size`` items fill in vectors of 16."""
    return size / (16 * -(-size // 16))


def rows_fill(width: int) -> bool:
    """Whether rows of ``width`` output pixels fill at least ``MIN_LANES`` of the vectors
    they take: where ``forward`` beats the blocked layout's columns and products (the CIFAR
    CNN's 32x32 and 16x16 layers: 24 -> 24 channels 5.9-6.7 -> 4.4-5.4 ms, 48 -> 48 4.4 ->
    3.2 ms; its 8x8 ones, half the lanes empty, 2.2 -> 3.0 ms)."""
    return filled(width) >= MIN_LANES


def weight_grad_fits(win: Any, c_out: int) -> bool:
    """Whether ``weight_grad`` pays: its pixels' rows or its output channels fill at least
    ``MIN_LANES`` of the vectors they take. LeNet-5's first layer (rows of 28: 7/8 full;
    6 channels) and second (16 channels; rows of 10: 5/8, which ran 1.7x slower than the
    columns' products) do; the columns take the rest."""
    return max(filled(win.ow), filled(c_out)) >= MIN_LANES


def weight_grad(x_padded: Any, g: Any, win: Any) -> Any:
    """sum over samples and pixels of ``g * x`` shifted by each tap: (C_out, c*kh*kw), with
    the pixels of a row (``weight_grad_kernel``) or the output channels
    (``channel_grad_kernel``) as the lanes, whichever fills more of them."""
    n, c_out, taps = win.n, g.shape[1], win.c * win.kh * win.kw
    out = xp.empty((c_out, taps), g.dtype)
    if filled(c_out) > filled(win.ow):
        run, tiles = _kernels().channel_grad, -(-c_out // 16) * -(-taps // 12)
        g = xp.ascontiguousarray(g.transpose(0, 2, 3, 1))  # (n, oh, ow, C_out)
    else:
        run, tiles = _kernels().weight_grad, -(-c_out // 6) * -(-taps // 3)
        g = xp.ascontiguousarray(g)

    def part(first: int, stop: int) -> None:
        sums = xp.empty(18 * 16, g.dtype)  # the tiles' vectors of sums, added up at the end
        run(x_padded, g.reshape(-1), out.reshape(-1), sums, first, stop, n, win.c, win.hp,
            win.wp, c_out, win.kh, win.kw, win.oh, win.ow)
    _on_threads(part, tiles)
    return out


def _on_threads(part: Any, count: int) -> None:
    """``part(first, stop)`` over ``count`` items in ``CHUNKS`` chunks, which the threads
    BLAS has take in turn (``conv_blocked.on_blocks``): on this VM the second core's speed
    comes and goes, and fixed halves would wait for the slower one."""
    per = max(1, -(-count // CHUNKS))

    def run(starts: Any) -> None:
        for start in starts:
            part(start, min(start + per, count))
    conv_blocked.on_blocks(run, count, per)


# The kernels. Indices are flat offsets into C-contiguous arrays. A sample's output is
# cut into vectors of 16 pixels along each output row (``across = ceil(ow / 16)`` a row),
# the last of a row ``ow % 16`` wide where ow is not a multiple of 16: vector v is row
# v // across, from column 16 * (v % across).

def row_kernel(x, w, bias, out, first, stop, c, hp, wp, c_out, kh, kw, oh, ow, top, bottom):
    """out[s, r, y, x] = bias[r] + the sum over (ci, ky, kx) of w[r, ci, ky, kx] *
    x[s, ci, y + ky, x + kx] for samples first:stop: tiles of 6 output channels by two
    vectors of pixels, whose sums start at the bias (no pass over the output to add it).
    Kernel rows that fall on the first ``top`` or the last ``bottom`` rows of x for both
    vectors are skipped (the padding's zero rows, for a finite weight): a gradient padded
    by kh - 1 on each side (LeNet-5's second layer) has ~1/4 of its taps there."""
    taps, plane, across = c * kh * kw, hp * wp, (ow + 15) // 16
    vectors = oh * across
    last = (c_out - 1) * taps
    for s in range(first, stop):
        x_at, o_at = s * c * plane, s * c_out * oh * ow
        for row in range(0, c_out, 6):
            w0 = row * taps
            w1, w2 = min(w0 + taps, last), min(w0 + 2 * taps, last)
            w3, w4, w5 = min(w0 + 3 * taps, last), min(w0 + 4 * taps, last), \
                min(w0 + 5 * taps, last)
            for v in range(0, vectors, 2):
                u = min(v + 1, vectors - 1)
                y0, x0, y1, x1 = v // across, 16 * (v % across), u // across, 16 * (u % across)
                b0, b1 = x_at + y0 * wp + x0, x_at + y1 * wp + x1
                s00 = s01 = vsplat(bias, row)
                s10 = s11 = vsplat(bias, min(row + 1, c_out - 1))
                s20 = s21 = vsplat(bias, min(row + 2, c_out - 1))
                s30 = s31 = vsplat(bias, min(row + 3, c_out - 1))
                s40 = s41 = vsplat(bias, min(row + 4, c_out - 1))
                s50 = s51 = vsplat(bias, min(row + 5, c_out - 1))
                for ci in range(c):
                    for ky in range(max(0, top - y1), min(kh, hp - bottom - y0)):
                        at = ci * plane + ky * wp
                        tap = (ci * kh + ky) * kw
                        for kx in range(kw):
                            p0, p1 = vload(x, b0 + at + kx), vload(x, b1 + at + kx)
                            t = tap + kx
                            a = vsplat(w, w0 + t)
                            s00, s01 = vfma(a, p0, s00), vfma(a, p1, s01)
                            a = vsplat(w, w1 + t)
                            s10, s11 = vfma(a, p0, s10), vfma(a, p1, s11)
                            a = vsplat(w, w2 + t)
                            s20, s21 = vfma(a, p0, s20), vfma(a, p1, s21)
                            a = vsplat(w, w3 + t)
                            s30, s31 = vfma(a, p0, s30), vfma(a, p1, s31)
                            a = vsplat(w, w4 + t)
                            s40, s41 = vfma(a, p0, s40), vfma(a, p1, s41)
                            a = vsplat(w, w5 + t)
                            s50, s51 = vfma(a, p0, s50), vfma(a, p1, s51)
                count = min(6, c_out - row)
                n0, n1 = min(16, ow - x0), (min(16, ow - x1) if u > v else 0)
                to0 = o_at + row * oh * ow + y0 * ow + x0
                to1 = o_at + row * oh * ow + y1 * ow + x1
                step = oh * ow
                vstore_first(out, to0, s00, n0), vstore_first(out, to1, s01, n1)
                if count > 1:
                    vstore_first(out, to0 + step, s10, n0), vstore_first(out, to1 + step, s11, n1)
                if count > 2:
                    vstore_first(out, to0 + 2 * step, s20, n0)
                    vstore_first(out, to1 + 2 * step, s21, n1)
                if count > 3:
                    vstore_first(out, to0 + 3 * step, s30, n0)
                    vstore_first(out, to1 + 3 * step, s31, n1)
                if count > 4:
                    vstore_first(out, to0 + 4 * step, s40, n0)
                    vstore_first(out, to1 + 4 * step, s41, n1)
                if count > 5:
                    vstore_first(out, to0 + 5 * step, s50, n0)
                    vstore_first(out, to1 + 5 * step, s51, n1)


def add_into(sums, at, value):
    """sums[at:at + 16] += value: a sample's partial sums into a tile's totals, so that
    each lane adds a sample's ~oh*ow/16 products at a time (summed over a whole batch of
    32x32 images in one chain, each lane's 8192 terms had 3.5x the error of the columns'
    per-sample products)."""
    vstore(sums, at, vadd(vload(sums, at), value))


def weight_grad_kernel(x, g, out, sums, first, stop, n, c, hp, wp, c_out, kh, kw, oh, ow):
    """out[r, t] for tiles first:stop of 6 output channels by 3 taps (row-major over the
    (C_out, c*kh*kw) output): the sum over samples and pixels of g[s, r] times x[s] at
    each tap's offset, in 16 lanes, then lane by lane (``weight_grad_tile``)."""
    taps = c * kh * kw
    across = (taps + 2) // 3
    for tile in range(first, stop):
        weight_grad_tile(x, g, out, sums, 6 * (tile // across), 3 * (tile % across), n, c,
                         hp, wp, c_out, kh, kw, oh, ow)


def weight_grad_tile(x, g, out, sums, row, tap, n, c, hp, wp, c_out, kh, kw, oh, ow):
    """One tile of ``weight_grad_kernel``: output channels row:row + 6, taps tap:tap + 3
    (18 sums, 3 + 1 operands: 22 of the 32 vector registers). Lanes past a row's end load
    as zeros from both operands (no 0 * inf)."""
    taps, plane = c * kh * kw, hp * wp
    o0, o1 = tap_offset(tap, taps, plane, wp, kh, kw), tap_offset(tap + 1, taps, plane, wp, kh, kw)
    o2 = tap_offset(tap + 2, taps, plane, wp, kh, kw)
    size = oh * ow
    last = (c_out - 1) * size
    r0 = row * size
    r1, r2, r3 = min(r0 + size, last), min(r0 + 2 * size, last), min(r0 + 3 * size, last)
    r4, r5 = min(r0 + 4 * size, last), min(r0 + 5 * size, last)
    for i in range(18 * 16):
        sums[i] = 0.0
    for s in range(n):
        a00, a01, a02, a10, a11, a12 = vzero(), vzero(), vzero(), vzero(), vzero(), vzero()
        a20, a21, a22, a30, a31, a32 = vzero(), vzero(), vzero(), vzero(), vzero(), vzero()
        a40, a41, a42, a50, a51, a52 = vzero(), vzero(), vzero(), vzero(), vzero(), vzero()
        for y in range(oh):
            x_at, g_at = s * c * plane + y * wp, s * c_out * size + y * ow
            for col in range(0, ow, 16):
                k = min(16, ow - col)
                xa, ga = x_at + col, g_at + col
                x0, x1, x2 = vload_first(x, xa + o0, k), vload_first(x, xa + o1, k), \
                    vload_first(x, xa + o2, k)
                v = vload_first(g, ga + r0, k)
                a00, a01, a02 = vfma(v, x0, a00), vfma(v, x1, a01), vfma(v, x2, a02)
                v = vload_first(g, ga + r1, k)
                a10, a11, a12 = vfma(v, x0, a10), vfma(v, x1, a11), vfma(v, x2, a12)
                v = vload_first(g, ga + r2, k)
                a20, a21, a22 = vfma(v, x0, a20), vfma(v, x1, a21), vfma(v, x2, a22)
                v = vload_first(g, ga + r3, k)
                a30, a31, a32 = vfma(v, x0, a30), vfma(v, x1, a31), vfma(v, x2, a32)
                v = vload_first(g, ga + r4, k)
                a40, a41, a42 = vfma(v, x0, a40), vfma(v, x1, a41), vfma(v, x2, a42)
                v = vload_first(g, ga + r5, k)
                a50, a51, a52 = vfma(v, x0, a50), vfma(v, x1, a51), vfma(v, x2, a52)
        add_into(sums, 0, a00), add_into(sums, 16, a01), add_into(sums, 32, a02)
        add_into(sums, 48, a10), add_into(sums, 64, a11), add_into(sums, 80, a12)
        add_into(sums, 96, a20), add_into(sums, 112, a21), add_into(sums, 128, a22)
        add_into(sums, 144, a30), add_into(sums, 160, a31), add_into(sums, 176, a32)
        add_into(sums, 192, a40), add_into(sums, 208, a41), add_into(sums, 224, a42)
        add_into(sums, 240, a50), add_into(sums, 256, a51), add_into(sums, 272, a52)
    for r in range(min(6, c_out - row)):
        for j in range(min(3, taps - tap)):
            total = sums[16 * (3 * r + j)]
            for lane in range(1, 16):
                total += sums[16 * (3 * r + j) + lane]
            out[(row + r) * taps + tap + j] = total


def channel_grad_kernel(x, gt, out, sums, first, stop, n, c, hp, wp, c_out, kh, kw, oh, ow):
    """``weight_grad_kernel`` with output channels as the lanes: tiles first:stop of 16
    channels by 12 taps, each tap's sum one vector of 16 channels, over the pixels of every
    sample of ``gt``, the output gradient as (n, oh, ow, C_out)."""
    taps = c * kh * kw
    across = (taps + 11) // 12
    for tile in range(first, stop):
        channel_grad_tile(x, gt, out, sums, 16 * (tile // across), 12 * (tile % across), n, c,
                          hp, wp, c_out, kh, kw, oh, ow)


def tap_offset(t, taps, plane, wp, kh, kw):
    """Where tap ``t`` (clamped to the last) reads, from a sample's first padded pixel."""
    t = min(t, taps - 1)
    return t // (kh * kw) * plane + t % (kh * kw) // kw * wp + t % kw


def channel_grad_tile(x, gt, out, sums, row, tap, n, c, hp, wp, c_out, kh, kw, oh, ow):
    """One tile of ``channel_grad_kernel``: channels row:row + 16 (lanes past C_out load as
    zeros), taps tap:tap + 12 (12 sums, a broadcast pixel for each)."""
    taps, plane, lanes = c * kh * kw, hp * wp, min(16, c_out - row)
    f0, f1 = tap_offset(tap, taps, plane, wp, kh, kw), tap_offset(tap + 1, taps, plane, wp, kh, kw)
    f2, f3 = tap_offset(tap + 2, taps, plane, wp, kh, kw), \
        tap_offset(tap + 3, taps, plane, wp, kh, kw)
    f4, f5 = tap_offset(tap + 4, taps, plane, wp, kh, kw), \
        tap_offset(tap + 5, taps, plane, wp, kh, kw)
    f6, f7 = tap_offset(tap + 6, taps, plane, wp, kh, kw), \
        tap_offset(tap + 7, taps, plane, wp, kh, kw)
    f8, f9 = tap_offset(tap + 8, taps, plane, wp, kh, kw), \
        tap_offset(tap + 9, taps, plane, wp, kh, kw)
    f10, f11 = tap_offset(tap + 10, taps, plane, wp, kh, kw), \
        tap_offset(tap + 11, taps, plane, wp, kh, kw)
    for i in range(12 * 16):
        sums[i] = 0.0
    for s in range(n):
        a0, a1, a2, a3, a4, a5 = vzero(), vzero(), vzero(), vzero(), vzero(), vzero()
        a6, a7, a8, a9, a10, a11 = vzero(), vzero(), vzero(), vzero(), vzero(), vzero()
        for y in range(oh):
            xa, ga = s * c * plane + y * wp, (s * oh + y) * ow * c_out + row
            for col in range(ow):
                v = vload_first(gt, ga + col * c_out, lanes)
                at = xa + col
                a0, a1 = vfma(vsplat(x, at + f0), v, a0), vfma(vsplat(x, at + f1), v, a1)
                a2, a3 = vfma(vsplat(x, at + f2), v, a2), vfma(vsplat(x, at + f3), v, a3)
                a4, a5 = vfma(vsplat(x, at + f4), v, a4), vfma(vsplat(x, at + f5), v, a5)
                a6, a7 = vfma(vsplat(x, at + f6), v, a6), vfma(vsplat(x, at + f7), v, a7)
                a8, a9 = vfma(vsplat(x, at + f8), v, a8), vfma(vsplat(x, at + f9), v, a9)
                a10, a11 = vfma(vsplat(x, at + f10), v, a10), vfma(vsplat(x, at + f11), v, a11)
        add_into(sums, 0, a0), add_into(sums, 16, a1), add_into(sums, 32, a2)
        add_into(sums, 48, a3), add_into(sums, 64, a4), add_into(sums, 80, a5)
        add_into(sums, 96, a6), add_into(sums, 112, a7), add_into(sums, 128, a8)
        add_into(sums, 144, a9), add_into(sums, 160, a10), add_into(sums, 176, a11)
    for j in range(min(12, taps - tap)):
        for lane in range(lanes):
            out[(row + lane) * taps + tap + j] = sums[16 * j + lane]
