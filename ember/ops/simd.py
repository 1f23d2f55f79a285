"""Float32 matrix products compiled for AVX-512, for CPUs whose BLAS leaves it unused.

Why: NumPy's OpenBLAS runs the kernels it chose when it loaded. On an AVX-512 CPU whose
environment sets ``OPENBLAS_CORETYPE=Haswell`` (the team's Zen 5 machine does) those are
AVX2 kernels at about half the CPU's float32 peak: 100-125 GFLOP/s a core on the CIFAR
CNN's convolution products. ember leaves that process-wide choice alone (it is the
user's: docs/performance.md, section 30) and runs its convolutions' products, which are
ember's own work, on the kernels below: 140-220 GFLOP/s a core on the same products
(section 31).

How: Numba has no vector type, and its loops did not keep a tile of sums in registers
(sections 27-28). So this module gives Numba one: ``f32x16``, LLVM's ``<16 x float>`` (one
AVX-512 register), with five intrinsics (``vload``, ``vstore``, ``vsplat``, ``vzero``,
``vfma``). A kernel holds its tile of sums in local ``f32x16`` variables, which LLVM
keeps in registers across the loop over the inner dimension:

- ``nn``: ``c = a @ b`` with ``b``'s rows contiguous. Tiles of 6 rows x 32 columns (12
  registers of sums); each step broadcasts one element of ``a`` per row and multiplies two
  vectors of ``b``, read from a 32-column panel of ``b`` packed once and shared by every
  tile of rows.
- ``nt``: ``c = a @ b.T`` with both operands' rows contiguous (the weight gradients'
  ``columns @ g^T``). Tiles of 6 x 4 dot products, each a 16-lane vector of partial sums
  over the inner dimension, added up at the end as a tree of lane shuffles.
- ``nn_t``: the same product by ``nn``, each panel transposed from 32 rows of ``b.T`` as
  it is packed (16 x 16 at a time, in registers): where ``b.T`` has whole 32-row panels,
  faster than ``nt``, whose tiles stream both operands from L2.

Rows past the edge of a tile read the last row again (no padded copy) and are not
stored; columns past it are zeros in the packed panel. The sums run in another order
than the BLAS's, so results agree with NumPy's products to rounding, not bit for bit;
each output depends only on its operands, not on the thread or block that computed it.

``matmul`` takes these kernels where ``wanted()``: Numba's kernels on (``kernels``), the
CPU has AVX-512 and NumPy's BLAS runs kernels without it. Everywhere else it is NumPy's
product. ``<16 x float>`` also compiles without AVX-512 (as two AVX2 halves), which is
how the tests check these kernels on any CPU.
"""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace
from typing import Any

from ember import blas
from ember.backend import xp
from ember.ops import kernels

__all__ = ["matmul", "split_product", "SplitWorker", "wanted", "vectors_wanted", "set_wanted",
           "nn_into", "nt_into", "NT_MIN_K", "SPIN_LOOPS", "SPLIT_MAX_K"]

NT_MIN_K = 256
"""``nt``'s shortest inner dimension: each tile ends in adding up 24 vectors of 16 lanes,
which on short rows costs more than the products (LeNet-5's 150x100 @ (16x100)^T per
sample: 37 GFLOP/s with the tree of ``vfold``s, 24 lane by lane, against OpenBLAS's 85-93
with AVX2; its 25x784 @ (6x784)^T: 85 against 30; sections 31-32). ``nn_t`` has no such
end and takes transposed operands of any inner dimension where their panels are whole."""
DOT_LANES = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15, 16, 24, 20, 28, 18, 26, 22, 30)
"""Where ``dot_6x4`` leaves the dot product of its a row r and b row s: ``sums[DOT_LANES[4 *
r + s]]`` (the order its tree of ``vfold``s ends in)."""
NN_T = True  # transposed b with whole panels on nn (pack_panel_t), not nt (probes switch)
_compiled: Any = None  # the kernels, made on first use, or False without Numba
_wanted: bool | None = None  # set_wanted's override; None: decide from the CPU and the BLAS
_decided: dict = {}  # those decisions, made on first use ("products", "vectors")
CLAIM_BITS = 8
"""The claim word is ``number << 2 * CLAIM_BITS | parts << CLAIM_BITS | next part``: a job
carries its own part count, so a worker that looks late never compares an old job's next
part with a newer job's count (it could then claim a part that does not exist while the
caller rewrites the job)."""
SPIN_LOOPS = 200_000
"""How many times the split worker checks for the next product before it sleeps, with a
PAUSE between checks (~24 ns each here): ~5 ms. Between an MLP step's products it must
stay awake: at 0.5 ms the ReLU MLP's step ran 1.15x slower than OpenBLAS's, at 5 ms 0.855x
(section 31)."""
SPLIT_MAX_K = 8192  # the split worker's packed panel holds this many rows (1 MiB)
_lock = threading.Lock()  # the first products may come from several threads at once
_local = threading.local()  # each thread's scratch buffers (``_scratch``)


