"""The backward engine's ordering (newest op first, by sequence number) and the
one-frame ``apply`` closures, against torch and against the plain paths."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
import torch

import ember
from ember.autograd import Function, register
from ember.ops.arithmetic import Mul

UNARY = ["tanh", "sigmoid", "exp", "neg"]
BINARY = ["add", "mul", "sub"]


def random_graph(seed: int, leaves: list, lib) -> object:
    """Ops over randomly chosen earlier nodes: shared subexpressions, nodes consumed
    long after they were made, leaves used many times. Same recipe for both libs."""
    rng = np.random.default_rng(seed)
    nodes = list(leaves)
    for _ in range(40):
        if rng.random() < 0.4:
            x = nodes[rng.integers(len(nodes))]
            name = UNARY[rng.integers(len(UNARY))]
            nodes.append(getattr(x, name)() if name != "neg" else -x)
        else:
            a, b = (nodes[i] for i in rng.integers(len(nodes), size=2))
            nodes.append(getattr(a, BINARY[rng.integers(len(BINARY))])(b) * 0.5)
    picks = rng.integers(len(leaves), len(nodes), size=4)
    return sum(nodes[i].sum() for i in picks)


@pytest.mark.parametrize("seed", range(12))
def test_random_graphs_match_torch(seed):
    rng = np.random.default_rng(100 + seed)
    data = [rng.uniform(-1, 1, (3,)) for _ in range(3)]
    e = [ember.tensor(d, dtype=ember.float64, requires_grad=True) for d in data]
    t = [torch.tensor(d, requires_grad=True) for d in data]
    random_graph(seed, e, ember).backward()
    random_graph(seed, t, torch).backward()
    for a, b in zip(e, t):
        if b.grad is None:
            assert a.grad is None
        else:
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_backward_from_an_older_node_ignores_newer_ops():
    x = ember.tensor([2.0], requires_grad=True)
    y = x * x          # the root: made before z
    z = y * 3.0        # newer, reaches x, but not part of y's graph
    y.backward(retain_graph=True)
    assert x.grad.tolist() == [4.0]
    z.backward()
    assert x.grad.tolist() == [4.0 + 12.0]


def test_a_node_made_early_and_consumed_late_gets_all_contributions():
    x = ember.tensor([1.5], requires_grad=True)
    early = x.exp()
    chain = x
    for _ in range(50):
        chain = chain * 1.01
    (chain * early).sum().backward()
    expected = 1.01 ** 50 * (np.exp(1.5) + 1.5 * np.exp(1.5))
    np.testing.assert_allclose(x.grad.numpy(), [expected], rtol=1e-6)


def test_graphs_built_in_two_threads_each_backprop_correctly():
    results = {}

    def work(k: int) -> None:
        x = ember.tensor([float(k)], requires_grad=True)
        y = x
        for _ in range(200):
            y = y * 1.0 + 0.0
        (y * y).sum().backward()
        results[k] = x.grad.item()

    threads = [threading.Thread(target=work, args=(k,)) for k in (2, 3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == {2: 4.0, 3: 6.0}


def test_retained_non_leaf_and_leaf_never_share_a_gradient_array():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = x + 0.0
    y.retain_grad()
    y.sum().backward()
    y.grad.mul_(5)
    assert x.grad.tolist() == [1.0, 1.0]


def test_a_user_gradient_is_copied_before_a_leaf_keeps_it():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    seed = np.array([1.0, 1.0], np.float32)
    x.backward(seed)
    x.grad.mul_(3)
    assert seed.tolist() == [1.0, 1.0]


# ---------------------------------------------------------------- apply closures
def test_method_function_and_apply_are_the_same_fast_closure():
    assert ember.Tensor.__mul__ is Mul.apply is Mul._apply
    x = ember.tensor([3.0], requires_grad=True)
    for out in (x * x, Mul.apply(x, x), ember.mul(x, x)):
        assert type(out.grad_fn) is Mul and out.item() == 9.0


def test_a_subclass_runs_its_own_forward_not_its_parents():
    class Triple(Mul):
        def forward(self, a, b):
            self.save(a, b)
            return 3 * a * b

    x = ember.tensor([2.0], requires_grad=True)
    out = Triple.apply(x, ember.tensor([1.0]))
    assert out.item() == 6.0 and type(out.grad_fn) is Triple


def test_an_op_with_its_own_apply_keeps_it():
    calls = []

    @register("test_engine_custom_apply_op")
    class Twice(Function):
        def forward(self, a):
            return 2 * a

        def backward(self, g):
            return 2 * g

        @classmethod
        def apply(cls, x):
            calls.append(x)
            return super().apply(x)

    try:
        x = ember.tensor([1.0], requires_grad=True)
        x.test_engine_custom_apply_op().backward()
        assert len(calls) == 1 and x.grad.item() == 2.0
    finally:
        from ember.autograd import FUNCTIONS, REGISTRY
        REGISTRY.pop("test_engine_custom_apply_op")
        FUNCTIONS.pop("test_engine_custom_apply_op")
        delattr(ember.Tensor, "test_engine_custom_apply_op")


def test_numbers_and_mixed_dtypes_are_lifted_as_before():
    x = ember.tensor([1, 2])                      # int64
    assert (x * 0.5).dtype == ember.float32      # float scalar with an int tensor
    y = ember.tensor([1.0, 2.0], dtype=ember.float64)
    assert (x + y).dtype == ember.float64        # int and float tensors promote
    assert (y * 2).dtype == ember.float64


def test_recorded_ops_keep_their_inputs_in_order_for_every_arity():
    a, b, c = (ember.tensor(np.ones((2, 3)), requires_grad=True) for _ in range(3))
    w = ember.tensor(np.ones((4, 3)), requires_grad=True)
    bias = ember.tensor(np.ones(4), requires_grad=True)
    assert (-a).grad_fn.parents == (a,)
    assert (a * b).grad_fn.parents == (a, b)
    assert ember.nn.functional.linear(c, w, bias).grad_fn.parents == (c, w, bias)
    fn = (a + b).grad_fn
    fn.parents = [a, c]  # what backward's release does: a list replaces the pair
    assert fn.parents == [a, c] and fn._first is None and fn._second is None


def test_a_recorded_op_leaves_two_objects_for_the_garbage_collector():
    """The output tensor and its Function, no tuple of inputs: long chains of small ops
    pay for every tracked object in Python's full collections (performance.md)."""
    x = ember.tensor([1.0], requires_grad=True)
    k = ember.tensor([1.0])
    gc.collect()
    before = len(gc.get_objects())
    y = x
    for _ in range(200):
        y = y * k
    gc.collect()  # tuples holding only arrays are untracked here
    per_op = (len(gc.get_objects()) - before) / 200
    assert 1.9 <= per_op <= 2.1
    y.sum().backward()
    assert x.grad.item() == 1.0


