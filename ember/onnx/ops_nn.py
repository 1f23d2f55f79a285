"""Importers of ONNX's network ops: convolutions, pooling, normalisation, dropout, resizing.

1-D and 2-D convolutions run on ember's conv2d / conv_transpose2d (a 1-D input is a
height-1 image); asymmetric or automatic padding is applied first with ``pad``.
2-D float pooling with torch-style padding runs on ember's pooling ops; every
other pooling (N-D, dilated average, asymmetric pads, integers) is computed from
one strided slice per kernel offset, which keeps it differentiable.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import numpy as np

from ember.autograd import FUNCTIONS
from ember.onnx.ops_tensor import pad_widths
from ember.onnx.registry import Node, constant, floats, importer, ints
from ember.tensor import Tensor

F = FUNCTIONS


# ---------------------------------------------------------------- geometry
def _auto_pads(auto_pad: str, sizes: list, kernel: list, strides: list,
               dilations: list) -> list | None:
    """(before, after) per spatial dim for SAME_UPPER / SAME_LOWER / VALID, else None."""
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for n, k, s, d in zip(sizes, kernel, strides, dilations):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
        return pads
    if auto_pad == "VALID":
        return [(0, 0)] * len(sizes)
    return None


def _geometry(node: Node, x: Tensor, kernel: list) -> tuple[list, list, list]:
    """Strides, dilations and (before, after) pads of a conv or pool node."""
    dims = len(kernel)
    strides = list(node.attr("strides") or [1] * dims)
    dilations = list(node.attr("dilations") or [1] * dims)
    pads = _auto_pads(node.attr("auto_pad", "NOTSET"), list(x.shape[2:]), kernel, strides,
                      dilations)
    if pads is None:
        flat = list(node.attr("pads") or [0] * 2 * dims)
        pads = list(zip(flat[:dims], flat[dims:]))
    return strides, dilations, pads


def _as_2d(x: Tensor, dims: int) -> Tensor:
    return x.unsqueeze(2) if dims == 1 else x


def _check_conv(node: Node) -> str | None:
    kernel = node.attr("kernel_shape")
    if kernel is not None and len(kernel) > 2:
        return f"a {len(kernel)}-D kernel (ember has 1-D and 2-D convolutions)"
    return None


def _spatial_dims(node: Node, x: Tensor) -> int:
    dims = x.ndim - 2
    if dims not in (1, 2):
        raise node.unsupported(f"a {dims}-D convolution (input of shape {tuple(x.shape)})")
    if x.dtype.kind != "f":
        raise node.unsupported(f"{x.dtype} input")
    return dims


# ---------------------------------------------------------------- convolutions
@importer("Conv", check=_check_conv)
def conv(node: Node, inputs: list) -> Tensor:
    x, weight, bias = (inputs + [None])[:3]
    dims = _spatial_dims(node, x)
    strides, dilations, pads = _geometry(node, x, list(weight.shape[2:]))
    x2, w2 = _as_2d(x, dims), _as_2d(weight, dims)
    if dims == 1:
        strides, dilations, pads = [1] + strides, [1] + dilations, [(0, 0)] + pads
    if any(lo != hi for lo, hi in pads):  # ember's conv pads symmetrically: pad first
        x2, pads = pad_widths(x2, [(0, 0), (0, 0)] + pads), [(0, 0)] * 2
    y = F["conv2d"](x2, w2, bias, tuple(strides), tuple(lo for lo, _ in pads),
                    tuple(dilations), node.attr("group", 1))
    return y.squeeze(2) if dims == 1 else y


@importer("ConvTranspose", check=_check_conv)
def conv_transpose(node: Node, inputs: list) -> Tensor:
    """The full transposed convolution, then cropped by the pads (or padded by
    output_padding) to ONNX's output size, then the bias."""
    x, weight, bias = (inputs + [None])[:3]
    dims = _spatial_dims(node, x)
    strides = list(node.attr("strides") or [1] * dims)
    dilations = list(node.attr("dilations") or [1] * dims)
    one = [1] if dims == 1 else []
    full = F["conv_transpose2d"](_as_2d(x, dims), _as_2d(weight, dims), None,
                                 tuple(one + strides), 0, 0, node.attr("group", 1),
                                 tuple(one + dilations))
    full = full.squeeze(2) if dims == 1 else full
    sizes = [int(n) for n in full.shape[2:]]
    widths = [(-lo, hi) for lo, hi in _transpose_crops(node, x, sizes, strides)]
    y = pad_widths(full, [(0, 0), (0, 0)] + widths)
    if bias is not None:
        y = y + bias.reshape(1, -1, *([1] * dims))
    return y


