"""The op table: every registered op against torch, forward and backward, plus gradcheck.

Adding an op = one class + one row here (or in a tests/op_rows_*.py file).
test_every_op_has_a_row fails for any registered op without one.
"""

from __future__ import annotations

import importlib
import pathlib
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import ember
from tests.helpers import OpCase, gradcheck_case, helper_test_op

E = ember
T = torch

BIN_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (5,)), ((4,), ()),
              ((1,), (2, 3)), ((0, 3), (3,)), ((2, 0), (1, 0))]
UNARY_SHAPES = [((3, 4),), ((),), ((1, 5),), ((2, 0, 3),), ((2, 3, 4),)]
RED_SHAPES = [((3, 4),), ((2, 3, 4),), ((1, 5),)]


def away_from_zero(rng, shapes):
    return [rng.uniform(0.5, 2.0, s) * rng.choice([-1, 1], s) for s in shapes]


def positive(rng, shapes):
    return [rng.uniform(0.2, 3.0, s) for s in shapes]


def with_zeros(rng, shapes):
    arrays = [rng.uniform(-2, 2, s) for s in shapes]
    for a in arrays:
        a.reshape(-1)[:: 3] = 0.0  # prod's backward must be exact with zeros
    return arrays


def ties(rng, shapes):
    return [rng.integers(-2, 3, s).astype(float) for s in shapes]


def bools(rng, shapes):
    return [rng.random(s) > 0.5 for s in shapes]


def cond_and_values(rng, shapes):
    return [rng.random(shapes[0]) > 0.5] + [rng.uniform(-2, 2, s) for s in shapes[1:]]


def ints(high):
    return lambda rng, shapes: [rng.integers(0, high, s) for s in shapes]


def values_and_index(dim, high):
    """A float input and an int64 index tensor (gather/scatter/index_select)."""
    def gen(rng, shapes):
        return [rng.uniform(-2, 2, shapes[0]), rng.integers(0, high, shapes[1])]
    return gen


def value_index_src(rng, shapes):
    return [rng.uniform(-2, 2, shapes[0]), rng.integers(0, 3, shapes[1]),
            rng.uniform(-2, 2, shapes[2])]


def row(name, shapes, torch_fn, ember_fn=None, **kw):
    return OpCase(name, shapes, torch_fn, ember_fn or torch_fn, **kw)


NO_GRAD = dict(grad=False, gradcheck=False)

