"""ember.nn.utils.clip_grad_norm_ / clip_grad_value_ against torch.nn.utils."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from ember.nn.utils import clip_grad_norm_, clip_grad_value_

SHAPES = [(3, 4), (5,), (2, 2, 2)]


def grads_pair(scale=1.0, dtype=np.float64, poison=None):
    """Parameters in both libraries with identical gradients; one without a gradient."""
    rng = np.random.default_rng(0)
    arrays = [(rng.normal(size=s) * scale).astype(dtype) for s in SHAPES]
    if poison is not None:
        arrays[1][2] = poison
    t_params, e_params = [], []
    for a in arrays:
        t = torch.zeros(a.shape, dtype=torch.from_numpy(a).dtype, requires_grad=True)
        t.grad = torch.tensor(a)
        e = ember.zeros(*a.shape, dtype=a.dtype, requires_grad=True)
        e.grad = ember.tensor(a.copy(), dtype=a.dtype)
        t_params.append(t)
        e_params.append(e)
    t_params.append(torch.zeros(2, requires_grad=True))
    e_params.append(ember.zeros(2, requires_grad=True))
    return t_params, e_params


def assert_grads_equal(t_params, e_params, rtol):
    for t, e in zip(t_params, e_params):
        if t.grad is None:
            assert e.grad is None
            continue
        np.testing.assert_allclose(e.grad.array, t.grad.numpy(), rtol=rtol, equal_nan=True)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf"), "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, dtype, rtol):
    t_params, e_params = grads_pair(dtype=dtype)
    expected = torch.nn.utils.clip_grad_norm_(t_params, max_norm, norm_type)
    total = clip_grad_norm_(e_params, max_norm, norm_type)
    assert isinstance(total, ember.Tensor) and total.dtype == dtype
    np.testing.assert_allclose(total.item(), expected.item(), rtol=rtol)
    assert_grads_equal(t_params, e_params, rtol)


def test_clip_grad_norm_accepts_a_single_tensor_and_generators():
    t_params, e_params = grads_pair()
    expected = torch.nn.utils.clip_grad_norm_(t_params[0], 0.1)
    np.testing.assert_allclose(clip_grad_norm_(e_params[0], 0.1).item(), expected.item())
    expected = torch.nn.utils.clip_grad_norm_((p for p in t_params), 0.1)
    np.testing.assert_allclose(clip_grad_norm_((p for p in e_params), 0.1).item(),
                               expected.item())
    assert_grads_equal(t_params, e_params, 1e-12)
    assert clip_grad_norm_([ember.zeros(2, requires_grad=True)], 1.0).item() == 0.0


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_clip_grad_norm_nonfinite(poison):
    t_params, e_params = grads_pair(poison=poison)
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(e_params, 1.0, error_if_nonfinite=True)
    expected = torch.nn.utils.clip_grad_norm_(t_params, 1.0)
    total = clip_grad_norm_(e_params, 1.0)
    np.testing.assert_equal(total.item(), expected.item())
    assert_grads_equal(t_params, e_params, 1e-12)


@pytest.mark.parametrize("clip_value", [0.1, 0.7, 5.0])
def test_clip_grad_value_matches_torch(clip_value):
    t_params, e_params = grads_pair(scale=2.0)
    torch.nn.utils.clip_grad_value_(t_params, clip_value)
    assert clip_grad_value_(e_params, clip_value) is None
    assert_grads_equal(t_params, e_params, 0)
