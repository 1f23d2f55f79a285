"""ember.onnx.export: traced graphs pass ONNX's checker and onnxruntime reproduces ember."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.onnx import OnnxExportError

TOL = dict(rtol=1e-5, atol=1e-5)


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _ember_out(model, x):
    with ember.no_grad():
        return model(ember.tensor(x)).array


def _export_and_compare(model, shape, tmp_path, batches=(None,), **kwargs):
    """Export at ``shape``, check the file, compare onnxruntime with ember at each batch
    size (None: the traced one). Returns the ModelProto."""
    ember.manual_seed(0)
    path, mode = tmp_path / "model.onnx", model.training
    proto = ember.onnx.export(model, ember.randn(*shape), path, **kwargs)
    assert model.training == mode  # export restores the mode it found
    onnx.checker.check_model(onnx.load(path), full_check=True)
    session, rng = _session(path), np.random.default_rng(1)
    model.eval()
    for batch in batches:
        x = rng.standard_normal(((batch or shape[0]),) + tuple(shape[1:])).astype(np.float32)
        (got,) = session.run(None, {"input": x})
        np.testing.assert_allclose(got, _ember_out(model, x), **TOL)
    return proto


def _randomise_batch_norm(model):
    """Non-trivial running statistics (a few training steps) and affine parameters."""
    rng = np.random.default_rng(2)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.weight.array[...] = rng.uniform(0.5, 1.5, m.weight.shape)
            m.bias.array[...] = rng.standard_normal(m.bias.shape)
    return model


# ---------------------------------------------------------------- the seed models
SEED_MODELS = {"mlp_sigmoid": (1, 28, 28), "mlp_relu": (784,), "mlp_adam": (784,),
               "mlp_tanh": (784,), "lenet5": (1, 28, 28)}


@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_seed_model_runs_in_onnxruntime_at_any_batch_size(name, tmp_path):
    ember.manual_seed(0)
    model = ember.models.build(name)
    _export_and_compare(model, (4, *SEED_MODELS[name]), tmp_path, batches=(None, 1, 7))


def test_cifar_cnn_with_running_statistics_exports_batch_norm_nodes(tmp_path):
    ember.manual_seed(0)
    model = _randomise_batch_norm(ember.models.build("cifar_cnn"))
    model.train()
    with ember.no_grad():
        for _ in range(3):  # move the running statistics away from 0 and 1
            model(ember.randn(4, 3, 32, 32) * 2 + 0.5)
    stats = model[1].running_var.array.copy()
    assert not np.allclose(stats, 1.0)
    proto = _export_and_compare(model, (2, 3, 32, 32), tmp_path, batches=(None, 3))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("BatchNormalization") == 6 and ops.count("Conv") == 6
    assert "GlobalAveragePool" in ops and "Flatten" in ops
    init = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    np.testing.assert_array_equal(init["1.running_var"], stats)  # the buffers, by name


# ---------------------------------------------------------------- one model per layer
LAYERS = {
    "linear": (lambda: nn.Linear(6, 3), (4, 6)),
    "linear_3d_input": (lambda: nn.Linear(6, 3), (4, 5, 6)),
    "linear_no_bias": (lambda: nn.Linear(6, 3, bias=False), (4, 6)),
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1, dilation=2), (2, 3, 13)),
    "conv2d": (lambda: nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0)), (2, 3, 9, 8)),
    "conv2d_groups_same": (lambda: nn.Conv2d(4, 6, 4, padding="same", groups=2), (2, 4, 7, 7)),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1,
                                                    output_padding=1), (2, 3, 5, 4)),
    "conv_transpose2d_groups": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2,
                                                           dilation=2), (2, 4, 4, 4)),
    "max_pool2d": (lambda: nn.MaxPool2d(2), (2, 3, 8, 8)),
    "max_pool2d_ceil_pad": (lambda: nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
                            (2, 3, 8, 9)),
    "avg_pool2d": (lambda: nn.AvgPool2d(2), (2, 3, 8, 8)),
    "avg_pool2d_exclude_pad": (lambda: nn.AvgPool2d(3, 2, padding=1, ceil_mode=True,
                                                    count_include_pad=False), (2, 3, 8, 9)),
    "adaptive_avg_pool2d_1": (lambda: nn.AdaptiveAvgPool2d(1), (2, 3, 5, 7)),
    "adaptive_avg_pool2d_2": (lambda: nn.AdaptiveAvgPool2d(2), (2, 3, 6, 4)),
    "adaptive_max_pool2d_1": (lambda: nn.AdaptiveMaxPool2d(1), (2, 3, 5, 7)),
    "batch_norm1d": (lambda: _randomise_batch_norm(nn.BatchNorm1d(5)), (4, 5)),
    "batch_norm1d_3d": (lambda: _randomise_batch_norm(nn.BatchNorm1d(5)), (4, 5, 3)),
    "batch_norm2d": (lambda: _randomise_batch_norm(nn.BatchNorm2d(3)), (2, 3, 4, 4)),
    "layer_norm": (lambda: nn.LayerNorm((4, 6)), (3, 4, 6)),
    "layer_norm_no_affine": (lambda: nn.LayerNorm(6, elementwise_affine=False), (3, 6)),
    "group_norm": (lambda: nn.GroupNorm(2, 4), (3, 4, 5, 5)),
    "dropout": (lambda: nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)), (3, 4)),
    "dropout2d": (lambda: nn.Sequential(nn.Conv2d(2, 2, 1), nn.Dropout2d(0.5)), (3, 2, 3, 3)),
    "flatten": (lambda: nn.Flatten(), (2, 3, 4, 5)),
    "flatten_middle": (lambda: nn.Flatten(1, 2), (2, 3, 4, 5)),
    "unflatten": (lambda: nn.Unflatten(1, (3, 4)), (2, 12)),
    "identity": (lambda: nn.Sequential(nn.Identity(), nn.Linear(3, 2)), (2, 3)),
    "relu": (nn.ReLU, (3, 7)), "relu6": (nn.ReLU6, (3, 7)), "sigmoid": (nn.Sigmoid, (3, 7)),
    "tanh": (nn.Tanh, (3, 7)), "elu": (lambda: nn.ELU(0.7), (3, 7)), "selu": (nn.SELU, (3, 7)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.2), (3, 7)), "silu": (nn.SiLU, (3, 7)),
    "gelu": (nn.GELU, (3, 7)), "gelu_tanh": (lambda: nn.GELU("tanh"), (3, 7)),
    "softplus": (lambda: nn.Softplus(2.0, 1.5), (3, 7)),
    "hardtanh": (lambda: nn.Hardtanh(-0.5, 0.8), (3, 7)), "log_sigmoid": (nn.LogSigmoid, (3, 7)),
    "softmax": (lambda: nn.Softmax(dim=1), (3, 7, 2)),
    "log_softmax": (lambda: nn.LogSoftmax(dim=-1), (3, 7)),
    "upsample_nearest": (lambda: nn.Upsample(scale_factor=2), (2, 3, 4, 5)),
    "upsample_nearest_size": (lambda: nn.Upsample(size=(8, 15)), (2, 3, 4, 5)),
    "upsample_bilinear": (lambda: nn.Upsample(scale_factor=2, mode="bilinear"), (2, 3, 4, 5)),
    "upsample_bilinear_corners": (lambda: nn.Upsample(scale_factor=2, mode="bilinear",
                                                      align_corners=True), (2, 3, 4, 5)),
    "pixel_shuffle": (lambda: nn.PixelShuffle(2), (2, 8, 3, 3)),
    "pixel_unshuffle": (lambda: nn.PixelUnshuffle(2), (2, 2, 4, 6)),
    "tensor_ops": (lambda: _Ops(), (3, 4, 5)),
}


class _Ops(nn.Module):
    """Tensor ops a model may use between layers: indexing, cat, pad, reductions, ..."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(ember.randn(7))

    def forward(self, x):  # x: (N, 4, 5)
        y = ember.cat([x[:, 1:3, ::2], x[:, :2, -3:].flip(1)], 2) * self.scale[1:]
        y = F.pad(y, (1, 2)).clamp(-1.0, 2.0) + x[:, None, 0, 1:3][..., :1]
        z = (x.exp().sum(-1, keepdim=True).log() - x.logsumexp(-1, keepdim=True)) * 3
        w = x.amax(1) - x.amin(1) + x.prod(1) * 0.1 + x.cumsum(2)[:, 0] + x.abs().sqrt()[:, 1]
        w = w + x.permute(0, 2, 1)[:, :, 0] + x.roll(1, 2)[:, 0] + (x * self.scale[:5]).tril()[:, 1]
        v = (x.tanh() ** 2).mean((1, 2)) / (1 + x.sigmoid().sum((1, 2)))
        return y.sum((1, 2)) + z.sum((1, 2)) + w.sum(1) + v


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_exports_and_matches_onnxruntime(name, tmp_path):
    ember.manual_seed(0)
    make, shape = LAYERS[name]
    _export_and_compare(make(), shape, tmp_path, batches=(None, 5))


