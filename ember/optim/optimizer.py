"""The Optimizer base class: parameter groups, per-parameter state, state dicts.

Subclasses implement ``_update_group(group)``: one pass over the group's
parameters that changes ``p.array`` in place with NumPy ``out=`` arguments.
State buffers are preallocated arrays wrapped in Tensors; temporaries live in
scratch arrays shared by all parameters of one shape and dtype, so a step
allocates (almost) nothing.
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from ember.autograd import enable_grad
from ember.backend import xp
from ember.tensor import Tensor, note_inplace

__all__ = ["Optimizer", "ParamsT"]

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]


def _require(ok: bool, message: str) -> None:
    """Raise ValueError(message) unless ``ok``: torch's hyper-parameter checks."""
    if not ok:
        raise ValueError(message)


def _state_tensor(array: Any) -> Tensor:
    """Wrap a state buffer; it never requires grad."""
    return Tensor._make(array, False, None)


class Optimizer:
    """Base class of all optimizers, with torch's interface.

    ``params`` is an iterable of tensors, of ``(name, tensor)`` pairs, or of
    dicts (parameter groups) holding ``'params'`` and per-group options.

    >>> w = ember.zeros(3, requires_grad=True)
    >>> opt = ember.optim.SGD([w], lr=0.1)
    >>> (w - 1.0).square().sum().backward()
    >>> opt.step(); opt.zero_grad()
    >>> w
    tensor([0.2000, 0.2000, 0.2000], requires_grad=True)
    """

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got {type(params).__name__}")
        self.defaults = defaults
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        self._scratch: dict[tuple, Any] = {}
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Mark every call of a subclass's own ``step`` so LR schedulers can warn when
        they are stepped before the optimizer (torch patches each instance instead)."""
        super().__init_subclass__(**kwargs)
        if "step" in cls.__dict__:
            cls.step = _marking_calls(cls.__dict__["step"])

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group) if k != "params"]
        return "\n".join(lines) + "\n)"

    # ------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters with its own options (missing ones take the defaults).

        >>> w, b = ember.zeros(3, requires_grad=True), ember.zeros(1, requires_grad=True)
        >>> opt = ember.optim.SGD([w], lr=0.1)
        >>> opt.add_param_group({"params": [b], "lr": 0.01})
        >>> [group["lr"] for group in opt.param_groups]
        [0.1, 0.01]
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        group["params"], names = _split_names(list(params))
        if names is not None:
            group["param_names"] = names
        for p in group["params"]:
            _check_param(p)
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self._check_overlap(group)
        self.param_groups.append(group)

    def _check_overlap(self, group: dict[str, Any]) -> None:
        ids = [id(p) for p in group["params"]]
        if len(ids) != len(set(ids)):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; "
                          "in future, this will cause an error", stacklevel=3)
        for other in self.param_groups:
            if ("param_names" in other) != ("param_names" in group):
                raise ValueError("all optimizer param groups should be with/without names")
            if not {id(p) for p in other["params"]}.isdisjoint(ids):
                raise ValueError("some parameters appear in more than one parameter group")

    # ------------------------------------------------------------ stepping
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients: set ``.grad`` to None, or fill it with zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p._grad is not None:  # the slot: the property costs a call per parameter
                    if set_to_none:
                        p._grad = None
                    else:
                        p._grad.grad_fn = None
                        p._grad.array.fill(0)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()``'s loss.

        ``closure`` re-evaluates the model (zero_grad, forward, backward) and
        returns the loss; it runs with graph recording on.
        """
        self._opt_called = True
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._update_group(group)
        # updated in place: a pending backward must know (one record for the whole step)
        note_inplace(*[p.array for group in self.param_groups for p in group["params"]
                       if p._grad is not None])
        return loss

    def _update_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _update_group")

    # ------------------------------------------------------------ helpers for subclasses
    def _tmp(self, like: Any, slot: int) -> Any:
        """A scratch array shaped like ``like``; the same one for every parameter of
        that shape and dtype, so its contents only live within one parameter's update."""
        key = (like.shape, like.dtype, slot)
        buf = self._scratch.get(key)
        if buf is None:
            buf = self._scratch[key] = xp.empty(like.shape, like.dtype)
        return buf

    def _grad(self, param: Any, grad: Any, weight_decay: float, maximize: bool) -> Any:
        """The gradient the update uses: ±grad + weight_decay * param.

        ``p.grad`` itself is never written: when it must change, the result goes
        to scratch slot 0.
        """
        if weight_decay != 0:
            out = self._tmp(param, 0)
            xp.multiply(param, weight_decay, out=out)
            (xp.subtract if maximize else xp.add)(out, grad, out=out)
            return out
        if maximize:
            return xp.negative(grad, out=self._tmp(param, 0))
        return grad

    # ------------------------------------------------------------ state dicts
    def state_dict(self) -> dict[str, Any]:
        """A snapshot in torch's layout: ``{'state': {index: {...}}, 'param_groups': [...]}``.

        Parameters appear as integer indices; state buffers are copied Tensors;
        everything else is a dict, list, number, string, bool or None.
        """
        index: dict[int, int] = {}
        groups = []
        start = 0
        for group in self.param_groups:
            packed = {k: _plain(v) for k, v in group.items() if k != "params"}
            index.update({id(p): i for i, p in enumerate(group["params"], start)
                          if id(p) not in index})
            packed["params"] = [index[id(p)] for p in group["params"]]
            start += len(packed["params"])
            groups.append(packed)
        state = {index[id(p)]: {k: _snapshot(v) for k, v in s.items()}
                 for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a ``state_dict()``; its buffers are copied, cast to each parameter's dtype."""
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        self._check_matching_groups(saved_groups)
        by_index = {i: p for group, saved in zip(self.param_groups, saved_groups)
                    for i, p in zip(saved["params"], group["params"])}
        state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for key, value in state_dict["state"].items():
            param = by_index.get(int(key))  # int(): JSON turns integer keys into strings
            if param is not None:
                state[param] = {k: _restore(param, k, v) for k, v in value.items()}
        for group, saved in zip(self.param_groups, saved_groups):
            saved["params"] = group["params"]
            if "param_names" in group and "param_names" not in saved:
                saved["param_names"] = group["param_names"]
            for k, default in self.defaults.items():  # JSON turned tuples (betas) into lists
                if isinstance(default, tuple) and isinstance(saved.get(k), list):
                    saved[k] = tuple(saved[k])
        self.state = state
        self.param_groups = saved_groups

    def _check_matching_groups(self, saved_groups: list[dict[str, Any]]) -> None:
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for group, saved in zip(self.param_groups, saved_groups):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't "
                                 "match the size of optimizer's group")


