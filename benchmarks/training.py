"""Training benchmarks: the cases, their data, and one runner per framework.

Every runner trains the same model from the same initial weights (the torch
model's, copied into ember and NumPy) on the same batches: epoch ``e`` visits
the samples in the order ``np.random.default_rng(seed_e).permutation(n)``, the
order ember's DataLoader draws from that generator. Each batch is prepared inside
the timed epoch from the uint8 images (to float32 in [0, 1], then normalised),
by ember's DataLoader for ember and by the same array operations for the others.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ember
import ember.nn.functional as F
from benchmarks import models_torch, numpy_reference
from ember.data import DataLoader
from ember.data.datasets._arrays import ImageArrayDataset
from ember.data.transforms import Compose, Normalize, ToTensor

__all__ = ["Case", "ImageData", "CASES", "load_data", "build_runners", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parent.parent
MNIST_STATS = ((0.1307,), (0.3081,))
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


# ---------------------------------------------------------------- cases
@dataclass
class Case:
    """One training benchmark: model, loss, optimizer, batch size and schedule."""

    key: str
    title: str
    model: str                     # "mlp", "lenet5" or "cifar_cnn"
    model_kwargs: dict
    loss: str                      # "mse" (on one-hot targets) or "cross_entropy"
    optimizer: str                 # "sgd" or "adam"
    opt_kwargs: dict
    batch: int
    dataset: str = "mnist"
    epochs: int = 5                # timed epochs, after the warm-up (5: ~1 s epochs are noisy)
    warmup_batches: int | None = None  # None: a whole warm-up epoch
    numpy: bool = True             # whether the NumPy reference exists for it
    ember_workers: tuple = (0,)    # one ember run per DataLoader num_workers value
    inference_batch: int | None = None
    target: float = 0.8            # the ember/torch time ratio to reach
    trajectory_steps: int = 0      # >0: also compare training trajectories (trajectory.py)
    accuracy_variants: bool = False  # also train float32 variants of both: accuracy noise
    slices: int = 1                # a timed epoch in this many slices, frameworks alternating
    quick_kwargs: dict = field(default_factory=dict)  # model changes for --quick

    @property
    def label(self) -> str:
        return self.title.format(**self.model_kwargs)


def _mlp(key: str, title: str, sizes: tuple, act: str, loss: str, batch: int,
         **opt: Any) -> Case:
    # 9 timed epochs: an MLP epoch takes 0.4-2 s, and on this shared machine the speed of
    # identical epochs swings by 50% from one second to the next (docs/performance.md)
    return Case(key, title, "mlp", {"sizes": sizes, "activation": act}, loss, "sgd", opt, batch,
                epochs=9)


CASES = [
    _mlp("mlp_sigmoid_b10", "MLP 784-100-10 Sigmoid, MSE, SGD", (784, 100, 10), "sigmoid",
         "mse", 10, lr=0.1),
    _mlp("mlp_sigmoid_b64", "MLP 784-100-10 Sigmoid, MSE, SGD", (784, 100, 10), "sigmoid",
         "mse", 64, lr=0.1),
    _mlp("mlp_tanh_b64", "MLP 784-100-100-100-10 Tanh, CE, SGD", (784, 100, 100, 100, 10),
         "tanh", "cross_entropy", 64, lr=0.1),
    _mlp("mlp_relu_b200", "MLP 784-256-128-64-32-10 ReLU, CE, SGD+momentum",
         (784, 256, 128, 64, 32, 10), "relu", "cross_entropy", 200, lr=0.05, momentum=0.9),
    Case("lenet5_b64", "LeNet-5, CE, Adam", "lenet5", {}, "cross_entropy", "adam",
         {"lr": 1e-3}, 64, ember_workers=(0, 2), inference_batch=1000, target=1.1),
    Case("cifar_cnn_b128", "CIFAR-10 CNN (width {width}), CE, SGD+Nesterov", "cifar_cnn",
         {"width": 24}, "cross_entropy", "sgd",
         {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}, 128,
         dataset="cifar10", epochs=1, warmup_batches=3, numpy=False, target=1.1,
         quick_kwargs={"width": 4}, trajectory_steps=30, accuracy_variants=True, slices=8),
]


# ---------------------------------------------------------------- data
@dataclass
class ImageData:
    """uint8 images (N, H, W) or (N, H, W, C) and int64 labels, with normalisation stats."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    mean: tuple
    std: tuple
    source: str
    test_cache: dict = field(default_factory=dict)

    def normalise(self, images: np.ndarray) -> np.ndarray:
        """float32 NCHW batch: the same arithmetic as ToTensor + Normalize."""
        x = images.astype(np.float32) / np.float32(255)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return np.ascontiguousarray((x - mean) / std)

    def test_inputs(self) -> np.ndarray:
        if "x" not in self.test_cache:
            self.test_cache["x"] = self.normalise(self.test_images)
        return self.test_cache["x"]

    @property
    def sample_shape(self) -> tuple:
        shape = self.train_images.shape[1:]
        return (1,) + shape if len(shape) == 2 else (shape[2],) + shape[:2]


