"""The Tensor itself: creation, dtypes, conversions, repr, backward semantics, errors."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

import ember


# ---------------------------------------------------------------- creation and dtypes
@pytest.mark.parametrize("data,expected", [
    ([1.0, 2.0], ember.float32),
    (np.array([1.0, 2.0]), ember.float32),          # float64 NumPy input becomes float32
    ([1, 2], ember.int64),
    ([True, False], ember.bool),
    (np.array([1, 2], dtype=np.int32), ember.int32),
    (np.array([1, 2], dtype=np.uint8), ember.uint8),
    (3.5, ember.float32),
])
def test_default_dtypes_follow_torch(data, expected):
    assert ember.tensor(data).dtype == expected


def test_explicit_dtype_is_kept():
    assert ember.tensor([1.0], dtype=ember.float64).dtype == ember.float64
    assert ember.tensor(np.array([1.0]), dtype=ember.float64).dtype == ember.float64


@pytest.mark.parametrize("make,check", [
    (lambda: ember.zeros(2, 3), lambda t: t.shape == (2, 3) and not t.array.any()),
    (lambda: ember.zeros((2, 3)), lambda t: t.shape == (2, 3)),
    (lambda: ember.ones(4, dtype=ember.float64),
     lambda t: t.dtype == ember.float64 and t.array.sum() == 4),
    (lambda: ember.full((2, 2), 7), lambda t: t.dtype == ember.int64 and (t.array == 7).all()),
    (lambda: ember.full((2,), 0.5), lambda t: t.dtype == ember.float32),
    (lambda: ember.empty(3), lambda t: t.shape == (3,) and t.dtype == ember.float32),
    (lambda: ember.arange(5), lambda t: t.tolist() == [0, 1, 2, 3, 4] and t.dtype == ember.int64),
    (lambda: ember.arange(0, 1, 0.25), lambda t: t.tolist() == [0, 0.25, 0.5, 0.75]
     and t.dtype == ember.float32),
    (lambda: ember.linspace(0, 1, 5), lambda t: np.allclose(t.array, [0, .25, .5, .75, 1])),
    (lambda: ember.eye(3), lambda t: (t.array == np.eye(3)).all()),
    (lambda: ember.rand(100), lambda t: 0 <= t.array.min() and t.array.max() < 1),
    (lambda: ember.randn(2, 3), lambda t: t.shape == (2, 3) and t.dtype == ember.float32),
    (lambda: ember.randint(0, 3, (50,)), lambda t: set(t.tolist()) <= {0, 1, 2}),
    (lambda: ember.zeros_like(ember.ones(2, dtype=ember.float64)),
     lambda t: t.dtype == ember.float64 and not t.array.any()),
    (lambda: ember.ones_like(ember.zeros(3)), lambda t: t.array.sum() == 3),
    (lambda: ember.full_like(ember.zeros(2), 3.0), lambda t: t.tolist() == [3.0, 3.0]),
    (lambda: ember.rand_like(ember.zeros(4)), lambda t: t.shape == (4,)),
    (lambda: ember.randn_like(ember.zeros(4, dtype=ember.float64)),
     lambda t: t.dtype == ember.float64),
])
def test_creation_functions(make, check):
    assert check(make())


def test_from_numpy_shares_memory_and_keeps_dtype():
    a = np.arange(3.0)
    t = ember.from_numpy(a)
    a[0] = 42
    assert t.dtype == ember.float64 and t.tolist()[0] == 42


def test_manual_seed_repeats_draws():
    ember.manual_seed(3)
    first = ember.randn(5).tolist()
    ember.manual_seed(3)
    assert ember.randn(5).tolist() == first


def test_conversions():
    t = ember.tensor([[1.5, 2.0], [3.0, 4.0]])
    assert t.numpy() is t.array and t.tolist() == [[1.5, 2.0], [3.0, 4.0]]
    assert ember.tensor([2.5]).item() == 2.5
    assert t.shape == (2, 2) and t.ndim == 2 and t.size() == (2, 2) and t.size(1) == 2
    assert t.numel() == 4 and len(t) == 2 and t.T.tolist() == [[1.5, 3.0], [2.0, 4.0]]
    assert [row.tolist() for row in t] == [[1.5, 2.0], [3.0, 4.0]]
    assert t.double().dtype == ember.float64 and t.long().dtype == ember.int64
    assert t.astype(ember.int32).tolist() == [[1, 2], [3, 4]]
    assert t.float().dtype == ember.float32


def test_item_of_many_elements_raises():
    with pytest.raises(ValueError, match="one-element"):
        ember.ones(3).item()


@pytest.mark.parametrize("data,kwargs", [
    ([1.0, 2.5, 3.0], {}),
    ([1.0, 2.0, 3.0], {}),
    ([[1.0, 2.0], [3.0, 4.0]], {}),
    ([1, 2, 3], {}),
    ([True, False], {}),
    (2.5, {}),
    ([1.0, 2.0], {"requires_grad": True}),
])
def test_repr_looks_like_torch(data, kwargs):
    expected = repr(torch.tensor(data, **kwargs))
    assert repr(ember.tensor(data, **kwargs)) == expected


def test_repr_names_non_default_dtype_and_grad_fn():
    assert repr(ember.tensor([1.0], dtype=ember.float64)) == "tensor([1.], dtype=ember.float64)"
    y = ember.tensor([1.0], requires_grad=True) * 2
    assert "grad_fn=<MulBackward>" in repr(y)


# ---------------------------------------------------------------- autograd semantics
def test_gradients_accumulate_over_backward_calls():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    assert x.grad.tolist() == [3 + 2, 3 + 4]


def test_shared_gradient_arrays_are_not_aliased():
    a = ember.tensor([1.0, 2.0], requires_grad=True)
    b = ember.tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad.mul_(10)  # in-place changes to one .grad must leave the other alone
    assert b.grad.tolist() == [1.0, 1.0]
    (a + b).sum().backward()
    assert a.grad.tolist() == [11.0, 11.0] and b.grad.tolist() == [2.0, 2.0]


def test_leaf_and_grad_fn():
    x = ember.tensor([1.0], requires_grad=True)
    y = x * 2
    assert x.is_leaf and x.grad_fn is None and not y.is_leaf and y.grad_fn.name == "Mul"
    assert y.detach().is_leaf and not y.detach().requires_grad
    assert ember.tensor([1.0]).requires_grad_().requires_grad


def test_non_leaf_grad_only_with_retain_grad():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    y.retain_grad()
    z = x * 3
    (y * z).sum().backward()
    assert y.grad.tolist() == [3.0, 6.0] and z.grad is None


def test_backward_with_explicit_gradient():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    (x * x).backward(ember.tensor([1.0, 0.5]))
    assert x.grad.tolist() == [2.0, 2.0]


def test_backward_of_non_scalar_without_gradient_raises():
    y = ember.ones(3, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        y.backward()


def test_backward_of_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        ember.ones(3).sum().backward()


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(RuntimeError, match="floating point"):
        ember.tensor([1, 2], requires_grad=True)
    with pytest.raises(RuntimeError, match="floating point"):
        ember.arange(3).requires_grad_()


def test_second_backward_through_freed_graph_raises():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


def test_retain_graph_allows_second_backward():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.tolist()
    y.backward()
    assert np.allclose(x.grad.array, 2 * np.array(first))


def test_saved_arrays_are_freed_after_backward():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()
    y.sum().backward()
    assert y.grad_fn.saved is None and y.grad_fn.released


def _wide_graph():
    """x -> h = 2x (256 KiB, above the release threshold) -> h shared by two ops -> y."""
    x = ember.randn(64, 1024, requires_grad=True)
    h = x * 2.0
    return x, h, (h.exp() + h * h).sum()


def test_backward_frees_intermediate_activations_nobody_holds():
    x, h, y = _wide_graph()
    data = weakref.ref(h.array)
    del h
    y.backward()
    assert data() is None  # freed although y (and so the graph) is still alive
    assert np.allclose(x.grad.array, 2 * np.exp(2 * x.array) + 8 * x.array, rtol=1e-5)


def test_retain_graph_and_held_tensors_keep_their_data():
    _, h, y = _wide_graph()
    data = weakref.ref(h.array)
    y.backward(retain_graph=True)
    y.backward()  # the second backward still finds h's data
    assert data() is not None and h.array.shape == (64, 1024)  # held by the test: kept


def test_a_finished_graph_can_still_be_walked_but_freed_data_says_so():
    from ember.viz import graph_text
    _, h, y = _wide_graph()
    before = graph_text(y)
    del h
    y.backward()
    assert graph_text(y) == before  # same ops, shapes and dtypes, one shared vertex
    exp_out = y.grad_fn.parents[0].grad_fn.parents[0]
    stand_in = exp_out.grad_fn.parents[0]  # h, as the Exp op remembers it
    assert stand_in.shape == (64, 1024) and stand_in.grad_fn.name == "Mul"
    assert stand_in is y.grad_fn.parents[0].grad_fn.parents[1].grad_fn.parents[0]  # shared
    with pytest.raises(RuntimeError, match="was freed with the graph"):
        stand_in.detach().numpy()


def test_backward_refuses_saved_inputs_modified_in_place_as_torch_does():
    def run(lib):
        x = lib.ones(4, 5)
        w = lib.ones(5).requires_grad_()
        y = (x * w).sum()  # mul saves x for w's gradient
        with (ember.no_grad() if lib is ember else torch.no_grad()):
            x[1:2].add_(1.0)  # through a view, as torch's version counter also sees
        y.backward()

    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        run(torch)
    with pytest.raises(RuntimeError, match="Mul: an array of shape \\(4, 5\\) that it saved"):
        run(ember)


def test_an_optimizer_step_before_backward_is_refused_like_torch():
    def step_then_backward(nn, optim, lib):
        lib.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        loss = model(lib.randn(2, 3)).sum()
        opt = optim.SGD(model.parameters(), lr=0.1)
        loss.backward(retain_graph=True)
        opt.step()  # the second Linear saved its weight for the first layer's gradient
        loss.backward()

    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        step_then_backward(torch.nn, torch.optim, torch)
    with pytest.raises(RuntimeError, match="Linear: .* modified by an in-place operation"):
        step_then_backward(ember.nn, ember.optim, ember)


def test_a_step_over_hundreds_of_parameters_is_still_seen_like_torch():
    """One record per optimizer step: with one record per parameter, a step over more
    than the 256 records kept pushed the first parameter's record out unseen."""
    def step_then_backward(lib, optim):
        first = lib.ones(3, requires_grad=True)
        rest = [lib.ones(2, requires_grad=True) for _ in range(300)]
        loss = (first * first).sum()  # mul saves `first` (for its own gradient)
        for p in rest:
            loss = loss + p.sum()
        loss.backward(retain_graph=True)
        optim.SGD([first] + rest, lr=0.1).step()
        loss.backward()

    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        step_then_backward(torch, torch.optim)
    with pytest.raises(RuntimeError, match="Mul: .* modified by an in-place operation"):
        step_then_backward(ember, ember.optim)