@pytest.mark.parametrize("opset", [13, 17, 20])
def test_other_opsets(opset, tmp_path):
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.GELU(), nn.LayerNorm(6),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 3), nn.LogSoftmax(dim=1))
    ember.manual_seed(0)
    if opset < 17:  # LayerNormalization is opset 17: refused clearly before
        with pytest.raises(OnnxExportError, match="LayerNormalization: .*opset 17"):
            ember.onnx.export(model, ember.randn(2, 2, 6, 6), tmp_path / "m.onnx",
                              opset_version=opset)
        model = nn.Sequential(*[m for m in model if not isinstance(m, nn.LayerNorm)])
    proto = _export_and_compare(model, (2, 2, 6, 6), tmp_path, batches=(None, 3),
                                opset_version=opset)
    assert proto.opset_import[0].version == opset
    assert ("Gelu" in [n.op_type for n in proto.graph.node]) == (opset >= 20)


# ---------------------------------------------------------------- batch dimension and names
def test_dynamic_batch_is_symbolic_and_static_batch_is_fixed(tmp_path):
    model = ember.models.build("lenet5")
    dynamic = ember.onnx.export(model, ember.randn(3, 1, 28, 28), None)
    static = ember.onnx.export(model, ember.randn(3, 1, 28, 28), tmp_path / "s.onnx",
                               dynamic_batch=False, input_names=["image"],
                               output_names=["logits"])
    dim = dynamic.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "batch"
    assert dynamic.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert static.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3
    assert [i.name for i in static.graph.input] == ["image"]
    assert [o.name for o in static.graph.output] == ["logits"]
    (out,) = _session(tmp_path / "s.onnx").run(None, {"image": np.zeros((3, 1, 28, 28),
                                                                        np.float32)})
    assert out.shape == (3, 10)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        _session(tmp_path / "s.onnx").run(None, {"image": np.zeros((4, 1, 28, 28), np.float32)})


