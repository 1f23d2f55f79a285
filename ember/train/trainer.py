"""Trainer: the plain training loop, written once, with metrics, callbacks and checkpoints.

One training step is exactly the loop you would write by hand::

    outputs = model(inputs); loss = loss_fn(outputs, targets)
    optimizer.zero_grad(); loss.backward()
    [clip_grad_norm_(model.parameters(), grad_clip)]; optimizer.step()
    [scheduler.step()  # scheduler_step='batch']

so a Trainer run and a hand-written loop on the same seed give the same numbers,
bit for bit. Custom loops stay first-class: the Trainer adds nothing you need.

>>> trainer = Trainer(model, F.cross_entropy, ember.optim.Adam(model.parameters()),
...                   train_loader=train, val_loader=val, metrics=["loss", "accuracy"])
>>> history = trainer.fit(3)
>>> history.history["val_accuracy"]           # one value per epoch
>>> trainer.evaluate(test)                    # {'loss': ..., 'accuracy': ...}
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

import ember
from ember.nn.utils import clip_grad_norm_
from ember.optim.lr_scheduler import ReduceLROnPlateau
from ember.tensor import Tensor
from ember.train import checkpoint as _checkpoint
from ember.train.callbacks import Callback, ProgressBar, monitored_value
from ember.train.history import History
from ember.train.metrics import MeanMetric, Metric, build_metrics

__all__ = ["Trainer"]


def split_batch(batch: Any) -> tuple[Any, Any]:
    """A loader's batch as ``(inputs, targets)``."""
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ValueError("Trainer: expected batches of (inputs, targets), got "
                     f"{type(batch).__name__}" + (f" of {len(batch)} items"
                                                  if isinstance(batch, (list, tuple)) else ""))


def _batch_size(targets: Any) -> int:
    return len(targets) if getattr(targets, "ndim", 1) else 1


