"""The optional Numba kernels (ember/ops/kernels.py) against the NumPy formulas and torch.

Every other test runs with the kernels on when Numba is installed (CI installs it);
these run each path that uses a kernel both ways, on shapes that reach it."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import ember
import ember.nn.functional as F
from ember.ops import conv, kernels

# (input shape, weight shape, conv2d arguments): all take the per-sample layout, which
# is where the kernels work (im2col in the forward, col2im for the input gradient)
CONVS = [
    ((3, 6, 14, 14), (16, 6, 5, 5), dict()),  # LeNet-5's second layer: col2im gradient
    ((2, 1, 12, 12), (6, 1, 5, 5), dict(padding=2)),  # a first layer, padded
    ((2, 3, 9, 11), (5, 3, 3, 3), dict(padding=(1, 2), stride=(2, 1), dilation=(1, 2))),
    ((2, 4, 10, 9), (8, 2, 3, 3), dict(padding=1, stride=2, groups=2)),
    ((2, 4, 8, 8), (4, 4, 3, 3), dict(padding=1)),  # input gradient as a convolution
    ((2, 2, 7, 9), (12, 2, 2, 3), dict(stride=(1, 3), dilation=2)),
]


@pytest.fixture
def with_kernels():
    """Run a test body with the kernels on, then off; restores the setting."""
    if not kernels.enabled():
        if os.environ.get("CI") == "true":
            pytest.fail("Numba is a test dependency: CI must run the compiled kernels")
        pytest.skip("Numba is not installed")
    previous = kernels.set_enabled(True)
    yield
    kernels.set_enabled(previous)


def conv_results(x, w, b, g, kwargs):
    ts = [ember.tensor(a, dtype=ember.float64, requires_grad=True) for a in (x, w, b)]
    out = F.conv2d(*ts, **kwargs)
    assert out.grad_fn.per_sample  # the layout whose copies the kernels do
    out.backward(ember.tensor(g, dtype=ember.float64))
    return [out.array] + [t.grad.array for t in ts]


@pytest.mark.parametrize("shapes", CONVS, ids=lambda c: str(c[2]) or "plain")
def test_conv2d_with_kernels_equals_the_numpy_path_and_torch(with_kernels, monkeypatch, shapes):
    monkeypatch.setattr(conv, "SAMPLE_MAX_ROWS", 10**6)  # NumPy's run in the same layout
    x_shape, w_shape, kwargs = shapes
    rng = np.random.default_rng(3)
    x, w, b = (rng.standard_normal(s) for s in (x_shape, w_shape, w_shape[:1]))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    expected = TF.conv2d(tx, tw, tb, **kwargs)
    g = rng.standard_normal(expected.shape)
    expected.backward(torch.tensor(g))
    compiled = conv_results(x, w, b, g, kwargs)
    kernels.set_enabled(False)
    plain = conv_results(x, w, b, g, kwargs)
    for ours, theirs, reference in zip(compiled, plain,
                                       (expected.detach(), tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ours, reference.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("threads", [1, 3])
def test_kernels_split_by_samples_give_the_same_bits(with_kernels, monkeypatch, threads):
    """ember.parallel cuts the kernels' work by samples; each sample's sums are the same."""
    from ember import blas, parallel
    rng = np.random.default_rng(4)
    x, w, b = (rng.standard_normal(s) for s in ((5, 6, 14, 14), (16, 6, 5, 5), (16,)))
    g = rng.standard_normal((5, 16, 10, 10))
    single = conv_results(x, w, b, g, {})
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "_enabled", True)
    monkeypatch.setattr(blas, "get_num_threads", lambda: threads)
    for a, b_ in zip(single, conv_results(x, w, b, g, {})):
        np.testing.assert_array_equal(a, b_)


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),  # overlapping, padded
    dict(kernel_size=(2, 3), stride=(1, 2), padding=1, dilation=2),
    dict(kernel_size=3, stride=1),  # each input in up to 9 windows: gradients add up
])
def test_max_pool_gradient_with_kernels_equals_numpy_and_torch(with_kernels, kwargs):
    rng = np.random.default_rng(5)
    x = rng.integers(-2, 3, (3, 2, 9, 10)).astype(np.float64)  # ties: first maximum wins
    x[0, 0, 1, 1] = x[1, 1, 4, 4] = x[1, 1, 4, 5] = np.nan  # the last NaN wins
    tx = torch.tensor(x, requires_grad=True)
    expected = TF.max_pool2d(tx, **kwargs)
    g = rng.standard_normal(expected.shape)
    expected.backward(torch.tensor(g))

    def gradient():
        xt = ember.tensor(x, dtype=ember.float64, requires_grad=True)
        F.max_pool2d(xt, **kwargs).backward(ember.tensor(g, dtype=ember.float64))
        return xt.grad.array

    compiled = gradient()
    kernels.set_enabled(False)
    np.testing.assert_allclose(compiled, gradient(), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(compiled, tx.grad.numpy(), rtol=1e-14, atol=1e-14)


def test_kernels_are_used_only_for_float32_and_float64(with_kernels):
    assert kernels.enabled(np.dtype(np.float32)) and kernels.enabled(np.dtype(np.float64))
    assert not kernels.enabled(np.dtype(np.float16))
    x = ember.tensor(np.ones((2, 1, 6, 6)), dtype=ember.float16, requires_grad=True)
    w = ember.tensor(np.ones((3, 1, 3, 3)), dtype=ember.float16, requires_grad=True)
    out = F.conv2d(x, w)
    out.sum().backward()
    assert out.dtype == ember.float16 and float(out.array[0, 0, 0, 0]) == 9.0
    assert float(x.grad.array[0, 0, 2, 2]) == 27.0  # every tap of the 3 filters


def test_switching_the_kernels_off_takes_the_numpy_copies(monkeypatch):
    """set_enabled(False) must reach every caller: the kernels are then never called."""
    previous = kernels.set_enabled(False)
    try:
        monkeypatch.setattr(kernels, "im2col", None)  # would raise if called
        monkeypatch.setattr(kernels, "col2im_into", None)
        monkeypatch.setattr(kernels, "max_pool_grad_into", None)
        monkeypatch.setattr(kernels, "max_pool_2x2_grad", None)
        x = ember.tensor(np.ones((2, 6, 14, 14)), requires_grad=True)
        w = ember.tensor(np.ones((16, 6, 5, 5)), requires_grad=True)
        F.max_pool2d(F.conv2d(x, w), 2).sum().backward()
        assert float(x.grad.array[0, 0, 4, 4]) > 0
        assert not conv.stays_per_sample(conv.conv_window("c", (64, 6, 14, 14),
                                                          (16, 6, 5, 5), 1, 0, 1), 16)
    finally:
        kernels.set_enabled(previous)


# ---------------------------------------------------------------- batch norm
def batch_norm_results(data, g, w, b, dtype):
    mine = [ember.tensor(a, dtype=dtype, requires_grad=True) for a in (data, w, b)]
    stats = [ember.zeros(w.shape[0], dtype=dtype), ember.ones(w.shape[0], dtype=dtype)]
    out = F.batch_norm(mine[0], *stats, mine[1], mine[2], training=True)
    out.backward(ember.tensor(g, dtype=dtype))
    return [out.array] + [m.grad.array for m in mine] + [s.array for s in stats]


@pytest.mark.parametrize("shape", [(7, 3, 4, 5), (6, 4), (5, 2, 9), (3, 2, 1, 1)])
def test_batch_norm_with_kernels_equals_torch_and_the_numpy_path(with_kernels, shape):
    """Output, the three gradients and the running statistics, float64."""
    rng = np.random.default_rng(6)
    data, g = rng.normal(-4.0, 2.5, shape), rng.standard_normal(shape)
    w, b = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    compiled = batch_norm_results(data, g, w, b, ember.float64)
    theirs = [torch.tensor(a, requires_grad=True) for a in (data, w, b)]
    stats = [torch.zeros(shape[1], dtype=torch.float64), torch.ones(shape[1], dtype=torch.float64)]
    out = TF.batch_norm(theirs[0], *stats, theirs[1], theirs[2], training=True)
    out.backward(torch.tensor(g))
    expected = [out.detach()] + [t.grad for t in theirs] + stats
    kernels.set_enabled(False)
    plain = batch_norm_results(data, g, w, b, ember.float64)
    for ours, numpy_path, reference in zip(compiled, plain, expected):
        np.testing.assert_allclose(ours, reference.numpy(), rtol=1e-10, atol=1e-11)
        np.testing.assert_allclose(ours, numpy_path, rtol=1e-10, atol=1e-11)


def test_batch_norm_kernels_in_float32_match_torch(with_kernels):
    rng = np.random.default_rng(7)
    shape = (16, 8, 6, 6)
    data = rng.normal(3.0, 2.0, shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    w, b = (rng.standard_normal(8).astype(np.float32) for _ in range(2))
    compiled = batch_norm_results(data, g, w, b, ember.float32)
    theirs = [torch.tensor(a, requires_grad=True) for a in (data, w, b)]
    out = TF.batch_norm(theirs[0], torch.zeros(8), torch.ones(8), theirs[1], theirs[2],
                        training=True)
    out.backward(torch.tensor(g))
    assert compiled[0].dtype == np.float32 and compiled[1].dtype == np.float32
    for ours, reference in zip(compiled, [out.detach()] + [t.grad for t in theirs]):
        np.testing.assert_allclose(ours, reference.numpy(), rtol=2e-4, atol=2e-4)


def test_batch_norm_kernel_statistics_keep_their_digits_for_a_large_mean(with_kernels):
    """float32 values at 1000 +- 0.01: plane moments about their own means, in float64."""
    rng = np.random.default_rng(4)
    data = (1000.0 + 0.01 * rng.standard_normal((9, 2, 64))).astype(np.float32)
    mean, var = kernels.batch_moments(data)
    exact = data.astype(np.float64)
    assert mean.dtype == np.float32 and var.dtype == np.float32
    np.testing.assert_allclose(mean, exact.mean(axis=(0, 2)), rtol=1e-6)
    np.testing.assert_allclose(var, exact.var(axis=(0, 2)), rtol=1e-4)


@pytest.mark.parametrize("threads", [2, 3])
def test_batch_norm_kernels_give_the_same_bits_on_any_thread_count(with_kernels, monkeypatch,
                                                                   threads):
    """Per-plane sums, combined over samples in order on one thread."""
    from ember import blas, parallel
    rng = np.random.default_rng(8)
    data, g = rng.normal(1.0, 2.0, (7, 3, 4, 5)), rng.standard_normal((7, 3, 4, 5))
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    single = batch_norm_results(data, g, w, b, ember.float64)
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "_enabled", True)
    monkeypatch.setattr(blas, "get_num_threads", lambda: threads)
    for a, b_ in zip(single, batch_norm_results(data, g, w, b, ember.float64)):
        np.testing.assert_array_equal(a, b_)


def test_batch_norm_takes_the_numpy_path_where_the_kernels_cannot_view_planes(with_kernels):
    """A permuted (non-contiguous) input, and an empty batch: no kernels, same answers."""
    rng = np.random.default_rng(9)
    base, w, b = rng.standard_normal((4, 5, 3, 2)), rng.standard_normal(2), np.zeros(2)
    assert not kernels.norm_ready(base.transpose(0, 3, 2, 1)) and kernels.norm_ready(base)
    assert not kernels.norm_ready(np.zeros((0, 3, 2, 2)))
    g = rng.standard_normal((4, 2, 3, 5))
    mine = [ember.tensor(a, dtype=ember.float64, requires_grad=True) for a in (base, w, b)]
    x = mine[0].permute(0, 3, 2, 1)
    assert not x.array.flags.c_contiguous
    out = F.batch_norm(x, None, None, mine[1], mine[2], training=True)
    out.backward(ember.tensor(g, dtype=ember.float64))
    assert out.grad_fn.compiled is False
    theirs = [torch.tensor(a, requires_grad=True) for a in (base, w, b)]
    expected = TF.batch_norm(theirs[0].permute(0, 3, 2, 1), None, None, theirs[1], theirs[2],
                             training=True)
    expected.backward(torch.tensor(g))
    np.testing.assert_allclose(out.array, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    for m, t in zip(mine, theirs):
        np.testing.assert_allclose(m.grad.array, t.grad.numpy(), rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("shapes", CONVS, ids=lambda c: str(c[2]) or "plain")
@pytest.mark.parametrize("threads", [1, 3])
def test_streamed_columns_give_the_bits_of_kept_columns(with_kernels, monkeypatch, shapes,
                                                        threads):
    """Per-sample layers with big columns build them a few samples at a time, in the
    forward and again for the weight gradient (conv.streams_columns): the same products,
    summed in the same order, whatever the block size and thread count."""
    from ember import blas
    x_shape, w_shape, kwargs = shapes
    rng = np.random.default_rng(10)
    x, w, b = (rng.standard_normal(s) for s in ((5,) + x_shape[1:], w_shape, w_shape[:1]))
    expected = TF.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), **kwargs)
    g = rng.standard_normal(expected.shape)
    monkeypatch.setattr(conv, "SAMPLE_MAX_ROWS", 10**6)
    monkeypatch.setattr(conv, "STREAM_COLUMNS_BYTES", None)
    kept = conv_results(x, w, b, g, kwargs)
    monkeypatch.setattr(conv, "STREAM_COLUMNS_BYTES", 0)
    one_sample = x[:1].nbytes * w_shape[2] * w_shape[3] * 4  # more than one sample's columns
    monkeypatch.setattr(conv, "STREAM_BLOCK_BYTES", 2 * one_sample)  # blocks of 2, 2 and 1
    monkeypatch.setattr(blas, "get_num_threads", lambda: threads)
    ts = [ember.tensor(a, dtype=ember.float64, requires_grad=True) for a in (x, w, b)]
    out = F.conv2d(*ts, **kwargs)
    assert out.grad_fn.streams and out.grad_fn.saved[0] is ts[0].array  # the input, kept
    out.backward(ember.tensor(g, dtype=ember.float64))
    for a, b_ in zip(kept, [out.array] + [t.grad.array for t in ts]):
        np.testing.assert_array_equal(a, b_)
    np.testing.assert_allclose(out.array, expected.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shapes", CONVS, ids=lambda c: str(c[2]) or "plain")
def test_streamed_input_gradient_is_the_same_in_any_block_size(with_kernels, monkeypatch,
                                                               shapes):
    """col2im of W^T g a block of samples at a time (conv.streamed_input_grad): each
    sample's sums are the same whatever the block size; NumPy's wide col2im agrees."""
    x_shape, w_shape, kwargs = shapes
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((5,) + x_shape[1:]), rng.standard_normal(w_shape)
    win = conv.conv_window("conv2d", x.shape, w.shape, kwargs.get("stride", 1),
                           kwargs.get("padding", 0), kwargs.get("dilation", 1))
    groups = kwargs.get("groups", 1)
    gy = rng.standard_normal((5, w_shape[0], win.oh * win.ow))
    matrix = conv.grouped(w.reshape(w_shape[0], -1), groups)
    results = []
    for block_bytes in (1, 10**9):  # one sample per block; the whole batch in one
        monkeypatch.setattr(conv, "STREAM_BLOCK_BYTES", block_bytes)
        results.append(conv.streamed_input_grad(gy, matrix, win))
    np.testing.assert_array_equal(results[0], results[1])
    wide = conv.sample_from_columns(
        conv.sample_matmul(conv.swap(matrix), conv.widened(gy.reshape(5, w_shape[0], win.oh,
                                                                      win.ow), win)), win)
    np.testing.assert_allclose(results[0], wide, rtol=1e-12, atol=1e-12)


def test_kernels_compile_without_a_writable_cache(with_kernels, monkeypatch):
    """Numba raises RuntimeError for cache=True when no cache directory is writable (a
    read-only install and home): the kernels are then compiled per process."""
    import numba
    real_njit = numba.njit

    def njit(*args, cache=False, **options):
        if cache:
            raise RuntimeError("cannot cache function: no locator available")
        return real_njit(*args, **options)

    monkeypatch.setattr(numba, "njit", njit)
    compiled = kernels._compile()
    img, cols = np.arange(16.0).reshape(1, 1, 4, 4), np.empty((1, 1, 2, 2, 3, 3))
    compiled.taps(img, cols, 1, 1, 1, 1, False)
    np.testing.assert_array_equal(cols[0, 0, 1, 1], img[0, 0, 1:, 1:])


def test_kernels_close_over_nothing_that_pickles_differently_per_process(with_kernels):
    """Numba keys a cached function by its pickled closure; a compiled function or an
    intrinsic pickles with a per-process id, so a kernel closing over one missed the
    on-disk cache in every process (and added a file to it each time)."""
    from numba.core.dispatcher import Dispatcher
    from numba.core.extending import _Intrinsic
    kernels.enabled()
    compiled = [k for k in vars(kernels._kernels).values() if isinstance(k, Dispatcher)]
    assert len(compiled) > 20
    for kernel in compiled:
        for cell in kernel.py_func.__closure__ or ():
            assert not isinstance(cell.cell_contents, (Dispatcher, _Intrinsic)), \
                (kernel.py_func.__name__, cell.cell_contents)


@pytest.mark.parametrize("shape, kwargs", [
    ((3, 2, 8, 8), dict()),
    ((2, 3, 7, 9), dict()),  # odd sizes: the last row and column are dropped
    ((2, 3, 7, 9), dict(ceil_mode=True)),  # ... or padded (-inf) into windows
    ((2, 2, 6, 6), dict(padding=1)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_2x2_max_pool_equals_numpy_and_torch(with_kernels, shape, kwargs, dtype):
    """Values, indices (ties: the first maximum; NaN: the last NaN) and gradients."""
    rng = np.random.default_rng(12)
    x = rng.integers(-2, 3, shape).astype(dtype)
    x[0, 0, 0, 0] = x[1, 1, 2, 2] = x[1, 1, 3, 3] = np.nan
    tx = torch.tensor(x, requires_grad=True)
    expected, expected_idx = TF.max_pool2d(tx, 2, return_indices=True, **kwargs)
    g = rng.standard_normal(expected.shape).astype(dtype)
    expected.backward(torch.tensor(g))

    def run():
        xt = ember.from_numpy(x.copy()).requires_grad_()
        out, idx = F.max_pool2d(xt, 2, return_indices=True, **kwargs)
        out.backward(ember.from_numpy(g))
        return out.array, idx.array, xt.grad.array

    from ember.ops import pool
    win = pool.pool_window("max_pool2d", shape, 2, None, kwargs.get("padding", 0), 1,
                           kwargs.get("ceil_mode", False))
    assert pool.compiled_2x2(win, np.dtype(dtype))
    compiled = run()
    kernels.set_enabled(False)
    for ours, numpy_path, reference in zip(compiled, run(), (expected.detach(), expected_idx,
                                                            tx.grad)):
        np.testing.assert_array_equal(ours, numpy_path)
        np.testing.assert_array_equal(ours, reference.numpy())


def test_compiled_2x2_max_pool_reads_strided_inputs_and_splits_by_samples(with_kernels,
                                                                           monkeypatch):
    from ember import blas, parallel
    rng = np.random.default_rng(13)
    base = rng.standard_normal((6, 8, 10, 3))
    x = ember.tensor(base).permute(0, 3, 1, 2)  # (6, 3, 8, 10), not contiguous
    g = ember.tensor(rng.standard_normal((6, 3, 4, 5)))

    def pooled_and_grad():
        xt = x.detach().requires_grad_()
        out = F.max_pool2d(xt, 2)
        out.backward(g)
        return out.array, xt.grad.array
    single, single_grad = pooled_and_grad()
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "_enabled", True)
    monkeypatch.setattr(blas, "get_num_threads", lambda: 3)
    split, split_grad = pooled_and_grad()
    np.testing.assert_array_equal(split, single)
    np.testing.assert_array_equal(split_grad, single_grad)
    assert np.count_nonzero(single_grad) == g.array.size  # one maximum a window
    expected = TF.max_pool2d(torch.tensor(base).permute(0, 3, 1, 2), 2)
    np.testing.assert_array_equal(single, expected.numpy().astype(single.dtype))


# ---------------------------------------------------------------- ReLU and its gradient
def edge_values(shape, dtype, seed):
    """Random values with NaN, +-inf, 0 and -0 sprinkled in: where ReLU's backward rules
    differ (torch: 0 where the output is <= 0, else the incoming gradient)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(dtype)
    for step, value in ((7, np.nan), (11, 0.0), (13, -0.0), (17, np.inf), (19, -np.inf)):
        a.reshape(-1)[seed % step::step] = value
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("compiled", [True, False], ids=["kernel", "numpy"])
def test_relu_and_its_gradient_follow_torch_at_nan_inf_and_zero(with_kernels, dtype, compiled):
    kernels.set_enabled(compiled)
    x, g = edge_values((9, 31), dtype, 1), edge_values((9, 31), dtype, 2)
    ours = ember.from_numpy(x.copy()).requires_grad_()
    out = ours.relu()
    out.backward(ember.from_numpy(g))
    theirs = torch.tensor(x, requires_grad=True)
    expected = theirs.relu()
    expected.backward(torch.tensor(g))
    np.testing.assert_array_equal(out.array, expected.detach().numpy())
    if compiled:  # torch keeps -0 (clamp_min); NumPy's maximum(-0, 0) is +0, equal to it
        np.testing.assert_array_equal(np.signbit(out.array),
                                      np.signbit(expected.detach().numpy()))
        assert np.signbit(out.array).any()
    np.testing.assert_array_equal(ours.grad.array, theirs.grad.numpy())
    assert np.isnan(ours.grad.array).any() and (ours.grad.array == 0).any()  # both rules ran