def test_parameters_become_initializers_named_as_in_state_dict():
    model = ember.models.build("lenet5")
    proto = ember.onnx.export(model, ember.randn(2, 1, 28, 28), None)
    names = [t.name for t in proto.graph.initializer]
    assert names[:len(list(model.parameters()))] == [n for n, _ in model.named_parameters()]
    init = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    np.testing.assert_array_equal(init["9.weight"], model[9].weight.array)


def test_two_inputs_and_two_outputs(tmp_path):
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Linear(4, 2)

        def forward(self, x, y):
            h = self.a(x) + self.b(y)
            return h.relu(), h.sigmoid()

    model = Two()
    x, y = ember.randn(2, 3), ember.randn(2, 4)
    ember.onnx.export(model, (x, y), tmp_path / "two.onnx", input_names=["x", "y"],
                      output_names=["r", "s"])
    rx, ry = np.ones((5, 3), np.float32), np.full((5, 4), -0.5, np.float32)
    got = _session(tmp_path / "two.onnx").run(None, {"x": rx, "y": ry})
    with ember.no_grad():
        want = model(ember.tensor(rx), ember.tensor(ry))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.array, **TOL)


# ---------------------------------------------------------------- what cannot be exported
class _NoForm(nn.Module):
    def forward(self, x):
        out, idx = F.max_pool2d(x, 2, return_indices=True)
        restored = F.max_unpool2d(out, idx, 2) + F.max_unpool2d(out * 2, idx, 2)
        target = ember.zeros(x.shape[0], dtype=ember.int64)
        return F.cross_entropy(restored.flatten(1), target)


