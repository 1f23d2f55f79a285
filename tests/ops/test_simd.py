"""ember.ops.simd: the AVX-512 float32 products against float64 NumPy, the choice of when
they run, and the convolutions that use them against the same convolutions without.

The kernels compile on any x86 CPU (without AVX-512 as AVX2 halves), so these tests check
them everywhere; only ``wanted()``'s default depends on the machine."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import ember
from ember import blas
from ember.nn import functional as F
from ember.ops import kernels, simd

pytestmark = pytest.mark.skipif(not kernels.enabled(np.float32), reason="needs Numba")


@pytest.fixture
def simd_on():
    previous = simd.set_wanted(True)
    assert simd.wanted()
    yield
    simd.set_wanted(previous)


def assert_product_close(got, a, b):
    """Within the float32 rounding bound of a k-term sum: |err| <= k u (|a| @ |b|), u the
    unit roundoff, against the float64 product of the same float32 operands."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    k = a.shape[-1]
    bound = (k + 1) * 2.0 ** -24 * (np.abs(a64) @ np.abs(b64)) + 1e-30
    assert got.dtype == np.float32
    assert np.all(np.abs(got - a64 @ b64) <= bound)


# (m, k, n): whole tiles, every edge (rows past a tile of 6, columns past a panel of 32 or
# a tile of 4, inner dimensions past a vector of 16), empty and one-element products
SHAPES = [(6, 16, 32), (12, 48, 64), (7, 5, 33), (5, 17, 3), (1, 1, 1), (13, 0, 40),
          (0, 4, 5), (24, 216, 1088), (50, 100, 47), (216, 3264, 24), (6, 16, 48),
          (4, 9, 63)]  # panel widths 1-31 at the edge: scalar, 16 + scalar, exactly 16


@pytest.mark.parametrize("m, k, n", SHAPES)
def test_nn_product(simd_on, m, k, n):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    assert_product_close(simd.nn_into(a, b), a, b)


@pytest.mark.parametrize("m, k, n", SHAPES)
def test_nt_product(simd_on, m, k, n):
    rng = np.random.default_rng(m * 1000 + k * 10 + n + 1)
    a, b_rows = rng.standard_normal((m, k), np.float32), rng.standard_normal((n, k), np.float32)
    assert_product_close(simd.nt_into(a, b_rows), a, b_rows.T)


@pytest.mark.parametrize("m, k, n", SHAPES + [(7, 40, 16), (6, 33, 17), (13, 16, 64),
                                     (5, 15, 31), (12, 200, 96)])
