"""The one place ember names its array library, and the process settings it tunes.

Every op reaches NumPy through ``xp`` so that a NumPy-compatible GPU library
(CuPy) can stand in later without touching the ops.
"""

from __future__ import annotations

import ctypes
import os
import sys

import numpy as xp

__all__ = ["xp", "tune_malloc"]

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