def test_in_place_writes_elsewhere_or_after_backward_are_fine():
    x = ember.ones(4, 5)
    w = ember.ones(5, requires_grad=True)
    y = (x[0:2] * w).sum()
    with ember.no_grad():
        x[3:4].add_(1.0)  # memory the graph did not save
    y.backward()
    with ember.no_grad():
        x.add_(1.0)  # after backward
    assert w.grad.tolist() == [2.0] * 5


def test_long_chain_backward_has_no_recursion_limit():
    x = ember.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.backward()
    assert x.grad.item() == 1.0


def test_diamond_graph_sums_both_paths():
    x = ember.tensor(3.0, requires_grad=True)
    a = x * 2
    (a * a + a).backward()   # d/dx (4x^2 + 2x) = 8x + 2
    assert x.grad.item() == 26.0


def test_no_grad_context_and_decorator():
    x = ember.ones(2, requires_grad=True)
    with ember.no_grad():
        y = x * 2
        with ember.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.grad_fn is None and z.requires_grad

    @ember.no_grad()
    def double(t):
        return t * 2

    assert not double(x).requires_grad and ember.is_grad_enabled()


def test_inplace_update_of_leaf_needing_grad_is_refused_outside_no_grad():
    w = ember.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place"):
        w.sub_(1)
    with pytest.raises(RuntimeError, match="in-place"):
        w[0] = 5.0
    with ember.no_grad():
        w -= 0.5
        w.mul_(2)
    assert w.tolist() == [1.0, 1.0] and w.is_leaf


