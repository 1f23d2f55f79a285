"""ONNX's backend node tests through ember's importer: every case of every imported op
passes, or is refused by the importer with a reason (listed in docs/onnx.md)."""

from __future__ import annotations

import onnx
import pytest

from ember.onnx import conformance

CASES = {case.name: case for case in conformance.node_cases()}
BRIEF_OPS = ("Gemm MatMul Add Sub Mul Div Pow Sqrt Exp Log Relu LeakyRelu Sigmoid Tanh Elu Gelu "
             "Softmax LogSoftmax Conv ConvTranspose MaxPool AveragePool GlobalAveragePool "
             "BatchNormalization Flatten Reshape Transpose Concat Squeeze Unsqueeze Dropout "
             "Identity ReduceMean ReduceSum Clip Constant Shape Gather").split()


def test_every_required_op_has_cases():
    ops = {case.model.graph.node[0].op_type for case in CASES.values()}
    assert set(BRIEF_OPS) <= ops
    assert len(CASES) > 500


@pytest.mark.parametrize("name", list(CASES))
def test_node_case(name):
    result = conformance.run_case(CASES[name])
    if result.status == "skipped":
        pytest.skip(result.reason)
    assert result.status == "passed", result.reason


def test_docs_report_is_current():
    from tools.onnx_report import DOC, committed_report

    committed = committed_report(DOC.read_text())
    if f"onnx {onnx.__version__}:" not in committed:
        pytest.skip(f"docs/onnx.md was generated with another onnx version than "
                    f"{onnx.__version__}")
    results = [conformance.run_case(case) for case in CASES.values()]
    assert conformance.markdown_report(results, onnx.__version__) == committed, \
        "docs/onnx.md is out of date: run python -m tools.onnx_report"
