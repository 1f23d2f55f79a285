"""ember: a readable deep-learning library on NumPy, with PyTorch's API.

>>> import ember
>>> x = ember.tensor([2.0, 3.0], requires_grad=True)
>>> y = (x ** 2).sum()
>>> y.backward()
>>> x.grad
tensor([4., 6.])
"""

from ember import autograd, ops  # noqa: F401  (importing ops registers them)
from ember.autograd import (FUNCTIONS, AnomalyError, enable_grad, is_grad_enabled, no_grad,
                            set_grad_enabled)
from ember.dtypes import (bool_, double, float16, float32, float64, int8, int16, int32, int64,
                          long, uint8)
from ember.random import get_rng_state, manual_seed, set_rng_state
from ember.tensor import (Tensor, arange, as_tensor, empty, empty_like, eye, from_numpy, full,
                          full_like, linspace, ones, ones_like, rand, rand_like, randint, randn,
                          randn_like, tensor, zeros, zeros_like)

bool = bool_  # noqa: A001  (ember.bool, like torch.bool)
float = float32  # noqa: A001
int = int32  # noqa: A001
globals().update(FUNCTIONS)  # ember.exp, ember.cat, ember.where, ... : one per registered op

# The package facade also loads the layers above the core (the core never imports them).
from ember import data, nn, optim  # noqa: E402, F401
from ember import models, train  # noqa: E402, F401
from ember.serialize import CheckpointError, load, save  # noqa: E402
from ember.summary import summary  # noqa: E402
from ember.torch_compat import load_torch_state_dict  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Tensor", "tensor", "as_tensor", "from_numpy", "zeros", "ones", "full", "empty",
           "arange", "linspace", "eye", "rand", "randn", "randint", "zeros_like", "ones_like",
           "full_like", "empty_like", "rand_like", "randn_like", "no_grad", "enable_grad",
           "set_grad_enabled", "is_grad_enabled", "manual_seed", "get_rng_state",
           "set_rng_state", "float32", "float64", "float16", "int64", "int32", "int16", "int8",
           "uint8", "bool", "long", "double", "save", "load", "CheckpointError", "AnomalyError",
           "summary", "load_torch_state_dict", *sorted(FUNCTIONS)]