def _transpose_crops(node: Node, x: Tensor, full: list, strides: list) -> list:
    """(crop at the start, extra at the end) per dim, from pads / output_shape / auto_pad."""
    dims = len(full)
    extra = list(node.attr("output_padding") or [0] * dims)
    auto, pads, shape = node.attr("auto_pad", "NOTSET"), node.attr("pads"), node.attr(
        "output_shape")
    if auto in ("SAME_UPPER", "SAME_LOWER") and pads is None:
        shape = list(shape[-dims:]) if shape else [n * s for n, s in zip(x.shape[2:], strides)]
        result = []
        for f, e, out in zip(full, extra, shape):
            total = f + e - out
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            result.append((lo, out - (f - lo)))
        return result
    pads = list(pads or [0] * 2 * dims)
    if shape:  # the output size is given: begin pads as given, the end takes the rest
        return [(lo, out - (f - lo)) for f, lo, out in zip(full, pads[:dims], shape[-dims:])]
    return [(lo, e - hi) for lo, hi, e in zip(pads[:dims], pads[dims:], extra)]


# ---------------------------------------------------------------- pooling
def _pool_sizes(node: Node, x: Tensor, kernel: list) -> tuple[list, list, list, list]:
    """Strides, dilations, pads and output sizes of a pool, by ONNX's rules (ceil mode:
    the last window must start inside the input or its leading pad)."""
    strides, dilations, pads = _geometry(node, x, kernel)
    ceil = bool(node.attr("ceil_mode", 0))
    outs = []
    for n, k, s, d, (lo, hi) in zip(x.shape[2:], kernel, strides, dilations, pads):
        span = n + lo + hi - d * (k - 1) - 1
        out = (-(-span // s) if ceil else span // s) + 1
        if ceil and (out - 1) * s >= n + lo:
            out -= 1
        outs.append(out)
    return strides, dilations, pads, outs


def _taps(img: Tensor, kernel: list, strides: list, dilations: list, outs: list):
    """One (N, C, *outs) strided view of ``img`` per kernel offset."""
    for offset in itertools.product(*[range(k) for k in kernel]):
        index = tuple(slice(o * d, o * d + (n - 1) * s + 1, s)
                      for o, d, n, s in zip(offset, dilations, outs, strides))
        yield img[(slice(None), slice(None)) + index]


def _extended(pads: list, sizes: tuple, kernel: list, strides: list, dilations: list,
              outs: list) -> list:
    """Pads grown at the end so that every (ceil-mode) window lies inside."""
    grown = []
    for (lo, hi), n, k, s, d, o in zip(pads, sizes, kernel, strides, dilations, outs):
        grown.append((lo, max(hi, (o - 1) * s + d * (k - 1) + 1 - n - lo)))
    return grown


def _native_2d(x: Tensor, kernel: list, pads: list, dilation_ok: bool) -> bool:
    return (x.ndim == 4 and x.dtype.kind == "f" and dilation_ok and
            all(lo == hi and lo <= k // 2 for (lo, hi), k in zip(pads, kernel)))


def _check_maxpool(node: Node) -> str | None:
    if len(node.outputs) > 1 and node.outputs[1] and node.attr("storage_order", 0) not in (0, 1):
        return f"storage_order={node.attr('storage_order')}"
    return None


@importer("MaxPool", check=_check_maxpool)
def max_pool(node: Node, inputs: list) -> Any:
    x, kernel = inputs[0], list(node.attr("kernel_shape"))
    strides, dilations, pads, outs = _pool_sizes(node, x, kernel)
    if _native_2d(x, kernel, pads, True):
        y = F["max_pool2d"](x, tuple(kernel), tuple(strides), tuple(lo for lo, _ in pads),
                            tuple(dilations), bool(node.attr("ceil_mode", 0)))
    else:
        fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        grown = _extended(pads, x.shape[2:], kernel, strides, dilations, outs)
        img = pad_widths(x, [(0, 0), (0, 0)] + grown, fill)
        y = functools.reduce(lambda a, b: F["maximum"](a, b),
                             _taps(img, kernel, strides, dilations, outs))
    if len(node.outputs) < 2 or not node.outputs[1]:
        return y
    return [y, _argmax_indices(node, x, kernel, strides, dilations, pads, outs)]


def _argmax_indices(node: Node, x: Tensor, kernel: list, strides: list, dilations: list,
                    pads: list, outs: list) -> Tensor:
    """ONNX's Indices output: each maximum's flat position in the unpadded input
    (row-major, or column-major over the spatial dims with storage_order=1)."""
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    grown = _extended(pads, x.shape[2:], kernel, strides, dilations, outs)
    img = np.pad(x.array, [(0, 0), (0, 0)] + grown, constant_values=fill)
    taps = list(_taps(constant(img), kernel, strides, dilations, outs))
    best = np.argmax(np.stack([t.array for t in taps]), axis=0)  # the first maximum
    offsets = np.array(list(itertools.product(*[range(k) for k in kernel])))[best]
    coords = []
    for axis, (s, d, (lo, _)) in enumerate(zip(strides, dilations, pads)):
        shape = [1] * len(outs)
        shape[axis] = outs[axis]
        start = (np.arange(outs[axis]) * s - lo).reshape(shape)
        coords.append(start + offsets[..., axis] * d)
    order = "F" if node.attr("storage_order", 0) else "C"
    spatial = np.ravel_multi_index(tuple(coords), x.shape[2:], order=order)
    n, c = x.shape[:2]
    plane = math.prod(x.shape[2:])
    base = (np.arange(n * c) * plane).reshape(n, c, *([1] * len(outs)))
    return constant((spatial + base).astype(np.int64))


@importer("AveragePool")
def average_pool(node: Node, inputs: list) -> Tensor:
    x, kernel = inputs[0], list(node.attr("kernel_shape"))
    strides, dilations, pads, outs = _pool_sizes(node, x, kernel)
    include_pad = bool(node.attr("count_include_pad", 0))
    if _native_2d(x, kernel, pads, all(d == 1 for d in dilations)):
        return F["avg_pool2d"](x, tuple(kernel), tuple(strides), tuple(lo for lo, _ in pads),
                               bool(node.attr("ceil_mode", 0)), include_pad)
    grown = _extended(pads, x.shape[2:], kernel, strides, dilations, outs)
    img = pad_widths(x, [(0, 0), (0, 0)] + grown, 0)
    total = functools.reduce(lambda a, b: a + b, _taps(img, kernel, strides, dilations, outs))
    counts = _window_counts(x.shape[2:], kernel, strides, dilations, pads, grown, outs,
                            include_pad)
    return total / constant(counts.astype(x.dtype))


def _window_counts(sizes: tuple, kernel: list, strides: list, dilations: list, pads: list,
                   grown: list, outs: list, include_pad: bool) -> np.ndarray:
    """How many of each window's taps count: those inside the input, or inside the
    input and its pads (never the ceil-mode extension)."""
    grid = np.ones(outs)
    for axis, (n, k, s, d, (lo, hi), (_, grown_hi), o) in enumerate(
            zip(sizes, kernel, strides, dilations, pads, grown, outs)):
        valid = np.zeros(lo + n + grown_hi, bool)
        valid[0 if include_pad else lo:lo + n + (hi if include_pad else 0)] = True
        taps = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d
        shape = [1] * len(outs)
        shape[axis] = o
        grid = grid * valid[taps].sum(axis=1).reshape(shape)
    return np.maximum(grid, 1)


@importer("GlobalAveragePool")
def global_average_pool(node: Node, inputs: list) -> Tensor:
    x = inputs[0]
    return x.mean(tuple(range(2, x.ndim)), keepdim=True)


@importer("GlobalMaxPool")
def global_max_pool(node: Node, inputs: list) -> Tensor:
    x = inputs[0]
    return x.amax(tuple(range(2, x.ndim)), keepdim=True)


# ---------------------------------------------------------------- normalisation
def _check_batch_norm(node: Node) -> str | None:
    if node.opset < 9 and not node.attr("spatial", 1):
        return "spatial=0"
    if node.opset < 14 and len([o for o in node.outputs if o]) > 1:
        return "the training-mode outputs of BatchNormalization before opset 14"
    return None


@importer("BatchNormalization", check=_check_batch_norm)
def batch_norm(node: Node, inputs: list) -> Any:
    x, scale, bias, mean, var = inputs
    eps, momentum = node.attr("epsilon", 1e-5), node.attr("momentum", 0.9)
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if not node.attr("training_mode", 0):
        inv_std = (var.reshape(*shape) + eps).sqrt()
        return (x - mean.reshape(*shape)) / inv_std * scale.reshape(*shape) + \
            bias.reshape(*shape)
    axes = (0,) + tuple(range(2, x.ndim))
    batch_mean = x.mean(axes)
    centred = x - batch_mean.reshape(*shape)
    batch_var = (centred * centred).mean(axes)  # biased, as ONNX's reference
    y = centred / (batch_var.reshape(*shape) + eps).sqrt() * scale.reshape(*shape) + \
        bias.reshape(*shape)
    running = [mean * momentum + batch_mean * (1 - momentum),
               var * momentum + batch_var * (1 - momentum)]
    return [y, *running][:len(node.outputs)]


@importer("LayerNormalization")
def layer_norm(node: Node, inputs: list) -> Any:
    x, scale, bias = (inputs + [None])[:3]
    axis = node.attr("axis", -1) % x.ndim
    axes, eps = tuple(range(axis, x.ndim)), node.attr("epsilon", 1e-5)
    y = F["standardize"](x, axes, eps) * scale
    if bias is not None:
        y = y + bias
    if len(node.outputs) == 1:
        return y
    mean = x.mean(axes, keepdim=True)
    centred = x - mean
    inv_std = ((centred * centred).mean(axes, keepdim=True) + eps).rsqrt()
    return [y, mean, inv_std][:len(node.outputs)]


@importer("InstanceNormalization")
def instance_norm(node: Node, inputs: list) -> Tensor:
    x, scale, bias = inputs
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    y = F["standardize"](x, tuple(range(2, x.ndim)), node.attr("epsilon", 1e-5))
    return y * scale.reshape(*shape) + bias.reshape(*shape)


# ---------------------------------------------------------------- dropout
@importer("Dropout")
def dropout(node: Node, inputs: list) -> Any:
    """Identity at inference; with training_mode true, ember's seeded random mask."""
    x = inputs[0]
    if node.opset >= 12:
        ratio = floats(inputs[1])[0] if len(inputs) > 1 and inputs[1] is not None else 0.5
        training = len(inputs) > 2 and inputs[2] is not None and bool(inputs[2].array)
    else:
        ratio, training = node.attr("ratio", 0.5), False
    keep = np.ones(x.shape, bool)
    if training and ratio > 0:
        from ember import random
        keep = random.generator().random(x.shape) >= ratio
        x = x * constant((keep / (1.0 - ratio)).astype(x.dtype))
    return [x, constant(keep)][:max(len(node.outputs), 1)]


# ---------------------------------------------------------------- resampling
_COORDINATES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                "half_pixel_symmetric")


def _check_resize(node: Node) -> str | None:
    checks = {"mode": ("nearest", ("nearest", "linear")),
              "coordinate_transformation_mode": ("half_pixel", _COORDINATES),
              "antialias": (0, (0,)), "exclude_outside": (0, (0,)),
              "keep_aspect_ratio_policy": ("stretch", ("stretch",)),
              "nearest_mode": ("round_prefer_floor", ("round_prefer_floor",
                                                      "round_prefer_ceil", "floor", "ceil"))}
    for name, (default, allowed) in checks.items():
        if node.attr(name, default) not in allowed:
            return f"{name}={node.attr(name)!r}"
    if node.opset < 11:
        return "Resize before opset 11 (scales only, other coordinate rules)"
    return None


@importer("Resize", check=_check_resize)
def resize(node: Node, inputs: list) -> Tensor:
    """Separable resizing: per resized axis, ONNX's source coordinate of each output
    index, then a gather (nearest) or a weighted pair of gathers (linear)."""
    x = inputs[0]
    scales_in, sizes_in = [(inputs + [None] * 4)[i] for i in (2, 3)]
    axes = list(node.attr("axes") or range(x.ndim))
    scales = floats(scales_in) if scales_in is not None and scales_in.array.size else None
    for i, axis in enumerate(axes):
        axis %= x.ndim
        n = x.shape[axis]
        if sizes_in is not None and sizes_in.array.size:
            out = ints(sizes_in)[i]
            scale = out / n
        else:
            scale = scales[i]
            out = int(math.floor(n * scale))
        if out != n or scale != 1.0:
            x = _resize_axis(node, x, axis, n, out, scale)
    return x


def _source_coords(mode: str, n: int, out: int, scale: float) -> np.ndarray:
    """ONNX's source coordinate of each output index (``scale * n`` is the unrounded
    output size, which align_corners and pytorch_half_pixel use)."""
    dst, width = np.arange(out, dtype=np.float64), scale * n
    if mode == "align_corners":
        return np.zeros(out) if width == 1 else dst * (n - 1) / (width - 1)
    if mode == "asymmetric":
        return dst / scale
    if mode == "pytorch_half_pixel":
        return np.full(out, -0.5) if width == 1 else (dst + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = n / 2 * (1 - out / (scale * n))
        return offset + (dst + 0.5) / scale - 0.5
    return (dst + 0.5) / scale - 0.5


def _resize_axis(node: Node, x: Tensor, axis: int, n: int, out: int, scale: float) -> Tensor:
    src = _source_coords(node.attr("coordinate_transformation_mode", "half_pixel"), n, out,
                         scale)
    lo = np.floor(src)
    frac = src - lo
    lead = (slice(None),) * axis
    if node.attr("mode", "nearest") == "nearest":
        rounding = node.attr("nearest_mode", "round_prefer_floor")
        up = {"round_prefer_floor": frac > 0.5, "round_prefer_ceil": frac >= 0.5,
              "floor": np.zeros(out, bool), "ceil": frac > 0}[rounding]
        index = np.clip(lo.astype(np.int64) + up, 0, n - 1)
        return x[lead + (index,)]
    low = np.clip(lo.astype(np.int64), 0, n - 1)
    high = np.clip(lo.astype(np.int64) + 1, 0, n - 1)
    shape = (out,) + (1,) * (x.ndim - axis - 1)
    w_high = constant(frac.reshape(shape).astype(x.dtype))
    w_low = constant((1 - frac).reshape(shape).astype(x.dtype))
    return x[lead + (low,)] * w_low + x[lead + (high,)] * w_high


@importer("DepthToSpace")
def depth_to_space(node: Node, inputs: list) -> Tensor:
    x, b = inputs[0], node.attr("blocksize")
    n, c, h, w = x.shape
    if node.attr("mode", "DCR") == "CRD":
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    else:
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // (b * b), h * b, w * b)


@importer("SpaceToDepth")
def space_to_depth(node: Node, inputs: list) -> Tensor:
    x, b = inputs[0], node.attr("blocksize")
    n, c, h, w = x.shape
    order = (0, 1, 3, 5, 2, 4) if node.attr("mode", "DCR") == "CRD" else (0, 3, 5, 1, 2, 4)
    y = x.reshape(n, c, h // b, b, w // b, b).permute(*order)
    return y.reshape(n, c * b * b, h // b, w // b)
