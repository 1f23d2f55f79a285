"""The one place ember names its array library, and the process settings it tunes.

Every op reaches NumPy through ``xp`` so that a NumPy-compatible GPU library
(CuPy) can stand in later without touching the ops.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from typing import Any

import numpy as xp

__all__ = ["xp", "tune_malloc", "address", "offset_empty", "strided_friendly"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def tune_malloc() -> bool:
    """Ask glibc to keep large freed blocks for reuse instead of unmapping them.

    Training allocates the same big temporaries (im2col columns, activations,
    gradients) every step. By default glibc serves each one with a fresh mmap,
    so every step pays a page fault per 4 KiB on first touch; on LeNet-5 that
    cost more than the arithmetic (a step went from ~6.4 ms to ~2.8 ms for one
    conv layer). PyTorch avoids it with its caching allocator; this is ember's
    one-line equivalent. Set ``EMBER_MALLOC_TUNING=0`` to leave malloc alone.
    Returns whether the settings were applied.
    """
    if os.environ.get("EMBER_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
    return all(mallopt(option, value) == 1 for option, value in (
        (_M_MMAP_THRESHOLD, 1 << 30),   # blocks below 1 GiB come from the reusable heap
        (_M_TRIM_THRESHOLD, 1 << 30),   # give memory back only past 1 GiB of free top
        (_M_TOP_PAD, 64 << 20)))        # grow the heap 64 MiB at a time


MALLOC_TUNED = tune_malloc()


# ---------------------------------------------------------------- strided views
CACHE_LINE = 64
VIEW_OFFSET = 16  # bytes past a cache-line boundary where strided views measured full speed
FRIENDLY_OFFSETS = (16, 32, 48)
FRIENDLY_MIN_BYTES = 1 << 20  # smaller arrays showed no difference


def address(array: Any) -> int:
    """Where an array's data starts in memory (NumPy arrays)."""
    return array.__array_interface__["data"][0]


def offset_empty(shape: tuple, dtype: Any) -> Any:
    """An uninitialised C-contiguous array whose data starts ``VIEW_OFFSET`` bytes past
    a 64-byte boundary.

    Why: on the machine ember is developed on, NumPy's copies through stride-2 views
    (the taps of a 2x2 pool) ran ~5x slower when a view started within a few bytes
    of a 64-byte boundary: 4.1 vs 0.6 ms for one tap of a 128x24x32x32 input, and a
    whole max-pool forward 19 vs 4 ms (docs/performance.md, section 11). malloc puts
    large arrays at any multiple of 16, so a quarter of them start on a boundary.
    """
    dtype = xp.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = xp.empty(nbytes + CACHE_LINE, xp.uint8)
    start = (VIEW_OFFSET - address(raw)) % CACHE_LINE
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def strided_friendly(array: Any) -> Any:
    """``array``, or a copy of it placed by ``offset_empty`` when it is big and starts
    where strided views of it would run slowly. Values are the same either way."""
    if array.nbytes < FRIENDLY_MIN_BYTES or (
            array.flags.c_contiguous and address(array) % CACHE_LINE in FRIENDLY_OFFSETS):
        return array
    out = offset_empty(array.shape, array.dtype)
    xp.copyto(out, array)
    return out
