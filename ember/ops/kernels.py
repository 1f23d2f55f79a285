"""Optional compiled kernels (Numba) for the copies NumPy cannot do in long runs.

im2col and col2im of a small convolution (LeNet-5's layers: 10x10 outputs, 5x5
kernels) are copies and adds of rows of 10-14 elements. NumPy does each of the
25 kernel taps as one strided call whose innermost loop is such a row, and pays
its per-row overhead thousands of times per tap; a compiled loop nest does the
same work without it (measured on LeNet-5's second layer: col2im 1.4-1.9 ms ->
0.24-0.30, im2col 0.5 -> 0.2; docs/performance.md, section 13).

Numba is an optional dependency (``pip install ember[fast]``). Without it, or
with ``EMBER_NUMBA=0``, or after ``set_enabled(False)``, ``enabled()`` is False
and the convolutions use their NumPy formulas, which the tests check these
kernels against. Kernels are compiled on first use and cached on disk
(``cache=True``), and release the GIL, so ``ember.parallel`` runs them on
several threads, each on its own samples.
"""

from __future__ import annotations

import os
from typing import Any

from ember import parallel
from ember.backend import xp

__all__ = ["enabled", "set_enabled", "im2col", "col2im_into", "max_pool_grad_into"]

_wanted = os.environ.get("EMBER_NUMBA", "1") != "0"
_DTYPES = (xp.dtype(xp.float32), xp.dtype(xp.float64))
_kernels: Any = None  # the compiled functions, made on first use (importing numba: ~0.3 s)


def _compile() -> Any:
    """The Numba kernels, or False when Numba is not installed."""
    try:
        import numba
    except ImportError:
        return False
    jit, u = numba.njit(nogil=True, cache=True), numba.uint64
    # Indices are cast to unsigned: NumPy-style negative indexing makes Numba wrap signed
    # ones, and that check in the innermost loop kept it from vectorising (4x slower).

    @jit
    def im2col_kernel(img, cols, sh, sw, dh, dw):
        # cols[n, c, i, j, y, x] = img[n, c, y*sh + i*dh, x*sw + j*dw]
        n_, c_, kh, kw, oh, ow = cols.shape
        for n in range(n_):
            for c in range(c_):
                for i in range(kh):
                    for j in range(kw):
                        for y in range(oh):
                            r = u(y * sh + i * dh)
                            for x in range(ow):
                                cols[n, c, i, j, y, x] = img[n, c, r, u(x * sw + j * dw)]

    @jit
    def col2im_kernel(cols, img, sh, sw, dh, dw):
        # the adjoint: img[n, c, y*sh + i*dh, x*sw + j*dw] += cols[n, c, i, j, y, x]
        n_, c_, kh, kw, oh, ow = cols.shape
        for n in range(n_):
            for c in range(c_):
                for i in range(kh):
                    for j in range(kw):
                        for y in range(oh):
                            r = u(y * sh + i * dh)
                            for x in range(ow):
                                img[n, c, r, u(x * sw + j * dw)] += cols[n, c, i, j, y, x]

    @jit
    def max_pool_grad_kernel(g, which, img, kw, sh, sw, dh, dw):
        # the adjoint: each window's gradient goes to the offset that held its maximum
        n_, c_, oh, ow = g.shape
        for n in range(n_):
            for c in range(c_):
                for y in range(oh):
                    for x in range(ow):
                        o = which[n, c, y, x]
                        img[n, c, u(y * sh + (o // kw) * dh), u(x * sw + (o % kw) * dw)] += \
                            g[n, c, y, x]

    return im2col_kernel, col2im_kernel, max_pool_grad_kernel


def enabled(dtype: Any = None) -> bool:
    """Whether the compiled kernels are in use (Numba installed and not switched off),
    for arrays of ``dtype`` if given (float32 and float64 only: Numba's float16 is partial)."""
    global _kernels
    if not _wanted or (dtype is not None and dtype not in _DTYPES):
        return False
    if _kernels is None:
        _kernels = _compile()
    return bool(_kernels)


def set_enabled(enabled: bool) -> bool:
    """Use the compiled kernels (if Numba is installed) or not; returns the previous
    setting. Tests switch them off to check them against the NumPy formulas."""
    global _wanted
    previous, _wanted = _wanted, bool(enabled)
    return previous


def _as_rows(cols: Any) -> Any:
    """(n, c, kh, kw, oh, ow) as (n, c, kh*kw, oh*ow): the image's rank, so that
    ``parallel.rows`` cuts both by samples."""
    n, c, kh, kw, oh, ow = cols.shape
    return cols.reshape(n, c, kh * kw, oh * ow)


def im2col(img: Any, cols: Any, win: Any) -> None:
    """Fill per-sample columns (n, c, kh, kw, oh, ow) from a padded (n, c, hp, wp) image."""
    kernel, (c, kh, kw, oh, ow) = _kernels[0], cols.shape[1:]

    def run(cols_part: Any, img_part: Any) -> None:
        kernel(img_part, cols_part.reshape(len(cols_part), c, kh, kw, oh, ow),
               win.sh, win.sw, win.dh, win.dw)
    parallel.rows(run, _as_rows(cols), img)


def col2im_into(cols: Any, img: Any, win: Any) -> None:
    """Add per-sample columns (n, c, kh, kw, oh, ow) into a padded (n, c, hp, wp) image
    back where ``im2col`` read them."""
    kernel, (c, kh, kw, oh, ow) = _kernels[1], cols.shape[1:]

    def run(cols_part: Any, img_part: Any) -> None:
        kernel(cols_part.reshape(len(cols_part), c, kh, kw, oh, ow), img_part,
               win.sh, win.sw, win.dh, win.dw)
    parallel.rows(run, _as_rows(cols), img)  # the columns decide whether to split


def max_pool_grad_into(g: Any, which: Any, img: Any, win: Any) -> None:
    """Add each window's gradient into a zeroed padded (n, c, hp, wp) image at the offset
    ``which`` names (the adjoint of ``max_pool``)."""
    def run(img_part: Any, g_part: Any, which_part: Any) -> None:
        _kernels[2](g_part, which_part, img_part, win.kw, win.sh, win.sw, win.dh, win.dw)
    parallel.rows(run, img, g, which)
