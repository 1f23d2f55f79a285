"""Resampling: ``interpolate`` (nearest, nearest-exact, linear/bilinear/trilinear,
area) and ``pixel_shuffle`` / ``pixel_unshuffle``.

Interpolation is separable: each spatial axis is resampled on its own by a
*plan* (source indices, and for linear modes the two neighbours' weights),
computed with torch's exact index rules and float types. The backward runs the
axes in reverse, summing each output's gradient back into its sources.
"""

from __future__ import annotations

import math
from typing import Any

from ember.autograd import FUNCTIONS, Function, register, register_composed
from ember.backend import xp
from ember.tensor import Tensor

__all__ = ["interpolate", "pixel_shuffle", "pixel_unshuffle"]

MODES = ("nearest", "nearest-exact", "linear", "bilinear", "trilinear", "area")
LINEAR_DIMS = {"linear": 1, "bilinear": 2, "trilinear": 3}


# ---------------------------------------------------------------- index plans
def source_scale(in_size: int, out_size: int, scale: float | None, dtype: Any) -> Any:
    """torch's compute_scales_value: 1/scale_factor when given, else in/out, in ``dtype``."""
    if scale is not None and scale > 0:
        return dtype.type(1.0 / scale)
    return dtype.type(in_size) / dtype.type(out_size)


def nearest_plan(in_size: int, out_size: int, scale: float | None, exact: bool) -> Any:
    """Source index per output index: floor(dst * s) (or floor((dst + .5) * s) for
    nearest-exact), computed in float32 as torch does for every dtype."""
    if not exact and out_size == in_size:
        return None
    s = source_scale(in_size, out_size, scale, xp.dtype(xp.float32))
    dst = xp.arange(out_size, dtype=xp.float32)
    src = xp.floor((dst + xp.float32(0.5)) * s if exact else dst * s).astype(xp.int64)
    return ("nearest", xp.minimum(src, in_size - 1))


def linear_plan(in_size: int, out_size: int, scale: float | None, align_corners: bool,
                dtype: Any) -> tuple:
    """Two neighbours and their weights per output index (torch's
    area_pixel_compute_source_index), in the input's float type."""
    dst = xp.arange(out_size, dtype=dtype)
    if align_corners:
        s = dtype.type(in_size - 1) / dtype.type(out_size - 1) if out_size > 1 else dtype.type(0)
        src = s * dst
    else:
        s = source_scale(in_size, out_size, scale, dtype)
        src = xp.maximum(s * (dst + dtype.type(0.5)) - dtype.type(0.5), dtype.type(0))
    lo = xp.minimum(xp.floor(src).astype(xp.int64), in_size - 1)
    weight_hi = xp.clip(src - lo, 0, 1).astype(dtype)
    hi = lo + (lo < in_size - 1)
    return ("linear", lo, hi, dtype.type(1) - weight_hi, weight_hi)


def along(weights: Any, axis: int, ndim: int) -> Any:
    """A 1-D weight vector shaped to broadcast along ``axis``."""
    return weights.reshape((-1,) + (1,) * (ndim - axis - 1))


def resample_axis(x: Any, plan: tuple, axis: int) -> Any:
    if plan[0] == "nearest":
        return xp.take(x, plan[1], axis=axis)
    _, lo, hi, w_lo, w_hi = plan
    out = xp.take(x, lo, axis=axis)
    out *= along(w_lo, axis, x.ndim)
    out += xp.take(x, hi, axis=axis) * along(w_hi, axis, x.ndim)
    return out


def sum_into(g: Any, index: Any, size: int, axis: int) -> Any:
    """``out[index[k]] += g[k]`` along ``axis`` for a non-decreasing ``index``."""
    firsts = xp.flatnonzero(xp.concatenate(([True], index[1:] != index[:-1])))
    sums = g if len(firsts) == len(index) else xp.add.reduceat(g, firsts, axis=axis)
    shape = list(g.shape)
    shape[axis] = size
    out = xp.zeros(shape, g.dtype)
    out[(slice(None),) * axis + (index[firsts],)] = sums
    return out


