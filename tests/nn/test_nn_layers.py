"""Every layer against its torch twin on identical float64 weights.

A row names a torch layer, the ember layer, and its inputs. Torch's
parameters (and running statistics) are randomised, copied into ember with
load_state_dict, and both layers run forward and backward with the same
upstream gradient: the outputs, the input gradients and every parameter's
gradient must agree.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as tnn

import ember
import ember.nn as nn

TOL = dict(rtol=1e-7, atol=1e-10)


def floats(*shape):
    return ("float", shape)


def ints(high, *shape):
    return ("int", high, shape)


def make_arrays(specs, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for spec in specs:
        if spec[0] == "float":
            out.append(rng.normal(0, 1.5, spec[1]))
        else:
            out.append(rng.integers(0, spec[1], spec[2]))
    return out


def randomise(module: tnn.Module, seed: int = 1) -> None:
    """Give torch's parameters and running stats non-trivial values (not ones/zeros)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype))


def copy_weights(t_module: tnn.Module, e_module: nn.Module) -> None:
    state = {k: v.detach().numpy().copy() for k, v in t_module.state_dict().items()}
    e_module.load_state_dict(state)


def paired(t_module, e_module, train=True):
    t_module.double()
    e_module.double()
    randomise(t_module)
    copy_weights(t_module, e_module)
    t_module.train(train)
    e_module.train(train)
    return t_module, e_module


def run_both(t_module, e_module, arrays, seed=2):
    """Forward both, backward the same random upstream gradient; return the tensors."""
    t_in = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    e_in = [ember.tensor(a, dtype=a.dtype, requires_grad=a.dtype.kind == "f") for a in arrays]
    t_out, e_out = t_module(*t_in), e_module(*e_in)
    up = np.random.default_rng(seed).normal(size=tuple(t_out.shape))
    if t_out.requires_grad:
        t_out.backward(torch.tensor(up))
        e_out.backward(ember.tensor(up, dtype=ember.float64))
    return t_in, e_in, t_out, e_out


def assert_same(e, t, what):
    t = t.detach().numpy() if isinstance(t, torch.Tensor) else t
    e = e.array if isinstance(e, ember.Tensor) else e
    assert e.shape == t.shape, f"{what}: shape {e.shape} vs torch {t.shape}"
    np.testing.assert_allclose(e, t, err_msg=what, **TOL)


def assert_layer_matches(t_module, e_module, arrays):
    t_in, e_in, t_out, e_out = run_both(t_module, e_module, arrays)
    assert_same(e_out, t_out, "output")
    for i, (t, e) in enumerate(zip(t_in, e_in)):
        if t.requires_grad:
            assert_same(e.grad, t.grad, f"grad of input {i}")
    e_params = dict(e_module.named_parameters())
    t_params = dict(t_module.named_parameters())
    assert list(e_params) == list(t_params)
    for name, t in t_params.items():
        assert t.grad is not None
        assert_same(e_params[name].grad, t.grad, f"grad of {name}")
    for name, t in t_module.state_dict().items():  # running statistics after the step
        assert_same(e_module.state_dict()[name], t, f"state {name} after the step")


