"""Affine layers and reshaping helpers: Identity, Linear, Bilinear, Flatten, Unflatten."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ember import dtypes
from ember.backend import xp
from ember.nn import functional as F
from ember.nn import init
from ember.nn.module import Module
from ember.nn.parameter import Parameter
from ember.tensor import Tensor

__all__ = ["Identity", "Linear", "Bilinear", "Flatten", "Unflatten"]


def factory_dtype(dtype: Any, device: Any = None) -> Any:
    """The dtype a layer's parameters get (float32 unless told), checking ``device``."""
    if device is not None and str(device) != "cpu":
        raise ValueError(f"ember runs on the CPU only, got device {device!r}")
    return dtypes.DEFAULT_FLOAT if dtype is None else dtypes.to_dtype(dtype)


def empty_parameter(shape: tuple, dtype: Any) -> Parameter:
    """A parameter of ``shape`` to be filled by the layer's initialiser."""
    return Parameter(xp.empty(shape, dtype))


def default_init_(weight: Tensor, bias: Tensor | None) -> None:
    """torch's default for Linear and Conv: kaiming_uniform_(a=sqrt(5)) on the weight,
    i.e. U(±1/sqrt(fan_in)), and the bias uniform in the same bound."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(bias, -bound, bound)


def check_last_dim(layer: Module, input: Tensor, expected: int) -> None:  # noqa: A002
    """Refuse an input of the wrong width with a message naming the layer."""
    got = input.shape[-1] if input.ndim else None
    if got != expected:
        what = f"got {got}" if got is not None else "got a 0-d tensor"
        raise ValueError(f"{layer!r}: expected input with last dimension {expected}, {what} "
                         f"(input shape {tuple(input.shape)})")


class Identity(Module):
    """Returns its input; any constructor arguments are ignored (as torch)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return input


class Linear(Module):
    """``y = x W^T + b`` with W of shape (out_features, in_features).

    Initialised as torch: W and b uniform in ``±1/sqrt(in_features)``.

    >>> layer = nn.Linear(784, 100)
    >>> layer(ember.zeros(32, 784)).shape
    (32, 100)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        dtype = factory_dtype(dtype, device)
        self.in_features, self.out_features = in_features, out_features
        self.weight = empty_parameter((out_features, in_features), dtype)
        if bias:
            self.bias = empty_parameter((out_features,), dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        default_init_(self.weight, self.bias)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        try:  # F.linear checks the shapes; the layer only adds its name to the message
            return F.linear(input, self.weight, self.bias)
        except ValueError:
            check_last_dim(self, input, self.in_features)
            raise

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Bilinear(Module):
    """``y_o = x1^T W_o x2 + b_o``, W of shape (out, in1, in2).

    >>> nn.Bilinear(3, 4, 5)(ember.ones(2, 3), ember.ones(2, 4)).shape
    (2, 5)
    """

    def __init__(self, in1_features: int, in2_features: int, out_features: int,
                 bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        dtype = factory_dtype(dtype, device)
        self.in1_features, self.in2_features = in1_features, in2_features
        self.out_features = out_features
        self.weight = empty_parameter((out_features, in1_features, in2_features), dtype)
        if bias:
            self.bias = empty_parameter((out_features,), dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.weight.shape[1])
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input1: Tensor, input2: Tensor) -> Tensor:
        check_last_dim(self, input1, self.in1_features)
        check_last_dim(self, input2, self.in2_features)
        return F.bilinear(input1, input2, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")


class Flatten(Module):
    """Merge dims ``start_dim..end_dim`` (by default all but the batch dim)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Split dim ``dim`` into ``unflattened_size``."""

    def __init__(self, dim: int, unflattened_size: Sequence[int]) -> None:
        super().__init__()
        self.dim, self.unflattened_size = dim, unflattened_size

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        size = input.shape[self.dim] if input.ndim else None
        wildcard = -1 in self.unflattened_size  # one -1 is inferred, as in torch
        if size is None or (not wildcard and math.prod(self.unflattened_size) != size):
            raise ValueError(f"{self!r}: unflattened_size {tuple(self.unflattened_size)} does "
                             f"not multiply to the size of dim {self.dim} of input shape "
                             f"{tuple(input.shape)}")
        return input.unflatten(self.dim, self.unflattened_size)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
