"""Convolution, pooling and resampling against torch, configuration by configuration.

Every row runs the same call through ``torch.nn.functional`` and ``ember.nn.functional``
in float64 and compares the outputs and the gradients of every floating input
(input, weight, bias) at rtol 1e-7. Then: the fast 2x2 pooling paths against the
general ones, float32 staying float32, gradcheck on small cases, and the errors
that bad arguments raise.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import ember
import ember.nn.functional as F
from ember.ops import pool
from tests.helpers import OpCase, gradcheck_case, helper_test_op

TOL = dict(rtol=1e-7, atol=1e-9)


def cfg(name: str, shapes: list, op: str, *args, gen=None, **kwargs) -> pytest.param:
    """One configuration: ``op(*inputs, *args, **kwargs)`` in both libraries."""
    def torch_fn(*t):
        with warnings.catch_warnings():  # torch warns about even kernels with 'same'
            warnings.simplefilter("ignore", UserWarning)
            return getattr(TF, op)(*t, *args, **kwargs)

    def ember_fn(*e):
        return getattr(F, op)(*e, *args, **kwargs)
    case = OpCase(op, [shapes], torch_fn, ember_fn, gen=gen, tol=TOL)
    return pytest.param(case, id=name)


def unpool_inputs(rng, shapes):
    """max_pool2d(kernel 2, stride 2) outputs and indices of a random input."""
    (n, c, h, w), _ = shapes
    x = torch.tensor(rng.uniform(-2, 2, (n, c, 2 * h, 2 * w)))
    out, idx = TF.max_pool2d(x, 2, return_indices=True)
    return [out.numpy(), idx.numpy()]


def ties(rng, shapes):
    """ReLU-like input: many equal zeros, so max pools must pick torch's first maximum."""
    return [np.maximum(rng.integers(-2, 3, s), 0).astype(float) for s in shapes]


X = (2, 3, 7, 7)
CONFIGS = [
    # ------------------------------------------------------------ conv2d
    cfg("conv-basic", [X, (4, 3, 3, 3), (4,)], "conv2d"),
    cfg("conv-pad1", [(2, 3, 8, 8), (4, 3, 3, 3), (4,)], "conv2d", padding=1),
    cfg("conv-stride2-pad1", [(2, 3, 9, 9), (5, 3, 3, 3), (5,)], "conv2d", stride=2, padding=1),
    cfg("conv-asym-kernel-stride-pad", [(2, 2, 7, 6), (3, 2, 3, 2), (3,)], "conv2d",
        stride=(2, 1), padding=(1, 0)),
    cfg("conv-dilation2", [(1, 2, 9, 9), (3, 2, 3, 3), (3,)], "conv2d", dilation=2),
    cfg("conv-asym-dilation-stride", [(2, 2, 9, 8), (3, 2, 3, 2), (3,)], "conv2d",
        stride=(1, 2), padding=(2, 1), dilation=(2, 1)),
    cfg("conv-groups2", [(2, 4, 6, 6), (6, 2, 3, 3), (6,)], "conv2d", groups=2),
    cfg("conv-depthwise", [(2, 3, 6, 6), (3, 1, 3, 3), (3,)], "conv2d", groups=3, padding=1),
    cfg("conv-depthwise-x2", [(2, 3, 6, 5), (6, 1, 3, 3)], "conv2d", groups=3, stride=2),
    cfg("conv-1x1", [(2, 5, 4, 4), (3, 5, 1, 1), (3,)], "conv2d"),
    cfg("conv-1x1-stride2", [(2, 5, 5, 5), (3, 5, 1, 1)], "conv2d", stride=2),
    cfg("conv-same-even-kernel", [(1, 2, 6, 7), (3, 2, 4, 4), (3,)], "conv2d", padding="same"),
    cfg("conv-same-dilated-asym", [(2, 2, 7, 6), (3, 2, 2, 3)], "conv2d", padding="same",
        dilation=(3, 2)),
    cfg("conv-valid", [(2, 3, 6, 5), (2, 3, 3, 2), (2,)], "conv2d", padding="valid"),
    cfg("conv-no-bias", [X, (4, 3, 3, 3)], "conv2d", padding=2),
    cfg("conv-odd-sizes", [(3, 3, 11, 5), (2, 3, 5, 5), (2,)], "conv2d", stride=3, padding=2),
    cfg("conv-kernel-fills-input", [(2, 2, 5, 5), (3, 2, 5, 5), (3,)], "conv2d"),
    cfg("conv-stride-over-kernel", [(1, 2, 9, 9), (2, 2, 2, 2)], "conv2d", stride=3),
    cfg("conv-groups-stride-dilation", [(2, 4, 9, 9), (4, 2, 3, 3), (4,)], "conv2d", stride=2,
        dilation=2, padding=2, groups=2),
    cfg("conv-unbatched", [(3, 6, 6), (4, 3, 3, 3), (4,)], "conv2d", padding=1),
    cfg("conv-wide-rows", [(2, 3, 12, 12), (4, 3, 3, 3), (4,)], "conv2d", padding=1),
    cfg("conv-many-outputs", [(2, 2, 7, 7), (6, 2, 3, 3), (6,)], "conv2d", padding=1),
    cfg("conv-pad-beyond-kernel", [(2, 2, 5, 5), (3, 2, 3, 3), (3,)], "conv2d", padding=3),
    # ------------------------------------------------------------ conv1d
    cfg("conv1d-pad1", [(2, 3, 10), (4, 3, 3), (4,)], "conv1d", padding=1),
    cfg("conv1d-stride-dilation", [(2, 3, 13), (4, 3, 3)], "conv1d", stride=2, dilation=2),
    cfg("conv1d-groups-same", [(2, 4, 9), (6, 2, 3), (6,)], "conv1d", groups=2, padding="same"),
    cfg("conv1d-same-even", [(2, 3, 8), (2, 3, 4), (2,)], "conv1d", padding="same"),
    cfg("conv1d-unbatched", [(3, 8), (2, 3, 3)], "conv1d"),
    # ------------------------------------------------------------ conv_transpose2d
    cfg("convT-basic", [(2, 3, 5, 5), (3, 4, 3, 3), (4,)], "conv_transpose2d"),
    cfg("convT-stride2-pad1-outpad1", [(2, 3, 4, 5), (3, 2, 3, 3), (2,)], "conv_transpose2d",
        stride=2, padding=1, output_padding=1),
    cfg("convT-asym-outpad", [(2, 2, 3, 4), (2, 3, 3, 2), (3,)], "conv_transpose2d",
        stride=(2, 3), output_padding=(1, 2)),
    cfg("convT-groups2", [(2, 4, 4, 4), (4, 3, 3, 3), (6,)], "conv_transpose2d", groups=2,
        stride=2),
    cfg("convT-dilation2", [(2, 3, 4, 4), (3, 2, 3, 3), (2,)], "conv_transpose2d", dilation=2,
        stride=2, padding=2),
    cfg("convT-outpad-below-dilation", [(1, 2, 4, 4), (2, 2, 3, 3)], "conv_transpose2d",
        dilation=2, output_padding=1),
    cfg("convT-1x1-stride2", [(2, 3, 3, 3), (3, 2, 1, 1), (2,)], "conv_transpose2d", stride=2),
    cfg("convT-no-bias-asym-kernel", [(2, 2, 4, 3), (2, 3, 2, 3)], "conv_transpose2d",
        stride=(1, 2), padding=(1, 0), groups=1),
    cfg("convT-depthwise", [(2, 3, 4, 4), (3, 1, 3, 3), (3,)], "conv_transpose2d", groups=3,
        stride=2, padding=1),
    cfg("convT-unbatched", [(3, 4, 4), (3, 2, 3, 3)], "conv_transpose2d", stride=2),
    # ------------------------------------------------------------ max_pool2d
    cfg("maxpool-2x2", [(2, 3, 8, 8)], "max_pool2d", 2),
    cfg("maxpool-2x2-odd", [(2, 3, 7, 9)], "max_pool2d", 2),
    cfg("maxpool-2x2-ties", [(2, 3, 8, 8)], "max_pool2d", 2, gen=ties),
    cfg("maxpool-3s2p1-ties", [(2, 3, 8, 8)], "max_pool2d", 3, 2, 1, gen=ties),
    cfg("maxpool-3s2p1", [(2, 3, 8, 8)], "max_pool2d", 3, 2, 1),
    cfg("maxpool-ceil", [(2, 3, 8, 8)], "max_pool2d", 3, 2, 1, ceil_mode=True),
    cfg("maxpool-ceil-last-in-padding", [(1, 2, 5, 5)], "max_pool2d", 2, 2, 1, ceil_mode=True),
    cfg("maxpool-ceil-no-pad", [(2, 2, 7, 6)], "max_pool2d", 2, ceil_mode=True),
    cfg("maxpool-dilation", [(2, 3, 9, 9)], "max_pool2d", 3, 2, 1, dilation=2),
    cfg("maxpool-indices", [(2, 3, 9, 8)], "max_pool2d", 3, 2, 1, return_indices=True),
    cfg("maxpool-indices-ceil-dilation", [(2, 2, 9, 9)], "max_pool2d", 2, 2, 1, dilation=(2, 1),
        ceil_mode=True, return_indices=True),
    cfg("maxpool-asym", [(2, 3, 7, 8)], "max_pool2d", (3, 2), (1, 2), (1, 0)),
    cfg("maxpool-1x1-stride2", [(2, 3, 5, 6)], "max_pool2d", 1, 2),
    cfg("maxpool-disjoint-dilated", [(2, 3, 9, 8)], "max_pool2d", 2, 3, dilation=2),
    cfg("maxpool-disjoint-padded", [(2, 3, 7, 7)], "max_pool2d", 2, 2, 1),
    cfg("maxpool-unbatched", [(3, 6, 6)], "max_pool2d", 2, return_indices=True),
    # ------------------------------------------------------------ avg_pool2d
    cfg("avgpool-2x2", [(2, 3, 8, 8)], "avg_pool2d", 2),
    cfg("avgpool-3s2p1", [(2, 3, 8, 8)], "avg_pool2d", 3, 2, 1),
    cfg("avgpool-exclude-pad", [(2, 3, 8, 8)], "avg_pool2d", 3, 2, 1, count_include_pad=False),
    cfg("avgpool-ceil", [(2, 3, 8, 8)], "avg_pool2d", 3, 2, 1, ceil_mode=True),
    cfg("avgpool-ceil-exclude-pad", [(2, 3, 9, 8)], "avg_pool2d", 2, 2, 1, ceil_mode=True,
        count_include_pad=False),
    cfg("avgpool-ceil-no-pad", [(2, 3, 7, 7)], "avg_pool2d", 3, 2, ceil_mode=True),
    cfg("avgpool-divisor-override", [(2, 3, 8, 8)], "avg_pool2d", (3, 2), (2, 1), (1, 0),
        divisor_override=5),
    cfg("avgpool-stride-over-kernel", [(2, 3, 8, 9)], "avg_pool2d", 2, 3),
    cfg("avgpool-asym-overlap", [(2, 3, 7, 9)], "avg_pool2d", (2, 3), 1, (1, 1)),
    # ------------------------------------------------------------ adaptive pools
    cfg("adaptive-avg-7to3", [(2, 3, 7, 7)], "adaptive_avg_pool2d", 3),
    cfg("adaptive-avg-5to2-6to4", [(2, 3, 5, 6)], "adaptive_avg_pool2d", (2, 4)),
    cfg("adaptive-avg-global", [(2, 3, 5, 6)], "adaptive_avg_pool2d", 1),
    cfg("adaptive-avg-none", [(2, 3, 8, 6)], "adaptive_avg_pool2d", (None, 4)),
    cfg("adaptive-avg-upsample", [(2, 3, 3, 2)], "adaptive_avg_pool2d", (5, 3)),
    cfg("adaptive-max-7to3", [(2, 3, 7, 7)], "adaptive_max_pool2d", 3, return_indices=True),
    cfg("adaptive-max-5to2", [(2, 3, 5, 5)], "adaptive_max_pool2d", 2),
    cfg("adaptive-max-uniform", [(2, 3, 8, 8)], "adaptive_max_pool2d", (4, 2)),
    cfg("adaptive-max-ties", [(2, 3, 7, 5)], "adaptive_max_pool2d", (3, 2), gen=ties,
        return_indices=True),
    # ------------------------------------------------------------ max_unpool2d
    cfg("maxunpool-2x2", [(2, 3, 3, 4), (2, 3, 3, 4)], "max_unpool2d", 2, gen=unpool_inputs),
    cfg("maxunpool-output-size", [(2, 3, 3, 4), (2, 3, 3, 4)], "max_unpool2d", 2,
        output_size=(7, 9), gen=unpool_inputs),
    # ------------------------------------------------------------ interpolate
    cfg("nearest-size", [(2, 3, 3, 4)], "interpolate", size=(5, 7)),
    cfg("nearest-scale2", [(2, 3, 3, 4)], "interpolate", scale_factor=2),
    cfg("nearest-scale1.7", [(2, 3, 3, 4)], "interpolate", scale_factor=1.7),
    cfg("nearest-down-7to3", [(2, 3, 7, 7)], "interpolate", size=3),
    cfg("nearest-scale-pair", [(2, 3, 5, 4)], "interpolate", scale_factor=(0.6, 2.5)),
    cfg("nearest-exact", [(2, 3, 7, 5)], "interpolate", size=(4, 9), mode="nearest-exact"),
    cfg("nearest-1d", [(2, 3, 7)], "interpolate", size=11),
    cfg("bilinear-scale2", [(2, 3, 3, 4)], "interpolate", scale_factor=2, mode="bilinear"),
    cfg("bilinear-size-corners", [(2, 3, 4, 6)], "interpolate", size=(7, 5), mode="bilinear",
        align_corners=True),
    cfg("bilinear-down-scale", [(2, 3, 7, 6)], "interpolate", scale_factor=0.6, mode="bilinear"),
    cfg("bilinear-down-corners", [(2, 3, 7, 6)], "interpolate", size=(3, 1), mode="bilinear",
        align_corners=True),
    cfg("bilinear-scale-corners", [(2, 3, 3, 5)], "interpolate", scale_factor=(1.5, 2.3),
        mode="bilinear", align_corners=True),
    cfg("bilinear-recompute", [(2, 3, 3, 5)], "interpolate", scale_factor=1.7, mode="bilinear",
        recompute_scale_factor=True),
    cfg("linear-1d", [(2, 3, 7)], "interpolate", scale_factor=1.5, mode="linear"),
    cfg("trilinear", [(1, 2, 3, 4, 5)], "interpolate", size=(4, 6, 3), mode="trilinear"),
    cfg("area", [(2, 3, 7, 5)], "interpolate", size=(3, 2), mode="area"),
    # ------------------------------------------------------------ pixel shuffle
    cfg("pixel-shuffle-2", [(2, 8, 3, 4)], "pixel_shuffle", 2),
    cfg("pixel-shuffle-3-batch-dims", [(2, 2, 9, 2, 3)], "pixel_shuffle", 3),
    cfg("pixel-unshuffle-2", [(2, 2, 4, 6)], "pixel_unshuffle", 2),
]