def unresample_axis(g: Any, plan: tuple, axis: int, size: int) -> Any:
    if plan[0] == "nearest":
        return sum_into(g, plan[1], size, axis)
    _, lo, hi, w_lo, w_hi = plan
    grad = sum_into(g * along(w_lo, axis, g.ndim), lo, size, axis)
    grad += sum_into(g * along(w_hi, axis, g.ndim), hi, size, axis)
    return grad


@register("interpolate", method=False)
class Interpolate(Function):
    """Separable resampling: one plan per spatial axis (None leaves the axis as is)."""

    def forward(self, x, plans):
        self.plans, self.sizes = plans, x.shape[2:]
        for axis, plan in enumerate(plans, 2):
            if plan is not None:
                x = resample_axis(x, plan, axis)
        return x if any(p is not None for p in plans) else x.copy()

    def backward(self, g):
        for axis in reversed(range(len(self.plans))):
            if self.plans[axis] is not None:
                g = unresample_axis(g, self.plans[axis], axis + 2, self.sizes[axis])
        return g

    def to_onnx(self, g, inputs, output):  # Resize whose rounding reproduces the plans
        from ember.onnx.forms import resize_modes
        out_sizes = g.shape(output)[2:]
        if all(p is None for p in self.plans):
            g.node("Identity", inputs, output)
            return
        mode, coords, rounding = resize_modes(g, self.plans, self.sizes, out_sizes)
        scales = [1.0, 1.0] + [o / i for i, o in zip(self.sizes, out_sizes)]
        g.node("Resize", [inputs[0], "", g.const(scales, xp.float32)], output, mode=mode,
               coordinate_transformation_mode=coords, nearest_mode=rounding)


# ---------------------------------------------------------------- interpolate
def _per_dim(value: Any, dims: int, name: str, shape: tuple) -> list:
    if isinstance(value, (tuple, list)):
        if len(value) != dims:
            raise ValueError(f"interpolate: input and {name} must have the same number of "
                             f"spatial dimensions, but got input with spatial dimensions of "
                             f"{list(shape[2:])} and {name} {tuple(value)}")
        return list(value)
    return [value] * dims


def _sizes_and_scales(shape: tuple, size: Any, scale_factor: Any,
                      recompute_scale_factor: bool | None) -> tuple:
    dims = len(shape) - 2
    if size is not None and scale_factor is not None:
        raise ValueError("interpolate: only one of size or scale_factor should be defined")
    if size is None and scale_factor is None:
        raise ValueError("interpolate: either size or scale_factor should be defined")
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("interpolate: recompute_scale_factor is not meaningful with an "
                             "explicit size")
        sizes = [int(s) for s in _per_dim(size, dims, "output size", shape)]
        scales = [None] * dims
    else:
        scales = [float(s) for s in _per_dim(scale_factor, dims, "scale_factor", shape)]
        sizes = [int(math.floor(n * s)) for n, s in zip(shape[2:], scales)]
        if recompute_scale_factor:
            scales = [None] * dims
    if any(s <= 0 for s in sizes):
        raise ValueError(f"interpolate: output size {tuple(sizes)} must be positive (input "
                         f"shape {tuple(shape)})")
    return sizes, scales


def _check_mode(mode: str, ndim: int, align_corners: bool | None, antialias: bool) -> None:
    if mode not in MODES:
        raise ValueError(f"interpolate: mode {mode!r} is not supported; expected one of "
                         f"{', '.join(MODES)}")
    if mode in ("nearest", "nearest-exact", "area") and align_corners is not None:
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    if ndim not in (3, 4, 5):
        raise ValueError(f"interpolate: expected a 3-D, 4-D or 5-D input (N, C, d1, ...), got "
                         f"shape of {ndim} dims")
    if mode in LINEAR_DIMS and LINEAR_DIMS[mode] != ndim - 2:
        raise ValueError(f"interpolate: got {ndim}D input, but {mode} mode needs "
                         f"{LINEAR_DIMS[mode] + 2}D input")
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported by ember")