def data_root(arg: str | None) -> Path:
    """--data, else $EMBER_DATA, else ../shared/datasets next to the repository."""
    if arg:
        return Path(arg).expanduser()
    if os.environ.get("EMBER_DATA"):
        return Path(os.environ["EMBER_DATA"]).expanduser()
    return REPO_ROOT.parent / "shared" / "datasets"


def load_data(name: str, root: Path | None, train_limit: int | None,
              test_limit: int | None) -> ImageData:
    """The dataset's arrays; ``root=None`` takes the small stand-ins (the MNIST sample
    packaged with ember, random CIFAR-shaped images) without looking for files."""
    data = _load_mnist(root) if name == "mnist" else _load_cifar(root)
    data.train_images, data.train_labels = data.train_images[:train_limit], \
        data.train_labels[:train_limit]
    data.test_images, data.test_labels = data.test_images[:test_limit], \
        data.test_labels[:test_limit]
    return data


def _load_mnist(root: Path) -> ImageData:
    from ember.data.datasets import MNIST

    try:
        if root is None:
            raise FileNotFoundError("the packaged sample was asked for")
        train, test = MNIST(root, train=True), MNIST(root, train=False)
        source = f"MNIST from {train.root}"
    except (FileNotFoundError, OSError) as err:
        train, test = MNIST(train=True, sample=True), MNIST(train=False, sample=True)
        source = f"MNIST sample packaged with ember ({err})"
    return ImageData("mnist", train.images, train.labels, test.images, test.labels,
                     *MNIST_STATS, source)


def _load_cifar(root: Path) -> ImageData:
    from ember.data.datasets import CIFAR10

    try:
        if root is None:
            raise FileNotFoundError("random data was asked for")
        train, test = CIFAR10(root, train=True), CIFAR10(root, train=False)
        return ImageData("cifar10", train.images, train.labels, test.images, test.labels,
                         *CIFAR_STATS, f"CIFAR-10 from {train.root}")
    except (FileNotFoundError, OSError) as err:
        rng = np.random.default_rng(0)
        n = 60000 if root is not None else 2000
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n)
        split = n * 5 // 6
        return ImageData("cifar10", images[:split], labels[:split], images[split:],
                         labels[split:], *CIFAR_STATS, f"random CIFAR-shaped images ({err})")


def epoch_order(seed: int, n: int) -> np.ndarray:
    """The sample order of one epoch, shared by every framework."""
    return np.random.default_rng(seed).permutation(n)


