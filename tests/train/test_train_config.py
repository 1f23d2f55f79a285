"""Run configs: validation names unknown keys, overrides are typed, recipes build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ember
import ember.models
from ember.data.transforms import RandomCrop
from ember.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR
from ember.train.config import ConfigError, apply_override, load_config, parse_value, validate
from ember.train.recipe import (build_callbacks, build_data, build_model, build_optimizer,
                                build_scheduler, input_shape)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.toml"))


def _raw(**sections):
    raw = {"model": {"name": "mlp_adam"}, "data": {"name": "mnist", "sample": True}}
    raw.update(sections)
    return raw


def test_the_shipped_configs_validate_and_build():
    names = {p.stem for p in CONFIGS}
    assert {"quickstart", "mnist_mlp_sigmoid", "mnist_mlp_relu", "mnist_mlp_adam", "lenet5",
            "cifar_cnn"} <= names
    for path in CONFIGS:
        config, text = load_config(path)
        assert text == path.read_text()
        model = build_model(config)
        out = model(ember.zeros(2, *input_shape(config)))
        assert out.shape == (2, 10), path.name
        opt = build_optimizer(config, model)
        build_scheduler(config, opt, steps_per_epoch=10)
        build_callbacks(config, "runs/x")


@pytest.mark.parametrize("raw, message", [
    (_raw(epoch=3), r"unknown config key 'epoch'; valid keys in the top level: callbacks, "
                    r"data, epochs, grad_clip"),
    (_raw(data={"name": "mnist", "batchsize": 8}),
     r"unknown config key 'data.batchsize'; valid keys in \[data\]: batch_size, download"),
    (_raw(model={"name": "mlp", "size": [1, 2]}),
     r"unknown config key 'model.size' for model 'mlp'; valid keys in \[model\]: name, "
     r"activation, dropout, sizes"),
    (_raw(optimizer={"name": "sgd", "lr": 0.1, "momentun": 0.9}),
     r"unknown config key 'optimizer.momentun'; valid keys in \[optimizer\]: dampening, lr, "
     r"maximize, momentum, name, nesterov, weight_decay"),
    (_raw(scheduler={"name": "StepLR", "step_size": 2, "gama": 0.5}),
     r"unknown config key 'scheduler.gama'; valid keys in \[scheduler\]: gamma, monitor, "
     r"name, step, step_size"),
    (_raw(callbacks={"early_stopping": {"patients": 2}}),
     r"unknown config key 'callbacks.early_stopping.patients'; valid keys in "
     r"\[callbacks.early_stopping\]: baseline, min_delta, mode, monitor, patience"),
    (_raw(callbacks={"checkpoint": {"best_only": True}}),
     r"unknown config key 'callbacks.checkpoint.best_only'; valid keys in "
     r"\[callbacks.checkpoint\]: every_n_epochs, filename, mode, monitor, save_best_only"),
    (_raw(model={"name": "lenet"}), r"unknown model 'lenet' \(config key model.name\); choose "
                                    r"one of cifar_cnn, lenet5, mlp"),
    (_raw(optimizer={"name": "adamx"}), r"unknown optimizer 'adamx'"),
    (_raw(scheduler={"name": "StepLR"}), r"scheduler 'StepLR' needs 'step_size'"),
    (_raw(data={"name": "imagenet"}), r"unknown dataset 'imagenet' \(config key data.name\)"),
    (_raw(data={"transforms": ["flip"]}), r"unknown transform 'flip' in data.transforms"),
    (_raw(epochs="three"), r"config key 'epochs' must be an integer, got 'three'"),
    (_raw(epochs=True), r"config key 'epochs' must be an integer, got True"),
    (_raw(data={"val_split": 1.5}), r"data.val_split must be in \[0, 1\)"),
    (_raw(loss="hinge"), r"unknown loss 'hinge'"),
    ({"data": {}}, r"no \[model\] table"),
    (_raw(data={"name": "csv"}), r"needs data.train_file"),
])
def test_config_errors_name_the_key_and_the_valid_ones(raw, message):
    with pytest.raises(ConfigError, match=message):
        validate(raw)


def test_overrides_are_typed_by_toml():
    assert parse_value("0.01") == 0.01 and parse_value("3") == 3
    assert parse_value("true") is True and parse_value('"x"') == "x"
    assert parse_value("lenet5") == "lenet5" and parse_value("[784, 32, 10]") == [784, 32, 10]
    raw = _raw()
    apply_override(raw, "optimizer.lr=0.01")
    apply_override(raw, "model.name=mlp")
    apply_override(raw, "callbacks.early_stopping.patience=2")
    config = validate(raw)
    assert config["optimizer"] == {"name": "adam", "lr": 0.01}
    assert config["callbacks"]["early_stopping"] == {"patience": 2}
    with pytest.raises(ConfigError, match="--set expects key=value"):
        apply_override(raw, "optimizer.lr")
    with pytest.raises(ConfigError, match="model.name is not a table"):
        apply_override(raw, "model.name.x=1")
    apply_override(raw, "optimizer.lrr=1")
    with pytest.raises(ConfigError, match="unknown config key 'optimizer.lrr'"):
        validate(raw)


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file .*nope.toml not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)


def test_schedules_fill_in_the_run_length():
    config = validate(_raw(epochs=4, scheduler={"name": "cosineannealinglr"}))
    model = build_model(config)
    opt = build_optimizer(config, model)
    sched, step, _ = build_scheduler(config, opt, steps_per_epoch=25)
    assert isinstance(sched, CosineAnnealingLR) and sched.T_max == 4 and step == "epoch"
    config = validate(_raw(epochs=4, scheduler={"name": "OneCycleLR", "max_lr": 0.1}))
    sched, step, _ = build_scheduler(config, build_optimizer(config, model), 25)
    assert isinstance(sched, OneCycleLR) and sched.total_steps == 100 and step == "batch"


def test_image_data_split_sizes_and_augmentation_only_in_training():
    config = validate(_raw(data={"name": "mnist", "sample": True, "val_split": 0.25,
                                 "train_size": 400, "test_size": 100, "batch_size": 50,
                                 "transforms": ["random_crop", "normalize"]}))
    data = build_data(config, seed=3)
    train_idx, val_idx = data.train.dataset.indices, data.val.dataset.indices
    assert len(train_idx) == 300 and len(val_idx) == 100 and len(data.test.dataset) == 100
    assert not set(train_idx) & set(val_idx) and max(train_idx.max(), val_idx.max()) < 400
    assert any(isinstance(t, RandomCrop) for t in data.train.dataset.dataset.transform.transforms)
    assert not any(isinstance(t, RandomCrop) for t in data.val.dataset.dataset.transform
                   .transforms)
    again = build_data(config, seed=3)
    np.testing.assert_array_equal(again.val.dataset.indices, val_idx)  # the seed fixes the split
    assert data.input_shape == (1, 28, 28) and data.classes[0] == "0 - zero"


def test_missing_data_folder_names_it_and_how_to_get_the_data(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-folder"
    config = validate(_raw(data={"name": "mnist", "root": str(missing)}))
    with pytest.raises(ConfigError, match=f"data folder {missing} does not exist.*"
                       "data.download=true.*data.sample=true"):
        build_data(config, seed=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    config = validate(_raw(data={"name": "fashion_mnist", "root": str(empty)}))
    with pytest.raises(ConfigError, match=f"not found in {empty}.*data.download=true"):
        build_data(config, seed=0)
    monkeypatch.delenv("EMBER_DATA", raising=False)
    monkeypatch.setattr("ember.data.datasets.mnist.DEFAULT_DOWNLOAD_ROOT", empty / "cache")
    config = validate(_raw(data={"name": "mnist"}))
    with pytest.raises(ConfigError, match="no MNIST data folder.*EMBER_DATA"):
        build_data(config, seed=0)


def _write_csv(path, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=5.0, scale=3.0, size=(n, 3))
    y = (x[:, 0] > 5).astype(int) + (x[:, 1] > 5).astype(int)
    lines = ["a,b,label,c"] + [f"{r[0]},{r[1]},{t},{r[2]}" for r, t in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return x, y


def test_csv_data_standardizes_with_training_statistics(tmp_path):
    x, _ = _write_csv(tmp_path / "train.csv", 60, 0)
    _write_csv(tmp_path / "test.csv", 20, 1)
    config = validate({"model": {"name": "mlp", "sizes": [3, 8, 3]},
                       "data": {"name": "csv", "train_file": str(tmp_path / "train.csv"),
                                "test_file": str(tmp_path / "test.csv"),
                                "transforms": ["standardize"], "batch_size": 60}})
    data = build_data(config, seed=0)
    assert data.classes == ["0", "1", "2"] and data.input_shape == (3,)
    assert data.state["columns"] == ["a", "b", "c"]
    features, _ = next(iter(data.train))
    np.testing.assert_allclose(features.array.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(data.state["scale"]["mean"], x.mean(0), rtol=1e-6)
    rebuilt = build_data(config, seed=0, parts=("test",), state=data.state)
    a = next(iter(rebuilt.test))[0].array
    b = next(iter(data.test))[0].array
    np.testing.assert_array_equal(a, b)
    assert input_shape(config) == (3,)
