"""ember.save / ember.load: safetensors + JSON, atomic, never executing code."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file as torch_load_file
from safetensors.torch import save_file as torch_save_file

import ember
from ember.serialize import CheckpointError


def _checkpoint():
    model = {"fc.weight": ember.randn(2, 3), "fc.bias": ember.zeros(2, dtype=ember.float64)}
    return {"model": model,
            "optimizer": {"state": {0: {"step": 3, "exp_avg": ember.ones(2)}},
                          "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1]}]},
            "epoch": 4, "best": float("inf"), "history": {"loss": [0.5, 0.25]}, "note": None,
            "rng": {"bit_generator": "PCG64", "state": {"state": 2**100, "inc": 7}},
            "labels": np.arange(5), "flag": True, "count": ember.tensor(3)}


def test_round_trip_keeps_structure_values_and_dtypes(tmp_path):
    obj = _checkpoint()
    ember.save(obj, tmp_path / "ckpt.safetensors")
    back = ember.load(tmp_path / "ckpt.safetensors")
    assert back["optimizer"]["state"].keys() == {0}
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["epoch"] == 4 and back["best"] == float("inf") and back["note"] is None
    assert back["rng"]["state"]["state"] == 2**100 and back["flag"] is True
    assert back["history"] == {"loss": [0.5, 0.25]}
    np.testing.assert_array_equal(back["labels"], np.arange(5))
    for key in ("fc.weight", "fc.bias"):
        assert back["model"][key].dtype == obj["model"][key].dtype
        np.testing.assert_array_equal(back["model"][key].array, obj["model"][key].array)
    assert back["count"].item() == 3 and back["count"].dtype == ember.int64


def test_flat_state_dict_loads_in_torch_and_back(tmp_path):
    torch_model = torch.nn.Linear(3, 2).double()
    state = {k: ember.tensor(v.detach().numpy(), dtype=ember.float64)
             for k, v in torch_model.state_dict().items()}
    ember.save(state, tmp_path / "m.safetensors")
    loaded = torch_load_file(tmp_path / "m.safetensors")
    torch_model.load_state_dict(loaded)  # names and shapes are torch's
    for k, v in torch_model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), state[k].array)
    torch_save_file(torch_model.state_dict(), tmp_path / "t.safetensors")
    back = ember.load(tmp_path / "t.safetensors")
    assert set(back) == {"weight", "bias"}
    np.testing.assert_array_equal(back["weight"].array, torch_model.weight.detach().numpy())


@pytest.mark.parametrize("damage", ["truncate", "header", "garbage", "empty", "pickle"])
def test_damaged_or_foreign_files_raise_checkpoint_error_naming_the_path(tmp_path, damage):
    path = tmp_path / "ckpt.safetensors"
    ember.save(_checkpoint(), path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "header":
        path.write_bytes(data[:8] + b"#" + data[9:])
    elif damage == "garbage":
        path.write_bytes(b"PK\x03\x04 not a checkpoint at all" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(pickle.dumps({"w": np.ones(2)}))
    with pytest.raises(CheckpointError, match=str(path)):
        ember.load(path)


def test_missing_file_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        ember.load(tmp_path / "nope.safetensors")


def test_unsupported_objects_are_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match="cannot store an object of type object"):
        ember.save({"x": object()}, tmp_path / "x.safetensors")
    assert not os.listdir(tmp_path)


def test_crash_mid_write_keeps_the_last_good_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    ember.save({"epoch": 1, "w": ember.ones(2)}, path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        ember.save({"epoch": 2, "w": ember.zeros(2)}, path)
    monkeypatch.undo()
    assert ember.load(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # no temp file left behind
