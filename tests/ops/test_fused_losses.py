"""The fused mse_loss (tests/op_rows_perf.py) against torch and gradcheck, and against
the composed ops it replaced."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from tests.helpers import gradcheck_case, helper_test_op
from tests.op_rows_perf import ROWS

CASES = [(case, shapes, dtype) for case in ROWS for shapes in case.shapes for dtype in case.dtypes]


@pytest.mark.parametrize("case,shapes,dtype", CASES,
                         ids=[f"{c.name}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_fused_op_matches_torch(case, shapes, dtype):
    helper_test_op(shapes, case.torch_fn, case.ember_fn, dtype=dtype, grad=case.grad, case=case)


GRADCHECKS = [case for case in ROWS if case.grad and case.gradcheck]


@pytest.mark.parametrize("case", GRADCHECKS,
                         ids=[f"{c.name}-{i}" for i, c in enumerate(GRADCHECKS)])
def test_fused_op_gradcheck(case):
    assert gradcheck_case(case, case.shapes[0])


def composed_mse(x, t, reduction):
    """The plain path: mse_loss as it was composed of sub, mul and a reduction."""
    diff = x - t
    loss = diff * diff
    return loss if reduction == "none" else (loss.sum() if reduction == "sum" else loss.mean())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [ember.float32, ember.float64])
def test_fused_equals_composed(reduction, dtype):
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((10, 7)) for _ in range(2)]
    grads = []
    for fn in (F.mse_loss, composed_mse):
        x, t = (ember.tensor(d, dtype=dtype, requires_grad=True) for d in data)
        out = fn(x, t, reduction=reduction)
        out.backward(ember.ones_like(out) if reduction == "none" else None)
        grads.append((out.array, x.grad.array, t.grad.array))
    rtol = 1e-6 if dtype == ember.float32 else 1e-14
    for fused, plain in zip(*grads):
        assert fused.dtype == plain.dtype
        np.testing.assert_allclose(fused, plain, rtol=rtol, atol=rtol)


def test_mean_of_nothing_is_nan_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = F.mse_loss(ember.zeros(0), ember.zeros(0))
    assert np.isnan(out.item())


def test_mismatched_sizes_warn_and_bad_reduction_is_refused():
    with pytest.warns(UserWarning, match="different to the input size"):
        F.mse_loss(ember.zeros(4, 3), ember.zeros(3))
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        F.mse_loss(ember.zeros(2), ember.zeros(2), reduction="avg")


def test_an_elementwise_weight_still_takes_the_composed_path():
    x, t, w = ember.tensor([1.0, 3.0]), ember.tensor([0.0, 0.0]), ember.tensor([1.0, 0.0])
    assert F.mse_loss(x, t, weight=w).item() == 1.0


# ---------------------------------------------------------------- cross-entropy's plain path
def cross_entropy_run(logits, target, **kwargs):
    x = ember.from_numpy(logits.copy()).requires_grad_()
    loss = F.cross_entropy(x, ember.from_numpy(target), **kwargs)
    loss.backward(ember.ones_like(loss))
    return loss, x.grad.array


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_plain_path_equals_the_general_path_and_torch(monkeypatch, reduction):
    import torch
    from ember.ops.nn import CrossEntropy
    rng = np.random.default_rng(2)
    logits, target = rng.standard_normal((33, 7)) * 4, rng.integers(0, 7, 33)
    loss, grad = cross_entropy_run(logits, target, reduction=reduction)
    assert loss.grad_fn.plain  # (N, C) float logits, int64 classes: the fused path
    monkeypatch.setattr(CrossEntropy, "_forward_plain", lambda *args: None)
    general_loss, general_grad = cross_entropy_run(logits, target, reduction=reduction)
    assert not general_loss.grad_fn.plain
    np.testing.assert_allclose(loss.array, general_loss.array, rtol=1e-13)
    np.testing.assert_allclose(grad, general_grad, rtol=1e-13, atol=1e-16)
    tx = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(tx, torch.tensor(target), reduction=reduction)
    expected.backward(torch.ones_like(expected))
    np.testing.assert_allclose(loss.array, expected.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("case", ["ignored class", "int32 target", "infinite logit"])
def test_cross_entropy_leaves_the_plain_path_where_it_does_not_apply(case):
    rng = np.random.default_rng(3)
    logits, target, kwargs = rng.standard_normal((6, 4)), rng.integers(0, 4, 6), {}
    if case == "ignored class":
        kwargs = dict(ignore_index=int(target[0]))
    elif case == "int32 target":
        target = target.astype(np.int32)
    else:
        logits[2, 1] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'invalid value' warning on the way
        loss, _ = cross_entropy_run(logits, target, **kwargs)
    assert not loss.grad_fn.plain
    if case == "ignored class":
        kept = target != target[0]
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        expected = -log_p[np.arange(6), target][kept].mean()
        np.testing.assert_allclose(float(loss.array), expected, rtol=1e-12)


@pytest.mark.parametrize("size", [3, 65])  # the bound check: Python's max, NumPy's above 64
@pytest.mark.parametrize("bad", [-1, 4])
def test_cross_entropy_names_a_target_out_of_range(bad, size):
    target = np.zeros(size, np.int64)
    target[1] = bad
    with pytest.raises(IndexError, match=f"target {bad} is out of bounds for 4 classes"):
        cross_entropy_run(np.zeros((size, 4)), target)


NON_FINITE_ROWS = [[1.0, np.inf, 0.0], [np.inf, np.inf, 0.0], [-np.inf] * 3,
                   [1.0, -np.inf, 0.0], [1.0, np.nan, 0.0], [np.inf, -np.inf, 1.0]]


@pytest.mark.parametrize("row", NON_FINITE_ROWS)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "cross_entropy"])
def test_rows_with_infinities_give_torchs_values_and_nans_quietly(row, name):
    """torch shifts by the row maximum: a +inf makes the whole row NaN, all -inf gives
    NaN; neither warns."""
    import torch
    a = np.array([row, [0.5, 1.0, 2.0]])
    weights = np.arange(6.0).reshape(2, 3)

    def run(lib, x, target):
        f = getattr(lib.nn.functional, name)
        if name == "cross_entropy":
            return f(x, target, reduction="none")
        return f(x, 1) * lib.tensor(weights, dtype=x.dtype)

    x = ember.tensor(a, dtype=ember.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = run(ember, x, ember.tensor([0, 2]))
        out.sum().backward()
    tx = torch.tensor(a, requires_grad=True)
    tout = run(torch, tx, torch.tensor([0, 2]))
    tout.sum().backward()
    np.testing.assert_allclose(out.array, tout.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.array, tx.grad.numpy(), rtol=1e-12, atol=1e-15)
