"""Conv-net layers against their torch twins on identical weights (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
import ember.nn as nn

TN = torch.nn

LAYERS = [
    ("conv2d", lambda m: m.Conv2d(3, 4, 3), (2, 3, 7, 7)),
    ("conv2d-stride-pad", lambda m: m.Conv2d(3, 4, (3, 2), stride=2, padding=(1, 0)), (2, 3, 9, 8)),
    ("conv2d-same-dilated", lambda m: m.Conv2d(2, 4, 3, padding="same", dilation=2), (1, 2, 7, 6)),
    ("conv2d-groups-nobias", lambda m: m.Conv2d(4, 6, 3, groups=2, bias=False), (2, 4, 5, 5)),
    ("conv2d-depthwise", lambda m: m.Conv2d(3, 3, 3, groups=3, padding=1), (2, 3, 5, 5)),
    ("conv1d", lambda m: m.Conv1d(3, 5, 3, stride=2, padding=1), (2, 3, 11)),
    ("conv1d-same", lambda m: m.Conv1d(2, 2, 4, padding="same"), (2, 2, 9)),
    ("convT2d", lambda m: m.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1),
     (2, 4, 4, 5)),
    ("convT2d-groups", lambda m: m.ConvTranspose2d(4, 6, 2, stride=2, groups=2), (1, 4, 3, 3)),
    ("maxpool", lambda m: m.MaxPool2d(2), (2, 3, 6, 6)),
    ("maxpool-ceil", lambda m: m.MaxPool2d(3, 2, padding=1, ceil_mode=True), (2, 2, 8, 7)),
    ("avgpool", lambda m: m.AvgPool2d(3, 2, padding=1, count_include_pad=False), (2, 2, 7, 7)),
    ("adaptive-avg", lambda m: m.AdaptiveAvgPool2d((3, 2)), (2, 3, 7, 5)),
    ("adaptive-max", lambda m: m.AdaptiveMaxPool2d(2), (2, 3, 5, 5)),
    ("batchnorm2d", lambda m: m.BatchNorm2d(3), (4, 3, 5, 5)),
    ("batchnorm2d-noaffine", lambda m: m.BatchNorm2d(3, affine=False, momentum=None),
     (4, 3, 5, 5)),
    ("groupnorm", lambda m: m.GroupNorm(2, 4), (3, 4, 5, 5)),
    ("groupnorm-noaffine", lambda m: m.GroupNorm(4, 4, affine=False), (3, 4, 3, 3)),
    ("instancenorm", lambda m: m.InstanceNorm2d(3), (2, 3, 5, 5)),
    ("instancenorm-affine-stats", lambda m: m.InstanceNorm2d(3, affine=True,
                                                             track_running_stats=True),
     (2, 3, 5, 5)),
    ("upsample-nearest", lambda m: m.Upsample(scale_factor=2), (1, 2, 3, 4)),
    ("upsample-bilinear", lambda m: m.Upsample(size=(5, 7), mode="bilinear",
                                               align_corners=False), (1, 2, 3, 4)),
    ("upsample-bilinear-corners", lambda m: m.Upsample(scale_factor=2, mode="bilinear",
                                                       align_corners=True), (1, 2, 3, 4)),
    ("pixelshuffle", lambda m: m.PixelShuffle(2), (2, 8, 3, 3)),
    ("pixelunshuffle", lambda m: m.PixelUnshuffle(2), (2, 2, 4, 6)),
    ("dropout2d-eval", lambda m: m.Dropout2d(0.5).eval(), (2, 3, 4, 4)),
]


def _twins(make, shape, seed=0):
    torch.manual_seed(seed)
    t_layer = make(TN).double()
    e_layer = make(nn).double()
    e_layer.load_state_dict({k: v.detach().numpy().copy() for k, v in
                             t_layer.state_dict().items()})
    e_layer.train(t_layer.training)
    x = np.random.default_rng(seed).standard_normal(shape)
    return t_layer, e_layer, x


def _run(layer, x, lib):
    tensor = torch.tensor(x, requires_grad=True) if lib is torch else \
        ember.tensor(x, dtype=ember.float64, requires_grad=True)
    out = layer(tensor)
    return tensor, out


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[r[0] for r in LAYERS])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_layer_matches_torch(name, make, shape, mode):
    t_layer, e_layer, x = _twins(make, shape)
    if mode == "eval":
        t_layer.eval()
        e_layer.eval()
    for step in range(2):  # twice, so running statistics are used and updated
        xt, out_t = _run(t_layer, x + step, torch)
        xe, out_e = _run(e_layer, x + step, ember)
        np.testing.assert_allclose(out_e.array, out_t.detach().numpy(), rtol=1e-7, atol=1e-10)
        g = np.random.default_rng(step + 1).standard_normal(tuple(out_t.shape))
        out_t.backward(torch.tensor(g))
        out_e.backward(ember.tensor(g, dtype=ember.float64))
        np.testing.assert_allclose(xe.grad.array, xt.grad.numpy(), rtol=1e-7, atol=1e-10)
    for (key, value), (_, mine) in zip(t_layer.state_dict().items(),
                                       e_layer.state_dict().items()):
        np.testing.assert_allclose(mine.array, value.numpy(), rtol=1e-7, atol=1e-10,
                                   err_msg=f"{name}: {key}")
    for (key, p), (_, q) in zip(t_layer.named_parameters(), e_layer.named_parameters()):
        np.testing.assert_allclose(q.grad.array, p.grad.numpy(), rtol=1e-7, atol=1e-10,
                                   err_msg=f"{name}: grad of {key}")


@pytest.mark.parametrize("name,make,shape", LAYERS, ids=[r[0] for r in LAYERS])
def test_repr_and_state_dict_keys_match_torch(name, make, shape):
    t_layer, e_layer, _ = _twins(make, shape)
    assert repr(e_layer) == repr(t_layer)
    assert list(e_layer.state_dict()) == list(t_layer.state_dict())


def test_default_conv_init_has_torch_bounds():
    ember.manual_seed(0)
    conv = nn.Conv2d(16, 32, 5)
    bound = 1 / np.sqrt(16 * 25)
    w = conv.weight.array
    assert w.dtype == np.float32 and np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound
    assert np.abs(conv.bias.array).max() <= bound


def test_dropout2d_zeroes_whole_channels_and_scales():
    ember.manual_seed(0)
    x = ember.ones(64, 16, 3, 3, requires_grad=True)
    out = nn.Dropout2d(0.25)(x)
    planes = out.array.reshape(64, 16, 9)
    assert set(np.unique(planes)) <= {0.0, np.float32(1 / 0.75)}
    assert (planes.min(2) == planes.max(2)).all()  # a channel is dropped whole or kept whole
    assert 0.15 < (planes[:, :, 0] == 0).mean() < 0.35
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.array, out.array)


def test_conv_wrong_channel_count_names_layer_and_counts():
    conv = nn.Conv2d(3, 8, 3)
    with pytest.raises(ValueError, match=r"Conv2d\(3, 8.*expected input with 3 channels, got 1"):
        conv(ember.zeros(2, 1, 8, 8))


def test_conv_non_4d_input_is_refused():
    with pytest.raises(ValueError, match=r"expected a 4-D input \(N, C, H, W\), got shape"):
        nn.Conv2d(3, 8, 3)(ember.zeros(3, 8, 8))


def test_kernel_larger_than_padded_input_is_a_clear_error():
    with pytest.raises(ValueError, match="kernel"):
        nn.Conv2d(1, 1, 7)(ember.zeros(1, 1, 4, 4))
