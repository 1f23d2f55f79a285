"""Op-table rows for the ops added for speed (ember/ops/nn.py: the fused mse_loss).

Each reduction is a row, checked forward and backward against torch, and
gradchecked; the broadcasting row compares with torch's (warned) broadcast.
"""

from __future__ import annotations

import warnings

import torch.nn.functional as TF

import ember.nn.functional as F
import ember.ops.nn as fused_nn
from tests.helpers import OpCase


def _quiet(fn):
    """Call ``fn`` with the size-mismatch warning silenced (both libraries warn)."""
    def call(*args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return fn(*args)
    return call


ROWS = [
    OpCase("mse_loss", [[(4, 3), (4, 3)], [(5,), (5,)], [(2, 3, 4), (2, 3, 4)]],
           lambda x, t, r=reduction: TF.mse_loss(x, t, reduction=r),
           lambda x, t, r=reduction: F.mse_loss(x, t, reduction=r))
    for reduction in ("mean", "sum", "none")
] + [
    OpCase("mse_loss", [[(4, 3), (3,)], [(4, 1), (4, 3)]],
           _quiet(lambda x, t: TF.mse_loss(x, t)), _quiet(lambda x, t: F.mse_loss(x, t))),
    OpCase("mse_loss", [[(3, 2), (3, 2)]], lambda x, t: TF.mse_loss(x, t, reduction="sum"),
           _quiet(lambda x, t: fused_nn.mse_loss(x, t, size_average=False)), gradcheck=False),
]