@pytest.mark.parametrize("case", CONFIGS)
def test_matches_torch_float64(case):
    helper_test_op(case.shapes[0], case.torch_fn, case.ember_fn, dtype=np.float64, case=case)


def test_table_is_broad():
    convs = [c for c in CONFIGS if "conv" in c.values[0].name or "pool" in c.values[0].name]
    assert len(convs) >= 40


GRADCHECKS = ["conv-groups-stride-dilation", "conv-same-even-kernel", "conv1d-stride-dilation",
              "convT-asym-outpad", "maxpool-ceil-last-in-padding", "avgpool-ceil-exclude-pad",
              "adaptive-avg-5to2-6to4", "adaptive-max-5to2", "bilinear-scale-corners",
              "nearest-scale1.7"]


@pytest.mark.parametrize("case", [c for c in CONFIGS if c.id in GRADCHECKS])
def test_gradcheck(case):
    assert gradcheck_case(case, case.shapes[0])


# ---------------------------------------------------------------- float32
FLOAT32 = ["conv-groups-stride-dilation", "convT-stride2-pad1-outpad1", "conv1d-pad1",
           "maxpool-2x2", "maxpool-3s2p1", "avgpool-exclude-pad", "adaptive-avg-7to3",
           "adaptive-max-7to3", "bilinear-scale2", "nearest-scale1.7", "pixel-shuffle-2"]


@pytest.mark.parametrize("case", [c for c in CONFIGS if c.id in FLOAT32])
def test_float32_stays_float32(case):
    rng = np.random.default_rng(0)
    inputs = [ember.tensor(rng.uniform(-2, 2, s).astype(np.float32), requires_grad=True)
              for s in case.shapes[0]]
    out = case.ember_fn(*inputs)
    out = out[0] if isinstance(out, tuple) else out
    assert out.dtype == np.float32
    (out * out).sum().backward()
    assert all(t.grad.dtype == np.float32 for t in inputs)
    # rtol 1e-5; atol 1e-5 because float32 sums of ~100 O(1) products differ by ~1e-6
    # between summation orders where they cancel
    float32_case = dataclasses.replace(case, tol=dict(rtol=1e-5, atol=1e-5))
    helper_test_op(case.shapes[0], case.torch_fn, case.ember_fn, dtype=np.float32,
                   case=float32_case)


