"""``ember.onnx.export``: trace a model once and write its graph as ONNX.

The model runs once on the example input in eval mode, with graph recording on;
the recorded graph is walked back from the output. Every node is an op instance
(``tensor.grad_fn``) that writes its own ONNX form (``to_onnx``, kept in the op's
class). Parameters and buffers become initializers named as in ``state_dict``;
any other leaf the graph reads is a constant initializer.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ember.autograd import Function, enable_grad, no_grad
from ember.onnx import forms  # noqa: F401  (gives composed functions their ONNX forms)
from ember.onnx.builder import GraphBuilder, OnnxExportError, onnx_dtype
from ember.tensor import Tensor

__all__ = ["export", "OnnxExportError", "MIN_OPSET"]

MIN_OPSET = 13  # Squeeze/Unsqueeze/ReduceSum take axes as inputs from here on


def export(model: Any, example_input: Any, path: str | os.PathLike | None,
           opset_version: int = 17, dynamic_batch: bool = True,
           input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
           check: bool = True) -> Any:
    """Trace ``model`` on ``example_input`` (a tensor or a tuple of them) and save the
    ONNX model to ``path`` (None: only return it). Returns the ``onnx.ModelProto``.

    ``dynamic_batch`` makes dim 0 of the inputs and outputs symbolic ('batch').
    ``check`` re-runs the written graph with ember's importer on a second input (at
    another batch size when dynamic) and raises OnnxExportError if it does not
    reproduce the model: tracing cannot see computations the graph does not record
    (comparisons, argmax, integer casts of the input).

    >>> model = ember.nn.Sequential(ember.nn.Linear(4, 2), ember.nn.ReLU())
    >>> proto = ember.onnx.export(model, ember.randn(3, 4), "/tmp/mlp.onnx")
    >>> [n.op_type for n in proto.graph.node]
    ['Gemm', 'Relu']
    """
    onnx = require_onnx()
    _check_opset(opset_version, onnx)
    inputs = _as_tuple(example_input, "example_input")
    input_names = _names(input_names, len(inputs), "input")
    outputs, traced_inputs = _trace(model, inputs)
    output_names = _names(output_names, len(outputs), "output")
    batch = int(inputs[0].shape[0]) if dynamic_batch and inputs[0].ndim else None
    proto = _build(model, traced_inputs, outputs, input_names, output_names, opset_version,
                   batch)
    onnx.checker.check_model(proto, full_check=True)
    if check:
        _verify(model, proto, inputs, batch)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto


# ---------------------------------------------------------------- tracing
def require_onnx() -> Any:
    """The onnx package, or an ImportError that says how to install it."""
    try:
        import onnx
    except ImportError:
        raise ImportError("ember.onnx needs the onnx package: pip install onnx (or "
                          "pip install ember[onnx], which adds onnxruntime)") from None
    return onnx


def _check_opset(opset: int, onnx: Any) -> None:
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= int(opset) <= newest:
        raise ValueError(f"ember.onnx.export: opset_version must be in [{MIN_OPSET}, {newest}], "
                         f"got {opset}")


def _as_tuple(value: Any, what: str) -> tuple:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not values or not all(isinstance(v, Tensor) for v in values):
        raise TypeError(f"ember.onnx.export: {what} must be a Tensor or a tuple of Tensors, got "
                        f"{type(value).__name__}")
    return values


def _names(names: Sequence[str] | None, count: int, stem: str) -> list[str]:
    if names is None:
        return [stem] if count == 1 else [f"{stem}_{i}" for i in range(count)]
    names = list(names)
    if len(names) != count or len(set(names)) != count:
        raise ValueError(f"ember.onnx.export: expected {count} distinct {stem} names, got "
                         f"{names}")
    return names


@contextlib.contextmanager
def _tracing(model: Any) -> Iterator[None]:
    """Eval mode, every parameter requiring grad (so every op is recorded) and composed
    functions with an ONNX form recorded as one node; all restored after."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    patched = traced_functions()
    model.eval()
    try:
        for p, _ in flags:
            p.requires_grad = True
        for namespace, name, fn in patched:
            setattr(namespace, name, _recording(fn))
        with enable_grad():
            yield
    finally:
        for namespace, name, fn in patched:
            setattr(namespace, name, fn)
        for p, flag in flags:
            p.requires_grad = flag
        model.train(was_training)


def traced_functions() -> list[tuple[Any, str, Callable]]:
    """(namespace, name, function) for each composed function with an ONNX form
    (a ``to_onnx`` attribute) in ``ember.nn.functional`` and ``ember``."""
    import ember
    from ember.nn import functional

    return [(namespace, name, fn) for namespace in (functional, ember)
            for name, fn in list(vars(namespace).items())
            if inspect.isfunction(fn) and hasattr(fn, "to_onnx")]


