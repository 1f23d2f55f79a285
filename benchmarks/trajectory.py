"""Is a float32 accuracy gap noise? Training trajectories, measured side by side.

One epoch of the CIFAR-10 CNN at lr 0.05 is chaotic in float32: runs that differ only
in the order of float32 sums (torch on one thread or on two) end an epoch several
accuracy points apart. So for that case the benchmark also trains a few steps from the
same weights on the same batches and compares the parameters, as the relative distance
``|a - b| / |b|`` over all of them:

- float32, ember against torch, and torch against torch on another thread count: if
  ember's drift from torch is of the size of torch's drift from itself, an accuracy gap
  after an epoch is the same float32 noise;
- float64, ember against torch: rounding is then ~1e-16, so the two trajectories agree
  to ~1e-14 exactly when both compute the same arithmetic (forward, gradients, update).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

import ember
import ember.nn.functional as F
from benchmarks import models_torch
from benchmarks.training import Case, ImageData, build_torch_model, epoch_order

__all__ = ["TrajectoryResult", "trajectory_check", "FLOAT64_LIMIT", "DRIFT_LIMIT"]

FLOAT64_LIMIT = 1e-9  # ember vs torch in float64: the same arithmetic, up to rounding
DRIFT_LIMIT = 2.0     # ember-torch drift / torch-torch drift, float32


@dataclass
class TrajectoryResult:
    case: Case
    steps: int
    threads: tuple          # torch's two thread counts
    ember_torch_32: float   # relative parameter distances after ``steps`` steps
    torch_torch_32: float
    ember_torch_64: float

    @property
    def drift_ratio(self) -> float:
        if self.torch_torch_32 == 0:  # torch's sums did not depend on its threads
            return 1.0 if self.ember_torch_32 == 0 else float("inf")
        return self.ember_torch_32 / self.torch_torch_32


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _batches(case: Case, data: ImageData, steps: int) -> list:
    order = epoch_order(1000, len(data.train_labels))
    b = case.batch
    return [(data.normalise(data.train_images[order[i * b:(i + 1) * b]]),
             data.train_labels[order[i * b:(i + 1) * b]]) for i in range(steps)]


def _torch_run(case: Case, init: torch.nn.Module, batches: list, dtype: torch.dtype,
               threads: int) -> np.ndarray:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = copy.deepcopy(init).to(dtype)
        opt = torch.optim.SGD(model.parameters(), **case.opt_kwargs)
        for x, y in batches:
            loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x).to(dtype)),
                                                     torch.from_numpy(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return np.concatenate([p.detach().double().numpy().ravel() for p in model.parameters()])
    finally:
        torch.set_num_threads(previous)


def _ember_run(case: Case, init: torch.nn.Module, batches: list, dtype: str) -> np.ndarray:
    model = ember.models.build(case.model, **case.model_kwargs)
    models_torch.copy_into_ember(init, model)
    model = model.double() if dtype == "float64" else model
    opt = ember.optim.SGD(model.parameters(), **case.opt_kwargs)
    for x, y in batches:
        loss = F.cross_entropy(model(ember.from_numpy(x.astype(dtype))), ember.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return np.concatenate([p.array.astype(np.float64).ravel() for p in model.parameters()])


def trajectory_check(case: Case, data: ImageData, steps: int, threads: int) -> TrajectoryResult:
    """Train ``steps`` SGD steps five ways (torch float32 on ``threads`` threads and on
    another count, ember float32, torch and ember float64) and compare the parameters."""
    if case.loss != "cross_entropy" or case.optimizer != "sgd":
        raise ValueError(f"trajectory_check: written for cross-entropy + SGD, not {case.key}")
    steps = max(1, min(steps, len(data.train_labels) // case.batch))  # full batches only
    init = build_torch_model(case)
    batches = _batches(case, data, steps)
    other = 1 if threads > 1 else 2
    reference = _torch_run(case, init, batches, torch.float32, threads)
    return TrajectoryResult(
        case, steps, (threads, other),
        ember_torch_32=_distance(_ember_run(case, init, batches, "float32"), reference),
        torch_torch_32=_distance(_torch_run(case, init, batches, torch.float32, other),
                                 reference),
        ember_torch_64=_distance(_ember_run(case, init, batches, "float64"),
                                 _torch_run(case, init, batches, torch.float64, threads)))
