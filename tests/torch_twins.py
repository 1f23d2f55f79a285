"""torch twins of ember's registered models (same layers, same state_dict names), for the
interoperability tests."""

from __future__ import annotations

import torch


def lenet5(num_classes: int = 10) -> torch.nn.Module:
    """torch twin of ember.models.lenet5."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes))


def cifar_cnn(width: int = 32, num_classes: int = 10) -> torch.nn.Module:
    """torch twin of ember.models.cifar_cnn."""
    nn = torch.nn

    def conv_bn(c_in: int, c_out: int) -> list:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU()]

    w1, w2, w3 = width, 2 * width, 4 * width
    return nn.Sequential(
        *conv_bn(3, w1), *conv_bn(w1, w1), nn.MaxPool2d(2),
        *conv_bn(w1, w2), *conv_bn(w2, w2), nn.MaxPool2d(2),
        *conv_bn(w2, w3), *conv_bn(w3, w3), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w3, num_classes))


def train_one_step(model: torch.nn.Module, shape: tuple, seed: int = 0) -> torch.nn.Module:
    """One SGD step on random data (so weights, and BatchNorm statistics, are not the
    initial ones); returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen) * 2 + 0.3
    y = torch.randint(0, 10, (shape[0],), generator=gen)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return model.eval()


def one_thread():
    """A pytest fixture body: torch on one thread for the test (its thread pool spins and
    crawls when the CPUs are shared), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