def test_nn_t_product_is_nn_on_a_copy_of_the_transpose(simd_on, m, k, n):
    """``nn_t`` packs its panels straight from the rows of ``b.T`` (16 x 16 register
    transposes, edges past 16 or 32 rows, inner dimensions past a multiple of 16): the bits
    of ``nn`` on a contiguous copy of ``b``, and within the rounding bound."""
    rng = np.random.default_rng(m * 1000 + k * 10 + n + 2)
    a, b_rows = rng.standard_normal((m, k), np.float32), rng.standard_normal((n, k), np.float32)
    got = simd.nn_t_into(a, b_rows)
    np.testing.assert_array_equal(got, simd.nn_into(a, np.ascontiguousarray(b_rows.T)))
    assert_product_close(got, a, b_rows.T)
    stack = rng.standard_normal((3, n, k), np.float32)  # a stack, one shared a
    np.testing.assert_array_equal(simd.nn_t_into(a, stack),
                                  simd.nn_into(a, np.ascontiguousarray(stack.transpose(0, 2, 1))))


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("transposed", [False, True])
def test_batched_products_into_out(simd_on, shared, transposed):
    """A stack of products, with one ``a`` for all (a convolution's weight) or one each
    (Winograd's 16, the per-sample weight gradients), ``b`` C-contiguous or a stack of
    transposed C-contiguous matrices, written into ``out`` and nowhere else."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((7, 20) if shared else (5, 7, 20), np.float32)
    b = rng.standard_normal((5, 20, 45), np.float32)
    if transposed:
        b = np.ascontiguousarray(b.transpose(0, 2, 1)).transpose(0, 2, 1)
    buffer = np.full(5 * 7 * 45 + 3, 7.0, np.float32)
    out = buffer[:-3].reshape(5, 7, 45)
    assert simd.matmul(a, b, out=out) is out
    assert_product_close(out, np.broadcast_to(a, (5, 7, 20)), b)
    assert np.all(buffer[-3:] == 7.0)


def test_matmul_takes_the_kernels_only_where_they_fit(simd_on, monkeypatch):
    """float32 C-contiguous operands (or ``b`` a transposed C-contiguous matrix: on ``nn_t``
    with whole 32-column panels, else on ``nt`` with a long enough inner dimension) go to
    the kernels; anything else is NumPy's product, with NumPy's errors."""
    calls = []
    monkeypatch.setattr(simd, "nn_into", lambda *a: calls.append("nn") or np.matmul(*a[:2]))
    monkeypatch.setattr(simd, "nt_into", lambda a, b, out: calls.append("nt") or
                        a @ np.swapaxes(b, -1, -2))
    monkeypatch.setattr(simd, "nn_t_into", lambda a, b, out: calls.append("nn_t") or
                        a @ np.swapaxes(b, -1, -2))
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((8, 9), np.float32), rng.standard_normal((9, 10), np.float32)
    long_a = rng.standard_normal((8, simd.NT_MIN_K), np.float32)
    simd.matmul(a, b)
    simd.matmul(long_a, rng.standard_normal((10, simd.NT_MIN_K), np.float32).T)
    simd.matmul(a, rng.standard_normal((3, 9, 4), np.float32))
    simd.matmul(long_a, rng.standard_normal((3, 4, simd.NT_MIN_K), np.float32).transpose(0, 2, 1))
    simd.matmul(a, rng.standard_normal((64, 9), np.float32).T)  # whole panels: any k
    simd.matmul(long_a, rng.standard_normal((2, 32, simd.NT_MIN_K), np.float32).transpose(0, 2, 1))
    assert calls == ["nn", "nt", "nn", "nt", "nn_t", "nn_t"]
    calls.clear()
    for x, y in [(a.astype(np.float64), b), (a, b.astype(np.float64)), (a.T.copy().T, b),
                 (a, b[:, ::2]), (rng.standard_normal((3, 8, 9), np.float32), b), (a[None], b),
                 (a, rng.standard_normal((2, 3, 9, 4), np.float32)),
                 (a, np.ascontiguousarray(b.T).T)]:  # transposed, but a short inner dimension
        np.testing.assert_allclose(simd.matmul(x, y), np.matmul(x, y), rtol=1e-6)
    np.testing.assert_allclose(simd.matmul(a, b, out=np.empty((8, 10))), a @ b, rtol=1e-6)
    with pytest.raises(ValueError, match="matmul"):
        simd.matmul(a, a)
    with pytest.raises(ValueError, match="broadcast"):  # NumPy's own error
        simd.matmul(rng.standard_normal((2, 8, 9), np.float32),
                    rng.standard_normal((3, 9, 4), np.float32))
    with pytest.raises(ValueError):
        simd.matmul(a, b, out=np.empty((8, 11), np.float32))
    square = rng.standard_normal((9, 9), np.float32)
    expected = square @ square
    simd.matmul(square, square, out=square)  # out over the operands: NumPy copies first
    np.testing.assert_allclose(square, expected, rtol=1e-6)
    assert calls == []


@pytest.mark.parametrize("avx512, kernel_set, expected", [
    (True, "Haswell", True), (True, "Zen", True), (True, "SkylakeX", False),
    (True, "Cooperlake", False), (True, None, False), (False, "Haswell", False)])
def test_wanted_on_avx512_cpus_whose_blas_lacks_it(monkeypatch, avx512, kernel_set, expected):
    monkeypatch.setattr(simd, "_cpu_has_avx512", lambda: avx512)
    monkeypatch.setattr(blas, "kernel_set", lambda: kernel_set)
    previous = simd.set_wanted(None)
    try:
        assert simd.wanted() is expected
        assert simd.vectors_wanted() is avx512  # the direct convolutions: whatever the BLAS
        kernels.set_enabled(False)
        assert simd.wanted() is False  # EMBER_NUMBA=0 switches these off too
        assert simd.vectors_wanted() is False
    finally:
        kernels.set_enabled(True)
        simd.set_wanted(previous)


def test_kernel_set_names_numpys_openblas():
    found = blas.kernel_set()
    assert found is None or (isinstance(found, str) and found)


CONV_CASES = [  # (input, weight, kwargs): each of conv_blocked's paths in float32
    ((6, 5, 32, 32), (7, 5, 3, 3), dict(padding=1)),   # wide rows (32x32)
    ((6, 8, 16, 16), (12, 8, 3, 3), dict(padding=1)),  # narrow, 3x3, even: Winograd
    ((5, 3, 9, 9), (8, 3, 3, 3), dict(padding=1)),     # narrow, odd size: im2col
    ((4, 4, 12, 12), (6, 4, 5, 5), dict()),            # 5x5, no padding
]


@pytest.mark.parametrize("shapes, kwargs", [(c[:2], c[2]) for c in CONV_CASES])
def test_float32_convolution_with_and_without_the_kernels(monkeypatch, shapes, kwargs):
    """conv2d's output and gradients in float32 with the kernels and with NumPy's
    products, both against torch in float64 within float32 rounding."""
    from ember.ops import conv
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    tt = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    expected = TF.conv2d(*tt, **kwargs)
    g = np.cos(np.arange(expected.numel())).reshape(expected.shape).astype(np.float32)
    expected.backward(torch.tensor(g, dtype=torch.float64))
    previous = simd.set_wanted(None)
    try:
        for on in (True, False):
            simd.set_wanted(on)
            ts = [ember.tensor(a, requires_grad=True) for a in arrays]
            out = F.conv2d(*ts, **kwargs)
            assert out.grad_fn.blocked and out.dtype == ember.float32
            out.backward(ember.tensor(g))
            scale = np.abs(expected.detach().numpy()).max()
            np.testing.assert_allclose(out.array, expected.detach().numpy(), rtol=1e-4,
                                       atol=1e-5 * scale)
            for mine, theirs in zip(ts, tt):
                np.testing.assert_allclose(mine.grad.array, theirs.grad.numpy(), rtol=1e-4,
                                           atol=1e-5 * np.abs(theirs.grad.numpy()).max())
    finally:
        simd.set_wanted(previous)


def test_convolution_takes_the_kernels(simd_on, monkeypatch):
    """The blocked convolution's products all go through ``simd.matmul`` (here Winograd's:
    the forward's and input gradient's on ``nn``, the weight gradient's, 256 tiles a
    block, on ``nt``)."""
    from ember.ops import conv, simd_conv
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    monkeypatch.setattr(simd_conv, "ENABLED", False)  # the blocked layout, not the direct one
    calls = []
    real_nn, real_nt = simd.nn_into, simd.nt_into
    monkeypatch.setattr(simd, "nn_into", lambda *a: calls.append("nn") or real_nn(*a))
    monkeypatch.setattr(simd, "nt_into", lambda *a: calls.append("nt") or real_nt(*a))
    x = ember.tensor(np.ones((8, 8, 16, 16), np.float32), requires_grad=True)
    w = ember.tensor(np.ones((12, 8, 3, 3), np.float32), requires_grad=True)
    out = F.conv2d(x, w, padding=1)
    out.sum().backward()
    assert out.grad_fn.blocked
    assert "nn" in calls and "nt" in calls


@pytest.mark.parametrize("sample_layout", [True, False])
def test_equal_neighbourhoods_give_equal_outputs(simd_on, monkeypatch, sample_layout):
    """Each output is the same chain of fused multiply-adds wherever it sits, so in
    float32 too an image whose rows repeat gives repeating output rows. (OpenBLAS's AVX2
    kernels round some positions differently: the ties that max-pooling then breaks
    apart sent the CIFAR CNN's float32 gradients 1e-2 away from float64's;
    docs/performance.md, section 31.)"""
    from ember.ops import conv
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", sample_layout)
    monkeypatch.setattr(conv, "SAMPLE_MAX_WORK", 1 << 30)  # the per-sample path as asked
    rng = np.random.default_rng(6)
    row = rng.standard_normal((4, 3, 1, 32)).astype(np.float32)
    x = ember.tensor(np.repeat(row, 32, axis=2))
    w = ember.tensor(rng.standard_normal((24, 3, 3, 3)).astype(np.float32), requires_grad=True)
    out = F.conv2d(x, w, padding=1)
    assert out.grad_fn.blocked is not sample_layout
    inner = out.array[:, :, 1:-1]
    assert np.all(inner == inner[:, :, :1])


def test_kernels_close_over_nothing_that_pickles_differently_per_process(simd_on):
    """As in ember.ops.kernels: a closure holding a compiled function or an intrinsic
    would miss Numba's on-disk cache in every process (section 29)."""
    from numba.core.dispatcher import Dispatcher
    from numba.core.extending import _Intrinsic
    compiled = [k for k in vars(simd).values() if isinstance(k, Dispatcher)]
    assert {k.py_func.__name__ for k in compiled} >= {"nn_kernel", "nt_kernel", "pack_panel"}
    for kernel in compiled:
        for cell in kernel.py_func.__closure__ or ():
            assert not isinstance(cell.cell_contents, (Dispatcher, _Intrinsic)), \
                (kernel.py_func.__name__, cell.cell_contents)


