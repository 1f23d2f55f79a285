"""``ember.onnx.load``: an ONNX model as an ``ember.nn.Module`` that runs and trains.

Initializers become parameters (floating ones, trainable) or buffers, under their
ONNX names: a dotted name such as ``features.0.weight`` becomes parameter
``weight`` of sub-module ``features.0``, so ``state_dict()`` keys are the
initializer names and a native ember twin's state dict loads into it (and back).
``forward`` runs the nodes in order with ember ops, so gradients reach every
parameter. Every unsupported op in the model is reported at once, at load time.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any

import numpy as np

from ember.nn.module import Module
from ember.nn.parameter import Parameter
from ember.onnx import ops_nn, ops_tensor  # noqa: F401  (registers the importers)
from ember.onnx.registry import (CHECKS, IMPORTERS, Node, OnnxImportError,
                                 OnnxUnsupportedError, constant)
from ember.tensor import Tensor

__all__ = ["load", "OnnxModule", "OnnxImportError", "OnnxUnsupportedError", "supported_ops"]

_DOMAINS = ("", "ai.onnx")
# inputs that hold statistics or settings, never trained: (op, input position)
_NOT_TRAINED = {("BatchNormalization", 3), ("BatchNormalization", 4), ("Clip", 1), ("Clip", 2),
                ("Resize", 1), ("Resize", 2), ("Dropout", 1), ("Pad", 2)}


def supported_ops() -> list[str]:
    """The ONNX op types the importer implements."""
    return sorted(IMPORTERS)


def load(model: Any) -> OnnxModule:
    """Load an ONNX model (a path or an ``onnx.ModelProto``) as an ember Module.

    >>> net = ember.onnx.load("/tmp/mlp.onnx")
    >>> net(ember.randn(5, 4)).shape
    (5, 2)
    """
    from ember.onnx.export import require_onnx

    onnx = require_onnx()
    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    return OnnxModule(model)


class OnnxModule(Module):
    """An ONNX graph run with ember ops. ``forward(*inputs)`` takes the graph's inputs in
    order and returns its output (a tuple when there are several)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        graph = model.graph
        opset = _default_opset(model)
        self._nodes = [_node(n, opset) for n in graph.node]
        _refuse_unsupported(self._nodes, graph)
        initialized = {t.name for t in graph.initializer}
        self._input_names = [i.name for i in graph.input if i.name not in initialized]
        self._output_names = [o.name for o in graph.output]
        self._state_names: dict[str, str] = {}  # ONNX name -> dotted path in this module
        frozen = _statistics(self._nodes)
        for tensor in graph.initializer:
            self._add_initializer(tensor, frozen)

    # ------------------------------------------------------------ state
    def _add_initializer(self, proto: Any, frozen: set) -> None:
        from onnx import numpy_helper

        array = np.array(numpy_helper.to_array(proto))
        path = _module_path(proto.name, self._state_names.values())
        owner, leaf = self._owner(path)
        if array.dtype.kind == "f" and proto.name not in frozen:
            owner.register_parameter(leaf, Parameter(array))
        else:
            owner.register_buffer(leaf, Tensor._make(array, False, None))
        self._state_names[proto.name] = path

    def _owner(self, path: str) -> tuple[Module, str]:
        """The sub-module that holds ``path``'s last part, created on the way."""
        *parents, leaf = path.split(".")
        owner: Module = self
        for part in parents:
            if part not in owner._modules:
                owner.add_module(part, Module())
            owner = owner._modules[part]
        return owner, leaf

    def _state(self, name: str) -> Tensor:
        owner, leaf = self._owner(self._state_names[name])
        found = owner._parameters.get(leaf)
        return found if found is not None else owner._buffers[leaf]

    # ------------------------------------------------------------ running
    def forward(self, *inputs: Any) -> Any:
        if len(inputs) != len(self._input_names):
            raise TypeError(f"OnnxModule: the graph takes {len(self._input_names)} inputs "
                            f"({', '.join(self._input_names)}), got {len(inputs)}")
        values: dict[str, Tensor | None] = {"": None}
        for name in self._state_names:
            values[name] = self._state(name)
        for name, value in zip(self._input_names, inputs):
            values[name] = value if isinstance(value, Tensor) else constant(value)
        for node in self._nodes:
            self._run(node, values)
        outputs = tuple(values[name] for name in self._output_names)
        return outputs[0] if len(outputs) == 1 else outputs

    @staticmethod
    def _run(node: Node, values: dict) -> None:
        try:
            args = [values[name] for name in node.inputs]
        except KeyError as err:
            raise node.fail(f"input {err} is not produced by any earlier node") from None
        while args and args[-1] is None:
            args.pop()
        result = IMPORTERS[node.op_type](node, args)
        results = result if isinstance(result, (list, tuple)) else [result]
        for name, value in zip(node.outputs, results):
            if name:
                values[name] = value

    def extra_repr(self) -> str:
        return (f"inputs={self._input_names}, outputs={self._output_names}, "
                f"nodes={len(self._nodes)}")