def test_setitem_on_plain_tensor():
    t = ember.zeros(2, 3)
    t[0, 1:] = 5.0
    t[ember.tensor([1])] = ember.tensor([1.0, 2.0, 3.0])
    assert t.tolist() == [[0, 5, 5], [1, 2, 3]]


def test_scalar_dtype_promotion_matches_torch():
    f32 = ember.ones(2)
    assert (f32 * 2.5).dtype == ember.float32 and (2 * f32).dtype == ember.float32
    ints = ember.tensor([1, 2])
    assert (ints * 2).dtype == ember.int64
    assert (ints * 2.5).dtype == ember.float32 and (ints / 2).dtype == ember.float32
    assert (ints / ember.tensor([2, 4])).dtype == ember.float32
    assert (ember.ones(2, dtype=ember.float64) + 1).dtype == ember.float64


def test_numpy_on_left_defers_to_tensor():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = np.float32(2.0) * x
    assert isinstance(y, ember.Tensor) and y.requires_grad


def test_readme_example_runs_as_written():
    import pathlib
    import re
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"<!-- autograd-example -->\s*```python\n(.*?)```", readme, re.S)
    assert block, "README has no autograd example block"
    lines = block.group(1).strip().splitlines()
    assert len(lines) <= 10
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)  # noqa: S102
    x = namespace["x"]
    assert x.grad is not None


