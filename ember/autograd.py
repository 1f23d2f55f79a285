"""The autograd machinery: grad mode, the Function base class, the op registry,
the one broadcast-reducing helper, and gradcheck.

An op is one ``Function`` subclass whose ``forward`` computes the output from
arrays and whose ``backward`` turns the output's gradient into one gradient per
input, right beside it. ``@register("name")`` makes it a Tensor method.
"""

from __future__ import annotations

import functools
import itertools
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ember.backend import xp
from ember.tensor import INPLACE_WRITES, Tensor, as_tensor_like

_engine = sys.modules["ember.tensor"]  # the backward engine, for detect_anomaly's hook
_ndarray = xp.ndarray
_new_tensor = object.__new__
_next_seq = itertools.count(1).__next__  # thread-safe under the GIL

__all__ = ["Function", "register", "register_composed", "REGISTRY", "FUNCTIONS", "unbroadcast",
           "no_grad",
           "enable_grad", "set_grad_enabled", "is_grad_enabled", "gradcheck", "GradcheckError",
           "detect_anomaly", "AnomalyError"]


# ---------------------------------------------------------------- grad mode
class _GradMode(threading.local):
    enabled = True
    anomaly = False


_mode = _GradMode()


def is_grad_enabled() -> bool:
    return _mode.enabled


class set_grad_enabled:
    """Context manager and decorator that switches graph recording on or off.

    >>> with ember.set_grad_enabled(False):
    ...     y = x * 2          # y.requires_grad is False
    """

    def __init__(self, mode: bool = True) -> None:
        self.mode = mode

    def __enter__(self) -> None:
        self.prev = _mode.enabled
        _mode.enabled = self.mode

    def __exit__(self, *exc: Any) -> None:
        _mode.enabled = self.prev

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with set_grad_enabled(self.mode):
                return fn(*args, **kwargs)
        return wrapper


class no_grad(set_grad_enabled):
    """Record no graph inside: ``with ember.no_grad(): ...`` or ``@ember.no_grad()``."""

    def __init__(self) -> None:
        super().__init__(False)


class enable_grad(set_grad_enabled):
    """Record the graph again, e.g. inside a ``no_grad`` block."""

    def __init__(self) -> None:
        super().__init__(True)


# ---------------------------------------------------------------- anomaly detection
class AnomalyError(RuntimeError):
    """An op produced NaN or Inf inside ``detect_anomaly``."""


class detect_anomaly:
    """Context manager and decorator: raise AnomalyError at the first op whose
    forward output or backward gradient holds NaN or Inf, naming the op, the
    line of your code that created it, and its inputs' statistics.

    >>> with ember.autograd.detect_anomaly():
    ...     ember.tensor([-1.0]).log()
    Traceback (most recent call last):
    AnomalyError: Log produced NaN in its forward output ...
    """

    def __enter__(self) -> None:
        self.prev = (_mode.anomaly, _engine._backward_check)
        _mode.anomaly = True
        _engine._backward_check = _check_backward

    def __exit__(self, *exc: Any) -> None:
        _mode.anomaly, _engine._backward_check = self.prev

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with detect_anomaly():
                return fn(*args, **kwargs)
        return wrapper


_PACKAGE_DIR = __file__.rsplit("/", 1)[0]


def _user_site() -> str:
    """'file:line' of the innermost stack frame outside the ember package."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "<unknown>"


def _stats(array: Any) -> str:
    a = xp.asarray(array)
    if a.dtype.kind not in "fc" or a.size == 0:
        return f"shape {a.shape}, dtype {a.dtype}"
    finite = a[xp.isfinite(a)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (float("nan"),) * 2
    return (f"shape {a.shape}, min {lo:.4g}, max {hi:.4g}, "
            f"NaN {int(xp.isnan(a).sum())}, Inf {int(xp.isinf(a).sum())}")


def _check_finite(fn: Function, inputs: Sequence[Tensor], array: Any, where: str) -> None:
    a = xp.asarray(array)
    if a.dtype.kind != "f" or xp.isfinite(a).all():
        return
    kind = "NaN" if xp.isnan(a).any() else "Inf"
    lines = [f"{fn.name} produced {kind} in its {where} ({_stats(a)})",
             f"  created at {getattr(fn, 'site', '<unknown>')}"]
    lines += [f"  input {i}: {_stats(t.array)}" for i, t in enumerate(inputs)]
    raise AnomalyError("\n".join(lines))


def _check_backward(fn: Function, grads: Sequence[Any]) -> None:
    for i, g in enumerate(grads):
        if g is not None:
            _check_finite(fn, fn.parents, g, f"backward gradient for input {i}")


# ---------------------------------------------------------------- broadcasting
def unbroadcast(grad, shape: tuple) -> Any:
    """Sum ``grad`` down to ``shape``: the adjoint of NumPy broadcasting.

    Every op whose forward broadcasts its inputs sends its gradients here.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    grad = grad.sum(axis=axes, keepdims=True) if axes else grad
    return grad.reshape(shape)


