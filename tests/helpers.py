"""Shared test helpers: compare an ember op with its torch twin, forward and backward.

``helper_test_op(shapes, torch_fn, ember_fn)`` builds random inputs of the given
shapes, runs both functions, and checks the output and every input's gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import ember

TOL = {np.float64: dict(rtol=1e-7, atol=1e-10), np.float32: dict(rtol=1e-5, atol=1e-6)}


@dataclass
class OpCase:
    """One row of an op table.

    name: the op's registry name (the completeness test matches rows to ops).
    shapes: a list of input-shape tuples, one tuple of shapes per case.
    low/high: range of the uniform random inputs; ``gen`` overrides it.
    grad: compare gradients (False for ops without one).
    gradcheck: also run ember.autograd.gradcheck on the first shape set.
    """

    name: str
    shapes: Sequence[Sequence[tuple]]
    torch_fn: Callable
    ember_fn: Callable
    low: float = -2.0
    high: float = 2.0
    grad: bool = True
    gradcheck: bool = True
    gen: Callable | None = None
    dtypes: tuple = (np.float64, np.float32)
    tol: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


def make_inputs(case: OpCase, shapes: Sequence[tuple], dtype: Any, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    if case.gen is not None:
        return [np.asarray(a, dtype=dtype) if np.asarray(a).dtype.kind == "f" else np.asarray(a)
                for a in case.gen(rng, shapes)]
    return [rng.uniform(case.low, case.high, size=s).astype(dtype) for s in shapes]


def _as_list(out: Any) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def assert_close(actual: Any, expected: Any, dtype: Any, what: str, **tol: Any) -> None:
    opts = {**TOL[dtype], **tol}
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64),
                               np.asarray(expected, dtype=np.float64),
                               err_msg=what, equal_nan=True, **opts)


def helper_test_op(shapes: Sequence[tuple], torch_fn: Callable, ember_fn: Callable,
                   dtype: Any = np.float64, grad: bool = True, case: OpCase | None = None,
                   seed: int = 0) -> None:
    """Forward outputs and input gradients of ember_fn and torch_fn must match."""
    case = case or OpCase("adhoc", [shapes], torch_fn, ember_fn, grad=grad)
    arrays = make_inputs(case, shapes, dtype, seed)
    floating = [a.dtype.kind == "f" for a in arrays]
    t_in = [torch.tensor(a, requires_grad=grad and f) for a, f in zip(arrays, floating)]
    e_in = [ember.tensor(a.copy(), dtype=a.dtype, requires_grad=grad and f)
            for a, f in zip(arrays, floating)]
    t_out, e_out = _as_list(torch_fn(*t_in)), _as_list(ember_fn(*e_in))
    assert len(t_out) == len(e_out), f"{case.name}: {len(e_out)} outputs, torch has {len(t_out)}"
    for i, (t, e) in enumerate(zip(t_out, e_out)):
        assert tuple(e.shape) == tuple(t.shape), \
            f"{case.name} output {i}: shape {e.shape}, torch {tuple(t.shape)}"
        assert_close(e.array, t.detach().numpy(), dtype, f"{case.name} forward {i}", **case.tol)
    if not grad:
        return
    rng = np.random.default_rng(seed + 1)
    pairs = [(t, e) for t, e in zip(t_out, e_out) if t.requires_grad]
    assert all(e.requires_grad for _, e in pairs), f"{case.name}: output does not require grad"
    if not pairs:
        return
    ups = [rng.standard_normal(tuple(t.shape)).astype(dtype) for t, _ in pairs]
    torch.autograd.backward([t for t, _ in pairs], [torch.tensor(u) for u in ups])
    total = sum(((e * ember.tensor(u, dtype=u.dtype)).sum() for (_, e), u in zip(pairs, ups)))
    total.backward()
    for i, (t, e) in enumerate(zip(t_in, e_in)):
        if not t.requires_grad:
            continue
        expected = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
        actual = e.grad.array if e.grad is not None else np.zeros(e.shape)
        assert_close(actual, expected, dtype, f"{case.name} grad of input {i}", **case.tol)


def gradcheck_case(case: OpCase, shapes: Sequence[tuple], seed: int = 0) -> bool:
    arrays = make_inputs(case, shapes, np.float64, seed)
    inputs = [ember.tensor(a, dtype=a.dtype, requires_grad=a.dtype.kind == "f") for a in arrays]
    return ember.autograd.gradcheck(case.ember_fn, inputs)
