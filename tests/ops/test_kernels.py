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
        x = ember.tensor(np.ones((2, 6, 14, 14)), requires_grad=True)
        w = ember.tensor(np.ones((16, 6, 5, 5)), requires_grad=True)
        F.max_pool2d(F.conv2d(x, w), 2).sum().backward()
        assert float(x.grad.array[0, 0, 4, 4]) > 0
        assert not conv.stays_per_sample(conv.conv_window("c", (64, 6, 14, 14),
                                                          (16, 6, 5, 5), 1, 0, 1), 16)
    finally:
        kernels.set_enabled(previous)