# ---------------------------------------------------------------- Function
class Function:
    """Base class of every differentiable op.

    Subclasses define ``forward(*arrays, *attrs, **kwattrs) -> array`` and
    ``backward(grad) -> gradient per tensor input`` (``None`` where an input
    needs none). ``arity`` is how many leading positional arguments are tensor
    inputs (``None``: all of them). Python numbers among the inputs are lifted to
    constant tensors of the other inputs' dtype, as torch does.
    """

    arity: int | None = 1
    differentiable = True  # False: never recorded (an op's forward may set it per call)
    promote = False  # binary arithmetic: mix int and float inputs as torch does
    name = "Function"

    def save(self, *arrays: Any) -> None:
        """Keep arrays for backward; they are freed after backward unless retained."""
        self.saved = arrays

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def backward(self, grad: Any) -> Any:
        raise NotImplementedError(f"{self.name} has no backward")

    def release(self) -> None:
        """Drop the arrays saved for backward (called after a backward pass)."""
        self.saved = None
        self.released = True

    saved = None
    released = False
    attrs: tuple = ((), {})  # extra positional and keyword arguments of forward, if any

    seq = 0  # creation order: the backward pass runs ops newest first
    epoch = 0  # the count of in-place writes when the op ran (ember.tensor.note_inplace)

    # The input tensors. A one- or two-input op keeps them as two attributes rather
    # than a tuple: a recorded op then leaves one object fewer for Python's cyclic
    # garbage collector to track, which long chains of small ops pay for
    # (docs/performance.md, sections 10 and 11). ``parents`` reads either form.
    _first = _second = _inputs = None

    @property
    def parents(self) -> Sequence[Any]:
        """The input tensors, in order (a tuple; a list once backward has released
        some of them)."""
        inputs = self._inputs
        if inputs is not None:
            return inputs
        if self._second is not None:
            return (self._first, self._second)
        return (self._first,) if self._first is not None else ()

    @parents.setter
    def parents(self, inputs: Sequence[Any]) -> None:
        self._inputs, self._first, self._second = inputs, None, None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._apply = _make_apply(cls)
        if "apply" not in cls.__dict__:  # one Python frame per op call, not two
            cls.apply = staticmethod(cls._apply)

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Tensor:
        """Run the op on tensors (or numbers) and record it in the graph if needed."""
        return cls._apply(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{self.name}Backward>"


# The needs_input_grad tuples of 1-3 inputs, made once and indexed by the inputs'
# requires_grad flags: a graph keeps one per op, and a tuple made per op would be one more
# object for Python's garbage collector to track (see docs/performance.md, section 10).
_NEEDS_1 = ((False,), (True,))
_NEEDS_2 = tuple(tuple((a, b) for b in (False, True)) for a in (False, True))
_NEEDS_3 = tuple(tuple(tuple((a, b, c) for c in (False, True)) for b in (False, True))
                 for a in (False, True))


def _make_apply(cls: type[Function]) -> Callable[..., Tensor]:
    """``cls.apply``: run the op on tensors (or numbers), record it in the graph if needed.

    A closure per op class, so that ``x * y`` costs one Python call here. Class
    attributes (arity, promote) are read at call time, ``differentiable`` from the op
    object, whose forward may set it (Cast to an integer dtype cuts the graph).
    """
    def apply(*args: Any, **kwargs: Any) -> Tensor:
        fn = cls()
        n = len(args)
        inputs = args  # named in a shape error even if it happens before the lifting
        try:  # one handler for every path below: a try costs nothing until it catches
            if n == 2 and cls.arity == 2 and not kwargs and type(args[0]) is Tensor and \
                    type(args[1]) is Tensor and args[0].array.dtype is args[1].array.dtype:
                # x * y on two tensors of one dtype, the most common call: no checks left
                extra = False
                a, b = args
                needs = _NEEDS_2[a._requires_grad][b._requires_grad]
                out = fn.forward(a.array, b.array)
            elif n == 1 and not kwargs and isinstance(args[0], Tensor) and cls.arity != 2:
                # x.exp(), an activation: one tensor, nothing to lift or promote
                extra = False
                a = args[0]
                needs = _NEEDS_1[a._requires_grad]
                out = fn.forward(a.array)
            elif n > 1 and cls.arity == 1 and not kwargs and isinstance(args[0], Tensor):
                # x.reshape(10, 784), one_hot(y, 10), x.to(dtype): one tensor, attributes
                inputs, attrs, extra, n = args[:1], args[1:], True, 1
                a = args[0]
                needs = _NEEDS_1[a._requires_grad]
                out = fn.forward(a.array, *attrs)
            elif n == 3 and cls.arity is None and not kwargs and not cls.promote and \
                    isinstance(args[0], Tensor) and isinstance(args[1], Tensor) and \
                    isinstance(args[2], Tensor):
                # linear(x, weight, bias): three tensors (Parameters among them), no numbers
                extra = False
                a, b, c = args
                needs = _NEEDS_3[a._requires_grad][b._requires_grad][c._requires_grad]
                out = fn.forward(a.array, b.array, c.array)
            else:
                inputs, attrs, extra, needs, out = _apply_general(fn, cls, args, kwargs)
                n = len(inputs)
        except (ValueError, IndexError) as err:
            raise _with_shapes(err, cls, inputs) from None
        mode = _mode
        if mode.anomaly:
            fn.site = _user_site()
            _check_finite(fn, inputs, out, "forward output")
        if type(out) is not _ndarray:
            out = xp.asarray(out)  # NumPy reductions return scalars, not 0-d arrays
        result = _new_tensor(Tensor)
        result.array, result._grad, result._retains_grad = out, None, False
        if True in needs and mode.enabled and fn.differentiable:
            if n == 2:
                fn._first, fn._second = inputs
            elif n == 1:
                fn._first = inputs[0]
            else:
                fn._inputs = inputs
            fn.needs_input_grad = needs
            if extra:  # kept for graph pictures and ONNX export (default: none)
                fn.attrs = (attrs, kwargs)
            fn.seq = _next_seq()
            fn.epoch = INPLACE_WRITES[0]  # backward checks its saved arrays if this moves
            result._requires_grad, result.grad_fn = True, fn
        else:
            result._requires_grad, result.grad_fn = False, None
        return result

    apply.__doc__ = f"Apply {cls.__name__} to tensors (or numbers), recording it for backward."
    return apply


def _apply_general(fn: Function, cls: type[Function], args: tuple, kwargs: dict) -> tuple:
    """``apply``'s path for the calls its fast paths do not take: numbers among the
    inputs, mixed dtypes, keyword arguments, any arity. Returns the (lifted) inputs, the
    plain attributes, whether there are any (or keywords), ``needs_input_grad`` and the
    forward's output."""
    k = cls.arity
    inputs, attrs = (args, ()) if k is None or k == len(args) else (args[:k], args[k:])
    inputs = _lifted(cls, inputs)
    n = len(inputs)
    extra = attrs or kwargs
    if n == 2:  # the common arities without building lists or empty *args
        a, b = inputs
        needs = _NEEDS_2[a._requires_grad][b._requires_grad]
        out = fn.forward(a.array, b.array, *attrs, **kwargs) if extra else \
            fn.forward(a.array, b.array)
    elif n == 1:
        a = inputs[0]
        needs = _NEEDS_1[a._requires_grad]
        out = fn.forward(a.array, *attrs, **kwargs) if extra else fn.forward(a.array)
    else:
        needs = tuple([t._requires_grad for t in inputs])
        out = fn.forward(*[t.array for t in inputs], *attrs, **kwargs)
    return inputs, attrs, extra, needs, out


def _lifted(cls: type[Function], inputs: tuple) -> Sequence[Tensor]:
    """An op's inputs with numbers lifted to tensors and, where the op says so, mixed
    int and float promoted as torch does (the inputs themselves when nothing changes)."""
    for t in inputs:
        if not isinstance(t, Tensor):  # a number to lift (Parameters are Tensors)
            _check_liftable(cls, inputs)
            return as_tensor_like(inputs, cls.promote)
    if cls.promote and inputs[0].array.dtype is not inputs[-1].array.dtype and \
            inputs[0].array.dtype != inputs[-1].array.dtype:
        return as_tensor_like(inputs, True)
    return inputs


_LIFTABLE = (bool, int, float, complex, xp.generic, xp.ndarray)


def _check_liftable(cls: type[Function], inputs: Sequence[Any]) -> None:
    """torch's TypeError for an input that is neither a tensor nor a number (or an
    array): ``x + None`` would otherwise become NaN, and ``x + [1, 2]`` a silent copy."""
    for value in inputs:
        if not isinstance(value, (Tensor, *_LIFTABLE)):
            raise TypeError(f"{cls.name}: expected tensors or numbers as inputs, got "
                            f"{type(value).__name__} ({value!r:.40})")


def _with_shapes(err: Exception, cls: type[Function], inputs: Sequence[Tensor]) -> Exception:
    """A forward's shape error, naming the op and its inputs' shapes."""
    shapes = " and ".join(str(xp.shape(getattr(t, "array", t))) for t in inputs)
    return type(err)(f"{cls.name}: {err} (input shapes {shapes})")


# ---------------------------------------------------------------- registry
REGISTRY: dict[str, Any] = {}
"""Every op by its canonical name: a Function subclass or a composed function.
The op test table must have a row for each (tests/test_ops.py checks it)."""

FUNCTIONS: dict[str, Callable] = {}
"""The public functional form of each op, exported as ``ember.<name>``."""


def _install(name: str, impl: Any, aliases: Sequence[str], method: Callable | None) -> None:
    if name in REGISTRY:
        raise RuntimeError(f"op {name!r} is registered twice")
    REGISTRY[name] = impl
    FUNCTIONS[name] = impl.apply if isinstance(impl, type) else impl
    if method is not None:
        for attr in (name, *aliases):
            setattr(Tensor, attr, method)


def register(name: str, *aliases: str, method: bool = True) -> Callable:
    """Class decorator: name an op and make it a Tensor method (``x.exp()``).

    ``aliases`` are further method names (``__add__``), ``method=False`` keeps
    it off Tensor (for ops whose first argument is not the tensor).
    """
    def deco(cls: type[Function]) -> type[Function]:
        cls.name = cls.__name__
        own = cls.__dict__.get("apply")
        fast = isinstance(own, staticmethod) and own.__func__ is cls._apply
        as_method = cls._apply if fast else (lambda *a, **kw: cls.apply(*a, **kw))
        _install(name, cls, aliases, as_method if method else None)
        return cls
    return deco


def register_composed(name: str, *aliases: str, method: bool = True) -> Callable:
    """Function decorator for ops composed of primitives: they need no backward."""
    def deco(fn: Callable) -> Callable:
        _install(name, fn, aliases, fn if method else None)
        return fn
    return deco


# ---------------------------------------------------------------- gradcheck
class GradcheckError(RuntimeError):
    """Backprop and central differences disagree."""


def _as_list(out: Any) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def gradcheck(fn: Callable, inputs: Sequence[Tensor], eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, seed: int = 0) -> bool:
    """Compare backprop with central differences, in float64.

    The outputs are projected on a fixed random direction ``v`` so one backward
    gives ``v^T J`` for every input; each element is then perturbed by ``±eps``.
    Returns True, or raises GradcheckError naming the worst element.

    >>> x = ember.randn(3, dtype=ember.float64, requires_grad=True)
    >>> ember.autograd.gradcheck(lambda t: t.tanh(), [x])
    True
    """
    inputs = [t for t in inputs]
    for t in inputs:
        if t.dtype.kind == "f" and t.dtype != xp.float64:
            raise GradcheckError(f"gradcheck: floating inputs must be float64, got {t.dtype}")
    rng = xp.random.default_rng(seed)
    outs = [o for o in _as_list(fn(*inputs)) if o.requires_grad]
    dirs = [rng.standard_normal(o.shape) for o in outs]

    def projected() -> float:
        with no_grad():
            vals = [o for o in _as_list(fn(*inputs)) if o.dtype.kind == "f"]
        return sum(float((v.array * d).sum()) for v, d in zip(vals, dirs))

    for t in inputs:
        t.grad = None
    total = sum((o * Tensor(d)).sum() for o, d in zip(outs, dirs))
    total.backward()
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            continue
        analytic = t.grad.array if t.grad is not None else xp.zeros(t.shape)
        numeric = xp.zeros(t.shape)
        flat = t.array.reshape(-1)
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + eps
            plus = projected()
            flat[j] = orig - eps
            minus = projected()
            flat[j] = orig
            numeric.reshape(-1)[j] = (plus - minus) / (2 * eps)
        err = xp.abs(analytic - numeric) - (atol + rtol * xp.abs(numeric))
        if err.size and err.max() > 0:
            worst = xp.unravel_index(int(err.argmax()), err.shape)
            raise GradcheckError(
                f"gradcheck: input {i}, element {tuple(int(w) for w in worst)}: backprop gives "
                f"{analytic[worst]:.8g}, central differences give {numeric[worst]:.8g}")
    return True


def __getattr__(name: str) -> Any:  # lazy: gradcheck_module needs ember.nn, above the core
    if name != "gradcheck_module":
        raise AttributeError(f"module 'ember.autograd' has no attribute {name!r}")
    from ember.diagnostics import gradcheck_module
    return gradcheck_module
