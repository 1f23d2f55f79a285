"""Run configs: TOML files naming a model, data, optimizer, schedule and callbacks.

Every key is checked: an unknown one is an error naming it and the valid ones,
so a typo never silently falls back to a default. ``--set key=value`` overrides
are parsed as TOML values (``optimizer.lr=0.01`` is a float, ``data.sample=true``
a bool, ``model.name=lenet5`` a string when it is not valid TOML).

A config (``configs/quickstart.toml``)::

    seed = 0
    epochs = 3
    output = "runs/quickstart"

    [model]
    name = "mlp_adam"                 # from ember.models; other keys are its arguments

    [data]
    name = "mnist"                    # mnist | fashion_mnist | cifar10 | csv
    sample = true                     # MNIST's packaged 10k/2k subset
    batch_size = 32

    [optimizer]
    name = "adam"                     # sgd | adam | adamw | rmsprop | adagrad | adadelta
    lr = 1e-3
"""

from __future__ import annotations

import copy
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

import ember.models
from ember import optim
from ember.optim import lr_scheduler
from ember.train.callbacks import EarlyStopping

__all__ = ["ConfigError", "find_name", "load_config", "parse_value", "parse_overrides",
           "apply_override", "validate", "OPTIMIZERS", "SCHEDULERS", "LOSSES", "DATASETS",
           "DEFAULTS"]


class ConfigError(ValueError):
    """A config that cannot be run: unknown key, wrong type, missing value."""


OPTIMIZERS: dict[str, type] = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW,
                               "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad,
                               "adadelta": optim.Adadelta}
_NOT_CONFIGURABLE = {"LRScheduler", "LambdaLR", "MultiplicativeLR", "SequentialLR",
                     "ChainedScheduler"}
SCHEDULERS: dict[str, type] = {name: getattr(lr_scheduler, name)
                               for name in lr_scheduler.__all__ if name not in _NOT_CONFIGURABLE}
LOSSES = ("cross_entropy", "mse", "nll")
DATASETS = ("mnist", "fashion_mnist", "cifar10", "csv")
TRANSFORMS = ("normalize", "random_crop", "horizontal_flip", "standardize", "minmax")

Number = (int, float)
_TOP: dict[str, Any] = {"seed": int, "epochs": int, "output": str, "loss": str, "metrics": list,
                        "grad_clip": Number, "verbose": int, "model": dict, "data": dict,
                        "optimizer": dict, "scheduler": dict, "callbacks": dict}
_DATA: dict[str, Any] = {"name": str, "root": str, "sample": bool, "download": bool,
                         "batch_size": int, "test_batch_size": int, "val_split": Number,
                         "transforms": list, "num_workers": int, "train_size": int,
                         "test_size": int, "train_file": str, "test_file": str, "target": str}
_CALLBACKS: dict[str, Any] = {"early_stopping": dict, "checkpoint": dict, "csv_logger": bool,
                              "terminate_on_nan": bool}
_CHECKPOINT: dict[str, Any] = {"monitor": str, "save_best_only": bool, "every_n_epochs": int,
                               "mode": str, "filename": str}
_SCHEDULER_OWN: dict[str, Any] = {"name": str, "step": str, "monitor": str}

DEFAULTS: dict[str, Any] = {
    "epochs": 1, "loss": "cross_entropy", "metrics": ["loss", "accuracy"], "verbose": 1,
    "data": {"name": "mnist", "sample": False, "download": False, "batch_size": 32,
             "test_batch_size": 1000, "val_split": 0.0, "transforms": ["normalize"],
             "num_workers": 0, "target": "label"},
    "optimizer": {"name": "adam"},
    "callbacks": {"csv_logger": True, "terminate_on_nan": True},
}


# ---------------------------------------------------------------- reading
def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> tuple[dict, str]:
    """The validated config (overrides applied, defaults filled) and the file's text."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    for override in overrides:
        apply_override(raw, override)
    return validate(raw), text


def parse_value(text: str) -> Any:
    """A --set value as TOML (number, bool, string, array, inline table), else a bare string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (e.g. optimizer.lr=0.01), got {item!r}")
        pairs.append((key.strip(), parse_value(value.strip())))
    return pairs


def apply_override(config: dict, item: str) -> None:
    """Set a dotted key (``optimizer.lr=0.01``) in a raw config, creating tables as needed."""
    for key, value in parse_overrides([item]):
        *tables, last = key.split(".")
        node = config
        for i, part in enumerate(tables):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {'.'.join(tables[:i + 1])} is not a table")
        node[last] = value


# ---------------------------------------------------------------- checking
def _type_name(expected: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             list: "an array", dict: "a table"}
    if expected is Number:
        return "a number"
    return names.get(expected, str(expected))


def _check_type(key: str, value: Any, expected: Any) -> None:
    if expected is Any:
        return
    ok = isinstance(value, expected)
    if isinstance(value, bool) and expected is not bool:
        ok = False  # TOML's true is not an integer here
    if not ok:
        raise ConfigError(f"config key {key!r} must be {_type_name(expected)}, got {value!r}")


def check_keys(table: Mapping[str, Any], schema: Mapping[str, Any], where: str) -> None:
    """Every key known and of the right type; the error names the key and the valid ones."""
    for key, value in table.items():
        full = f"{where}.{key}" if where else key
        if key not in schema:
            section = f"[{where}]" if where else "the top level"
            raise ConfigError(f"unknown config key {full!r}; valid keys in {section}: "
                              f"{', '.join(sorted(schema))}")
        _check_type(full, value, schema[key])


