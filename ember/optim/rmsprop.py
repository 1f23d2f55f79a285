"""RMSprop: divide the gradient by a running root-mean-square of its recent values."""

from __future__ import annotations

from typing import Any

from ember.backend import xp
from ember.optim.adam import lerp_
from ember.optim.optimizer import Optimizer, ParamsT, _require, _state_tensor

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """torch.optim.RMSprop's update, in place on each parameter's array.

    ``v = alpha * v + (1 - alpha) * g * g``; ``centered`` subtracts the square of
    a running mean of ``g``; the step is ``g / (sqrt(v) + eps)``, through a
    momentum buffer when ``momentum > 0``.

    >>> w = ember.tensor([1.0, -2.0], requires_grad=True)
    >>> opt = ember.optim.RMSprop([w], lr=1e-2, momentum=0.9, centered=True)
    >>> (w * w).sum().backward()
    >>> opt.step()
    >>> sorted(opt.state[w])
    ['grad_avg', 'momentum_buffer', 'square_avg', 'step']
    """

    def __init__(self, params: ParamsT, lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0, momentum: float = 0,
                 centered: bool = False, *, maximize: bool = False) -> None:
        _require(lr >= 0.0, f"Invalid learning rate: {lr}")
        _require(eps >= 0.0, f"Invalid epsilon value: {eps}")
        _require(momentum >= 0.0, f"Invalid momentum value: {momentum}")
        _require(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
        _require(alpha >= 0.0, f"Invalid alpha value: {alpha}")
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _init_state(self, state: dict[str, Any], param: Any, group: dict[str, Any]) -> None:
        state["step"] = 0.0
        state["square_avg"] = _state_tensor(xp.zeros_like(param))
        if group["momentum"] > 0:
            state["momentum_buffer"] = _state_tensor(xp.zeros_like(param))
        if group["centered"]:
            state["grad_avg"] = _state_tensor(xp.zeros_like(param))

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, alpha, eps, momentum = group["lr"], group["alpha"], group["eps"], group["momentum"]
        weight_decay, maximize = group["weight_decay"], group["maximize"]
        for p in group["params"]:
            if p.grad is None:
                continue
            param, state = p.array, self.state[p]
            if not state:
                self._init_state(state, param, group)
            state["step"] += 1
            g = self._grad(param, p.grad.array, weight_decay, maximize)
            avg = self._rms(state, g, alpha, group["centered"], self._tmp(param, 1))
            xp.add(avg, eps, out=avg)
            step = xp.divide(g, avg, out=avg)
            if momentum > 0:
                buf = state["momentum_buffer"].array
                xp.multiply(buf, momentum, out=buf)
                step = xp.multiply(xp.add(buf, step, out=buf), lr, out=step)
            else:
                xp.multiply(step, lr, out=step)
            xp.subtract(param, step, out=param)

    @staticmethod
    def _rms(state: dict[str, Any], g: Any, alpha: float, centered: bool, out: Any) -> Any:
        """Update the running averages and write the root-mean-square into ``out``."""
        square_avg = state["square_avg"].array
        xp.multiply(square_avg, alpha, out=square_avg)
        xp.multiply(xp.multiply(g, 1 - alpha, out=out), g, out=out)
        xp.add(square_avg, out, out=square_avg)
        if not centered:
            return xp.sqrt(square_avg, out=out)
        grad_avg = state["grad_avg"].array
        lerp_(grad_avg, g, 1 - alpha, out)
        xp.multiply(grad_avg, grad_avg, out=out)
        return xp.sqrt(xp.subtract(square_avg, out, out=out), out=out)
