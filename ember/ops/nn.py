"""Fused primitives for layers and losses.

Each is one Function because composing it from smaller ops would be slower
(``linear``, ``standardize``), less stable (``cross_entropy``: the gradient is
``softmax - target`` directly, never the derivative of a log) or would miss
torch's edge behaviour (``binary_cross_entropy``'s logs clamped at -100,
``embedding``'s padding row that gets no gradient).
"""

from __future__ import annotations

import warnings
from typing import Any

from ember import parallel
from ember.autograd import FUNCTIONS, Function, register, unbroadcast
from ember.backend import xp
from ember.blas import column_sums, matmul
from ember.ops import kernels
from ember.ops.index import largest_unsigned
from ember.ops.reduce import log_softmax_array, normalize_dims
from ember.tensor import Tensor

REDUCTIONS = ("mean", "sum", "none")
_BCE_EPSILON = float(xp.float32(1e-12))  # torch's floor for x (1 - x), a float32 constant


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction "
                         f"(expected one of {', '.join(REDUCTIONS)})")
    return reduction


def legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """torch's deprecated ``size_average``/``reduce`` pair, turned into a reduction."""
    if size_average is None and reduce is None:
        return check_reduction(reduction)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    mode = ("mean" if size_average else "sum") if reduce else "none"
    warnings.warn("size_average and reduce args will be deprecated, please use "
                  f"reduction='{mode}' instead.", stacklevel=3)
    return mode


def _array_or_none(value: Any, dtype: Any) -> Any:
    """A weight argument (Tensor, array or None) as an array of the input's dtype."""
    if value is None:
        return None
    return xp.asarray(value.array if isinstance(value, Tensor) else value, dtype=dtype)


# ---------------------------------------------------------------- linear
@register("linear", method=False)
class Linear(Function):
    """``x @ W.T + b`` in one op: the hot path of every MLP.

    The backward is ``gx = g @ W``, ``gW = g^T x`` and ``gb = sum(g)`` over all
    leading (batch) dims; no transposed copies are made.
    """

    arity = None  # (x, weight) or (x, weight, bias)

    def forward(self, x, weight, bias=None):
        if weight.ndim != 2:
            raise ValueError(f"weight must be 2-D (out_features, in_features), "
                             f"got shape {weight.shape}")
        out_features, in_features = weight.shape
        if x.ndim == 0 or x.shape[-1] != in_features:
            raise ValueError(f"expected input with last dimension {in_features}, "
                             f"got shape {x.shape}")
        if bias is not None and bias.shape != (out_features,):
            raise ValueError(f"bias must have shape ({out_features},), got {bias.shape}")
        if x.dtype != weight.dtype:
            raise TypeError(f"linear: input dtype {x.dtype} does not match weight dtype "
                            f"{weight.dtype}; cast one of them (e.g. x.to({weight.dtype}))")
        self.saved = (x, weight)
        if x.ndim == 2:  # the common case: no reshapes
            out = matmul(x, weight.T)
        else:
            out = matmul(x.reshape(-1, in_features), weight.T).reshape(
                x.shape[:-1] + (out_features,))
        if bias is not None:
            out += bias
        return out

    def backward(self, g):
        x, weight = self.saved
        g2 = g.reshape(-1, weight.shape[0])
        need = self.needs_input_grad
        gx = matmul(g2, weight).reshape(x.shape) if need[0] else None
        gw = matmul(g2.T, x.reshape(-1, weight.shape[1])) if need[1] else None
        if len(need) == 2:
            return gx, gw
        return gx, gw, (column_sums(g2) if need[2] else None)

    def to_onnx(self, g, inputs, output):
        if len(g.shape(inputs[0])) == 2:
            g.node("Gemm", inputs, output, transB=1)
            return
        weight_t = g.node("Transpose", [inputs[1]], perm=[1, 0])
        if len(inputs) == 2:
            g.node("MatMul", [inputs[0], weight_t], output)
            return
        g.node("Add", [g.node("MatMul", [inputs[0], weight_t]), inputs[2]], output)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # noqa: A002
    """``input @ weight.T + bias``, as ``torch.nn.functional.linear``.

    >>> F.linear(ember.ones(2, 3), ember.ones(4, 3)).shape
    (2, 4)
    """
    return Linear.apply(input, weight) if bias is None else Linear.apply(input, weight, bias)


