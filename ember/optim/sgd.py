"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

from __future__ import annotations

from typing import Any

from ember.backend import xp
from ember.blas import axpy, split_pays
from ember.ops import kernels
from ember.optim.optimizer import Optimizer, ParamsT, _require, _state_tensor

__all__ = ["SGD"]


class SGD(Optimizer):
    """torch.optim.SGD's update, in place on each parameter's array.

    With momentum ``mu``: ``b = mu * b + (1 - dampening) * g`` (``b = g`` on the
    first step), then ``p -= lr * (g + mu * b if nesterov else b)``.

    >>> w = ember.tensor([1.0, -2.0], requires_grad=True)
    >>> opt = ember.optim.SGD([w], lr=0.1, momentum=0.9, nesterov=True)
    >>> (w * w).sum().backward()
    >>> opt.step()
    >>> w
    tensor([ 0.6200, -1.2400], requires_grad=True)
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False, *,
                 maximize: bool = False) -> None:
        _require(lr >= 0.0, f"Invalid learning rate: {lr}")
        _require(momentum >= 0.0, f"Invalid momentum value: {momentum}")
        _require(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
        _require(not nesterov or (momentum > 0 and dampening == 0),
                 "Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        maximize = group["maximize"]
        plain = weight_decay == 0 and not maximize
        for p in group["params"]:
            grad = p._grad  # the slot, not the property: once per parameter per step
            if grad is None:
                continue
            param = p.array
            g = grad.array if plain else self._grad(param, grad.array, weight_decay, maximize)
            split = split_pays(param)  # a big weight that BLAS's other threads have read
            if momentum != 0:
                buf = self.state[p].get("momentum_buffer")
                if buf is not None and not split and kernels.sgd_momentum_update(
                        param, g, buf.array, momentum, group["dampening"], lr,
                        group["nesterov"]):
                    continue  # buffer and parameter updated in one compiled pass
                g = self._direction(p, g, buf, group, split)
            if split and axpy(-lr, g, param, split=True):  # its write shared by those threads
                continue
            if kernels.sgd_update(param, g, lr):  # NumPy's two passes' rounding, in one pass
                continue
            if not axpy(-lr, g, param):  # without kernels: BLAS's one pass (big arrays)
                xp.subtract(param, xp.multiply(g, lr, out=self._tmp(param, 1)), out=param)

    def _direction(self, p: Any, g: Any, buf: Any, group: dict[str, Any], split: bool) -> Any:
        """The momentum buffer updated and the direction to step along; the buffer in one
        compiled pass when the step itself is BLAS's, shared between threads (``split``)."""
        momentum, dampening, nesterov = group["momentum"], group["dampening"], group["nesterov"]
        if buf is not None and split and not nesterov and \
                kernels.momentum_update(g, buf.array, momentum, dampening):
            return buf.array
        return self._momentum(p, g, momentum, dampening, nesterov)

    def _momentum(self, p: Any, g: Any, momentum: float, dampening: float,
                  nesterov: bool) -> Any:
        """Update the momentum buffer and return the direction to step along."""
        state = self.state[p]
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = _state_tensor(g.copy())
            buf = buf.array
        else:
            buf = buf.array
            xp.multiply(buf, momentum, out=buf)
            if dampening != 0:
                g_scaled = xp.multiply(g, 1 - dampening, out=self._tmp(buf, 1))
                xp.add(buf, g_scaled, out=buf)
            else:
                xp.add(buf, g, out=buf)
        if not nesterov:
            return buf
        ahead = xp.multiply(buf, momentum, out=self._tmp(buf, 1))
        return xp.add(g, ahead, out=ahead)
