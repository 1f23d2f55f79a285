"""Convolution layers: Conv1d, Conv2d, ConvTranspose2d (NCL / NCHW).

Layers own the weight and bias and call the functional ops in ``ember/ops/conv.py``
(im2col + one BLAS matmul); they hold no maths.
"""

from __future__ import annotations

from typing import Any

from ember.nn import functional as F
from ember.nn.linear import default_init_, empty_parameter, factory_dtype
from ember.nn.module import Module
from ember.tensor import Tensor

__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d"]


def _tuple(value: Any, n: int) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


class _ConvNd(Module):
    """Shared set-up: hyper-parameters, parameters, torch's initialisation, repr."""

    dims = 2
    transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any,
                 padding: Any, dilation: Any, groups: int, bias: bool, dtype: Any,
                 output_padding: Any = 0, padding_mode: str = "zeros", device: Any = None) -> None:
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError(f"{type(self).__name__}: only padding_mode='zeros' is supported, "
                             f"got {padding_mode!r}")
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(f"{type(self).__name__}: in_channels ({in_channels}) and "
                             f"out_channels ({out_channels}) must be divisible by groups "
                             f"({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _tuple(kernel_size, self.dims)
        self.stride, self.dilation = _tuple(stride, self.dims), _tuple(dilation, self.dims)
        self.padding = padding if isinstance(padding, str) else _tuple(padding, self.dims)
        self.output_padding = _tuple(output_padding, self.dims)
        shape = ((in_channels, out_channels // groups) if self.transposed
                 else (out_channels, in_channels // groups)) + self.kernel_size
        self.weight = empty_parameter(shape, factory_dtype(dtype, device))
        if bias:
            self.bias = empty_parameter((out_channels,), self.weight.dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        default_init_(self.weight, self.bias)

    def check_input(self, input: Tensor) -> None:  # noqa: A002
        """Refuse inputs of the wrong rank or channel count, naming the layer."""
        want = self.dims + 2
        if input.ndim != want:
            layout = "(N, C, L)" if self.dims == 1 else "(N, C, H, W)"
            raise ValueError(f"{self!r}: expected a {want}-D input {layout}, got shape "
                             f"{tuple(input.shape)}")
        if input.shape[1] != self.in_channels:
            raise ValueError(f"{self!r}: expected input with {self.in_channels} channels, got "
                             f"{input.shape[1]} (input shape {tuple(input.shape)})")

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        zeros = (0,) * self.dims
        if self.padding != zeros:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self.dims:
            s += f", dilation={self.dilation}"
        if self.output_padding != zeros:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv2d(_ConvNd):
    """2-D convolution over (N, C, H, W) inputs.

    >>> conv = nn.Conv2d(1, 6, 5, padding=2)
    >>> conv(ember.zeros(8, 1, 28, 28)).shape
    (8, 6, 28, 28)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, dtype, padding_mode=padding_mode, device=device)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        self.check_input(input)
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class Conv1d(_ConvNd):
    """1-D convolution over (N, C, L) inputs."""

    dims = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, dtype, padding_mode=padding_mode, device=device)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        self.check_input(input)
        padding = self.padding if isinstance(self.padding, str) else self.padding[0]
        return F.conv1d(input, self.weight, self.bias, self.stride[0], padding,
                        self.dilation[0], self.groups)


class ConvTranspose2d(_ConvNd):
    """The gradient of Conv2d with respect to its input, as a layer (upsampling).

    >>> up = nn.ConvTranspose2d(8, 4, 2, stride=2)
    >>> up(ember.zeros(1, 8, 7, 7)).shape
    (1, 4, 14, 14)
    """

    transposed = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, groups: int = 1, bias: bool = True,
                 dilation: Any = 1, padding_mode: str = "zeros", device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, dtype, output_padding, padding_mode, device)

    def forward(self, input: Tensor, output_size: Any = None) -> Tensor:  # noqa: A002
        if output_size is not None:
            raise ValueError("ConvTranspose2d: output_size is not supported; use "
                             "output_padding")
        self.check_input(input)
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)
