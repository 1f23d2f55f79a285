"""``ember.summary``: one line per layer with its output shape, parameters, FLOPs and memory.

It runs one forward pass (eval mode, no gradients, an all-zeros input, so no
random state is drawn and no BatchNorm statistic moves) with a forward hook on
every leaf module, as torchinfo does, and names layers by their dotted path.

FLOPs convention: a multiply-add counts as 2 FLOPs, and each bias add as 1.
Linear: ``2 * in * out + out`` per row; Conv: ``2 * (C_in / groups) * k_h * k_w``
per output element plus 1 for the bias; ConvTranspose: ``2 * (C_out / groups) *
k_h * k_w`` per input element plus the bias adds; Bilinear: ``2 * in1 * in2 * out
+ out`` per row. Other layers (activations, pooling, normalisation, dropout) are
counted as 0: they are a small share next to the matrix products.

>>> info = ember.summary(ember.models.build("lenet5"), (1, 1, 28, 28))
>>> info.total_params, info.flops
(61706, 839558)
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import IO, Any

import ember
from ember import dtypes
from ember.tensor import Tensor

__all__ = ["summary", "ModelSummary", "LayerInfo", "layer_flops"]


@dataclass
class LayerInfo:
    """One row: a leaf module's call."""

    name: str
    kind: str
    output_shape: tuple | list
    params: int
    flops: int
    activation_bytes: int
    repeated: bool = False  # a module called again (shared weights): params counted once


def _outputs(output: Any) -> list[Tensor]:
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _outputs(item)]
    return []


def _conv_flops(module: Any, inputs: tuple, output: Tensor) -> int:
    per_window = 2 * math.prod(module.kernel_size)
    if getattr(module, "transposed", False):
        in_elements = inputs[0].numel()  # each input element meets C_out/groups kernels
        macs = per_window * (module.out_channels // module.groups) * in_elements
    else:
        macs = per_window * (module.in_channels // module.groups) * output.numel()
    return macs + (output.numel() if module.bias is not None else 0)


def layer_flops(module: Any, inputs: tuple, output: Any) -> int:
    """The FLOPs of one leaf module's call (see the module docstring for the convention)."""
    from ember import nn
    out = _outputs(output)
    if not out:
        return 0
    y = out[0]
    bias = getattr(module, "bias", None) is not None
    if isinstance(module, nn.Linear):
        rows = y.numel() // module.out_features
        return rows * (2 * module.in_features * module.out_features
                       + (module.out_features if bias else 0))
    if isinstance(module, nn.Bilinear):
        rows = y.numel() // module.out_features
        return rows * (2 * module.in1_features * module.in2_features * module.out_features
                       + (module.out_features if bias else 0))
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
        return _conv_flops(module, inputs, y)
    return 0


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return f"{n:,.2f} GiB"


def _shape_text(shape: tuple | list) -> str:
    if isinstance(shape, list):
        return ", ".join(str(s) for s in shape)
    return str(tuple(shape))


def _row(cells: tuple[str, ...], widths: list[int]) -> str:
    """Names and shapes left-aligned, numbers right-aligned."""
    return "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                     for i, (cell, w) in enumerate(zip(cells, widths)))


class ModelSummary:
    """What ``summary`` measured: ``rows`` (LayerInfo) and the totals; ``str()`` is the table."""

    def __init__(self, model: Any, input_shape: tuple, input_dtype: Any,
                 rows: list[LayerInfo]) -> None:
        params = list(model.parameters())
        self.model_name = type(model).__name__
        self.input_shape, self.input_dtype, self.rows = tuple(input_shape), input_dtype, rows
        self.total_params = sum(p.numel() for p in params)
        self.trainable_params = sum(p.numel() for p in params if p.requires_grad)
        self.param_bytes = sum(p.array.nbytes for p in params)
        self.flops = sum(row.flops for row in rows)
        self.activation_bytes = sum(row.activation_bytes for row in rows)

    def _table_rows(self) -> list[tuple[str, ...]]:
        return [(f"{row.name} ({row.kind})", _shape_text(row.output_shape),
                 "(shared)" if row.repeated else f"{row.params:,}", f"{row.flops:,}",
                 _bytes(row.activation_bytes)) for row in self.rows]

    def __str__(self) -> str:
        header = ("Layer (type)", "Output shape", "Params", "FLOPs", "Activations")
        body = self._table_rows()
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        rule = "=" * (sum(widths) + 2 * (len(widths) - 1))
        lines = [_row(header, widths), rule, *(_row(row, widths) for row in body), rule]
        return "\n".join(lines + self._totals())

    def _totals(self) -> list[str]:
        return [
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.total_params - self.trainable_params:,}",
            f"FLOPs per forward pass of {self.input_shape}: {self.flops:,} "
            "(multiply-add = 2 FLOPs, + bias adds)",
            f"Activation memory (layer outputs): {_bytes(self.activation_bytes)}",
            f"Parameter memory: {_bytes(self.param_bytes)}",
        ]

    __repr__ = __str__


class _Recorder:
    """Forward hooks on every leaf module, recording one LayerInfo per call."""

    def __init__(self, model: Any) -> None:
        self.rows: list[LayerInfo] = []
        self.seen: set[int] = set()
        self.handles = [module.register_forward_hook(self._hook(name or type(module).__name__))
                        for name, module in model.named_modules()
                        if not any(True for _ in module.children())]

    def _hook(self, name: str) -> Any:
        def record(module: Any, inputs: tuple, output: Any) -> None:
            out = _outputs(output)
            shapes = [tuple(t.shape) for t in out]
            repeated = id(module) in self.seen
            self.seen.add(id(module))
            params = 0 if repeated else sum(p.numel() for p in module.parameters())
            self.rows.append(LayerInfo(
                name, type(module).__name__, shapes[0] if len(shapes) == 1 else shapes, params,
                layer_flops(module, inputs, output), sum(t.array.nbytes for t in out),
                repeated))
        return record

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def summary(model: Any, input_shape: tuple | list, dtype: Any = dtypes.float32,
            verbose: int = 1, file: IO[str] | None = None) -> ModelSummary:
    """Print (with ``verbose``) and return a ModelSummary of ``model`` on an input of
    ``input_shape`` (batch size first, as torchinfo's ``input_size``: ``(1, 1, 28, 28)``).

    >>> s = ember.summary(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), (1, 1, 28, 28))
    >>> s.total_params, s.flops
    (7850, 15690)
    """
    input_shape = tuple(int(n) for n in input_shape)
    recorder = _Recorder(model)
    was_training = getattr(model, "training", False)
    try:
        model.eval()
        with ember.no_grad():
            model(ember.zeros(*input_shape, dtype=dtype))
    finally:
        recorder.remove()
        model.train(was_training)
    result = ModelSummary(model, input_shape, dtypes.to_dtype(dtype), recorder.rows)
    if verbose:
        print(result, file=file or sys.stdout)
    return result