FUNCTIONS["linear"] = linear


# ---------------------------------------------------------------- cross entropy
def _classes_last(x: Any) -> Any:
    """Logits of shape (C,), (N, C) or (N, C, d1, ...) as a (samples, C) matrix."""
    if x.ndim == 1:
        return x[None, :]
    if x.ndim == 2:
        return x
    return xp.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def _classes_back(m: Any, shape: tuple) -> Any:
    """Undo ``_classes_last``: a (samples, C) matrix back in the logits' layout."""
    if len(shape) <= 2:
        return m.reshape(shape)
    moved = (shape[0],) + shape[2:] + (shape[1],)
    return xp.moveaxis(m.reshape(moved), -1, 1)


def class_targets(target: Any, shape: tuple, ignore_index: int) -> tuple:
    """Flat class indices, their validity mask, and indices safe to read with."""
    expected = () if len(shape) == 1 else (shape[0],) + shape[2:]
    if target.shape != expected:
        raise ValueError(f"expected class-index target of shape {expected} for input of shape "
                         f"{shape}, got {target.shape}")
    flat = target.reshape(-1)
    valid = flat != ignore_index
    classes = shape[0] if len(shape) == 1 else shape[1]
    bad = valid & ((flat < 0) | (flat >= classes))
    if bad.any():
        raise IndexError(f"target {int(flat[bad][0])} is out of bounds for {classes} classes "
                         f"(valid targets are 0..{classes - 1} or ignore_index={ignore_index})")
    return flat, valid, xp.where(valid, flat, 0)


_XENT_KERNEL_SIZE, _XENT_KERNEL_CLASSES = 4096, 16
"""``kernels.cross_entropy_rows`` (one call; scalar C exponentials) runs for up to this
many logits, or for rows of up to this many classes at any size; otherwise NumPy's
vectorised passes win (16 x 512: 54 vs 41 µs; 512 x 1000: 2.6 vs 0.66 ms), while on short
rows their per-row reductions lose (4096 x 10: 432 vs 242 µs; docs/performance.md,
section 23)."""