def test_relu_kernels_on_threads_and_strided_arrays(with_kernels, monkeypatch):
    from ember import blas, parallel
    x, g = edge_values((40, 5, 6), np.float32, 3), edge_values((40, 6, 5), np.float32, 4)
    strided = ember.from_numpy(g).permute(0, 2, 1)  # not contiguous: the NumPy path

    def gradient(grad, x=x):
        xt = ember.from_numpy(x.copy()).requires_grad_()
        xt.relu().backward(grad)
        return xt.grad.array
    expected = gradient(ember.from_numpy(np.ascontiguousarray(g.transpose(0, 2, 1))))
    np.testing.assert_array_equal(gradient(strided), expected)
    single = ember.from_numpy(x).relu().array
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "_enabled", True)
    monkeypatch.setattr(blas, "get_num_threads", lambda: 3)
    np.testing.assert_array_equal(gradient(ember.from_numpy(g.transpose(0, 2, 1).copy())),
                                  expected)
    threaded = ember.from_numpy(x).relu().array  # the forward kernel, split 3 ways
    assert single.tobytes() == threaded.tobytes()
    strided_input = ember.from_numpy(x).permute(0, 2, 1).relu().array  # the NumPy path
    np.testing.assert_array_equal(strided_input, single.transpose(0, 2, 1))


