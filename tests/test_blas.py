"""ember.blas: the one-thread path for mid-sized products gives the plain product and
always leaves the BLAS pool as it found it."""

import numpy as np
import pytest

from ember import blas

threadpoolctl = pytest.importorskip("threadpoolctl")

# M, K, N around both bounds of the one-thread range (M*K*N in [2^18, 1e7))
SHAPES = [(10, 784, 100), (64, 784, 100), (200, 784, 256), (8, 8, 8), (512, 512, 512),
          (1, 784, 400), (200, 256, 128)]


@pytest.fixture(autouse=True)
def openblas_products(monkeypatch):
    """These tests are about OpenBLAS's threads: simd's split worker (which takes big
    float32 products on some CPUs) stays off; tests/ops/test_simd.py tests it."""
    from ember.ops import simd
    previous = simd.set_wanted(False)
    yield
    simd.set_wanted(previous)


@pytest.fixture
def two_threads(monkeypatch):
    pool = blas._blas_pool()
    if pool is None:
        pytest.skip("NumPy's OpenBLAS pool is not reachable here")
    # the row blocks are tested whichever kernels OpenBLAS runs here (blocks_pay_with)
    monkeypatch.setattr(pool, "blocks_pay", True)
    # mid-sized products on one thread, whether or not earlier tests started ember's own
    # threads (MID_MNK); tests of the other case say so
    monkeypatch.setattr(blas, "_own_threads_started", True)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        yield


def plain_product(a, b, threads):
    with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
        return a @ b


@pytest.mark.parametrize("m, k, n", SHAPES)
@pytest.mark.parametrize("own_threads_started", [True, False])
def test_matmul_equals_the_plain_product_and_restores_the_pool(two_threads, monkeypatch, m,
                                                               k, n, own_threads_started):
    """Mid-sized products run on one BLAS thread, from ``MID_MNK`` multiply-adds up only
    once ember's own threads have started; smaller and bigger ones on OpenBLAS's choice."""
    monkeypatch.setattr(blas, "_own_threads_started", own_threads_started)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((n, k), dtype=np.float32).T  # a transposed view, as in Linear
    top = blas.MULTITHREAD_FLOPS / 2 if own_threads_started else blas.MID_MNK
    one_thread = 2 ** 18 <= m * k * n < top
    expected = plain_product(a, b, 1 if one_thread else 2)  # bit for bit (b is W.T: no blocks)
    before = blas.get_num_threads()
    np.testing.assert_array_equal(blas.matmul(a, b), expected)
    assert blas.get_num_threads() == before
    np.testing.assert_allclose(blas.matmul(a, b), plain_product(a, b, 2), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- products in blocks
BLOCK_SHAPES = [(200, 784, 256), (256, 200, 784), (200, 128, 256), (128, 200, 256),
                (201, 784, 257), (3, 1000, 3000), (1000, 4000, 2), (2, 4000, 1000),
                (64, 3000, 40)]

MLP_BACKWARD_SHAPES = [(256, 200, 784), (200, 128, 256), (128, 200, 256)]  # dW1, dX2, dW2
# OpenBLAS's own two-thread split gives the row blocks' bits for those shapes with its
# AVX-512 SkylakeX kernels, which it picks on Zen 4 and Zen 5 (the kernels this was
# measured with); with its Haswell (AVX2) kernels (OPENBLAS_CORETYPE=Haswell) its split
# sums some columns in another order
AVX512_KERNELS = ("SkylakeX",)


def openblas_kernels():
    """The kernels NumPy's OpenBLAS chose when it loaded ("Haswell", "SkylakeX", ...)."""
    return next((i.get("architecture") for i in threadpoolctl.threadpool_info()
                 if i.get("internal_api") == "openblas"), None)


def refuse_blocks(monkeypatch, pool):
    """The batch kernel stays findable but fails the test if anything calls it."""
    def refuse(*args):
        raise AssertionError("this product must not run in blocks")
    monkeypatch.setitem(pool.gemm_batch, np.dtype(np.float32), (refuse, np.int64))
    monkeypatch.setattr(blas, "_batch_plans", {})


def blocks_or_skip(dtype):
    pool = blas._blas_pool()
    if pool is None or np.dtype(dtype) not in pool.gemm_batch:
        pytest.skip("this OpenBLAS has no gemm_batch")
    return pool


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("shape", BLOCK_SHAPES)
@pytest.mark.parametrize("a_transposed", [False, True])
def test_big_products_run_in_row_blocks_and_equal_the_product(two_threads, monkeypatch, dtype,
                                                              rtol, shape, a_transposed):
    """Products above MULTITHREAD_FLOPS run as one gemm_batch call of independent row
    blocks, with ``a`` as stored or transposed: the float64 product of the same numbers,
    the same bits on every call, and those of OpenBLAS's own split for an MLP's
    backward products (one thread's, each block; OpenBLAS's split happens to agree)."""
    pool = blocks_or_skip(dtype)
    kernel, integer = pool.gemm_batch[np.dtype(dtype)]
    calls = []
    monkeypatch.setitem(pool.gemm_batch, np.dtype(dtype),
                        (lambda *args: calls.append(args[14]) or kernel(*args), integer))
    monkeypatch.setattr(blas, "_batch_plans", {})
    m, k, n = shape
    rng = np.random.default_rng(3)
    a = rng.standard_normal((k, m) if a_transposed else (m, k)).astype(dtype)
    a, b = (a.T if a_transposed else a), rng.standard_normal((k, n)).astype(dtype)
    got = blas.matmul(a, b)
    assert calls == [2] and got.dtype == dtype and got.shape == (m, n)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(got, exact, rtol=rtol, atol=rtol * np.abs(exact).max())
    np.testing.assert_array_equal(blas.matmul(a, b), got)
    out = np.full((m, n), np.nan, dtype)
    assert blas.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, got)
    if shape in MLP_BACKWARD_SHAPES and dtype == np.float32 and \
            openblas_kernels() in AVX512_KERNELS:
        np.testing.assert_array_equal(got, plain_product(a, b, 2))


