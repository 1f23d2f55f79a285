"""The fused nn ops' rows (tests/op_rows_nn.py) against torch, and gradcheck."""

from __future__ import annotations

import pytest

from tests.helpers import gradcheck_case, helper_test_op
from tests.op_rows_nn import ROWS

CASES = [(case, shapes, dtype) for case in ROWS for shapes in case.shapes for dtype in case.dtypes]


@pytest.mark.parametrize("case,shapes,dtype", CASES,
                         ids=[f"{c.name}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_nn_op_matches_torch(case, shapes, dtype):
    helper_test_op(shapes, case.torch_fn, case.ember_fn, dtype=dtype, grad=case.grad, case=case)


GRADCHECKS = [case for case in ROWS if case.grad and case.gradcheck]


@pytest.mark.parametrize("case", GRADCHECKS,
                         ids=[f"{c.name}-{i}" for i, c in enumerate(GRADCHECKS)])
def test_nn_op_gradcheck(case):
    assert gradcheck_case(case, case.shapes[0])
