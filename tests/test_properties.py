"""Hypothesis property tests: broadcasting binary ops, reductions over random dims, indexing."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ember
from tests.helpers import helper_test_op

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "maximum": lambda a, b: a.maximum(b),
    "pow": lambda a, b: a.abs() ** b,
}


@SETTINGS
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4,
                                                min_side=0, max_side=4),
       op=st.sampled_from(sorted(BINARY)), seed=st.integers(0, 2**16))
def test_binary_ops_broadcast_like_torch(shapes, op, seed):
    fn = BINARY[op]
    helper_test_op(shapes.input_shapes, fn, fn, dtype=np.float64, seed=seed)


@st.composite
def shape_and_dims(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    dims = draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1,
                         max_size=len(shape), unique_by=lambda d: d % len(shape)))
    return shape, tuple(dims), draw(st.booleans())


REDUCTIONS = {
    "sum": lambda x, d, k: x.sum(d, keepdim=k),
    "mean": lambda x, d, k: x.mean(d, keepdim=k),
    "amax": lambda x, d, k: x.amax(d, keepdim=k),
    "logsumexp": lambda x, d, k: x.logsumexp(d, keepdim=k),
    "var": lambda x, d, k: x.var(d, keepdim=k) if x.numel() > 1 else x.sum(d, keepdim=k),
    "prod": lambda x, d, k: x.prod(d[0], keepdim=k) if isinstance(x, torch.Tensor)
    else x.prod(d[0], keepdim=k),
}


@SETTINGS
@given(spec=shape_and_dims(), op=st.sampled_from(sorted(REDUCTIONS)), seed=st.integers(0, 2**16))
def test_reductions_over_random_dims_match_torch(spec, op, seed):
    shape, dims, keepdim = spec
    reduce = REDUCTIONS[op]
    helper_test_op([shape], lambda x: reduce(x, dims, keepdim), lambda x: reduce(x, dims, keepdim),
                   dtype=np.float64, seed=seed)


@st.composite
def index_for(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    parts = []
    for n in shape[:draw(st.integers(1, len(shape)))]:
        kind = draw(st.sampled_from(["int", "slice", "array"]))
        if kind == "int":
            parts.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            start = draw(st.none() | st.integers(-n, n))
            stop = draw(st.none() | st.integers(-n, n))
            step = draw(st.none() | st.integers(1, 3) | st.integers(-3, -1))
            parts.append(slice(start, stop, step))
        else:
            parts.append(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=6)))
    return shape, tuple(parts)


@SETTINGS
@given(spec=index_for(), seed=st.integers(0, 2**16))
def test_indexing_forward_and_scatter_add_gradient(spec, seed):
    shape, index = spec
    arrays = [p for p in index if isinstance(p, list)]
    if len(arrays) > 1:  # several integer arrays must broadcast together
        index = tuple(p[:1] if isinstance(p, list) else p for p in index)
    if any(isinstance(p, slice) and p.step is not None and p.step < 0 for p in index):
        return  # torch has no negative-step slicing; covered against NumPy below
    helper_test_op([shape], lambda x: x[index], lambda x: x[index], dtype=np.float64, seed=seed)


@SETTINGS
@given(spec=index_for(), seed=st.integers(0, 2**16))
def test_indexing_gradient_equals_numpy_scatter_add(spec, seed):
    shape, index = spec
    if sum(isinstance(p, list) for p in index) > 1:
        index = tuple(p[:1] if isinstance(p, list) else p for p in index)
    # torch's order (ember follows it): integers select first, then the rest applies to
    # what is left; NumPy would move a separated index array's dim to the front
    ints_first = tuple(p if isinstance(p, int) else slice(None) for p in index) + (...,)
    rest = tuple(np.asarray(p) if isinstance(p, list) else p for p in index
                 if not isinstance(p, int))
    data = np.random.default_rng(seed).standard_normal(shape)
    x = ember.tensor(data, dtype=ember.float64, requires_grad=True)
    out = x[index]
    np.testing.assert_array_equal(out.array, data[ints_first][rest])
    g = np.random.default_rng(seed + 1).standard_normal(out.shape)
    out.backward(g)
    expected = np.zeros(shape)
    np.add.at(expected[ints_first], rest, g)  # basic indexing: a view into expected
    np.testing.assert_allclose(x.grad.array, expected)
