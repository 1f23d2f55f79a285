"""The autograd machinery: gradcheck, unbroadcast, registration, stability, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from ember.autograd import Function, GradcheckError, gradcheck, unbroadcast


class _WrongSquare(Function):
    """x^2 with a deliberately wrong derivative (x instead of 2x); never registered."""

    name = "WrongSquare"

    def forward(self, a):
        self.save(a)
        return a * a

    def backward(self, g):
        return g * self.saved[0]


def test_gradcheck_passes_a_correct_op():
    x = ember.randn(3, 4, dtype=ember.float64, requires_grad=True)
    assert gradcheck(lambda t: (t * t).sum(1), [x]) is True


def test_gradcheck_raises_naming_the_worst_element():
    x = ember.tensor([0.01, -30.0, 0.02], dtype=ember.float64, requires_grad=True)
    with pytest.raises(GradcheckError, match=r"input 0, element \(1,\)"):
        gradcheck(lambda t: _WrongSquare.apply(t), [x])


def test_gradcheck_refuses_float32():
    with pytest.raises(GradcheckError, match="float64"):
        gradcheck(lambda t: t * 2, [ember.ones(2, requires_grad=True)])


@pytest.mark.parametrize("grad_shape,shape", [
    ((3, 4), (3, 4)), ((3, 4), (4,)), ((3, 4), (1, 4)), ((3, 4), (3, 1)), ((2, 3, 4), ()),
    ((2, 3, 4), (3, 1)), ((5,), (1,)),
])
def test_unbroadcast_is_the_adjoint_of_broadcasting(grad_shape, shape):
    g = np.random.default_rng(0).standard_normal(grad_shape)
    out = unbroadcast(g, shape)
    assert out.shape == shape
    # <broadcast(x), g> == <x, unbroadcast(g)> for any x
    x = np.random.default_rng(1).standard_normal(shape)
    assert np.isclose((np.broadcast_to(x, grad_shape) * g).sum(), (x * out).sum())


def test_register_makes_a_tensor_method_and_a_function():
    assert ember.Tensor.exp is not None and ember.exp(ember.zeros(1)).item() == 1.0
    assert "exp" in ember.autograd.REGISTRY and ember.nn.functional.relu is ember.relu


def test_registering_a_name_twice_is_refused():
    with pytest.raises(RuntimeError, match="registered twice"):
        ember.autograd.register("exp")(type("Exp2", (Function,), {}))


def test_graph_nodes_keep_their_op_names():
    x = ember.ones(2, requires_grad=True)
    y = (x.exp() + 1).sum()
    names = [y.grad_fn.name, y.grad_fn.parents[0].grad_fn.name,
             y.grad_fn.parents[0].grad_fn.parents[0].grad_fn.name]
    assert names == ["Sum", "Add", "Exp"]


# ---------------------------------------------------------------- numerical stability
def _torch_and_ember(values, fn_t, fn_e):
    t = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    e = ember.tensor(values, dtype=ember.float64, requires_grad=True)
    out_t, out_e = fn_t(t), fn_e(e)
    out_t.sum().backward()
    out_e.sum().backward()
    return out_t.detach().numpy(), out_e.array, t.grad.numpy(), e.grad.array


@pytest.mark.parametrize("values,fn_t,fn_e", [
    ([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], lambda t: t.log_softmax(1), lambda e: e.log_softmax(1)),
    ([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], lambda t: t.softmax(1), lambda e: e.softmax(1)),
    ([1000.0, -1000.0, 0.0, 50.0], lambda t: t.sigmoid(), lambda e: e.sigmoid()),
    ([[1e4, 1e4 + 1], [-1e4, 3.0]], lambda t: t.logsumexp(1), lambda e: e.logsumexp(1)),
    ([1000.0, -1000.0, 0.0], lambda t: torch.nn.functional.softplus(t), lambda e: e.softplus()),
])
def test_extreme_inputs_stay_finite_and_equal_torch(values, fn_t, fn_e):
    out_t, out_e, grad_t, grad_e = _torch_and_ember(values, fn_t, fn_e)
    assert np.isfinite(out_e).all() and np.isfinite(grad_e).all()
    np.testing.assert_allclose(out_e, out_t, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(grad_e, grad_t, rtol=1e-7, atol=1e-12)


def test_sigmoid_float32_extremes_do_not_overflow():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = ember.tensor([1000.0, -1000.0]).sigmoid()
    assert out.tolist() == [1.0, 0.0]


def test_log_of_zero_is_minus_inf_not_a_crash():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert ember.tensor([0.0]).log().item() == -np.inf
    assert np.isnan(ember.tensor([-1.0]).log().item())


def test_logsumexp_of_all_minus_inf_is_minus_inf():
    out = ember.tensor([[-np.inf, -np.inf]]).logsumexp(1)
    assert out.tolist() == [-np.inf]


# ---------------------------------------------------------------- bad input
def test_matmul_shape_mismatch_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"MatMul.*\(3, 4\).*\(5, 2\)"):
        ember.ones(3, 4) @ ember.ones(5, 2)


def test_broadcast_mismatch_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"Add.*\(3, 4\) and \(3,\)"):
        ember.ones(3, 4) + ember.ones(3)
    with pytest.raises(ValueError, match=r"Mul.*\(2, 3\) and \(4, 3\)"):
        ember.ones(2, 3) * ember.ones(4, 3)


def test_bad_reshape_and_index_name_the_op():
    with pytest.raises(ValueError, match="Reshape"):
        ember.ones(6).reshape(4, 2)
    with pytest.raises(IndexError, match="GetItem"):
        ember.ones(3)[5]
    with pytest.raises(IndexError, match="out of range"):
        ember.ones(3, 4).sum(2)


def test_gather_index_out_of_range_is_clear():
    with pytest.raises(IndexError, match="gather: index out of range"):
        ember.ones(2, 3).gather(1, ember.tensor([[0, 3]]))
