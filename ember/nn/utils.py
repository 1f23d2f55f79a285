"""Gradient clipping, as ``torch.nn.utils``."""

from __future__ import annotations

from collections.abc import Iterable

from ember.backend import xp
from ember.tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p.grad for p in params if p.grad is not None]


def _vector_norm(array, norm_type: float) -> float:
    values = xp.abs(array.astype(xp.float64, copy=False)).reshape(-1)
    if norm_type == float("inf"):
        return float(values.max()) if values.size else 0.0
    if norm_type == 0:
        return float((values != 0).sum())
    return float((values ** norm_type).sum() ** (1.0 / norm_type))


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    """Scale all gradients together so that their joint norm is at most ``max_norm``.

    The norm is taken over every gradient as one vector; each gradient is
    multiplied in place by ``min(1, max_norm / (total_norm + 1e-6))``, as torch.
    Returns the total norm (before clipping) as a Tensor.

    >>> w = ember.ones(4, requires_grad=True)
    >>> (3 * w).sum().backward()
    >>> nn.utils.clip_grad_norm_([w], max_norm=1.0)
    tensor(6.)
    """
    grads = _grads(parameters)
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not grads:
        return Tensor(xp.asarray(0.0, xp.float32))
    norms = [_vector_norm(g.array, norm_type) for g in grads]
    total = _vector_norm(xp.asarray(norms), norm_type)
    if error_if_nonfinite and not xp.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the gradients "
            "by the non-finite norm anyway, set `error_if_nonfinite=False`")
    clip_coef = min(max_norm / (total + 1e-6), 1.0)
    with xp.errstate(invalid="ignore"):  # an inf gradient times 0 is nan, as in torch
        for g in grads:
            g.array *= g.array.dtype.type(clip_coef)
    return Tensor(xp.asarray(total), grads[0].dtype)


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]``, in place."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        xp.clip(g.array, -clip_value, clip_value, out=g.array)