# ---------------------------------------------------------------- fast paths
@pytest.mark.parametrize("kind,gen", [("max", None), ("max", ties), ("avg", None)])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 2, 7, 9)])
def test_non_overlapping_pool_path_equals_general_path(monkeypatch, kind, gen, shape):
    """2x2/stride-2 pooling slices the input in place and assigns in backward; the
    general path (padded copy, accumulating backward) must agree exactly."""
    rng = np.random.default_rng(1)
    data = gen(rng, [shape])[0] if gen else rng.standard_normal(shape)
    upstream = rng.standard_normal((shape[0], shape[1], shape[2] // 2, shape[3] // 2))
    fn = F.max_pool2d if kind == "max" else F.avg_pool2d

    def run():
        x = ember.tensor(data, dtype=ember.float64, requires_grad=True)
        out = fn(x, 2)
        out.backward(ember.tensor(upstream, dtype=ember.float64))
        return out.array, x.grad.array

    fast = run()
    monkeypatch.setattr(pool, "FAST_PATHS", False)
    general = run()
    np.testing.assert_array_equal(fast[0], general[0])
    np.testing.assert_array_equal(fast[1], general[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 4, 4, 4), (2, 3, 7, 5), (0, 3, 2, 2)])
def test_global_average_pool_product_equals_the_separable_means(monkeypatch, dtype, shape):
    """Global adaptive average pooling is one product with a vector of 1/(h w); the
    separable means (the general path) and torch agree to rounding."""
    data = np.random.default_rng(3).standard_normal(shape).astype(dtype)

    def run():
        x = ember.from_numpy(data.copy()).requires_grad_()
        out = F.adaptive_avg_pool2d(x, 1)
        out.backward(ember.ones(*out.shape, dtype=out.dtype))
        return out.array, x.grad.array

    fast = run()
    monkeypatch.setattr(pool, "FAST_PATHS", False)
    general = run()
    expected = TF.adaptive_avg_pool2d(torch.tensor(data), 1).numpy()
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
    assert fast[0].dtype == dtype and fast[0].shape == expected.shape
    np.testing.assert_allclose(fast[0], general[0], **tol)
    np.testing.assert_allclose(fast[0], expected, **tol)
    np.testing.assert_array_equal(fast[1], general[1])


def test_max_pool_nan_propagates_like_torch():
    x = np.random.default_rng(2).standard_normal((1, 1, 4, 4))
    x[0, 0, 1, 0] = x[0, 0, 2, 3] = x[0, 0, 3, 2] = np.nan
    ours, ours_idx = F.max_pool2d(ember.tensor(x, dtype=ember.float64), 2, return_indices=True)
    theirs, theirs_idx = TF.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(ours.array, theirs.numpy())
    np.testing.assert_array_equal(ours_idx.array, theirs_idx.numpy())


def test_wide_and_narrow_column_layouts_agree(monkeypatch):
    """Stride-1 convs compute over whole padded rows; the exact layout must agree."""
    from ember.ops import conv
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 3, 9, 9)), rng.standard_normal((4, 3, 3, 3)), \
        rng.standard_normal(4)
    g = rng.standard_normal((2, 4, 9, 9))

    def run():
        ts = [ember.tensor(a, dtype=ember.float64, requires_grad=True) for a in (x, w, b)]
        out = F.conv2d(*ts, padding=1)
        out.backward(ember.tensor(g, dtype=ember.float64))
        return [out.array] + [t.grad.array for t in ts]

    monkeypatch.setattr(conv, "WIDE_OVERHEAD", 1.0)
    wide = run()
    monkeypatch.setattr(conv, "WIDE_OVERHEAD", -1.0)
    narrow = run()
    for a, b_ in zip(wide, narrow):
        np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(padding="same", dilation=(2, 1)),
                                    dict(padding=(0, 2), groups=2)])
def test_input_gradient_formulas_agree(monkeypatch, kwargs):
    """col2im of W^T g and the convolution of g with the flipped kernel are one gradient."""
    from ember.ops import conv
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((4, 2 if kwargs.get("groups")
                                                                     else 4, 3, 3))

    def input_grad():
        xt = ember.tensor(x, dtype=ember.float64, requires_grad=True)
        out = F.conv2d(xt, ember.tensor(w, dtype=ember.float64), **kwargs)
        out.backward(ember.tensor(rng.standard_normal(out.shape), dtype=ember.float64))
        return xt.grad.array

    state = rng.bit_generator.state
    monkeypatch.setattr(conv, "GRAD_CONV_MAX_RATIO", 100.0)
    as_conv = input_grad()
    rng.bit_generator.state = state
    monkeypatch.setattr(conv, "GRAD_CONV_MAX_RATIO", 0.0)
    as_col2im = input_grad()
    np.testing.assert_allclose(as_conv, as_col2im, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shapes,kwargs", [
    (((2, 3, 12, 12), (4, 3, 3, 3)), dict(padding=1)),
    (((2, 1, 16, 16), (6, 1, 5, 5)), dict(padding=2)),
    (((2, 6, 14, 14), (16, 6, 5, 5)), dict()),
    (((2, 4, 13, 12), (6, 2, 3, 3)), dict(groups=2, stride=(2, 1), padding=(1, 2))),
    (((2, 4, 12, 13), (4, 4, 3, 2)), dict(padding="same", dilation=(2, 1))),
])
@pytest.mark.parametrize("grad_as_conv", [100.0, 0.0])
def test_per_sample_layout_equals_long_layout(monkeypatch, shapes, kwargs, grad_as_conv):
    """conv2d's per-sample (n, C*kh*kw, L) columns against the (C*kh*kw, n*L) layout:
    output and every gradient, with either input-gradient formula."""
    from ember.ops import conv
    rng = np.random.default_rng(7)
    x, w = (rng.standard_normal(s) for s in shapes)
    b = rng.standard_normal(w.shape[0])
    monkeypatch.setattr(conv, "GRAD_CONV_MAX_RATIO", grad_as_conv)
    monkeypatch.setattr(conv, "SAMPLE_MAX_WORK", 1 << 40)
    monkeypatch.setattr(conv, "BLOCKED", False)  # the per-sample layout, wherever it can

    def run():
        ts = [ember.tensor(a, dtype=ember.float64, requires_grad=True) for a in (x, w, b)]
        out = F.conv2d(*ts, **kwargs)
        out.backward(ember.tensor(np.cos(np.arange(out.numel())).reshape(out.shape),
                                  dtype=ember.float64))
        return [out.array] + [t.grad.array for t in ts]

    per_sample = run()
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    monkeypatch.setattr(conv, "BLOCKED", False)  # the whole-batch layout
    long_layout = run()
    for a, b_ in zip(per_sample, long_layout):
        assert a.flags.c_contiguous
        np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shapes, kwargs", [
    (((4, 2, 7, 7), (3, 2, 3, 3)), dict(padding=1)),
    (((4, 4, 6, 6), (6, 2, 3, 3)), dict(groups=2)),
    (((2, 2, 6, 6), (4, 1, 3, 3)), dict(groups=2)),  # groups == batch: w must stay whole
])
def test_per_sample_products_split_between_threads_equal_one_thread(monkeypatch, shapes,
                                                                     kwargs):
    """sample_matmul's stack split by samples between threads: bit for bit the same
    output and gradients as one thread (each sample's product is the same GEMM)."""
    from ember import parallel
    from ember.ops import conv
    rng = np.random.default_rng(8)
    x, w = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)
    monkeypatch.setattr(conv, "SAMPLE_MAX_WORK", 1 << 40)
    monkeypatch.setattr(conv, "BLOCKED", False)  # the per-sample layout, wherever it can
    calls = []
    real_rows = parallel.rows
    monkeypatch.setattr(parallel, "rows", lambda fn, *a, enabled=None: (
        calls.append(parallel._threads(a[0], enabled)), real_rows(fn, *a, enabled=enabled)))

    def run(threads):
        monkeypatch.setattr(conv, "SAMPLE_THREADS", threads)
        ts = [ember.tensor(a, requires_grad=True) for a in (x, w)]
        out = F.conv2d(*ts, **kwargs)
        out.backward(ember.tensor(np.cos(np.arange(out.numel())).reshape(out.shape),
                                  dtype=ember.float32))
        return [out.array] + [t.grad.array for t in ts]

    split = run(True)
    assert 2 in calls or ember.blas.get_num_threads() == 1  # the stack really was split
    for a, b_ in zip(split, run(False)):
        np.testing.assert_array_equal(a, b_)


