"""Share big memory-bound NumPy work (copies, elementwise passes) between threads.

NumPy runs each copy or ufunc call on one core, and only BLAS uses the others.
In a convolution network the copies (im2col, col2im, layout changes) and the
elementwise passes (batch norm, ReLU) then leave a core idle for a third of a
training step. NumPy releases the GIL inside those loops, so slicing one big call
along its first axis and running the slices on a few threads uses every core.

``rows(fn, *arrays)`` calls ``fn`` on matching axis-0 slices of the arrays, on the
calling thread plus pool threads; ``map_rows`` also returns each block's result
(partial sums, say). Only arrays of the first one's rank and length
are sliced; anything else (a broadcast bias, a scalar, None) passes through whole.
Work below ``MIN_BYTES`` runs as one plain call: a hand-off costs ~20 us.

The thread count follows ``ember.blas.get_num_threads()`` (so ``EMBER_NUM_THREADS``
and ``ember.blas.set_num_threads`` govern both) and is 1 when the BLAS pool is
not found.

**On by default** since session 6 (``set_enabled(False)`` or ``EMBER_PARALLEL=0``
turns it off). It was off before: each pass alone ran 1.2-1.4x faster on two
threads, but a whole CIFAR step ran ~8% slower, because OpenBLAS's worker kept
spinning on the second core after every convolution GEMM and a copy thread
competed with it (docs/performance.md, section 8). Convolutions now run their
products on one BLAS thread per Python thread (ember/ops/conv_blocked.py), that
worker stays idle, and the threaded passes make the CIFAR step 5-10% faster and
LeNet-5 inference at batch 1000 ~15% faster (section 12). The tests check both
settings give the same results.

>>> out = np.empty((1000, 1000), np.float32)
>>> previous = ember.parallel.set_enabled(True)
>>> ember.parallel.rows(np.copyto, out, np.ones((1000, 1000), np.float32))
>>> float(out.sum())
1000000.0
>>> _ = ember.parallel.set_enabled(previous)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ember import blas

__all__ = ["rows", "map_rows", "on_threads", "set_enabled", "MIN_BYTES"]

MIN_BYTES = 1 << 21  # 2 MiB: smaller calls finish in about the time a hand-off takes
_enabled = os.environ.get("EMBER_PARALLEL", "1") != "0"
_executor: ThreadPoolExecutor | None = None


def set_enabled(enabled: bool) -> bool:
    """Turn splitting on or off; returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


def _threads(first: Any, enabled: bool | None = None) -> int:
    if not (_enabled if enabled is None else enabled) or first.nbytes < MIN_BYTES or \
            first.ndim == 0:
        return 1
    return max(1, min(blas.get_num_threads(), first.shape[0]))


def _forget_pool() -> None:
    """A forked child has the pool object but not its threads: start a new one there."""
    global _executor
    _executor = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _pool(threads: int) -> ThreadPoolExecutor:
    global _executor
    if _executor is None or _executor._max_workers < threads - 1:
        _executor = ThreadPoolExecutor(threads - 1, thread_name_prefix="ember-parallel")
        blas.note_own_threads_started()  # mid-sized products keep to one thread from now
    return _executor


def _slicer(first: Any) -> Callable[[Any, int, int], Any]:
    ndim, n = first.ndim, first.shape[0]

    def cut(a: Any, start: int, stop: int) -> Any:
        if getattr(a, "ndim", 0) == ndim and a.shape[0] == n:
            return a[start:stop]
        return a  # broadcast against the rows, not split
    return cut


def map_rows(fn: Callable[..., Any], *arrays: Any, enabled: bool | None = None) -> list:
    """``[fn(*[a[i:j] for a in arrays]) for each row block]``, the blocks run in parallel
    when the first array is big; ``[fn(*arrays)]`` when it is not. ``enabled`` overrides
    ``set_enabled`` for this call (a caller that knows its work splits well)."""
    first = arrays[0]
    threads = _threads(first, enabled)
    if threads == 1:
        return [fn(*arrays)]
    n = first.shape[0]
    bounds = [n * i // threads for i in range(threads + 1)]
    cut = _slicer(first)
    blocks = [[cut(a, bounds[i], bounds[i + 1]) for a in arrays] for i in range(threads)]
    futures = [_pool(threads).submit(fn, *block) for block in blocks[1:]]
    results = [fn(*blocks[0])]
    return results + [future.result() for future in futures]


def rows(fn: Callable[..., Any], *arrays: Any, enabled: bool | None = None) -> None:
    """``fn(*arrays)``, run as ``fn(*[a[i:j] for a in arrays])`` on row blocks in parallel
    when the first array is big. ``fn``'s result is dropped: it must write in place."""
    if arrays[0].nbytes < MIN_BYTES:  # most calls (an MLP's activations): straight through
        fn(*arrays)
        return
    map_rows(fn, *arrays, enabled=enabled)


def on_threads(fn: Callable[[], Any], threads: int) -> list:
    """``[fn() for each of `threads` threads]``, run in parallel (the first on the calling
    thread). For callers that share out their work themselves, e.g. by taking items
    from one shared iterator (ember/ops/conv_blocked.py)."""
    futures = [_pool(threads).submit(fn) for _ in range(1, threads)]
    return [fn()] + [future.result() for future in futures]