class _Callbacks:
    """Calls one hook on every callback, in order."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def __getattr__(self, hook: str) -> Callable[..., None]:
        def call(*args: Any) -> None:
            for cb in self.callbacks:
                getattr(cb, hook)(*args)
        return call


class Trainer:
    """Fit, evaluate and predict with a model, a loss and an optimizer.

    scheduler: an LR scheduler stepped after every batch (``scheduler_step='batch'``) or
    epoch ('epoch'); a ReduceLROnPlateau is stepped each epoch with the logged value
    ``monitor_for_plateau`` (default 'val_loss'). metrics: 'loss', 'accuracy', 'topK'
    ('top5'), ``TopK(k)``, functions ``fn(outputs, targets) -> float`` on NumPy arrays
    (named by ``__name__``), or a ``{name: metric}`` dict; the loss is always logged.
    grad_clip: the max gradient norm (``nn.utils.clip_grad_norm_``) or None.
    verbose: 0 silent; 1 a progress bar when stderr is a terminal plus one line per epoch;
    2 only the epoch lines.

    Attributes: ``epoch`` (epochs completed), ``step`` (optimizer steps taken),
    ``history`` (a History), ``stop_training`` (set it in a callback to stop).
    """

    def __init__(self, model: Any, loss_fn: Callable[[Any, Any], Tensor], optimizer: Any,
                 scheduler: Any = None, train_loader: Iterable | None = None,
                 val_loader: Iterable | None = None,
                 metrics: Sequence[Any] | Mapping[str, Any] = ("loss", "accuracy"),
                 grad_clip: float | None = None, callbacks: Sequence[Callback] = (),
                 scheduler_step: str = "epoch", monitor_for_plateau: str = "val_loss",
                 verbose: int = 1) -> None:
        if scheduler_step not in ("epoch", "batch"):
            raise ValueError(f"Trainer: scheduler_step must be 'epoch' or 'batch', got "
                             f"{scheduler_step!r}")
        if isinstance(scheduler, ReduceLROnPlateau) and scheduler_step == "batch":
            raise ValueError("Trainer: ReduceLROnPlateau steps on an epoch metric; use "
                             "scheduler_step='epoch'")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"Trainer: grad_clip must be a positive max norm or None, got "
                             f"{grad_clip!r}")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.scheduler, self.scheduler_step = scheduler, scheduler_step
        self.monitor_for_plateau = monitor_for_plateau
        self.train_loader, self.val_loader = train_loader, val_loader
        self.metrics: list[Metric] = build_metrics(metrics)
        self.grad_clip, self.verbose = grad_clip, verbose
        self.callbacks: list[Callback] = list(callbacks)
        self.history = History()
        self.epoch = self.step = self.initial_epoch = 0
        self.epochs = 0
        self.stop_training = False
        self._pending_callback_states: list[dict[str, Any]] = []

    # ------------------------------------------------------------ fit
    def fit(self, epochs: int, resume_from: str | os.PathLike | None = None) -> History:
        """Train until ``epochs`` epochs are done in all (a resumed run finishes the same
        schedule: ``fit(10, resume_from=ckpt)`` after epoch 4 trains epochs 5 to 10, and
        ``fit(2); fit(5)`` is ``fit(5)``, callbacks' states included).

        Returns the History of every epoch so far, the resumed ones included.
        """
        if self.train_loader is None:
            raise ValueError("Trainer.fit: no train_loader; pass one to Trainer(...)")
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        elif self.epoch > 0 and not self._pending_callback_states:
            # continuing this run: callbacks keep their state, as on a resume
            self._pending_callback_states = _checkpoint.callback_states(self.callbacks)
        self.epochs, self.initial_epoch, self.stop_training = int(epochs), self.epoch, False
        if self.epoch >= self.epochs:
            warnings.warn(f"Trainer.fit: {self.epoch} epochs are already done, nothing to "
                          f"train for epochs={epochs}", stacklevel=2)
        callbacks = self._callback_list()
        callbacks.on_train_begin({})
        self._apply_callback_states()
        logs: dict[str, Any] = {}
        for epoch in range(self.epoch, self.epochs):
            logs = self._run_epoch(epoch, callbacks)
            if logs is None or self.stop_training:
                break
        callbacks.on_train_end(logs or {})
        return self.history

    def _callback_list(self) -> _Callbacks:
        callbacks = list(self.callbacks)
        if not any(isinstance(cb, ProgressBar) for cb in callbacks):
            callbacks.append(ProgressBar(self.verbose))
        for cb in callbacks:
            cb.set_trainer(self)
        return _Callbacks(callbacks)

    def _run_epoch(self, epoch: int, callbacks: _Callbacks) -> dict[str, Any] | None:
        callbacks.on_epoch_begin(epoch, {})
        train_logs = self._train_epoch(callbacks)
        if train_logs is None:  # stopped inside the epoch: the partial epoch is not logged
            return None
        logs = {f"train_{k}": v for k, v in train_logs.items()}
        if self.val_loader is not None:
            logs.update({f"val_{k}": v for k, v in self.evaluate(self.val_loader).items()})
        logs["lr"] = float(self.optimizer.param_groups[0]["lr"])
        self._step_scheduler_after_epoch(logs)
        self.history.append(epoch, logs)
        self.epoch = epoch + 1
        callbacks.on_epoch_end(epoch, logs)
        return logs

    def _train_epoch(self, callbacks: _Callbacks) -> dict[str, float] | None:
        self.model.train()
        loss_mean, metrics = MeanMetric("loss"), self._fresh_metrics()
        for i, batch in enumerate(self.train_loader):
            inputs, targets = split_batch(batch)
            size = _batch_size(targets)
            callbacks.on_batch_begin(i, {"batch": i, "size": size})
            outputs, loss = self.train_step(inputs, targets)
            loss_mean.add(loss, size)
            for metric in metrics:
                metric.update(outputs.array, _array(targets), size)
            callbacks.on_batch_end(i, {"batch": i, "size": size, "loss": loss})
            if self.stop_training:
                return None
        return {"loss": loss_mean.compute(), **{m.name: m.compute() for m in metrics}}

    def train_step(self, inputs: Any, targets: Any) -> tuple[Tensor, float]:
        """One optimisation step on one batch; returns (outputs, loss value)."""
        outputs = self.model(inputs)
        loss = self.loss_fn(outputs, targets)
        self.optimizer.zero_grad()
        loss.backward()
        if self.grad_clip is not None:
            clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.step += 1
        if self.scheduler is not None and self.scheduler_step == "batch":
            self.scheduler.step()
        return outputs, loss.item()

    def _step_scheduler_after_epoch(self, logs: Mapping[str, Any]) -> None:
        if self.scheduler is None:
            return
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(monitored_value(logs, self.monitor_for_plateau,
                                                "ReduceLROnPlateau (monitor_for_plateau)"))
        elif self.scheduler_step == "epoch":
            self.scheduler.step()

    def _fresh_metrics(self) -> list[Metric]:
        metrics = [copy.copy(m) for m in self.metrics]
        for metric in metrics:
            metric.reset()
        return metrics

    # ------------------------------------------------------------ evaluate / predict
    def evaluate(self, loader: Iterable | None = None) -> dict[str, float]:
        """The loss and metrics over ``loader`` (default: the val_loader), in eval mode
        without gradients: ``{'loss': ..., 'accuracy': ...}``."""
        loader = self.val_loader if loader is None else loader
        if loader is None:
            raise ValueError("Trainer.evaluate: no loader given and no val_loader")
        loss_mean, metrics = MeanMetric("loss"), self._fresh_metrics()
        with _eval_mode(self.model), ember.no_grad():
            for batch in loader:
                inputs, targets = split_batch(batch)
                outputs = self.model(inputs)
                size = _batch_size(targets)
                loss_mean.add(self.loss_fn(outputs, targets).item(), size)
                for metric in metrics:
                    metric.update(outputs.array, _array(targets), size)
        return {"loss": loss_mean.compute(), **{m.name: m.compute() for m in metrics}}

    def predict(self, loader: Iterable) -> Tensor:
        """The model's outputs for every batch of ``loader``, concatenated (eval mode, no
        gradients). Batches may be inputs alone or ``(inputs, targets)``."""
        outputs = []
        with _eval_mode(self.model), ember.no_grad():
            for batch in loader:
                inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
                outputs.append(_array(self.model(inputs)))
        if not outputs:
            raise ValueError("Trainer.predict: the loader gave no batches")
        return Tensor._make(np.concatenate(outputs), False, None)

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write a full training checkpoint to ``path`` (one file, atomically)."""
        _checkpoint.save_checkpoint(self, path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore a checkpoint written by ``save_checkpoint``: raises ember.CheckpointError
        (and changes nothing) for a damaged file, a file of another kind, or one from a
        different architecture, optimizer or scheduler."""
        _checkpoint.restore_checkpoint(self, path)

    def _apply_callback_states(self) -> None:
        """Give resumed callbacks their saved state (the k-th callback of a class gets the
        k-th saved state of that class), after on_train_begin has reset them."""
        pending: dict[str, list] = {}
        for entry in self._pending_callback_states:
            pending.setdefault(entry["class"], []).append(entry["state"])
        for cb in self.callbacks:
            states = pending.get(type(cb).__name__)
            if states:
                cb.load_state_dict(states.pop(0))
        self._pending_callback_states = []


def _array(x: Any) -> np.ndarray:
    return x.array if isinstance(x, Tensor) else np.asarray(x)


class _eval_mode:  # noqa: N801  (a context manager used like a function)
    """Put a model in eval mode, then back in the mode it was in."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.was_training = getattr(self.model, "training", False)
        self.model.eval()

    def __exit__(self, *exc: Any) -> None:
        self.model.train(self.was_training)
