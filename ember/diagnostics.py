"""See inside training: a gradient check for whole modules and a training-health monitor.

``gradcheck_module`` compares every parameter's backprop gradient with central
differences, in float64, on a copy of the model, and prints a table.

``TrainingHealth`` watches a model while it trains: per layer the gradient norm
and the update-to-weight ratio ``||Δw|| / ||w||``, the fraction of dead units
after each ``nn.ReLU`` and of saturated units after each ``nn.Sigmoid`` /
``nn.Tanh``; it warns once per layer when gradients vanish or explode.

>>> health = TrainingHealth(model)
>>> for x, y in loader:
...     loss = F.cross_entropy(model(x), y)
...     optimizer.zero_grad()
...     loss.backward()
...     optimizer.step()
...     health.step()            # after optimizer.step(), before the next zero_grad()
>>> print(health.report())
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember import random as ember_random
from ember.autograd import is_grad_enabled, no_grad
from ember.nn.activation import ReLU, Sigmoid, Tanh
from ember.nn.module import Module
from ember.tensor import Tensor

try:  # a Trainer callback when ember.train exists; the same method names otherwise
    from ember.train import Callback as _CallbackBase
except ImportError:
    _CallbackBase = object

__all__ = ["gradcheck_module", "GradcheckResult", "ParamCheck", "TrainingHealth",
           "TrainingHealthWarning"]


# ============================================================ gradcheck_module
@dataclass
class ParamCheck:
    """One parameter's comparison: how many elements, the worst errors, pass or fail."""

    name: str
    shape: tuple
    checked: int
    max_abs_error: float
    max_rel_error: float
    ok: bool


@dataclass
class GradcheckResult:
    """What ``gradcheck_module`` found: ``params`` by name, ``ok`` when all passed."""

    params: dict[str, ParamCheck]
    loss: float
    settings: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.params.values())

    @property
    def failed(self) -> list[str]:
        return [name for name, check in self.params.items() if not check.ok]

    def table(self) -> str:
        """The per-parameter table ``gradcheck_module`` prints."""
        head = ("parameter", "shape", "checked", "max abs err", "max rel err", "status")
        rows = [(c.name, str(c.shape), f"{c.checked}/{math.prod(c.shape)}",
                 f"{c.max_abs_error:.2e}", f"{c.max_rel_error:.2e}",
                 "ok" if c.ok else "FAILED <-") for c in self.params.values()]
        widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                 for row in [head, *rows]]
        settings = ", ".join(f"{k} {v:g}" for k, v in self.settings.items())
        verdict = "all gradients match" if self.ok else f"MISMATCH in {', '.join(self.failed)}"
        return "\n".join([f"gradcheck_module (loss {self.loss:.6g}; {settings}): {verdict}",
                          *lines])

    __str__ = table


def _float64_inputs(inputs: Any) -> tuple:
    """The inputs as a tuple, floating ones cast to float64 copies (integers kept)."""
    items = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    out = []
    for item in items:
        array = item.array if isinstance(item, Tensor) else np.asarray(item)
        if array.dtype.kind == "f":
            array = array.astype(np.float64)
        out.append(Tensor._make(array, False, None))
    return tuple(out)


def _sampled(size: int, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    """All flat indices, or a fixed random subset of ``limit`` of them (sorted)."""
    if limit is None or size <= limit:
        return np.arange(size)
    return np.sort(rng.choice(size, size=limit, replace=False))


def _compare(name: str, param: Tensor, loss_at: Callable[[], float], indices: np.ndarray,
             eps: float, atol: float, rtol: float) -> ParamCheck:
    """Central differences at ``indices`` of ``param`` against its backprop gradient."""
    analytic = (param.grad.array.reshape(-1)[indices] if param.grad is not None
                else np.zeros(len(indices)))
    param.array = np.ascontiguousarray(param.array)
    flat = param.array.reshape(-1)  # a view: perturbing it perturbs the parameter
    numeric = np.empty(len(indices))
    for k, j in enumerate(indices):  # a loop over checked elements is what gradcheck is
        original = flat[j]
        flat[j] = original + eps
        plus = loss_at()
        flat[j] = original - eps
        minus = loss_at()
        flat[j] = original
        numeric[k] = (plus - minus) / (2 * eps)
    error = np.abs(analytic - numeric)
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), atol)
    ok = bool(np.all(error <= atol + rtol * np.abs(numeric)))
    return ParamCheck(name, tuple(param.shape), len(indices), float(error.max(initial=0)),
                      float((error / scale).max(initial=0)), ok)