# ---------------------------------------------------------------- the split worker
SPLIT_SHAPES = [(200, 256, 784), (200, 784, 256), (7, 5, 33), (1, 1, 1), (64, 100, 10),
                (5, 3, 0), (0, 4, 7), (3, 40, 65)]


def _layouts(a: np.ndarray, w: np.ndarray) -> list:
    """(a, b) pairs of one product in every layout ``split_product`` takes: b as itself
    and as ``w.T`` (a Linear layer's ``x @ W.T``), a as itself, transposed (its ``g.T @
    x``), strided, and with negative strides (copied first)."""
    b = np.ascontiguousarray(w.T)
    a_t = np.ascontiguousarray(a.T).T
    a_strided = np.repeat(a, 2, axis=1)[:, ::2]
    b_strided = np.repeat(b, 2, axis=1)[:, ::2]
    return [(a, b), (a, w.T), (a_t, b), (a_t, w.T), (a_strided, b_strided),
            (a[::-1].copy()[::-1], b)]


@pytest.mark.parametrize("m, k, n", SPLIT_SHAPES)
def test_split_product_in_every_layout_gives_the_bits_of_one_thread(simd_on, m, k, n):
    """Shared with the spinning worker or not, an operand read in place or copied: the
    same bits, each output within the float32 bound."""
    rng = np.random.default_rng(m + k + n)
    a, w = rng.standard_normal((m, k), np.float32), rng.standard_normal((n, k), np.float32)
    alone = simd.split_product(np.ascontiguousarray(a), np.ascontiguousarray(w.T), False)
    assert_product_close(alone, a, w.T)
    for x, y in _layouts(a, w):
        for share in (True, True, False):  # the worker awake after the first
            np.testing.assert_array_equal(simd.split_product(x, y, share), alone)


