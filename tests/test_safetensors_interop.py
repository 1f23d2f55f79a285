"""ember.save / ember.load and safetensors.torch: whole models cross over both ways.

(tests/test_serialize.py covers the format itself with one Linear layer; here the
registered LeNet-5 and CIFAR CNN go to and from their torch twins.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import ember
from tests import torch_twins

one_torch_thread = pytest.fixture(autouse=True)(torch_twins.one_thread)

MODELS = {"lenet5": ((1, 28, 28), {}), "cifar_cnn": ((3, 32, 32), {"width": 8})}


def _randomised_ember(name: str) -> ember.nn.Module:
    """An ember model with trained-looking weights and BatchNorm statistics."""
    ember.manual_seed(0)
    model = ember.models.build(name, **MODELS[name][1])
    rng = np.random.default_rng(0)
    for _, buffer in model.named_buffers():
        if buffer is not None and buffer.dtype.kind == "f":
            buffer.array[...] = rng.uniform(0.5, 1.5, buffer.shape)
    return model.eval()


def _outputs_match(ember_model, torch_model, shape):
    x = np.random.default_rng(1).standard_normal((3, *shape)).astype(np.float32)
    with torch.no_grad(), ember.no_grad():
        np.testing.assert_allclose(ember_model(ember.tensor(x)).array,
                                   torch_model(torch.from_numpy(x)).numpy(),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_ember_save_loads_into_the_torch_twin(name, tmp_path):
    model = _randomised_ember(name)
    ember.save(model.state_dict(), tmp_path / "m.safetensors")
    twin = getattr(torch_twins, name)(**MODELS[name][1])
    twin.load_state_dict(load_file(tmp_path / "m.safetensors"))  # strict: every key, shape
    twin.eval()
    _outputs_match(model, twin, MODELS[name][0])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_torch_save_file_loads_into_the_ember_twin(name, tmp_path):
    torch.manual_seed(0)
    shape = MODELS[name][0]
    twin = torch_twins.train_one_step(getattr(torch_twins, name)(**MODELS[name][1]),
                                      (4, *shape))
    save_file(twin.state_dict(), tmp_path / "t.safetensors")
    loaded = ember.load(tmp_path / "t.safetensors")
    assert set(loaded) == set(twin.state_dict())
    model = ember.models.build(name, **MODELS[name][1])
    print(model.load_state_dict(loaded))
    _outputs_match(model.eval(), twin, shape)
    for key, value in twin.state_dict().items():  # dtypes survive (int64 counters too)
        assert loaded[key].array.dtype == value.numpy().dtype, key