@register("cross_entropy", method=False)
class CrossEntropy(Function):
    """Cross-entropy of logits against class indices or class probabilities, fused.

    Forward: ``-sum_c q_c log_softmax(x)_c`` with log-softmax via logsumexp, where
    ``q`` is the (smoothed, weighted) target. Backward: ``(softmax * sum(q) - q)``
    times the reduction's scale, never the derivative of a log.
    """

    arity = 2

    def forward(self, logits, target, weight=None, ignore_index=-100, reduction="mean",
                label_smoothing=0.0):
        if logits.ndim == 0 or logits.dtype.kind != "f":
            raise ValueError(f"expected floating logits of shape (C,), (N, C) or (N, C, ...), "
                             f"got {logits.dtype} of shape {logits.shape}")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        self.reduction, self.smoothing = check_reduction(reduction), label_smoothing
        self.shape, x = logits.shape, _classes_last(logits)
        self.classes = x.shape[1]
        self.weight = self._check_weight(weight, logits.dtype)
        self.plain = False
        if (logits.ndim == 2 and target.dtype.kind in "iu" and self.weight is None
                and not label_smoothing):
            loss = self._forward_plain(x, target, ignore_index)
            if loss is not None:
                return loss
        # an infinite logit: NaN, as in torch, silently; no classes: nothing to normalise
        logp = log_softmax_array(x, 1) if x.shape[1] else x.copy()
        self.save(logp)
        if target.dtype.kind == "f":
            per_sample = self._forward_probabilities(logp, target)
        elif target.dtype.kind in "iu":
            per_sample = self._forward_classes(logp, target, ignore_index)
        else:
            raise TypeError(f"cross_entropy: target must hold class indices (integers) or "
                            f"class probabilities (floats), got {target.dtype}")
        return self._reduce(per_sample)

    def _forward_plain(self, x, target, ignore_index):
        """The common case in four passes: (N, C) logits with finite row maxima, one
        class per sample, no weights, smoothing or ignored targets. Keeps ``exp(x - max)``
        and its row sums; backward is then one pass. None: take the general path, which
        also gives the errors for bad targets."""
        if x.size == 0 or target.shape != (x.shape[0],) or target.dtype != xp.int64 or \
                0 <= ignore_index < self.classes:  # a class to ignore: the general path
            return None
        if (x.size <= _XENT_KERNEL_SIZE or self.classes <= _XENT_KERNEL_CLASSES) and \
                kernels.flat_ready(x):  # the passes below in one compiled loop
            found = kernels.cross_entropy_rows(x, target)
            if found is None:
                return None
            exps, sums, per_sample = found
            rows = None
        else:
            found = self._plain_passes(x, target)
            if found is None:
                return None
            exps, sums, per_sample, rows = found
        self.plain = True
        self.save(exps, sums, target, rows)
        if self.reduction == "none":
            return per_sample
        total = xp.add.reduce(per_sample)
        return total if self.reduction == "sum" else total / per_sample.dtype.type(len(target))

    def _plain_passes(self, x, target):
        """``cross_entropy_rows`` for many or long rows: NumPy's passes, plus the row
        numbers ``backward`` picks the targets with (None after the compiled pass that
        float32 takes, whose gradient is a kernel too); None where the general path must
        take over."""
        # one maximum checks both bounds: seen as unsigned, negatives (ignore_index
        # included) are the largest (the whole forward of 64 x 10 is ~20 µs: it shows)
        if largest_unsigned(target) >= self.classes:
            return None
        top = x.max(axis=1, keepdims=True)
        if not xp.isfinite(top).all():  # the general path's logsumexp handles infinities
            return None
        if x.dtype == xp.float32 and kernels.flat_ready(x):  # the passes below, fused
            return kernels.cross_entropy_long_rows(x, top, target) + (None,)
        shifted = xp.subtract(x, top)
        rows = xp.arange(len(target))
        picked = shifted[rows, target]
        exps = xp.exp(shifted, out=shifted)
        sums = xp.add.reduce(exps, axis=1)
        per_sample = xp.log(sums)
        per_sample -= picked
        return exps, sums, per_sample, rows

    def _backward_plain(self, g):
        """``(softmax - onehot) * scale`` from the kept ``exp(x - max)`` and row sums."""
        exps, sums, safe, rows = self.saved
        if self.reduction == "none":
            scale = g
        else:
            scale = g / exps.dtype.type(len(safe)) if self.reduction == "mean" else g
        if rows is None:  # the forward's kernel ran: so does its gradient's
            return kernels.cross_entropy_grad(exps, sums, safe, scale.reshape(-1)), None
        scale = xp.broadcast_to(scale, sums.shape)
        grad = exps * (scale / sums)[:, None]
        grad[rows, safe] -= scale
        return grad, None

    def _check_weight(self, weight: Any, dtype: Any) -> Any:
        if weight is None:
            return None
        weight = xp.asarray(weight, dtype=dtype)
        if weight.shape != (self.classes,):
            raise ValueError(f"weight must have one entry per class ({self.classes}), "
                             f"got shape {weight.shape}")
        return weight

    def _forward_classes(self, logp, target, ignore_index):
        flat, valid, safe = class_targets(target, self.shape, ignore_index)
        rows = xp.arange(flat.size)
        valid = valid.astype(logp.dtype)  # as a float mask, so float32 stays float32
        w = (self.weight[safe] if self.weight is not None else xp.ones(flat.size, logp.dtype))
        w = w * valid
        loss = -(1.0 - self.smoothing) * w * logp[rows, safe]
        if self.smoothing:
            wvec = self.weight if self.weight is not None else 1.0
            loss = loss - (self.smoothing / self.classes) * valid * (logp * wvec).sum(axis=1)
        self.targets, self.sample_weight, self.valid = safe, w, valid
        self.denominator = w.sum()
        return loss

    def _forward_probabilities(self, logp, target):
        if target.shape != self.shape:
            raise ValueError(f"probability target must have the input's shape {self.shape}, "
                             f"got {target.shape}")
        q = _classes_last(target).astype(logp.dtype, copy=False)
        if self.smoothing:
            q = q * (1.0 - self.smoothing) + self.smoothing / self.classes
        if self.weight is not None:
            q = q * self.weight
        self.targets, self.sample_weight, self.valid = q, None, None
        self.denominator = logp.dtype.type(logp.shape[0])
        return -(q * logp).sum(axis=1)

    def _reduce(self, per_sample):
        if self.reduction == "none":
            return per_sample.reshape(() if len(self.shape) == 1 else
                                      (self.shape[0],) + self.shape[2:])
        total = per_sample.sum()
        if self.reduction == "sum":
            return total
        with xp.errstate(divide="ignore", invalid="ignore"):
            return xp.asarray(total / self.denominator, dtype=per_sample.dtype)

    def _scale(self, g):
        """The upstream gradient per sample: g itself, or the mean's 1/denominator."""
        if self.reduction == "none":
            return g.reshape(-1)
        if self.reduction == "sum":
            return g
        with xp.errstate(divide="ignore", invalid="ignore"):
            return g / self.denominator

    def backward(self, g):
        if self.plain:
            return self._backward_plain(g)
        (logp,) = self.saved
        scale = xp.broadcast_to(xp.asarray(self._scale(g), logp.dtype), (logp.shape[0],))
        gx = gt = None
        if self.needs_input_grad[0]:
            with xp.errstate(invalid="ignore"):  # a nan mean (all ignored) gives nan, as torch
                gx = _classes_back(self._logits_grad(logp, scale), self.shape)
        if self.needs_input_grad[1]:  # probability targets: d/dq of -sum q log p
            wvec = self.weight if self.weight is not None else 1.0
            gt_m = -(1.0 - self.smoothing) * wvec * logp * scale[:, None]
            gt = _classes_back(gt_m, self.shape)
        return gx, gt

    def _logits_grad(self, logp, scale):
        """``softmax * sum(q) - q``, per sample, times ``scale``."""
        softmax = xp.exp(logp)
        if self.sample_weight is None:  # probability targets: q is dense
            q = self.targets
            return (softmax * q.sum(axis=1, keepdims=True) - q) * scale[:, None]
        w, ls, classes = self.sample_weight, self.smoothing, self.classes
        wsum = self.weight.sum() if self.weight is not None else classes
        q_total = (1.0 - ls) * w + (ls / classes) * wsum * self.valid
        grad = softmax * (q_total * scale)[:, None]
        grad[xp.arange(w.size), self.targets] -= (1.0 - ls) * w * scale
        if ls:
            wvec = self.weight if self.weight is not None else 1.0
            grad -= (ls / classes) * (self.valid * scale)[:, None] * wvec
        return grad