@pytest.mark.parametrize("core, pays", [("SkylakeX", True), ("Cooperlake", True),
                                        ("SapphireRapids", True), ("Haswell", False),
                                        ("HASWELL", False), ("Zen", False), (None, True)])
def test_row_blocks_are_used_with_the_kernels_they_were_measured_faster_with(core, pays):
    assert blas.blocks_pay_with(core) is pays


def test_kernels_whose_own_split_is_faster_keep_every_product_whole(two_threads,
                                                                     monkeypatch):
    pool = blocks_or_skip(np.float32)
    refuse_blocks(monkeypatch, pool)
    monkeypatch.setattr(pool, "blocks_pay", False)
    monkeypatch.setattr(blas, "_batch_plans", {})
    rng = np.random.default_rng(5)
    for m, k, n in MLP_BACKWARD_SHAPES:
        a, b = rng.standard_normal((m, k), dtype=np.float32), \
            rng.standard_normal((k, n), dtype=np.float32)
        np.testing.assert_array_equal(blas.matmul(a, b), plain_product(a, b, 2))


def test_a_transposed_b_stays_openblass_split(two_threads, monkeypatch):
    """``x @ W.T`` (a Linear forward) is not cut: each row block would pack W.T again."""
    refuse_blocks(monkeypatch, blocks_or_skip(np.float32))
    rng = np.random.default_rng(5)
    x, w = rng.random((200, 784), np.float32), rng.random((256, 784), np.float32)
    np.testing.assert_array_equal(blas.matmul(x, w.T), plain_product(x, w.T, 2))


@pytest.mark.parametrize("threads", [2, 3, 4, 8, 16])
@pytest.mark.parametrize("shape", BLOCK_SHAPES + [(2, 1000, 3001), (6000, 1, 1000),
                                                  (40, 400, 400)])
def test_every_block_is_above_openblas_small_matrix_path(shape, threads):
    """OpenBLAS's gemm_batch crashes (segmentation fault) on blocks of at most 100^3
    multiply-adds in NumPy's DYNAMIC_ARCH build, so no plan may make one; and the blocks
    cover the output's rows exactly once."""
    m, k, n = shape
    plan = blas._make_plan((None, np.int64), m, n, k, (blas._NO_TRANS, k),
                           (blas._NO_TRANS, n), np.dtype(np.float32), threads)
    if plan is False:
        assert m * n * k <= 2 * 100 ** 3 or m == 1
        return
    _, a_offsets, c_offsets, _, (ints, _flags) = plan
    count = len(a_offsets)
    ms, ns, ks = ints[:count], ints[count:2 * count], ints[2 * count:3 * count]
    assert 2 <= count <= threads and (ms * ns * ks > 100 ** 3).all()  # OpenBLAS's bound
    assert (ns == n).all() and (ks == k).all() and ms.sum() == m
    assert c_offsets == [int(ms[:i].sum()) * n * 4 for i in range(count)]


