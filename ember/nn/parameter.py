"""``nn.Parameter``: a Tensor that a Module registers as learnable."""

from __future__ import annotations

from typing import Any

from ember import dtypes
from ember.backend import xp
from ember.tensor import Tensor

__all__ = ["Parameter"]


class Parameter(Tensor):
    """A Tensor that, assigned as a Module attribute, becomes one of its parameters.

    It shares memory with the Tensor or array it wraps and keeps its dtype.

    >>> p = nn.Parameter(ember.zeros(2))
    >>> p.requires_grad
    True
    """

    __slots__ = ()

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            array = xp.empty(0, dtypes.DEFAULT_FLOAT)
        elif isinstance(data, Tensor):
            array = data.array
        elif isinstance(data, xp.ndarray):
            array = data
        else:  # Python numbers and lists: torch's dtype rule (float data is float32)
            array = Tensor(data).array
        self.array = array
        self._grad = None
        self.grad_fn = None
        self._retains_grad = False
        self._requires_grad = False
        self.requires_grad = requires_grad

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()