def cross_entropy(input: Tensor, target: Tensor, weight: Any = None,  # noqa: A002
                  size_average: bool | None = None, ignore_index: int = -100,
                  reduce: bool | None = None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits ``input`` with class indices or probabilities ``target``.

    Input (C,), (N, C) or (N, C, d1, ...); class targets (), (N,) or (N, d1, ...)
    (integers, ``ignore_index`` skipped), or probabilities of the input's shape.

    >>> F.cross_entropy(ember.zeros(2, 4), ember.tensor([0, 3]))
    tensor(1.3863)
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    weight = _array_or_none(weight, input.dtype)
    return CrossEntropy.apply(input, target, weight, ignore_index, reduction, label_smoothing)


FUNCTIONS["cross_entropy"] = cross_entropy


# ---------------------------------------------------------------- mean squared error
@register("mse_loss", method=False)
class MseLoss(Function):
    """``(x - t)^2``, reduced, in one op: one subtraction kept for backward, whose
    gradient is ``2 (x - t) g`` (divided by the count for the mean). Composed of
    sub, mul, sum and div it took four graph nodes each way; the seed MLP's MSE
    step is short enough for that to show (docs/performance.md).
    """

    arity = 2
    promote = True  # an integer target is promoted, as in ``input - target``

    def forward(self, x, t, reduction="mean"):
        self.reduction = check_reduction(reduction)
        diff = x - t
        if diff.dtype.kind != "f":  # torch refuses integers too (their squares overflow)
            raise TypeError(f"mse_loss: expected floating-point input and target, got "
                            f"{x.dtype} and {t.dtype}")
        self.saved = (diff,)
        squared = diff * diff
        if reduction == "none":
            return squared
        if reduction == "sum":
            return squared.sum()
        if not squared.size:
            return xp.asarray(xp.nan, squared.dtype)
        if squared.dtype in (xp.float32, xp.float64):  # = mean(), without its wrapper
            return xp.add.reduce(squared, axis=None) / squared.size
        return squared.mean()  # float16 and integers: mean() accumulates at higher precision

    def backward(self, g):
        (diff,) = self.saved
        scale = g * (2.0 / diff.size) if self.reduction == "mean" else g * 2.0
        grad = diff * scale
        (x, t), need = self.parents, self.needs_input_grad
        gx = unbroadcast(grad, x.array.shape) if need[0] else None
        gt = unbroadcast(-grad, t.array.shape) if need[1] else None
        return gx, gt


def mse_loss(input: Tensor, target: Tensor, size_average: bool | None = None,  # noqa: A002
             reduce: bool | None = None, reduction: str = "mean") -> Tensor:
    """Mean squared error ``(input - target)^2``, reduced, as one op (``F.mse_loss``
    calls it, and also takes an elementwise ``weight``).

    >>> mse_loss(ember.tensor([1.0, 3.0]), ember.tensor([0.0, 0.0]))
    tensor(5.)
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    if tuple(target.shape) != tuple(input.shape):
        warnings.warn(f"Using a target size ({target.shape}) that is different to the input "
                      f"size ({input.shape}). This will likely lead to incorrect results due "
                      "to broadcasting. Please ensure they have the same size.", stacklevel=2)
    return MseLoss.apply(input, target, reduction)


FUNCTIONS["mse_loss"] = mse_loss


# ---------------------------------------------------------------- binary cross entropy
@register("binary_cross_entropy", method=False)
class BinaryCrossEntropy(Function):
    """``-w (t log x + (1 - t) log(1 - x))`` with each log clamped at -100, as torch.

    The input gradient is torch's ``w (x - t) / max(x (1 - x), 1e-12)`` (a float32
    1e-12, as in torch), finite even at x = 0 or 1; the target gradient is
    ``w (log(1 - x) - log x)``.
    """

    arity = 2

    def forward(self, x, t, weight=None, reduction="mean"):
        if t.shape != x.shape:
            raise ValueError(f"Using a target size ({t.shape}) that is different to the input "
                             f"size ({x.shape}) is deprecated. Please ensure they have the "
                             "same size.")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise ValueError("all elements of input should be between 0 and 1 "
                             f"(got values in [{x.min()}, {x.max()}]); use "
                             "binary_cross_entropy_with_logits for logits")
        if weight is not None and xp.broadcast_shapes(weight.shape, x.shape) != x.shape:
            raise ValueError(f"weight of shape {weight.shape} does not broadcast to the "
                             f"input's shape {x.shape}")
        self.reduction, self.weight = check_reduction(reduction), weight
        t = t.astype(x.dtype, copy=False)
        self.save(x, t)
        with xp.errstate(divide="ignore"):
            log_x = xp.maximum(xp.log(x), -100)
            log_1mx = xp.maximum(xp.log1p(-x), -100)
        loss = (t - 1) * log_1mx - t * log_x
        if weight is not None:
            loss = loss * weight
        return _reduce_elementwise(loss, self.reduction)

    def backward(self, g):
        x, t = self.saved
        g = _spread(g, x, self.reduction)
        if self.weight is not None:
            g = g * self.weight
        gx = gt = None
        if self.needs_input_grad[0]:
            gx = g * (x - t) / xp.maximum((1 - x) * x, _BCE_EPSILON)
        if self.needs_input_grad[1]:
            with xp.errstate(divide="ignore"):
                gt = g * (xp.log1p(-x) - xp.log(x))
        return gx, gt


def _reduce_elementwise(loss: Any, reduction: str) -> Any:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return xp.asarray(loss.sum(), loss.dtype)
    with xp.errstate(invalid="ignore"):
        return xp.asarray(loss.mean() if loss.size else xp.nan, loss.dtype)


def _spread(g: Any, x: Any, reduction: str) -> Any:
    """The upstream gradient of a reduced elementwise loss, per element."""
    if reduction == "none":
        return g
    return xp.broadcast_to(g / x.size if reduction == "mean" else g, x.shape)


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Any = None,  # noqa: A002
                         size_average: bool | None = None, reduce: bool | None = None,
                         reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of probabilities ``input`` in [0, 1] against ``target``.

    >>> F.binary_cross_entropy(ember.tensor([0.5]), ember.tensor([1.0]))
    tensor(0.6931)
    """
    reduction = legacy_reduction(size_average, reduce, reduction)
    weight = _array_or_none(weight, input.dtype)
    return BinaryCrossEntropy.apply(input, target, weight, reduction)


