"""ember.blas: the one-thread path for mid-sized products gives the plain product and
always leaves the BLAS pool as it found it."""

import numpy as np
import pytest

from ember import blas

threadpoolctl = pytest.importorskip("threadpoolctl")

# M, K, N around both bounds of the one-thread range (M*K*N in [2^18, 1e7))
SHAPES = [(10, 784, 100), (64, 784, 100), (200, 784, 256), (8, 8, 8), (512, 512, 512),
          (1, 784, 400), (200, 256, 128)]


@pytest.fixture
def two_threads():
    if blas._blas_pool() is None:
        pytest.skip("NumPy's OpenBLAS pool is not reachable here")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        yield


def plain_product(a, b, threads):
    with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
        return a @ b


@pytest.mark.parametrize("m, k, n", SHAPES)
def test_matmul_equals_the_plain_product_and_restores_the_pool(two_threads, m, k, n):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((n, k), dtype=np.float32).T  # a transposed view, as in Linear
    one_thread = 2 ** 18 <= m * k * n < blas.MULTITHREAD_FLOPS / 2
    expected = plain_product(a, b, 1 if one_thread else 2)  # bit for bit, same thread count
    before = blas.get_num_threads()
    np.testing.assert_array_equal(blas.matmul(a, b), expected)
    assert blas.get_num_threads() == before
    np.testing.assert_allclose(blas.matmul(a, b), plain_product(a, b, 2), rtol=1e-4, atol=1e-4)


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
