"""Normalisation layers: LayerNorm, BatchNorm1d and BatchNorm2d."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ember import dtypes
from ember.backend import xp
from ember.nn import functional as F
from ember.nn import init
from ember.nn.linear import empty_parameter, factory_dtype
from ember.nn.module import Module
from ember.tensor import Tensor

__all__ = ["LayerNorm", "BatchNorm1d", "BatchNorm2d", "GroupNorm", "InstanceNorm2d"]


def reset_affine_(module: Module) -> None:
    """A normalisation layer starts as the identity: scale 1, shift 0 (where present)."""
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` dims, then scale and shift.

    >>> ln = nn.LayerNorm(4)
    >>> ln
    LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        dtype = factory_dtype(dtype, device)
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        if elementwise_affine:
            self.weight = empty_parameter(self.normalized_shape, dtype)
            if bias:
                self.bias = empty_parameter(self.normalized_shape, dtype)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_affine_(self)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        k = len(self.normalized_shape)
        if input.ndim < k or tuple(input.shape[input.ndim - k:]) != self.normalized_shape:
            raise ValueError(f"{self!r}: expected input with shape [*, "
                             f"{', '.join(map(str, self.normalized_shape))}], got "
                             f"{tuple(input.shape)}")
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine="
                f"{self.elementwise_affine}, bias={self.bias is not None}")


class _BatchNorm(Module):
    """Per-channel normalisation over the batch (and spatial dims), as torch's _BatchNorm.

    Training: batch statistics normalise (biased variance); running statistics
    follow them with ``momentum`` (unbiased variance; ``momentum=None`` is a
    cumulative average). Eval: the running statistics normalise, unless
    ``track_running_stats=False``, in which case batch statistics always do.
    """

    input_dims: tuple = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device: Any = None,
                 dtype: Any = None, *, bias: bool = True) -> None:
        super().__init__()
        dtype = factory_dtype(dtype, device)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = empty_parameter((num_features,), dtype)
        else:
            self.register_parameter("weight", None)
        if affine and bias:
            self.bias = empty_parameter((num_features,), dtype)
        else:
            self.register_parameter("bias", None)
        self._register_running_stats(num_features, dtype)
        self.reset_parameters()

    def _register_running_stats(self, num_features: int, dtype: Any) -> None:
        tracked = self.track_running_stats
        self.register_buffer("running_mean", Tensor(xp.zeros(num_features, dtype), dtype)
                             if tracked else None)
        self.register_buffer("running_var", Tensor(xp.ones(num_features, dtype), dtype)
                             if tracked else None)
        self.register_buffer("num_batches_tracked", Tensor(xp.zeros((), xp.int64),
                                                           dtypes.int64) if tracked else None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.array[...] = 0
            self.running_var.array[...] = 1
            self.num_batches_tracked.array[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        reset_affine_(self)

    def _check_input(self, input: Tensor) -> None:  # noqa: A002
        if input.ndim not in self.input_dims:
            dims = " or ".join(f"{d}D" for d in self.input_dims)
            raise ValueError(f"{self!r}: expected {dims} input (got {input.ndim}D input)")
        if input.shape[1] != self.num_features:
            raise ValueError(f"{self!r}: expected input with {self.num_features} channels in "
                             f"dim 1, got {input.shape[1]} (input shape {tuple(input.shape)})")

    def _average_factor(self) -> float:
        """How far the running statistics move this step (torch's rule)."""
        if not (self.training and self.track_running_stats):
            return 0.0 if self.momentum is None else self.momentum
        self.num_batches_tracked.array += 1
        if self.momentum is None:  # cumulative moving average
            return 1.0 / float(self.num_batches_tracked.array)
        return self.momentum

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        self._check_input(input)
        factor = self._average_factor()
        use_batch_stats = self.training or self.running_mean is None
        use_running = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if use_running else None,
                            self.running_var if use_running else None, self.weight, self.bias,
                            use_batch_stats, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) inputs.

    >>> bn = nn.BatchNorm1d(3)
    >>> bn(ember.randn(8, 3)).shape
    (8, 3)
    """

    input_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) inputs."""

    input_dims = (4,)


class GroupNorm(Module):
    """Normalise groups of channels per sample; independent of the batch size.

    >>> gn = nn.GroupNorm(2, 4)
    >>> gn(ember.randn(3, 4, 5, 5)).shape
    (3, 4, 5, 5)
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, device: Any = None, dtype: Any = None, *,
                 bias: bool = True) -> None:
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by "
                             f"num_groups ({num_groups})")
        dtype = factory_dtype(dtype, device)
        self.num_groups, self.num_channels, self.eps, self.affine = (num_groups, num_channels,
                                                                     eps, affine)
        self.weight = empty_parameter((num_channels,), dtype) if affine else None
        self.bias = empty_parameter((num_channels,), dtype) if affine and bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_affine_(self)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        if input.ndim < 2 or input.shape[1] != self.num_channels:
            raise ValueError(f"{self!r}: expected input (N, {self.num_channels}, ...), got "
                             f"shape {tuple(input.shape)}")
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class InstanceNorm2d(_BatchNorm):
    """Normalise each (sample, channel) plane over H and W (torch's defaults:
    no affine parameters, no running statistics)."""

    input_dims = (3, 4)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = False, track_running_stats: bool = False, device: Any = None,
                 dtype: Any = None, *, bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias)

    def _check_input(self, input: Tensor) -> None:  # noqa: A002
        if input.ndim not in self.input_dims:
            raise ValueError(f"{self!r}: expected 3D or 4D input (got {input.ndim}D input)")
        if input.shape[-3] != self.num_features:
            raise ValueError(f"{self!r}: expected input with {self.num_features} channels, got "
                             f"{input.shape[-3]} (input shape {tuple(input.shape)})")

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        self._check_input(input)
        batched = input if input.ndim == 4 else input.unsqueeze(0)
        use_input_stats = self.training or not self.track_running_stats
        momentum = 0.1 if self.momentum is None else self.momentum
        out = F.instance_norm(batched, self.running_mean, self.running_var, self.weight,
                              self.bias, use_input_stats, momentum, self.eps)
        return out if input.ndim == 4 else out.squeeze(0)