FUNCTIONS["binary_cross_entropy"] = binary_cross_entropy


# ---------------------------------------------------------------- embedding
@register("embedding", method=False)
class Embedding(Function):
    """Rows of ``weight`` picked by integer ``indices``.

    The backward scatter-adds (repeated indices sum their gradients); the
    ``padding_idx`` row gets no gradient, as in torch.
    """

    arity = 2

    def forward(self, indices, weight, padding_idx=None):
        if indices.dtype.kind not in "iu":
            raise TypeError(f"embedding: indices must be an integer tensor, got {indices.dtype}")
        if weight.ndim != 2:
            raise ValueError(f"weight must be 2-D (num_embeddings, embedding_dim), "
                             f"got shape {weight.shape}")
        rows = weight.shape[0]
        if indices.size and (indices.min() < 0 or indices.max() >= rows):
            bad = indices[(indices < 0) | (indices >= rows)].reshape(-1)[0]
            raise IndexError(f"index {bad} is out of range for an embedding of "
                             f"{rows} rows (valid: 0..{rows - 1})")
        self.save(indices)
        self.rows, self.padding_idx = rows, padding_idx
        return weight[indices]

    def backward(self, g):
        (indices,) = self.saved
        dim = g.shape[-1]
        grad = xp.zeros((self.rows, dim), g.dtype)
        xp.add.at(grad, indices.reshape(-1), g.reshape(-1, dim))
        if self.padding_idx is not None:
            grad[self.padding_idx] = 0
        return None, grad

    def to_onnx(self, g, inputs, output):
        indices, weight = inputs
        g.node("Gather", [weight, indices], output, axis=0)


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:  # noqa: A002
    """``weight[input]``: look up rows by integer index.

    >>> F.embedding(ember.tensor([[0, 2]]), ember.eye(3)).shape
    (1, 2, 3)
    """
    if not isinstance(input, Tensor):
        input = Tensor(xp.asarray(input))  # noqa: A001
    if padding_idx is not None and padding_idx < 0:
        padding_idx += weight.shape[0]
    return Embedding.apply(input, weight, padding_idx)