def _merged(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict:
    merged = copy.deepcopy(dict(defaults))
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def signature_schema(fn: Callable, skip: tuple[str, ...] = ()) -> tuple[dict, list[str]]:
    """Keyword arguments ``fn`` accepts (as an 'any type' schema) and those it requires."""
    schema, required = {}, []
    for name, param in inspect.signature(fn).parameters.items():
        if name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        schema[name] = Any
        if param.default is param.empty:
            required.append(name)
    return schema, required


def _lookup(table: Mapping[str, Any], where: str, choices: Mapping[str, Any]) -> str:
    if "name" not in table:
        raise ConfigError(f"config key '{where}.name' is missing; choose one of "
                          f"{', '.join(sorted(choices))}")
    name = find_name(choices, table["name"])
    if name is None:
        raise ConfigError(f"unknown {where} {table['name']!r} (config key {where}.name); choose "
                          f"one of {', '.join(sorted(choices))}")
    return name


def find_name(choices: Mapping[str, Any], name: Any) -> str | None:
    """The key of ``choices`` equal to ``name`` ignoring case, or None."""
    return next((k for k in choices if k.lower() == str(name).lower()), None)


def _check_named(table: Mapping[str, Any], where: str, choices: Mapping[str, Callable],
                 own: Mapping[str, Any], skip: tuple[str, ...], implied: tuple = ()) -> None:
    """A [model]/[optimizer]/[scheduler] table: a known name and only its arguments."""
    name = _lookup(table, where, choices)
    schema, required = signature_schema(choices[name], skip)
    check_keys(table, {**schema, **own}, where)
    missing = [r for r in required if r not in table and r not in implied]
    if missing:
        raise ConfigError(f"{where} {name!r} needs {', '.join(repr(m) for m in missing)} "
                          f"(config key {where}.{missing[0]})")


def _check_model(table: Mapping[str, Any]) -> None:
    name = _lookup(table, "model", ember.models.MODELS)
    schema, required = signature_schema(ember.models.MODELS[name])
    unknown = [k for k in table if k != "name" and k not in schema]
    if unknown:
        raise ConfigError(f"unknown config key 'model.{unknown[0]}' for model {name!r}; valid "
                          f"keys in [model]: {', '.join(['name', *sorted(schema)])}")


def _check_data(data: Mapping[str, Any]) -> None:
    check_keys(data, _DATA, "data")
    if data["name"] not in DATASETS:
        raise ConfigError(f"unknown dataset {data['name']!r} (config key data.name); choose "
                          f"one of {', '.join(DATASETS)}")
    bad = [t for t in data["transforms"] if t not in TRANSFORMS]
    if bad:
        raise ConfigError(f"unknown transform {bad[0]!r} in data.transforms; valid: "
                          f"{', '.join(TRANSFORMS)}")
    if not 0 <= data["val_split"] < 1:
        raise ConfigError(f"data.val_split must be in [0, 1), got {data['val_split']}")
    for key in ("batch_size", "test_batch_size", "train_size", "test_size"):
        if key in data and data[key] < 1:
            raise ConfigError(f"data.{key} must be a positive integer, got {data[key]}")
    if data["name"] == "csv" and "train_file" not in data:
        raise ConfigError("data.name = 'csv' needs data.train_file (and usually data.test_file)")


def _check_callbacks(callbacks: Mapping[str, Any]) -> None:
    check_keys(callbacks, _CALLBACKS, "callbacks")
    if "early_stopping" in callbacks:
        schema, _ = signature_schema(EarlyStopping)
        check_keys(callbacks["early_stopping"], schema, "callbacks.early_stopping")
    if "checkpoint" in callbacks:
        check_keys(callbacks["checkpoint"], _CHECKPOINT, "callbacks.checkpoint")


def validate(raw: Mapping[str, Any]) -> dict:
    """Check a raw config and fill in the defaults; raises ConfigError."""
    check_keys(raw, _TOP, "")
    config = _merged(DEFAULTS, raw)
    if "model" not in config:
        raise ConfigError("the config has no [model] table; give at least model.name (one of "
                          f"{', '.join(sorted(ember.models.MODELS))})")
    _check_model(config["model"])
    _check_data(config["data"])
    _check_named(config["optimizer"], "optimizer", OPTIMIZERS, {"name": str}, ("params",))
    if "scheduler" in config:
        _check_scheduler(config["scheduler"])
    _check_callbacks(config["callbacks"])
    if config["loss"] not in LOSSES:
        raise ConfigError(f"unknown loss {config['loss']!r} (config key loss); choose one of "
                          f"{', '.join(LOSSES)}")
    if config["epochs"] < 1:
        raise ConfigError(f"config key 'epochs' must be >= 1, got {config['epochs']}")
    return config


def _check_scheduler(table: Mapping[str, Any]) -> None:
    # T_max / total_steps are filled in from the epochs when not given.
    _check_named(table, "scheduler", SCHEDULERS, _SCHEDULER_OWN, ("optimizer", "last_epoch"),
                 implied=("T_max", "total_steps"))
    if table.get("step", "epoch") not in ("epoch", "batch"):
        raise ConfigError(f"scheduler.step must be 'epoch' or 'batch', got {table['step']!r}")