# ---------------------------------------------------------------- reading the graph
def _default_opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in _DOMAINS:
            return int(entry.version)
    return 1


def _node(proto: Any, opset: int) -> Node:
    from onnx import helper

    attrs = {}
    for a in proto.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode()
        elif hasattr(value, "dims"):  # a TensorProto attribute
            from onnx import numpy_helper
            value = np.array(numpy_helper.to_array(value))
        attrs[a.name] = value
    return Node(proto.op_type, proto.name or proto.output[0], list(proto.input),
                list(proto.output), attrs, opset, proto.domain)


def _refuse_unsupported(nodes: list[Node], graph: Any) -> None:
    """One error naming every unsupported op (with counts) and unsupported setting."""
    missing = Counter(n.op_type if n.domain in _DOMAINS else f"{n.domain}.{n.op_type}"
                      for n in nodes if n.domain not in _DOMAINS or n.op_type not in IMPORTERS)
    reasons = [f"{n.op_type} node {n.name!r}: {why}" for n in nodes
               if n.op_type in CHECKS and n.domain in _DOMAINS and (why := CHECKS[n.op_type](n))]
    reasons += _unsupported_values(graph)
    if not missing and not reasons:
        return
    parts = []
    if missing:
        parts.append("unsupported ops: " + ", ".join(f"{op} ({count})" for op, count in
                                                     sorted(missing.items())))
    if reasons:
        parts.append("unsupported settings: " + "; ".join(reasons))
    raise OnnxUnsupportedError("ember.onnx.load: the model cannot be imported: " +
                               ". ".join(parts))


_NUMPY_TYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                "uint16", "uint32", "uint64", "bool"}


def onnx_type_name(elem_type: int) -> str:
    """'float32', 'bfloat16', 'float8e4m3fn', ... for an ONNX data type code."""
    from onnx import TensorProto

    name = TensorProto.DataType.Name(elem_type).lower()
    return {"float": "float32", "double": "float64"}.get(name, name)


def _unsupported_values(graph: Any) -> list[str]:
    """Graph inputs/outputs that are not tensors of a type NumPy (and so ember) holds."""
    reasons = []
    for value in [*graph.input, *graph.output]:
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            reasons.append(f"graph value {value.name!r} is a {kind.replace('_type', '')}, not "
                           "a tensor")
        elif (name := onnx_type_name(value.type.tensor_type.elem_type)) not in _NUMPY_TYPES:
            reasons.append(f"graph value {value.name!r} holds {name} data")
    return reasons


def _statistics(nodes: list[Node]) -> set[str]:
    """Initializers fed only to inputs that hold statistics or settings (not trained)."""
    uses: dict[str, set] = {}
    for n in nodes:
        for i, name in enumerate(n.inputs):
            uses.setdefault(name, set()).add((n.op_type, i) in _NOT_TRAINED)
    return {name for name, frozen in uses.items() if frozen == {True}}


_BAD_PART = re.compile(r"[^0-9A-Za-z_]")
_RESERVED = set(dir(Module()))  # attribute names a parameter may not take


def _module_path(name: str, taken: Any) -> str:
    """A dotted attribute path for an initializer: its own name when each part is a plain
    identifier-like word, else one flat, cleaned name."""
    parts = name.split(".")
    if all(p and not _BAD_PART.search(p) and p not in _RESERVED for p in parts):
        path = name
    else:
        path = _BAD_PART.sub("_", name) or "tensor"
        if path in _RESERVED:
            path = f"_{path}"
    taken = set(taken)
    clash = any(path == t or path.startswith(t + ".") or t.startswith(path + ".") for t in taken)
    while clash:
        path = path.replace(".", "_") + "_"
        clash = any(path == t or t.startswith(path + ".") for t in taken)
    return path