def _compile() -> Any:
    """The compiled kernels, or False when Numba is not installed."""
    # the intrinsics are module globals, not closure variables: Numba keys its on-disk
    # cache by a kernel's closure, and an intrinsic pickles with a new id in every process
    global vload, vstore, vsplat, vzero, vfma, vadd, vload_first, vstore_first
    global vfold8, vfold4, vfold2, vfold1
    global vlow8, vlow4, vlow2, vlow1, vhigh8, vhigh4, vhigh2, vhigh1
    global atomic_load, atomic_store, atomic_add, swap_if, spin_pause, floats_at, numba_carray
    try:
        import numba
        from llvmlite import ir
        from numba.extending import intrinsic, models, register_model
    except ImportError:
        return False
    vector = ir.VectorType(ir.FloatType(), 16)
    f32x16 = _vector_type(numba, models, register_model, vector)
    vload, vstore, vsplat, vzero, vfma, vadd, vload_first, vstore_first = \
        _intrinsics(numba, ir, intrinsic, vector, f32x16)
    vfold8, vfold4, vfold2, vfold1 = (_fold(ir, intrinsic, f32x16, h) for h in (8, 4, 2, 1))
    vlow8, vlow4, vlow2, vlow1 = (_fold(ir, intrinsic, f32x16, h, "low") for h in (8, 4, 2, 1))
    vhigh8, vhigh4, vhigh2, vhigh1 = (_fold(ir, intrinsic, f32x16, h, "high")
                                      for h in (8, 4, 2, 1))
    atomic_load, atomic_store, atomic_add, swap_if, spin_pause, floats_at = \
        _atomics(numba, ir, intrinsic)
    numba_carray = numba.carray
    # each kernel replaces its Python function as a module global, where the kernels that
    # call it find it (Numba resolves globals when it compiles the caller)
    jit = kernels.jit_compiler(numba)
    for name in ("pack_panel", "pack_panel_t", "nn_kernel", "dot_6x4", "nt_kernel",
                 "run_parts", "worker_spin", "product_run"):
        globals()[name] = jit(globals()[name])
    return SimpleNamespace(nn=nn_kernel, nt=nt_kernel, worker_spin=worker_spin,
                           product_run=product_run)


def _intrinsics(numba: Any, ir: Any, intrinsic: Any, vector: Any, f32x16: Any) -> tuple:
    """``vload``, ``vstore``, ``vsplat``, ``vzero``, ``vfma`` and ``vadd``, and the masked
    ``vload_first`` and ``vstore_first`` (a vector's first ``count`` lanes; the rest load
    as 0.0, or are not stored): what a kernel does with ``f32x16`` values, each a few LLVM
    instructions."""
    element = _element

    @intrinsic
    def vload(typingctx, array, index):  # array[index:index + 16] as one vector
        def codegen(context, builder, sig, args):
            pointer = element(context, builder, sig.args[0], *args)
            return builder.load(builder.bitcast(pointer, vector.as_pointer()), align=4)
        return f32x16(array, index), codegen

    @intrinsic
    def vstore(typingctx, array, index, value):  # array[index:index + 16] = value
        def codegen(context, builder, sig, args):
            pointer = element(context, builder, sig.args[0], args[0], args[1])
            builder.store(args[2], builder.bitcast(pointer, vector.as_pointer()), align=4)
            return context.get_dummy_value()
        return numba.types.void(array, index, value), codegen

    @intrinsic
    def vsplat(typingctx, array, index):  # array[index] in all 16 lanes
        def codegen(context, builder, sig, args):
            value = builder.load(element(context, builder, sig.args[0], *args), align=4)
            lane0 = builder.insert_element(ir.Constant(vector, ir.Undefined), value,
                                           ir.Constant(ir.IntType(32), 0))
            zeros = ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16)
            return builder.shuffle_vector(lane0, ir.Constant(vector, ir.Undefined), zeros)
        return f32x16(array, index), codegen

    def first_lanes(builder: Any, count: Any) -> Any:  # lanes below count: an i1 mask
        lanes = ir.Constant(ir.VectorType(ir.IntType(64), 16), list(range(16)))
        wide = builder.sext(count, ir.IntType(64)) if count.type.width < 64 else count
        splat = builder.shuffle_vector(
            builder.insert_element(ir.Constant(ir.VectorType(ir.IntType(64), 16), ir.Undefined),
                                   wide, ir.Constant(ir.IntType(32), 0)),
            ir.Constant(ir.VectorType(ir.IntType(64), 16), ir.Undefined),
            ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16))
        return builder.icmp_signed("<", lanes, splat)

    def masked(builder: Any, name: str, args: list, types: list) -> Any:
        module = builder.module
        fn = module.globals.get(name) or ir.Function(
            module, ir.FunctionType(types[0], types[1:]), name)
        return builder.call(fn, args)

    @intrinsic
    def vload_first(typingctx, array, index, count):  # lanes >= count read as 0.0
        def codegen(context, builder, sig, args):
            pointer = builder.bitcast(element(context, builder, sig.args[0], *args[:2]),
                                      vector.as_pointer())
            mask = first_lanes(builder, args[2])
            zeros = ir.Constant(vector, [0.0] * 16)
            return masked(builder, "llvm.masked.load.v16f32.p0v16f32",
                          [pointer, ir.Constant(ir.IntType(32), 4), mask, zeros],
                          [vector, vector.as_pointer(), ir.IntType(32), mask.type, vector])
        return f32x16(array, index, count), codegen

    @intrinsic
    def vstore_first(typingctx, array, index, value, count):  # lanes < count only
        def codegen(context, builder, sig, args):
            pointer = builder.bitcast(element(context, builder, sig.args[0], *args[:2]),
                                      vector.as_pointer())
            mask = first_lanes(builder, args[3])
            masked(builder, "llvm.masked.store.v16f32.p0v16f32",
                   [args[2], pointer, ir.Constant(ir.IntType(32), 4), mask],
                   [ir.VoidType(), vector, vector.as_pointer(), ir.IntType(32), mask.type])
            return context.get_dummy_value()
        return numba.types.void(array, index, value, count), codegen

    @intrinsic
    def vzero(typingctx):
        def codegen(context, builder, sig, args):
            return ir.Constant(vector, [0.0] * 16)
        return f32x16(), codegen

    @intrinsic
    def vfma(typingctx, a, b, c):  # a * b + c, one rounding per lane
        def codegen(context, builder, sig, args):
            module = builder.module
            fma = module.globals.get("llvm.fma.v16f32") or ir.Function(
                module, ir.FunctionType(vector, [vector] * 3), "llvm.fma.v16f32")
            return builder.call(fma, args)
        return f32x16(f32x16, f32x16, f32x16), codegen

    @intrinsic
    def vadd(typingctx, a, b):  # a + b, lane by lane
        def codegen(context, builder, sig, args):
            return builder.fadd(*args)
        return f32x16(f32x16, f32x16), codegen
    return vload, vstore, vsplat, vzero, vfma, vadd, vload_first, vstore_first


