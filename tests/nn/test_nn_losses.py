"""Every loss, in each reduction and with each option, against torch (float64).

A row builds the same loss in both libraries (a module from ``nn`` or a
function from ``F``, with tensor options made by each library), feeds both the
same input and target, and compares the loss, the input gradient and (where the
target is a differentiable float) the target gradient.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as tnn
import torch.nn.functional as TF

import ember
import ember.nn as nn
import ember.nn.functional as F

TOL = dict(rtol=1e-7, atol=1e-10)
W4 = [0.3, 1.0, 2.5, 0.7]
REDUCTIONS = ["mean", "sum", "none"]


def weight(lib, values=W4):
    return lib.tensor(values, dtype=lib.float64)


# ---------------------------------------------------------------- input generators
def regression(shape):
    return lambda rng: (rng.normal(0, 1.5, shape), rng.normal(0, 1.5, shape))


def classes(x_shape, t_shape, n=4, ignore=None):
    def gen(rng):
        t = rng.integers(0, n, t_shape)
        if ignore is not None:
            t.reshape(-1)[::3] = ignore
        return rng.normal(0, 2, x_shape), t
    return gen


def log_probs_and_classes(x_shape, t_shape, n=4, ignore=None):
    def gen(rng):
        x, t = classes(x_shape, t_shape, n, ignore)(rng)
        dim = 0 if len(x_shape) == 1 else 1
        return x - np.log(np.exp(x).sum(axis=dim, keepdims=True)), t
    return gen


def softmax(a, dim):
    e = np.exp(a - a.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def probabilities(shape):
    dim = 0 if len(shape) == 1 else 1
    return lambda rng: (rng.normal(0, 2, shape), softmax(rng.normal(0, 1, shape), dim))


def bce_inputs(shape):
    return lambda rng: (rng.uniform(0.01, 0.99, shape), rng.uniform(0, 1, shape))


def logits_and_targets(shape, scale=3.0):
    return lambda rng: (rng.normal(0, scale, shape), rng.uniform(0, 1, shape))


def kl_inputs(shape, log_target=False, zeros=False):
    def gen(rng):
        x = np.log(softmax(rng.normal(0, 1, shape), -1))
        t = softmax(rng.normal(0, 1, shape), -1)
        if zeros:
            t.reshape(-1)[::4] = 0.0
        return x, (np.log(t) if log_target else t)
    return gen


# ---------------------------------------------------------------- the table
def row(ident, kind, name, options, gen, target_grad=False):
    """kind 'module': nn.<name>(**options(lib)); kind 'functional': F.<name>(x, t, **options)."""
    return pytest.param(kind, name, options, gen, target_grad, id=ident)


def opts(**fixed):
    return lambda lib: dict(fixed)


ROWS = [
    *[row(f"mse-{r}", "module", "MSELoss", opts(reduction=r), regression((4, 3)), True)
      for r in REDUCTIONS],
    *[row(f"l1-{r}", "module", "L1Loss", opts(reduction=r), regression((4, 3)), True)
      for r in REDUCTIONS],
    *[row(f"huber-{r}-{d}", "module", "HuberLoss", opts(reduction=r, delta=d),
          regression((5, 4)), True) for r in REDUCTIONS for d in (1.0, 0.4, 2.5)],
    *[row(f"smoothl1-{r}-{b}", "module", "SmoothL1Loss", opts(reduction=r, beta=b),
          regression((5, 4)), True) for r in REDUCTIONS for b in (1.0, 0.4, 0.0)],
    *[row(f"{f}-weighted-{r}", "functional", f,
          lambda lib, r=r: dict(reduction=r, weight=lib.tensor(
              np.linspace(0.2, 2.0, 12).reshape(4, 3), dtype=lib.float64)),
          regression((4, 3)), True)
      for f in ("mse_loss", "l1_loss", "huber_loss") for r in REDUCTIONS],
    # cross entropy: class targets
    *[row(f"ce-{r}-w{w}-ls{ls}", "module", "CrossEntropyLoss",
          lambda lib, r=r, w=w, ls=ls: dict(reduction=r, label_smoothing=ls,
                                            weight=weight(lib) if w else None),
          classes((6, 4), (6,))) for r in REDUCTIONS for w in (0, 1) for ls in (0.0, 0.25)],
    *[row(f"ce-ignore-{r}-w{w}-ls{ls}", "module", "CrossEntropyLoss",
          lambda lib, r=r, w=w, ls=ls: dict(reduction=r, label_smoothing=ls, ignore_index=-1,
                                            weight=weight(lib) if w else None),
          classes((6, 4), (6,), ignore=-1)) for r in REDUCTIONS for w in (0, 1)
      for ls in (0.0, 0.25)],
    *[row(f"ce-nd-{r}", "module", "CrossEntropyLoss",
          lambda lib, r=r: dict(reduction=r, weight=weight(lib), ignore_index=3),
          classes((2, 4, 3, 2), (2, 3, 2))) for r in REDUCTIONS],
    row("ce-unbatched", "module", "CrossEntropyLoss", opts(label_smoothing=0.1),
        classes((4,), ())),
    # cross entropy: probability targets
    *[row(f"ce-prob-{r}-w{w}-ls{ls}", "module", "CrossEntropyLoss",
          lambda lib, r=r, w=w, ls=ls: dict(reduction=r, label_smoothing=ls,
                                            weight=weight(lib) if w else None),
          probabilities((5, 4)), True) for r in REDUCTIONS for w in (0, 1) for ls in (0.0, 0.3)],
    row("ce-prob-nd", "module", "CrossEntropyLoss", opts(), probabilities((2, 4, 3)), True),
    # nll
    *[row(f"nll-{r}-w{w}", "module", "NLLLoss",
          lambda lib, r=r, w=w: dict(reduction=r, weight=weight(lib) if w else None),
          log_probs_and_classes((6, 4), (6,))) for r in REDUCTIONS for w in (0, 1)],
    *[row(f"nll-ignore-{r}-w{w}", "module", "NLLLoss",
          lambda lib, r=r, w=w: dict(reduction=r, ignore_index=-100,
                                     weight=weight(lib) if w else None),
          log_probs_and_classes((6, 4), (6,), ignore=-100)) for r in REDUCTIONS for w in (0, 1)],
    row("nll-nd", "module", "NLLLoss", lambda lib: dict(weight=weight(lib)),
        log_probs_and_classes((2, 4, 5), (2, 5))),
    row("nll-unbatched", "module", "NLLLoss", opts(), log_probs_and_classes((4,), ())),
    # binary cross entropy
    *[row(f"bce-{r}-w{w}", "module", "BCELoss",
          lambda lib, r=r, w=w: dict(reduction=r, weight=weight(lib) if w else None),
          bce_inputs((3, 4)), True) for r in REDUCTIONS for w in (0, 1)],
    *[row(f"bcelogits-{r}-w{w}-pw{pw}", "module", "BCEWithLogitsLoss",
          lambda lib, r=r, w=w, pw=pw: dict(
              reduction=r, weight=weight(lib) if w else None,
              pos_weight=weight(lib, [2.0, 0.5, 1.0, 3.0]) if pw else None),
          logits_and_targets((3, 4)), True) for r in REDUCTIONS for w in (0, 1) for pw in (0, 1)],
    row("bcelogits-extreme", "module", "BCEWithLogitsLoss",
        lambda lib: dict(pos_weight=weight(lib, [2.0, 0.5, 1.0, 3.0])),
        logits_and_targets((6, 4), scale=60.0), True),
    # kl divergence
    *[row(f"kl-{r}-log{lt}", "module", "KLDivLoss", opts(reduction=r, log_target=lt),
          kl_inputs((3, 5), lt), True)
      for r in ("mean", "sum", "none", "batchmean") for lt in (False, True)],
    row("kl-zero-targets", "module", "KLDivLoss", opts(reduction="batchmean"),
        kl_inputs((4, 5), zeros=True)),
]


def build(kind, name, options, lib):
    kw = options(lib)
    if kind == "module":
        return getattr(tnn if lib is torch else nn, name)(**kw)
    fn = getattr(TF if lib is torch else F, name)
    return lambda x, t: fn(x, t, **kw)


@pytest.mark.parametrize("kind,name,options,gen,target_grad", ROWS)
def test_loss_matches_torch(kind, name, options, gen, target_grad):
    x, t = gen(np.random.default_rng(0))
    floating_target = t.dtype.kind == "f"
    tx = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(t, requires_grad=target_grad and floating_target)
    ex = ember.tensor(x, dtype=ember.float64, requires_grad=True)
    et = ember.tensor(t, dtype=t.dtype, requires_grad=target_grad and floating_target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KLDiv's 'mean' warning, in both libraries
        t_loss = build(kind, name, options, torch)(tx, tt)
        e_loss = build(kind, name, options, ember)(ex, et)
    assert e_loss.shape == tuple(t_loss.shape)
    np.testing.assert_allclose(e_loss.array, t_loss.detach().numpy(), **TOL)
    up = np.random.default_rng(1).normal(size=tuple(t_loss.shape))
    t_loss.backward(torch.tensor(up))
    e_loss.backward(ember.tensor(up, dtype=ember.float64))
    np.testing.assert_allclose(ex.grad.array, tx.grad.numpy(), err_msg="input grad", **TOL)
    if tt.requires_grad:
        np.testing.assert_allclose(et.grad.array, tt.grad.numpy(), err_msg="target grad", **TOL)


# ---------------------------------------------------------------- edges that must stay finite
def _both(fn_t, fn_e, x, t):
    tx, ex = torch.tensor(x, requires_grad=True), ember.tensor(x, dtype=ember.float64,
                                                              requires_grad=True)
    t_loss, e_loss = fn_t(tx, torch.tensor(t)), fn_e(ex, ember.tensor(t, dtype=t.dtype))
    t_loss.backward()
    e_loss.backward()
    return t_loss, e_loss, tx.grad, ex.grad


def test_bce_clamps_logs_at_minus_100_like_torch():
    x = np.array([0.0, 1.0, 0.0, 1.0, 0.5, 1e-30])
    t = np.array([1.0, 0.0, 0.0, 1.0, 0.3, 1.0])
    for r in REDUCTIONS:
        t_loss, e_loss, t_grad, e_grad = _both(
            lambda a, b, r=r: TF.binary_cross_entropy(a, b, reduction=r).sum(),
            lambda a, b, r=r: F.binary_cross_entropy(a, b, reduction=r).sum(), x, t)
        assert np.isfinite(e_loss.item())
        np.testing.assert_allclose(e_loss.item(), t_loss.item(), rtol=1e-12)
        assert np.all(np.isfinite(e_grad.array))
        np.testing.assert_allclose(e_grad.array, t_grad.numpy(), rtol=1e-12)


def test_large_logits_stay_finite_like_torch():
    x = np.array([[1e4, -1e4, 0.0], [-800.0, 800.0, 3.0]])
    t = np.array([1, 0])
    t_loss, e_loss, t_grad, e_grad = _both(TF.cross_entropy, F.cross_entropy, x, t)
    np.testing.assert_allclose(e_loss.item(), t_loss.item(), rtol=1e-12)
    np.testing.assert_allclose(e_grad.array, t_grad.numpy(), rtol=1e-12, atol=1e-300)
    xb = np.array([-1000.0, 1000.0, -40.0, 40.0])
    tb = np.array([1.0, 0.0, 0.5, 0.5])
    t_loss, e_loss, t_grad, e_grad = _both(TF.binary_cross_entropy_with_logits,
                                           F.binary_cross_entropy_with_logits, xb, tb)
    np.testing.assert_allclose(e_loss.item(), t_loss.item(), rtol=1e-12)
    np.testing.assert_allclose(e_grad.array, t_grad.numpy(), rtol=1e-9)


def test_cross_entropy_all_targets_ignored_is_nan_like_torch():
    x, t = np.zeros((2, 3)), np.array([-100, -100])
    t_loss, e_loss, t_grad, e_grad = _both(TF.cross_entropy, F.cross_entropy, x, t)
    assert np.isnan(t_loss.item()) and np.isnan(e_loss.item())


def test_cross_entropy_keeps_float32():
    x = ember.randn(4, 3, requires_grad=True)
    loss = F.cross_entropy(x, ember.tensor([0, 2, 1, 1]), label_smoothing=0.1)
    loss.backward()
    assert loss.dtype == ember.float32 and x.grad.dtype == ember.float32


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("fn", [F.cross_entropy, F.nll_loss], ids=["ce", "nll"])
@pytest.mark.parametrize("bad", [4, 7, -1])
def test_class_target_out_of_range_names_value_and_classes(fn, bad):
    with pytest.raises(IndexError, match=f"target {bad} is out of bounds for 4 classes"):
        fn(ember.zeros(3, 4), ember.tensor([0, bad, 1]))


@pytest.mark.parametrize("fn", [F.cross_entropy, F.nll_loss], ids=["ce", "nll"])
def test_class_weight_and_target_shape_errors(fn):
    with pytest.raises(ValueError, match=r"weight must have one entry per class \(4\), got "
                                         r"shape \(3,\)"):
        fn(ember.zeros(3, 4), ember.tensor([0, 1, 2]), weight=ember.ones(3))
    with pytest.raises(ValueError, match="expected class-index target of shape"):
        fn(ember.zeros(3, 4), ember.tensor([0, 1]))


def test_cross_entropy_module_checks_options_and_probability_shapes():
    with pytest.raises(ValueError, match="label_smoothing"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="probability target must have the input's shape"):
        F.cross_entropy(ember.zeros(3, 4), ember.zeros(3, 5))
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        nn.MSELoss(reduction="average")


def test_bce_rejects_non_probabilities_and_mismatched_shapes():
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.binary_cross_entropy(ember.tensor([1.5]), ember.tensor([1.0]))
    with pytest.raises(ValueError, match="different to the input size"):
        nn.BCELoss()(ember.tensor([0.5, 0.5]), ember.tensor([1.0]))
    with pytest.raises(ValueError, match="must be the same as input size"):
        nn.BCEWithLogitsLoss()(ember.tensor([0.5, 0.5]), ember.tensor([1.0]))


def test_legacy_size_average_and_reduce_map_like_torch():
    x, t = np.random.default_rng(0).normal(size=(2, 3, 4))
    for size_average, reduce in [(False, None), (None, False), (True, True)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = TF.mse_loss(torch.tensor(x), torch.tensor(t), size_average, reduce)
            got = nn.MSELoss(size_average, reduce)(ember.tensor(x, dtype=ember.float64),
                                                   ember.tensor(t, dtype=ember.float64))
        np.testing.assert_allclose(got.array, expected.numpy(), **TOL)


def test_loss_modules_repr_and_state_like_torch():
    for name, kw in [("CrossEntropyLoss", lambda lib: dict(weight=weight(lib))),
                     ("BCEWithLogitsLoss", lambda lib: dict(pos_weight=weight(lib))),
                     ("MSELoss", opts()), ("KLDivLoss", opts(reduction="batchmean"))]:
        t_mod, e_mod = getattr(tnn, name)(**kw(torch)), getattr(nn, name)(**kw(ember))
        assert repr(e_mod) == repr(t_mod)
        assert list(e_mod.state_dict()) == list(t_mod.state_dict())


F32_LOSSES = [
    ("mse", lambda x, t, w: F.mse_loss(x, t.float())),
    ("l1-weighted", lambda x, t, w: F.l1_loss(x, t.float(), weight=ember.ones(3, 4))),
    ("huber", lambda x, t, w: F.huber_loss(x, t.float(), delta=0.5)),
    ("smoothl1", lambda x, t, w: F.smooth_l1_loss(x, t.float(), beta=0.5)),
    ("nll", lambda x, t, w: F.nll_loss(x.log_softmax(1), (t[:, 0] > 0.5).long(), weight=w)),
    ("ce-prob", lambda x, t, w: F.cross_entropy(x, t.softmax(1), weight=w, label_smoothing=0.1)),
    ("ce-class", lambda x, t, w: F.cross_entropy(x, (t[:, 0] > 0.5).long(), weight=w,
                                                 label_smoothing=0.1)),
    ("bce", lambda x, t, w: F.binary_cross_entropy(x.sigmoid(), t.float(), weight=w)),
    ("bce-logits", lambda x, t, w: F.binary_cross_entropy_with_logits(
        x, t.float(), weight=w, pos_weight=w)),
    ("kl", lambda x, t, w: F.kl_div(x.log_softmax(1), t.softmax(1), reduction="batchmean")),
]


@pytest.mark.parametrize("name,fn", F32_LOSSES, ids=[n for n, _ in F32_LOSSES])
def test_losses_keep_float32(name, fn):
    rng = np.random.default_rng(0)
    x = ember.tensor(rng.normal(size=(3, 4)), requires_grad=True)
    t = ember.tensor(rng.uniform(size=(3, 4)))
    loss = fn(x, t, ember.tensor(W4))
    loss.backward()
    assert x.dtype == loss.dtype == x.grad.dtype == ember.float32