class _Slot:
    """Marks where a tensor argument of a recorded call sits among the node's inputs."""

    def __init__(self, index: int) -> None:
        self.index = index


class _Call(Function):
    """One call of a composed function, recorded as a single graph node while tracing."""

    arity = None

    def to_onnx(self, g: GraphBuilder, inputs: list, output: str) -> None:
        args = {k: inputs[v.index] if isinstance(v, _Slot) else v for k, v in self.args.items()}
        self.fn.to_onnx(g, output, args)

    @classmethod
    def record(cls, fn: Callable, arguments: dict, out: Tensor) -> Tensor:
        node, parents, args = cls(), [], {}
        for key, value in arguments.items():
            if isinstance(value, Tensor):
                args[key] = _Slot(len(parents))
                parents.append(value)
            else:
                args[key] = value
        node.fn, node.name, node.args = fn, fn.__name__, args
        node.parents, node.needs_input_grad = parents, [False] * len(parents)
        node.attrs = ((), arguments)
        return Tensor._make(out.array, True, node)


def _recording(fn: Callable) -> Callable:
    signature = inspect.signature(fn)
    applies = getattr(fn, "onnx_applies", None)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if applies is not None and not applies(*args, **kwargs):
            return fn(*args, **kwargs)  # this call exports as the ops it is made of
        with no_grad():
            out = fn(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return _Call.record(fn, dict(bound.arguments), out)
    return wrapper


def _trace(model: Any, inputs: tuple) -> tuple[list[Tensor], list[Tensor]]:
    traced = [Tensor._make(t.array.copy(), t.dtype.kind == "f", None) for t in inputs]
    with _tracing(model):
        out = model(*traced)
    outputs = list(out) if isinstance(out, (tuple, list)) else [out]
    if not outputs or not all(isinstance(o, Tensor) for o in outputs):
        raise OnnxExportError("ember.onnx.export: the model must return a Tensor or a tuple of "
                              f"Tensors, got {type(out).__name__}")
    return outputs, traced


def _topological(outputs: Sequence[Tensor]) -> tuple[list, dict]:
    """The graph's op nodes, inputs before users, and each node's output tensor."""
    order, seen, produced = [], set(), {}
    stack = [(o.grad_fn, False) for o in outputs if o.grad_fn is not None]
    for o in outputs:
        if o.grad_fn is not None:
            produced[id(o.grad_fn)] = o
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
            continue
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        stack.append((fn, True))
        for parent in fn.parents:
            if parent.grad_fn is not None:
                produced[id(parent.grad_fn)] = parent
                if id(parent.grad_fn) not in seen:
                    stack.append((parent.grad_fn, False))
    return order, produced


def _missing_forms(order: list) -> None:
    missing = Counter(fn.name for fn in order if not hasattr(fn, "to_onnx"))
    if missing:
        listed = ", ".join(f"{name} ({n})" for name, n in sorted(missing.items()))
        raise OnnxExportError(f"ember.onnx.export: these ops have no ONNX form: {listed}. "
                              "Give each op class a to_onnx(self, g, inputs, output) method.")


# ---------------------------------------------------------------- graph
class _Namer:
    """ONNX names for the graph's leaves: inputs, parameters/buffers, constants."""

    def __init__(self, g: GraphBuilder, model: Any, inputs: list, input_names: list) -> None:
        self.g = g
        self.names = {id(t): n for t, n in zip(inputs, input_names)}
        self.state = {}
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if t is not None:
                self.state.setdefault(id(t), (name, t))
                self.state.setdefault(id(t.array), (name, t))
        self.keep = []  # the constant tensors named, so their ids stay unique

    def leaf(self, t: Tensor) -> str:
        if id(t) in self.names:
            return self.names[id(t)]
        hit = self.state.get(id(t)) or self.state.get(id(t.array))
        if hit is not None and hit[0] not in self.g.initializers:
            name = self.g.const(hit[1].array, name=hit[0])
        elif hit is not None:
            name = hit[0]
        else:
            name = self.g.const(t.array)
        self.names[id(t)] = name
        self.keep.append(t)
        return name


def _build(model: Any, inputs: list, outputs: list, input_names: list, output_names: list,
           opset: int, batch: int | None) -> Any:
    from onnx import helper, numpy_helper

    order, produced = _topological(outputs)
    _missing_forms(order)
    g = GraphBuilder(opset, batch)
    for t, name in zip(inputs, input_names):
        g.note(name, t.shape, t.dtype, batch is not None and t.ndim > 0 and t.shape[0] == batch)
    namer = _Namer(g, model, inputs, input_names)
    for p in model.parameters():  # parameters first, in model order
        namer.leaf(p)
    out_of = {id(o.grad_fn): n for o, n in zip(outputs, output_names) if o.grad_fn is not None}
    node_out: dict[int, str] = {}
    for fn in order:
        in_names = [node_out[id(p.grad_fn)] if p.grad_fn is not None else namer.leaf(p)
                    for p in fn.parents]
        out_name = out_of.get(id(fn)) or g.fresh(fn.name)
        result = produced[id(fn)]
        batched = any(g.is_batched(n) for n in in_names) and result.ndim > 0 and \
            result.shape[0] == batch
        g.note(out_name, result.shape, result.dtype, batched)
        fn.to_onnx(g, in_names, out_name)
        node_out[id(fn)] = out_name
    _leaf_outputs(g, namer, outputs, output_names, node_out)
    graph = helper.make_graph(
        g.nodes, type(model).__name__,
        [_value_info(g, n) for n in input_names], [_value_info(g, n) for n in output_names],
        [numpy_helper.from_array(np.array(a, order="C"), n) for n, a in g.initializers.items()
         if n not in input_names])
    return _model(graph, opset)


def _leaf_outputs(g: GraphBuilder, namer: _Namer, outputs: list, names: list,
                  node_out: dict) -> None:
    """Outputs that are not the result of their own node (a leaf, or one node's output
    returned twice) get an Identity node."""
    used = set()
    for o, name in zip(outputs, names):
        source = node_out.get(id(o.grad_fn)) if o.grad_fn is not None else namer.leaf(o)
        if source != name or name in used:
            g.note(name, o.shape, o.dtype, g.is_batched(source))
            g.node("Identity", [source], name)
        used.add(name)


def _value_info(g: GraphBuilder, name: str) -> Any:
    from onnx import helper

    shape = list(g.shape(name))
    if g.is_batched(name):
        shape[0] = "batch"
    return helper.make_tensor_value_info(name, onnx_dtype(g.dtype(name)), shape)


def _model(graph: Any, opset: int) -> Any:
    import onnx
    from onnx import helper

    import ember

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="ember", producer_version=ember.__version__)
    # the oldest IR version that holds this opset, so older runtimes can read the file
    model.ir_version = min(onnx.IR_VERSION,
                           helper.find_min_ir_version_for([helper.make_opsetid("", opset)]))
    return model