def _fold(ir: Any, intrinsic: Any, f32x16: Any, half: int, part: str = "sum") -> Any:
    """``vfold<half>(x, y)``: both vectors' lanes in blocks of ``2 * half``, each block's two
    halves added, the results interleaved block by block: [x's block 0 folded, y's block 0
    folded, x's block 1 folded, ...]. Four levels (8, 4, 2, 1) add up 16 lanes, as a tree,
    for 16 vectors at once: ``dot_6x4``'s end, where lane-by-lane sums cost more than the
    products on short rows. ``part`` "low" or "high": that half of each block alone, not
    added (``vlow<half>``, ``vhigh<half>``): the four levels of those transpose 16 vectors
    (``pack_panel_t``)."""
    low, high = [], []
    for block in range(0, 16, 2 * half):
        for start in (block, 16 + block):  # x's block, then y's
            low += range(start, start + half)
            high += range(start + half, start + 2 * half)
    lanes = ir.VectorType(ir.IntType(32), 16)

    def fold(typingctx, x, y):
        def codegen(context, builder, sig, args):
            first = builder.shuffle_vector(*args, ir.Constant(lanes, low))
            second = builder.shuffle_vector(*args, ir.Constant(lanes, high))
            if part == "low":
                return first
            if part == "high":
                return second
            return builder.fadd(first, second)
        return f32x16(f32x16, f32x16), codegen
    fold.__name__ = fold.__qualname__ = f"v{'fold' if part == 'sum' else part}{half}"
    return intrinsic(fold)