def test_conv_output_is_contiguous_and_batch_independent():
    rng = np.random.default_rng(4)
    x = ember.tensor(rng.standard_normal((3, 2, 6, 6)).astype(np.float32))
    w = ember.tensor(rng.standard_normal((4, 2, 3, 3)).astype(np.float32))
    out = F.conv2d(x, w, padding=1)
    assert out.array.flags.c_contiguous
    single = F.conv2d(x[1:2], w, padding=1)
    np.testing.assert_allclose(out.array[1:2], single.array, rtol=1e-6, atol=1e-6)


def test_conv_without_input_grad_skips_it():
    rng = np.random.default_rng(5)
    x = ember.tensor(rng.standard_normal((2, 3, 5, 5)))
    w = ember.tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    F.conv2d(x, w).sum().backward()
    assert x.grad is None and w.grad is not None


# ---------------------------------------------------------------- bad input
def conv_inputs(x_shape=(2, 3, 6, 6), w_shape=(4, 3, 3, 3)):
    return ember.zeros(*x_shape), ember.zeros(*w_shape)


@pytest.mark.parametrize("call,words", [
    (lambda: F.conv2d(*conv_inputs((3, 6, 6, 6, 1))), ["conv2d", "(3, 6, 6, 6, 1)"]),
    (lambda: F.conv2d(*conv_inputs((6, 6))), ["conv2d", "(6, 6)"]),
    (lambda: F.conv2d(*conv_inputs((2, 5, 6, 6))), ["conv2d", "3 channels", "got 5"]),
    (lambda: F.conv2d(*conv_inputs((2, 4, 6, 6), (4, 2, 3, 3)), groups=4),
     ["conv2d", "8 channels", "got 4"]),
    (lambda: F.conv2d(*conv_inputs((2, 3, 6, 6), (5, 1, 3, 3)), groups=3),
     ["divisible by 3"]),
    (lambda: F.conv2d(*conv_inputs((2, 3, 4, 4), (4, 3, 5, 5))),
     ["conv2d", "(4 x 4)", "(5 x 5)"]),
    (lambda: F.conv2d(*conv_inputs((2, 3, 6, 6)), dilation=3),
     ["conv2d", "(6 x 6)", "(7 x 7)"]),
    (lambda: F.conv2d(*conv_inputs((2, 3, 4, 4), (4, 3, 5, 5)), padding=(1, 0)),
     ["(6 x 4)", "(5 x 5)"]),
    (lambda: F.conv2d(*conv_inputs(), stride=0), ["conv2d", "stride"]),
    (lambda: F.conv2d(*conv_inputs(), stride=(1, 2, 3)), ["conv2d", "stride", "(1, 2, 3)"]),
    (lambda: F.conv2d(*conv_inputs(), padding=-1), ["conv2d", "negative padding"]),
    (lambda: F.conv2d(*conv_inputs(), padding="full"), ["conv2d", "'full'", "same"]),
    (lambda: F.conv2d(*conv_inputs(), padding="same", stride=2), ["same", "strided"]),
    (lambda: F.conv2d(*conv_inputs(), dilation=0), ["conv2d", "dilation"]),
    (lambda: F.conv2d(*conv_inputs(), groups=0), ["conv2d", "groups"]),
    (lambda: F.conv2d(*conv_inputs(), ember.zeros(3)), ["bias", "4 elements"]),
    (lambda: F.conv1d(ember.zeros(2, 3, 4, 4), ember.zeros(2, 3, 3)), ["conv1d", "(2, 3, 4, 4)"]),
    (lambda: F.conv1d(ember.zeros(2, 3, 2), ember.zeros(2, 3, 3)), ["conv1d", "(1 x 2)"]),
    (lambda: F.conv_transpose2d(ember.zeros(1, 2, 3, 3), ember.zeros(2, 2, 3, 3),
                                output_padding=1), ["output padding", "stride"]),
    (lambda: F.conv_transpose2d(ember.zeros(1, 3, 3, 3), ember.zeros(2, 2, 3, 3)),
     ["conv_transpose2d", "2 channels", "got 3"]),
    (lambda: F.max_pool2d(ember.zeros(1, 1, 5, 5), 3, padding=2), ["pad", "half"]),
    (lambda: F.max_pool2d(ember.zeros(1, 1, 5, 5), 7), ["max_pool2d", "too small"]),
    (lambda: F.max_pool2d(ember.zeros(1, 1, 5, 5), 2, stride=0), ["max_pool2d", "stride"]),
    (lambda: F.max_pool2d(ember.zeros(5, 5), 2), ["max_pool2d", "(5, 5)"]),
    (lambda: F.avg_pool2d(ember.zeros(1, 1, 5, 5), 2, divisor_override=0), ["divisor"]),
    (lambda: F.adaptive_avg_pool2d(ember.zeros(1, 1, 5, 5), (0, 2)), ["output_size"]),
    (lambda: F.interpolate(ember.zeros(1, 1, 5, 5)), ["size or scale_factor"]),
    (lambda: F.interpolate(ember.zeros(1, 1, 5, 5), size=2, scale_factor=2), ["only one"]),
    (lambda: F.interpolate(ember.zeros(1, 1, 5, 5), size=(2,)), ["spatial dimensions"]),
    (lambda: F.interpolate(ember.zeros(1, 1, 5, 5), size=2, align_corners=True),
     ["align_corners"]),
    (lambda: F.interpolate(ember.zeros(1, 1, 5), size=2, mode="bilinear"), ["bilinear", "4D"]),
    (lambda: F.interpolate(ember.zeros(1, 1, 5, 5), size=2, mode="cubic"), ["'cubic'"]),
    (lambda: F.pixel_shuffle(ember.zeros(1, 3, 2, 2), 2), ["pixel_shuffle", "divisible by 4"]),
    (lambda: F.pixel_unshuffle(ember.zeros(1, 1, 3, 4), 2), ["pixel_unshuffle", "divisible"]),
])
def test_bad_arguments_raise_clear_value_errors(call, words):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_dtype_mismatch_raises_type_error():
    with pytest.raises(TypeError, match="conv2d.*float64.*float32"):
        F.conv2d(ember.zeros(1, 3, 5, 5, dtype=ember.float64), ember.zeros(2, 3, 3, 3))


def test_max_unpool_rejects_out_of_range_indices():
    idx = ember.tensor(np.full((1, 1, 2, 2), 99, dtype=np.int64))
    with pytest.raises(IndexError, match="invalid max index 99"):
        F.max_unpool2d(ember.zeros(1, 1, 2, 2), idx, 2)


@pytest.mark.parametrize("op,args,kwargs", [
    ("conv2d", [(4, 3, 3, 3)], dict(padding=1)),
    ("conv2d", [(4, 3, 3, 3)], dict(stride=2)),
    ("conv_transpose2d", [(3, 4, 3, 3)], dict(stride=2)),
    ("max_pool2d", [], dict(kernel_size=2)),
    ("avg_pool2d", [], dict(kernel_size=3, stride=2, padding=1)),
    ("adaptive_max_pool2d", [], dict(output_size=2)),
    ("interpolate", [], dict(scale_factor=2, mode="bilinear")),
])
def test_empty_batch(op, args, kwargs):
    x = np.zeros((0, 3, 6, 6))
    weights = [np.ones(s) for s in args]
    expected = getattr(TF, op)(torch.tensor(x), *map(torch.tensor, weights), **kwargs)
    xt = ember.tensor(x, dtype=ember.float64, requires_grad=True)
    out = getattr(F, op)(xt, *[ember.tensor(w, dtype=ember.float64) for w in weights], **kwargs)
    assert tuple(out.shape) == tuple(expected.shape)
    out.sum().backward()
    assert xt.grad.shape == x.shape


