"""ONNX forms of composed functions (functions built from several ops).

Tracing records primitive ops, so a composed function would export as its pieces
(batch norm as Sub/Mul/Mul/Add with its statistics folded into constants). A
composed function whose ONNX form is a single node carries it as attributes:

* ``fn.to_onnx(g, output, args)``: write the node(s); ``args`` maps the function's
  parameter names to ONNX value names (tensor arguments) or Python values;
* ``fn.onnx_applies(*args, **kwargs)`` (optional): whether this call has that form
  (batch norm in training mode, say, does not, and exports as its pieces).

While ``ember.onnx.export`` traces, calls through ``ember.nn.functional`` and the
``ember`` namespace are recorded as one node each (see ``export.traced_functions``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ember.nn import functional as F


def _batch_norm_applies(input: Any, running_mean: Any, running_var: Any, *args: Any,  # noqa: A002
                        **kwargs: Any) -> bool:
    training = kwargs.get("training", args[2] if len(args) > 2 else False)
    return not training and running_mean is not None and running_var is not None


def _batch_norm_to_onnx(g: Any, output: str, args: dict) -> None:
    """Eval-mode batch norm: one BatchNormalization node reading the running statistics."""
    x = args["input"]
    channels, dtype = g.shape(x)[1], g.dtype(x)
    scale = args["weight"] or g.const(np.ones(channels, dtype))
    bias = args["bias"] or g.const(np.zeros(channels, dtype))
    g.node("BatchNormalization", [x, scale, bias, args["running_mean"], args["running_var"]],
           output, epsilon=float(args["eps"]))


def _layer_norm_applies(input: Any, normalized_shape: Any, weight: Any = None,  # noqa: A002
                        bias: Any = None, eps: float = 1e-5) -> bool:
    return weight is None or tuple(weight.shape) == tuple(input.shape[input.ndim -
                                                                      weight.ndim:])


def _layer_norm_to_onnx(g: Any, output: str, args: dict) -> None:
    """LayerNormalization over the trailing dims (opset 17), scale and bias included."""
    x, shape = args["input"], args["normalized_shape"]
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if g.opset < 17:
        raise g.fail("LayerNormalization", "needs opset 17 or later")
    scale = args["weight"] or g.const(np.ones(shape, g.dtype(x)))
    inputs = [x, scale] + ([args["bias"]] if args["bias"] else [])
    g.node("LayerNormalization", inputs, output, axis=-len(shape), epsilon=float(args["eps"]))


def _pixel_shuffle_applies(input: Any, upscale_factor: int) -> bool:  # noqa: A002
    return input.ndim == 4


def _pixel_shuffle_to_onnx(g: Any, output: str, args: dict) -> None:
    """torch's pixel_shuffle is DepthToSpace in column-row-depth order."""
    g.node("DepthToSpace", [args["input"]], output, blocksize=int(args["upscale_factor"]),
           mode="CRD")


# ---------------------------------------------------------------- resize (interpolate's form)
def resize_modes(g: Any, plans: tuple, sizes: tuple, out_sizes: tuple) -> tuple:
    """ONNX Resize's (mode, coordinate_transformation_mode, nearest_mode) that reproduce
    ember's interpolation plans exactly, checked index by index; else OnnxExportError."""
    kinds = {p[0] for p in plans if p is not None}
    if kinds == {"nearest"}:
        for coords, rounding, shift in (("asymmetric", "floor", 0.0),
                                        ("half_pixel", "round_prefer_ceil", 0.5)):
            if all(_same_nearest(p, i, o, shift) for p, i, o in zip(plans, sizes, out_sizes)):
                return "nearest", coords, rounding
        raise g.fail("Resize", "these nearest-neighbour source indices match no ONNX rounding")
    from ember.ops.resample import linear_plan
    for align, coords in ((False, "pytorch_half_pixel"), (True, "align_corners")):
        if all(p is None or all(np.array_equal(a, b) for a, b in zip(
                p[1:], linear_plan(i, o, None, align, p[3].dtype)[1:]))
               for p, i, o in zip(plans, sizes, out_sizes)):
            return "linear", coords, None
    raise g.fail("Resize", "a scale_factor that is not output/input size has no ONNX form here")


def _same_nearest(plan: Any, size: int, out: int, shift: float) -> bool:
    """Whether ONNX's float32 source index floor((dst + shift) / scale) is the plan's."""
    scale = np.float32(out) / np.float32(size)
    src = np.floor((np.arange(out, dtype=np.float32) + np.float32(shift)) / scale)
    src = np.minimum(src.astype(np.int64), size - 1)
    if plan is None:
        return out == size and bool((src == np.arange(out)).all())
    return bool(np.array_equal(plan[1], src))


for _fn, _form, _applies in [(F.batch_norm, _batch_norm_to_onnx, _batch_norm_applies),
                             (F.layer_norm, _layer_norm_to_onnx, _layer_norm_applies),
                             (F.pixel_shuffle, _pixel_shuffle_to_onnx, _pixel_shuffle_applies)]:
    _fn.to_onnx, _fn.onnx_applies = _form, _applies