def gradcheck_module(model: Module, inputs: Any, loss_fn: Callable[[Any], Tensor],
                     eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
                     max_elements_per_param: int | None = 64, seed: int = 0,
                     verbose: bool = True) -> GradcheckResult:
    """Compare every parameter's backprop gradient with central differences.

    The check runs in float64 on a deep copy of ``model`` (the model itself is
    not touched): ``loss = loss_fn(copy(*inputs))`` must be a scalar; each
    checked element is moved by ±``eps`` and ``(L+ - L-) / (2 eps)`` compared
    with backprop. An element fails when ``|a - n| > atol + rtol |n|``; the
    relative error shown is ``|a - n| / max(|a|, |n|, atol)``. Parameters with
    more than ``max_elements_per_param`` elements are checked on a fixed random
    subset of that many (drawn from ``seed``; None checks all). ember's random
    state is rewound before every forward, so Dropout draws the same masks, and
    is left as it was. BatchNorm is checked in the mode the model is in.
    Prints the table unless ``verbose=False``; returns a ``GradcheckResult``.

    >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    >>> result = gradcheck_module(model, ember.randn(5, 3), lambda out: out.pow(2).mean())
    >>> result.ok
    True
    """
    twin = copy.deepcopy(model).double()
    args = _float64_inputs(inputs)
    params = [(name, p) for name, p in twin.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"gradcheck_module: {type(model).__name__} has no parameters that "
                         "require grad")
    generator = ember_random.generator()
    state = generator.bit_generator.state

    def loss() -> Tensor:
        generator.bit_generator.state = state  # the same dropout masks on every call
        value = loss_fn(twin(*args))
        if not isinstance(value, Tensor) or value.array.size != 1:
            raise TypeError("gradcheck_module: loss_fn must return a scalar Tensor, got "
                            f"{getattr(value, 'shape', type(value).__name__)}")
        return value

    def loss_at() -> float:
        with no_grad():
            return float(loss().array)

    try:
        value = loss()
        value.backward()
        rng = np.random.default_rng(seed)
        checks = {name: _compare(name, p, loss_at, _sampled(p.array.size,
                                                             max_elements_per_param, rng),
                                 eps, atol, rtol) for name, p in params}
    finally:
        generator.bit_generator.state = state
    result = GradcheckResult(checks, float(value.array),
                             {"eps": eps, "atol": atol, "rtol": rtol})
    if verbose:
        print(result.table())
    return result


# ============================================================ training health
class TrainingHealthWarning(UserWarning):
    """A layer's gradients vanished or exploded (issued once per layer and kind)."""


class _ForwardTap:
    """Stands in for ``module.forward`` where Module has no ``register_forward_hook``:
    calls the class's forward, then the hook. A deep copy of the module gets a plain
    pass-through (the copy is not watched)."""

    def __init__(self, module: Module, hook: Callable | None) -> None:
        self.module, self.hook = module, hook

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        output = type(self.module).forward(self.module, *args, **kwargs)
        if self.hook is not None:
            self.hook(self.module, args, output)
        return output

    def __deepcopy__(self, memo: dict) -> _ForwardTap:
        return _ForwardTap(memo.get(id(self.module), self.module), None)


def _add_forward_hook(module: Module, hook: Callable) -> Callable[[], None]:
    """``hook(module, args, output)`` after every forward; returns the function that
    removes it. Uses ``register_forward_hook`` when Module has it."""
    register = getattr(module, "register_forward_hook", None)
    if callable(register):
        return register(hook).remove
    object.__setattr__(module, "forward", _ForwardTap(module, hook))
    return lambda: module.__dict__.pop("forward", None)


def _norm(arrays: Sequence[np.ndarray]) -> float:
    return math.sqrt(sum(float(np.vdot(a, a).real) for a in arrays))