def batch_count(n: int, batch: int, limit: int | None) -> int:
    full = -(-n // batch)
    return full if limit is None else min(full, limit)


# ---------------------------------------------------------------- runners
def _last(losses: Iterator[Any]) -> float:
    """Run a runner's ``steps`` to the end; the last loss as a float."""
    loss = collections.deque(losses, maxlen=1).pop()
    return float(loss.item() if hasattr(loss, "item") else loss)


class _ArrayImages(ImageArrayDataset):
    """An in-memory image dataset, so ember's DataLoader does the batch preparation."""

    def __init__(self, data: ImageData) -> None:
        self.images, self.labels = data.train_images, data.train_labels
        self.classes = [str(i) for i in range(10)]
        self.transform = Compose([ToTensor(), Normalize(data.mean, data.std)])
        self.target_transform = None


class EmberRunner:
    def __init__(self, case: Case, data: ImageData, init: torch.nn.Module,
                 num_workers: int = 0) -> None:
        self.name = "ember" if num_workers == 0 else f"ember ({num_workers} workers)"
        self.case, self.data = case, data
        self.model = ember.models.build(case.model, **case.model_kwargs)
        models_torch.copy_into_ember(init, self.model)
        params = self.model.parameters()
        self.optimizer = (ember.optim.Adam(params, **case.opt_kwargs) if case.optimizer == "adam"
                          else ember.optim.SGD(params, **case.opt_kwargs))
        self.loader = DataLoader(_ArrayImages(data), batch_size=case.batch, shuffle=True,
                                 num_workers=num_workers)

    def loss(self, out: ember.Tensor, y: ember.Tensor) -> ember.Tensor:
        if self.case.loss == "mse":
            return F.mse_loss(out, F.one_hot(y, 10).float())
        return F.cross_entropy(out, y)

    def steps(self, seed: int, limit: int | None = None) -> Iterator[ember.Tensor]:
        """Train on the epoch's batches one per ``next()``, yielding each loss."""
        self.loader.generator = np.random.default_rng(seed)
        for i, (x, y) in enumerate(self.loader):
            if limit is not None and i >= limit:
                break
            loss = self.loss(self.model(x), y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            yield loss

    def train_epoch(self, seed: int, limit: int | None = None) -> float:
        return _last(self.steps(seed, limit))

    @ember.no_grad()
    def predict(self, x: np.ndarray, batch: int = 1000) -> np.ndarray:
        self.model.eval()
        out = [self.model(ember.from_numpy(x[i:i + batch])).array.argmax(1)
               for i in range(0, len(x), batch)]
        self.model.train()
        return np.concatenate(out)


class TorchRunner:
    name = "torch"

    def __init__(self, case: Case, data: ImageData, model: torch.nn.Module,
                 channels_last: bool = False) -> None:
        self.case, self.data, self.model = case, data, model
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model.to(memory_format=self.memory_format)
        params = model.parameters()
        self.optimizer = (torch.optim.Adam(params, **case.opt_kwargs) if case.optimizer == "adam"
                          else torch.optim.SGD(params, **case.opt_kwargs))
        self.images = torch.from_numpy(data.train_images)
        self.labels = torch.from_numpy(data.train_labels)
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(data.mean, dtype=torch.float32).reshape(shape)
        self.std = torch.tensor(data.std, dtype=torch.float32).reshape(shape)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.images[idx]
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        x = images.float().div_(255).sub_(self.mean).div_(self.std)
        return x.contiguous(memory_format=self.memory_format), self.labels[idx]

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.case.loss == "mse":
            return torch.nn.functional.mse_loss(out, torch.nn.functional.one_hot(y, 10).float())
        return torch.nn.functional.cross_entropy(out, y)

    def steps(self, seed: int, limit: int | None = None) -> Iterator[torch.Tensor]:
        """Train on the epoch's batches one per ``next()``, yielding each loss."""
        order = torch.from_numpy(epoch_order(seed, len(self.labels)))
        b = self.case.batch
        for i in range(batch_count(len(order), b, limit)):
            x, y = self.batch(order[i * b:(i + 1) * b])
            loss = self.loss(self.model(x), y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            yield loss

    def train_epoch(self, seed: int, limit: int | None = None) -> float:
        return _last(self.steps(seed, limit))

    @torch.no_grad()
    def predict(self, x: np.ndarray, batch: int = 1000) -> np.ndarray:
        self.model.eval()
        xt = torch.from_numpy(x)
        out = [self.model(xt[i:i + batch]).argmax(1).numpy() for i in range(0, len(x), batch)]
        self.model.train()
        return np.concatenate(out)


class NumpyRunner:
    name = "numpy"

    def __init__(self, case: Case, data: ImageData, init: torch.nn.Module) -> None:
        self.case, self.data = case, data
        weights = [p.detach().numpy().copy() for p in init.parameters()]
        if case.model == "lenet5":
            self.model = numpy_reference.NumpyLeNet5(weights)
        else:
            pairs = list(zip(weights[0::2], weights[1::2]))
            self.model = numpy_reference.NumpyMLP(pairs, case.model_kwargs["activation"],
                                                  case.loss)
        opt = numpy_reference.Adam if case.optimizer == "adam" else numpy_reference.SGD
        self.optimizer = opt(self.model.params, **case.opt_kwargs)

    def steps(self, seed: int, limit: int | None = None) -> Iterator[float]:
        """Train on the epoch's batches one per ``next()``, yielding each loss."""
        data, b = self.data, self.case.batch
        order = epoch_order(seed, len(data.train_labels))
        for i in range(batch_count(len(order), b, limit)):
            idx = order[i * b:(i + 1) * b]
            x = data.normalise(data.train_images[idx])
            yield self.model.train_step(x, data.train_labels[idx], self.optimizer)

    def train_epoch(self, seed: int, limit: int | None = None) -> float:
        return _last(self.steps(seed, limit))

    def predict(self, x: np.ndarray, batch: int = 1000) -> np.ndarray:
        return np.concatenate([self.model.forward(x[i:i + batch]).argmax(1)
                               for i in range(0, len(x), batch)])


def build_torch_model(case: Case) -> torch.nn.Module:
    torch.manual_seed(0)
    return models_torch.TWINS[case.model](**case.model_kwargs)


@torch.no_grad()
def nudged_start(case: Case, k: int) -> torch.nn.Module:
    """``build_torch_model`` with each weight moved by -1, 0 or +1 ulp, chosen at random
    with seed ``k``: another float32 start of the same run, for drawing samples of a
    chaotic run's accuracy (both frameworks then train from the same nudged start)."""
    model = build_torch_model(case)
    rng = np.random.default_rng(k)
    for p in model.parameters():
        a = p.numpy()
        step = rng.integers(-1, 2, a.shape)
        towards = np.where(step > 0, np.inf, -np.inf).astype(np.float32)
        a[...] = np.where(step == 0, a, np.nextafter(a, towards))
    return model


def build_runners(case: Case, data: ImageData, with_numpy: bool = True) -> list:
    """ember run(s), torch, and NumPy where it exists, all from one torch initialisation.
    ember and NumPy copy the weights before torch starts training them."""
    model = build_torch_model(case)
    runners: list = [EmberRunner(case, data, model, w) for w in case.ember_workers]
    if case.numpy and with_numpy:
        runners.append(NumpyRunner(case, data, model))
    runners.insert(len(case.ember_workers), TorchRunner(case, data, model))
    return runners