LAYERS = [
    ("linear", lambda L: L.Linear(5, 3), [floats(4, 5)]),
    ("linear-3d", lambda L: L.Linear(5, 3), [floats(2, 3, 5)]),
    ("linear-1d", lambda L: L.Linear(5, 3), [floats(5)]),
    ("linear-nobias", lambda L: L.Linear(5, 3, bias=False), [floats(4, 5)]),
    ("bilinear", lambda L: L.Bilinear(3, 4, 2), [floats(5, 3), floats(5, 4)]),
    ("bilinear-3d", lambda L: L.Bilinear(3, 4, 2, bias=False), [floats(2, 3, 3), floats(2, 3, 4)]),
    ("identity", lambda L: L.Identity(7, unused=True), [floats(3, 4)]),
    ("flatten", lambda L: L.Flatten(), [floats(2, 3, 4)]),
    ("flatten-0-1", lambda L: L.Flatten(0, 1), [floats(2, 3, 4)]),
    ("unflatten", lambda L: L.Unflatten(1, (2, 3)), [floats(4, 6)]),
    ("layernorm", lambda L: L.LayerNorm(5), [floats(3, 5)]),
    ("layernorm-2d", lambda L: L.LayerNorm([3, 4], eps=1e-3), [floats(2, 3, 4)]),
    ("layernorm-noaffine", lambda L: L.LayerNorm(5, elementwise_affine=False), [floats(3, 5)]),
    ("layernorm-nobias", lambda L: L.LayerNorm(5, bias=False), [floats(2, 3, 5)]),
    ("batchnorm1d", lambda L: L.BatchNorm1d(4), [floats(6, 4)]),
    ("batchnorm1d-3d", lambda L: L.BatchNorm1d(4), [floats(3, 4, 5)]),
    ("batchnorm1d-noaffine", lambda L: L.BatchNorm1d(4, affine=False), [floats(6, 4)]),
    ("batchnorm1d-nobias", lambda L: L.BatchNorm1d(4, bias=False), [floats(6, 4)]),
    ("batchnorm1d-untracked", lambda L: L.BatchNorm1d(4, track_running_stats=False),
     [floats(6, 4)]),
    ("batchnorm1d-cumulative", lambda L: L.BatchNorm1d(4, momentum=None), [floats(3, 4, 2)]),
    ("batchnorm2d", lambda L: L.BatchNorm2d(3, eps=1e-3), [floats(2, 3, 4, 4)]),
    ("embedding", lambda L: L.Embedding(10, 4), [ints(10, 3, 5)]),
    ("embedding-padding", lambda L: L.Embedding(6, 4, padding_idx=2), [ints(6, 4, 5)]),
    ("embedding-padding-neg", lambda L: L.Embedding(6, 4, padding_idx=-1), [ints(6, 4, 5)]),
    ("relu", lambda L: L.ReLU(), [floats(3, 4)]),
    ("relu6", lambda L: L.ReLU6(), [floats(3, 4)]),
    ("leakyrelu", lambda L: L.LeakyReLU(0.2), [floats(3, 4)]),
    ("sigmoid", lambda L: L.Sigmoid(), [floats(3, 4)]),
    ("tanh", lambda L: L.Tanh(), [floats(3, 4)]),
    ("elu", lambda L: L.ELU(0.5), [floats(3, 4)]),
    ("selu", lambda L: L.SELU(), [floats(3, 4)]),
    ("gelu", lambda L: L.GELU(), [floats(3, 4)]),
    ("gelu-tanh", lambda L: L.GELU("tanh"), [floats(3, 4)]),
    ("silu", lambda L: L.SiLU(), [floats(3, 4)]),
    ("softplus", lambda L: L.Softplus(2.0, 3.0), [floats(3, 4)]),
    ("hardtanh", lambda L: L.Hardtanh(-0.5, 0.7), [floats(3, 4)]),
    ("softmax", lambda L: L.Softmax(dim=1), [floats(3, 4, 2)]),
    ("logsoftmax", lambda L: L.LogSoftmax(dim=-1), [floats(3, 4)]),
    ("logsigmoid", lambda L: L.LogSigmoid(), [floats(3, 4)]),
    ("dropout-p0", lambda L: L.Dropout(0.0), [floats(3, 4)]),
    ("mlp", lambda L: L.Sequential(L.Linear(6, 8), L.Tanh(), L.Sequential(
        L.Linear(8, 8), L.LayerNorm(8), L.GELU()), L.Linear(8, 3)), [floats(5, 6)]),
    ("mlp-batchnorm", lambda L: L.Sequential(L.Linear(6, 8), L.BatchNorm1d(8), L.ReLU(),
                                             L.Linear(8, 3)), [floats(5, 6)]),
]


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name,build,inputs", LAYERS, ids=[row[0] for row in LAYERS])
def test_layer_matches_torch(name, build, inputs, train):
    t_module, e_module = paired(build(tnn), build(nn), train)
    assert_layer_matches(t_module, e_module, make_arrays(inputs))


