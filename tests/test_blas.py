"""ember.blas: the one-thread path for mid-sized products gives the plain product and
always leaves the BLAS pool as it found it."""

import numpy as np
import pytest

from ember import blas

threadpoolctl = pytest.importorskip("threadpoolctl")

# M, K, N around both bounds of the one-thread range (M*K*N in [2^18, 5e7))
SHAPES = [(10, 784, 100), (64, 784, 100), (200, 784, 256), (8, 8, 8), (512, 512, 512),
          (1, 784, 400)]


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