def test_split_product_declines_what_numpy_should_do(simd_on):
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((20, 30), np.float32), rng.standard_normal((30, 70), np.float32)
    long_k = simd.SPLIT_MAX_K + 1
    declined = [(a.astype(np.float64), b), (a, b.astype(np.float64)), (a[None], b),
                (a, b[:20]), (a[:, :0], b[:0]),
                (rng.standard_normal((2, long_k), np.float32),
                 rng.standard_normal((long_k, 3), np.float32))]
    for x, y in declined:
        assert simd.split_product(x, y) is None
    simd.set_wanted(False)
    assert simd.split_product(a, b) is None


def test_split_worker_that_never_runs_costs_time_not_a_deadlock(simd_on):
    """The caller claims every part the worker does not take: with no worker thread at
    all (as in a forked child) each product still completes, on the caller alone."""
    lonely = simd.SplitWorker(start=False)
    rng = np.random.default_rng(10)
    a, b = rng.standard_normal((50, 60), np.float32), rng.standard_normal((60, 300), np.float32)
    for _ in range(3):
        out = np.empty((50, 300), np.float32)
        assert lonely.run(a, b, out) is out
        assert_product_close(out, a, b)
    assert lonely.control[2] == 3 * lonely.job[7] == lonely.finished == 6
    # the claim word carries the job's own part count: every part of job 3 was claimed
    bits = simd.CLAIM_BITS
    assert lonely.control[1] == 3 << 2 * bits | 2 << bits | 2