def _element(context: Any, builder: Any, array_type: Any, array: Any, index: Any) -> Any:
    """A pointer to ``array``'s flat element ``index`` (C-contiguous; no bounds check)."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [index])


def _atomics(numba: Any, ir: Any, intrinsic: Any) -> tuple:
    """What the spinning worker (``SplitWorker``) shares with the main thread: ``atomic_load``
    (acquire), ``atomic_store`` (release) and ``atomic_add`` of an int64 element, ``swap_if``
    (compare-and-swap: True when it swapped) and ``floats_at`` (an address as a float32
    pointer, for ``numba.carray``)."""
    i64 = numba.types.int64

    @intrinsic
    def atomic_load(typingctx, array, index):
        def codegen(context, builder, sig, args):
            return builder.load_atomic(_element(context, builder, sig.args[0], *args),
                                       "acquire", 8)
        return i64(array, index), codegen

    @intrinsic
    def atomic_store(typingctx, array, index, value):  # what was written before is seen
        def codegen(context, builder, sig, args):
            pointer = _element(context, builder, sig.args[0], args[0], args[1])
            builder.store_atomic(args[2], pointer, "release", 8)
            return context.get_dummy_value()
        return numba.types.none(array, index, value), codegen

    @intrinsic
    def atomic_add(typingctx, array, index, value):  # returns the value before
        def codegen(context, builder, sig, args):
            pointer = _element(context, builder, sig.args[0], args[0], args[1])
            return builder.atomic_rmw("add", pointer, args[2], "seq_cst")
        return i64(array, index, value), codegen

    @intrinsic
    def swap_if(typingctx, array, index, expected, value):
        def codegen(context, builder, sig, args):
            pointer = _element(context, builder, sig.args[0], args[0], args[1])
            pair = builder.cmpxchg(pointer, args[2], args[3], "seq_cst", "seq_cst")
            return builder.extract_value(pair, 1)
        return numba.types.boolean(array, index, expected, value), codegen

    @intrinsic
    def spin_pause(typingctx):  # x86's PAUSE: a spinning loop leaves the core's other
        def codegen(context, builder, sig, args):  # hardware thread its issue slots
            module = builder.module
            fn = module.globals.get("llvm.x86.sse2.pause") or ir.Function(
                module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
            return context.get_dummy_value()
        return numba.types.none(), codegen

    @intrinsic
    def floats_at(typingctx, address):
        def codegen(context, builder, sig, args):
            return builder.inttoptr(args[0], ir.PointerType(ir.FloatType()))
        return numba.types.CPointer(numba.types.float32)(i64), codegen
    return atomic_load, atomic_store, atomic_add, swap_if, spin_pause, floats_at


def _vector_type(numba: Any, models: Any, register_model: Any, vector: Any) -> Any:
    """Numba's type for LLVM's ``<16 x float>``, a value held in one register."""
    class F32x16(numba.types.Type):
        def __init__(self) -> None:
            super().__init__(name="f32x16")

    @register_model(F32x16)
    class F32x16Model(models.PrimitiveModel):
        def __init__(self, dmm: Any, fe_type: Any) -> None:
            super().__init__(dmm, fe_type, vector)
    return F32x16()


def wanted() -> bool:
    """Whether ``matmul`` runs float32 products here: Numba's kernels on, and (decided once)
    an AVX-512 CPU whose NumPy BLAS runs kernels without it. ``set_wanted`` overrides."""
    return _on("products")


def vectors_wanted() -> bool:
    """Whether ember's own vector kernels may run here at all, whatever NumPy's BLAS: Numba's
    kernels on and an AVX-512 CPU, or ``set_wanted``'s override. The direct convolutions of
    small layers (``simd_conv``) use this: they beat OpenBLAS's products with its own
    AVX-512 kernels too (docs/performance.md, section 34)."""
    return _on("vectors")


def _on(use: str) -> bool:
    """``wanted`` ("products") or ``vectors_wanted`` ("vectors"), the kernels compiled on
    the first yes."""
    global _compiled
    if not kernels.enabled(xp.float32):
        return False
    on = _wanted
    if on is None:
        if use not in _decided:  # once: asking the CPU and the BLAS is not free
            _decided[use] = _cpu_has_avx512() and (use == "vectors" or not _blas_has_avx512())
        on = _decided[use]
    if on and _compiled is None:
        with _lock:
            if _compiled is None:
                _compiled = _compile()
    return bool(on and _compiled)


def set_wanted(on: bool | None) -> bool | None:
    """Use these kernels (True), NumPy's products (False) or decide from the CPU and BLAS
    (None); returns the previous setting. Tests and probes switch them to compare."""
    global _wanted
    previous, _wanted = _wanted, on
    _decided.clear()
    return previous


def _cpu_has_avx512() -> bool:
    try:
        from llvmlite import binding
    except ImportError:
        return False
    return bool(binding.get_host_cpu_features().get("avx512f", False))


def _blas_has_avx512() -> bool:
    """Whether NumPy's OpenBLAS runs AVX-512 kernels (``blas.AVX512_KERNELS``); unknown BLAS
    libraries count as having them, so their products stay. (Measured on Zen 5 with
    SkylakeX: OpenBLAS faster than ``nt`` on the weight gradients' shapes, about as fast as
    ``nn``; section 31.)"""
    core = blas.kernel_set()
    return core is None or blas.kernels_use_avx512(core)


def matmul(a: Any, b: Any, out: Any = None) -> Any:
    """``a @ b`` (into ``out`` if given) for a convolution's products: on the kernels here
    where ``wanted()`` and the operands fit them, otherwise NumPy's ``matmul``.

    They fit as float32, ``a`` (m, k) or (batch, m, k) C-contiguous, ``b`` (k, n) or
    (batch, k, n) either C-contiguous (``nn_into``) or the transpose of C-contiguous (n, k)
    matrices: with n a multiple of 32 (``nn_t_into``), else with k >= ``NT_MIN_K``
    (``nt_into``); and ``out`` C-contiguous of the product's shape, apart from both.

    >>> import numpy as np
    >>> a, b = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    >>> matmul(a, b).tolist()[0]
    [3.0, 3.0, 3.0, 3.0]
    """
    layout = _layout(a, b, out)
    if layout is None or not wanted():
        return xp.matmul(a, b, out=out)
    if layout == "nt":
        return nt_into(a, xp.swapaxes(b, -1, -2), out)
    if layout == "nn_t":
        return nn_t_into(a, xp.swapaxes(b, -1, -2), out)
    return nn_into(a, b, out)


def _layout(a: Any, b: Any, out: Any) -> str | None:
    """"nn" or "nt" where the kernels take these operands, else None."""
    f32 = xp.float32
    if a.dtype != f32 or b.dtype != f32 or not a.flags.c_contiguous or \
            not 2 <= b.ndim <= 3 or not a.ndim <= b.ndim or a.ndim < 2:
        return None
    if (a.ndim == 3 and a.shape[0] != b.shape[0]) or a.shape[-1] != b.shape[-2]:
        return None
    shape = (*b.shape[:-2], a.shape[-2], b.shape[-1])
    if out is not None and (out.dtype != f32 or not out.flags.c_contiguous or
                            out.shape != shape or xp.may_share_memory(out, a) or
                            xp.may_share_memory(out, b)):
        return None  # (an ``out`` over an operand: NumPy's product copies first)
    if b.flags.c_contiguous:
        return "nn"
    if not xp.swapaxes(b, -1, -2).flags.c_contiguous:
        return None
    if NN_T and b.shape[-1] % 32 == 0:
        return "nn_t"  # whole panels: nn's tiles beat nt's dot products
    return "nt" if a.shape[-1] >= NT_MIN_K else None


def nn_into(a: Any, b: Any, out: Any = None) -> Any:
    """``a @ b`` by ``nn_kernel``: ``a`` (m, k) or (batch, m, k), ``b`` (k, n) or (batch, k,
    n), all float32 and C-contiguous (``matmul`` checks; this does not)."""
    return _nn(a, b, b.shape[-1], out, False)


def nn_t_into(a: Any, b_rows: Any, out: Any = None) -> Any:
    """``a @ b_rows.T`` by ``nn_kernel``, its panels transposed from ``b_rows`` (n, k) or
    (batch, n, k) as they are packed (``pack_panel_t``): the arithmetic of ``nn_into`` on
    a copy of ``b_rows.T``, without the copy."""
    return _nn(a, b_rows, b_rows.shape[-2], out, True)


def _nn(a: Any, b: Any, n: int, out: Any, trans: bool) -> Any:
    m, k = a.shape[-2:]
    batch = b.shape[0] if b.ndim == 3 else 1
    if out is None:
        out = xp.empty((*b.shape[:-2], m, n), xp.float32)
    scratch = _scratch(k)
    _compiled.nn(a.reshape(-1), b.reshape(-1), out.reshape(-1), scratch.panel,
                 scratch.spill, batch, m * k if a.ndim == 3 else 0, m, k, n, 0, n, trans, k, 1)
    return out


def nt_into(a: Any, b_rows: Any, out: Any = None) -> Any:
    """``a @ b_rows.T`` (for each matrix of a stack) by ``nt_kernel``: ``a`` (m, k) or
    (batch, m, k), ``b_rows`` (n, k) or (batch, n, k), float32 and C-contiguous
    (``matmul`` checks; this does not)."""
    m, k = a.shape[-2:]
    n = b_rows.shape[-2]
    batch = b_rows.shape[0] if b_rows.ndim == 3 else 1
    if out is None:
        out = xp.empty((*b_rows.shape[:-2], m, n), xp.float32)
    _compiled.nt(a.reshape(-1), b_rows.reshape(-1), out.reshape(-1), _scratch(0).sums, batch,
                 m * k if a.ndim == 3 else 0, m, k, n)
    return out


def split_product(a: Any, b: Any, share: bool = True) -> Any:
    """``a @ b`` for 2-D float32 operands by ``nn``, its columns shared with
    ``SplitWorker``'s spinning thread when ``share``; the same bits either way. A
    transposed ``a`` is read in place, ``b = w.T`` packed from ``w``'s rows; other layouts
    are copied first. None where ``wanted()`` is False or the operands do not fit."""
    if a.ndim != 2 or b.ndim != 2 or b.dtype != _F32 or a.dtype != _F32 or \
            a.shape[1] != b.shape[0] or not 0 < a.shape[1] <= SPLIT_MAX_K or not wanted():
        return None
    rows, cols = a.strides
    if rows <= 0 or cols <= 0 or rows % 4 or cols % 4:
        a = xp.ascontiguousarray(a)
        rows, cols = a.strides
    trans = not b.flags.c_contiguous
    if trans:
        b = b.T if b.T.flags.c_contiguous else xp.ascontiguousarray(b.T)
    out = xp.empty((a.shape[0], b.shape[0] if trans else b.shape[1]), _F32)
    if not share:
        return _alone(a, b, out, trans)
    return (_worker or _start_worker()).run(a, b, out, trans)


def _alone(a: Any, b: Any, out: Any, trans: bool) -> Any:
    """``SplitWorker.run``'s product on the calling thread only: the same bits."""
    scratch = _scratch(a.shape[1])
    _compiled.product_run(_NO_JOB, _NO_JOB, a, b, out, scratch.panel, scratch.spill,
                          a.strides[0] // 4, a.strides[1] // 4, trans, 0, 0, 0, 0)
    return out


def _start_worker() -> SplitWorker:
    global _worker
    with _lock:
        if _worker is None:
            _worker = SplitWorker()
    return _worker


_F32 = xp.dtype(xp.float32)
_PART_MASK = (1 << CLAIM_BITS) - 1
_NO_JOB = xp.zeros(11, xp.int64)  # product_run's control and job on one thread


class SplitWorker:
    """A second thread for big products that waits for them by spinning in compiled code.

    Why: one thread of ``nn`` runs an MLP's big products about as fast as OpenBLAS's two
    AVX2 threads. Split over ``ember.parallel``'s pool they were slower in the step, as
    its thread sleeps between products and waking it costs more than it saves; OpenBLAS's
    own threads spin instead. This worker spins too (``SPIN_LOOPS``), in GIL-free code,
    and takes its share there: the ReLU MLP's step 0.75-0.79x OpenBLAS's, the batch-64
    MLPs' within 5% (docs/performance.md, section 33).

    How: ``run`` publishes a job (addresses and sizes), cut into ``PARTS`` column ranges.
    Both threads claim parts with compare-and-swap on one word and multiply them; then
    the caller waits for the parts the worker took. A worker that sleeps, wakes late or is
    gone (after a fork) costs time, never a deadlock: the caller takes every part the
    worker does not. One caller at a time: a product that comes while another thread's
    is running runs alone on its own thread."""

    PARTS = 2  # at most 255: the claim word holds the count in CLAIM_BITS

    def __init__(self, start: bool = True) -> None:
        if not wanted():
            raise RuntimeError("SplitWorker: ember's AVX-512 kernels are not in use here "
                               "(simd.wanted() is False)")
        self.control, self.job = _own_cache_lines(3), _own_cache_lines(11)
        self.number = self.finished = 0
        self.sleeping, self.wake, self.busy = False, threading.Event(), threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="ember-simd-split", daemon=True)
        if start:
            self.thread.start()

    def run(self, a: Any, b: Any, out: Any, trans: bool = False) -> Any:
        """``out = a @ b`` in ``PARTS`` column ranges of whole 32-column panels: float32
        ``a`` (m, k) with positive strides, ``b`` (k, n) C-contiguous or with ``trans`` the
        rows of ``b.T`` (n, k), C-contiguous ``out`` (m, n)."""
        if not self.busy.acquire(blocking=False):
            return _alone(a, b, out, trans)
        try:
            n, scratch = out.shape[1], _scratch(a.shape[1])
            per = 32 * -(-n // (32 * self.PARTS))
            parts = -(-n // per) if out.size else 0  # an empty product: nothing to publish
            if self.sleeping:  # woken first, it spins until the job below is published
                self.wake.set()
            self.number += 1
            self.finished += parts
            _compiled.product_run(self.control, self.job, a, b, out, scratch.panel,
                                  scratch.spill, a.strides[0] // 4, a.strides[1] // 4, trans,
                                  per, parts, self.number, self.finished)
        finally:
            self.busy.release()
        return out

    def stop(self) -> None:
        self.control[0] = -1
        self.wake.set()

    def _loop(self) -> None:
        seen, spill = 0, xp.empty(6 * 32, xp.float32)
        panel = xp.empty(32 * SPLIT_MAX_K, xp.float32)  # any job's: k is known only in it
        while True:
            number = _compiled.worker_spin(self.control, self.job, panel, spill, seen,
                                           SPIN_LOOPS)
            if number < 0:
                return
            if number != seen:
                seen = number
                continue
            # sleep until a job wakes it; under the GIL, ``run`` either sees ``sleeping``
            # and sets ``wake``, or published its job before this looks once more
            self.sleeping = True
            if self.control[0] == seen:
                self.wake.wait(1.0)
            self.wake.clear()
            self.sleeping = False


_worker: SplitWorker | None = None
_LINE = 64  # bytes in a cache line


def _own_cache_lines(size: int) -> Any:
    """A zeroed int64 array of ``size`` on cache lines that hold nothing else: the worker
    reads it while spinning, and a line shared with the caller's hot data would move
    between the cores at each of the caller's writes (false sharing)."""
    padded = xp.zeros(size + 3 * _LINE // 8, xp.int64)
    first = (-padded.ctypes.data % _LINE) // 8 + _LINE // 8
    return padded[first:first + size]


def _forget_worker() -> None:
    """A forked child has the worker object but not its thread: start a new one there."""
    global _worker
    _worker = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker)


def _scratch(k: int) -> Any:
    """This thread's buffers: a packed panel of at least k rows, a 6 x 32 spill tile for
    edge tiles and ``dot_6x4``'s 24 sums, two vectors (the kernels run on several threads
    at once)."""
    found = getattr(_local, "scratch", None)
    if found is None:
        found = _local.scratch = SimpleNamespace(panel=xp.empty(32 * max(k, 64), xp.float32),
                                                 spill=xp.empty(6 * 32, xp.float32),
                                                 sums=xp.empty(32, xp.float32))
    elif found.panel.size < 32 * k:
        found.panel = xp.empty(32 * k, xp.float32)
    return found

# The kernels. Compiled by ``_compile``, which also makes the intrinsics they call. Indices
# are flat offsets into C-contiguous arrays; ``k`` is the inner dimension.

def pack_panel(b, at, n, k, width, panel):
    """Columns at:at + width of ``b`` (k rows of n) as a contiguous (k, 32) ``panel``,
    zero past ``width``: every tile of rows then reads one stream of 32 columns."""
    for row in range(k):
        source, target = at + row * n, 32 * row
        if width == 32:
            vstore(panel, target, vload(b, source))
            vstore(panel, target + 16, vload(b, source + 16))
        else:  # zeros, then the columns there are: a vector of 16 where it fits
            vstore(panel, target, vzero())
            vstore(panel, target + 16, vzero())
            done = 0
            if width >= 16:
                vstore(panel, target, vload(b, source))
                done = 16
            for col in range(done, width):
                panel[target + col] = b[source + col]


def pack_panel_t(b_rows, at, k, width, panel):
    """``pack_panel`` of ``b_rows.T``: rows at:at + width of ``b_rows`` (each k long) as the
    columns of a (k, 32) ``panel``, zero past ``width``. Sixteen rows at a time are
    transposed in registers, 16 x 16 by four levels of lane shuffles (``vlow``/``vhigh``),
    so ``a @ w.T`` needs no copy of ``w.T``."""
    whole = k - k % 16
    for half in range(0, 32, 16):
        rows = min(16, width - half)
        if rows <= 0:
            for j in range(k):
                vstore(panel, 32 * j + half, vzero())
            continue
        last = at + (half + rows - 1) * k  # rows past the edge: the last row, then zeroed
        first = at + half * k
        for j in range(0, whole, 16):
            r0, r1 = vload(b_rows, first + j), vload(b_rows, min(first + k, last) + j)
            r2, r3 = vload(b_rows, min(first + 2 * k, last) + j), \
                vload(b_rows, min(first + 3 * k, last) + j)
            r4, r5 = vload(b_rows, min(first + 4 * k, last) + j), \
                vload(b_rows, min(first + 5 * k, last) + j)
            r6, r7 = vload(b_rows, min(first + 6 * k, last) + j), \
                vload(b_rows, min(first + 7 * k, last) + j)
            r8, r9 = vload(b_rows, min(first + 8 * k, last) + j), \
                vload(b_rows, min(first + 9 * k, last) + j)
            r10, r11 = vload(b_rows, min(first + 10 * k, last) + j), \
                vload(b_rows, min(first + 11 * k, last) + j)
            r12, r13 = vload(b_rows, min(first + 12 * k, last) + j), \
                vload(b_rows, min(first + 13 * k, last) + j)
            r14, r15 = vload(b_rows, min(first + 14 * k, last) + j), \
                vload(b_rows, min(first + 15 * k, last) + j)
            # level 8: rows i and i + 8
            r0, r8 = vlow8(r0, r8), vhigh8(r0, r8)
            r1, r9 = vlow8(r1, r9), vhigh8(r1, r9)
            r2, r10 = vlow8(r2, r10), vhigh8(r2, r10)
            r3, r11 = vlow8(r3, r11), vhigh8(r3, r11)
            r4, r12 = vlow8(r4, r12), vhigh8(r4, r12)
            r5, r13 = vlow8(r5, r13), vhigh8(r5, r13)
            r6, r14 = vlow8(r6, r14), vhigh8(r6, r14)
            r7, r15 = vlow8(r7, r15), vhigh8(r7, r15)
            # level 4: rows i and i + 4
            r0, r4 = vlow4(r0, r4), vhigh4(r0, r4)
            r1, r5 = vlow4(r1, r5), vhigh4(r1, r5)
            r2, r6 = vlow4(r2, r6), vhigh4(r2, r6)
            r3, r7 = vlow4(r3, r7), vhigh4(r3, r7)
            r8, r12 = vlow4(r8, r12), vhigh4(r8, r12)
            r9, r13 = vlow4(r9, r13), vhigh4(r9, r13)
            r10, r14 = vlow4(r10, r14), vhigh4(r10, r14)
            r11, r15 = vlow4(r11, r15), vhigh4(r11, r15)
            # level 2: rows i and i + 2
            r0, r2 = vlow2(r0, r2), vhigh2(r0, r2)
            r1, r3 = vlow2(r1, r3), vhigh2(r1, r3)
            r4, r6 = vlow2(r4, r6), vhigh2(r4, r6)
            r5, r7 = vlow2(r5, r7), vhigh2(r5, r7)
            r8, r10 = vlow2(r8, r10), vhigh2(r8, r10)
            r9, r11 = vlow2(r9, r11), vhigh2(r9, r11)
            r12, r14 = vlow2(r12, r14), vhigh2(r12, r14)
            r13, r15 = vlow2(r13, r15), vhigh2(r13, r15)
            # level 1: rows i and i + 1; row i now holds column j + i
            r0, r1 = vlow1(r0, r1), vhigh1(r0, r1)
            r2, r3 = vlow1(r2, r3), vhigh1(r2, r3)
            r4, r5 = vlow1(r4, r5), vhigh1(r4, r5)
            r6, r7 = vlow1(r6, r7), vhigh1(r6, r7)
            r8, r9 = vlow1(r8, r9), vhigh1(r8, r9)
            r10, r11 = vlow1(r10, r11), vhigh1(r10, r11)
            r12, r13 = vlow1(r12, r13), vhigh1(r12, r13)
            r14, r15 = vlow1(r14, r15), vhigh1(r14, r15)
            to = 32 * j + half
            vstore(panel, to, r0), vstore(panel, to + 32, r1)
            vstore(panel, to + 64, r2), vstore(panel, to + 96, r3)
            vstore(panel, to + 128, r4), vstore(panel, to + 160, r5)
            vstore(panel, to + 192, r6), vstore(panel, to + 224, r7)
            vstore(panel, to + 256, r8), vstore(panel, to + 288, r9)
            vstore(panel, to + 320, r10), vstore(panel, to + 352, r11)
            vstore(panel, to + 384, r12), vstore(panel, to + 416, r13)
            vstore(panel, to + 448, r14), vstore(panel, to + 480, r15)
        for j in range(whole, k):  # the last k % 16 columns of the rows
            for col in range(rows):
                panel[32 * j + half + col] = b_rows[first + col * k + j]
        if rows < 16:  # lanes past the edge: zero
            for j in range(k):
                for col in range(rows, 16):
                    panel[32 * j + half + col] = 0.0


def nn_kernel(a, b, c, panel, spill, batch, a_step, m, k, n, first, stop, trans, a_rows,
              a_cols):
    """c[t] = a[t] @ b[t] for t < batch, of (m, k) by (k, n), in columns first:stop
    (``first`` a multiple of 32: a thread's share of one product); ``a_step`` 0 shares one
    a; ``trans``: ``b`` holds the rows of ``b.T`` (``pack_panel_t``). a's element (i, j) is
    ``a[a_step * t + i * a_rows + j * a_cols]``: a transposed a is read in place.

    Each tile is 6 rows x 32 columns of c, summed in 12 registers (s<row><half>). Rows
    past the last read the last again and are not stored; an edge tile goes through
    ``spill``. (One function: as separate compiled functions, tile and store took their
    arrays with reference counting per call, up to 4x slower on small products.)"""
    for t in range(batch):
        a_at, b_at, c_at = t * a_step, t * k * n, t * m * n
        last = a_at + (m - 1) * a_rows
        for col in range(first, stop, 32):
            width = min(32, stop - col)
            if trans:  # b holds the rows of b.T
                pack_panel_t(b, b_at + col * k, k, width, panel)
            else:
                pack_panel(b, b_at + col, n, k, width, panel)
            for row in range(0, m, 6):
                r0 = a_at + row * a_rows
                r1, r2 = min(r0 + a_rows, last), min(r0 + 2 * a_rows, last)
                r3, r4 = min(r0 + 3 * a_rows, last), min(r0 + 4 * a_rows, last)
                r5 = min(r0 + 5 * a_rows, last)
                s00, s01, s10, s11, s20, s21 = vzero(), vzero(), vzero(), vzero(), vzero(), vzero()
                s30, s31, s40, s41, s50, s51 = vzero(), vzero(), vzero(), vzero(), vzero(), vzero()
                for j in range(k):  # a row of the panel times an element of each row of a
                    low, high = vload(panel, 32 * j), vload(panel, 32 * j + 16)
                    at = j * a_cols
                    x = vsplat(a, r0 + at)
                    s00, s01 = vfma(x, low, s00), vfma(x, high, s01)
                    x = vsplat(a, r1 + at)
                    s10, s11 = vfma(x, low, s10), vfma(x, high, s11)
                    x = vsplat(a, r2 + at)
                    s20, s21 = vfma(x, low, s20), vfma(x, high, s21)
                    x = vsplat(a, r3 + at)
                    s30, s31 = vfma(x, low, s30), vfma(x, high, s31)
                    x = vsplat(a, r4 + at)
                    s40, s41 = vfma(x, low, s40), vfma(x, high, s41)
                    x = vsplat(a, r5 + at)
                    s50, s51 = vfma(x, low, s50), vfma(x, high, s51)
                count, at = min(6, m - row), c_at + row * n + col
                full = count == 6 and width == 32
                target, step, to = (c, n, at) if full else (spill, 32, 0)
                vstore(target, to, s00), vstore(target, to + 16, s01)
                vstore(target, to + step, s10), vstore(target, to + step + 16, s11)
                vstore(target, to + 2 * step, s20), vstore(target, to + 2 * step + 16, s21)
                vstore(target, to + 3 * step, s30), vstore(target, to + 3 * step + 16, s31)
                vstore(target, to + 4 * step, s40), vstore(target, to + 4 * step + 16, s41)
                vstore(target, to + 5 * step, s50), vstore(target, to + 5 * step + 16, s51)
                if not full:
                    for r in range(count):
                        for j in range(width):
                            c[at + r * n + j] = spill[32 * r + j]


def dot_6x4(a, first_a, last_a, b, first_b, last_b, k, sums):
    """The 24 dot products of 6 rows of ``a`` (from ``first_a``, clamped to ``last_a``) with
    4 rows of ``b`` over their first k - k % 16 elements, into ``sums`` at ``DOT_LANES``."""
    a0, a1, a2 = first_a, min(first_a + k, last_a), min(first_a + 2 * k, last_a)
    a3, a4, a5 = min(first_a + 3 * k, last_a), min(first_a + 4 * k, last_a), \
        min(first_a + 5 * k, last_a)
    b0, b1 = first_b, min(first_b + k, last_b)
    b2, b3 = min(first_b + 2 * k, last_b), min(first_b + 3 * k, last_b)
    s00, s01, s02, s03, s10, s11 = vzero(), vzero(), vzero(), vzero(), vzero(), vzero()
    s12, s13, s20, s21, s22, s23 = vzero(), vzero(), vzero(), vzero(), vzero(), vzero()
    s30, s31, s32, s33, s40, s41 = vzero(), vzero(), vzero(), vzero(), vzero(), vzero()
    s42, s43, s50, s51, s52, s53 = vzero(), vzero(), vzero(), vzero(), vzero(), vzero()
    for j in range(0, k - k % 16, 16):
        y0, y1, y2, y3 = vload(b, b0 + j), vload(b, b1 + j), vload(b, b2 + j), vload(b, b3 + j)
        x = vload(a, a0 + j)
        s00, s01, s02, s03 = vfma(x, y0, s00), vfma(x, y1, s01), vfma(x, y2, s02), vfma(x, y3, s03)
        x = vload(a, a1 + j)
        s10, s11, s12, s13 = vfma(x, y0, s10), vfma(x, y1, s11), vfma(x, y2, s12), vfma(x, y3, s13)
        x = vload(a, a2 + j)
        s20, s21, s22, s23 = vfma(x, y0, s20), vfma(x, y1, s21), vfma(x, y2, s22), vfma(x, y3, s23)
        x = vload(a, a3 + j)
        s30, s31, s32, s33 = vfma(x, y0, s30), vfma(x, y1, s31), vfma(x, y2, s32), vfma(x, y3, s33)
        x = vload(a, a4 + j)
        s40, s41, s42, s43 = vfma(x, y0, s40), vfma(x, y1, s41), vfma(x, y2, s42), vfma(x, y3, s43)
        x = vload(a, a5 + j)
        s50, s51, s52, s53 = vfma(x, y0, s50), vfma(x, y1, s51), vfma(x, y2, s52), vfma(x, y3, s53)
    # each dot product's 16 lanes added as a tree, 24 at once (``_fold``); the sums land
    # in ``sums`` at ``DOT_LANES``
    v0 = vfold4(vfold8(s00, s01), vfold8(s02, s03))
    v1 = vfold4(vfold8(s10, s11), vfold8(s12, s13))
    v2 = vfold4(vfold8(s20, s21), vfold8(s22, s23))
    v3 = vfold4(vfold8(s30, s31), vfold8(s32, s33))
    v4 = vfold4(vfold8(s40, s41), vfold8(s42, s43))
    v5 = vfold4(vfold8(s50, s51), vfold8(s52, s53))
    rows45 = vfold2(v4, v5)
    vstore(sums, 0, vfold1(vfold2(v0, v1), vfold2(v2, v3)))
    vstore(sums, 16, vfold1(rows45, rows45))


def nt_kernel(a, b, c, sums, batch, a_step, m, k, n):
    """c[t] = a[t] @ b[t].T for t < batch, ``a[t]`` (m, k) and ``b[t]`` (n, k); ``a_step`` 0
    shares one a. Tiles of 6 x 4 dot products, each its 16 lanes added as a tree, then the
    last k % 16 products."""
    whole = k - k % 16
    for t in range(batch):
        a_at, b_at, c_at = t * a_step, t * n * k, t * m * n
        for row in range(0, m, 6):
            for col in range(0, n, 4):
                dot_6x4(a, a_at + row * k, a_at + (m - 1) * k, b, b_at + col * k,
                        b_at + (n - 1) * k, k, sums)
                for r in range(min(6, m - row)):
                    for s in range(min(4, n - col)):
                        total = sums[DOT_LANES[4 * r + s]]
                        x, y = a_at + (row + r) * k, b_at + (col + s) * k
                        for j in range(whole, k):
                            total += a[x + j] * b[y + j]
                        c[c_at + (row + r) * n + col + s] = total


# The split worker's side of a product (``SplitWorker``). ``control`` is int64: [0] the job
# number, [1] the claim word (``CLAIM_BITS``), [2] parts finished so far (all
# jobs). ``job`` is int64: addresses of a, b and c, then m, k, n, columns per part, parts,
# trans, and a's row and column strides in elements.

def run_parts(control, job, panel, spill, number):
    """Claim parts of job ``number`` and multiply them until none is left."""
    while True:
        word = atomic_load(control, 1)
        part, parts = word & _PART_MASK, (word >> CLAIM_BITS) & _PART_MASK
        if word >> (2 * CLAIM_BITS) != number or part >= parts:
            return
        if not swap_if(control, 1, word, word + 1):
            continue  # the other thread claimed it first
        m, k, n, per, a_rows, a_cols = job[3], job[4], job[5], job[6], job[9], job[10]
        a = numba_carray(floats_at(job[0]), (m - 1) * a_rows + (k - 1) * a_cols + 1)
        b = numba_carray(floats_at(job[1]), k * n)
        c = numba_carray(floats_at(job[2]), m * n)
        nn_kernel(a, b, c, panel, spill, 1, 0, m, k, n, part * per, min(n, (part + 1) * per),
                  job[8] != 0, a_rows, a_cols)
        atomic_add(control, 2, 1)


def worker_spin(control, job, panel, spill, seen, loops):
    """The worker: wait up to ``loops`` checks for a job after ``seen``, take its parts and
    return its number (``seen`` when none came; -1 to stop)."""
    for _ in range(loops):
        number = atomic_load(control, 0)
        if number != seen:
            if number >= 0:
                run_parts(control, job, panel, spill, number)
            return number
        spin_pause()
    return seen


def product_run(control, job, a, b, c, panel, spill, a_rows, a_cols, trans, per, parts,
                number, finished):
    """The caller's side: ``c = a @ b`` (2-D ``a`` read by its strides in elements, ``b``
    (k, n) or with ``trans`` the rows of ``b.T``, C-contiguous ``c``). With ``parts`` 0 on
    this thread alone; else job ``number`` is published in ``parts`` column ranges of
    ``per``, this thread takes what the worker does not, then waits for the worker's."""
    m, k, n = a.shape[0], a.shape[1], c.shape[1]
    if m == 0 or n == 0:
        return
    if parts == 0:
        a_flat = numba_carray(floats_at(a.ctypes.data), max((m - 1) * a_rows + (k - 1) *
                                                            a_cols + 1, 0))
        nn_kernel(a_flat, b.reshape(-1), c.reshape(-1), panel, spill, 1, 0, m, k, n, 0, n,
                  trans, a_rows, a_cols)
        return
    job[0], job[1], job[2] = a.ctypes.data, b.ctypes.data, c.ctypes.data
    job[3], job[4], job[5], job[6], job[7] = m, k, n, per, parts
    job[8], job[9], job[10] = trans, a_rows, a_cols
    atomic_store(control, 1, number << (2 * CLAIM_BITS) | parts << CLAIM_BITS)
    atomic_store(control, 0, number)  # published (release): the worker may start now
    run_parts(control, job, panel, spill, number)
    while atomic_load(control, 2) < finished:
        spin_pause()