@pytest.mark.parametrize("case", ["stacked", "strided", "int", "one thread", "overlap",
                                  "mismatch"])
def test_what_blocks_cannot_take_is_numpys_product(two_threads, monkeypatch, case):
    pool = blocks_or_skip(np.float32)
    refuse_blocks(monkeypatch, pool)
    rng = np.random.default_rng(4)
    a, b = rng.random((300, 500), np.float32), rng.random((500, 400), np.float32)
    if case == "mismatch":
        with pytest.raises(ValueError, match="matmul"):
            blas.matmul(a, b[:-1])
        return
    out = None
    if case == "stacked":
        a = np.stack([a, a])
    elif case == "strided":
        a = a[:, ::2]
        b = b[::2]
    elif case == "int":
        a, b = (a * 10).astype(np.int64), (b * 10).astype(np.int64)
    elif case == "one thread":
        monkeypatch.setattr(pool, "get", lambda: 1)
    else:  # the output written over one operand: NumPy copies what overlaps
        a = np.ascontiguousarray(a[:, :400])
        b = np.ascontiguousarray(b[:400])
        out = a
    expected = a @ b
    got = blas.matmul(a, b, out=out)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_matmul_writes_into_out(two_threads):
    rng = np.random.default_rng(1)
    a, b = rng.random((64, 784), np.float32), rng.random((784, 100), np.float32)
    out = np.empty((64, 100), np.float32)
    assert blas.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, plain_product(a, b, 1))


def test_batched_and_vector_operands_follow_numpy(two_threads):
    rng = np.random.default_rng(2)
    a, b = rng.random((3, 64, 300), np.float32), rng.random((300, 50), np.float32)
    np.testing.assert_array_equal(blas.matmul(a, b), plain_product(a, b, 1))
    v = rng.random(300, np.float32)
    np.testing.assert_array_equal(blas.matmul(a, v), plain_product(a, v, 1))


def test_a_failing_product_still_restores_the_pool(two_threads):
    before = blas.get_num_threads()
    with pytest.raises(ValueError):
        blas.matmul(np.ones((64, 784), np.float32), np.ones((700, 100), np.float32))
    assert blas.get_num_threads() == before


def test_set_num_threads_sets_and_validates(two_threads):
    blas.set_num_threads(1)
    assert blas.get_num_threads() == 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            blas.set_num_threads(bad)


def test_without_a_reachable_pool_matmul_is_the_plain_product(monkeypatch):
    monkeypatch.setattr(blas, "_pool", None)
    a, b = np.ones((64, 784), np.float32), np.ones((784, 100), np.float32)
    np.testing.assert_array_equal(blas.matmul(a, b), a @ b)
    assert blas.get_num_threads() == 1
    with pytest.raises(RuntimeError, match="threadpoolctl"):
        blas.set_num_threads(2)


# ---------------------------------------------------------------- axpy
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [blas.AXPY_MIN_SIZE - 1, blas.AXPY_MIN_SIZE, 78400])
def test_axpy_updates_in_place_as_the_two_pass_update(two_threads, dtype, size):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal(size).astype(dtype), rng.standard_normal(size).astype(dtype)
    expected, x_before, y_before = y - x * dtype(0.1), x.copy(), y.copy()
    y_array = y
    used = blas.axpy(-0.1, x, y)
    assert used == (size >= blas.AXPY_MIN_SIZE)  # small arrays are left to NumPy
    assert y is y_array and blas.get_num_threads() == 2
    np.testing.assert_array_equal(x, x_before)
    if used:  # BLAS may fuse the multiply-add: one rounding instead of two
        bound = 2 * np.finfo(dtype).eps * (np.abs(y_before) + np.abs(x * dtype(0.1)))
        assert (np.abs(y - expected) <= bound).all()
    else:
        np.testing.assert_array_equal(y, y_before)  # untouched: the caller updates it


def _declined_cases(n: int) -> dict:
    rng = np.random.default_rng(4)
    x = rng.standard_normal(2 * n).astype(np.float32)
    y = rng.standard_normal(2 * n).astype(np.float32)
    read_only = x.copy()
    read_only.flags.writeable = False
    return {
        "strided x": (x[::2], y[:n]),
        "strided y": (x[:n], y[::2]),
        "dtypes differ": (x.astype(np.float64), y),
        "float16": (x.astype(np.float16), y.astype(np.float16)),
        "shapes differ": (x[:n], y),
        "read-only x": (read_only, y),
    }