def test_split_worker_shared_by_many_threads_gives_each_its_own_product(simd_on):
    """One caller at a time publishes a job; the others' products run alone meanwhile."""
    import threading
    rng = np.random.default_rng(13)
    pairs = [(rng.standard_normal((40, 70), np.float32), rng.standard_normal((70, 96 + i),
                                                                             np.float32))
             for i in range(4)]
    expected = [simd.split_product(a, b, False) for a, b in pairs]
    failures = []

    def products(i):
        for _ in range(200):
            if not np.array_equal(simd.split_product(*pairs[i]), expected[i]):
                failures.append(i)

    threads = [threading.Thread(target=products, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures and not any(t.is_alive() for t in threads)


def test_split_worker_wakes_after_sleeping(simd_on, monkeypatch):
    monkeypatch.setattr(simd, "SPIN_LOOPS", 1000)  # asleep soon after each product
    worker = simd.SplitWorker()
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((30, 40), np.float32), rng.standard_normal((40, 500), np.float32)
    try:
        for _ in range(5):
            time.sleep(0.02)
            assert worker.sleeping
            assert_product_close(worker.run(a, b, np.empty((30, 500), np.float32)), a, b)
    finally:
        worker.stop()
        worker.thread.join(5)
    assert not worker.thread.is_alive()


def test_blas_matmul_sends_float32_products_from_mid_size_to_simd(simd_on, monkeypatch):
    """By size and dtype, never by history: shared with the worker until ember's own pool
    has started, on one thread after (the same bits); into ``out`` when given."""
    calls = []
    monkeypatch.setattr(blas, "_split_product",
                        lambda a, b, share: calls.append(share) or simd.split_product(a, b, share))
    monkeypatch.setattr(blas, "_own_threads_started", False)
    rng = np.random.default_rng(12)
    x, w = rng.standard_normal((200, 784), np.float32), rng.standard_normal((256, 784), np.float32)
    shared = blas.matmul(x, w.T)
    assert calls == [True]
    np.testing.assert_array_equal(shared, simd.split_product(x, w.T, False))
    blas.matmul(x.astype(np.float64), w.T.astype(np.float64))
    small = x[:10, :100], w[:100, :100].T  # 1e5 multiply-adds: below MID_MNK
    np.testing.assert_allclose(blas.matmul(*small), small[0] @ small[1], rtol=1e-5)
    assert calls == [True]
    monkeypatch.setattr(blas, "_own_threads_started", True)
    out = np.empty((200, 256), np.float32)
    assert blas.matmul(x, w.T, out) is out
    assert calls == [True, False]
    np.testing.assert_array_equal(out, shared)