ROWS = [
    # ------------------------------------------------------------ arithmetic
    row("add", BIN_SHAPES, lambda a, b: a + b),
    row("add", UNARY_SHAPES, lambda a: 2.5 + a),
    row("sub", BIN_SHAPES, lambda a, b: a - b),
    row("sub", UNARY_SHAPES, lambda a: 1.5 - a),
    row("mul", BIN_SHAPES, lambda a, b: a * b),
    row("mul", UNARY_SHAPES, lambda a: a * 3),
    row("div", BIN_SHAPES, lambda a, b: a / b, gen=away_from_zero),
    row("div", UNARY_SHAPES, lambda a: 2 / a, gen=away_from_zero),
    row("floor_divide", BIN_SHAPES[:4], lambda a, b: a // b, gen=away_from_zero, **NO_GRAD),
    row("remainder", BIN_SHAPES[:4], lambda a, b: a % b, gen=away_from_zero),
    row("pow", BIN_SHAPES[:6], lambda a, b: a ** b, gen=positive),
    row("pow", UNARY_SHAPES, lambda a: a ** 3),
    row("pow", UNARY_SHAPES, lambda a: 2 ** a),
    row("neg", UNARY_SHAPES, lambda a: -a),
    row("abs", UNARY_SHAPES, lambda a: a.abs(), gen=away_from_zero),
    row("sign", UNARY_SHAPES, lambda a: a.sign(), **NO_GRAD),
    row("reciprocal", UNARY_SHAPES, lambda a: a.reciprocal(), gen=away_from_zero),
    row("square", UNARY_SHAPES, lambda a: a.square()),
    row("matmul", [((3, 4), (4, 5)), ((4,), (4,)), ((2, 3, 4), (4,)), ((4,), (2, 4, 3)),
                   ((2, 1, 3, 4), (5, 4, 2)), ((0, 4), (4, 3)), ((3, 4), (4, 0))],
        lambda a, b: a @ b),
    row("outer", [((3,), (4,)), ((1,), (5,)), ((0,), (2,))], lambda a, b: T.outer(a, b),
        lambda a, b: E.outer(a, b)),
    row("lerp", [((3, 4), (3, 4))], lambda a, b: T.lerp(a, b, 0.3), lambda a, b: E.lerp(a, b, 0.3)),
    row("lerp", [((3, 4), (3, 4), (4,))], lambda a, b, w: T.lerp(a, b, w),
        lambda a, b, w: E.lerp(a, b, w)),
    # ------------------------------------------------------------ comparisons and logic
    row("eq", BIN_SHAPES[:4], lambda a, b: a == b, gen=ties,
        **NO_GRAD),
    row("ne", BIN_SHAPES[:4], lambda a, b: a != b, gen=ties, **NO_GRAD),
    row("lt", BIN_SHAPES, lambda a, b: a < b, **NO_GRAD),
    row("le", BIN_SHAPES[:4], lambda a, b: a <= b, gen=ties, **NO_GRAD),
    row("gt", BIN_SHAPES, lambda a, b: a > b, **NO_GRAD),
    row("ge", BIN_SHAPES[:4], lambda a, b: a >= b, gen=ties, **NO_GRAD),
    row("logical_and", BIN_SHAPES[:4], lambda a, b: a & b, gen=bools, **NO_GRAD),
    row("logical_or", BIN_SHAPES[:4], lambda a, b: a | b, gen=bools, **NO_GRAD),
    row("logical_not", UNARY_SHAPES, lambda a: ~a, gen=bools, **NO_GRAD),
    # ------------------------------------------------------------ selection
    row("maximum", BIN_SHAPES, lambda a, b: T.maximum(a, b), lambda a, b: E.maximum(a, b)),
    row("maximum", BIN_SHAPES[:4], lambda a, b: T.maximum(a, b), lambda a, b: E.maximum(a, b),
        gen=ties, gradcheck=False),
    row("minimum", BIN_SHAPES, lambda a, b: T.minimum(a, b), lambda a, b: E.minimum(a, b)),
    row("minimum", BIN_SHAPES[:4], lambda a, b: T.minimum(a, b), lambda a, b: E.minimum(a, b),
        gen=ties, gradcheck=False),
    row("where", [((3, 4), (3, 4), (3, 4)), ((3, 4), (4,), (3, 1)), ((), (2,), ())],
        lambda c, a, b: T.where(c, a, b), lambda c, a, b: E.where(c, a, b), gen=cond_and_values),
    row("where", [((3, 4), (3, 4))], lambda c, a: T.where(c, a, 0.5),
        lambda c, a: E.where(c, a, 0.5), gen=cond_and_values),
    row("clamp", UNARY_SHAPES, lambda a: a.clamp(-0.5, 0.7)),
    row("clamp", UNARY_SHAPES, lambda a: a.clamp(min=0.1)),
    row("clamp", UNARY_SHAPES, lambda a: a.clamp(max=0.1)),
    # ------------------------------------------------------------ elementwise
    row("exp", UNARY_SHAPES, lambda a: a.exp()),
    row("log", UNARY_SHAPES, lambda a: a.log(), gen=positive),
    row("log1p", UNARY_SHAPES, lambda a: a.log1p(), low=-0.8, high=3),
    row("expm1", UNARY_SHAPES, lambda a: a.expm1()),
    row("sqrt", UNARY_SHAPES, lambda a: a.sqrt(), gen=positive),
    row("rsqrt", UNARY_SHAPES, lambda a: a.rsqrt(), gen=positive),
    row("sin", UNARY_SHAPES, lambda a: a.sin()),
    row("cos", UNARY_SHAPES, lambda a: a.cos()),
    row("tanh", UNARY_SHAPES, lambda a: a.tanh()),
    row("sigmoid", UNARY_SHAPES, lambda a: a.sigmoid(), low=-8, high=8),
    row("relu", UNARY_SHAPES, lambda a: a.relu()),
    row("relu6", UNARY_SHAPES, lambda a: TF.relu6(a), lambda a: a.relu6(), low=-3, high=9),
    row("leaky_relu", UNARY_SHAPES, lambda a: TF.leaky_relu(a), lambda a: a.leaky_relu()),
    row("leaky_relu", UNARY_SHAPES, lambda a: TF.leaky_relu(a, 0.2),
        lambda a: a.leaky_relu(0.2)),
    row("elu", UNARY_SHAPES, lambda a: TF.elu(a), lambda a: a.elu()),
    row("elu", UNARY_SHAPES, lambda a: TF.elu(a, 0.5), lambda a: a.elu(0.5)),
    row("selu", UNARY_SHAPES, lambda a: TF.selu(a), lambda a: a.selu()),
    row("gelu", UNARY_SHAPES, lambda a: TF.gelu(a), lambda a: a.gelu(), low=-4, high=4),
    row("gelu", UNARY_SHAPES, lambda a: TF.gelu(a, approximate="tanh"),
        lambda a: a.gelu(approximate="tanh"), low=-4, high=4),
    row("silu", UNARY_SHAPES, lambda a: TF.silu(a), lambda a: a.silu()),
    row("softplus", UNARY_SHAPES, lambda a: TF.softplus(a), lambda a: a.softplus(), low=-30,
        high=30),
    row("softplus", UNARY_SHAPES, lambda a: TF.softplus(a, 2.0, 5.0),
        lambda a: a.softplus(2.0, 5.0), low=-5, high=5),
    row("hardtanh", UNARY_SHAPES, lambda a: TF.hardtanh(a), lambda a: a.hardtanh()),
    row("hardtanh", UNARY_SHAPES, lambda a: TF.hardtanh(a, -0.5, 1.5),
        lambda a: a.hardtanh(-0.5, 1.5)),
    row("cast", UNARY_SHAPES, lambda a: a.to(T.float64) * 2, lambda a: a.astype(E.float64) * 2),
    row("cast", UNARY_SHAPES, lambda a: a.to(T.float32) * 2, lambda a: a.float() * 2,
        dtypes=(np.float32,), gradcheck=False),
    row("cast", UNARY_SHAPES, lambda a: a.long(), lambda a: a.long(), **NO_GRAD),
    # ------------------------------------------------------------ reductions
    row("sum", RED_SHAPES + [((),), ((0, 3),)], lambda a: a.sum()),
    row("sum", RED_SHAPES + [((0, 3),)], lambda a: a.sum(0)),
    row("sum", [((2, 3, 4),)], lambda a: a.sum((0, 2), keepdim=True)),
    row("sum", [((2, 3, 4),)], lambda a: a.sum(-1)),
    row("mean", RED_SHAPES + [((),)], lambda a: a.mean()),
    row("mean", [((2, 3, 4),)], lambda a: a.mean((1, 2))),
    row("mean", [((2, 3, 4),)], lambda a: a.mean(1, keepdim=True)),
    row("prod", RED_SHAPES + [((),)], lambda a: a.prod(), low=0.5, high=1.5),
    row("prod", RED_SHAPES, lambda a: a.prod(1), gen=with_zeros),
    row("prod", [((2, 3, 4),)], lambda a: a.prod(-1, keepdim=True), gen=with_zeros),
    row("amax", RED_SHAPES, lambda a: a.amax()),
    row("amax", RED_SHAPES, lambda a: a.amax(1)),
    row("amax", [((2, 3, 4),)], lambda a: a.amax((0, 2), keepdim=True)),
    row("amax", RED_SHAPES, lambda a: a.amax(1), gen=ties, gradcheck=False),
    row("amin", RED_SHAPES, lambda a: a.amin(0)),
    row("amin", RED_SHAPES, lambda a: a.amin(), gen=ties, gradcheck=False),
    row("max", RED_SHAPES, lambda a: a.max()),
    row("max", RED_SHAPES, lambda a: a.max(1)),
    row("max", [((2, 3, 4),)], lambda a: a.max(-1, keepdim=True)),
    row("max", [((3, 4), (4,))], lambda a, b: a.max(b), lambda a, b: a.max(b)),
    row("max", RED_SHAPES, lambda a: a.max(), gen=ties, gradcheck=False),
    row("min", RED_SHAPES, lambda a: a.min()),
    row("min", RED_SHAPES, lambda a: a.min(0)),
    row("argmax", RED_SHAPES, lambda a: a.argmax(), **NO_GRAD),
    row("argmax", RED_SHAPES, lambda a: a.argmax(1), **NO_GRAD),
    row("argmax", [((2, 3, 4),)], lambda a: a.argmax(-1, keepdim=True), **NO_GRAD),
    row("argmin", RED_SHAPES, lambda a: a.argmin(0), **NO_GRAD),
    row("var", RED_SHAPES, lambda a: a.var()),
    row("var", RED_SHAPES, lambda a: a.var(1)),
    row("var", [((2, 3, 4),)], lambda a: a.var((0, 2), correction=0, keepdim=True)),
    row("std", RED_SHAPES, lambda a: a.std()),
    row("std", [((2, 3, 4),)], lambda a: a.std(1, correction=0)),
    row("norm", RED_SHAPES, lambda a: a.norm()),
    row("norm", RED_SHAPES, lambda a: a.norm(dim=1)),
    row("norm", [((2, 3, 4),)], lambda a: a.norm(p=1, dim=(1, 2)), gen=away_from_zero),
    row("norm", [((2, 3, 4),)], lambda a: a.norm(p=3, dim=-1, keepdim=True)),
    row("norm", [((2, 3, 4),)], lambda a: a.norm(p=float("inf"), dim=0)),
    row("logsumexp", RED_SHAPES, lambda a: a.logsumexp(1)),
    row("logsumexp", [((2, 3, 4),)], lambda a: a.logsumexp((0, 2), keepdim=True)),
    row("logsumexp", RED_SHAPES, lambda a: a.logsumexp(0), low=500, high=800),
    row("cumsum", RED_SHAPES, lambda a: a.cumsum(1)),
    row("cumsum", [((2, 3, 4),), ((5,),)], lambda a: a.cumsum(0)),
    row("softmax", RED_SHAPES, lambda a: a.softmax(-1)),
    row("softmax", [((2, 3, 4),)], lambda a: a.softmax(1)),
    row("log_softmax", RED_SHAPES, lambda a: a.log_softmax(-1)),
    row("log_softmax", [((2, 3, 4),)], lambda a: a.log_softmax(0), low=-50, high=50),
    # ------------------------------------------------------------ shape
    row("reshape", [((3, 4),)], lambda a: a.reshape(2, 6)),
    row("reshape", [((3, 4),)], lambda a: a.reshape((-1,))),
    row("reshape", [((),)], lambda a: a.reshape(1, 1)),
    row("reshape", [((2, 0),)], lambda a: a.reshape(0, 5)),
    row("reshape", [((3, 4),)], lambda a: a.view(4, 3)),
    row("flatten", [((2, 3, 4),)], lambda a: a.flatten()),
    row("flatten", [((2, 3, 4, 5),)], lambda a: a.flatten(1)),
    row("flatten", [((2, 3, 4, 5),)], lambda a: a.flatten(1, 2)),
    row("unflatten", [((2, 12),)], lambda a: a.unflatten(1, (3, 4))),
    row("squeeze", [((1, 3, 1),)], lambda a: a.squeeze()),
    row("squeeze", [((1, 3, 1),)], lambda a: a.squeeze(0)),
    row("squeeze", [((2, 3),)], lambda a: a.squeeze(1)),
    row("unsqueeze", [((2, 3),)], lambda a: a.unsqueeze(0)),
    row("unsqueeze", [((2, 3),)], lambda a: a.unsqueeze(-1)),
    row("unsqueeze", [((),)], lambda a: a.unsqueeze(0)),
    row("transpose", [((2, 3, 4),)], lambda a: a.transpose(0, 2)),
    row("transpose", [((2, 3),)], lambda a: a.T),
    row("transpose", [((2, 3, 4),)], lambda a: a.mT),
    row("t", [((2, 3),)], lambda a: a.t()),
    row("t", [((3,),)], lambda a: a.t()),
    row("permute", [((2, 3, 4),)], lambda a: a.permute(2, 0, 1)),
    row("permute", [((2, 3, 4),)], lambda a: a.permute(-1, 1, 0)),
    row("expand", [((3, 1),)], lambda a: a.expand(3, 4)),
    row("expand", [((3, 1),)], lambda a: a.expand(2, -1, 5)),
    row("broadcast_to", [((1, 4),), ((),)], lambda a: a.broadcast_to((3, 2, 4))
        if a.ndim else a.broadcast_to((2,))),
    row("repeat", [((2, 3),)], lambda a: a.repeat(2, 3)),
    row("repeat", [((2, 3),)], lambda a: a.repeat(2, 1, 2)),
    row("tile", [((2, 3),)], lambda a: a.tile((2,))),
    row("cat", [((2, 3), (4, 3))], lambda a, b: T.cat([a, b]), lambda a, b: E.cat([a, b])),
    row("cat", [((2, 3), (2, 1), (2, 0))], lambda a, b, c: T.cat([a, b, c], 1),
        lambda a, b, c: E.cat([a, b, c], 1)),
    row("stack", [((2, 3), (2, 3))], lambda a, b: T.stack([a, b]), lambda a, b: E.stack([a, b])),
    row("stack", [((2, 3), (2, 3))], lambda a, b: T.stack([a, b], -1),
        lambda a, b: E.stack([a, b], -1)),
    row("split", [((5, 3),)], lambda a: a.split(2)),
    row("split", [((5, 3),)], lambda a: a.split([1, 2], dim=1)),
    row("chunk", [((5, 3),)], lambda a: a.chunk(2)),
    row("chunk", [((4, 6),)], lambda a: a.chunk(3, dim=1)),
    row("pad", [((2, 3),)], lambda a: TF.pad(a, (1, 2)), lambda a: E.pad(a, (1, 2))),
    row("pad", [((2, 3, 4),)], lambda a: TF.pad(a, (1, 0, 2, 1), value=0.5),
        lambda a: E.pad(a, (1, 0, 2, 1), value=0.5)),
    row("flip", [((2, 3, 4),)], lambda a: a.flip(0)),
    row("flip", [((2, 3, 4),)], lambda a: a.flip((0, 2))),
    row("roll", [((2, 3, 4),)], lambda a: a.roll(1, 2)),
    row("roll", [((2, 3, 4),)], lambda a: a.roll((1, -2), (0, 1))),
    row("roll", [((2, 3),)], lambda a: a.roll(2)),
    row("tril", [((4, 4),), ((2, 3, 5),)], lambda a: a.tril()),
    row("tril", [((4, 5),)], lambda a: a.tril(-1)),
    row("triu", [((4, 4),), ((2, 3, 5),)], lambda a: a.triu()),
    row("triu", [((4, 5),)], lambda a: a.triu(1)),
    row("clone", UNARY_SHAPES, lambda a: a.clone() * 1.5),
    # ------------------------------------------------------------ indexing
    row("getitem", [((4, 5),)], lambda a: a[1]),
    row("getitem", [((4, 5),)], lambda a: a[1:3, ::2]),
    row("getitem", [((4, 5, 6),)], lambda a: a[..., 1]),
    row("getitem", [((4, 5),)], lambda a: a[None, :, -1]),
    row("getitem", [((4, 5),)], lambda a: a[::-1] if isinstance(a, E.Tensor) else a.flip(0)),
    row("getitem", [((4, 5),)], lambda a: a[[0, 2, 2, 3]]),
    row("getitem", [((4, 5),)], lambda a: a[[0, 0, 3], [1, 1, 4]]),
    row("getitem", [((4, 5),)], lambda a: a[:, T.tensor([4, 0, 4])] if isinstance(a, T.Tensor)
        else a[:, E.tensor([4, 0, 4])]),
    row("getitem", [((4, 5),)], lambda a: a[a > 0]),
    # an integer with an index array: torch selects first (NumPy would move the dims)
    row("getitem", [((2, 3, 4),)], lambda a: a[0, :, [1, 1, 3]]),
    row("getitem", [((2, 3, 4),)], lambda a: a[1, None, :, [0, 2]]),
    row("getitem", [((4, 5),)], lambda a: a[(a > 0).any(1) if isinstance(a, T.Tensor)
                                            else E.tensor((a.array > 0).any(1))]),
    row("gather", [((3, 4), (3, 2))], lambda a, i: a.gather(1, i), gen=values_and_index(1, 4)),
    row("gather", [((3, 4), (5, 4))], lambda a, i: a.gather(0, i), gen=values_and_index(0, 3)),
    row("gather", [((3, 4, 2), (2, 4, 1))], lambda a, i: a.gather(2, i),
        gen=values_and_index(2, 2)),
    row("scatter_add", [((3, 4), (2, 4), (2, 4))],
        lambda a, i, s: a.scatter_add(0, i, s), gen=value_index_src),
    row("scatter_add", [((4, 3), (4, 2), (4, 2))],
        lambda a, i, s: a.scatter_add(1, i, s), gen=value_index_src),
    row("index_select", [((4, 5), (3,))], lambda a, i: a.index_select(0, i),
        gen=values_and_index(0, 4)),
    row("index_select", [((4, 5), (6,))], lambda a, i: a.index_select(1, i),
        gen=values_and_index(1, 5)),
    row("masked_fill", [((3, 4), (3, 4)), ((3, 4), (4,))],
        lambda c, a: a.masked_fill(c, -1.5), gen=cond_and_values),
    row("one_hot", [((5,),), ((2, 3),)], lambda i: TF.one_hot(i, 6),
        lambda i: E.one_hot(i, 6), gen=ints(6), **NO_GRAD),
    row("one_hot", [((5,),)], lambda i: TF.one_hot(i), lambda i: E.one_hot(i), gen=ints(4),
        **NO_GRAD),
]


def all_rows() -> list[OpCase]:
    """This table plus the ROWS of every tests/op_rows_*.py (ops registered outside the core)."""
    rows = list(ROWS)
    for path in sorted(pathlib.Path(__file__).parent.glob("op_rows_*.py")):
        rows += importlib.import_module(f"tests.{path.stem}").ROWS
    return rows


CASES = [(case, shapes, dtype) for case in all_rows() for shapes in case.shapes
         for dtype in case.dtypes]


@pytest.mark.parametrize("case,shapes,dtype", CASES,
                         ids=[f"{c.name}-{s}-{np.dtype(d).name}" for c, s, d in CASES])
def test_op_matches_torch(case, shapes, dtype):
    helper_test_op(shapes, case.torch_fn, case.ember_fn, dtype=dtype, grad=case.grad, case=case)


GRADCHECKS = [case for case in all_rows() if case.grad and case.gradcheck]


@pytest.mark.parametrize("case", GRADCHECKS, ids=[c.name for c in GRADCHECKS])
def test_op_gradcheck(case):
    assert gradcheck_case(case, case.shapes[0])


def test_every_op_has_a_row():
    covered = {case.name for case in all_rows()}
    missing = sorted(set(ember.autograd.REGISTRY) - covered)
    assert not missing, f"ops without a row in the op table: {missing}"
    unknown = sorted(covered - set(ember.autograd.REGISTRY))
    assert not unknown, f"rows naming ops that are not registered: {unknown}"


def test_every_differentiable_op_is_gradchecked():
    from ember.autograd import Function
    checked = {case.name for case in GRADCHECKS}
    differentiable = {name for name, impl in ember.autograd.REGISTRY.items()
                      if not (isinstance(impl, type) and issubclass(impl, Function)
                              and not impl.differentiable)}
    assert not sorted(differentiable - checked), \
        sorted(differentiable - checked)


def test_at_least_80_ops():
    assert len(ember.autograd.REGISTRY) >= 80


@pytest.mark.parametrize("shape,dim", [((1,), None), ((3, 1), 1)])
def test_var_without_degrees_of_freedom_warns_as_torch_and_backward_stays_quiet(shape, dim):
    """torch: NaN, NaN gradients and a UserWarning. The backward used to warn from
    NumPy's ``inf * 0`` deep inside autograd; any RuntimeWarning is an error here."""
    theirs = torch.ones(shape, dtype=torch.float64, requires_grad=True)
    with pytest.warns(UserWarning, match="degrees of freedom"):
        expected = theirs.var(dim)
    expected.sum().backward()
    mine = ember.ones(*shape, dtype=ember.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.warns(UserWarning, match="degrees of freedom"):
            out = mine.var(dim)
        out.sum().backward()
    assert np.array_equal(np.isnan(out.array), np.isnan(expected.detach().numpy()))
    assert np.isnan(mine.grad.array).all() and np.isnan(theirs.grad.numpy()).all()