def test_the_two_tensor_fast_path_records_what_the_general_path_does():
    """``a * b`` on two plain tensors of one dtype skips apply's checks; a Parameter
    (a Tensor subclass) or a number takes the general path. Same record, same grads."""
    rng = np.random.default_rng(3)
    values = rng.standard_normal((2, 3, 4))
    a, b = ember.tensor(values[0], requires_grad=True), ember.tensor(values[1])
    p = ember.nn.Parameter(ember.tensor(values[0]))
    fast, general = a * b, p * b
    for out, first in ((fast, a), (general, p)):
        fn = out.grad_fn
        assert fn.parents == (first, b) and fn.needs_input_grad == (True, False)
        out.sum().backward()
    assert np.array_equal(a.grad.array, p.grad.array)
    assert fast.grad_fn.seq < general.grad_fn.seq  # both numbered for backward's order
    with ember.no_grad():
        assert (a * b).grad_fn is None and not (a * b).requires_grad
    assert (b * b).grad_fn is None  # no input needs a gradient


def test_the_three_tensor_fast_path_records_what_the_general_path_does():
    """``linear(x, W, b)`` on three tensors (Parameters among them) skips apply's number
    lifting: it records the three inputs and matches torch's values and gradients."""
    import ember.nn.functional as F
    rng = np.random.default_rng(4)
    f64 = ember.float64
    x = ember.tensor(rng.standard_normal((5, 3)), dtype=f64, requires_grad=True)
    w = ember.nn.Parameter(ember.tensor(rng.standard_normal((2, 3)), dtype=f64))
    b = ember.nn.Parameter(ember.tensor(rng.standard_normal(2), dtype=f64))
    out = F.linear(x, w, b)
    fn = out.grad_fn
    assert fn.parents == (x, w, b) and fn.needs_input_grad == (True, True, True)
    out.sum().backward()
    twins = [torch.tensor(t.array, requires_grad=True) for t in (x, w, b)]
    expected = torch.nn.functional.linear(*twins)
    expected.sum().backward()
    assert np.allclose(out.array, expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    for mine, theirs in zip((x, w, b), twins):
        assert np.allclose(mine.grad.array, theirs.grad.numpy(), rtol=1e-12, atol=1e-12)
    shapes = r"\(input shapes \(5, 4\) and \(2, 3\) and \(2,\)\)"
    with pytest.raises(ValueError, match=r"Linear: .*" + shapes):
        F.linear(ember.ones(5, 4, dtype=f64), w, b)
    with ember.no_grad():
        assert F.linear(x, w, b).grad_fn is None


def test_the_one_tensor_with_attributes_path_records_what_the_general_path_does():
    """``x.reshape(2, 6)`` (one tensor, then plain attributes) skips the number lifting;
    the record keeps the input and the attributes, and errors name the op and shape."""
    x = ember.tensor(np.arange(12.0), dtype=ember.float64, requires_grad=True)
    out = x.reshape(2, 6)
    fn = out.grad_fn
    assert fn.parents == (x,) and fn.needs_input_grad == (True,)
    assert fn.attrs == ((2, 6), {})
    (out * ember.tensor(np.arange(12.0).reshape(2, 6), dtype=ember.float64)).sum().backward()
    assert np.array_equal(x.grad.array, np.arange(12.0))
    hot = ember.nn.functional.one_hot(ember.tensor([2, 0]), 3)  # an integer input: no record
    assert hot.grad_fn is None and hot.tolist() == [[0, 0, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match=r"Reshape: .*\(input shapes \(12,\)\)"):
        x.reshape(5, 5)


def test_the_two_tensor_fast_path_reports_anomalies_and_shapes():
    from ember.autograd import AnomalyError, detect_anomaly
    big = ember.tensor([3e38], requires_grad=True)
    with detect_anomaly(), np.errstate(over="ignore"), \
            pytest.raises(AnomalyError, match="Mul produced Inf"):
        big * big
    with pytest.raises(ValueError, match=r"Mul: .*\(input shapes \(2, 3\) and \(4, 5\)\)"):
        ember.ones(2, 3) * ember.ones(4, 5)


@pytest.mark.parametrize("value", [None, "a", [1.0, 2.0], object()])
def test_an_input_that_is_neither_tensor_nor_number_is_torchs_type_error(value):
    """``x + None`` used to become NaN and ``x + [1, 2]`` a silent copy; torch refuses both."""
    x = ember.ones(2)
    with pytest.raises(TypeError):
        torch.ones(2) + value
    expected = rf"Add: expected tensors or numbers .*{type(value).__name__}"
    with pytest.raises(TypeError, match=expected):
        x + value
    with pytest.raises(TypeError, match="Mul: expected tensors or numbers"):
        value * x


def test_numbers_and_arrays_are_still_lifted_as_torch_lifts_them():
    x = ember.tensor([1.0, 2.0])
    for value in (2, 2.5, True, np.float32(2.0), np.array(3.0)):
        assert np.allclose((x + value).array, (torch.tensor([1.0, 2.0]) + value).numpy())


def test_a_shape_error_on_the_general_path_names_the_lifted_inputs_shapes():
    """An op with a keyword argument takes apply's general path; its errors read alike."""
    with pytest.raises(IndexError, match=r"Sum: .*\(input shapes \(2, 3\)\)"):
        ember.ones(2, 3).sum(dim=5)
