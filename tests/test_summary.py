"""ember.summary and Module.register_forward_hook.

Parameter counts and output shapes are compared with the torch twin of each model;
FLOPs with hand-computed values (multiply-add = 2, plus bias adds) and with torch's
FlopCounterMode, which counts the same matrix products without the bias adds.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn as tnn
from torch.utils.flop_counter import FlopCounterMode

import ember
import ember.models
import ember.nn as nn
from ember.summary import layer_flops, summary


def torch_lenet5():
    return tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Flatten(), tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(),
        tnn.Linear(84, 10))


def torch_shapes(model, x):
    shapes = []
    handles = [m.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape)))
               for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return shapes


def torch_flops(model, x):
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def test_lenet5_against_hand_counts_and_torch():
    info = summary(ember.models.build("lenet5"), (2, 1, 28, 28), verbose=0)
    # per sample: conv 2*Cin/groups*k*k*Hout*Wout*Cout + Cout*Hout*Wout bias adds;
    # linear 2*in*out + out
    conv1 = 2 * 1 * 5 * 5 * 28 * 28 * 6 + 6 * 28 * 28
    conv2 = 2 * 6 * 5 * 5 * 10 * 10 * 16 + 16 * 10 * 10
    fcs = (2 * 400 * 120 + 120) + (2 * 120 * 84 + 84) + (2 * 84 * 10 + 10)
    assert info.flops == 2 * (conv1 + conv2 + fcs)
    assert [r.flops for r in info.rows if r.kind in ("Conv2d", "Linear")] == [
        2 * conv1, 2 * conv2, 2 * (2 * 400 * 120 + 120), 2 * (2 * 120 * 84 + 84),
        2 * (2 * 84 * 10 + 10)]
    assert info.total_params == (6 * 25 + 6) + (16 * 6 * 25 + 16) + (400 * 120 + 120) \
        + (120 * 84 + 84) + (84 * 10 + 10) == 61706
    twin = torch_lenet5()
    x = torch.zeros(2, 1, 28, 28)
    assert info.total_params == sum(p.numel() for p in twin.parameters())
    assert [r.output_shape for r in info.rows] == torch_shapes(twin, x)
    biases = 2 * (6 * 28 * 28 + 16 * 10 * 10 + 120 + 84 + 10)
    assert info.flops - biases == torch_flops(twin, x)
    assert info.activation_bytes == sum(4 * int(np.prod(r.output_shape)) for r in info.rows)
    assert info.param_bytes == 4 * 61706 and info.trainable_params == 61706


def test_mlp_against_hand_counts_and_torch():
    model = ember.models.build("mlp", sizes=(784, 100, 10))
    info = summary(model, (1, 1, 28, 28), verbose=0)
    assert info.total_params == 784 * 100 + 100 + 100 * 10 + 10
    assert info.flops == (2 * 784 * 100 + 100) + (2 * 100 * 10 + 10)
    twin = tnn.Sequential(tnn.Flatten(), tnn.Linear(784, 100), tnn.ReLU(), tnn.Linear(100, 10))
    assert info.total_params == sum(p.numel() for p in twin.parameters())
    assert info.flops - 110 == torch_flops(twin, torch.zeros(1, 1, 28, 28))
    assert [r.name for r in info.rows] == ["0", "1", "2", "3"]
    assert [r.kind for r in info.rows] == ["Flatten", "Linear", "ReLU", "Linear"]


def test_cifar_cnn_shapes_params_and_conv_flops_match_torch():
    model = ember.models.build("cifar_cnn", width=8)
    info = summary(model, (1, 3, 32, 32), verbose=0)
    t_layers = []
    for layer in model:
        if isinstance(layer, nn.Conv2d):
            t_layers.append(tnn.Conv2d(layer.in_channels, layer.out_channels, 3, padding=1,
                                       bias=False))
        elif isinstance(layer, nn.BatchNorm2d):
            t_layers.append(tnn.BatchNorm2d(layer.num_features))
        elif isinstance(layer, nn.Linear):
            t_layers.append(tnn.Linear(layer.in_features, layer.out_features))
        else:
            t_layers.append(getattr(tnn, type(layer).__name__)(
                *([2] if isinstance(layer, nn.MaxPool2d) else
                  [1] if isinstance(layer, nn.AdaptiveAvgPool2d) else [])))
    twin = tnn.Sequential(*t_layers).eval()
    x = torch.zeros(1, 3, 32, 32)
    assert info.total_params == sum(p.numel() for p in twin.parameters())
    assert [r.output_shape for r in info.rows] == torch_shapes(twin, x)
    assert info.flops - 10 == torch_flops(twin, x)  # only the Linear has a bias


def test_nested_names_grouped_conv_transposed_conv_and_shared_layers():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 8, 3, padding=1, groups=2)
            self.up = nn.ConvTranspose2d(8, 2, 2, stride=2)
            self.head = nn.Linear(2, 3)

        def forward(self, x):
            return self.head(self.up(self.conv(x)).permute(0, 2, 3, 1))  # channels last

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block()

        def forward(self, x):
            return self.block(x)

    info = summary(Net(), (1, 4, 5, 5), verbose=0)
    assert [r.name for r in info.rows] == ["block.conv", "block.up", "block.head"]
    conv, up, head = info.rows
    assert conv.flops == 2 * (4 // 2) * 9 * (8 * 5 * 5) + 8 * 5 * 5
    assert up.output_shape == (1, 2, 10, 10)
    assert up.flops == 2 * (2 // 1) * 4 * (8 * 5 * 5) + 2 * 10 * 10
    assert head.flops == 10 * 10 * (2 * 2 * 3 + 3)  # one row per leading position
    # torch's FlopCounter agrees on the convolutions (no bias adds there)
    t_conv = tnn.Conv2d(4, 8, 3, padding=1, groups=2, bias=False)
    t_up = tnn.ConvTranspose2d(8, 2, 2, stride=2, bias=False)
    x = torch.zeros(1, 4, 5, 5)
    assert conv.flops - 8 * 25 == torch_flops(t_conv, x)
    assert up.flops - 200 == torch_flops(t_up, torch.zeros(1, 8, 5, 5))

    shared = nn.Linear(4, 4)
    twice = nn.Sequential(shared, nn.ReLU(), shared)
    rows = summary(twice, (3, 4), verbose=0).rows
    assert [r.repeated for r in rows] == [False, False, True]
    assert rows[2].params == 0 and summary(twice, (3, 4), verbose=0).total_params == 20


def test_summary_prints_a_table_leaves_the_model_unchanged_and_draws_no_randomness():
    model = ember.models.build("cifar_cnn", width=4)
    model.train()
    bn = model[1]
    before = bn.running_mean.array.copy()
    state = ember.get_rng_state()
    out = io.StringIO()
    info = summary(model, (1, 3, 32, 32), file=out)
    text = out.getvalue()
    assert text.strip() == str(info).strip()
    assert "0 (Conv2d)" in text and "Total params:" in text and "FLOPs" in text
    assert "multiply-add = 2 FLOPs" in text and "Activation memory" in text
    assert model.training and ember.get_rng_state() == state
    np.testing.assert_array_equal(bn.running_mean.array, before)
    for module in model.modules():
        assert not module._forward_hooks  # every hook removed
    assert summary(ember.models.build("mlp"), (1, 784), verbose=0).flops == \
        layer_flops(nn.Linear(784, 100), (ember.zeros(1, 784),), ember.zeros(1, 100)) + 2010


def test_forward_hook_behaves_like_torchs():
    results = {}
    for lib, L in ((torch, tnn), (ember, nn)):
        lib.manual_seed(0)
        layer = L.Linear(3, 2)
        calls = []

        def record(module, args, output, calls=calls):
            calls.append((type(module).__name__, len(args), tuple(output.shape)))

        handle = layer.register_forward_hook(record)
        doubled = layer.register_forward_hook(lambda m, a, out: out * 2)
        x = lib.ones(4, 3)
        y1 = layer(x)
        doubled.remove()
        y2 = layer(x)
        handle.remove()
        layer(x)
        results[lib.__name__] = (calls, (y1 / y2).tolist())
    assert results["ember"] == results["torch"]
    assert results["ember"][0] == [("Linear", 1, (4, 2)), ("Linear", 1, (4, 2))]


def test_forward_hook_handle_removes_once_and_works_as_context():
    layer = nn.Linear(2, 2)
    seen = []
    with layer.register_forward_hook(lambda m, a, out: seen.append(1)) as handle:
        layer(ember.zeros(1, 2))
    layer(ember.zeros(1, 2))
    handle.remove()  # removing twice is harmless, as in torch
    assert seen == [1]


def test_summary_forward_errors_propagate_with_the_layer_named():
    with pytest.raises(ValueError, match="channels"):
        summary(ember.models.build("lenet5"), (1, 3, 28, 28), verbose=0)
