"""ember.onnx.load: ONNX models run as ember Modules, match onnxruntime and torch, and train."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.onnx import OnnxUnsupportedError
from tests import torch_twins

one_torch_thread = pytest.fixture(autouse=True)(torch_twins.one_thread)
RNG = np.random.default_rng(0)


def _one_node_model(op, inputs, attrs=None, opset=17, initializers=None, outputs=1):
    """A one-node model: ``inputs`` maps graph-input names to arrays, ``initializers``
    maps names to arrays (the node reads both, in the order given, "" for absent)."""
    initializers = initializers or {}
    order = list(inputs) + list(initializers)
    names = [n for n in order if not n.startswith("_absent")]
    node_inputs = ["" if n.startswith("_absent") else n for n in order]
    out_names = [f"out{i}" for i in range(outputs)]
    node = helper.make_node(op, node_inputs, out_names, **(attrs or {}))
    graph = helper.make_graph(
        [node], op,
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for n, a in inputs.items()],
        [helper.make_empty_tensor_value_info(n) for n in out_names],
        [numpy_helper.from_array(a, n) for n, a in initializers.items()
         if n in names])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)  # output types for ORT


def _compare_with_onnxruntime(model, inputs, rtol=1e-5, atol=1e-6):
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    expected = session.run(None, inputs)
    got = ember.onnx.load(model)(*[ember.from_numpy(a) for a in inputs.values()])
    got = got if isinstance(got, tuple) else (got,)
    for g, e in zip(got, expected):
        assert g.array.shape == e.shape and g.array.dtype == e.dtype
        np.testing.assert_allclose(g.array, e, rtol=rtol, atol=atol)


def _f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _i64(*values):
    return np.array(values, dtype=np.int64)


# ---------------------------------------------------------------- opset differences and attributes
CASES = {
    # Softmax before opset 13 flattens to 2-D at `axis`; from 13 on it is one axis
    "softmax_11_coerced": ("Softmax", {"x": _f32(2, 3, 4)}, {"axis": 1}, 11, {}),
    "log_softmax_11_default": ("LogSoftmax", {"x": _f32(2, 3, 4)}, {}, 11, {}),
    "softmax_13_axis": ("Softmax", {"x": _f32(2, 3, 4)}, {"axis": 1}, 13, {}),
    # axes: attribute before opset 13 (Squeeze, ReduceSum) or 18 (ReduceMean), input after
    "squeeze_11_attr": ("Squeeze", {"x": _f32(2, 1, 3, 1)}, {"axes": [1]}, 11, {}),
    "squeeze_13_input": ("Squeeze", {"x": _f32(2, 1, 3, 1)}, {}, 13, {"axes": _i64(-1)}),
    "squeeze_13_all": ("Squeeze", {"x": _f32(2, 1, 3, 1)}, {}, 13, {}),
    "unsqueeze_11_attr": ("Unsqueeze", {"x": _f32(2, 3)}, {"axes": [0, 3]}, 11, {}),
    "unsqueeze_13_input": ("Unsqueeze", {"x": _f32(2, 3)}, {}, 13, {"axes": _i64(-1, 1)}),
    "reduce_sum_11_attr": ("ReduceSum", {"x": _f32(2, 3, 4)}, {"axes": [1], "keepdims": 0}, 11,
                           {}),
    "reduce_sum_13_noop": ("ReduceSum", {"x": _f32(2, 3)}, {"noop_with_empty_axes": 1}, 13, {}),
    "reduce_sum_13_all": ("ReduceSum", {"x": _f32(2, 3)}, {"keepdims": 0}, 13, {}),
    "reduce_mean_13_attr": ("ReduceMean", {"x": _f32(2, 3, 4)}, {"axes": [-1]}, 13, {}),
    "reduce_mean_18_input": ("ReduceMean", {"x": _f32(2, 3, 4)}, {}, 18, {"axes": _i64(0, 2)}),
    # Clip: attributes before opset 11, optional inputs after
    "clip_6_attrs": ("Clip", {"x": _f32(3, 4)}, {"min": -0.5, "max": 0.3}, 6, {}),
    "clip_11_max_only": ("Clip", {"x": _f32(3, 4)}, {}, 11,
                         {"_absent_min": None, "hi": np.array(0.2, np.float32)}),
    # Reshape: 0 copies a dim unless allowzero
    "reshape_zero_copies": ("Reshape", {"x": _f32(2, 3, 4)}, {}, 14, {"s": _i64(0, -1)}),
    "reshape_allowzero": ("Reshape", {"x": np.zeros((0, 3), np.float32)}, {"allowzero": 1},
                          14, {"s": _i64(3, 0)}),
    "flatten_axis0": ("Flatten", {"x": _f32(2, 3, 4)}, {"axis": 0}, 13, {}),
    "flatten_negative": ("Flatten", {"x": _f32(2, 3, 4)}, {"axis": -1}, 13, {}),
    "gemm_all_attrs": ("Gemm", {"a": _f32(4, 3), "b": _f32(5, 4)},
                       {"alpha": 0.5, "beta": 2.0, "transA": 1, "transB": 1}, 13,
                       {"c": _f32(1, 5)}),
    "gather_negative": ("Gather", {"x": _f32(4, 5)}, {"axis": 1}, 13,
                        {"i": _i64(-1, 0, -5).reshape(3, 1)}),
    "gather_scalar": ("Gather", {"x": _f32(4, 5)}, {"axis": 0}, 13,
                      {"i": np.array(-2, np.int64)}),
    "transpose_default": ("Transpose", {"x": _f32(2, 3, 4)}, {}, 13, {}),
    "concat_negative": ("Concat", {"x": _f32(2, 3), "y": _f32(2, 2)}, {"axis": -1}, 13, {}),
    "pad_reflect": ("Pad", {"x": _f32(1, 2, 4, 5)}, {"mode": "reflect"}, 13,
                    {"p": _i64(0, 0, 2, 1, 0, 0, 1, 3)}),
    "pad_edge_negative": ("Pad", {"x": _f32(3, 5)}, {"mode": "edge"}, 13, {"p": _i64(2, -1, 0, 2)}),
    "pad_constant_value": ("Pad", {"x": _f32(3, 5)}, {}, 13,
                           {"p": _i64(1, 0, 0, 2), "v": np.array(1.5, np.float32)}),
    "dropout_10_inference": ("Dropout", {"x": _f32(3, 4)}, {"ratio": 0.3}, 10, {}),
    "leaky_relu": ("LeakyRelu", {"x": _f32(3, 4)}, {"alpha": 0.3}, 13, {}),
    "elu": ("Elu", {"x": _f32(3, 4)}, {"alpha": 0.4}, 13, {}),
    "batch_norm_9": ("BatchNormalization", {"x": _f32(2, 3, 4, 4)}, {"epsilon": 1e-3}, 9,
                     {"s": _f32(3), "b": _f32(3), "m": _f32(3),
                      "v": RNG.uniform(0.5, 2, 3).astype(np.float32)}),
    # convolutions: automatic and asymmetric padding, 1-D, groups, dilation
    "conv_same_upper": ("Conv", {"x": _f32(1, 2, 7, 8)}, {"auto_pad": "SAME_UPPER",
                                                         "strides": [2, 3]}, 13,
                        {"w": _f32(4, 2, 4, 3)}),
    "conv_same_lower": ("Conv", {"x": _f32(1, 2, 7, 8)}, {"auto_pad": "SAME_LOWER"}, 13,
                        {"w": _f32(4, 2, 4, 2)}),
    "conv_valid": ("Conv", {"x": _f32(1, 2, 7, 8)}, {"auto_pad": "VALID", "strides": [2, 2]},
                   13, {"w": _f32(4, 2, 3, 3), "b": _f32(4)}),
    "conv_asymmetric": ("Conv", {"x": _f32(2, 4, 6, 6)}, {"pads": [0, 2, 1, 1], "group": 2,
                                                          "dilations": [2, 1]}, 13,
                        {"w": _f32(6, 2, 2, 3), "b": _f32(6)}),
    "conv_1d": ("Conv", {"x": _f32(2, 3, 9)}, {"pads": [2, 1], "strides": [2]}, 13,
                {"w": _f32(4, 3, 3)}),
    "conv_transpose_output_shape": ("ConvTranspose", {"x": _f32(1, 2, 3, 4)},
                                    {"strides": [2, 3], "output_shape": [8, 12]}, 13,
                                    {"w": _f32(2, 3, 3, 3), "b": _f32(3)}),
    "conv_transpose_pads": ("ConvTranspose", {"x": _f32(1, 4, 3, 4)},
                            {"strides": [2, 2], "pads": [1, 0, 0, 2], "group": 2,
                             "output_padding": [1, 1]}, 13, {"w": _f32(4, 1, 3, 3)}),
    "conv_transpose_1d": ("ConvTranspose", {"x": _f32(1, 2, 5)}, {"strides": [3],
                                                                  "dilations": [2]}, 13,
                          {"w": _f32(2, 3, 3)}),
    # pooling: ceil mode, dilation, asymmetric pads, argmax indices, 1-D and 3-D
    "max_pool_ceil_dilated": ("MaxPool", {"x": _f32(1, 2, 9, 8)},
                              {"kernel_shape": [3, 2], "strides": [2, 2], "dilations": [2, 1],
                               "ceil_mode": 1, "pads": [1, 0, 1, 1]}, 13, {}),
    "max_pool_indices": ("MaxPool", {"x": _f32(2, 2, 6, 5)},
                         {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1]},
                         13, {}, 2),
    "max_pool_indices_column_major": ("MaxPool", {"x": _f32(2, 2, 6, 5)},
                                      {"kernel_shape": [3, 3], "storage_order": 1}, 13, {}, 2),
    "max_pool_same_lower": ("MaxPool", {"x": _f32(1, 1, 7, 6)},
                            {"kernel_shape": [3, 3], "strides": [2, 2],
                             "auto_pad": "SAME_LOWER"}, 13, {}),
    "max_pool_1d": ("MaxPool", {"x": _f32(2, 3, 9)}, {"kernel_shape": [3], "strides": [2]},
                    13, {}),
    "max_pool_3d": ("MaxPool", {"x": _f32(1, 2, 5, 4, 6)}, {"kernel_shape": [2, 2, 3],
                                                          "pads": [1, 0, 1, 0, 1, 1]}, 13, {}),
    "avg_pool_exclude_pad_ceil": ("AveragePool", {"x": _f32(1, 2, 7, 8)},
                                  {"kernel_shape": [3, 3], "strides": [2, 2],
                                   "pads": [1, 1, 1, 1], "ceil_mode": 1}, 13, {}),
    "avg_pool_include_pad": ("AveragePool", {"x": _f32(1, 2, 7, 8)},
                             {"kernel_shape": [3, 2], "pads": [1, 0, 2, 1],
                              "count_include_pad": 1}, 13, {}),
    "avg_pool_3d": ("AveragePool", {"x": _f32(1, 2, 5, 4, 6)},
                    {"kernel_shape": [2, 2, 3], "strides": [1, 2, 2]}, 13, {}),
    "global_average_pool": ("GlobalAveragePool", {"x": _f32(2, 3, 4, 5)}, {}, 13, {}),
    "resize_nearest_scales": ("Resize", {"x": _f32(1, 2, 3, 4)},
                              {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                               "nearest_mode": "floor"}, 13,
                              {"_absent_roi": None, "s": np.array([1, 1, 2, 1.5], np.float32)}),
    "resize_linear_sizes": ("Resize", {"x": _f32(1, 2, 3, 4)},
                            {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
                            13, {"_absent_roi": None, "_absent_scales": None,
                                 "z": _i64(1, 2, 5, 7)}),
    "resize_linear_half_pixel": ("Resize", {"x": _f32(1, 2, 4, 6)}, {"mode": "linear"}, 13,
                                 {"_absent_roi": None,
                                  "s": np.array([1, 1, 0.5, 1.5], np.float32)}),
    "depth_to_space_dcr": ("DepthToSpace", {"x": _f32(2, 8, 2, 3)}, {"blocksize": 2}, 13, {}),
    "depth_to_space_crd": ("DepthToSpace", {"x": _f32(2, 8, 2, 3)},
                           {"blocksize": 2, "mode": "CRD"}, 13, {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_node_matches_onnxruntime(name):
    op, inputs, attrs, opset, inits, *outputs = CASES[name]
    inits = {k: v for k, v in inits.items()}
    model = _one_node_model(op, inputs, attrs, opset, inits, outputs[0] if outputs else 1)
    _compare_with_onnxruntime(model, inputs)


def test_batch_norm_training_mode_outputs_batch_statistics():
    x = _f32(4, 3, 2, 2)
    scale, bias, mean = _f32(3), _f32(3), _f32(3)
    var = RNG.uniform(0.5, 2, 3).astype(np.float32)
    model = _one_node_model("BatchNormalization", {"x": x}, {"training_mode": 1,
                                                            "momentum": 0.8}, 15,
                            {"s": scale, "b": bias, "m": mean, "v": var}, outputs=3)
    y, running_mean, running_var = ember.onnx.load(model)(ember.from_numpy(x))
    batch = torch.from_numpy(x)
    expected = torch.nn.functional.batch_norm(batch, None, None, torch.from_numpy(scale),
                                              torch.from_numpy(bias), training=True, eps=1e-5)
    np.testing.assert_allclose(y.array, expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(running_mean.array, mean * 0.8 + x.mean((0, 2, 3)) * 0.2,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(running_var.array, var * 0.8 + x.var((0, 2, 3)) * 0.2,
                               rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- gradients through imported ops
def _double_graph():
    """Conv (asymmetric pads) -> MaxPool (generic path) -> AveragePool (excluded pads, ceil)
    -> Resize linear -> LayerNormalization -> Mod -> Gemm, in float64."""
    def init(name, *shape):
        return numpy_helper.from_array(RNG.standard_normal(shape), name)

    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 0, 0, 1]),
        helper.make_node("MaxPool", ["c"], ["m"], kernel_shape=[2, 2], dilations=[1, 2],
                         pads=[0, 1, 1, 0]),
        helper.make_node("AveragePool", ["m"], ["a"], kernel_shape=[2, 2], strides=[2, 1],
                         pads=[1, 1, 1, 1], ceil_mode=1),
        helper.make_node("Resize", ["a", "", "s"], ["r"], mode="linear"),
        helper.make_node("LayerNormalization", ["r", "g", "h"], ["n"], axis=-2),
        helper.make_node("Mod", ["n", "d"], ["o"], fmod=1),
        helper.make_node("Flatten", ["o"], ["f"]),
        helper.make_node("Gemm", ["f", "k"], ["y"], transB=1, alpha=0.5),
    ]
    inits = [init("w", 2, 1, 2, 2), init("b", 2),
             numpy_helper.from_array(np.array([1, 1, 1, 1.5]), "s"), init("g", 3, 4),
             init("h", 3, 4), numpy_helper.from_array(np.array(1.7), "d"), init("k", 3, 24)]
    graph = helper.make_graph(nodes, "grad", [helper.make_tensor_value_info(
        "x", TensorProto.DOUBLE, [2, 1, 4, 3])], [helper.make_tensor_value_info(
            "y", TensorProto.DOUBLE, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_gradients_through_imported_ops_pass_gradcheck():
    net = ember.onnx.load(_double_graph())
    params = list(net.parameters())
    assert {n for n, _ in net.named_parameters()} == {"w", "b", "g", "h", "d", "k"}
    assert "s" in dict(net.named_buffers())  # Resize's scales are settings, not weights
    x = ember.tensor(RNG.standard_normal((2, 1, 4, 3)), dtype=ember.float64, requires_grad=True)
    assert ember.autograd.gradcheck(lambda x, *ps: net(x), [x, *params])


# ---------------------------------------------------------------- models: round trip and training
def test_exported_model_imports_with_state_names_and_trains_like_its_twin():
    ember.manual_seed(0)
    native = ember.models.build("lenet5")
    net = ember.onnx.load(ember.onnx.export(native, ember.randn(4, 1, 28, 28), None))
    assert [n for n, _ in net.named_parameters()] == [n for n, _ in native.named_parameters()]
    x, y = ember.randn(6, 1, 28, 28), ember.randint(0, 10, (6,))
    losses = []
    for model in (native, net):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.item())
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)
    twin = dict(native.named_parameters())
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.grad.array, twin[name].grad.array, rtol=1e-5, atol=1e-6)
    ember.optim.SGD(net.parameters(), lr=0.05).step()
    with ember.no_grad():
        assert F.cross_entropy(net(x), y).item() < losses[1]
    fresh = ember.models.build("lenet5")
    fresh.load_state_dict(net.state_dict())  # the keys are the native model's
    with ember.no_grad():
        np.testing.assert_allclose(fresh(x).array, net(x).array, rtol=1e-6, atol=1e-6)


def test_imported_batch_norm_statistics_are_buffers_not_parameters():
    ember.manual_seed(0)
    model = ember.models.build("cifar_cnn", width=4)
    net = ember.onnx.load(ember.onnx.export(model, ember.randn(2, 3, 32, 32), None))
    buffers, params = dict(net.named_buffers()), dict(net.named_parameters())
    assert "1.running_mean" in buffers and "1.running_var" in buffers
    assert "1.weight" in params and "0.weight" in params and "1.running_mean" not in params
    x = ember.randn(3, 3, 32, 32)
    with ember.no_grad():
        np.testing.assert_allclose(net(x).array, model.eval()(x).array, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- models from torch's exporter
class _TorchLeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.Conv2d(6, 16, 5)
        self.bn = torch.nn.BatchNorm2d(16)
        self.fc1, self.fc2 = torch.nn.Linear(400, 84), torch.nn.Linear(84, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv2(x))), 2)
        x = x.view(x.size(0), -1)  # exports as Shape -> Gather -> Unsqueeze -> Concat -> Reshape
        return torch.log_softmax(self.fc2(torch.nn.functional.gelu(self.fc1(x))), dim=1)


def test_model_exported_by_torch_runs_at_any_batch_size(tmp_path):
    torch.manual_seed(0)
    model = _TorchLeNet().eval()
    path = tmp_path / "torch.onnx"
    with pytest.warns(Warning):  # torch's legacy exporter says it is deprecated
        torch.onnx.export(model, (torch.randn(2, 1, 28, 28),), str(path), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}},
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {"Shape", "Gather", "Reshape", "BatchNormalization"} <= ops
    net = ember.onnx.load(path)
    for batch in (3, 5):
        x = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            expected = model(x).numpy()
        np.testing.assert_allclose(net(ember.from_numpy(x.numpy())).array, expected,
                                   rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- refusals
def test_every_unsupported_op_and_setting_is_named_in_one_error():
    nodes = [helper.make_node("NonMaxSuppression", ["b", "s"], ["i"]),
             helper.make_node("Unique", ["x"], ["u"]),
             helper.make_node("NonMaxSuppression", ["b", "s"], ["j"]),
             helper.make_node("Resize", ["x", "", "sc"], ["r"], mode="cubic"),
             helper.make_node("Relu", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info(
        n, TensorProto.FLOAT, None) for n in ("x", "b", "s", "sc")], [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.raises(OnnxUnsupportedError) as err:
        ember.onnx.load(helper.make_model(graph))
    message = str(err.value)
    assert "NonMaxSuppression (2)" in message and "Unique (1)" in message
    assert "mode='cubic'" in message and "Relu" not in message


def test_load_from_path_and_wrong_input_count(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh())
    ember.onnx.export(model, ember.randn(2, 3), tmp_path / "m.onnx")
    net = ember.onnx.load(tmp_path / "m.onnx")
    assert net(ember.randn(4, 3)).shape == (4, 2)
    with pytest.raises(TypeError, match="takes 1 inputs"):
        net(ember.randn(4, 3), ember.randn(4, 3))
    assert "Gemm" in ember.onnx.supported_ops()