# ---------------------------------------------------------------- module helpers
def _marking_calls(step: Callable) -> Callable:
    @functools.wraps(step)
    def marked_step(self: Optimizer, *args: Any, **kwargs: Any) -> Any:
        self._opt_called = True
        return step(self, *args, **kwargs)
    return marked_step


def _split_names(params: list) -> tuple[list, list | None]:
    """Accept ``named_parameters()`` style ``(name, tensor)`` pairs, like torch."""
    names = [p[0] for p in params if isinstance(p, tuple)]
    if not names:
        return params, None
    if len(names) != len(params):
        raise ValueError("all optimizer params should be with/without names. "
                         "Some param names are missing")
    return [p[1] for p in params], names


def _check_param(p: Any) -> None:
    if not isinstance(p, Tensor):
        raise TypeError(f"optimizer can only optimize Tensors, but one of the params is "
                        f"{type(p).__name__}")
    if p.grad_fn is not None and not p._retains_grad:
        raise ValueError("can't optimize a non-leaf Tensor")


def _plain(value: Any) -> Any:
    """Group options as JSON-friendly values: tuples become lists."""
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _snapshot(value: Any) -> Any:
    return _state_tensor(value.array.copy()) if isinstance(value, Tensor) else value


def _restore(param: Tensor, key: str, value: Any) -> Any:
    """One loaded state entry: a number, or a fresh buffer of the parameter's dtype."""
    if key == "step":  # torch keeps step as a 0-d tensor; ember as a Python float
        return float(value.item() if isinstance(value, Tensor) else value)
    if isinstance(value, Tensor) or type(value) is xp.ndarray:
        array = value.array if isinstance(value, Tensor) else value
        dtype = param.dtype if param.dtype.kind == "f" else array.dtype
        if array.shape != param.shape:
            raise ValueError(f"load_state_dict: state '{key}' has shape {array.shape} but its "
                             f"parameter has shape {param.shape}")
        return _state_tensor(xp.array(array, dtype=dtype, copy=True))
    return copy.deepcopy(value)