FUNCTIONS["embedding"] = embedding


# ---------------------------------------------------------------- standardize
@register("standardize", method=False)
class Standardize(Function):
    """``(x - mean) / sqrt(var + eps)`` over ``dims``, with the biased variance.

    The shared core of batch and layer norm. Backward, with ``xh`` the output:
    ``gx = (g - mean(g) - xh * mean(g * xh)) / sqrt(var + eps)``.
    """

    def forward(self, x, dims, eps=1e-5):
        axes = normalize_dims(dims, x.ndim)
        centred = x - x.mean(axis=axes, keepdims=True)
        var = (centred * centred).mean(axis=axes, keepdims=True)
        rstd = 1.0 / xp.sqrt(var + eps)
        centred *= rstd
        self.axes = axes
        self.save(centred, rstd)
        return centred

    def backward(self, g):
        xhat, rstd = self.saved
        mean_g = g.mean(axis=self.axes, keepdims=True)
        mean_gx = (g * xhat).mean(axis=self.axes, keepdims=True)
        return rstd * (g - mean_g - xhat * mean_gx)

    def to_onnx(self, g, inputs, output):
        x, eps, shape = inputs[0], float(g.args(self)["eps"]), g.shape(inputs[0])
        trailing = self.axes == tuple(range(len(shape) - len(self.axes), len(shape)))
        if g.opset >= 17 and trailing and self.axes:
            scale = g.const(xp.ones(shape[self.axes[0]:]), g.dtype(x))
            g.node("LayerNormalization", [x, scale], output, axis=self.axes[0], epsilon=eps)
            return
        mean = g.axes_node("ReduceMean", [x], g.fresh("mean"), self.axes, 18, keepdims=1)
        centred = g.node("Sub", [x, mean])
        var = g.axes_node("ReduceMean", [g.node("Mul", [centred, centred])], g.fresh("var"),
                          self.axes, 18, keepdims=1)
        std = g.node("Sqrt", [g.node("Add", [var, g.scalar(eps, x)])])
        g.node("Div", [centred, std], output)