def test_ops_without_a_form_are_all_named_in_one_error():
    with pytest.raises(OnnxExportError) as err:
        ember.onnx.export(_NoForm(), ember.randn(2, 1, 4, 4), None)
    message = str(err.value)
    assert "CrossEntropy (1)" in message and "MaxUnpool2d (2)" in message


class _DataDependent(nn.Module):
    """The mask comes from a comparison, which records no graph: tracing bakes it in."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) * (x > 0)


def test_a_graph_that_does_not_reproduce_the_model_is_refused():
    with pytest.raises(OnnxExportError, match="does not reproduce the model"):
        ember.onnx.export(_DataDependent(), ember.randn(3, 4), None)


def test_bad_arguments_are_refused_clearly():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="opset_version must be in"):
        ember.onnx.export(model, ember.randn(1, 2), None, opset_version=9)
    with pytest.raises(TypeError, match="example_input must be a Tensor"):
        ember.onnx.export(model, np.zeros((1, 2)), None)
    with pytest.raises(ValueError, match="expected 1 distinct input names"):
        ember.onnx.export(model, ember.randn(1, 2), None, input_names=["a", "b"])


def test_integer_input_embedding_model(tmp_path):
    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc = nn.Embedding(10, 4), nn.Linear(4, 3)

        def forward(self, idx):
            return self.fc(self.emb(idx).mean(1))

    model = Bag()
    ember.onnx.export(model, ember.tensor([[1, 2, 3], [4, 5, 9]]), tmp_path / "bag.onnx")
    idx = np.array([[0, 9, 9], [3, 3, 1], [7, 8, 2], [5, 5, 5]], np.int64)
    (got,) = _session(tmp_path / "bag.onnx").run(None, {"input": idx})
    with ember.no_grad():
        np.testing.assert_allclose(got, model(ember.tensor(idx)).array, **TOL)


@pytest.mark.parametrize("opset", [14, 18, 21])
def test_tensor_ops_at_opsets_where_axes_move_to_inputs(opset, tmp_path):
    ember.manual_seed(0)
    proto = _export_and_compare(_Ops(), (3, 4, 5), tmp_path, batches=(None, 2),
                                opset_version=opset)
    reduce_max = next(n for n in proto.graph.node if n.op_type == "ReduceMax")
    assert (len(reduce_max.input) == 2) == (opset >= 18)  # axes: attribute, then input


def test_reshape_that_folds_the_batch_into_another_dim_follows_it(tmp_path):
    model = nn.Bilinear(3, 4, 2)  # reshapes (N, 3) to (1, N, 3): -1 where the batch went
    ember.onnx.export(model, (ember.randn(3, 3), ember.randn(3, 4)), tmp_path / "b.onnx",
                      input_names=["x", "y"])
    x = np.ones((6, 3), np.float32)
    y = np.linspace(-1, 1, 24, dtype=np.float32).reshape(6, 4)
    (got,) = _session(tmp_path / "b.onnx").run(None, {"x": x, "y": y})
    with ember.no_grad():
        np.testing.assert_allclose(got, model(ember.tensor(x), ember.tensor(y)).array, **TOL)
