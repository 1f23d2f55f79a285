"""Fast paths added for speed, each against the plain path it replaces (and torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
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