def dead_fraction(output: np.ndarray) -> float:
    """Fraction of units (positions of ``output.shape[1:]``) that are zero for every
    sample of the batch (axis 0)."""
    if output.ndim < 2:
        return float(np.mean(output <= 0))
    return float(np.mean(np.all(output.reshape(output.shape[0], -1) <= 0, axis=0)))


def saturated_fraction(output: np.ndarray, kind: str, threshold: float = 0.99) -> float:
    """Fraction of outputs in the flat tails: ``|tanh| > threshold`` or a sigmoid below
    ``1 - threshold`` or above ``threshold``."""
    if kind == "tanh":
        return float(np.mean(np.abs(output) > threshold))
    return float(np.mean((output < 1 - threshold) | (output > threshold)))


def _activation_kind(module: Module) -> str | None:
    for kind, cls in (("relu", ReLU), ("sigmoid", Sigmoid), ("tanh", Tanh)):
        if isinstance(module, cls):
            return kind
    return None


class TrainingHealth(_CallbackBase):
    """Watches a model train: per-layer gradient norms and update ratios, dead ReLUs,
    saturated sigmoid/tanh units; warns once per layer when gradients vanish or explode.

    Plain loop: call ``health.step()`` once per batch, after ``optimizer.step()``
    and before the next ``zero_grad()``. As a Trainer callback it does so in
    ``on_batch_end``. ``close()`` removes its forward hooks.

    A layer is a module with parameters of its own (its weight and bias count
    together). Per step ``history[layer]`` gets ``grad_norm`` (``||g||``, NaN when
    the layer got no gradient) and ``update_ratio`` (``||w_now - w_before|| /
    ||w_before||``, the change since the previous ``step()`` or since
    construction); ``history[relu]["dead_fraction"]`` (units zero for the whole
    batch) and ``history[sigmoid or tanh]["saturation"]`` come from the last
    forward run with grad enabled (evaluation under ``no_grad`` is ignored).

    Warnings (``TrainingHealthWarning``, once per layer and kind): vanishing when
    ``||g|| <= vanishing * ||w||`` (with the default 1e-7 a step of any sane learning
    rate is below float32's resolution of the weights), exploding when ``||g|| >
    exploding`` or not finite.

    As a callback the model may be left out: the Trainer's is watched.

    >>> health = TrainingHealth(model)
    >>> ...; loss.backward(); optimizer.step(); health.step()
    >>> health.history["0"]["grad_norm"][-1]
    >>> trainer = Trainer(model, F.cross_entropy, optimizer, train_loader=loader,
    ...                   callbacks=[TrainingHealth()])
    """

    def __init__(self, model: Module | None = None, vanishing: float = 1e-7,
                 exploding: float = 1e3, saturation: float = 0.99, warn: bool = True) -> None:
        self.vanishing, self.exploding, self.saturation = vanishing, exploding, saturation
        self.warn = warn
        self.history: dict[str, dict[str, list[float]]] = {}
        self.steps = 0
        self.warned: set[tuple[str, str]] = set()
        self._latest_activations: dict[str, dict[str, float]] = {}
        self._removers: list[Callable[[], None]] = []
        self._model: Module | None = None
        if model is not None:
            self.watch(model)

    @property
    def model(self) -> Module | None:
        """The watched model (as a Trainer callback without one: the Trainer's)."""
        return self._model

    def watch(self, model: Module) -> None:
        """Start watching ``model``: its layers, a weight snapshot, activation hooks."""
        self.close()
        self._model = model
        self.layers = {self._name(name, m): list(m.parameters(recurse=False))
                       for name, m in model.named_modules()
                       if any(True for _ in m.parameters(recurse=False))}
        self.history = {self._name(name, m): {} for name, m in model.named_modules()
                        if self._name(name, m) in self.layers or _activation_kind(m)}
        self._before = self._weights()
        self._attach()

    def _name(self, name: str, module: Module) -> str:
        return name or type(module).__name__

    # ------------------------------------------------------------ hooks
    def _attach(self) -> None:
        if self._removers:
            return
        for name, module in self._model.named_modules():
            kind = _activation_kind(module)
            if kind is not None:
                hook = self._activation_hook(self._name(name, module), kind)
                self._removers.append(_add_forward_hook(module, hook))

    def _activation_hook(self, name: str, kind: str) -> Callable:
        def hook(module: Module, args: tuple, output: Tensor) -> None:
            if not is_grad_enabled():  # an evaluation pass, not a training batch
                return
            out = output.array
            stats = ({"dead_fraction": dead_fraction(out)} if kind == "relu" else
                     {"saturation": saturated_fraction(out, kind, self.saturation)})
            self._latest_activations[name] = stats
        return hook

    def close(self) -> None:
        """Remove the forward hooks (``step()`` still records gradients and updates)."""
        for remove in self._removers:
            remove()
        self._removers = []

    # ------------------------------------------------------------ measuring
    def _weights(self) -> dict[str, list[np.ndarray]]:
        return {name: [p.array.copy() for p in params] for name, params in self.layers.items()}

    def _record(self, layer: str, metric: str, value: float) -> None:
        self.history.setdefault(layer, {}).setdefault(metric, []).append(value)

    def step(self) -> None:
        """Record this batch's statistics; call after ``optimizer.step()``."""
        if self._model is None:
            raise RuntimeError("TrainingHealth.step: no model to watch; pass one, call "
                               "watch(model), or use it as a Trainer callback")
        self.steps += 1
        now = self._weights()
        for name, params in self.layers.items():
            grads = [p.grad.array for p in params if p.grad is not None]
            grad_norm = _norm(grads) if grads else math.nan
            before = _norm(self._before[name])
            change = _norm([a - b for a, b in zip(now[name], self._before[name])])
            self._record(name, "grad_norm", grad_norm)
            self._record(name, "update_ratio", change / before if before > 0 else
                         (0.0 if change == 0 else math.inf))
            if grads:
                self._check_gradient(name, grad_norm, _norm(now[name]))
        self._before = now
        for name, stats in self._latest_activations.items():
            for metric, value in stats.items():
                self._record(name, metric, value)
        self._latest_activations = {}

    def _check_gradient(self, layer: str, grad_norm: float, weight_norm: float) -> None:
        if not math.isfinite(grad_norm) or grad_norm > self.exploding:
            self._warn(layer, "exploding",
                       f"gradients of layer '{layer}' are exploding: ||grad|| = {grad_norm:.3g}"
                       f" (limit {self.exploding:g}) at step {self.steps}. Try a lower "
                       "learning rate, gradient clipping (nn.utils.clip_grad_norm_), a "
                       "smaller initialisation or normalisation layers.")
        elif grad_norm <= self.vanishing * max(weight_norm, 1e-30):
            cause = ("No gradient reaches it at all: dead ReLUs after it, a detached output "
                     "or factors so small they underflowed. " if grad_norm == 0 else "")
            hint = cause + ("Try ReLU instead of sigmoid/tanh, a larger (He/Xavier) "
                            "initialisation, normalisation layers or residual connections.")
            self._warn(layer, "vanishing",
                       f"gradients of layer '{layer}' are vanishing: ||grad|| = "
                       f"{grad_norm:.3g} is below {self.vanishing:g} x ||w|| = "
                       f"{weight_norm:.3g} at step {self.steps}, so the layer cannot learn. "
                       + hint)

    def _warn(self, layer: str, kind: str, message: str) -> None:
        if (layer, kind) in self.warned:
            return
        self.warned.add((layer, kind))
        if self.warn:
            warnings.warn(f"TrainingHealth: {message}", TrainingHealthWarning, stacklevel=4)

    # ------------------------------------------------------------ reading
    def latest(self) -> dict[str, dict[str, float]]:
        """The last recorded value of every metric, by layer."""
        return {layer: {metric: values[-1] for metric, values in metrics.items()}
                for layer, metrics in self.history.items() if metrics}

    def report(self) -> str:
        """The latest values as a table, one row per watched layer."""
        metrics = ("grad_norm", "update_ratio", "dead_fraction", "saturation")
        latest = self.latest()
        head = ("layer", *metrics)
        rows = [(layer, *(f"{values[m]:.3g}" if m in values else "-" for m in metrics))
                for layer, values in latest.items()]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                         for r in [head, *rows])

    # ------------------------------------------------------------ Trainer callback
    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._model is None:
            self.watch(self.trainer.model)
        else:
            self._attach()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.close()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        pass

    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        pass

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step()