@pytest.mark.parametrize("case", list(_declined_cases(blas.AXPY_MIN_SIZE)))
def test_axpy_declines_what_blas_cannot_do_and_changes_nothing(two_threads, case):
    x, y = _declined_cases(blas.AXPY_MIN_SIZE)[case]
    before = y.copy()
    assert blas.axpy(-0.1, x, y) is False
    np.testing.assert_array_equal(y, before)


def test_without_a_reachable_pool_axpy_declines(monkeypatch):
    monkeypatch.setattr(blas, "_pool", None)
    y = np.ones(blas.AXPY_MIN_SIZE, np.float32)
    assert blas.axpy(1.0, np.ones_like(y), y) is False
    assert (y == 1).all()


def test_one_thread_sets_one_and_restores_the_pool_even_on_error(two_threads):
    before = blas.get_num_threads()
    with blas.one_thread() as previous:
        assert previous == before and blas.get_num_threads() == 1
    assert blas.get_num_threads() == before
    with pytest.raises(KeyError), blas.one_thread():
        raise KeyError("inside")
    assert blas.get_num_threads() == before


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("shape", [(200, 256), (1, 5), (0, 3), (64, 10), (5000, 3)])
def test_column_sums_equal_the_exact_sum_over_rows(dtype, rtol, shape):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape).astype(dtype)
    got = blas.column_sums(a)
    assert got.dtype == dtype and got.shape == (shape[1],)
    exact = a.astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(got, exact, rtol=rtol, atol=rtol * np.sqrt(shape[0]))


def test_column_sums_of_strided_and_half_matrices():
    a = np.arange(24.0).reshape(4, 6)
    np.testing.assert_array_equal(blas.column_sums(a[:, ::2]), a[:, ::2].sum(axis=0))
    half = a.astype(np.float16)
    got = blas.column_sums(half)  # NumPy's own sum: BLAS has no float16
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, half.sum(axis=0))


def test_split_pays_for_a_big_weight_that_a_shared_product_read(monkeypatch):
    """``split_pays`` (docs/performance.md, section 25): the optimizer shares a weight's
    write between BLAS's threads only for a weight that a product on those threads read
    (``x @ W.T``), never by timing, and never for one only read on one thread."""
    monkeypatch.setattr(blas, "_shared_operands", {})
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((256, 784)).astype(np.float32)
    other = rng.standard_normal((100, 784)).astype(np.float32)
    small = rng.standard_normal((10, 784)).astype(np.float32)  # below SPLIT_AXPY_MIN_SIZE
    blas.matmul(np.ones((10, 784), np.float32), other.T)  # one thread: not shared
    blas.matmul(np.ones((10, 784), np.float32), small.T)
    assert not blas.split_pays(weight) and not blas.split_pays(other)
    blas.matmul(np.ones((200, 784), np.float32), weight.T)  # above MULTITHREAD_FLOPS
    blas.matmul(np.ones((20000, 784), np.float32), small.T)
    assert blas.split_pays(weight)
    assert not blas.split_pays(other) and not blas.split_pays(small)
    assert not blas.split_pays(weight.copy())  # the same values, another array


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_axpy_gives_the_one_thread_bits_and_one_rounding(dtype):
    """Each element is ``fma(alpha, x, y)`` whichever thread computes it, but for the few
    that OpenBLAS's Haswell kernels leave at the end of a thread's share: those are
    ``alpha * x + y`` rounded twice (the other correct rounding of the formula)."""
    pool = blas._blas_pool()
    if pool is None or not pool.axpy:
        pytest.skip("NumPy's OpenBLAS axpy is not reachable here")
    rng = np.random.default_rng(3)
    x = rng.standard_normal(100_003).astype(dtype)
    y = rng.standard_normal(100_003).astype(dtype)
    alpha = dtype(-0.05)
    one, split = y.copy(), y.copy()
    assert blas.axpy(alpha, x, one) and blas.axpy(alpha, x, split, split=True)
    exact = (alpha.astype(np.float64) * x.astype(np.float64) + y.astype(np.float64))
    if dtype == np.float32:  # one rounding: the float64 sum of the exact float64 product,
        # rounded to float32 (a double rounding could differ in rare ties; none here)
        fma, twice = exact.astype(np.float32), alpha * x + y
        np.testing.assert_array_equal(one, fma)
        np.testing.assert_array_equal(split, np.where(split == fma, fma, twice))
        assert np.count_nonzero(split != fma) <= 16 * blas.get_num_threads()
    else:
        np.testing.assert_array_equal(one, split)
        np.testing.assert_allclose(split, exact, rtol=1e-15, atol=1e-15)