def test_t_refuses_more_than_two_dims_like_torch():
    x = ember.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"t: expects a tensor with <= 2 dims.*\(2, 3, 4\)"):
        x.t()
    with pytest.raises(RuntimeError):
        torch.zeros(2, 3, 4).t()
    assert ember.t(ember.zeros(3)).shape == (3,) and x.mT.shape == (2, 4, 3)


@pytest.mark.parametrize("value, error, message", [
    (ember.zeros(3), RuntimeError, r"different size: \(3,\), expected \(4, 3\)"),
    (ember.zeros(4, 3, dtype=ember.float64), RuntimeError, "float64 to a tensor with dtype "
                                                           "ember.float32"),
    (np.zeros((4, 3), np.float32), TypeError, "Tensor or None but got grad of type ndarray"),
])
def test_assigning_a_grad_that_does_not_fit_is_refused_like_torch(value, error, message):
    """An optimizer would broadcast a (3,) gradient over a (4, 3) weight without a word."""
    p = ember.nn.Parameter(ember.zeros(4, 3))
    with pytest.raises(error, match=message):
        p.grad = value
    assert p.grad is None
    theirs = torch.zeros(4, 3, requires_grad=True)
    with pytest.raises((RuntimeError, TypeError)):
        theirs.grad = torch.from_numpy(value.array) if isinstance(value, ember.Tensor) else value
    p.grad = ember.ones(4, 3)  # a fitting one, and None, are taken
    assert p.grad.shape == (4, 3)
    p.grad = None
    assert p.grad is None
