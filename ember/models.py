"""A registry of named architectures: the seed projects' MLPs, LeNet-5 and the CIFAR-10 CNN.

>>> model = ember.models.build("lenet5")
>>> sorted(ember.models.MODELS)[:3]
['cifar_cnn', 'lenet5', 'mlp_adam']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ember.nn as nn

__all__ = ["MODELS", "register_model", "build", "mlp", "lenet5", "cifar_cnn"]

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable:
    """Decorator: make a model constructor available by name (configs, CLI)."""
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = fn
        return fn
    return deco


def build(name: str, **kwargs: Any) -> nn.Module:
    """Construct a registered model by name."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU}


@register_model("mlp")
def mlp(sizes: tuple = (784, 100, 10), activation: str = "relu", dropout: float = 0.0) -> nn.Module:
    """A multi-layer perceptron over flattened inputs: Linear + activation per hidden layer."""
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


@register_model("mlp_sigmoid")
def mlp_sigmoid() -> nn.Module:
    """784-100-10 with a Sigmoid hidden layer (the seed recipe: MSE, SGD lr 0.1, batch 10)."""
    return mlp((784, 100, 10), "sigmoid")


@register_model("mlp_relu")
def mlp_relu() -> nn.Module:
    """784-256-128-64-32-10 ReLU (cross-entropy, SGD with momentum)."""
    return mlp((784, 256, 128, 64, 32, 10), "relu")


@register_model("mlp_tanh")
def mlp_tanh() -> nn.Module:
    """784-100-100-100-10 Tanh (the seed benchmark network)."""
    return mlp((784, 100, 100, 100, 10), "tanh")


@register_model("mlp_adam")
def mlp_adam() -> nn.Module:
    """784-100-10 ReLU (cross-entropy, Adam)."""
    return mlp((784, 100, 10), "relu")


@register_model("lenet5")
def lenet5(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """LeNet-5 for 28x28 inputs (padding 2 makes the classic 32x32 geometry), with
    ReLU and max-pooling as modern LeNets use."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes))


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


@register_model("cifar_cnn")
def cifar_cnn(width: int = 32, num_classes: int = 10) -> nn.Module:
    """A small VGG-style CNN for 32x32 RGB: three stages of two 3x3 conv + BatchNorm +
    ReLU, max-pooling between stages, then global average pooling and one Linear."""
    w1, w2, w3 = width, 2 * width, 4 * width
    return nn.Sequential(
        *_conv_bn(3, w1), *_conv_bn(w1, w1), nn.MaxPool2d(2),
        *_conv_bn(w1, w2), *_conv_bn(w2, w2), nn.MaxPool2d(2),
        *_conv_bn(w2, w3), *_conv_bn(w3, w3), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w3, num_classes))