# ---------------------------------------------------------------- self-check
def _second_input(t: Tensor, batch: int | None) -> Tensor:
    rng = np.random.default_rng(1234)
    array = t.array
    if batch is not None and array.ndim and array.shape[0] == batch:
        array = np.concatenate([array, array[:1]], axis=0)  # one more sample
    if array.dtype.kind == "f":
        scale = float(np.abs(t.array).max()) if t.array.size else 1.0
        array = (rng.standard_normal(array.shape) * (scale or 1.0)).astype(array.dtype)
    return Tensor._make(array, False, None)


def _verify(model: Any, proto: Any, inputs: tuple, batch: int | None) -> None:
    from ember.onnx.load import load

    imported = load(proto)
    was_training = model.training
    model.eval()
    try:
        for trial in (inputs, tuple(_second_input(t, batch) for t in inputs)):
            with no_grad():
                expected = model(*trial)
                try:
                    got = imported(*trial)
                except Exception as err:  # e.g. a constant of the traced batch size
                    raise OnnxExportError(_MISMATCH.format(shapes=_shapes(trial),
                                                           what=f"fails: {err}")) from err
            _compare(expected, got, trial)
    finally:
        model.train(was_training)


_MISMATCH = ("ember.onnx.export: the exported graph does not reproduce the model on an input "
             "of shape {shapes} ({what}). The model's output depends on something tracing "
             "cannot record: a comparison, argmax or integer cast of the input, a Python branch "
             "on its values, or a shape that does not follow the batch size (pass "
             "dynamic_batch=False if it is the batch size).")


def _shapes(trial: tuple) -> str:
    return ", ".join(str(tuple(t.shape)) for t in trial)


def _compare(expected: Any, got: Any, trial: tuple) -> None:
    expected = list(expected) if isinstance(expected, (tuple, list)) else [expected]
    got = list(got) if isinstance(got, (tuple, list)) else [got]
    for e, o in zip(expected, got):
        a, b = e.array, o.array
        scale = float(np.abs(a).max()) if a.size else 0.0
        if a.shape != b.shape or not np.allclose(b, a, rtol=1e-4, atol=1e-5 * max(scale, 1.0),
                                                 equal_nan=True):
            raise OnnxExportError(_MISMATCH.format(
                shapes=_shapes(trial), what=f"output of shape {b.shape}, expected {a.shape}"
                if a.shape != b.shape else "different values"))