@pytest.mark.parametrize("sample_layout", [True, False])
def test_threaded_copies_equal_the_single_threaded_path(monkeypatch, sample_layout):
    """ember.parallel splits im2col, col2im, layout copies and pooling by rows; every
    result of conv2d, conv_transpose2d and the pools must be bit-identical to one thread."""
    from ember import blas, parallel
    from ember.ops import conv
    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal((5, 4, 9, 8)), rng.standard_normal((6, 4, 3, 3)), \
        rng.standard_normal(6)
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", sample_layout)
    monkeypatch.setattr(conv, "BLOCKED", False)  # its own test splits blocks by threads

    def run():
        results = []
        for fn, kwargs in ((F.conv2d, dict(padding=1)), (F.conv2d, dict(stride=2)),
                           (F.conv_transpose2d, dict(stride=2, padding=1))):
            weight = w if fn is F.conv2d else w.transpose(1, 0, 2, 3)[:, :4]
            ts = [ember.tensor(a, dtype=ember.float64, requires_grad=True)
                  for a in (x, weight, b[:weight.shape[0 if fn is F.conv2d else 1]])]
            out = fn(*ts, **kwargs)
            out.backward(ember.tensor(np.sin(np.arange(out.numel())).reshape(out.shape),
                                      dtype=ember.float64))
            results += [out.array] + [t.grad.array for t in ts]
        for pool_fn, kwargs in ((F.max_pool2d, dict(kernel_size=2)),
                                (F.max_pool2d, dict(kernel_size=3, stride=2, padding=1,
                                                    ceil_mode=True)),
                                (F.avg_pool2d, dict(kernel_size=3, stride=2, padding=1))):
            xt = ember.tensor(x, dtype=ember.float64, requires_grad=True)
            out = pool_fn(xt, **kwargs)
            out.backward(ember.tensor(np.cos(np.arange(out.numel())).reshape(out.shape),
                                      dtype=ember.float64))
            results += [out.array, xt.grad.array]
        return results

    single = run()
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "_enabled", True)
    monkeypatch.setattr(blas, "get_num_threads", lambda: 3)
    threaded = run()
    for a, b_ in zip(single, threaded):
        np.testing.assert_array_equal(a, b_)


@pytest.mark.parametrize("shapes,kwargs", [
    (((3, 4, 9, 8), (6, 4, 3, 3)), dict(padding=1)),
    (((2, 6, 10, 9), (6, 3, 3, 3)), dict(padding=1, groups=2)),
    (((2, 4, 11, 10), (4, 4, 3, 2)), dict(padding="same", dilation=(2, 1))),
    (((2, 3, 8, 8), (5, 3, 5, 5)), dict(padding=2)),
    (((2, 3, 8, 7), (4, 3, 3, 3)), dict()),
])
@pytest.mark.parametrize("samples_per_slice", [None, 1, 2])
def test_weight_gradient_from_the_backward_columns_matches_torch(monkeypatch, shapes, kwargs,
                                                                 samples_per_slice):
    """Stride-1 convs in the long layout keep their input, not their columns, and take the
    weight gradient from the output gradient's columns (back_conv_grads), whole or in
    slices of the batch (the last one shorter for a batch of 3)."""
    from ember.ops import conv
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    monkeypatch.setattr(conv, "BLOCKED", False)  # the whole-batch layout
    monkeypatch.setattr(conv, "GRAD_CONV_MAX_RATIO", 100.0)
    calls = []
    if samples_per_slice:  # a slice's columns: C_out*kh*kw*oh*ow per sample (float64)
        unsliced = conv.back_conv_grads_of
        monkeypatch.setattr(conv, "back_conv_grads_of",
                            lambda g, *a: calls.append(len(g)) or unsliced(g, *a))
        per_sample = np.prod(F.conv2d(ember.zeros(*shapes[0]), ember.zeros(*shapes[1]),
                                      **kwargs).shape[1:]) * shapes[1][2] * shapes[1][3] * 8
        monkeypatch.setattr(conv, "BACK_COLUMNS_BYTES", samples_per_slice * per_sample)
    rng = np.random.default_rng(9)
    x, w = (rng.standard_normal(s) for s in shapes)
    b = rng.standard_normal(w.shape[0])
    ts = [ember.tensor(a, dtype=ember.float64, requires_grad=True) for a in (x, w, b)]
    out = F.conv2d(*ts, **kwargs)
    assert out.grad_fn.keeps_input and out.grad_fn.saved[0] is ts[0].array
    g = np.cos(np.arange(out.numel())).reshape(out.shape)
    out.backward(ember.tensor(g, dtype=ember.float64))
    tt = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    expected = TF.conv2d(*tt, **kwargs)
    expected.backward(torch.tensor(g))
    np.testing.assert_allclose(out.array, expected.detach().numpy(), rtol=1e-7, atol=1e-9)
    for mine, theirs in zip(ts, tt):
        np.testing.assert_allclose(mine.grad.array, theirs.grad.numpy(), rtol=1e-7, atol=1e-9)
    if samples_per_slice:
        assert calls == [min(samples_per_slice, len(x) - i)
                         for i in range(0, len(x), samples_per_slice)]


@pytest.mark.parametrize("c_in, c_out", [(4, 6), (6, 4)])  # C_out <= 2 C_in: input kept
def test_weight_gradient_alone_uses_the_smaller_columns_and_matches_torch(monkeypatch, c_in,
                                                                          c_out):
    """A layer whose input needs no grad: with C_in < C_out the input's columns are
    rebuilt (smaller than the output gradient's); otherwise the backward columns serve."""
    from ember.ops import conv
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    monkeypatch.setattr(conv, "BLOCKED", False)  # the whole-batch layout
    calls = []
    for name in ("conv_grads", "back_conv_grads"):
        real = getattr(conv, name)
        monkeypatch.setattr(conv, name, lambda *a, real=real, name=name:
                            calls.append(name) or real(*a))
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, c_in, 7, 6)), rng.standard_normal((c_out, c_in, 3, 3))
    ew = ember.tensor(w, dtype=ember.float64, requires_grad=True)
    out = F.conv2d(ember.tensor(x, dtype=ember.float64), ew, padding=1)
    g = np.sin(np.arange(out.numel())).reshape(out.shape)
    out.backward(ember.tensor(g, dtype=ember.float64))
    tw = torch.tensor(w, requires_grad=True)
    TF.conv2d(torch.tensor(x), tw, padding=1).backward(torch.tensor(g))
    np.testing.assert_allclose(ew.grad.array, tw.grad.numpy(), rtol=1e-7, atol=1e-9)
    assert calls == ["conv_grads" if c_in < c_out else "back_conv_grads"]


# ---------------------------------------------------------------- cache-blocked path
BLOCKED_CASES = [
    (((5, 4, 9, 8), (6, 4, 3, 3)), dict(padding=1)),
    (((5, 3, 10, 9), (2, 3, 5, 5)), dict(padding=2)),
    (((3, 4, 11, 10), (4, 4, 3, 2)), dict(padding="same", dilation=(2, 1))),
    (((3, 2, 8, 7), (4, 2, 3, 3)), dict()),                 # no padding
    (((4, 3, 7, 9), (5, 3, 2, 3)), dict(padding=(1, 0))),  # uneven kernel and padding
    (((4, 4, 10, 8), (6, 4, 3, 3)), dict(padding=1)),      # Winograd's weight gradient
]


def use_layout(monkeypatch, layout):
    """Force conv_blocked's narrow layout (compiled im2col) or its wide one."""
    from ember.ops import conv_blocked, kernels
    if layout == "narrow" and not kernels.enabled():
        pytest.skip("the narrow layout needs Numba")
    monkeypatch.setattr(conv_blocked, "NARROW_MIN_WASTE", -1 if layout == "narrow" else 1e9)