# ---------------------------------------------------------------- Sigmoid and Tanh
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["sigmoid", "tanh"])
def test_sigmoid_and_tanh_gradient_kernels_give_the_numpy_bits(with_kernels, monkeypatch, op,
                                                                dtype):
    """The one-pass gradients give the bits of the NumPy passes (NaN and inf included),
    split over threads too, and match torch; the kernel was really used."""
    from ember import blas, parallel
    # 1240 elements: over elementwise._SMALL_SIGMOID, so the forward is NumPy's either way
    x, g = edge_values((40, 31), dtype, 5), edge_values((40, 31), dtype, 6)

    def gradient():
        ours = ember.from_numpy(x.copy()).requires_grad_()
        getattr(ours, op)().backward(ember.from_numpy(g))
        return ours.grad.array
    calls = []
    real = getattr(kernels, f"{op}_grad_into")
    monkeypatch.setattr(kernels, f"{op}_grad_into", lambda *a: calls.append(1) or real(*a))
    compiled = gradient()
    assert calls
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "_enabled", True)
    monkeypatch.setattr(blas, "get_num_threads", lambda: 3)
    assert gradient().tobytes() == compiled.tobytes()  # split 3 ways
    kernels.set_enabled(False)
    calls.clear()
    with np.errstate(invalid="ignore"):  # inf * 0 in the edge values: NaN, as in torch
        assert gradient().tobytes() == compiled.tobytes()  # the NumPy passes
    assert not calls
    theirs = torch.tensor(x, requires_grad=True)
    getattr(theirs, op)().backward(torch.tensor(g))
    finite = np.isfinite(compiled)
    assert finite.sum() > 700
    # (the forward values differ by an ulp or so: NumPy's tanh and exp are not torch's,
    # and 1 - out^2 near out = +-1 turns an ulp of out into ~3e-5 of the gradient)
    np.testing.assert_allclose(compiled[finite], theirs.grad.numpy()[finite],
                               rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-30)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_small_sigmoid_kernel_agrees_with_numpy_and_torch(with_kernels, monkeypatch, dtype):
    """Small arrays take one compiled pass (C exponentials): within a few ulp of NumPy's
    four passes, the same at 0, +-inf, NaN and where e^-a overflows (exactly 0, as in
    torch); big ones keep NumPy's passes; a 0-d input works."""
    x = edge_values((9, 31), dtype, 7)
    x.reshape(-1)[:4] = [-100, -88.5, 40, -740]  # overflowing and denormal e^-a
    calls = []
    real = kernels.sigmoid
    monkeypatch.setattr(kernels, "sigmoid", lambda a: calls.append(a.size) or real(a))
    compiled = ember.from_numpy(x).sigmoid().array
    assert calls == [x.size]
    big = edge_values((40, 31), dtype, 8)
    ember.from_numpy(big).sigmoid()
    assert calls == [x.size]  # over _SMALL_SIGMOID: NumPy's passes
    assert float(ember.from_numpy(np.ones((), dtype)).sigmoid().array) == pytest.approx(
        1 / (1 + np.exp(-1.0)), rel=1e-6)
    kernels.set_enabled(False)
    plain = ember.from_numpy(x).sigmoid().array
    assert compiled.dtype == plain.dtype == dtype
    assert np.array_equal(compiled, plain, equal_nan=True) or \
        np.abs(compiled.view(f"i{x.itemsize}") - plain.view(f"i{x.itemsize}")).max() <= 4
    exact = ~np.isfinite(x) | (x == 0) | (x < -745)
    np.testing.assert_array_equal(compiled[exact], plain[exact])
    expected = torch.sigmoid(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(compiled, expected, rtol=2e-6 if dtype == np.float32 else 1e-14,
                               atol=0)


# ---------------------------------------------------------------- cross-entropy, long rows
def long_row_exps(z):
    """exp(z) of float32 values z <= 0 by the long-row cross-entropy kernel (one row
    whose maximum is given as 0, so the kernel's exponentials see z itself)."""
    z = np.ascontiguousarray(z, np.float32)[None]
    exps, sums, per_sample = kernels.cross_entropy_long_rows(
        z, np.zeros((1, 1), np.float32), np.zeros(1, np.int64))
    return exps[0]


def test_long_row_exponential_is_within_an_ulp_down_to_subnormals_and_zero(with_kernels):
    rng = np.random.default_rng(7)
    z = np.concatenate([-np.linspace(0, 110, 400_001), -rng.uniform(0, 110, 100_000),
                        [0.0, -0.0, -87.33654, -87.34, -103.27893, -103.972, -104.0,
                         -1e30, -np.inf]]).astype(np.float32)
    exact = np.exp(z.astype(np.float64))
    rounded = exact.astype(np.float32)
    ulps = np.abs(long_row_exps(z) - exact) / np.spacing(rounded).astype(np.float64)
    assert ulps.max() <= 1.0, (ulps.max(), z[ulps.argmax()])
    subnormal = (rounded > 0) & (rounded < np.finfo(np.float32).tiny)
    assert subnormal.sum() > 1000 and (long_row_exps(z[subnormal]) > 0).all()
    assert long_row_exps(np.float32([-104.0, -np.inf])).tolist() == [0.0, 0.0]
    assert long_row_exps(np.float32([0.0])).tolist() == [1.0]


def test_long_row_cross_entropy_matches_numpy_torch_and_itself_on_threads(with_kernels,
                                                                          monkeypatch):
    from ember import blas, parallel
    rng = np.random.default_rng(8)
    logits = (rng.standard_normal((37, 777)) * 30).astype(np.float32)  # subnormal exps too
    target = rng.integers(0, 777, 37)

    def run():
        x = ember.tensor(logits, requires_grad=True)
        loss = F.cross_entropy(x, ember.tensor(target), reduction="none")
        loss.backward(ember.tensor(np.linspace(0.5, 2, 37, dtype=np.float32)))
        return loss.array, x.grad.array
    compiled = run()
    kernels.set_enabled(False)
    numpy_passes = run()
    kernels.set_enabled(True)
    tx = torch.tensor(logits.astype(np.float64), requires_grad=True)
    expected = TF.cross_entropy(tx, torch.tensor(target), reduction="none")
    expected.backward(torch.tensor(np.linspace(0.5, 2, 37, dtype=np.float32)).double())
    for mine, numpy_one, torch_one in zip(compiled, numpy_passes,
                                          (expected.detach().numpy(), tx.grad.numpy())):
        assert mine.dtype == np.float32
        np.testing.assert_allclose(mine, numpy_one, rtol=2e-6, atol=1e-12)
        np.testing.assert_allclose(mine, torch_one, rtol=2e-6, atol=1e-12)
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "_enabled", True)
    monkeypatch.setattr(blas, "get_num_threads", lambda: 3)
    threaded = run()  # rows are independent: the same bits on any number of threads
    assert all(a.tobytes() == b.tobytes() for a, b in zip(threaded, compiled))


