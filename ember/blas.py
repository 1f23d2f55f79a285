"""How many threads NumPy's BLAS uses: ``set_num_threads``, ``get_num_threads``, and
``matmul``, which runs mid-sized products on one thread.

Why: OpenBLAS splits every product above a tiny size between all its threads,
and its threads busy-wait for work after each call. For the products of small
models (an MLP's 64x784 @ 784x100 takes ~0.1 ms) the hand-off costs more than
the second core saves, and when other processes keep the cores busy it is far
worse: a waiting thread that lost its core stalls the product for a scheduler
time slice. Measured on a loaded 2-core machine, an MLP epoch ran 5-25x slower
with two BLAS threads than with one (docs/performance.md). So ``matmul`` keeps a
product on one thread unless one thread would need about 0.12 ms for it
(``MULTITHREAD_FLOPS``); bigger products (wide layers, convolutions as GEMMs) use
every thread the pool has, most as independent blocks of the output's rows, one per
thread (``_in_blocks``). (The cut was 1e8 FLOPs until session 6; at 2e7 a
784-256-... MLP at batch 200 ran 15% faster, at 1.2e7 (its 200x256 @ 256x128
products, 13 MFLOP, on two threads) another 7-12%, and at 1e7 a 784-100-... MLP at
batch 64 ran 20% slower: its 10 MFLOP products lose to the hand-off.) On the Zen 5
that replaced that machine, products from ``MID_MNK`` multiply-adds up ran faster on two
threads, as long as ember's own threads (convolutions) do not need the second core:
``matmul`` shares them only until ``ember.parallel`` starts its pool.

The pool is found with ``threadpoolctl`` (an optional dependency). Without it,
or with a BLAS other than OpenBLAS on pthreads, ``matmul`` is plain ``a @ b``.
``EMBER_NUM_THREADS=n`` in the environment sets the pool size when ember loads.

>>> ember.blas.set_num_threads(1)   # e.g. on a shared machine
>>> ember.blas.get_num_threads()
1
"""

from __future__ import annotations

import ctypes
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ember.backend import xp

__all__ = ["matmul", "kernel_set", "kernels_use_avx512", "AVX512_KERNELS", "axpy",
           "split_pays", "column_sums", "set_num_threads", "get_num_threads", "one_thread",
           "MULTITHREAD_FLOPS", "MID_MNK", "note_own_threads_started"]

MULTITHREAD_FLOPS = 1.2e7
"""Products of fewer floating-point operations (2*M*K*N per BLAS call) run on one thread."""

MID_MNK = 1.5e6
"""2-D float32 products of at least this many multiply-adds (M*N*K) go to
``ember.ops.simd.split_product`` where its kernels are wanted (section 33). Elsewhere,
products from here to the ``MULTITHREAD_FLOPS`` cut also use OpenBLAS's threads, as long
as ember's own thread pool (``ember.parallel``: convolutions, big element-wise passes) has
not started. Two pools
that spin after their work fight for two cores (docs/performance.md, section 24), so once
ember's has started they stay on one thread. Measured on a Zen 5 (section 30), with
these products on two threads: the batch-64 MLPs' steps 5-23% faster, the ReLU MLP's 0-3%;
LeNet-5's 14% slower, which its convolutions' pool now prevents."""

_np_matmul = xp.matmul
_F32 = xp.dtype(xp.float32)
WORKER = True  # float32 products on simd's kernels where wanted (tests and probes switch)
_own_threads_started = False
_OPENBLAS_SINGLE_MNK = 65536 * 4  # below this M*N*K OpenBLAS stays on one thread itself
_MULTITHREAD_MNK = MULTITHREAD_FLOPS / 2
_UNSET = object()
_pool: Any = _UNSET


class _OpenBLASPool:
    """The ``openblas_{get,set}_num_threads`` entry points of NumPy's OpenBLAS, and its
    ``cblas_{s,d}axpy`` and ``cblas_{s,d}gemm_batch`` kernels (by dtype; absent when the
    library lacks them: older OpenBLAS builds have no ``gemm_batch``)."""

    def __init__(self, get: Any, set_: Any, axpy: dict | None = None,
                 gemm_batch: dict | None = None, core: str | None = None) -> None:
        self.get, self.set, self.axpy = get, set_, axpy or {}
        self.gemm_batch = gemm_batch or {}
        self.blocks_pay, self.core = blocks_pay_with(core), core


