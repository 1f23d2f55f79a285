"""``nn.Module``: the base class of every layer and model.

A Module owns parameters, buffers and sub-modules, registered when assigned as
attributes (in assignment order), and names them with dotted paths exactly as
torch does, so ``state_dict`` keys and ``named_parameters`` match torch's.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, namedtuple
from collections.abc import Callable, Iterator, Mapping
from itertools import chain
from typing import Any

from ember import dtypes
from ember.backend import xp
from ember.nn.parameter import Parameter
from ember.tensor import Tensor

__all__ = ["Module", "IncompatibleKeys", "RemovableHandle"]


class RemovableHandle:
    """What ``register_forward_hook`` returns: ``handle.remove()`` unregisters the hook."""

    _ids = itertools.count()

    def __init__(self, hooks: dict) -> None:
        self.hooks = hooks
        self.id = next(RemovableHandle._ids)

    def remove(self) -> None:
        self.hooks.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


class IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What ``load_state_dict(strict=False)`` could not match."""

    __slots__ = ()

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


def _addindent(text: str, spaces: int) -> str:
    """Indent every line but the first (torch's nested-repr helper)."""
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


def _join(prefix: str, name: str) -> str:
    return prefix + ("." if prefix else "") + name


class _Registered:
    """Reads a registered parameter, buffer or sub-module as ``module.<name>``.

    Registered values live in ``_parameters``, ``_buffers`` and ``_modules`` (torch's
    layout), not in the instance's ``__dict__``, so ``self.weight`` would first fail the
    normal lookup and then reach ``Module.__getattr__``. That failure builds and drops an
    AttributeError: ~0.6 µs a read, 4x this descriptor, and ~9 µs of a batch-10 MLP step
    (docs/performance.md, section 18). ``Module`` puts one on its class for each name it
    registers. It has no ``__set__``, so an instance attribute of the same name still wins,
    and it reads the stores on every access, so it is never stale.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, module: Any, owner: type | None = None) -> Any:
        if module is None:  # Linear.weight: no such class attribute, as in torch
            raise AttributeError(f"type object '{owner.__name__}' has no attribute "
                                 f"'{self.name}'")
        state, name = module.__dict__, self.name
        for store in ("_parameters", "_buffers", "_modules"):
            values = state.get(store)
            if values is not None and name in values:
                return values[name]
        raise AttributeError(f"'{type(module).__name__}' object has no attribute '{name}'")


def _expose(cls: type, name: str) -> None:
    """Give ``cls`` a ``_Registered`` reader for ``name``, unless a class on its MRO
    already defines that name (a method, a property, or a reader of a base class). Not
    on ``Module`` itself, where it would reach every class: a bare ``nn.Module()``'s
    attributes take ``__getattr__``."""
    if cls is not Module and name.isidentifier() and \
            not any(name in c.__dict__ for c in cls.__mro__):
        setattr(cls, name, _Registered(name))


class Module:
    """Base class for layers and models: subclass it, assign layers in
    ``__init__`` and write ``forward``.

    >>> class MLP(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = nn.Linear(4, 2)
    ...     def forward(self, x):
    ...         return self.fc(x).relu()
    >>> [name for name, _ in MLP().named_parameters()]
    ['fc.weight', 'fc.bias']
    """

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers_set", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self.forward(*args, **kwargs)
        hooks = self.__dict__.get("_forward_hooks")
        if hooks:
            for hook in list(hooks.values()):
                replaced = hook(self, args, result)
                if replaced is not None:  # a hook may return a new output, as in torch
                    result = replaced
        return result

    def register_forward_hook(self, hook: Callable[[Module, tuple, Any], Any]
                              ) -> RemovableHandle:
        """Call ``hook(module, args, output)`` after every forward; a non-None return value
        replaces the output. Returns a handle whose ``remove()`` unregisters the hook.

        >>> layer = nn.Linear(2, 3)
        >>> handle = layer.register_forward_hook(lambda m, args, out: print(out.shape))
        >>> _ = layer(ember.zeros(4, 2))
        (4, 3)
        >>> handle.remove()
        """
        if "_forward_hooks" not in self.__dict__:
            object.__setattr__(self, "_forward_hooks", OrderedDict())
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    # ------------------------------------------------------------ attribute registry
    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: a name without a class reader (a bare
        # Module's registered names, or none at all). The reader's lookup, done once.
        return _Registered(name).__get__(self, type(self))

    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            self._require_init("assign parameters")
            self._forget(name, keep=self._parameters)
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                "(ember.nn.Parameter or None expected)")
            params[name] = None
        elif isinstance(value, Module):
            self._require_init("assign module")
            self._forget(name, keep=self._modules)
            self._modules[name] = value
            _expose(type(self), name)
        elif name in self.__dict__.get("_modules", ()):
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module "
                                f"'{name}' (ember.nn.Module or None expected)")
            self._modules[name] = None
        elif name in self.__dict__.get("_buffers", ()):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                "(ember.Tensor or None expected)")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                self._non_persistent_buffers_set.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self) -> list:
        own = chain(self._parameters, self._buffers, self._modules)
        return sorted(set(super().__dir__()) | set(own))

    def _require_init(self, what: str) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot {what} before Module.__init__() call "
                                 f"(call super().__init__() first in {type(self).__name__})")

    def _forget(self, name: str, keep: dict) -> None:
        """Drop ``name`` from the other stores before it is (re)registered in ``keep``,
        where it keeps its place (so replacing a layer keeps the order, as in torch)."""
        self.__dict__.pop(name, None)
        for store in (self._parameters, self._buffers, self._modules):
            if store is not keep:
                store.pop(name, None)
        self._non_persistent_buffers_set.discard(name)

    def _check_new_name(self, name: Any, kind: str, store: dict) -> None:
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
        if "." in name:
            raise KeyError(f'{kind} name can\'t contain ".", got "{name}"')
        if name == "":
            raise KeyError(f'{kind} name can\'t be empty string ""')
        if hasattr(self, name) and name not in store:
            raise KeyError(f"attribute '{name}' already exists")

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or a None placeholder, as torch's optional bias)."""
        self._require_init("assign parameters")
        self._check_new_name(name, "parameter", self._parameters)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter "
                            f"'{name}' (ember.nn.Parameter or None required)")
        if param is not None and param.grad_fn is not None:
            raise ValueError(f"cannot assign non-leaf Tensor to parameter '{name}'; make it a "
                             "leaf with .detach() first")
        self._parameters[name] = param
        _expose(type(self), name)

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add a tensor that is state but not a parameter (e.g. BatchNorm's running mean).

        Persistent buffers are saved in ``state_dict``.
        """
        self._require_init("assign buffer")
        self._check_new_name(name, "buffer", self._buffers)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer "
                            f"'{name}' (ember.Tensor or None required)")
        self._buffers[name] = tensor
        _expose(type(self), name)
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a child module under ``name``."""
        self._require_init("assign module")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_new_name(name, "module", self._modules)
        self._modules[name] = module
        _expose(type(self), name)

    register_module = add_module

    def get_submodule(self, target: str) -> Module:
        """The sub-module at dotted path ``target`` ('' is this module)."""
        module = self
        for part in target.split(".") if target else []:
            child = module._modules.get(part)
            if child is None:
                raise AttributeError(f"{module._get_name()} has no attribute `{part}`")
            module = child
        return module

    # ------------------------------------------------------------ traversal
    def named_modules(self, memo: set | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """This module and every sub-module, depth first, each once."""
        memo = set() if memo is None else memo
        if self in memo:
            return
        if remove_duplicate:
            memo.add(self)
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, _join(prefix, name), remove_duplicate)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen = set()
        for name, module in self._modules.items():
            if module is not None and module not in seen:
                seen.add(module)
                yield name, module

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def _named_members(self, store: str, prefix: str, recurse: bool,
                       remove_duplicate: bool) -> Iterator[tuple[str, Tensor]]:
        seen: set[int] = set()
        owners = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
                  if recurse else [(prefix, self)])
        for owner_prefix, owner in owners:
            for name, value in getattr(owner, store).items():
                if value is None or id(value) in seen:
                    continue
                if remove_duplicate:
                    seen.add(id(value))  # tied weights are listed once
                yield _join(owner_prefix, name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs, e.g. ('0.weight', ...), each parameter once."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn`` on every sub-module (children first), then on this one."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------ modes and gradients
    def train(self, mode: bool = True) -> Module:
        """Set training mode here and in every sub-module (Dropout, BatchNorm read it)."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for module in self.children():
            module.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's ``.grad`` (to None, or to zeros in place)."""
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.array.fill(0)

    # ------------------------------------------------------------ dtype casts
    def _cast(self, dtype: Any) -> Module:
        """Cast floating parameters, buffers and grads in place (the objects stay the same)."""
        dtype = dtypes.to_dtype(dtype)
        for module in self.modules():
            for t in chain(module._parameters.values(), module._buffers.values()):
                if t is None or t.array.dtype.kind != "f":
                    continue
                t.array = t.array.astype(dtype, copy=False)
                if t.grad is not None:
                    t.grad.array = t.grad.array.astype(dtype, copy=False)
        return self

    def float(self) -> Module:
        return self._cast(dtypes.float32)

    def double(self) -> Module:
        return self._cast(dtypes.float64)

    def half(self) -> Module:
        return self._cast(dtypes.float16)

    def to(self, *args: Any, dtype: Any = None, **kwargs: Any) -> Module:
        """``model.to(ember.float64)``; devices other than 'cpu' are refused."""
        for arg in (*args, kwargs.get("device")):
            if arg is None or str(arg) == "cpu":
                continue
            if isinstance(arg, str):
                raise ValueError(f"to: ember runs on the CPU only, got device {arg!r}")
            dtype = arg
        return self if dtype is None else self._cast(dtype)

    # ------------------------------------------------------------ state dict
    def state_dict(self, destination: OrderedDict | None = None, prefix: str = "",
                   keep_vars: bool = False) -> OrderedDict:
        """Parameters and persistent buffers by dotted name (values share memory).

        >>> list(nn.Linear(2, 1).state_dict())
        ['weight', 'bias']
        """
        destination = OrderedDict() if destination is None else destination
        for name, param in self._parameters.items():
            if param is not None:
                destination[prefix + name] = param if keep_vars else param.detach()
        for name, buffer in self._buffers.items():
            if buffer is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = buffer if keep_vars else buffer.detach()
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination, prefix + name + ".", keep_vars)
        return destination

    def load_state_dict(self, state_dict: Mapping, strict: bool = True) -> IncompatibleKeys:
        """Copy values (ember Tensors or arrays) into the parameters and buffers, in place.

        Missing and unexpected keys raise a RuntimeError naming all of them when
        ``strict``; otherwise they are returned. Shape mismatches always raise.
        Nothing is copied unless every value can be.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        own = self.state_dict(keep_vars=True)
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        errors, copies = [], []
        for key, target in own.items():
            if key in state_dict:
                value, error = _checked_value(key, state_dict[key], target)
                if error:
                    errors.append(error)
                else:
                    copies.append((target, value))
        if strict and unexpected:
            errors.insert(0, "Unexpected key(s) in state_dict: {}. ".format(
                ", ".join(f'"{k}"' for k in unexpected)))
        if strict and missing:
            errors.insert(0, "Missing key(s) in state_dict: {}. ".format(
                ", ".join(f'"{k}"' for k in missing)))
        if errors:
            raise RuntimeError("Error(s) in loading state_dict for {}:\n\t{}".format(
                type(self).__name__, "\n\t".join(errors)))
        for target, value in copies:
            target.array[...] = value
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------ repr
    def extra_repr(self) -> str:
        """The text inside this module's parentheses in ``repr``; override it."""
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): " + _addindent(repr(module), 2)
                       for name, module in self._modules.items()]
        lines = extra_lines + child_lines
        body = ""
        if len(extra_lines) == 1 and not child_lines:
            body = extra_lines[0]
        elif lines:
            body = "\n  " + "\n  ".join(lines) + "\n"
        return f"{self._get_name()}({body})"


def _checked_value(key: str, value: Any, target: Tensor) -> tuple[Any, str | None]:
    """A state-dict value as an array, or the error message that explains why not."""
    if isinstance(value, Tensor):
        array = value.array
    else:
        if hasattr(value, "detach"):  # e.g. a torch tensor: read its data
            value = value.detach()
        try:
            array = xp.asarray(value)
        except (TypeError, ValueError, RuntimeError):
            array = None
        if array is None or array.dtype.kind in "OUSV":
            return None, (f'While copying the parameter named "{key}", expected a Tensor or '
                          f"array from checkpoint but received {type(value)}")
    if array.shape != target.shape:
        return None, (f"size mismatch for {key}: copying a param with shape {array.shape} from "
                      f"checkpoint, the shape in current model is {target.shape}.")
    return array, None