def test_dropout_and_alpha_dropout_are_identity_in_eval():
    x = ember.randn(50, dtype=ember.float64, requires_grad=True)
    for layer in (nn.Dropout(0.4), nn.AlphaDropout(0.4)):
        out = layer.eval()(x)
        np.testing.assert_array_equal(out.array, x.array)


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("shape", [(8, 4), (4, 4, 3)])
def test_batchnorm_running_stats_over_several_steps(momentum, shape):
    t_bn, e_bn = paired(tnn.BatchNorm1d(4, momentum=momentum), nn.BatchNorm1d(4,
                                                                             momentum=momentum))
    for step in range(4):
        assert_layer_matches(t_bn, e_bn, make_arrays([floats(*shape)], seed=step))
    assert int(e_bn.num_batches_tracked.item()) == 4
    t_bn.eval()
    e_bn.eval()
    assert_layer_matches(t_bn, e_bn, make_arrays([floats(*shape)], seed=10))


def test_batchnorm_without_running_stats_uses_batch_stats_in_eval():
    t_bn, e_bn = paired(tnn.BatchNorm1d(3, track_running_stats=False),
                        nn.BatchNorm1d(3, track_running_stats=False), train=False)
    assert e_bn.running_mean is None and list(e_bn.state_dict()) == ["weight", "bias"]
    assert_layer_matches(t_bn, e_bn, make_arrays([floats(6, 3)]))


def test_batchnorm_needs_more_than_one_value_per_channel_in_training():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(ember.randn(1, 3))
    nn.BatchNorm1d(3).eval()(ember.randn(1, 3))  # eval is fine


def test_layers_keep_float32():
    for layer, x in [(nn.Linear(4, 3), ember.randn(2, 4)), (nn.LayerNorm(4), ember.randn(2, 4)),
                     (nn.BatchNorm1d(4), ember.randn(3, 4)), (nn.Embedding(5, 3),
                                                              ember.tensor([1, 2]))]:
        out = layer(x)
        out.sum().backward()
        assert out.dtype == ember.float32, type(layer).__name__
        assert all(p.grad.dtype == ember.float32 for p in layer.parameters())


# ---------------------------------------------------------------- dropout statistics
def test_dropout_train_mask_statistics_scale_and_gradient():
    ember.manual_seed(0)
    p, n = 0.3, 200_000
    x = ember.rand(n, dtype=ember.float64, requires_grad=True)
    out = nn.Dropout(p)(x + 0.5)  # values in [0.5, 1.5): a zero output means dropped
    kept = out.array != 0
    assert abs(1 - kept.mean() - p) < 4 * math.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(out.array[kept], (x.array[kept] + 0.5) / (1 - p), rtol=1e-15)
    out.sum().backward()
    np.testing.assert_allclose(x.grad.array, kept / (1 - p), rtol=1e-15)


def test_dropout_repeats_under_manual_seed_and_edges():
    x = ember.ones(100)
    ember.manual_seed(7)
    a = nn.Dropout(0.5)(x)
    ember.manual_seed(7)
    b = nn.Dropout(0.5)(x)
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_array_equal(nn.Dropout(1.0)(x).array, np.zeros(100))
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            nn.Dropout(bad)


def test_alpha_dropout_keeps_zero_mean_unit_variance():
    ember.manual_seed(1)
    x = ember.randn(400_000, dtype=ember.float64)
    out = nn.AlphaDropout(0.2)(x).array
    assert abs(out.mean()) < 0.01 and abs(out.std() - 1) < 0.01
    dropped = np.unique(out[np.isclose(out, out.min())])
    assert dropped.size == 1  # all dropped elements share one saturated value


# ---------------------------------------------------------------- embedding specifics
def test_embedding_padding_row_is_zero_and_gets_no_gradient():
    emb = nn.Embedding(5, 3, padding_idx=1)
    np.testing.assert_array_equal(emb.weight.array[1], np.zeros(3))
    out = emb(ember.tensor([[1, 2, 2], [1, 4, 2]]))
    out.sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.array[:, 0], [0, 0, 3, 0, 1])


