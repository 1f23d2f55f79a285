"""PyTorch twins of ``ember.models``: the same layers in the same order, so that
``parameters()`` and ``buffers()`` line up one to one and weights can be copied across."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["mlp", "lenet5", "cifar_cnn", "TWINS", "copy_into_ember"]

_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def mlp(sizes: tuple = (784, 100, 10), activation: str = "relu") -> nn.Module:
    """Twin of ``ember.models.mlp``: Flatten, then Linear + activation per hidden layer."""
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def lenet5(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Twin of ``ember.models.lenet5``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes))


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def cifar_cnn(width: int = 32, num_classes: int = 10) -> nn.Module:
    """Twin of ``ember.models.cifar_cnn``."""
    w1, w2, w3 = width, 2 * width, 4 * width
    return nn.Sequential(
        *_conv_bn(3, w1), *_conv_bn(w1, w1), nn.MaxPool2d(2),
        *_conv_bn(w1, w2), *_conv_bn(w2, w2), nn.MaxPool2d(2),
        *_conv_bn(w2, w3), *_conv_bn(w3, w3), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w3, num_classes))


TWINS = {"mlp": mlp, "lenet5": lenet5, "cifar_cnn": cifar_cnn}


@torch.no_grad()
def copy_into_ember(torch_model: nn.Module, ember_model) -> None:
    """Give ``ember_model`` the torch model's parameters and buffers (float32 copies)."""
    pairs = [(list(torch_model.parameters()), list(ember_model.parameters())),
             (list(torch_model.buffers()), list(ember_model.buffers()))]
    for sources, targets in pairs:
        if len(sources) != len(targets):
            raise ValueError(f"twin mismatch: torch has {len(sources)} tensors, "
                             f"ember {len(targets)}")
        for src, dst in zip(sources, targets):
            if tuple(src.shape) != tuple(dst.shape):
                raise ValueError(f"twin mismatch: {tuple(src.shape)} vs {tuple(dst.shape)}")
            dst.array[...] = src.detach().numpy()
