"""Adadelta: step sizes from running averages of squared gradients and squared updates."""

from __future__ import annotations

from typing import Any

from ember.backend import xp
from ember.optim.optimizer import Optimizer, ParamsT, _require, _state_tensor

__all__ = ["Adadelta"]


class Adadelta(Optimizer):
    """torch.optim.Adadelta's update, in place on each parameter's array.

    ``v = rho * v + (1 - rho) * g * g``; ``d = sqrt(u + eps) / sqrt(v + eps) * g``;
    ``u = rho * u + (1 - rho) * d * d``; ``p -= lr * d``.

    >>> w = ember.tensor([1.0, -2.0], requires_grad=True)
    >>> opt = ember.optim.Adadelta([w], lr=1.0, rho=0.9)
    >>> (w * w).sum().backward()
    >>> opt.step()
    >>> opt.state[w]["step"]
    1.0
    """

    def __init__(self, params: ParamsT, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0, *, maximize: bool = False) -> None:
        _require(lr >= 0.0, f"Invalid learning rate: {lr}")
        _require(0.0 <= rho <= 1.0, f"Invalid rho value: {rho}")
        _require(eps >= 0.0, f"Invalid epsilon value: {eps}")
        _require(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, rho, eps = group["lr"], group["rho"], group["eps"]
        weight_decay, maximize = group["weight_decay"], group["maximize"]
        for p in group["params"]:
            if p.grad is None:
                continue
            param, state = p.array, self.state[p]
            if not state:
                state["step"] = 0.0
                state["square_avg"] = _state_tensor(xp.zeros_like(param))
                state["acc_delta"] = _state_tensor(xp.zeros_like(param))
            state["step"] += 1
            g = self._grad(param, p.grad.array, weight_decay, maximize)
            delta = self._delta(state, g, rho, eps, self._tmp(param, 1), self._tmp(param, 2))
            xp.subtract(param, xp.multiply(delta, lr, out=delta), out=param)

    @staticmethod
    def _delta(state: dict[str, Any], g: Any, rho: float, eps: float, tmp: Any,
               out: Any) -> Any:
        """Update both running averages; return the step direction (in ``out``)."""
        square_avg, acc_delta = state["square_avg"].array, state["acc_delta"].array
        xp.multiply(square_avg, rho, out=square_avg)
        xp.add(square_avg, xp.multiply(xp.multiply(g, 1 - rho, out=tmp), g, out=tmp),
               out=square_avg)
        std = xp.sqrt(xp.add(square_avg, eps, out=tmp), out=tmp)
        delta = xp.sqrt(xp.add(acc_delta, eps, out=out), out=out)
        xp.multiply(xp.divide(delta, std, out=delta), g, out=delta)
        xp.multiply(acc_delta, rho, out=acc_delta)
        xp.add(acc_delta, xp.multiply(xp.multiply(delta, 1 - rho, out=tmp), delta, out=tmp),
               out=acc_delta)
        return delta
