"""Adagrad: per-coordinate step sizes from the sum of all past squared gradients."""

from __future__ import annotations

from typing import Any

from ember.backend import xp
from ember.optim.optimizer import Optimizer, ParamsT, _require, _state_tensor

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """torch.optim.Adagrad's update, in place on each parameter's array.

    ``s += g * g``; ``p -= lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)``.
    As in torch, the state is created for every parameter at construction.

    >>> w = ember.tensor([1.0, -2.0], requires_grad=True)
    >>> opt = ember.optim.Adagrad([w], lr=0.1, lr_decay=1e-4)
    >>> (w * w).sum().backward()
    >>> opt.step()  # the first step is lr * sign(g)
    >>> w
    tensor([ 0.9000, -1.9000], requires_grad=True)
    """

    def __init__(self, params: ParamsT, lr: float = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float = 0,
                 eps: float = 1e-10, *, maximize: bool = False) -> None:
        _require(lr >= 0.0, f"Invalid learning rate: {lr}")
        _require(lr_decay >= 0.0, f"Invalid lr_decay value: {lr_decay}")
        _require(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
        _require(initial_accumulator_value >= 0.0,
                 f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        _require(eps >= 0.0, f"Invalid epsilon value: {eps}")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, maximize=maximize)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(self.state[p], p.array, group)

    @staticmethod
    def _init_state(state: dict[str, Any], param: Any, group: dict[str, Any]) -> None:
        state["step"] = 0.0
        state["sum"] = _state_tensor(xp.full_like(param, group["initial_accumulator_value"]))

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, lr_decay, eps = group["lr"], group["lr_decay"], group["eps"]
        weight_decay, maximize = group["weight_decay"], group["maximize"]
        for p in group["params"]:
            if p.grad is None:
                continue
            param, state = p.array, self.state[p]
            if not state:  # a parameter added later with add_param_group
                self._init_state(state, param, group)
            state["step"] = step = state["step"] + 1
            g = self._grad(param, p.grad.array, weight_decay, maximize)
            total, tmp = state["sum"].array, self._tmp(param, 1)
            xp.add(total, xp.multiply(g, g, out=tmp), out=total)
            std = xp.add(xp.sqrt(total, out=tmp), eps, out=tmp)
            update = xp.divide(g, std, out=std)
            xp.multiply(update, lr / (1 + (step - 1) * lr_decay), out=update)
            xp.subtract(param, update, out=param)
