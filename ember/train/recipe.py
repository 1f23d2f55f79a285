"""Build what a validated config names: data loaders, model, loss, optimizer, schedule,
callbacks. The command line uses these; they are plain functions, usable on their own.

>>> config, _ = load_config("configs/quickstart.toml")
>>> data = build_data(config, seed=0)
>>> model = build_model(config)
"""

from __future__ import annotations

import copy
import csv
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import ember
import ember.models
import ember.nn.functional as F
from ember.data import DataLoader, Subset
from ember.data.datasets import CIFAR10, MNIST, CSVDataset, FashionMNIST
from ember.data.transforms import (Compose, MinMaxScale, Normalize, RandomCrop,
                                   RandomHorizontalFlip, Standardize, ToTensor)
from ember.optim.lr_scheduler import OneCycleLR
from ember.train.callbacks import (Callback, CSVLogger, EarlyStopping, ModelCheckpoint,
                                   TerminateOnNaN)
from ember.train.config import OPTIMIZERS, SCHEDULERS, ConfigError, find_name

__all__ = ["ImageSpec", "IMAGE_DATA", "Data", "build_data", "input_shape", "build_model",
           "build_loss", "build_optimizer", "build_scheduler", "build_callbacks",
           "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.safetensors"


@dataclass(frozen=True)
class ImageSpec:
    """What an image dataset's model takes: Pillow mode, size, and normalisation."""

    mode: str  # 'L' or 'RGB'
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    folder: str  # the dataset's folder name under a datasets root

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3


IMAGE_DATA = {
    "mnist": ImageSpec("L", 28, 28, (0.1307,), (0.3081,), "mnist"),
    "fashion_mnist": ImageSpec("L", 28, 28, (0.2860,), (0.3530,), "fashion-mnist"),
    "cifar10": ImageSpec("RGB", 32, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                         "cifar-10/cifar-10-batches-bin"),
}


@dataclass
class Data:
    """Loaders (None where not built), class names, the input shape of one sample, the
    image spec (None for CSV), the eval transform for raw inputs, and the state needed to
    rebuild it (CSV statistics and columns)."""

    train: DataLoader | None = None
    val: DataLoader | None = None
    test: DataLoader | None = None
    classes: list[str] = field(default_factory=list)
    input_shape: tuple[int, ...] = ()
    image: ImageSpec | None = None
    eval_transform: Callable | None = None
    state: dict[str, Any] = field(default_factory=dict)
    description: str = ""


# ---------------------------------------------------------------- image data
def _image_transforms(spec: ImageSpec, names: list[str]) -> tuple[Compose, Compose]:
    """(train, eval) transforms: augmentations on the raw HW(C) arrays, then ToTensor and
    Normalize."""
    tail = [ToTensor()] + ([Normalize(spec.mean, spec.std)] if "normalize" in names else [])
    augment = []
    if "random_crop" in names:
        augment.append(RandomCrop((spec.height, spec.width), padding=4))
    if "horizontal_flip" in names:
        augment.append(RandomHorizontalFlip())
    for name in ("standardize", "minmax"):
        if name in names:
            raise ConfigError(f"data.transforms: {name!r} is for csv data; image data takes "
                              "normalize, random_crop, horizontal_flip")
    return Compose(augment + tail), Compose(tail)


def _how_to_get(name: str, root: str | None) -> str:
    folder = IMAGE_DATA[name].folder
    where = f"into {root}" if root else "into ~/.cache/ember/datasets"
    hint = (f"Get the data with --set data.download=true (downloads {where}), or point "
            f"data.root (or the EMBER_DATA variable) at a folder holding {folder}/")
    if name == "mnist":
        hint += ", or use --set data.sample=true for the 10,000-image sample shipped with ember"
    return hint + "."


def _open_image_dataset(data: Mapping[str, Any], train: bool, transform: Any) -> Any:
    name, root = data["name"], data.get("root")
    if root is not None and not os.path.isdir(os.path.expanduser(root)) \
            and not data["download"]:
        raise ConfigError(f"data folder {root} does not exist (config key data.root). "
                          + _how_to_get(name, root))
    if data["sample"] and name != "mnist":
        raise ConfigError(f"data.sample: only mnist ships a sample, not {name}. "
                          + _how_to_get(name, root))
    try:
        if name == "cifar10":
            return CIFAR10(root, train, transform, download=data["download"])
        cls = MNIST if name == "mnist" else FashionMNIST
        dataset = cls(root, train, transform, download=data["download"], sample=data["sample"])
    except FileNotFoundError as err:
        raise ConfigError(f"{err} " + _how_to_get(name, root)) from None
    if dataset.is_sample and not data["sample"]:
        raise ConfigError("no MNIST data folder: data.root and EMBER_DATA are not set. "
                          + _how_to_get(name, root))
    return dataset


def _describe(dataset: Any, name: str) -> str:
    where = "packaged sample" if getattr(dataset, "is_sample", False) else \
        str(getattr(dataset, "root", ""))
    return f"{name} ({where})"


# ---------------------------------------------------------------- csv data
def _csv_transform(names: list[str], state: Mapping[str, Any], features: Any) -> Any:
    """The fitted feature scaling: from ``state`` when rebuilding, else fitted on ``features``."""
    for bad in ("normalize", "random_crop", "horizontal_flip"):
        if bad in names:
            raise ConfigError(f"data.transforms: {bad!r} is for image data; csv data takes "
                              "standardize or minmax")
    if "standardize" in names:
        scale = Standardize()
        keys = ("mean", "std")
    elif "minmax" in names:
        scale = MinMaxScale()
        keys = ("min", "span")
    else:
        return None
    if "scale" in state:
        for key in keys:
            setattr(scale, key, np.asarray(state["scale"][key], np.float64))
        scale.fitted = True
    else:
        if features is None:
            raise ConfigError("csv data: the fitted feature scaling is missing from run.json")
        scale.fit(features)
    return scale


def _csv_data(data: Mapping[str, Any], parts: tuple[str, ...], state: dict,
              ) -> tuple[Data, Any, Any]:
    target, names = data["target"], data["transforms"]
    train = CSVDataset(data["train_file"], target=target) if "train" in parts else None
    scale = _csv_transform(names, state, None if train is None else train.features)
    if scale is not None:
        state["scale"] = {k: np.asarray(v).tolist() for k, v in vars(scale).items()
                          if k in ("mean", "std", "min", "span")}
    if train is not None:
        train.transform = scale
        state["columns"] = train.columns
        state["classes"] = [str(c) for c in range(int(train.targets.max()) + 1)]
    test = None
    if "test" in parts:
        if "test_file" not in data:
            raise ConfigError("csv data: data.test_file is not set, so there is no test set")
        test = CSVDataset(data["test_file"], target=target, transform=scale)
    return Data(classes=list(state["classes"]), input_shape=(len(state["columns"]),),
                eval_transform=scale, state=state, description=f"csv ({data['train_file']})"), \
        train, test


# ---------------------------------------------------------------- loaders
def _split(n: int, data: Mapping[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: the first ``train_size`` samples, ``val_split`` of them held out
    by a permutation drawn from ``seed`` (not from ember's generator)."""
    indices = np.arange(min(n, data.get("train_size", n)))
    n_val = int(round(len(indices) * data["val_split"]))
    order = np.random.default_rng(seed).permutation(indices)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _loaders(out: Data, train: Any, val_source: Any, test: Any, data: Mapping[str, Any],
             seed: int) -> Data:
    batch, workers = data["batch_size"], data["num_workers"]
    if train is not None:
        train_idx, val_idx = _split(len(train), data, seed)
        out.train = DataLoader(Subset(train, train_idx), batch, shuffle=True,
                               num_workers=workers)
        if len(val_idx):
            out.val = DataLoader(Subset(val_source, val_idx), data["test_batch_size"])
    if test is not None:
        test = Subset(test, np.arange(min(len(test), data.get("test_size", len(test)))))
        out.test = DataLoader(test, data["test_batch_size"])
    return out


def build_data(config: Mapping[str, Any], seed: int, parts: tuple[str, ...] = ("train", "test"),
               state: Mapping[str, Any] | None = None) -> Data:
    """The loaders a config names (``parts``: 'train' also makes the validation split)."""
    data = config["data"]
    state = copy.deepcopy(dict(state or {}))
    if data["name"] == "csv":
        out, train, test = _csv_data(data, parts, state)
        return _loaders(out, train, train, test, data, seed)
    spec = IMAGE_DATA[data["name"]]
    train_tf, eval_tf = _image_transforms(spec, data["transforms"])
    out = Data(input_shape=(spec.channels, spec.height, spec.width), image=spec,
               eval_transform=eval_tf, state=state)
    train = val_source = test = None
    if "train" in parts:
        train = _open_image_dataset(data, True, train_tf)
        val_source = copy.copy(train)  # the same arrays, without the augmentations
        val_source.transform = eval_tf
    if "test" in parts:
        test = _open_image_dataset(data, False, eval_tf)
    any_set = train if train is not None else test
    if any_set is not None:
        out.classes = list(any_set.classes)
        out.description = _describe(any_set, data["name"])
    return _loaders(out, train, val_source, test, data, seed)


def input_shape(config: Mapping[str, Any]) -> tuple[int, ...]:
    """One sample's shape, without loading the data (a CSV's header is read)."""
    data = config["data"]
    if data["name"] in IMAGE_DATA:
        spec = IMAGE_DATA[data["name"]]
        return (spec.channels, spec.height, spec.width)
    with open(data["train_file"], newline="") as f:
        header = next(csv.reader(f), [])
    return (len([c for c in header if c.strip() != data["target"]]),)


# ---------------------------------------------------------------- model and optimisation
def build_model(config: Mapping[str, Any]) -> Any:
    model = dict(config["model"])
    return ember.models.build(model.pop("name"), **model)


def mse_one_hot(outputs: ember.Tensor, targets: ember.Tensor) -> ember.Tensor:
    """Squared error against one-hot targets (the sigmoid MLP's recipe)."""
    return F.mse_loss(outputs, F.one_hot(targets, outputs.shape[1]).float())


def build_loss(config: Mapping[str, Any]) -> Callable:
    return {"cross_entropy": F.cross_entropy, "nll": F.nll_loss, "mse": mse_one_hot}[
        config["loss"]]


def _kwargs(table: Mapping[str, Any], own: tuple[str, ...]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) and k == "betas" else v
            for k, v in table.items() if k not in own}


def _named(table: Mapping[str, Any], choices: Mapping[str, type]) -> type:
    return choices[find_name(choices, table["name"])]


def build_optimizer(config: Mapping[str, Any], model: Any) -> Any:
    table = config["optimizer"]
    return _named(table, OPTIMIZERS)(model.parameters(), **_kwargs(table, ("name",)))


def build_scheduler(config: Mapping[str, Any], optimizer: Any, steps_per_epoch: int,
                    ) -> tuple[Any, str, str]:
    """(scheduler or None, 'epoch' or 'batch', the metric a plateau schedule watches).

    CosineAnnealingLR's T_max and OneCycleLR's total_steps default to the whole run.
    """
    table = config.get("scheduler")
    if not table:
        return None, "epoch", "val_loss"
    cls = _named(table, SCHEDULERS)
    step = table.get("step", "batch" if cls is OneCycleLR else "epoch")
    kwargs = _kwargs(table, ("name", "step", "monitor"))
    steps = config["epochs"] * (steps_per_epoch if step == "batch" else 1)
    if cls.__name__ == "CosineAnnealingLR":
        kwargs.setdefault("T_max", steps)
    if cls is OneCycleLR and not {"total_steps", "epochs"} & set(kwargs):
        kwargs["total_steps"] = steps
    return cls(optimizer, **kwargs), step, table.get("monitor", "val_loss")


def build_callbacks(config: Mapping[str, Any], output: str) -> list[Callback]:
    """The config's callbacks, plus a checkpoint of the last epoch in ``output`` (so a
    killed run resumes with ``--resume output/checkpoint.safetensors``)."""
    table = config["callbacks"]
    callbacks: list[Callback] = []
    if "checkpoint" in table:
        options = dict(table["checkpoint"])
        best_only = options.setdefault("save_best_only", True)
        name = options.pop("filename", "best.safetensors" if best_only
                           else "epoch-{epoch:03d}.safetensors")
        callbacks.append(ModelCheckpoint(os.path.join(output, name), **options))
    if "early_stopping" in table:
        callbacks.append(EarlyStopping(**table["early_stopping"]))
    if table["csv_logger"]:
        callbacks.append(CSVLogger(os.path.join(output, "history.csv")))
    if table["terminate_on_nan"]:
        callbacks.append(TerminateOnNaN())
    # Last, so the other callbacks' states in it are those of the epoch just ended.
    callbacks.append(ModelCheckpoint(os.path.join(output, CHECKPOINT_NAME)))
    return callbacks
