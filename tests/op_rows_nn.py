"""Op-table rows for the fused nn primitives in ember/ops/nn.py.

Integer class targets and embedding indices come from ``gen``; options that
are not tensors (weight, ignore_index, reduction...) live in the lambdas, so
each row is one configuration checked forward and backward against
torch.nn.functional, and gradchecked.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as TF

import ember
import ember.nn.functional as F
from tests.helpers import OpCase

CLASS_WEIGHT = np.array([0.3, 1.0, 2.5, 0.7])  # for 4 classes


def logits_and_classes(ignore: int | None = None):
    """Logits of shapes[0] and class indices of shapes[1] (class dim: 1, or 0 if 1-D)."""
    def gen(rng, shapes):
        classes = shapes[0][0] if len(shapes[0]) == 1 else shapes[0][1]
        target = rng.integers(0, classes, shapes[1])
        if ignore is not None and target.size:
            target.reshape(-1)[::3] = ignore  # every third target is skipped
        return [rng.normal(0, 2, shapes[0]), target]
    return gen


def logits_and_probabilities(rng, shapes):
    """Logits and a probability target of the same shape (softmax over dim 1, or 0)."""
    dim = 0 if len(shapes[0]) == 1 else 1
    raw = rng.normal(0, 1, shapes[1])
    probs = np.exp(raw) / np.exp(raw).sum(axis=dim, keepdims=True)
    return [rng.normal(0, 2, shapes[0]), probs]


def probabilities_and_targets(rng, shapes):
    return [rng.uniform(0.02, 0.98, shapes[0]), rng.uniform(0, 1, shapes[1])]


def indices_and_table(rng, shapes):
    return [rng.integers(0, shapes[1][0], shapes[0]), rng.normal(0, 1, shapes[1])]


def _weight(lib, x):
    return lib.tensor(CLASS_WEIGHT, dtype=x.dtype)


def ce_row(options: dict, shapes, gen, weighted: bool = False) -> OpCase:
    def torch_fn(x, t):
        return TF.cross_entropy(x, t, weight=_weight(torch, x) if weighted else None, **options)

    def ember_fn(x, t):
        return F.cross_entropy(x, t, weight=_weight(ember, x) if weighted else None, **options)

    return OpCase("cross_entropy", shapes, torch_fn, ember_fn, gen=gen)


CLASS_SHAPES = [((5, 4), (5,)), ((2, 4, 3), (2, 3)), ((2, 4, 2, 2), (2, 2, 2)), ((4,), ())]
PROB_SHAPES = [((5, 4), (5, 4)), ((2, 4, 3), (2, 4, 3)), ((4,), (4,))]

ROWS = [
    # ------------------------------------------------------------ linear
    OpCase("linear", [((4, 3), (5, 3), (5,)), ((2, 3, 3), (4, 3), (4,)), ((3,), (2, 3), (2,)),
                      ((0, 3), (2, 3), (2,))],
           lambda x, w, b: TF.linear(x, w, b), lambda x, w, b: F.linear(x, w, b)),
    OpCase("linear", [((4, 3), (5, 3)), ((2, 2, 3), (1, 3))],
           lambda x, w: TF.linear(x, w), lambda x, w: F.linear(x, w)),
    # ------------------------------------------------------------ cross entropy, class targets
    *[ce_row(dict(reduction=r), CLASS_SHAPES, logits_and_classes()) for r in
      ("mean", "sum", "none")],
    *[ce_row(dict(reduction=r), CLASS_SHAPES, logits_and_classes(), weighted=True) for r in
      ("mean", "sum", "none")],
    *[ce_row(dict(reduction=r, ignore_index=-100), CLASS_SHAPES[:3], logits_and_classes(-100),
             weighted=w) for r in ("mean", "sum", "none") for w in (False, True)],
    ce_row(dict(ignore_index=2), CLASS_SHAPES[:2], logits_and_classes()),
    *[ce_row(dict(reduction=r, label_smoothing=0.2, ignore_index=-100), CLASS_SHAPES[:3],
             logits_and_classes(-100), weighted=w)
      for r in ("mean", "sum", "none") for w in (False, True)],
    ce_row(dict(label_smoothing=0.1), CLASS_SHAPES[3:], logits_and_classes()),
    # ------------------------------------------------------------ cross entropy, probabilities
    *[ce_row(dict(reduction=r, label_smoothing=s), PROB_SHAPES, logits_and_probabilities,
             weighted=w)
      for r in ("mean", "sum", "none") for s in (0.0, 0.15) for w in (False, True)],
    # ------------------------------------------------------------ binary cross entropy
    *[OpCase("binary_cross_entropy", [((6,), (6,)), ((3, 4), (3, 4))],
             lambda x, t, r=r: TF.binary_cross_entropy(x, t, reduction=r),
             lambda x, t, r=r: F.binary_cross_entropy(x, t, reduction=r),
             gen=probabilities_and_targets) for r in ("mean", "sum", "none")],
    *[OpCase("binary_cross_entropy", [((3, 4), (3, 4))],
             lambda x, t, r=r: TF.binary_cross_entropy(
                 x, t, weight=torch.tensor(CLASS_WEIGHT, dtype=x.dtype), reduction=r),
             lambda x, t, r=r: F.binary_cross_entropy(
                 x, t, weight=ember.tensor(CLASS_WEIGHT, dtype=x.dtype), reduction=r),
             gen=probabilities_and_targets) for r in ("mean", "sum", "none")],
    # ------------------------------------------------------------ embedding
    OpCase("embedding", [((3, 4), (6, 5)), ((7,), (3, 2)), ((2, 2, 3), (4, 3))],
           lambda i, w: TF.embedding(i, w), lambda i, w: F.embedding(i, w),
           gen=indices_and_table),
    OpCase("embedding", [((3, 4), (6, 5))],
           lambda i, w: TF.embedding(i, w, padding_idx=1),
           lambda i, w: F.embedding(i, w, padding_idx=1), gen=indices_and_table,
           gradcheck=False),  # the padding row's gradient is zero by design, not d/dw
    OpCase("embedding", [((3, 4), (6, 5))],
           lambda i, w: TF.embedding(i, w, padding_idx=5),
           lambda i, w: F.embedding(i, w, padding_idx=-1), gen=indices_and_table,
           gradcheck=False),
    # ------------------------------------------------------------ batch norm (training)
    OpCase("batch_norm_train", [((4, 3, 5, 5), (3,), (3,)), ((6, 4), (4,), (4,)),
                                ((3, 2, 7), (2,), (2,))],
           lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True),
           lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True)),
    OpCase("batch_norm_train", [((5, 3, 2, 2),)],
           lambda x: TF.batch_norm(x, None, None, training=True, eps=1e-3),
           lambda x: F.batch_norm(x, None, None, training=True, eps=1e-3)),
    # ------------------------------------------------------------ standardize
    OpCase("standardize", [((4, 5),), ((2, 3, 6),)],
           lambda x: TF.layer_norm(x, x.shape[-1:]), lambda x: F.standardize(x, -1)),
    OpCase("standardize", [((2, 3, 4),)],
           lambda x: TF.layer_norm(x, x.shape[-2:], eps=1e-3),
           lambda x: F.standardize(x, (-2, -1), 1e-3)),
    OpCase("standardize", [((6, 3),)],
           lambda x: TF.batch_norm(x, None, None, training=True),
           lambda x: F.standardize(x, 0)),
    OpCase("standardize", [((4, 3, 5),)],
           lambda x: TF.batch_norm(x, None, None, training=True),
           lambda x: F.standardize(x, (0, 2))),
]