# ---------------------------------------------------------------- batch norm (training)
BN_BLOCK_BYTES = 1 << 20  # samples per block: about half a core's L2 cache


def _block_size(a: Any) -> int:
    """Samples (axis 0) per block for batch norm, which works through a batch one
    block at a time: each block's passes then run on data still in cache, and a big
    activation is read from memory twice per direction instead of five to ten times."""
    return max(1, BN_BLOCK_BYTES // max(1, a[:1].nbytes))


def _channel_sum(a: Any, b: Any = None) -> Any:
    """Per-channel (dim 1) sum of ``a`` or of ``a * b``, with no temporary: einsum runs
    ~3x faster than ``sum(axis=(0, 2, 3))`` on NCHW arrays."""
    letters = "abcdefghijklmnopqrstuvwxyz"[:a.ndim]
    if b is None:
        return xp.einsum(f"{letters}->b", a)
    return xp.einsum(f"{letters},{letters}->b", a, b)


def _channel_shape(x: Any) -> tuple:
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _block_moments(x: Any) -> list:
    """``(count, mean, m2)`` per channel for each block of ``x``'s samples, ``m2`` the
    sum of squares about the block's own mean."""
    step, moments = _block_size(x), []
    scratch = xp.empty_like(x[:step])
    for start in range(0, len(x), step):
        block = x[start:start + step]
        count = block.size // block.shape[1]
        mean = _channel_sum(block) / count
        centred = xp.subtract(block, mean.reshape(_channel_shape(x)), out=scratch[:len(block)])
        moments.append((count, mean, _channel_sum(centred, centred)))
    return moments


def batch_moments(x: Any) -> tuple:
    """Per-channel mean and biased variance of an (N, C, ...) array, from block moments
    combined as in Chan et al.'s parallel algorithm (as stable as two passes over the
    whole array): ``m2 = sum(m2_b) + sum(n_b * (mean_b - mean)^2)``."""
    parts = [m for thread in parallel.map_rows(_block_moments, x) for m in thread]
    if not parts:  # an empty batch: NaN statistics, as torch gives
        nan = xp.full(x.shape[1], xp.nan, x.dtype)
        return nan, nan.copy()
    total = sum(count for count, _, _ in parts)
    mean = sum(count * m for count, m, _ in parts) / total
    m2 = sum(m2_b + count * (m - mean) ** 2 for count, m, m2_b in parts)
    return mean, m2 / total


def _normalize_into(out: Any, x: Any, mean: Any, scale: Any, shift: Any) -> None:
    """``out = (x - mean) * scale + shift``, block by block (three passes in cache)."""
    step = _block_size(x)
    for start in range(0, len(x), step):
        block = out[start:start + step]
        xp.subtract(x[start:start + step], mean, out=block)
        block *= scale
        block += shift


def _centred_blocks(x: Any, mean: Any) -> Any:
    """``(rows, x[rows] - mean)`` for each block of samples, the difference written into
    one scratch array that every block reuses (it stays in cache)."""
    step = _block_size(x)
    scratch = xp.empty_like(x[:step])
    for start in range(0, len(x), step):
        rows = slice(start, start + step)
        block = x[rows]
        yield rows, xp.subtract(block, mean, out=scratch[:len(block)])


def _gradient_sums(g: Any, x: Any, mean: Any) -> tuple:
    """``(sum(g), sum(g * (x - mean)))`` per channel, block by block."""
    g_sum, g_centred = xp.zeros(x.shape[1], g.dtype), xp.zeros(x.shape[1], g.dtype)
    for rows, centred in _centred_blocks(x, mean):
        g_sum += _channel_sum(g[rows])
        g_centred += _channel_sum(g[rows], centred)
    return g_sum, g_centred


def _input_grad_into(gx: Any, g: Any, x: Any, mean: Any, scale: Any, per_centred: Any,
                     per_channel: Any) -> None:
    """``gx = g * scale - ((x - mean) * per_centred + per_channel)``, block by block."""
    for rows, centred in _centred_blocks(x, mean):
        centred *= per_centred
        centred += per_channel
        out = xp.multiply(g[rows], scale, out=gx[rows])
        out -= centred


@register("batch_norm_train", method=False)
class BatchNorm(Function):
    """Training-mode batch norm in one op: per channel (dim 1), ``y = (x - mean) *
    rstd * w + b`` with the batch's mean and ``rstd = 1 / sqrt(var + eps)`` (biased var).

    One op rather than ``standardize(x) * w + b`` because the composed form keeps three
    full-size intermediates alive for backward and makes about twice the passes over
    memory; this one saves nothing but per-channel vectors (``x`` is its input, alive
    anyway), and works through the batch in cache-sized blocks (``_blocks``).
    ``running=(mean, var, momentum)`` arrays are moved towards the batch statistics in
    place, as torch's kernel does. Backward, with ``n`` values per channel and ``xh =
    (x - mean) * rstd``: ``gb = sum(g)``, ``gw = sum(g * xh)``,
    ``gx = rstd * w * (g - gb / n - xh * gw / n)``.
    """

    arity = 3

    def forward(self, x, weight, bias, *, eps=1e-5, running=None):
        n, shape = x.size // x.shape[1], _channel_shape(x)
        self.compiled = kernels.norm_ready(x)  # one pass per direction (kernels.py)
        mean, var = kernels.batch_moments(x) if self.compiled else batch_moments(x)
        rstd = 1.0 / xp.sqrt(var + eps)
        if running is not None:
            update_running_stats(running, mean, var * (n / max(n - 1, 1)))
        self.save(x, mean, rstd, weight)
        out = xp.empty_like(x)
        if self.compiled:
            kernels.normalize_into(out, x, mean, (rstd * weight).astype(x.dtype), bias)
        else:
            parallel.rows(_normalize_into, out, x, mean.reshape(shape),
                          (rstd * weight).reshape(shape), bias.reshape(shape))
        return out

    def backward(self, g):
        x, mean, rstd, weight = self.saved
        n, shape = x.size // x.shape[1], _channel_shape(x)
        compiled = self.compiled and kernels.norm_ready(g)
        if compiled:
            g_sum, g_centred = kernels.norm_grad_sums(g, x, mean)
        else:
            sums = parallel.map_rows(_gradient_sums, g, x, mean.reshape(shape))
            g_sum = sum(part[0] for part in sums[1:]) + sums[0][0]
            g_centred = sum(part[1] for part in sums[1:]) + sums[0][1]
        gw = g_centred * rstd  # sum(g * xh)
        gx = None
        if self.needs_input_grad[0]:
            scale = rstd * weight
            per_centred, per_channel = scale * rstd * gw / n, scale * g_sum / n
            gx = xp.empty_like(g)
            if compiled:
                kernels.norm_input_grad_into(gx, g, x, mean, *(
                    v.astype(x.dtype) for v in (scale, per_centred, per_channel)))
            else:
                parallel.rows(_input_grad_into, gx, g, x, mean.reshape(shape),
                              scale.reshape(shape), per_centred.reshape(shape),
                              per_channel.reshape(shape))
        return gx, gw, g_sum

    def to_onnx(self, g, inputs, output):
        x, weight, bias = inputs
        eps, channels = float(g.args(self)["eps"]), g.shape(x)[1]
        axes = [0] + list(range(2, len(g.shape(x))))
        target = g.ints([1, channels] + [1] * (len(axes) - 1))
        mean = g.axes_node("ReduceMean", [x], g.fresh("mean"), axes, 18, keepdims=1)
        centred = g.node("Sub", [x, mean])
        var = g.axes_node("ReduceMean", [g.node("Mul", [centred, centred])], g.fresh("var"),
                          axes, 18, keepdims=1)
        std = g.node("Sqrt", [g.node("Add", [var, g.scalar(eps, x)])])
        scaled = g.node("Mul", [g.node("Div", [centred, std]),
                                g.node("Reshape", [weight, target])])
        g.node("Add", [scaled, g.node("Reshape", [bias, target])], output)


def update_running_stats(running: tuple, mean: Any, unbiased_var: Any) -> None:
    """``running = (1 - momentum) * running + momentum * batch``, in place."""
    running_mean, running_var, momentum = running
    running_mean *= 1 - momentum
    running_mean += mean * momentum
    running_var *= 1 - momentum
    running_var += unbiased_var * momentum
