"""Functional forms of ember's ops (``import ember.nn.functional as F``).

Every registered op is here under its own name (``F.relu``, ``F.softmax``,
``F.pad``...), so the functional and method forms are one implementation.
"""

from ember.autograd import FUNCTIONS

globals().update(FUNCTIONS)

__all__ = sorted(FUNCTIONS)

# ---------------------------------------------------------------- forms that are not ops
# Dropout, normalisation layers and losses composed of the ops above (each exact
# and stable as composed), plus the fused ops' torch signatures from ember.ops.nn.
import math  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

from ember import random as _random  # noqa: E402
from ember.autograd import no_grad  # noqa: E402
from ember.backend import xp  # noqa: E402
from ember.ops.nn import (MseLoss, check_reduction, class_targets,  # noqa: E402
                          legacy_reduction)
from ember.tensor import Tensor  # noqa: E402

_SELU_ALPHA_PRIME = 1.7580993408473766  # -scale * alpha of SELU: alpha dropout's saturation


def _constant(array: Any) -> Tensor:
    """A NumPy array as a tensor that is not part of any graph."""
    return Tensor._make(array, False, None)


def _check_probability(p: float, what: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{what} probability has to be between 0 and 1, but got {p}")


def _keep_mask(input: Tensor, p: float) -> Any:  # noqa: A002
    """1 where an element survives dropout with probability 1 - p, else 0."""
    dtype = input.dtype if input.dtype in (xp.float32, xp.float64) else xp.float64
    draws = _random.generator().random(input.shape, dtype=dtype)
    return (draws >= p).astype(input.dtype)


# ---------------------------------------------------------------- dropout
def dropout(input: Tensor, p: float = 0.5, training: bool = True,  # noqa: A002
            inplace: bool = False) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)``.

    Identity when not training. The mask comes from ember's generator, so
    ``ember.manual_seed`` repeats it; the gradient is ``mask / (1 - p)``.
    ``inplace`` is accepted for torch compatibility; the result is always new.

    >>> F.dropout(ember.ones(4), p=0.0)
    tensor([1., 1., 1., 1.])
    """
    _check_probability(p, "dropout")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    return input * _constant(_keep_mask(input, p) / (1.0 - p))


def alpha_dropout(input: Tensor, p: float = 0.5, training: bool = False,  # noqa: A002
                  inplace: bool = False) -> Tensor:
    """Dropout for SELU networks: keeps zero mean and unit variance.

    Dropped elements are set to SELU's negative saturation, then an affine map
    ``a x + b`` restores the statistics (torch's formula).
    """
    _check_probability(p, "dropout")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    keep = _keep_mask(input, p)
    a = 1.0 / math.sqrt((_SELU_ALPHA_PRIME ** 2 * p + 1) * (1 - p))
    shift = (keep - 1) * (_SELU_ALPHA_PRIME * a) + _SELU_ALPHA_PRIME * a * p
    return input * _constant(keep * a) + _constant(shift.astype(input.dtype))


# ---------------------------------------------------------------- layers
def bilinear(input1: Tensor, input2: Tensor, weight: Tensor,
             bias: Tensor | None = None) -> Tensor:
    """``y_o = x1^T W_o x2 + b_o`` for every output feature ``o``.

    >>> F.bilinear(ember.ones(2, 3), ember.ones(2, 4), ember.ones(5, 3, 4)).shape
    (2, 5)
    """
    out_features, in1, in2 = weight.shape
    if input1.shape[-1] != in1 or input2.shape[-1] != in2 or input1.shape[:-1] != input2.shape[:-1]:
        raise ValueError(f"bilinear: expected inputs of shapes (*, {in1}) and (*, {in2}) with "
                         f"the same leading dims, got {input1.shape} and {input2.shape}")
    lead = input1.shape[:-1]
    x1, x2 = input1.reshape(1, -1, in1), input2.reshape(1, -1, in2)
    out = ((x1 @ weight) * x2).sum(-1).T  # (out, M, in2) summed over in2, then (M, out)
    if bias is not None:
        out = out + bias
    return out.reshape(lead + (out_features,))


def _channel_shape(input: Tensor) -> tuple:  # noqa: A002
    """Where a per-channel vector broadcasts against (N, C, ...): (1, C, 1, ...)."""
    return (1, input.shape[1]) + (1,) * (input.ndim - 2)


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,  # noqa: A002
               weight: Tensor | None = None, bias: Tensor | None = None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalise each channel (dim 1) over the batch and any spatial dims.

    Training: the batch's statistics normalise (biased variance) and the running
    ones move by ``momentum`` towards them (unbiased variance). Otherwise the
    running statistics normalise.
    """
    if input.ndim < 2:
        raise ValueError(f"batch_norm: expected input of shape (N, C, ...), got {input.shape}")
    shape = _channel_shape(input)
    if training:
        if input.array.size // input.shape[1] == 1:
            raise ValueError("Expected more than 1 value per channel when training, got input "
                             f"size {input.shape}")
        running = None
        if running_mean is not None and running_var is not None:
            running = (running_mean.array, running_var.array, momentum)
        channels = input.shape[1]
        return FUNCTIONS["batch_norm_train"](
            input, weight if weight is not None else _constant(xp.ones(channels, input.dtype)),
            bias if bias is not None else _constant(xp.zeros(channels, input.dtype)),
            eps=eps, running=running)
    if running_mean is None or running_var is None:
        raise ValueError("batch_norm: running_mean and running_var are needed when not "
                         "training")
    # y = x * scale + shift with per-channel scale = w / sqrt(var + eps) and shift =
    # b - mean * scale: two passes over x, and torch's own order of operations on CPU
    inv_std = _constant(1.0 / xp.sqrt(running_var.array + eps))
    scale = inv_std if weight is None else weight * inv_std
    shift = -_constant(running_mean.array) * scale
    if bias is not None:
        shift = bias + shift
    return input * scale.reshape(*shape) + shift.reshape(*shape)


def _affine(out: Tensor, weight: Tensor | None, bias: Tensor | None, shape: Sequence) -> Tensor:
    if weight is not None:
        out = out * weight.reshape(*shape)
    if bias is not None:
        out = out + bias.reshape(*shape)
    return out


def layer_norm(input: Tensor, normalized_shape: Any, weight: Tensor | None = None,  # noqa: A002
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise over the last ``len(normalized_shape)`` dims, then scale and shift.

    >>> F.layer_norm(ember.tensor([[1.0, 3.0]]), (2,))
    tensor([[-1.0000,  1.0000]])
    """
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or input.ndim < k or tuple(input.shape[input.ndim - k:]) != shape:
        raise ValueError(f"layer_norm: given normalized_shape={list(shape)}, expected input "
                         f"with shape [*, {', '.join(map(str, shape))}], got {input.shape}")
    out = FUNCTIONS["standardize"](input, tuple(range(input.ndim - k, input.ndim)), eps)
    return _affine(out, weight, bias, shape)


def logsigmoid(input: Tensor) -> Tensor:  # noqa: A002
    """``log(sigmoid(x)) = -softplus(-x)``, stable for any x."""
    return -(-input).softplus()


# ---------------------------------------------------------------- losses
def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def _warn_if_sizes_differ(input: Tensor, target: Tensor) -> None:  # noqa: A002
    if tuple(target.shape) != tuple(input.shape):
        warnings.warn(f"Using a target size ({target.shape}) that is different to the input "
                      f"size ({input.shape}). This will likely lead to incorrect results due "
                      "to broadcasting. Please ensure they have the same size.", stacklevel=3)


def _weighted(loss: Tensor, weight: Tensor | None, reduction: str, input: Tensor,  # noqa: A002
              mean_over_weight: bool = True) -> Tensor:
    """Apply torch's optional elementwise ``weight`` to a pointwise loss, then reduce."""
    if weight is None:
        return _reduce(loss, reduction)
    if tuple(weight.shape) != tuple(input.shape):
        raise ValueError(f"Weights and input must have the same size (weight {weight.shape}, "
                         f"input {input.shape}).")
    loss = loss * weight
    if reduction == "mean" and mean_over_weight:
        return loss.sum() / weight.sum()
    return _reduce(loss, reduction)


def mse_loss(input: Tensor, target: Tensor, size_average: bool | None = None,  # noqa: A002
             reduce: bool | None = None, reduction: str = "mean",
             weight: Tensor | None = None) -> Tensor:
    """Mean squared error ``(input - target)^2``, reduced.

    >>> F.mse_loss(ember.tensor([1.0, 3.0]), ember.tensor([0.0, 0.0]))
    tensor(5.)
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    _warn_if_sizes_differ(input, target)
    if weight is None:  # the common case as one fused op (ember/ops/nn.py)
        # "mean" is the op's default: left out, the call takes apply's two-tensor fast path
        return MseLoss.apply(input, target) if reduction == "mean" else \
            MseLoss.apply(input, target, reduction)
    diff = input - target
    return _weighted(diff * diff, weight, reduction, input)


def l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None,  # noqa: A002
            reduce: bool | None = None, reduction: str = "mean",
            weight: Tensor | None = None) -> Tensor:
    """Mean absolute error ``|input - target|``, reduced."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    _warn_if_sizes_differ(input, target)
    return _weighted((input - target).abs(), weight, reduction, input)


def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean",  # noqa: A002
               delta: float = 1.0, weight: Tensor | None = None) -> Tensor:
    """``0.5 d^2`` where ``|d| < delta``, else ``delta (|d| - delta/2)``; d = input - target."""
    check_reduction(reduction)
    if delta <= 0:
        raise ValueError(f"huber_loss does not support non-positive values for delta, got {delta}")
    _warn_if_sizes_differ(input, target)
    diff = input - target
    size = diff.abs()
    loss = FUNCTIONS["where"](size < delta, 0.5 * diff * diff, delta * (size - 0.5 * delta))
    return _weighted(loss, weight, reduction, input, mean_over_weight=False)


def smooth_l1_loss(input: Tensor, target: Tensor, size_average: bool | None = None,  # noqa: A002
                   reduce: bool | None = None, reduction: str = "mean",
                   beta: float = 1.0) -> Tensor:
    """``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - beta/2``; L1 when beta is 0."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss does not support negative values for beta, got {beta}")
    _warn_if_sizes_differ(input, target)
    diff = input - target
    size = diff.abs()
    if beta == 0:
        return _reduce(size, reduction)
    loss = FUNCTIONS["where"](size < beta, 0.5 * diff * diff / beta, size - 0.5 * beta)
    return _reduce(loss, reduction)


def _class_weight(weight: Any, classes: int, dtype: Any) -> Any:
    array = xp.asarray(weight.array if isinstance(weight, Tensor) else weight, dtype=dtype)
    if array.shape != (classes,):
        raise ValueError(f"weight must have one entry per class ({classes}), "
                         f"got shape {array.shape}")
    return array


def nll_loss(input: Tensor, target: Tensor, weight: Any = None,  # noqa: A002
             size_average: bool | None = None, ignore_index: int = -100,
             reduce: bool | None = None, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of log-probabilities ``input`` at class indices ``target``.

    Input (C,), (N, C) or (N, C, d1, ...); ``weight`` rescales each class and the
    mean divides by the summed weights of the counted targets, as torch.

    >>> F.nll_loss(ember.tensor([[-1.0, -2.0]]), ember.tensor([1]))
    tensor(2.)
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    if input.ndim == 0:
        raise ValueError("nll_loss: expected input of shape (C,), (N, C) or (N, C, ...)")
    target_array = target.array if isinstance(target, Tensor) else xp.asarray(target)
    flat, valid, safe = class_targets(target_array, input.shape, ignore_index)
    class_dim = 0 if input.ndim == 1 else 1
    index = _constant(safe.reshape(target_array.shape)).unsqueeze(class_dim)
    picked = input.gather(class_dim, index).squeeze(class_dim)
    w = valid.astype(input.dtype)
    if weight is not None:
        w = w * _class_weight(weight, input.shape[class_dim], input.dtype)[safe]
    loss = -picked * _constant(w.reshape(target_array.shape))
    if reduction == "mean":
        return loss.sum() / _constant(xp.asarray(w.sum(), input.dtype))
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor,  # noqa: A002
                                     weight: Tensor | None = None,
                                     size_average: bool | None = None,
                                     reduce: bool | None = None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """Binary cross-entropy of logits: ``(1 - t) x + (1 + (pw - 1) t) softplus(-x)``.

    ``softplus(-x) = -log(sigmoid(x))`` never overflows, so any logit is safe.

    >>> F.binary_cross_entropy_with_logits(ember.tensor([0.0]), ember.tensor([1.0]))
    tensor(0.6931)
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    if tuple(target.shape) != tuple(input.shape):
        raise ValueError(f"Target size ({target.shape}) must be the same as input size "
                         f"({input.shape})")
    neg_log_sigmoid = (-input).softplus()
    if pos_weight is not None:
        neg_log_sigmoid = (1 + (pos_weight - 1) * target) * neg_log_sigmoid
    loss = (1 - target) * input + neg_log_sigmoid
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def kl_div(input: Tensor, target: Tensor, size_average: bool | None = None,  # noqa: A002
           reduce: bool | None = None, reduction: str = "mean",
           log_target: bool = False) -> Tensor:
    """KL divergence ``target * (log(target) - input)`` with ``input`` log-probabilities.

    ``reduction='batchmean'`` divides the sum by the batch size (the true KL);
    ``log_target=True`` takes the target as log-probabilities too.
    """
    if reduction == "batchmean":
        reduction_used = "batchmean"
    else:
        reduction_used = legacy_reduction(size_average, reduce, reduction)
        if reduction_used == "mean":
            warnings.warn("reduction: 'mean' divides the total loss by both the batch size and "
                          "the support size.'batchmean' divides only by the batch size, and "
                          "aligns with the KL div math definition.'mean' will be changed to "
                          "behave the same as 'batchmean' in the next major release.",
                          stacklevel=2)
    if log_target:
        loss = target.exp() * (target - input)
    else:  # xlogy(t, t): 0 where t == 0 (log of 1 there keeps value and gradient finite)
        safe = FUNCTIONS["where"](target == 0, 1.0, target)
        loss = target * safe.log() - target * input
    if reduction_used == "batchmean":
        return loss.sum() / input.shape[0] if input.ndim else loss.sum()
    return _reduce(loss, reduction_used)


# ---------------------------------------------------------------- conv-net normalisation
def dropout2d(input: Tensor, p: float = 0.5, training: bool = True,  # noqa: A002
              inplace: bool = False) -> Tensor:
    """Zero whole channels of (N, C, H, W) with probability ``p``, scaling the rest."""
    _check_probability(p, "dropout")
    if input.ndim not in (3, 4):
        raise ValueError(f"dropout2d: expected a 3-D or 4-D input, got shape {input.shape}")
    if not training or p == 0.0:
        return input
    shape = input.shape[:-2] + (1, 1)
    mask = _keep_mask(Tensor(xp.empty(shape, input.dtype), input.dtype), p)
    return input * _constant(mask / (1.0 - p)) if p < 1.0 else input * 0.0


def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None,  # noqa: A002
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalise each group of ``C / num_groups`` channels over the channels and space."""
    if input.ndim < 2 or input.shape[1] % num_groups:
        raise ValueError(f"group_norm: expected input (N, C, ...) with C divisible by "
                         f"num_groups={num_groups}, got shape {input.shape}")
    n = input.shape[0]
    grouped = input.reshape(n, num_groups, -1)
    out = FUNCTIONS["standardize"](grouped, (2,), eps).reshape(*input.shape)
    return _affine(out, weight, bias, _channel_shape(input))


def instance_norm(input: Tensor, running_mean: Tensor | None = None,  # noqa: A002
                  running_var: Tensor | None = None, weight: Tensor | None = None,
                  bias: Tensor | None = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalise each (sample, channel) plane over its spatial dims."""
    if input.ndim < 3:
        raise ValueError(f"instance_norm: expected input (N, C, ...), got shape {input.shape}")
    spatial = tuple(range(2, input.ndim))
    if not use_input_stats:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    out = FUNCTIONS["standardize"](input, spatial, eps)
    if running_mean is not None and running_var is not None:
        # torch: the batch average of each instance's mean and unbiased variance
        planes = input.array.reshape(input.shape[0], input.shape[1], -1)
        with no_grad():
            running_mean.mul_(1 - momentum).add_(planes.mean(axis=2).mean(0) * momentum)
            running_var.mul_(1 - momentum).add_(planes.var(axis=2, ddof=1).mean(0) * momentum)
    return _affine(out, weight, bias, _channel_shape(input))


__all__ = sorted({*__all__, "dropout2d", "group_norm", "instance_norm",
                  "dropout", "alpha_dropout", "bilinear", "batch_norm", "layer_norm",
                  "logsigmoid", "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss",
                  "nll_loss", "binary_cross_entropy_with_logits", "kl_div"})
