"""Fast paths added for speed, each against the plain path it replaces (and torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from ember.backend import offset_empty, strided_friendly
from ember.ops.elementwise import sigmoid_in_place, stable_sigmoid


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_in_place_equals_the_stable_form_and_torch(dtype):
    a = np.concatenate([np.linspace(-120, 120, 2001), [0.0, -0.0, 1e-8, -1e-8]]).astype(dtype)
    fast, plain = sigmoid_in_place(a), stable_sigmoid(a)
    assert fast.dtype == plain.dtype == dtype
    tiny = np.finfo(dtype).tiny * 2 ** 10  # below this the forms may flush differently
    np.testing.assert_allclose(fast, plain, rtol=4 * np.finfo(dtype).eps, atol=tiny)
    expected = torch.sigmoid(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(fast, expected, rtol=4 * np.finfo(dtype).eps, atol=tiny)


def test_sigmoid_in_place_leaves_its_input_alone_and_handles_0d():
    a = np.array([-3.0, 0.5], np.float32)
    sigmoid_in_place(a)
    assert a.tolist() == [-3.0, 0.5]
    assert isinstance(sigmoid_in_place(np.float32(2.0) * np.ones((), np.float32)), np.ndarray)


def test_sigmoid_backward_equals_the_composed_derivative():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((5, 7))
    x = ember.tensor(data, dtype=ember.float64, requires_grad=True)
    g = rng.standard_normal((5, 7))
    x.sigmoid().backward(ember.tensor(g, dtype=ember.float64))
    s = 1 / (1 + np.exp(-data))
    np.testing.assert_allclose(x.grad.numpy(), g * s * (1 - s), rtol=1e-13)


def test_flatten_with_nothing_to_merge_returns_the_input_as_torch_does():
    x = ember.randn(3, 4, requires_grad=True)
    y = x * 2
    assert y.flatten(1) is y and ember.flatten(y, 1, -1) is y
    assert torch.randn(3, 4).flatten(1).shape == (3, 4)
    y.flatten(1).sum().backward()
    assert x.grad.tolist() == [[2.0] * 4] * 3
    merged = y.flatten()
    assert merged is not y and merged.shape == (12,)


def test_flatten_checks_dims_as_torch_does_including_0d():
    scalar = ember.tensor(1.0)
    assert scalar.flatten().shape == scalar.flatten(-1, 0).shape == (1,)
    for x, dim in ((scalar, 1), (ember.ones(2, 3), 2), (ember.ones(2, 3), -3)):
        with pytest.raises(IndexError, match="out of range"):
            x.flatten(dim)
        with pytest.raises(IndexError):
            torch.ones(tuple(x.shape)).flatten(dim)


def cross_entropy_and_grad(logits, target, reduction, **kwargs):
    x = ember.tensor(logits, dtype=logits.dtype, requires_grad=True)
    out = ember.nn.functional.cross_entropy(x, ember.tensor(target), reduction=reduction,
                                            **kwargs)
    out.backward(ember.ones_like(out) * 0.7 if reduction == "none" else None)
    return out.array, x.grad.array


@pytest.fixture(params=[True, False], ids=["compiled", "numpy"])
def compiled(request):
    """The plain cross-entropy path with its compiled kernel, then with NumPy's passes."""
    from ember.ops import kernels
    if request.param and not kernels.enabled():
        pytest.skip("Numba is not installed")
    previous = kernels.set_enabled(request.param)
    yield request.param
    kernels.set_enabled(previous)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_plain_cross_entropy_equals_the_general_path(monkeypatch, compiled, reduction, dtype,
                                                     scale):
    from ember.ops.nn import CrossEntropy
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((33, 10)) * scale).astype(dtype)
    target = rng.integers(0, 10, 33)
    fast = cross_entropy_and_grad(logits, target, reduction)
    monkeypatch.setattr(CrossEntropy, "_forward_plain", lambda *args: None)
    general = cross_entropy_and_grad(logits, target, reduction)
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    for a, b in zip(fast, general):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_logits_take_the_long_row_kernel_or_numpys_passes(monkeypatch, dtype):
    """The small-logits kernel's exponentials are scalar calls: for many logits in long
    rows float32 takes the long-row kernel (vectorised exponentials) and float64 NumPy's
    passes, which give their own bits; all match torch."""
    from ember.ops import kernels
    from ember.ops.nn import _XENT_KERNEL_CLASSES, _XENT_KERNEL_SIZE
    if not kernels.enabled():
        pytest.skip("Numba is not installed")
    calls = []
    for name in ("cross_entropy_rows", "cross_entropy_long_rows"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda x, *rest, real=real, name=name:
                            calls.append(name) or real(x, *rest))
    rng = np.random.default_rng(4)
    size, short = _XENT_KERNEL_SIZE, _XENT_KERNEL_CLASSES
    long = ["cross_entropy_long_rows"] if dtype == np.float32 else []
    cases = {(16, 512): long, (size // 64 + 1, 64): long, (size // 64, 64): ["cross_entropy_rows"],
             (size // short + 1, short): ["cross_entropy_rows"], (64, 10): ["cross_entropy_rows"]}
    for (rows, classes), expected_calls in cases.items():
        logits = (rng.standard_normal((rows, classes)) * 3).astype(dtype)
        target = rng.integers(0, classes, rows)
        calls.clear()
        fast = cross_entropy_and_grad(logits, target, "mean")
        assert calls == expected_calls
        kernels.set_enabled(False)
        try:
            numpy_passes = cross_entropy_and_grad(logits, target, "mean")
        finally:
            kernels.set_enabled(True)
        if not calls:  # NumPy's passes either way: the same bits
            assert all(a.tobytes() == b.tobytes() for a, b in zip(fast, numpy_passes))
        x = torch.tensor(logits, requires_grad=True)
        expected = torch.nn.functional.cross_entropy(x, torch.tensor(target))
        expected.backward()
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(fast[0], expected.detach().numpy(), rtol=rtol)
        np.testing.assert_allclose(fast[1], x.grad.numpy(), rtol=rtol, atol=rtol * 1e-3)


@pytest.mark.parametrize("logits, target, kwargs", [
    ([[1.0, 2.0, 0.5], [0.0, 1.0, 2.0]], [1, -100], {}),           # an ignored target
    ([[1.0, 2.0, 0.5], [0.0, 1.0, 2.0]], [1, 2], {"label_smoothing": 0.1}),
    ([[1.0, 2.0, 0.5], [0.0, 1.0, 2.0]], [1, 2], {"weight": ember.tensor([1.0, 2.0, 3.0],
                                                                         dtype=ember.float64)}),
])
def test_cases_outside_the_plain_path_still_match_torch(logits, target, kwargs):
    a = np.array(logits, np.float64)
    mine = cross_entropy_and_grad(a, np.array(target), "mean", **kwargs)
    x = torch.tensor(a, requires_grad=True)
    if "weight" in kwargs:
        kwargs = {"weight": torch.tensor(kwargs["weight"].numpy())}
    out = torch.nn.functional.cross_entropy(x, torch.tensor(target), **kwargs)
    out.backward()
    np.testing.assert_allclose(mine[0], out.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(mine[1], x.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_row_maximum_takes_the_general_path(monkeypatch, compiled, bad):
    from ember.ops.nn import CrossEntropy
    a = np.array([[0.0, 1.0, 2.0], [1.0, bad, 0.0]])
    a[1] = bad if np.isnan(bad) or bad < 0 else a[1]  # NaN or -inf: the whole row
    with np.errstate(invalid="ignore"):
        fast = cross_entropy_and_grad(a, np.array([1, 2]), "sum")
        monkeypatch.setattr(CrossEntropy, "_forward_plain", lambda *args: None)
        general = cross_entropy_and_grad(a, np.array([1, 2]), "sum")
    for x, y in zip(fast, general):
        np.testing.assert_array_equal(x, y)
    torch_x = torch.tensor(a, requires_grad=True)
    out = torch.nn.functional.cross_entropy(torch_x, torch.tensor([1, 2]), reduction="sum")
    out.backward()
    np.testing.assert_allclose(fast[0], out.detach().numpy(), rtol=1e-12)  # NaN where torch's
    np.testing.assert_allclose(fast[1], torch_x.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("bad", [-1, 3, -100])  # -100: torch's ignore_index is not a class
def test_plain_cross_entropy_leaves_bad_targets_to_the_general_paths_checks(compiled, bad):
    x = ember.tensor(np.zeros((2, 3), np.float32), requires_grad=True)
    target = ember.tensor([0, bad])
    if bad == -100:  # ignored, so the loss is the other sample's
        loss = ember.nn.functional.cross_entropy(x, target)
        assert float(loss.array) == pytest.approx(np.log(3))
        return
    with pytest.raises(IndexError, match=f"target {bad} is out of bounds for 3 classes"):
        ember.nn.functional.cross_entropy(x, target)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (5, 3, 4, 4)])
def test_fused_batch_norm_equals_the_composed_form(shape):
    """batch_norm_train (one op) against standardize(x) * w + b, forward and backward,
    and its in-place running statistics against torch's."""
    rng = np.random.default_rng(1)
    data, g = rng.normal(2.0, 3.0, shape), rng.standard_normal(shape)
    w, b = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    axes = (0,) + tuple(range(2, len(shape)))
    view = (1, shape[1]) + (1,) * (len(shape) - 2)
    results = []
    for fused in (True, False):
        x, wt, bt = (ember.tensor(a, dtype=ember.float64, requires_grad=True)
                     for a in (data, w, b))
        if fused:
            out = ember.nn.functional.batch_norm(x, None, None, wt, bt, training=True)
        else:
            out = ember.nn.functional.standardize(x, axes) * wt.reshape(*view) + bt.reshape(*view)
        out.backward(ember.tensor(g, dtype=ember.float64))
        results.append([out.array, x.grad.array, wt.grad.array, bt.grad.array])
    for fused, plain in zip(*results):
        np.testing.assert_allclose(fused, plain, rtol=1e-10, atol=1e-12)
    running = [ember.zeros(shape[1], dtype=ember.float64),
               ember.ones(shape[1], dtype=ember.float64)]
    ember.nn.functional.batch_norm(ember.tensor(data, dtype=ember.float64), *running,
                                   training=True, momentum=0.3)
    expected = [torch.zeros(shape[1], dtype=torch.float64),
                torch.ones(shape[1], dtype=torch.float64)]
    torch.nn.functional.batch_norm(torch.tensor(data), *expected, training=True, momentum=0.3)
    for mine, theirs in zip(running, expected):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-12)


def test_threaded_batch_norm_and_relu_equal_the_one_thread_path(monkeypatch):
    """ember.parallel splits batch norm's and ReLU's passes by rows; only the order in
    which per-channel sums are added changes (partial sums per block)."""
    from ember import blas, parallel
    rng = np.random.default_rng(2)
    data, g = rng.normal(1.0, 2.0, (7, 3, 4, 5)), rng.standard_normal((7, 3, 4, 5))
    w, b = rng.standard_normal(3), rng.standard_normal(3)

    def run():
        x, wt, bt = (ember.tensor(a, dtype=ember.float64, requires_grad=True)
                     for a in (data, w, b))
        stats = [ember.zeros(3, dtype=ember.float64), ember.ones(3, dtype=ember.float64)]
        out = ember.nn.functional.batch_norm(x, *stats, wt, bt, training=True).relu()
        out.backward(ember.tensor(g, dtype=ember.float64))
        return [out.array, x.grad.array, wt.grad.array, bt.grad.array] + \
            [s.array for s in stats]

    single = run()
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "_enabled", True)
    monkeypatch.setattr(blas, "get_num_threads", lambda: 3)
    for a, b_ in zip(single, run()):
        np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("samples_per_block, threads", [(1, 1), (2, 1), (3, 3), (100, 1)])
def test_batch_norm_in_blocks_of_samples_matches_torch(monkeypatch, samples_per_block,
                                                       threads):
    """Batch norm works through the batch in blocks (the last one shorter) and combines
    the blocks' moments (Chan et al.): output, all gradients and running statistics
    against torch in float64, on one thread or three."""
    from ember import blas, parallel
    from ember.ops import kernels
    from ember.ops import nn as nn_ops
    shape = (7, 3, 4, 5)
    monkeypatch.setattr(kernels, "_wanted", False)  # NumPy's blocks (tests/ops/test_kernels.py)
    monkeypatch.setattr(nn_ops, "BN_BLOCK_BYTES", samples_per_block * 3 * 4 * 5 * 8)
    if threads > 1:
        monkeypatch.setattr(parallel, "MIN_BYTES", 0)
        monkeypatch.setattr(parallel, "_enabled", True)
        monkeypatch.setattr(blas, "get_num_threads", lambda: threads)
    rng = np.random.default_rng(3)
    data, g = rng.normal(-4.0, 2.5, shape), rng.standard_normal(shape)
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    mine = [ember.tensor(a, dtype=ember.float64, requires_grad=True) for a in (data, w, b)]
    stats = [ember.zeros(3, dtype=ember.float64), ember.ones(3, dtype=ember.float64)]
    out = ember.nn.functional.batch_norm(mine[0], *stats, mine[1], mine[2], training=True)
    out.backward(ember.tensor(g, dtype=ember.float64))
    theirs = [torch.tensor(a, requires_grad=True) for a in (data, w, b)]
    expected_stats = [torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)]
    expected = torch.nn.functional.batch_norm(theirs[0], *expected_stats, theirs[1], theirs[2],
                                              training=True)
    expected.backward(torch.tensor(g))
    np.testing.assert_allclose(out.array, expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    for m, t in zip(mine, theirs):
        np.testing.assert_allclose(m.grad.array, t.grad.numpy(), rtol=1e-10, atol=1e-12)
    for m, t in zip(stats, expected_stats):
        np.testing.assert_allclose(m.array, t.numpy(), rtol=1e-12)


def test_batch_norm_statistics_stay_accurate_for_a_large_mean_in_float32(monkeypatch):
    """A channel at 1000 +- 0.01 in float32: the blocks' moments are combined about their
    own means, so the variance keeps its digits (sum(x^2) - n mean^2 would lose them)."""
    from ember.ops import nn as nn_ops
    monkeypatch.setattr(nn_ops, "BN_BLOCK_BYTES", 2 * 2 * 64 * 4)  # 2 samples per block
    rng = np.random.default_rng(4)
    data = (1000.0 + 0.01 * rng.standard_normal((9, 2, 64))).astype(np.float32)
    mean, var = nn_ops.batch_moments(data)
    exact = data.astype(np.float64)
    np.testing.assert_allclose(mean, exact.mean(axis=(0, 2)), rtol=1e-6)
    np.testing.assert_allclose(var, exact.var(axis=(0, 2)), rtol=1e-3)


def test_batch_norm_of_an_empty_batch_is_empty_like_torch():
    x = ember.zeros(0, 3, 4, 4, requires_grad=True)
    out = ember.nn.functional.batch_norm(x, None, None, training=True)
    assert out.shape == (0, 3, 4, 4)


@pytest.mark.parametrize("width", [3, 300])  # a cached identity's rows; a scatter past 256
@pytest.mark.parametrize("classes, message", [([0, -1], "non-negative, got -1"),
                                              ([0, 3], "class value 3 is out of range"),
                                              ([[1, -5], [2, 0]], "non-negative, got -5")])
def test_one_hot_refuses_classes_outside_the_range(classes, message, width):
    big = np.asarray(classes) + (width - 3) * (np.asarray(classes) == 3)
    message = message.replace("value 3", f"value {width}")
    with pytest.raises(ValueError, match=message):
        ember.nn.functional.one_hot(ember.tensor(big), width)


@pytest.mark.parametrize("size", [64, 65, 1000])  # Python's max up to 64 labels, then NumPy's
@pytest.mark.parametrize("bad, message", [(-2, "non-negative, got -2"), (10, "value 10")])
def test_one_hot_checks_the_bounds_of_small_and_large_batches(size, bad, message):
    labels = np.random.default_rng(1).integers(0, 10, size)
    np.testing.assert_array_equal(ember.nn.functional.one_hot(ember.tensor(labels), 10).array,
                                  np.eye(10, dtype=np.int64)[labels])
    labels[size // 2] = bad
    with pytest.raises(ValueError, match=message):
        ember.nn.functional.one_hot(ember.tensor(labels), 10)


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.uint8])
@pytest.mark.parametrize("width", [5, 256, 257, 1000])
def test_one_hot_paths_equal_torch_and_return_fresh_arrays(dtype, width):
    classes = np.random.default_rng(0).integers(0, min(width, 100), (3, 4)).astype(dtype)
    ours = ember.nn.functional.one_hot(ember.tensor(classes), width)
    theirs = torch.nn.functional.one_hot(torch.from_numpy(classes.astype(np.int64)), width)
    np.testing.assert_array_equal(ours.array, theirs.numpy())
    assert ours.dtype == np.int64 and ours.array.flags.writeable
    ours.array[...] = 7  # the cached identity rows must not change
    again = ember.nn.functional.one_hot(ember.tensor(classes), width)
    np.testing.assert_array_equal(again.array, theirs.numpy())


@pytest.mark.parametrize("shape", [(4,), (2, 3), (2, 1, 3)])
def test_linear_without_reshapes_equals_the_reshaped_path_and_torch(shape):
    rng = np.random.default_rng(1)
    x, w, b = (rng.standard_normal(s) for s in (shape, (5, shape[-1]), (5,)))
    ex, ew, eb = (ember.tensor(a, dtype="float64", requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out, tout = ember.nn.functional.linear(ex, ew, eb), torch.nn.functional.linear(tx, tw, tb)
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol=1e-12, atol=1e-12)
    out.sum().backward()
    tout.sum().backward()
    for e, t in ((ex, tx), (ew, tw), (eb, tb)):
        np.testing.assert_allclose(e.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_mse_mean_equals_numpys_mean_of_squares(dtype):
    rng = np.random.default_rng(2)
    x, t = (rng.standard_normal((7, 5)).astype(dtype) for _ in range(2))
    loss = ember.nn.functional.mse_loss(ember.tensor(x, dtype=dtype), ember.tensor(t, dtype=dtype))
    assert loss.numpy() == ((x - t) * (x - t)).mean() and loss.dtype == np.dtype(dtype)


def test_mse_refuses_integer_inputs_as_torch_does():
    ints = ember.tensor(np.array([70000, 3], np.int32))
    with pytest.raises(RuntimeError):
        torch.nn.functional.mse_loss(torch.tensor([70000, 3]), torch.tensor([0, 0]))
    with pytest.raises(TypeError, match="mse_loss: expected floating-point"):
        ember.nn.functional.mse_loss(ints, ember.zeros(2, dtype="int32"))


# ------------------------------------------------------------ pooling on realigned copies
def _at_offset(array: np.ndarray, offset: int) -> np.ndarray:
    """A copy of ``array`` whose data starts ``offset`` bytes past a 64-byte boundary."""
    raw = np.empty(array.nbytes + 128, np.uint8)
    start = (offset - raw.ctypes.data) % 64
    out = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    assert out.ctypes.data % 64 == offset
    return out


def test_offset_empty_places_data_past_a_cache_line_boundary():
    for shape, dtype in [((3, 5), np.float32), ((2, 3, 4), np.float64)]:
        a = offset_empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
        assert a.ctypes.data % 64 == 16 and a.flags.writeable and a.flags.aligned
    assert offset_empty((0, 3), np.float32).shape == (0, 3)


@pytest.mark.parametrize("offset", [0, 4, 16, 32, 48])
def test_strided_friendly_keeps_values_and_moves_only_badly_placed_big_arrays(offset):
    x = _at_offset(np.arange(1 << 18, dtype=np.float32).reshape(64, 64, 64), offset)
    y = strided_friendly(x)
    np.testing.assert_array_equal(y, x)
    assert (y is x) == (offset in (16, 32, 48))
    assert y.ctypes.data % 64 in (16, 32, 48)
    small = _at_offset(np.ones((4, 4), np.float32), offset)
    assert strided_friendly(small) is small  # below 1 MiB nothing is copied


@pytest.mark.parametrize("offset", [0, 4, 32])
@pytest.mark.parametrize("pool", ["max", "avg"])
def test_pools_give_the_same_values_and_gradients_wherever_the_input_lies(offset, pool):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 16, 32, 32)).astype(np.float32)  # 2 MiB: realigned when bad
    g = rng.standard_normal((8, 16, 16, 16)).astype(np.float32)
    fn, tfn = {"max": (ember.nn.functional.max_pool2d, torch.nn.functional.max_pool2d),
               "avg": (ember.nn.functional.avg_pool2d, torch.nn.functional.avg_pool2d)}[pool]
    xe = ember.tensor(x, requires_grad=True)
    xe.array = _at_offset(x, offset)  # the exact placement under test
    fn(xe, 2).backward(ember.tensor(g))
    xt = torch.tensor(x, requires_grad=True)
    out = tfn(xt, 2)
    out.backward(torch.tensor(g))
    np.testing.assert_array_equal(fn(ember.tensor(xe.array), 2).numpy(), out.detach().numpy())
    np.testing.assert_allclose(xe.grad.numpy(), xt.grad.numpy(), rtol=1e-6, atol=1e-7)


def test_a_cast_to_an_integer_dtype_cuts_the_graph_as_in_torch():
    x = ember.tensor([1.5, -2.5], requires_grad=True)
    for cut in (x.long(), x.astype(ember.int32), x.bool(), (x * 2).int()):
        assert not cut.requires_grad and cut.grad_fn is None
    kept = x.double()
    assert kept.requires_grad and kept.grad_fn is not None
    kept.sum().backward()
    assert x.grad.dtype == ember.float32 and x.grad.tolist() == [1.0, 1.0]
    t = torch.tensor([1.5, -2.5], requires_grad=True)
    assert not t.long().requires_grad and t.double().requires_grad
