"""The Tensor: a NumPy array plus the graph edge that made it, and backward.

Ops are not defined here: each op class in ``ember/ops`` registers itself as a
Tensor method where it is defined. This file holds the data structure, the
creation functions and the backward engine (an iterative topological sort).
"""

from __future__ import annotations

import heapq
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ember import dtypes, random
from ember.backend import address, xp

__all__ = ["Tensor", "tensor", "as_tensor", "from_numpy", "zeros", "ones", "full", "empty",
           "arange", "linspace", "eye", "rand", "randn", "randint", "zeros_like", "ones_like",
           "full_like", "rand_like", "randn_like", "empty_like"]

_SECOND_BACKWARD = (
    "Trying to backward through the graph a second time (or directly access saved tensors "
    "after they have already been freed). Saved intermediate values of the graph are freed "
    "when you call .backward(). Specify retain_graph=True if you need to backward a second time.")


def _grad_enabled() -> bool:
    from ember.autograd import is_grad_enabled  # late import: autograd imports this module
    return is_grad_enabled()


class Tensor:
    """An n-dimensional array that can record the ops applied to it.

    >>> x = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    tensor([2., 4., 6.])
    """

    __slots__ = ("array", "_requires_grad", "_grad", "grad_fn", "_retains_grad", "__weakref__")
    __array_priority__ = 1000  # ndarray <op> Tensor defers to Tensor's reflected op

    def __init__(self, data: Any, dtype: Any = None, requires_grad: bool = False) -> None:
        if isinstance(data, Tensor):
            data = data.array
        array = xp.asarray(data)
        dtype = dtypes.infer_dtype(array) if dtype is None else dtypes.to_dtype(dtype)
        self.array = array.astype(dtype, copy=False)
        self._grad: Tensor | None = None
        self.grad_fn = None
        self._retains_grad = False
        self._requires_grad = False
        self.requires_grad = requires_grad

    @classmethod
    def _make(cls, array: Any, requires_grad: bool, grad_fn: Any) -> Tensor:
        """Fast constructor used by ops: no dtype inference, no checks."""
        t = object.__new__(Tensor)
        t.array = array if type(array) is xp.ndarray else xp.asarray(array)
        t._requires_grad = requires_grad
        t._grad = None
        t.grad_fn = grad_fn
        t._retains_grad = False
        return t

    # ------------------------------------------------------------ autograd state
    @property
    def grad(self) -> Tensor | None:
        """The gradient that ``backward`` accumulated here (None before any)."""
        return self._grad

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        # torch refuses a gradient that does not fit; here it would otherwise reach an
        # optimizer, whose update broadcasts a wrong shape silently
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got grad "
                                f"of type {type(value).__name__}")
            if value.shape != self.shape:
                raise RuntimeError(f"assigned grad has data of a different size: "
                                   f"{value.shape}, expected {self.shape}")
            if value.dtype != self.dtype:
                raise RuntimeError(f"attempting to assign a gradient with dtype "
                                   f"{value.dtype_name} to a tensor with dtype "
                                   f"{self.dtype_name}; cast it first (grad.to(...))")
        self._grad = value

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag: bool) -> None:
        if flag and not dtypes.is_floating(self.array.dtype):
            raise RuntimeError(
                "only Tensors of floating point dtype can require gradients, "
                f"got {self.dtype_name}")
        if not flag and self.grad_fn is not None:
            raise RuntimeError("you can only change requires_grad flags of leaf variables")
        self._requires_grad = bool(flag)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    def retain_grad(self) -> None:
        """Keep ``.grad`` on this non-leaf tensor after backward, as torch does."""
        self._retains_grad = True

    def detach(self) -> Tensor:
        """The same data (shared memory), cut from the graph."""
        return Tensor._make(self.array, False, None)

    @property
    def data(self) -> Tensor:
        return self.detach()

    @data.setter
    def data(self, value: Any) -> None:
        self.array = value.array if isinstance(value, Tensor) else xp.asarray(value)

    def backward(self, gradient: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``."""
        if not self._requires_grad:
            raise RuntimeError(
                "element 0 of tensors does not require grad and does not have a grad_fn")
        if gradient is None:
            if self.array.size != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs; "
                                   f"pass gradient= for a tensor of shape {self.shape}")
            seed = xp.empty(self.array.shape, self.array.dtype)
            seed.fill(1)  # = xp.ones, without its Python wrapper (once per step)
        else:
            seed = xp.asarray(gradient.array if isinstance(gradient, Tensor) else gradient,
                              dtype=self.array.dtype)
            if seed.shape != self.array.shape:
                raise RuntimeError(f"backward: gradient of shape {seed.shape} does not match "
                                   f"the tensor's shape {self.shape}")
        _run_backward(self, seed, retain_graph)

    # ------------------------------------------------------------ introspection
    @property
    def shape(self) -> tuple:
        return self.array.shape

    @property
    def dtype(self) -> xp.dtype:
        return self.array.dtype

    @property
    def dtype_name(self) -> str:
        return dtypes.dtype_name(self.array.dtype)

    @property
    def ndim(self) -> int:
        return self.array.ndim

    def dim(self) -> int:
        return self.array.ndim

    def size(self, dim: int | None = None) -> Any:
        return self.array.shape if dim is None else self.array.shape[dim]

    def numel(self) -> int:
        return int(self.array.size)

    @property
    def is_floating_point(self) -> bool:
        return dtypes.is_floating(self.array.dtype)

    def numpy(self) -> Any:
        """The underlying array (shared memory). Refused while it requires grad, as in torch."""
        if self._requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. "
                               "Use tensor.detach().numpy() instead.")
        return self.array

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        return self.array if dtype is None else self.array.astype(dtype)

    def item(self) -> Any:
        if self.array.size != 1:
            raise ValueError(f"item: only one-element tensors can be converted to Python "
                             f"scalars, got shape {self.shape}")
        return self.array.reshape(-1)[0].item()

    def tolist(self) -> Any:
        return self.array.tolist()

    def __len__(self) -> int:
        if self.array.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.array.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        if self.array.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.array.shape[0]))

    def __bool__(self) -> bool:
        if self.array.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with {self.array.size} elements is "
                               "ambiguous")
        return bool(self.array.reshape(-1)[0])

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.array.dtype.kind not in "iu":
            raise TypeError("only integer tensors of a single element can be used as an index")
        return int(self.item())

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return _format_tensor(self)

    # ------------------------------------------------------------ dtype casts
    def to(self, dtype: Any) -> Tensor:
        return self.astype(dtype)

    def float(self) -> Tensor:
        return self.astype(dtypes.float32)

    def double(self) -> Tensor:
        return self.astype(dtypes.float64)

    def long(self) -> Tensor:
        return self.astype(dtypes.int64)

    def int(self) -> Tensor:
        return self.astype(dtypes.int32)

    def bool(self) -> Tensor:
        return self.astype(dtypes.bool_)

    def half(self) -> Tensor:
        return self.astype(dtypes.float16)

    def type(self, dtype: Any) -> Tensor:
        return self.astype(dtype)

    def contiguous(self) -> Tensor:
        return self

    # ------------------------------------------------------------ in-place updates
    def _check_inplace(self, op: str) -> None:
        """Called before every in-place write to this tensor's array."""
        if self._requires_grad and _grad_enabled():
            raise RuntimeError(
                f"{op}: a tensor that requires grad is being used in an in-place operation; "
                "wrap the update in `with ember.no_grad():`")
        note_inplace(self.array)

    def __setitem__(self, index: Any, value: Any) -> None:
        self._check_inplace("__setitem__")
        self.array[_plain_index(index)] = value.array if isinstance(value, Tensor) else value

    def _inplace(self, op: str, fn: Any, other: Any) -> Tensor:
        self._check_inplace(op)
        other = other.array if isinstance(other, Tensor) else other
        try:
            fn(self.array, other, out=self.array, casting="same_kind")
        except ValueError:
            raise ValueError(f"{op}: shape {self.shape} cannot take an update of shape "
                             f"{xp.shape(other)}") from None
        return self

    def add_(self, other: Any, alpha: float = 1) -> Tensor:
        if alpha != 1:
            other = (other.array if isinstance(other, Tensor) else other) * alpha
        return self._inplace("add_", xp.add, other)

    def sub_(self, other: Any, alpha: float = 1) -> Tensor:
        if alpha != 1:
            other = (other.array if isinstance(other, Tensor) else other) * alpha
        return self._inplace("sub_", xp.subtract, other)

    def mul_(self, other: Any) -> Tensor:
        return self._inplace("mul_", xp.multiply, other)

    def div_(self, other: Any) -> Tensor:
        return self._inplace("div_", xp.divide, other)

    def clamp_(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
        self._check_inplace("clamp_")
        xp.clip(self.array, min, max, out=self.array)
        return self

    def fill_(self, value: Any) -> Tensor:
        self._check_inplace("fill_")
        self.array[...] = value
        return self

    def zero_(self) -> Tensor:
        return self.fill_(0)

    def copy_(self, src: Any) -> Tensor:
        self._check_inplace("copy_")
        src = src.array if isinstance(src, Tensor) else xp.asarray(src)
        if xp.broadcast_shapes(src.shape, self.shape) != self.shape:
            raise ValueError(f"copy_: cannot copy shape {src.shape} into shape {self.shape}")
        self.array[...] = src
        return self

    def normal_(self, mean: float = 0.0, std: float = 1.0) -> Tensor:
        return self.copy_(random.generator().normal(mean, std, self.shape))

    def uniform_(self, a: float = 0.0, b: float = 1.0) -> Tensor:
        return self.copy_(random.generator().uniform(a, b, self.shape))

    def __iadd__(self, other: Any) -> Tensor:
        return self.add_(other) if self._inplace_ok() else self + other

    def __isub__(self, other: Any) -> Tensor:
        return self.sub_(other) if self._inplace_ok() else self - other

    def __imul__(self, other: Any) -> Tensor:
        return self.mul_(other) if self._inplace_ok() else self * other

    def __itruediv__(self, other: Any) -> Tensor:
        return self.div_(other) if self._inplace_ok() else self / other

    def _inplace_ok(self) -> bool:
        """``x += y`` updates in place unless that would corrupt a recorded graph."""
        if not self._requires_grad or not _grad_enabled():
            return True
        self._check_inplace("+=") if self.grad_fn is None else None
        return False


# ---------------------------------------------------------------- in-place writes
# torch refuses a backward whose saved tensors were modified in place after the forward
# (its version counters); ember does the same with one global count of in-place writes:
# each op records the count when it is made, and only an op made before the latest write
# compares what it saved with the arrays written since (weak references, newest first).
INPLACE_WRITES = [0]
_recent_writes: deque = deque(maxlen=256)


def note_inplace(*arrays: Any) -> None:
    """Record in-place writes to ``arrays`` (Tensor methods and optimizers call this), as
    one entry. A view (``x[1:2].add_(1)``) is usually a temporary, so the record keeps a
    weak reference to the array that owns the memory, and where in it the write went."""
    if not arrays:  # e.g. an optimizer step in which no parameter had a gradient
        return
    INPLACE_WRITES[0] += 1
    _recent_writes.append((INPLACE_WRITES[0], [_write_record(a) for a in arrays]))


def _write_record(array: Any) -> tuple:
    owner = array.base
    if type(owner) is not ndarray:  # the array owns its memory (parameters, most tensors)
        return weakref.ref(array), None
    offset = address(array) - address(owner)
    return weakref.ref(owner), (array.shape, array.dtype, offset, array.strides)


def _written(owner: Any, where: tuple) -> Any:
    """The region of ``owner`` an in-place write touched, as an array again."""
    if where is None:
        return owner
    shape, dtype, offset, strides = where
    try:
        return ndarray(shape, dtype, buffer=owner, offset=offset, strides=strides)
    except (TypeError, ValueError):  # an owner without a plain buffer: all of it
        return owner


def _check_saved(fn: Any) -> None:
    """Raise if an array ``fn`` saved for backward was written in place after ``fn`` ran."""
    saved = [a for a in (fn.saved or ()) if type(a) is ndarray]
    for count, writes in reversed(_recent_writes):
        if count <= fn.epoch:
            return
        for ref, where in writes:
            owner = ref()
            if owner is not None:
                _refuse_overlap(fn, saved, _written(owner, where))


def _refuse_overlap(fn: Any, saved: list, written: Any) -> None:
    for a in saved:
        if xp.shares_memory(a, written):
            raise RuntimeError(
                f"{fn.name}: an array of shape {a.shape} that it saved for backward was "
                "modified by an in-place operation after the forward (e.g. an optimizer "
                "step or add_); run backward before changing the inputs, or work on a "
                "copy (torch raises the same error)")


# ---------------------------------------------------------------- backward engine
_backward_check = None


def _run_backward(root: Tensor, seed: Any, retain_graph: bool) -> None:
    """Send ``seed`` back from ``root`` to every tensor that requires grad.

    Ops run newest first: each Function gets a sequence number when it is
    recorded, and every consumer of a tensor was recorded after the op that
    made it, so by the time a tensor is taken from the heap (largest number
    first) all its gradient contributions have arrived. No separate
    topological sort, and only the part of the graph the gradient reaches is
    visited.
    """
    handed_out: set[int] = {id(seed)}  # arrays that must be copied before a .grad keeps them
    stand_ins: dict[int, FreedTensor] = {}  # one per released intermediate tensor
    if root.grad_fn is None:
        _accumulate(root, seed, handed_out)
        return
    grads: dict[int, Any] = {id(root): seed}
    heap: list = []
    leaves: list[Tensor] = []
    pop, push = heapq.heappop, heapq.heappush
    check = _backward_check
    writes = INPLACE_WRITES
    node: Tensor | None = root  # the next node when it is known without the heap
    while node is not None or heap:
        if node is None:
            node = pop(heap)[2]
        grad = grads.pop(id(node))
        if stand_ins:  # every consumer of node has run: no more lookups for it
            stand_ins.pop(id(node), None)
        fn = node.grad_fn
        if node._retains_grad:
            _accumulate(node, grad, handed_out)
        if fn.released:
            raise RuntimeError(_SECOND_BACKWARD)
        if fn.epoch != writes[0]:  # something was written in place since fn ran
            _check_saved(fn)
        in_grads = fn.backward(grad)
        if type(in_grads) is not tuple:
            in_grads = (in_grads,)
        if check is not None:  # set inside autograd.detect_anomaly()
            check(fn, in_grads)
        node = None
        parents = fn._inputs  # what fn.parents reads, without a property call per op
        if parents is None:
            parents = (fn._first,) if fn._second is None else (fn._first, fn._second)
        large = False  # an intermediate input worth freeing once fn is released
        for parent, needs, pgrad in zip(parents, fn.needs_input_grad, in_grads):
            if not needs:  # a constant: no gradient, no graph behind it
                continue
            array = parent.array
            if parent.grad_fn is not None and array.nbytes >= _FREE_MIN_BYTES:
                large = True
            if pgrad is None:
                continue
            if type(pgrad) is not ndarray or pgrad.shape != array.shape or \
                    (pgrad.dtype is not array.dtype and pgrad.dtype != array.dtype):
                pgrad = _checked(fn, parent, pgrad)
            key = id(parent)
            prev = grads.get(key)
            if prev is not None:
                grads[key] = prev + pgrad
                continue
            grads[key] = pgrad
            if parent.grad_fn is None:
                leaves.append(parent)
            elif node is None and not heap:  # a chain: the only pending node is next
                node = parent
            else:
                push(heap, (-parent.grad_fn.seq, key, parent))
        if node is not None and heap:  # others are pending too: let the heap order them
            push(heap, (-node.grad_fn.seq, id(node), node))
            node = None
        if not retain_graph:  # drop what fn saved; its large inputs go with the graph
            fn.saved = None
            fn.released = True
            if large:
                _free_inputs(fn, parents, stand_ins)
    for leaf in leaves:
        _accumulate(leaf, grads[id(leaf)], handed_out)


ndarray = xp.ndarray


_FREE_MIN_BYTES = 1 << 16  # smaller inputs cost more to swap than they hold


def _free_inputs(fn: Any, parents: Any, stand_ins: dict[int, FreedTensor]) -> None:
    """After ``fn``'s backward without retain_graph: swap its intermediate inputs of
    64 KiB or more for stand-ins without data. Otherwise a finished graph keeps every
    activation alive through its consumers' ``parents`` until the loss is dropped (in a
    training loop: through the next step's forward). Leaves, and tensors that keep their
    ``.grad`` (retain_grad), stay as they are."""
    for i, p in enumerate(parents):
        if p.grad_fn is None or p._retains_grad or p.array.nbytes < _FREE_MIN_BYTES:
            continue
        stand_in = stand_ins.get(id(p))
        if stand_in is None:
            stand_in = stand_ins[id(p)] = FreedTensor.of(p)
        if type(parents) is not list:
            parents = fn.parents = list(parents)
        parents[i] = stand_in


class FreedTensor(Tensor):
    """What a graph keeps of an intermediate tensor once backward has released it: its
    producing op, shape and dtype, not its data (torch frees it as well), so that the
    graph can still be walked and drawn after ``backward()``."""

    __slots__ = ("_shape", "_dtype")

    @classmethod
    def of(cls, t: Tensor) -> FreedTensor:
        stand_in = object.__new__(cls)
        stand_in._shape, stand_in._dtype = t.array.shape, t.array.dtype
        stand_in.grad_fn, stand_in._grad, stand_in._requires_grad = t.grad_fn, None, True
        stand_in._retains_grad = False
        return stand_in

    @property
    def array(self) -> Any:
        raise RuntimeError(
            f"this {self.shape} {self.dtype_name} tensor, an input of an op whose backward "
            "has run, was freed with the graph; call backward(retain_graph=True) to keep it")

    shape = property(lambda self: self._shape)
    dtype = property(lambda self: self._dtype)
    ndim = property(lambda self: len(self._shape))
    dtype_name = property(lambda self: dtypes.dtype_name(self._dtype))

    def __repr__(self) -> str:
        return f"<freed tensor of shape {self._shape}, {self.dtype_name}, from {self.grad_fn}>"


def _checked(fn: Any, parent: Tensor, grad: Any) -> Any:
    """Guard against a backward that returns the wrong shape or dtype."""
    grad = xp.asarray(grad)
    if grad.shape != parent.array.shape:
        raise RuntimeError(f"{fn.name}.backward returned a gradient of shape {grad.shape} for an "
                           f"input of shape {parent.array.shape}")
    if grad.dtype != parent.array.dtype:
        grad = grad.astype(parent.array.dtype)
    return grad


def _accumulate(node: Tensor, grad: Any, handed_out: set[int]) -> None:
    """Add into ``node.grad``. A gradient array that may be shared (a view, or one
    already given to another tensor) is copied first, so that later in-place
    updates of one ``.grad`` (accumulation, clipping) never change another."""
    existing = node._grad  # the slot, not the validating property: once per leaf per step
    if existing is not None:
        existing.array = existing.array + grad
        return
    if grad.base is not None or id(grad) in handed_out or not grad.flags.writeable:
        grad = grad.copy()
    handed_out.add(id(grad))
    node._grad = Tensor._make(grad, False, None)


# ---------------------------------------------------------------- indexing helper
def _plain_index(index: Any) -> Any:
    """Replace Tensors inside an index by their arrays."""
    if isinstance(index, Tensor):
        return index.array
    if isinstance(index, tuple):
        return tuple(_plain_index(i) for i in index)
    if isinstance(index, list):
        return xp.asarray([i.item() if isinstance(i, Tensor) else i for i in index])
    return index


# ---------------------------------------------------------------- repr
def _format_tensor(t: Tensor) -> str:
    a = t.array
    if a.dtype.kind == "f" and a.size:
        finite = a[xp.isfinite(a)]
        integral = finite.size == 0 or bool(xp.all(finite == xp.round(finite)))
        opts = dict(precision=4, floatmode="maxprec" if integral else "fixed", suppress_small=True)
    else:
        opts = {}
    body = xp.array2string(a, separator=", ", prefix="tensor(", threshold=1000, **opts)
    extras = []
    if a.dtype not in (dtypes.float32, dtypes.int64, dtypes.bool_) or a.size == 0:
        extras.append(f"dtype={t.dtype_name}")
    if t.grad_fn is not None:
        extras.append(f"grad_fn={t.grad_fn!r}")
    elif t._requires_grad:
        extras.append("requires_grad=True")
    return "tensor(" + ", ".join([body] + extras) + ")"


# ---------------------------------------------------------------- creation
def tensor(data: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """A new tensor copied from ``data`` (nested lists, numbers, arrays).

    Float64 data, arrays included, becomes float32 unless ``dtype`` says otherwise
    (torch keeps a float64 array's dtype; see ``dtypes.infer_dtype`` for why not here).

    >>> ember.tensor([[1, 2], [3, 4]]).shape
    (2, 2)
    >>> ember.tensor(np.zeros(3)).dtype == ember.float32
    True
    """
    if isinstance(data, Tensor):
        data = data.array
    elif isinstance(data, (list, tuple)) and any(isinstance(d, Tensor) for d in data):
        data = [d.array if isinstance(d, Tensor) else d for d in data]
    return Tensor(xp.array(data), dtype, requires_grad)


def as_tensor(data: Any, dtype: Any = None) -> Tensor:
    """Like ``tensor`` but shares memory with an array of the right dtype."""
    return data if isinstance(data, Tensor) and dtype is None else Tensor(data, dtype)


def from_numpy(array: Any) -> Tensor:
    """A tensor sharing memory with ``array``, keeping its dtype."""
    return Tensor._make(xp.asarray(array), False, None)


_NUMBER = (float, int)


def as_tensor_like(values: Sequence[Any], promote: bool = False) -> list[Tensor]:
    """Lift Python numbers among an op's inputs to tensors of the others' dtype.

    torch's rule: a Python scalar takes the tensor's dtype, except that a float
    scalar with an integer tensor gives the default float dtype. With
    ``promote``, integer inputs mixed with floating ones become that float type.
    A NumPy array is lifted as ``ember.tensor`` lifts it (float64 becomes float32). torch
    has no rule of its own to follow there: it hands ``tensor + ndarray`` to NumPy,
    which fails for a tensor that requires grad and loses the graph for one that does
    not, and ``ndarray + tensor`` raises.
    """
    if len(values) == 2:  # fast path for the common `tensor <op> number`
        a, b = values
        if type(b) in _NUMBER and type(a) is Tensor and a.array.dtype.kind == "f":
            return [a, Tensor._make(xp.asarray(b, a.array.dtype), False, None)]
        if type(a) in _NUMBER and type(b) is Tensor and b.array.dtype.kind == "f":
            return [Tensor._make(xp.asarray(a, b.array.dtype), False, None), b]
    ref = next((v.array.dtype for v in values if isinstance(v, Tensor)), None)
    tensors = [v if isinstance(v, Tensor) else Tensor._make(_scalar_array(v, ref), False, None)
               for v in values]
    return _promoted(tensors) if promote else tensors


def _promoted(tensors: list[Tensor]) -> list[Tensor]:
    floats = [t.array.dtype for t in tensors if t.array.dtype.kind == "f"]
    if not floats or len(floats) == len(tensors):
        return tensors
    target = xp.result_type(*floats)
    return [t if t.array.dtype.kind == "f" else Tensor._make(t.array.astype(target), False, None)
            for t in tensors]


def _scalar_array(value: Any, ref: Any) -> Any:
    if type(value) is float and ref is not None and ref.kind == "f":
        return xp.asarray(value, ref)  # the common case: tensor * 0.5
    array = xp.asarray(value)
    if ref is None or array.ndim != 0:
        return array.astype(dtypes.infer_dtype(array), copy=False)
    if array.dtype.kind == "f" and ref.kind != "f":
        return array.astype(dtypes.DEFAULT_FLOAT)
    return array.astype(ref)


def _shape(size: Sequence[Any]) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    return tuple(int(s) for s in size)


def _float_dtype(dtype: Any) -> Any:
    return dtypes.DEFAULT_FLOAT if dtype is None else dtypes.to_dtype(dtype)


def zeros(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    dtype = _float_dtype(dtype)
    return Tensor(xp.zeros(_shape(size), dtype), dtype, requires_grad)


def ones(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    dtype = _float_dtype(dtype)
    return Tensor(xp.ones(_shape(size), dtype), dtype, requires_grad)


def empty(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    dtype = _float_dtype(dtype)
    return Tensor(xp.empty(_shape(size), dtype), dtype, requires_grad)


def full(size: Sequence[int], fill_value: Any, dtype: Any = None,
         requires_grad: bool = False) -> Tensor:
    if dtype is None:
        dtype = dtypes.infer_dtype(xp.asarray(fill_value))
    return Tensor(xp.full(_shape((size,)), fill_value, dtype), dtype, requires_grad)


def arange(start: float, end: float | None = None, step: float = 1, dtype: Any = None,
           requires_grad: bool = False) -> Tensor:
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_float = any(isinstance(v, float) for v in (start, end, step))
        dtype = dtypes.DEFAULT_FLOAT if is_float else dtypes.int64
    return Tensor(xp.arange(start, end, step), dtype, requires_grad)


def linspace(start: float, end: float, steps: int, dtype: Any = None,
             requires_grad: bool = False) -> Tensor:
    return Tensor(xp.linspace(start, end, steps), _float_dtype(dtype), requires_grad)


def eye(n: int, m: int | None = None, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(xp.eye(n, m), _float_dtype(dtype), requires_grad)


def rand(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """Uniform on [0, 1), from ember's seeded generator (see ``manual_seed``)."""
    dtype = _float_dtype(dtype)
    return Tensor(random.generator().random(_shape(size), dtype=_gen_dtype(dtype)),
                  dtype, requires_grad)


def randn(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """Standard normal, from ember's seeded generator (see ``manual_seed``)."""
    dtype = _float_dtype(dtype)
    return Tensor(random.generator().standard_normal(_shape(size), dtype=_gen_dtype(dtype)),
                  dtype, requires_grad)


def _gen_dtype(dtype: Any) -> Any:
    return dtype if dtype in (dtypes.float32, dtypes.float64) else dtypes.float64


def randint(low: int, high: int | None = None, size: Iterable[int] = (),
            dtype: Any = None) -> Tensor:
    if high is None:
        low, high = 0, low
    array = random.generator().integers(low, high, size=tuple(size))
    return Tensor(array, dtypes.int64 if dtype is None else dtype)


def _like(t: Tensor, dtype: Any) -> Any:
    return t.array.dtype if dtype is None else dtypes.to_dtype(dtype)


def zeros_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(xp.zeros(t.shape, _like(t, dtype)), _like(t, dtype), requires_grad)


def ones_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(xp.ones(t.shape, _like(t, dtype)), _like(t, dtype), requires_grad)


def empty_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return Tensor(xp.empty(t.shape, _like(t, dtype)), _like(t, dtype), requires_grad)


def full_like(t: Tensor, fill_value: Any, dtype: Any = None,
              requires_grad: bool = False) -> Tensor:
    return Tensor(xp.full(t.shape, fill_value, _like(t, dtype)), _like(t, dtype), requires_grad)


def rand_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return rand(*t.shape, dtype=_like(t, dtype), requires_grad=requires_grad)


def randn_like(t: Tensor, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    return randn(*t.shape, dtype=_like(t, dtype), requires_grad=requires_grad)