@pytest.mark.parametrize("shapes,kwargs", BLOCKED_CASES)
@pytest.mark.parametrize("per_block, threads", [(None, True), (2, True), (2, False), (1, 3)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", ["wide", "narrow"])
def test_blocked_conv_matches_torch(monkeypatch, shapes, kwargs, per_block, threads, bias,
                                    layout):
    """conv_blocked: output and all gradients against torch in float64, with one block
    or blocks of 1-2 samples (a shorter last one), on one, two or three threads, in the
    wide layout and in the narrow one (compiled im2col)."""
    from ember import blas
    from ember.ops import conv, conv_blocked
    use_layout(monkeypatch, layout)
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    if per_block:  # bytes of one sample's columns, float64
        out_hw = np.prod(TF.conv2d(torch.zeros(shapes[0]), torch.zeros(shapes[1]),
                                   **kwargs).shape[2:])
        monkeypatch.setattr(conv_blocked, "BLOCK_BYTES",
                            per_block * int(np.prod(shapes[1][1:]) * out_hw) * 8)
    if threads == 3:
        monkeypatch.setattr(blas, "get_num_threads", lambda: 3)
    else:
        monkeypatch.setattr(conv_blocked, "THREADS", threads)
    rng = np.random.default_rng(10)
    arrays = [rng.standard_normal(s) for s in shapes] + [rng.standard_normal(shapes[1][0])]
    arrays = arrays if bias else arrays[:2]
    ts = [ember.tensor(a, dtype=ember.float64, requires_grad=True) for a in arrays]
    out = F.conv2d(*ts, **kwargs)
    assert out.grad_fn.blocked and out.array.flags.c_contiguous
    g = np.cos(np.arange(out.numel())).reshape(out.shape)
    out.backward(ember.tensor(g, dtype=ember.float64))
    tt = [torch.tensor(a, requires_grad=True) for a in arrays]
    expected = TF.conv2d(*tt, **kwargs)
    expected.backward(torch.tensor(g))
    np.testing.assert_allclose(out.array, expected.detach().numpy(), rtol=1e-9, atol=1e-11)
    for mine, theirs in zip(ts, tt):
        np.testing.assert_allclose(mine.grad.array, theirs.grad.numpy(), rtol=1e-9,
                                   atol=1e-11)


WINOGRAD_CASES = [((5, 4, 8, 6), (6, 4, 3, 3)), ((3, 5, 4, 10), (7, 5, 3, 3)),
                  ((4, 3, 2, 2), (2, 3, 3, 3))]


@pytest.mark.parametrize("shapes", WINOGRAD_CASES)
@pytest.mark.parametrize("per_block, threads", [(None, True), (1, True), (2, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_winograd_conv_matches_torch(monkeypatch, shapes, per_block, threads, bias):
    """conv_blocked's Winograd F(2x2, 3x3) path (3x3, stride 1, padding 1, even sizes):
    output and all gradients against torch in float64 (the input gradient is a Winograd
    convolution too, and the weight gradient Winograd's own), one block or blocks of 1-2
    samples, on 1-3 threads."""
    from ember import blas
    from ember.ops import conv, conv_blocked
    use_layout(monkeypatch, "narrow")
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    monkeypatch.setattr(conv_blocked, "WINOGRAD", True)  # whichever products run
    taken, grads = [], []
    real = conv_blocked._winograd_forward
    monkeypatch.setattr(conv_blocked, "_winograd_forward", lambda *a: taken.append(1) or real(*a))
    real_grad = conv_blocked._winograd_weight_grad
    monkeypatch.setattr(conv_blocked, "_winograd_weight_grad",
                        lambda *a: grads.append(1) or real_grad(*a))
    if per_block:  # bytes of one sample's transformed tiles, float64
        tiles = shapes[0][2] * shapes[0][3] // 4
        monkeypatch.setattr(conv_blocked, "WINOGRAD_BLOCK_BYTES",
                            per_block * 16 * shapes[1][1] * tiles * 8)
        monkeypatch.setattr(conv_blocked, "WINOGRAD_GRAD_BLOCK_BYTES",
                            per_block * 16 * (shapes[1][1] + shapes[1][0]) * tiles * 8)
    if threads == 3:
        monkeypatch.setattr(blas, "get_num_threads", lambda: 3)
    rng = np.random.default_rng(13)
    arrays = [rng.standard_normal(s) for s in shapes] + [rng.standard_normal(shapes[1][0])]
    arrays = arrays if bias else arrays[:2]
    ts = [ember.tensor(a, dtype=ember.float64, requires_grad=True) for a in arrays]
    out = F.conv2d(*ts, padding=1)
    g = np.cos(np.arange(out.numel())).reshape(out.shape)
    out.backward(ember.tensor(g, dtype=ember.float64))
    assert len(taken) == 2 and len(grads) == 1  # forward, input and weight gradients
    tt = [torch.tensor(a, requires_grad=True) for a in arrays]
    expected = TF.conv2d(*tt, padding=1)
    expected.backward(torch.tensor(g))
    np.testing.assert_allclose(out.array, expected.detach().numpy(), rtol=1e-9, atol=1e-11)
    for mine, theirs in zip(ts, tt):
        np.testing.assert_allclose(mine.grad.array, theirs.grad.numpy(), rtol=1e-9,
                                   atol=1e-11)


def test_winograd_float32_is_as_close_to_torch_as_the_direct_path(monkeypatch):
    """In float32 Winograd rounds differently from im2col + GEMM: both stay within a few
    float32 ulps of the exact result, and the same bits come on any number of threads."""
    from ember import blas
    from ember.ops import conv, conv_blocked
    use_layout(monkeypatch, "narrow")
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    monkeypatch.setattr(conv_blocked, "WINOGRAD", True)  # whichever products run
    monkeypatch.setattr(conv_blocked, "WINOGRAD_BLOCK_BYTES", 16 * 24 * 16 * 4)  # 1 sample
    rng = np.random.default_rng(14)
    x, w = rng.standard_normal((6, 24, 8, 8)), rng.standard_normal((16, 24, 3, 3)) * 0.1
    exact = TF.conv2d(torch.tensor(x), torch.tensor(w), padding=1).numpy()
    x32, w32 = ember.tensor(x.astype(np.float32)), ember.tensor(w.astype(np.float32))
    winograd = F.conv2d(x32, w32, padding=1).array
    monkeypatch.setattr(blas, "get_num_threads", lambda: 3)
    assert F.conv2d(x32, w32, padding=1).array.tobytes() == winograd.tobytes()
    monkeypatch.setattr(conv_blocked, "WINOGRAD", False)
    direct = F.conv2d(x32, w32, padding=1).array
    scale = np.abs(exact).max()
    err_winograd = np.abs(winograd - exact).max() / scale
    err_direct = np.abs(direct - exact).max() / scale
    assert err_winograd < 4 * np.finfo(np.float32).eps * 8 and err_direct < 1e-6
    assert not np.array_equal(winograd, direct)  # the two paths really differ


def assert_same_non_finite(got, expected, dtype):
    """NaN, +inf and -inf exactly where ``expected`` has them, the rest close."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(expected))
    finite = np.isfinite(expected)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got[finite], expected[finite], rtol=tol, atol=tol)


def test_winograd_weight_gradient_float32_is_as_close_as_im2cols(monkeypatch):
    """Winograd's weight gradient rounds differently from im2col + GEMM in float32: both
    within a few float32 ulps of the exact sum, and the same bits on any number of threads
    (the blocks' parts are added in block order, and the blocks do not depend on it)."""
    from ember import blas
    from ember.ops import conv, conv_blocked
    use_layout(monkeypatch, "narrow")
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    rng = np.random.default_rng(17)
    x, g = rng.standard_normal((12, 24, 8, 8)), rng.standard_normal((12, 32, 8, 8))
    exact = torch.nn.grad.conv2d_weight(torch.tensor(x), (32, 24, 3, 3), torch.tensor(g),
                                        padding=1).numpy()
    x32, g32 = x.astype(np.float32), g.astype(np.float32)
    win = conv.conv_window("conv2d", x.shape, (32, 24, 3, 3), 1, 1, 1)
    monkeypatch.setattr(conv_blocked, "WINOGRAD_GRAD_BLOCK_BYTES", 1 << 16)  # 2 samples
    winograd = conv_blocked.weight_grad(x32, g32, win)
    for threads in (1, 3):
        monkeypatch.setattr(blas, "get_num_threads", lambda t=threads: t)
        assert conv_blocked.weight_grad(x32, g32, win).tobytes() == winograd.tobytes()
    monkeypatch.setattr(conv_blocked, "WINOGRAD_WEIGHT_GRAD", False)
    direct = conv_blocked.weight_grad(x32, g32, win)
    scale, exact = np.abs(exact).max(), exact.reshape(32, -1)
    err_winograd = np.abs(winograd - exact).max() / scale
    err_direct = np.abs(direct - exact).max() / scale
    assert err_winograd < 16 * np.finfo(np.float32).eps and err_direct < 16 * 1.2e-7
    assert not np.array_equal(winograd, direct)  # the two paths really differ


def test_winograd_gradient_transform_kernel_is_a_g_a_transposed():
    """The compiled output-gradient transform gives A g A^T of every 2x2 tile, in the
    (16, k, n, tiles) layout of the input transform, with NumPy's bits when NumPy sums in
    the kernel's order (along x, then along y)."""
    from ember.ops import kernels
    if not kernels.enabled():
        pytest.skip("the Winograd transforms need Numba")
    rng = np.random.default_rng(18)
    g = rng.standard_normal((3, 5, 6, 8))
    z = np.empty((16, 5, 3, 12))
    kernels.winograd_grad(g, z)
    a = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, -1.0]])
    tiles = g.reshape(3, 5, 3, 2, 4, 2).transpose(0, 1, 2, 4, 3, 5)  # (n, k, ty, tx, 2, 2)
    expected = (a @ (tiles @ a.T)).reshape(3, 5, 12, 16).transpose(3, 1, 0, 2)
    np.testing.assert_array_equal(z, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", ["inf input", "nan gradient", "inf gradient"])
def test_winograd_weight_gradient_with_non_finite_values_is_torchs(monkeypatch, dtype, bad):
    """The weight gradient's transforms subtract neighbours too: where they give NaN the
    gradient is made again by im2col, so every inf, NaN and finite value is torch's."""
    from ember.ops import conv, conv_blocked, kernels
    if not kernels.enabled():
        pytest.skip("the Winograd transforms need Numba")
    use_layout(monkeypatch, "narrow")
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    rng = np.random.default_rng(19)
    x, g = rng.standard_normal((4, 6, 8, 8)), rng.standard_normal((4, 5, 8, 8))
    if bad == "inf input":
        x[0, 1, 3, 3], x[2, 4, 0, 7] = np.inf, -np.inf
    elif bad == "nan gradient":
        g[1, 2, 4, 4] = np.nan
    else:
        g[3, 0, 5, 2] = np.inf
    expected = torch.nn.grad.conv2d_weight(torch.tensor(x), (5, 6, 3, 3), torch.tensor(g),
                                           padding=1).numpy().reshape(5, -1)
    win = conv.conv_window("conv2d", x.shape, (5, 6, 3, 3), 1, 1, 1)
    with np.errstate(invalid="ignore"):
        got = conv_blocked.weight_grad(x.astype(dtype), g.astype(dtype), win)
    assert got.dtype == dtype and (np.isinf(expected).any() or np.isnan(expected).any())
    assert_same_non_finite(got, expected, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_weight_transform_kernel_equals_numpys_products(monkeypatch, dtype):
    """The compiled G w G^T gives the values of NumPy's two stacked products (NaN where
    they give NaN: 0 * inf), and the Winograd path really uses it."""
    from ember.ops import conv_blocked, kernels
    if not kernels.enabled():
        pytest.skip("the Winograd transforms need Numba")
    rng = np.random.default_rng(15)
    w = rng.standard_normal((7, 5, 3, 3)).astype(dtype)
    w[0, 0, 0, :] = [0.0, -0.0, np.finfo(dtype).tiny / 4]  # zeros and a denormal
    w[0, 1, 1, 1], w[0, 2, 2, 0], w[0, 3, 0, 2] = np.inf, -np.inf, np.nan
    g = np.asarray(conv_blocked._G, dtype)
    expected = np.matmul(np.matmul(g, w), g.T).transpose(2, 3, 0, 1).reshape(16, 7, 5)
    calls = []
    real = kernels.winograd_weights
    monkeypatch.setattr(kernels, "winograd_weights", lambda *a: calls.append(1) or real(*a))
    with np.errstate(invalid="ignore"):
        got = conv_blocked._winograd_weights(w)
    assert calls and got.dtype == dtype and got.shape == (16, 7, 5)
    np.testing.assert_array_equal(got, expected)  # NaN where expected has NaN
    assert np.isnan(got).any() and np.isinf(got).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", ["inf input", "nan input", "inf weight"])
def test_winograd_with_non_finite_values_gives_torchs_inf_and_nan(monkeypatch, dtype, bad):
    """Winograd's transforms subtract neighbours, so an infinite input gave inf - inf = NaN
    where the direct sum gives +-inf: such a layer is recomputed the direct way, and every
    inf, NaN and finite value is torch's (float64, whose convolution is im2col + GEMM
    too: an infinite weight times the zero padding is NaN there as well)."""
    from ember.ops import conv, conv_blocked, kernels
    if not kernels.enabled():
        pytest.skip("the Winograd transforms need Numba")
    use_layout(monkeypatch, "narrow")
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    monkeypatch.setattr(conv_blocked, "WINOGRAD", True)  # whichever products run
    monkeypatch.setattr(conv_blocked, "WINOGRAD_BLOCK_BYTES", 16 * 6 * 16 * 8)  # 1-2 samples
    taken = []
    real = conv_blocked._winograd_forward
    monkeypatch.setattr(conv_blocked, "_winograd_forward", lambda *a: taken.append(1) or real(*a))
    rng = np.random.default_rng(16)
    x, w = rng.standard_normal((4, 6, 8, 8)), rng.standard_normal((5, 6, 3, 3))
    if bad == "inf input":
        x[0, 1, 3, 3], x[2, 4, 0, 7], x[3, 0, 5, 2] = np.inf, -np.inf, np.inf
    elif bad == "nan input":
        x[1, 2, 4, 4] = np.nan
    else:
        w[2, 3, 0, 1] = np.inf
    x, w = x.astype(dtype), w.astype(dtype)
    kind = ember.float32 if dtype == np.float32 else ember.float64
    with np.errstate(invalid="ignore"):
        got = F.conv2d(ember.tensor(x, dtype=kind), ember.tensor(w, dtype=kind), padding=1)
    got = got.array
    expected = TF.conv2d(torch.tensor(x, dtype=torch.float64),
                         torch.tensor(w, dtype=torch.float64), padding=1).numpy()
    assert taken and got.dtype == dtype
    assert np.isinf(expected).any() or np.isnan(expected).any()
    assert_same_non_finite(got, expected, dtype)


@pytest.mark.parametrize("shape, kwargs, expected", [
    ((2, 4, 8, 8), dict(padding=1), True),
    ((2, 4, 8, 6), dict(padding=1), True),
    ((2, 4, 7, 8), dict(padding=1), False),             # odd output size
    ((2, 4, 8, 8), dict(padding=1, stride=2), False),
    ((2, 4, 8, 8), dict(padding=2, dilation=2), False),
    ((2, 4, 10, 10), dict(), False),                    # no padding
    ((2, 4, 32, 32), dict(padding=1), False),           # wide layout (big images)
])
def test_winograd_is_taken_only_where_it_applies(monkeypatch, shape, kwargs, expected):
    from ember.ops import conv, conv_blocked, kernels
    if not kernels.enabled():
        pytest.skip("the Winograd transforms need Numba")
    monkeypatch.setattr(conv_blocked, "WINOGRAD", True)
    full = dict(stride=1, padding=0, dilation=1) | kwargs
    win = conv.conv_window("conv2d", shape, (4, 4, 3, 3), full["stride"], full["padding"],
                           full["dilation"])
    assert conv_blocked.winograd(win, np.dtype(np.float32)) is expected


def test_blocked_conv_float32_weight_gradient_alone(monkeypatch):
    """A first layer (input without grad) in float32: only the weight gradient is built."""
    from ember.ops import conv, conv_blocked, simd_conv
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    monkeypatch.setattr(simd_conv, "ENABLED", False)  # the blocked layout, not the direct one
    called = []
    real = conv_blocked.forward
    monkeypatch.setattr(conv_blocked, "forward", lambda *a: called.append(1) or real(*a))
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((3, 3, 12, 12)), rng.standard_normal((8, 3, 3, 3))
    ew = ember.tensor(w, requires_grad=True)
    out = F.conv2d(ember.tensor(x), ew, padding=1)
    out.sum().backward()
    assert len(called) == 1  # the forward only: no input gradient was computed
    tw = torch.tensor(w, dtype=torch.float32, requires_grad=True)
    TF.conv2d(torch.tensor(x, dtype=torch.float32), tw, padding=1).sum().backward()
    assert ew.grad.dtype == ember.float32
    np.testing.assert_allclose(ew.grad.array, tw.grad.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kwargs, blocked", [
    (dict(padding=1), True),
    (dict(padding=1, stride=2), False),      # input gradient is no stride-1 convolution
    (dict(padding=1, groups=2), False),      # one group only
    (dict(padding=3), False),                 # padding beyond the kernel's reach
])
def test_blocked_path_is_taken_only_where_it_applies(monkeypatch, kwargs, blocked):
    from ember.ops import conv
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    out = F.conv2d(ember.zeros(2, 4, 8, 8, requires_grad=True), ember.zeros(4, 4, 3, 3)
                   if "groups" not in kwargs else ember.zeros(4, 2, 3, 3), **kwargs)
    assert out.grad_fn.blocked is blocked


@pytest.mark.parametrize("layout", ["wide", "narrow"])
def test_blocked_conv_gives_the_same_bits_on_any_number_of_threads(monkeypatch, layout):
    """Threads take blocks in whatever order they finish, but each block's products are
    the same and the weight gradient adds the blocks' parts in block order."""
    from ember import blas
    from ember.ops import conv, conv_blocked
    use_layout(monkeypatch, layout)
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    monkeypatch.setattr(conv_blocked, "BLOCK_BYTES", 4 * 9 * 8 * 8 * 4)  # one sample per block
    rng = np.random.default_rng(12)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((9, 4, 8, 8), (5, 4, 3, 3))]

    def run():
        ts = [ember.tensor(a, requires_grad=True) for a in arrays]
        out = F.conv2d(*ts, padding=1)
        out.backward(ember.tensor(np.sin(np.arange(out.numel())).reshape(out.shape),
                                  dtype=ember.float32))
        return [out.array] + [t.grad.array for t in ts]

    monkeypatch.setattr(conv_blocked, "THREADS", False)
    one = run()
    monkeypatch.setattr(conv_blocked, "THREADS", True)
    for threads in (2, 3):
        monkeypatch.setattr(blas, "get_num_threads", lambda threads=threads: threads)
        for _ in range(3):
            for a, b_ in zip(one, run()):
                np.testing.assert_array_equal(a, b_)


@pytest.mark.parametrize("layout", ["wide", "narrow"])
def test_blocked_weight_gradient_of_a_strided_output_gradient(monkeypatch, layout):
    """An output gradient that is a view (here of a (n, C_out, w, h) array) gives the
    weight gradient of its contiguous copy, in float64 to torch's precision."""
    from ember.ops import conv, conv_blocked
    use_layout(monkeypatch, layout)
    rng = np.random.default_rng(13)
    x, g = rng.standard_normal((3, 4, 6, 6)), rng.standard_normal((3, 5, 6, 6))
    win = conv.conv_window("conv2d", x.shape, (5, 4, 3, 3), 1, 1, 1)
    strided = np.ascontiguousarray(g.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not strided.flags.c_contiguous
    got = conv_blocked.weight_grad(x, strided, win).reshape(5, 4, 3, 3)
    expected = torch.nn.grad.conv2d_weight(torch.tensor(x), (5, 4, 3, 3), torch.tensor(g),
                                           padding=1)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("hw, narrow", [(32, False), (16, True), (8, True)])
@pytest.mark.parametrize("compiled", [True, False])
def test_blocked_layers_take_the_narrow_layout_where_wide_rows_waste_most(hw, narrow,
                                                                          compiled):
    """3x3, padding 1: wide rows compute 2 extra columns per row, 6% of a 32x32 layer's
    products (NumPy's long copies win) and 12-25% at 16x16 and 8x8 (the compiled im2col
    wins; docs/performance.md, section 15). Without Numba, always wide."""
    from ember.ops import conv_blocked, kernels
    if compiled and not kernels.enabled():
        pytest.skip("Numba is not installed")
    previous = kernels.set_enabled(compiled)
    try:
        win = conv_window_of((128, 48, hw, hw), (48, 48, 3, 3), dict(padding=1))
        assert conv_blocked.narrow(win, np.dtype(np.float32)) is (narrow and compiled)
        assert not conv_blocked.narrow(win, np.dtype(np.float16))  # no compiled float16
    finally:
        kernels.set_enabled(previous)


@pytest.mark.parametrize("shape, weight, kwargs, layout", [
    ((64, 1, 28, 28), (6, 1, 5, 5), dict(padding=2), "per_sample"),   # LeNet-5's first layer
    ((128, 3, 32, 32), (24, 3, 3, 3), dict(padding=1), "per_sample"),  # the CIFAR CNN's first
    ((1000, 1, 28, 28), (6, 1, 5, 5), dict(padding=2), "blocked"),    # ... at batch 1000
    ((64, 6, 14, 14), (16, 6, 5, 5), dict(), "per_sample|blocked"),     # LeNet-5's second
    ((128, 24, 32, 32), (24, 24, 3, 3), dict(padding=1), "blocked"),
    ((64, 6, 14, 14), (16, 6, 5, 5), dict(stride=2), "per_sample"),    # strided: not blocked
    ((64, 8, 32, 32), (64, 8, 3, 3), dict(stride=2, padding=1), "long"),
])
@pytest.mark.parametrize("compiled", [True, False])
def test_each_layer_takes_the_layout_measured_best_for_it(shape, weight, kwargs, layout,
                                                          compiled):
    """The layout choice (conv.py's module docstring; docs/performance.md sections 12
    and 13). "a|b": layout a with the compiled kernels (ember/ops/kernels.py), b without."""
    from ember.ops import conv, kernels
    if compiled and not kernels.enabled():
        pytest.skip("Numba is not installed")
    previous = kernels.set_enabled(compiled)
    try:
        win = conv_window_of(shape, weight, kwargs)
        chosen_blocked = conv.blocked(win, 1) and not conv.stays_per_sample(win, weight[0])
        chosen = "blocked" if chosen_blocked else \
            "per_sample" if conv.per_sample(win, weight[0]) else "long"
    finally:
        kernels.set_enabled(previous)
    assert chosen == layout.split("|")[0 if compiled else -1]


def conv_window_of(shape, weight, kwargs):
    from ember.ops import conv
    return conv.conv_window("conv2d", shape, weight, kwargs.get("stride", 1),
                            kwargs.get("padding", 0), 1)


@pytest.mark.parametrize("shape, kwargs, expected", [
    ((2, 4, 32, 32), dict(padding=1), True),            # wide layout: forward im2col
    ((2, 4, 8, 8), dict(padding=1), True),
    ((2, 4, 7, 8), dict(padding=1), False),             # odd output size
    ((2, 4, 8, 8), dict(padding=1, stride=2), False),
    ((2, 4, 10, 10), dict(), False),                    # no padding
])
def test_winograd_weight_gradient_is_taken_where_its_shape_fits(shape, kwargs, expected):
    """The weight gradient is Winograd's for every 3x3, stride-1, padding-1 layer with an
    even output, big images included (their forward stays im2col)."""
    from ember.ops import conv, conv_blocked, kernels
    if not kernels.enabled():
        pytest.skip("the Winograd transforms need Numba")
    full = dict(stride=1, padding=0, dilation=1) | kwargs
    win = conv.conv_window("conv2d", shape, (4, 4, 3, 3), full["stride"], full["padding"],
                           full["dilation"])
    assert conv_blocked.winograd_weight_grad(win, np.dtype(np.float32)) is expected
    assert conv_blocked.winograd_weight_grad(win, np.dtype(np.float16)) is False


@pytest.mark.parametrize("setting, simd_runs, expected", [
    (None, True, False), (None, False, True), (True, True, True), (False, False, False)])
def test_winograd_forward_is_left_to_numpys_products_by_default(monkeypatch, setting,
                                                               simd_runs, expected):
    """``WINOGRAD`` None: the forward is Winograd where the products are NumPy's BLAS's,
    im2col where they are simd's kernels (faster there); True and False force it."""
    from ember.ops import conv, conv_blocked, kernels, simd
    if not kernels.enabled():
        pytest.skip("the Winograd transforms need Numba")
    monkeypatch.setattr(conv_blocked, "WINOGRAD", setting)
    monkeypatch.setattr(simd, "wanted", lambda: simd_runs)
    win = conv.conv_window("conv2d", (2, 4, 8, 8), (4, 4, 3, 3), 1, 1, 1)
    assert conv_blocked.winograd(win, np.dtype(np.float32)) is expected


@pytest.mark.parametrize("x_shape, w_shape", [((0, 4, 8, 8), (6, 4, 3, 3)),
                                              ((0, 4, 32, 32), (4, 4, 3, 3)),
                                              ((0, 3, 9, 8), (5, 3, 3, 3))])
def test_blocked_conv_of_an_empty_batch_is_torchs(monkeypatch, x_shape, w_shape):
    """No samples: an empty output and input gradient, and a zero weight gradient (the
    blocked path has no block to sum; it raised IndexError before session 26)."""
    from ember.ops import conv
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    x = ember.tensor(np.zeros(x_shape), dtype=ember.float64, requires_grad=True)
    w = ember.tensor(np.ones(w_shape), dtype=ember.float64, requires_grad=True)
    out = F.conv2d(x, w, padding=1)
    assert out.grad_fn.blocked
    out.sum().backward()
    tx = torch.zeros(x_shape, dtype=torch.float64, requires_grad=True)
    tw = torch.ones(w_shape, dtype=torch.float64, requires_grad=True)
    TF.conv2d(tx, tw, padding=1).sum().backward()
    assert out.shape == tuple(TF.conv2d(tx, tw, padding=1).shape)
    assert x.grad.shape == x_shape
    np.testing.assert_array_equal(w.grad.array, tw.grad.numpy())


@pytest.mark.parametrize("n, sample_bytes, block_bytes", [
    (128, 393216, 1 << 22), (128, 196608, 1 << 22), (7, 1000, 2500), (1, 10, 1000),
    (5, 1 << 20, 1 << 10)])
def test_winograd_gradient_blocks_are_even_and_within_their_size(n, sample_bytes,
                                                                 block_bytes):
    """The weight gradient's blocks: about ``block_bytes`` each (a sample more at most),
    and an even number of them (two threads end together) where the samples allow it."""
    from ember.ops import conv_blocked
    per_block = conv_blocked._balanced_blocks(n, sample_bytes, block_bytes)
    blocks = -(-n // per_block)
    assert per_block >= 1
    assert (per_block - 1) * sample_bytes < block_bytes
    assert blocks % 2 == 0 or (per_block == 1 and n % 2 == 1)