def interpolate(input: Tensor, size: Any = None, scale_factor: Any = None,  # noqa: A002
                mode: str = "nearest", align_corners: bool | None = None,
                recompute_scale_factor: bool | None = None, antialias: bool = False) -> Tensor:
    """Resize an (N, C, d1[, d2[, d3]]) input to ``size`` or by ``scale_factor``, as
    ``torch.nn.functional.interpolate`` (modes nearest, nearest-exact, linear,
    bilinear, trilinear, area).

    >>> F.interpolate(ember.ones(1, 2, 4, 4), scale_factor=2, mode="bilinear").shape
    (1, 2, 8, 8)
    """
    _check_mode(mode, input.ndim, align_corners, antialias)
    if mode == "area" and size is None:
        recompute_scale_factor = True
    sizes, scales = _sizes_and_scales(tuple(input.shape), size, scale_factor,
                                      recompute_scale_factor)
    if mode == "area":
        if input.ndim != 4:
            raise ValueError("interpolate: ember supports mode='area' for 4-D input only")
        from ember.ops.pool import adaptive_avg_pool2d
        return adaptive_avg_pool2d(input, tuple(sizes))
    if input.dtype.kind != "f" and not mode.startswith("nearest"):
        raise TypeError(f"interpolate: {mode} mode needs a floating input, got {input.dtype}")
    plans = tuple(_plan(n, out, s, mode, bool(align_corners), input.dtype)
                  for n, out, s in zip(input.shape[2:], sizes, scales))
    return Interpolate.apply(input, plans)


def _plan(in_size: int, out_size: int, scale: float | None, mode: str, align_corners: bool,
          dtype: Any) -> Any:
    if mode.startswith("nearest"):
        return nearest_plan(in_size, out_size, scale, mode == "nearest-exact")
    return linear_plan(in_size, out_size, scale, align_corners, dtype)


FUNCTIONS["interpolate"] = interpolate


# ---------------------------------------------------------------- pixel shuffle
def _check_shuffle(op: str, x: Tensor, factor: int) -> None:
    if not isinstance(factor, (int, xp.integer)) or factor <= 0:
        raise ValueError(f"{op}: the factor must be a positive integer, got {factor!r}")
    if x.ndim < 3:
        raise ValueError(f"{op}: expected an input of at least 3 dims (*, C, H, W), got shape "
                         f"{tuple(x.shape)}")


@register_composed("pixel_shuffle", method=False)
def pixel_shuffle(input: Tensor, upscale_factor: int) -> Tensor:  # noqa: A002
    """(*, C*r*r, H, W) -> (*, C, H*r, W*r), as torch's: channel blocks become r x r
    pixel blocks.

    >>> F.pixel_shuffle(ember.ones(1, 8, 2, 3), 2).shape
    (1, 2, 4, 6)
    """
    _check_shuffle("pixel_shuffle", input, upscale_factor)
    r = upscale_factor
    *batch, c, h, w = input.shape
    if c % (r * r):
        raise ValueError(f"pixel_shuffle expects its input's 'channel' dimension to be divisible "
                         f"by the square of upscale_factor, but input.size(-3)={c} is not "
                         f"divisible by {r * r}")
    lead = len(batch)
    x = input.reshape(*batch, c // (r * r), r, r, h, w)
    order = tuple(range(lead)) + tuple(lead + k for k in (0, 3, 1, 4, 2))
    return x.permute(*order).reshape(*batch, c // (r * r), h * r, w * r)


@register_composed("pixel_unshuffle", method=False)
def pixel_unshuffle(input: Tensor, downscale_factor: int) -> Tensor:  # noqa: A002
    """(*, C, H*r, W*r) -> (*, C*r*r, H, W): the inverse of ``pixel_shuffle``.

    >>> F.pixel_unshuffle(ember.ones(1, 2, 4, 6), 2).shape
    (1, 8, 2, 3)
    """
    _check_shuffle("pixel_unshuffle", input, downscale_factor)
    r = downscale_factor
    *batch, c, h, w = input.shape
    if h % r or w % r:
        raise ValueError(f"pixel_unshuffle expects height and width to be divisible by "
                         f"downscale_factor, but input.size(-2)={h} and input.size(-1)={w} "
                         f"are not divisible by {r}")
    lead = len(batch)
    x = input.reshape(*batch, c, h // r, r, w // r, r)
    order = tuple(range(lead)) + tuple(lead + k for k in (0, 2, 4, 1, 3))
    return x.permute(*order).reshape(*batch, c * r * r, h // r, w // r)
