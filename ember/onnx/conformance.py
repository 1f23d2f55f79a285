"""ONNX's own backend node tests, run through ember's importer.

The ``onnx`` package defines one test case per op feature (a one-node model, its
inputs and the expected outputs). ``node_cases`` collects those whose node is an
op ember imports; ``run_case`` loads each with ``ember.onnx.load`` and compares
every output at the case's tolerance (ONNX's defaults: rtol 1e-3, atol 1e-7).
A case is *skipped* only when the importer refuses it with OnnxUnsupportedError
(the reason is its message) or its outputs are random; anything else that does not
match is a failure. ``tools/onnx_report.py`` writes the summary to docs/onnx.md.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ember.onnx.load import OnnxModule, supported_ops
from ember.onnx.registry import OnnxUnsupportedError, constant

__all__ = ["node_cases", "run_case", "CaseResult", "RANDOM_OUTPUTS", "markdown_report"]

RANDOM_OUTPUTS = {
    "test_training_dropout": "training-mode dropout draws a random mask (ember's generator)",
    "test_training_dropout_mask": "training-mode dropout draws a random mask (ember's generator)",
    "test_training_dropout_default": "training-mode dropout draws a random mask "
                                     "(ember's generator)",
    "test_training_dropout_default_mask": "training-mode dropout draws a random mask "
                                          "(ember's generator)",
}


@dataclass
class CaseResult:
    name: str
    op_type: str
    status: str  # "passed", "skipped" or "failed"
    reason: str = ""


# ---------------------------------------------------------------- collecting
def _module_names(op_type: str) -> list[str]:
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", op_type).lower()
    return list(dict.fromkeys([op_type.lower(), snake, op_type.lower() + "_"]))


def node_cases(op_types: Any = None) -> list:
    """ONNX's node test cases (``onnx.backend.test.case.TestCase``) whose one node has
    one of ``op_types`` (default: every op ember imports), in definition order."""
    from onnx.backend.test.case import node as cases

    wanted = set(op_types or supported_ops())
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for op in sorted(wanted):
            for module in _module_names(op):
                try:
                    importlib.import_module(f"onnx.backend.test.case.node.{module}")
                except ModuleNotFoundError:
                    continue
    return [c for c in cases._NodeTestCases if c.model is not None and
            len(c.model.graph.node) == 1 and c.model.graph.node[0].op_type in wanted]


# ---------------------------------------------------------------- running
def run_case(case: Any) -> CaseResult:
    """Import one case's model, run every data set, compare every output."""
    op = case.model.graph.node[0].op_type
    if case.name in RANDOM_OUTPUTS:
        return CaseResult(case.name, op, "skipped", RANDOM_OUTPUTS[case.name])
    try:
        module = OnnxModule(case.model)
    except OnnxUnsupportedError as err:
        return CaseResult(case.name, op, "skipped", _short(err))
    try:
        for inputs, expected in case.data_sets:
            _check(module, inputs, expected, case.rtol, case.atol)
    except OnnxUnsupportedError as err:
        return CaseResult(case.name, op, "skipped", _short(err))
    except Exception as err:  # a wrong answer or a crash: both are failures
        return CaseResult(case.name, op, "failed", f"{type(err).__name__}: {err}")
    return CaseResult(case.name, op, "passed")


def _check(module: OnnxModule, inputs: list, expected: list, rtol: float, atol: float) -> None:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        got = module(*[constant(_array(a)) for a in inputs])
    got = list(got) if isinstance(got, tuple) else [got]
    for i, (g, e) in enumerate(zip(got, expected)):
        e = _array(e)
        if g.array.dtype != e.dtype:
            raise AssertionError(f"output {i}: dtype {g.array.dtype}, expected {e.dtype}")
        np.testing.assert_allclose(g.array, e, rtol=rtol, atol=atol,
                                   err_msg=f"output {i}")


def _array(value: Any) -> np.ndarray:
    """A case's input or output: a NumPy array, or a TensorProto for types NumPy lacks."""
    if hasattr(value, "dims"):
        from onnx import numpy_helper
        return np.asarray(numpy_helper.to_array(value))
    return np.asarray(value)


def _short(err: Exception) -> str:
    text = str(err)
    return text.split(": the model cannot be imported: ", 1)[-1]


# ---------------------------------------------------------------- report
def markdown_report(results: list[CaseResult], onnx_version: str) -> str:
    """The per-op table and the skipped cases, as docs/onnx.md shows them."""
    by_op: dict[str, list] = defaultdict(list)
    for r in results:
        by_op[r.op_type].append(r)
    lines = [f"Run with onnx {onnx_version}: {len(results)} cases of "
             f"{len(by_op)} op types.", "",
             "| op | passed | skipped | failed | total |", "|---|---:|---:|---:|---:|"]
    for op in sorted(by_op):
        rs = by_op[op]
        count = {s: sum(r.status == s for r in rs) for s in ("passed", "skipped", "failed")}
        lines.append(f"| {op} | {count['passed']} | {count['skipped']} | {count['failed']} | "
                     f"{len(rs)} |")
    total = {s: sum(r.status == s for r in results) for s in ("passed", "skipped", "failed")}
    lines.append(f"| **all** | {total['passed']} | {total['skipped']} | {total['failed']} | "
                 f"{len(results)} |")
    lines += ["", "Skipped cases and why:", "", "| case | reason |", "|---|---|"]
    lines += [f"| {r.name} | {r.reason.replace('|', '/')} |" for r in results
              if r.status == "skipped"]
    failed = [r for r in results if r.status == "failed"]
    if failed:
        lines += ["", "Failed cases:", ""] + [f"- {r.name}: {r.reason[:200]}" for r in failed]
    return "\n".join(lines) + "\n"

