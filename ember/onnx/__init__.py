"""ONNX interoperability: ``export`` a traced ember model, ``load`` an ONNX model as a
trainable ember Module. Needs the ``onnx`` package (``pip install ember[onnx]``).

>>> model = ember.nn.Sequential(ember.nn.Linear(4, 2), ember.nn.Tanh())
>>> _ = ember.onnx.export(model, ember.randn(3, 4), "/tmp/net.onnx")
>>> net = ember.onnx.load("/tmp/net.onnx")
>>> net(ember.randn(8, 4)).shape
(8, 2)
"""

from ember.onnx.builder import GraphBuilder, OnnxExportError
from ember.onnx.export import export
from ember.onnx.load import OnnxModule, load, supported_ops
from ember.onnx.registry import OnnxImportError, OnnxUnsupportedError

__all__ = ["export", "load", "OnnxModule", "GraphBuilder", "OnnxExportError", "OnnxImportError",
           "OnnxUnsupportedError", "supported_ops"]
