"""Adam and AdamW (Adam with weight decay decoupled from the gradient)."""

from __future__ import annotations

from typing import Any

from ember.backend import xp
from ember.ops import kernels
from ember.optim.optimizer import Optimizer, ParamsT, _require, _state_tensor

__all__ = ["Adam", "AdamW", "lerp_"]


def lerp_(start: Any, end: Any, weight: float, tmp: Any) -> None:
    """``start += weight * (end - start)`` in place, with torch's two-sided formula
    (from the nearer end, so weight near 1 loses no precision)."""
    diff = xp.subtract(end, start, out=tmp)
    if abs(weight) < 0.5:
        xp.multiply(diff, weight, out=diff)
        xp.add(start, diff, out=start)
    else:
        xp.multiply(diff, 1 - weight, out=diff)
        xp.subtract(end, diff, out=start)


class Adam(Optimizer):
    """torch.optim.Adam's update, in place on each parameter's array.

    ``m = lerp(m, g, 1 - beta1)``, ``v = beta2 * v + (1 - beta2) * g * g``,
    ``p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)``;
    ``amsgrad`` uses the running maximum of ``v``; ``decoupled_weight_decay``
    (AdamW) shrinks ``p`` by ``1 - lr * weight_decay`` instead of adding to ``g``.

    >>> w = ember.tensor([1.0, -2.0], requires_grad=True)
    >>> opt = ember.optim.Adam([w], lr=0.1, betas=(0.9, 0.999))
    >>> (w * w).sum().backward()
    >>> opt.step()  # Adam's first step moves each coordinate by about lr
    >>> w
    tensor([ 0.9000, -1.9000], requires_grad=True)
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        _require(lr >= 0.0, f"Invalid learning rate: {lr}")
        _require(eps >= 0.0, f"Invalid epsilon value: {eps}")
        _require(0.0 <= betas[0] < 1.0, f"Invalid beta parameter at index 0: {betas[0]}")
        _require(0.0 <= betas[1] < 1.0, f"Invalid beta parameter at index 1: {betas[1]}")
        _require(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _init_state(self, state: dict[str, Any], param: Any, amsgrad: bool) -> None:
        state["step"] = 0.0
        state["exp_avg"] = _state_tensor(xp.zeros_like(param))
        state["exp_avg_sq"] = _state_tensor(xp.zeros_like(param))
        if amsgrad:
            state["max_exp_avg_sq"] = _state_tensor(xp.zeros_like(param))

    def _update_group(self, group: dict[str, Any]) -> None:
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        weight_decay, amsgrad, maximize = group["weight_decay"], group["amsgrad"], group["maximize"]
        decoupled = group["decoupled_weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            param, state = p.array, self.state[p]
            if not state:
                self._init_state(state, param, amsgrad)
            state["step"] += 1
            if decoupled and weight_decay != 0:
                xp.multiply(param, 1 - lr * weight_decay, out=param)
                g = self._grad(param, p.grad.array, 0, maximize)
            else:
                g = self._grad(param, p.grad.array, weight_decay, maximize)
            m, v = state["exp_avg"].array, state["exp_avg_sq"].array
            if not amsgrad and kernels.flat_ready(param, g, m, v):  # the same, in one pass
                kernels.adam_update(param, g, m, v, kernels.adam_scalars(
                    param.dtype, beta1, beta2, lr, eps, state["step"]))
                continue
            self._adam_step(param, state, g, beta1, beta2, lr, eps, amsgrad, self._tmp(param, 1))

    @staticmethod
    def _adam_step(param: Any, state: dict[str, Any], g: Any, beta1: float, beta2: float,
                   lr: float, eps: float, amsgrad: bool, tmp: Any) -> None:
        """Update the moments, then ``param -= step_size * m / denom``, torch's order of
        operations (so results agree to rounding)."""
        m, v, step = state["exp_avg"].array, state["exp_avg_sq"].array, state["step"]
        lerp_(m, g, 1 - beta1, tmp)
        xp.multiply(v, beta2, out=v)
        xp.add(v, xp.multiply(xp.multiply(g, 1 - beta2, out=tmp), g, out=tmp), out=v)
        if amsgrad:
            v = xp.maximum(state["max_exp_avg_sq"].array, v, out=state["max_exp_avg_sq"].array)
        denom = xp.sqrt(v, out=tmp)
        xp.divide(denom, (1 - beta2 ** step) ** 0.5, out=denom)
        xp.add(denom, eps, out=denom)
        update = xp.divide(m, denom, out=denom)
        xp.multiply(update, lr / (1 - beta1 ** step), out=update)
        xp.subtract(param, update, out=param)


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW): default weight_decay 1e-2.

    >>> w = ember.tensor([1.0, -2.0], requires_grad=True)
    >>> opt = ember.optim.AdamW([w], lr=0.1, weight_decay=0.5)
    >>> opt.param_groups[0]["decoupled_weight_decay"]
    True
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # as torch: AdamW always decouples
            group["decoupled_weight_decay"] = True