def test_embedding_from_pretrained_and_bad_indices():
    table = ember.tensor(np.arange(12.0).reshape(4, 3))
    emb = nn.Embedding.from_pretrained(table)
    assert not emb.weight.requires_grad
    np.testing.assert_array_equal(emb(ember.tensor([3])).array, [[9.0, 10.0, 11.0]])
    with pytest.raises(IndexError, match="index 4 is out of range for an embedding of 4 rows"):
        emb(ember.tensor([0, 4]))
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(4, 2, padding_idx=4)


# ---------------------------------------------------------------- default initialisation
def _uniform_ok(array, bound):
    n = array.size
    assert np.abs(array).max() <= bound
    assert abs(array.mean()) < 4 * bound / math.sqrt(3 * n)
    assert abs(array.std() / (bound / math.sqrt(3)) - 1) < 0.02


def test_default_init_distributions_match_torch():
    ember.manual_seed(0)
    linear = nn.Linear(400, 300)
    _uniform_ok(linear.weight.array, 1 / math.sqrt(400))
    _uniform_ok(linear.bias.array, 1 / math.sqrt(400))
    bil = nn.Bilinear(50, 40, 30)
    _uniform_ok(bil.weight.array, 1 / math.sqrt(50))
    emb = nn.Embedding(500, 200).weight.array
    assert abs(emb.mean()) < 0.01 and abs(emb.std() - 1) < 0.01
    for norm in (nn.LayerNorm(6), nn.BatchNorm1d(6)):
        np.testing.assert_array_equal(norm.weight.array, np.ones(6))
        np.testing.assert_array_equal(norm.bias.array, np.zeros(6))
    bn = nn.BatchNorm1d(6)
    np.testing.assert_array_equal(bn.running_var.array, np.ones(6))
    assert bn.num_batches_tracked.dtype == ember.int64


def test_manual_seed_repeats_initialisation():
    ember.manual_seed(3)
    a = nn.Linear(5, 4)
    ember.manual_seed(3)
    b = nn.Linear(5, 4)
    np.testing.assert_array_equal(a.weight.array, b.weight.array)
    np.testing.assert_array_equal(a.bias.array, b.bias.array)
    assert a.weight.dtype == ember.float32
    assert nn.Linear(2, 2, dtype=ember.float64).weight.dtype == ember.float64


# ---------------------------------------------------------------- bad input
def test_linear_wrong_width_names_layer_and_widths():
    layer = nn.Linear(784, 100)
    with pytest.raises(ValueError) as err:
        layer(ember.zeros(2, 100))
    assert ("Linear(in_features=784, out_features=100, bias=True): expected input with last "
            "dimension 784, got 100") in str(err.value)


@pytest.mark.parametrize("layer,x,pattern", [
    (nn.BatchNorm1d(3), ember.zeros(4, 5), "expected input with 3 channels in dim 1, got 5"),
    (nn.BatchNorm1d(3), ember.zeros(4, 3, 2, 2), r"expected 2D or 3D input \(got 4D input\)"),
    (nn.LayerNorm(4), ember.zeros(2, 5), r"expected input with shape \[\*, 4\], got \(2, 5\)"),
    (nn.Unflatten(1, (2, 2)), ember.zeros(2, 5), "unflattened_size"),
    (nn.Linear(3, 4), ember.zeros(2, 5),
     r"Linear\(in_features=3.*expected input with last dimension 3, got 5"),
    (nn.Linear(3, 4), ember.zeros(()), "got a 0-d tensor"),
])
def test_bad_input_shapes_raise_value_errors(layer, x, pattern):
    with pytest.raises(ValueError, match=pattern):
        layer(x)


def test_bilinear_and_functional_linear_errors():
    with pytest.raises(ValueError, match="in2_features=4.*expected input with last dimension 4"):
        nn.Bilinear(3, 4, 2)(ember.zeros(2, 3), ember.zeros(2, 5))
    with pytest.raises(ValueError, match="expected input with last dimension 3"):
        ember.nn.functional.linear(ember.zeros(2, 4), ember.zeros(5, 3))
    with pytest.raises(TypeError, match="does not match weight dtype"):
        ember.nn.functional.linear(ember.zeros(2, 3, dtype=ember.float64), ember.zeros(5, 3))