# ---------------------------------------------------------------- optimizers
OPTIMIZER_KERNELS = [
    (ember.optim.Adam, dict(lr=0.01)),
    (ember.optim.Adam, dict(lr=0.02, betas=(0.3, 0.9), eps=1e-6)),  # lerp's other side
    (ember.optim.Adam, dict(lr=0.01, weight_decay=0.1, maximize=True)),
    (ember.optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
    (ember.optim.SGD, dict(lr=0.05)),
    (ember.optim.SGD, dict(lr=0.05, weight_decay=0.01, maximize=True)),
    (ember.optim.SGD, dict(lr=0.05, momentum=0.9)),
    (ember.optim.SGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3)),
    (ember.optim.SGD, dict(lr=0.05, momentum=0.7, dampening=0.25)),
]


def optimizer_run(cls, kwargs, dtype, steps=6):
    """Parameters and optimizer state after ``steps`` steps on random gradients. Shapes
    stay below ember.blas.AXPY_MIN_SIZE, so SGD's NumPy path rounds as the kernel does
    (BLAS's axpy may fuse the multiply-add)."""
    rng = np.random.default_rng(5)
    params = [ember.from_numpy(rng.standard_normal(s).astype(dtype)).requires_grad_()
              for s in ((7, 3, 2), (11,), (40, 50))]
    opt = cls(params, **kwargs)
    for _ in range(steps):
        for p in params:
            scale = 10.0 ** rng.uniform(-6, 2, p.shape)
            p.grad = ember.from_numpy((rng.standard_normal(p.shape) * scale).astype(dtype))
        opt.step()
    buffers = [s.array for state in opt.state.values() for s in state.values()
               if isinstance(s, ember.Tensor)]
    return [p.array for p in params] + buffers


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("row", OPTIMIZER_KERNELS, ids=lambda r: f"{r[0].__name__}{r[1]}")
def test_optimizer_kernels_give_the_bits_of_the_numpy_updates(with_kernels, monkeypatch, row,
                                                               dtype):
    cls, kwargs = row
    calls = []
    for name in ("adam_update", "sgd_update", "sgd_momentum_update"):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, f=original: calls.append(1) or f(*a))
    compiled = optimizer_run(cls, kwargs, dtype)
    assert calls  # the kernels ran
    kernels.set_enabled(False)
    for ours, numpy_path in zip(compiled, optimizer_run(cls, kwargs, dtype), strict=True):
        assert ours.dtype == dtype
        np.testing.assert_array_equal(ours, numpy_path)


def test_optimizer_kernels_skip_strided_gradients_and_amsgrad(with_kernels, monkeypatch):
    monkeypatch.setattr(kernels, "adam_update", None)  # would raise if called
    for name in ("sgd", "sgd_momentum"):  # the SGD wrappers check, then call these
        monkeypatch.setattr(kernels._kernels, name, None)
    # (SGD with momentum steps along its own contiguous buffer: it may use sgd_update)
    for cls, kwargs in ((ember.optim.Adam, dict(amsgrad=True)), (ember.optim.SGD, {}),
                        (ember.optim.Adam, {})):
        p = ember.zeros(4, 3, requires_grad=True)
        opt = cls([p], lr=0.1, **kwargs)
        strided = "amsgrad" not in kwargs  # amsgrad: the NumPy path even for contiguous ones
        for _ in range(2):
            p.grad = ember.ones(3, 4).transpose(0, 1) if strided else ember.ones(4, 3)
            opt.step()
        assert float(p.array[0, 0]) < 0
