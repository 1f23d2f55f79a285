"""Neural-network building blocks, as ``torch.nn``.

>>> import ember.nn as nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> model(ember.zeros(3, 4)).shape
(3, 2)
"""

from ember.ops import nn as _nn_ops  # noqa: F401  (registers linear, cross_entropy, ... first)
from ember.nn import functional  # noqa: F401  (after the ops above, so F has them)
from ember.nn import init, utils  # noqa: F401
from ember.nn.activation import (ELU, GELU, SELU, Hardtanh, LeakyReLU, LogSigmoid, LogSoftmax,
                                 ReLU, ReLU6, Sigmoid, SiLU, Softmax, Softplus, Tanh)
from ember.nn.container import ModuleDict, ModuleList, Sequential
from ember.nn.conv import Conv1d, Conv2d, ConvTranspose2d
from ember.nn.dropout import AlphaDropout, Dropout, Dropout2d
from ember.nn.linear import Bilinear, Flatten, Identity, Linear, Unflatten
from ember.nn.loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, KLDivLoss,
                           L1Loss, MSELoss, NLLLoss, SmoothL1Loss)
from ember.nn.module import Module
from ember.nn.normalization import (BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm2d,
                                    LayerNorm)
from ember.nn.parameter import Parameter
from ember.nn.pooling import (AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d,
                              MaxUnpool2d)
from ember.nn.sparse import Embedding
from ember.nn.upsampling import PixelShuffle, PixelUnshuffle, Upsample

__all__ = ["Module", "Parameter", "Sequential", "ModuleList", "ModuleDict", "Identity", "Linear",
           "Bilinear", "Flatten", "Unflatten", "Dropout", "AlphaDropout", "Embedding",
           "LayerNorm", "BatchNorm1d", "BatchNorm2d", "ReLU", "ReLU6", "LeakyReLU", "Sigmoid",
           "Tanh", "ELU", "SELU", "GELU", "SiLU", "Softplus", "Hardtanh", "Softmax",
           "LogSoftmax", "LogSigmoid", "L1Loss", "MSELoss", "HuberLoss", "SmoothL1Loss",
           "NLLLoss", "CrossEntropyLoss", "BCELoss", "BCEWithLogitsLoss", "KLDivLoss",
           "Conv1d", "Conv2d", "ConvTranspose2d", "Dropout2d", "GroupNorm", "InstanceNorm2d",
           "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "MaxUnpool2d",
           "Upsample", "PixelShuffle", "PixelUnshuffle", "functional", "init", "utils"]
