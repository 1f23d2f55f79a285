"""Op-table rows for convolution, pooling and resampling (collected by tests/test_ops.py).

The first shape set of every row is small: it is also gradchecked element by element.
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as TF

import ember.nn.functional as F
from tests.helpers import OpCase


def row(name, shapes, torch_fn, ember_fn, **kw):
    return OpCase(name, shapes, torch_fn, ember_fn, **kw)


def sums(name, shapes, torch_fn, ember_fn, **kw):
    """Rows for ops whose outputs are sums of many O(1) products (convolutions): float64
    at the default rtol 1e-7, and float32 with atol 1e-5, since two float32 sums of
    ~100 such terms in different orders differ by a few 1e-6 where they cancel."""
    return [OpCase(name, shapes, torch_fn, ember_fn, dtypes=(np.float64,), **kw),
            OpCase(name, shapes, torch_fn, ember_fn, dtypes=(np.float32,), gradcheck=False,
                   tol=dict(atol=1e-5), **kw)]


def unpool_inputs(rng, shapes):
    """Values and valid max_pool2d(kernel 2) indices: one position per 2x2 block."""
    (n, c, h, w), _ = shapes
    di, dj = rng.integers(0, 2, (n, c, h, w)), rng.integers(0, 2, (n, c, h, w))
    rows = 2 * np.arange(h)[:, None] + di
    cols = 2 * np.arange(w) + dj
    return [rng.uniform(-2, 2, (n, c, h, w)), (rows * (2 * w) + cols).astype(np.int64)]


CONV = [((1, 2, 5, 5), (3, 2, 3, 3), (3,)), ((2, 3, 8, 7), (4, 3, 3, 3), (4,))]
CONV_T = [((1, 2, 3, 4), (2, 3, 3, 3), (3,)), ((2, 4, 5, 5), (4, 2, 3, 3), (2,))]
IMG = [((1, 2, 6, 6),), ((2, 3, 9, 8),)]

ROWS = [
    *sums("conv2d", CONV, lambda x, w, b: TF.conv2d(x, w, b, padding=1),
        lambda x, w, b: F.conv2d(x, w, b, padding=1)),
    *sums("conv2d", CONV, lambda x, w, b: TF.conv2d(x, w, b, stride=2, dilation=(1, 2)),
        lambda x, w, b: F.conv2d(x, w, b, stride=2, dilation=(1, 2))),
    *sums("conv2d", [((1, 4, 5, 5), (6, 2, 3, 3)), ((2, 4, 7, 6), (4, 2, 3, 5))],
        lambda x, w: TF.conv2d(x, w, groups=2, padding="same"),
        lambda x, w: F.conv2d(x, w, groups=2, padding="same")),
    *sums("conv1d", [((1, 2, 6), (3, 2, 3), (3,)), ((2, 3, 11), (4, 3, 4), (4,))],
        lambda x, w, b: TF.conv1d(x, w, b, stride=2, padding=1),
        lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1)),
    *sums("conv_transpose2d", CONV_T, lambda x, w, b: TF.conv_transpose2d(x, w, b, stride=2),
        lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2)),
    *sums("conv_transpose2d", [((1, 2, 3, 3), (2, 2, 2, 3)), ((2, 4, 4, 5), (4, 1, 3, 2))],
        lambda x, w: TF.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1,
                                         groups=2),
        lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1,
                                        groups=2)),
    row("max_pool2d", IMG, lambda x: TF.max_pool2d(x, 2), lambda x: F.max_pool2d(x, 2)),
    row("max_pool2d", IMG, lambda x: TF.max_pool2d(x, 3, 2, 1, ceil_mode=True),
        lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True)),
    row("max_pool2d", IMG, lambda x: TF.max_pool2d(x, 2, 1, return_indices=True),
        lambda x: F.max_pool2d(x, 2, 1, return_indices=True)),
    row("avg_pool2d", IMG, lambda x: TF.avg_pool2d(x, 2), lambda x: F.avg_pool2d(x, 2)),
    row("avg_pool2d", IMG, lambda x: TF.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
        lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)),
    row("adaptive_avg_pool2d", [((1, 2, 5, 5),), ((2, 3, 7, 9),)],
        lambda x: TF.adaptive_avg_pool2d(x, (2, 3)), lambda x: F.adaptive_avg_pool2d(x, (2, 3))),
    row("adaptive_avg_pool2d", IMG, lambda x: TF.adaptive_avg_pool2d(x, 1),
        lambda x: F.adaptive_avg_pool2d(x, 1)),
    row("adaptive_max_pool2d", [((1, 2, 5, 5),), ((2, 3, 7, 9),)],
        lambda x: TF.adaptive_max_pool2d(x, (2, 3)), lambda x: F.adaptive_max_pool2d(x, (2, 3))),
    row("adaptive_max_pool2d", IMG, lambda x: TF.adaptive_max_pool2d(x, 3, return_indices=True),
        lambda x: F.adaptive_max_pool2d(x, 3, return_indices=True)),
    row("max_unpool2d", [((1, 2, 2, 2), (1, 2, 2, 2)), ((2, 3, 3, 4), (2, 3, 3, 4))],
        lambda x, i: TF.max_unpool2d(x, i, 2), lambda x, i: F.max_unpool2d(x, i, 2),
        gen=unpool_inputs),
    row("interpolate", [((1, 2, 3, 4),), ((2, 3, 5, 7),)],
        lambda x: TF.interpolate(x, scale_factor=1.5),
        lambda x: F.interpolate(x, scale_factor=1.5)),
    row("interpolate", [((1, 2, 3, 4),), ((2, 3, 5, 7),)],
        lambda x: TF.interpolate(x, size=(5, 3), mode="bilinear"),
        lambda x: F.interpolate(x, size=(5, 3), mode="bilinear")),
    row("interpolate", [((1, 2, 3, 4),), ((2, 3, 5, 7),)],
        lambda x: TF.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True),
        lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)),
    row("pixel_shuffle", [((1, 4, 2, 3),), ((2, 18, 3, 2),)],
        lambda x: TF.pixel_shuffle(x, 2 if x.shape[1] == 4 else 3),
        lambda x: F.pixel_shuffle(x, 2 if x.shape[1] == 4 else 3)),
    row("pixel_unshuffle", [((1, 1, 4, 2),), ((2, 2, 6, 9),)],
        lambda x: TF.pixel_unshuffle(x, 2 if x.shape[2] == 4 else 3),
        lambda x: F.pixel_unshuffle(x, 2 if x.shape[2] == 4 else 3)),
]