def _find_pool() -> _OpenBLASPool | None:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    libs = [c for c in ThreadpoolController().lib_controllers
            if c.internal_api == "openblas" and getattr(c, "threading_layer", "") == "pthreads"]
    libs.sort(key=lambda c: "numpy" not in c.filepath)  # NumPy's own copy first
    for lib in libs:
        for prefix in ("", "scipy_"):
            for suffix in ("", "64_", "_64"):
                get = getattr(lib.dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
                set_ = getattr(lib.dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    return _OpenBLASPool(get, set_, _axpy_kernels(lib.dynlib, prefix, suffix),
                                         _gemm_batch_kernels(lib.dynlib, prefix, suffix),
                                         getattr(lib, "architecture", None))
    return None


AVX512_KERNELS = ("skylakex", "cooperlake", "sapphirerapids")
"""OpenBLAS's kernel sets that use AVX-512 (lower case, as ``kernels_use_avx512`` compares)."""


def kernels_use_avx512(core: str | None) -> bool:
    """Whether OpenBLAS's kernel set ``core`` ("SkylakeX", "Haswell", ...) uses AVX-512."""
    return core is not None and core.lower() in AVX512_KERNELS


def kernel_set() -> str | None:
    """The kernels NumPy's OpenBLAS chose when it loaded ("SkylakeX", "Haswell", ...), as
    threadpoolctl reports them; None when that BLAS is not OpenBLAS or not found."""
    pool = _pool if _pool is not _UNSET else _blas_pool()
    return pool.core if pool is not None else None


def blocks_pay_with(core: str | None) -> bool:
    """Whether big products run faster as independent row blocks (``_in_blocks``) than as
    OpenBLAS's own split, with the kernels OpenBLAS chose when it loaded ("SkylakeX",
    "Haswell", ...; None if unknown). With its AVX2 Haswell kernels (which
    ``OPENBLAS_CORETYPE=Haswell`` forces) its own split was the faster, on a Zen 5: the
    ReLU MLP's step 1.022-1.031x with blocks, against 0.978-0.983 with its AVX-512 kernels
    there and on Zen 4 (docs/performance.md, sections 24 and 30). "Zen" is those AVX2
    kernels with other block sizes: not measured, taken to be alike."""
    return core is None or core.lower() not in ("haswell", "zen")


def _blas_name(prefix: str, routine: str, suffix: str) -> str:
    """An exported CBLAS name: ``scipy_cblas_saxpy64_`` in SciPy's ILP64 build."""
    return f"{prefix}cblas_{routine}{suffix.rstrip('_')}" + ("_" if suffix else "")


def _axpy_kernels(dynlib: Any, prefix: str, suffix: str) -> dict:
    """``{dtype: (cblas_?axpy, ctypes element type)}``. An ILP64 build (suffix ``64_`` or
    ``_64``) takes 64-bit sizes. Arrays are passed as ``byref(c_float.from_buffer(a))``:
    a quarter of the cost of ``a.ctypes.data``, which shows at these sizes."""
    integer = ctypes.c_int64 if suffix else ctypes.c_int
    kernels = {}
    for dtype, letter, real in ((xp.float32, "s", ctypes.c_float),
                                (xp.float64, "d", ctypes.c_double)):
        found = getattr(dynlib, _blas_name(prefix, f"{letter}axpy", suffix), None)
        if found is not None:
            pointer = ctypes.POINTER(real)
            signature = ctypes.CFUNCTYPE(None, integer, real, pointer, integer, pointer, integer)
            kernels[xp.dtype(dtype)] = (ctypes.cast(found, signature), real)
    return kernels


def _gemm_batch_kernels(dynlib: Any, prefix: str, suffix: str) -> dict:
    """``{dtype: (cblas_?gemm_batch, NumPy type of its integer arguments)}``. Every
    argument but the layout and the group count is an array, passed by address."""
    integer, np_integer = (ctypes.c_int64, xp.int64) if suffix else (ctypes.c_int, xp.int32)
    signature = ctypes.CFUNCTYPE(None, ctypes.c_int, *[ctypes.c_void_p] * 13, integer,
                                 ctypes.c_void_p)
    kernels = {}
    for dtype, letter in ((xp.float32, "s"), (xp.float64, "d")):
        found = getattr(dynlib, _blas_name(prefix, f"{letter}gemm_batch", suffix), None)
        if found is not None:
            kernels[xp.dtype(dtype)] = (ctypes.cast(found, signature), np_integer)
    return kernels


def _blas_pool() -> _OpenBLASPool | None:
    global _pool
    if _pool is _UNSET:
        _pool = _find_pool()
    return _pool


def get_num_threads() -> int:
    """Threads in NumPy's BLAS pool (1 when it cannot be found)."""
    pool = _blas_pool()
    return int(pool.get()) if pool is not None else 1


def set_num_threads(n: int) -> None:
    """Use ``n`` BLAS threads for NumPy's products (like ``torch.set_num_threads``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive integer, got {n!r}")
    pool = _blas_pool()
    if pool is None:
        raise RuntimeError("set_num_threads: NumPy's OpenBLAS thread pool was not found "
                           "(pip install threadpoolctl; other BLAS libraries: set "
                           "OMP_NUM_THREADS / OPENBLAS_NUM_THREADS before starting Python)")
    pool.set(n)


def note_own_threads_started() -> None:
    """Called by ``ember.parallel`` when its thread pool starts (see ``MID_MNK``)."""
    global _own_threads_started
    _own_threads_started = True


def matmul(a: Any, b: Any, out: Any = None) -> Any:
    """``a @ b`` (into ``out`` if given), on one BLAS thread unless the product is
    big enough to share. 2-D float32 products from ``MID_MNK`` multiply-adds go to
    ``ember.ops.simd``'s kernels where they are wanted (an AVX-512 CPU whose BLAS leaves
    AVX-512 unused: ``split_product``), shared with its spinning worker thread as long as
    ``ember.parallel``'s pool has not started (two spinning pools fight), on one thread
    after: the same bits either way."""
    mnk = (a.shape[-2] if a.ndim > 1 else 1) * a.shape[-1] * b.shape[-1]
    if mnk >= MID_MNK and WORKER and a.dtype == _F32:
        found = _split_product(a, b, not _own_threads_started)
        if found is not None:
            if out is None:
                return found
            out[...] = found
            return out
    if mnk >= _MULTITHREAD_MNK or (mnk >= MID_MNK and not _own_threads_started):
        _note_shared(b)  # see split_pays
        return _in_blocks(a, b, out)
    if mnk < _OPENBLAS_SINGLE_MNK:
        return _np_matmul(a, b, out=out)
    pool = _pool if _pool is not _UNSET else _blas_pool()
    threads = pool.get() if pool is not None else 1
    if threads <= 1:
        return _np_matmul(a, b, out=out)
    pool.set(1)
    try:
        return _np_matmul(a, b, out=out)
    finally:
        pool.set(threads)


def _split_product(a: Any, b: Any, share: bool) -> Any:
    """``simd.split_product``, imported on first use (``ember.ops`` imports this module)."""
    global _split_product
    from ember.ops.simd import split_product
    _split_product = split_product
    return split_product(a, b, share)


SPLIT = True
"""Big products as independent row blocks, one per thread (``_in_blocks``); tests and
probes switch it off to compare with OpenBLAS's own split."""
_BLOCK_MIN_MNK = 100 ** 3
"""A block must have more multiply-adds (M*N*K) than this. Up to it OpenBLAS's ``gemm_batch``
takes its small-matrix path, which in DYNAMIC_ARCH builds (NumPy's) calls a kernel
table's offset instead of the kernel: a segmentation fault (OpenBLAS 0.3.31's
interface/gemm_batch.c reads the table where its other entry points use
``SMALL_KERNEL_ADDR``)."""
_NO_TRANS, _TRANS, _ROW_MAJOR = 111, 112, 101  # CBLAS enums
_batch_plans: dict = {}


def _in_blocks(a: Any, b: Any, out: Any) -> Any:
    """``a @ b`` as one independent product per thread, each on a block of ``a``'s rows
    (OpenBLAS's ``gemm_batch`` runs them side by side, one thread each).

    Why: OpenBLAS's own split has its threads share the packed blocks of ``b`` and wait
    on each other, and on this machine that sharing is at times slow (the two vCPUs'
    caches far apart, it seems): for seconds at a time a 512x512 product on two threads
    ran at ~140 GFLOP/s where two independent halves ran at ~190, their speed in the good
    stretches (docs/performance.md, section 24). Each block packs ``b`` itself, which in
    the good stretches costs about what sharing saves, except where ``b`` is a transposed
    matrix (a Linear layer's ``x @ W.T``): those stay OpenBLAS's. Blocks depend only on
    the shapes and the thread count. Anything else (1-D or stacked operands, strided ones,
    other dtypes, one thread, a BLAS without ``gemm_batch``, kernels whose own split is
    faster: ``blocks_pay_with``) is NumPy's product.
    """
    plan = _batch_plan(a, b, out) if SPLIT else None  # None when blocks do not pay
    if plan is None:
        return _np_matmul(a, b, out=out)
    kernel, a_offsets, c_offsets, (t, tb, m, n, k, one, lda, ldb, zero, ldc, sizes), _ = plan
    if out is None:
        out = xp.empty((a.shape[0], b.shape[1]), a.dtype)
    pa, pb, pc = a.ctypes.data, b.ctypes.data, out.ctypes.data
    count = len(a_offsets)
    pointers = xp.array([pa + o for o in a_offsets] + [pb] * count +
                        [pc + o for o in c_offsets], xp.uintp)
    p = pointers.ctypes.data
    w = count * pointers.itemsize
    kernel(_ROW_MAJOR, t, tb, m, n, k, one, p, lda, p + w, ldb, zero, p + 2 * w, ldc, count,
           sizes)  # each block a group of one product
    return out


_ALPHA_BETA = {xp.dtype(t): xp.array([1] * 8 + [0] * 8, t) for t in (xp.float32, xp.float64)}


def _batch_plan(a: Any, b: Any, out: Any) -> Any:
    """What ``_in_blocks`` passes for these operands (cached by shape and layout), or
    None where NumPy's product must run."""
    pool = _pool if _pool is not _UNSET else _blas_pool()
    if pool is None or not pool.blocks_pay or a.ndim != 2 or b.ndim != 2 or \
            a.dtype != b.dtype:
        return None
    found = pool.gemm_batch.get(a.dtype)
    layout_a, layout_b = _layout(a), _layout(b)
    if found is None or layout_a is None or layout_b is None or a.shape[1] != b.shape[0]:
        return None  # a mismatch is NumPy's error to report
    if layout_b[0] == _TRANS:  # x @ W.T: each block would pack W.T again, slower than
        return None            # sharing it (the ReLU MLP's forward: 531 against 467 us)
    (m, k), n = a.shape, b.shape[1]
    if out is not None and (out.shape != (m, n) or out.dtype != a.dtype or
                            not out.flags.c_contiguous or not out.flags.writeable or
                            xp.may_share_memory(out, a) or xp.may_share_memory(out, b)):
        return None  # NumPy's product copies what overlaps; BLAS would read what it wrote
    threads = int(pool.get())
    key = (m, n, k, layout_a, layout_b, a.dtype, threads)
    plan = _batch_plans.get(key)
    if plan is None:
        if len(_batch_plans) > 1024:  # e.g. many batch sizes: forget, rather than grow
            _batch_plans.clear()
        plan = _batch_plans[key] = _make_plan(found, m, n, k, layout_a, layout_b, a.dtype,
                                              threads)
    return plan or None


def _make_plan(found: Any, m: int, n: int, k: int, layout_a: tuple, layout_b: tuple,
               dtype: Any, threads: int) -> Any:
    """Blocks of the output's rows, as even as can be, as many as threads, each above
    ``_BLOCK_MIN_MNK``; False if fewer than two blocks would do."""
    (ta, lda), (tb, ldb) = layout_a, layout_b
    for count in range(min(threads, m, 8), 1, -1):  # _ALPHA_BETA holds 8 of each
        if (m // count) * n * k > _BLOCK_MIN_MNK:
            break
    else:
        return False
    kernel, integer = found
    rows = [m // count + (1 if i < m % count else 0) for i in range(count)]
    starts = [sum(rows[:i]) for i in range(count)]
    step_a = lda if ta == _NO_TRANS else 1  # elements from one row of op(a) to the next
    a_offsets = [r * step_a * dtype.itemsize for r in starts]
    c_offsets = [r * n * dtype.itemsize for r in starts]
    # M, N, K, lda, ldb, ldc and the group sizes (1), each an array over the blocks, and
    # their addresses: every argument of gemm_batch but the layout and count is an array
    ints = xp.array(rows + [n] * count + [k] * count + [lda] * count + [ldb] * count +
                    [n] * count + [1] * count, integer)
    flags = xp.array([ta] * count + [tb] * count, xp.int32)  # CBLAS_TRANSPOSE is a C int
    scale = _ALPHA_BETA[dtype]
    i, f, t, one = ints.ctypes.data, ints.itemsize * count, flags.ctypes.data, \
        scale.ctypes.data
    fixed = (t, t + 4 * count, i, i + f, i + 2 * f, one, i + 3 * f, i + 4 * f,
             one + 8 * scale.itemsize, i + 5 * f, i + 6 * f)
    return kernel, a_offsets, c_offsets, fixed, (ints, flags)  # the arrays kept alive


def _layout(x: Any) -> tuple[int, int] | None:
    """A 2-D operand as BLAS reads a row-major matrix: (transpose flag, leading dimension);
    None unless it is contiguous or a contiguous matrix's transpose."""
    if x.flags.c_contiguous:
        return _NO_TRANS, max(1, x.shape[1])
    if x.flags.f_contiguous:
        return _TRANS, max(1, x.shape[0])
    return None


@contextmanager
def one_thread() -> Iterator[int]:
    """Run the block's products on one BLAS thread each; yields the pool's size before.

    For callers that split work between their own threads (``ember.parallel``): each
    thread's products then run where they are called, with no hand-offs between
    threads that compete for the same cores."""
    pool = _blas_pool()
    threads = int(pool.get()) if pool is not None else 1
    if threads > 1:
        pool.set(1)
    try:
        yield threads
    finally:
        if threads > 1:
            pool.set(threads)


_byref = ctypes.byref
AXPY_MIN_SIZE = 1 << 13
"""Smaller arrays update faster with two NumPy ufunc calls than through ctypes."""


_shared_operands: dict = {}  # id -> weak reference: the arrays that shared products read
SPLIT_AXPY_MIN_SIZE = 1 << 15
"""``axpy(..., split=True)`` is for arrays at least this big (a 784x256 weight: 200704)."""


def split_pays(y: Any) -> bool:
    """Whether ``axpy(alpha, x, y, split=True)`` should share ``y``'s update between BLAS's
    threads: ``y`` is big and was the right operand of a product that ran on several
    threads (a weight, in the forward's ``x @ W.T``), so those threads have read it and
    are likely still awake (OpenBLAS's spin ~0.1 s after a call). Not for a weight that
    only ember's own threads read (the convolutions'): waking OpenBLAS's thread there
    has it spin on the core those threads need (a CIFAR CNN step 1.3x slower).

    Why: at times the machine's two vCPUs share no cache, and then the optimizer writing a
    weight that the other core read costs ~10x the write itself (~200 of a 2900 µs ReLU
    MLP step for its 784x256 weight); half of it written by the other core's thread, as
    torch's single OpenMP pool does, halves that (docs/performance.md, section 25). The
    answer depends on sizes and on which products ran, never on timing: the split update
    rounds as ``axpy`` does, so a timing-based choice would make runs irreproducible.
    """
    return y.size >= SPLIT_AXPY_MIN_SIZE and _noted(y)


def _noted(a: Any) -> bool:
    """Whether ``a`` itself (not a new array that reuses its address) is remembered."""
    seen = _shared_operands.get(id(a))
    return seen is not None and seen() is a


def _note_shared(b: Any) -> None:
    """Remember the array that ``b`` views (``W`` for ``W.T``) as read by BLAS's threads."""
    while b.base is not None and isinstance(b.base, xp.ndarray):
        b = b.base
    if _noted(b):  # the usual case: the same weight, step after step
        return
    if len(_shared_operands) > 256:  # e.g. products of many temporary arrays: forget them
        _shared_operands.clear()
    _shared_operands[id(b)] = weakref.ref(b)  # b is an ndarray: weak references work


def axpy(alpha: float, x: Any, y: Any, split: bool = False) -> bool:
    """``y += alpha * x`` in place and in one pass (BLAS axpy) when ``x`` and ``y`` are
    contiguous arrays of one float dtype and shape, with at least ``AXPY_MIN_SIZE``
    elements; returns False, changing nothing, otherwise. On one thread, unless ``split``
    (then on all of BLAS's threads: OpenBLAS gives each a contiguous part; see
    ``split_pays``). The result is ``alpha * x + y`` rounded once (a fused multiply-add),
    except that OpenBLAS's Haswell kernels round the few elements at the end of a thread's
    part twice: split and unsplit may then differ there by an ulp.

    Why: NumPy needs two passes and a scratch array (``t = alpha * x; y += t``); an
    optimizer's ``p -= lr * g`` on a 784x100 weight then reads and writes twice the
    memory, which shows in a small MLP's step (docs/performance.md).
    """
    if y.size < AXPY_MIN_SIZE or x.dtype != y.dtype or x.shape != y.shape or \
            not (x.flags.c_contiguous and y.flags.c_contiguous and y.flags.writeable and
                 x.flags.writeable):  # from_buffer needs writable buffers, x's too
        return False
    pool = _pool if _pool is not _UNSET else _blas_pool()
    found = pool.axpy.get(y.dtype) if pool is not None else None
    if found is None:
        return False
    kernel, real = found
    threads = 1 if split else pool.get()
    if threads > 1:  # one thread, as matmul does for products of this size
        pool.set(1)
    try:
        kernel(y.size, alpha, _byref(real.from_buffer(x)), 1, _byref(real.from_buffer(y)), 1)
    finally:
        if threads > 1:
            pool.set(threads)
    return True


COLUMN_SUMS_MAX_ROWS = 4096
"""``column_sums`` of taller matrices keeps NumPy's pairwise sum (its error grows slowest)."""
_ones: dict = {}


def column_sums(a: Any) -> Any:
    """``a.sum(axis=0)`` of a 2-D float32 or float64 matrix, as ``ones @ a``: one BLAS
    matrix-vector product (a Linear layer's bias gradient: the output gradient summed
    over the batch).

    Why: NumPy's column reduction costs 2-4x the product at batch sizes (200x256 floats:
    7.8 against 2.7 µs; 64x100: 6.5 against 1.2). BLAS adds each column in its own
    blocked order rather than NumPy's pairwise one; in float32 they differ by ~1e-7
    relative at a batch of 200. Taller matrices, and other dtypes, take NumPy's sum.
    """
    rows = a.shape[0]
    if rows > COLUMN_SUMS_MAX_ROWS or a.dtype.type not in (xp.float32, xp.float64):
        return xp.add.reduce(a, axis=0)
    ones = _ones.get(a.dtype)
    if ones is None:
        ones = _ones[a.dtype] = xp.ones(COLUMN_SUMS_MAX_ROWS, a.dtype)
    return xp.dot(ones[:rows], a)


def _threads_from_environment() -> None:
    value = os.environ.get("EMBER_NUM_THREADS")
    if value:
        try:
            set_num_threads(int(value))
        except (ValueError, RuntimeError) as err:
            raise RuntimeError(f"EMBER_NUM_THREADS={value!r}: {err}") from None


_threads_from_environment()
