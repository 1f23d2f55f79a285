"""Callbacks: code the Trainer calls at the start and end of training, epochs and batches.

Subclass ``Callback`` and override the hooks you need; ``self.trainer`` is the Trainer
(set ``self.trainer.stop_training = True`` to stop), ``self.model`` its model. Epoch
numbers are 0-based, as in Keras. A callback with state worth resuming (EarlyStopping's
patience counter, ModelCheckpoint's best value) returns it from ``state_dict()``; it
travels in the training checkpoint.

>>> trainer = Trainer(model, F.cross_entropy, opt, train_loader=train, val_loader=val,
...                   callbacks=[EarlyStopping(patience=3, restore_best_weights=True),
...                              ModelCheckpoint("runs/best.safetensors", save_best_only=True),
...                              CSVLogger("runs/log.csv")])
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

import ember

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "CSVLogger", "TerminateOnNaN",
           "ProgressBar", "monitor_mode", "monitored_value"]

Logs = Mapping[str, Any]


class Callback:
    """Base class: every hook does nothing. ``logs`` of an epoch hold its metrics
    (``train_loss``, ``val_accuracy``, ``lr``, ...); a batch's hold ``batch``, ``size``
    and, after the step, ``loss``."""

    trainer: Any = None

    def set_trainer(self, trainer: Any) -> None:
        self.trainer = trainer

    @property
    def model(self) -> Any:
        return self.trainer.model

    def on_train_begin(self, logs: Logs | None = None) -> None: ...

    def on_train_end(self, logs: Logs | None = None) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None: ...

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None: ...

    def on_batch_begin(self, batch: int, logs: Logs | None = None) -> None: ...

    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """What a training checkpoint keeps of this callback (nothing by default)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.__dict__.update(state)


# ---------------------------------------------------------------- monitoring helpers
def monitor_mode(monitor: str, mode: str) -> str:
    """'min' or 'max': ``mode`` itself, or for 'auto' 'max' when the name says accuracy/top-k."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    base = monitor.removeprefix("val_").removeprefix("train_")
    return "max" if "acc" in base or (base.startswith("top") and base[3:].isdigit()) else "min"


def monitored_value(logs: Logs | None, monitor: str, owner: str) -> float:
    """``logs[monitor]`` as a float, or a ValueError naming the keys that are there."""
    logs = logs or {}
    if monitor not in logs:
        raise ValueError(f"{owner}: monitor {monitor!r} is not among the epoch's logs "
                         f"{sorted(logs)}; give a val_loader for val_* metrics, or monitor "
                         "another key")
    return float(logs[monitor])


def _snapshot(model: Any) -> dict[str, np.ndarray]:
    return {k: v.array.copy() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- EarlyStopping
class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs (Keras's rule).

    An epoch improves when ``current < best - min_delta`` (mode 'min') or
    ``current > best + min_delta`` (mode 'max'); 'auto' picks 'max' for accuracy-like
    names. With ``restore_best_weights`` the model gets the weights of the best epoch
    back when training ends. ``baseline``: training also stops unless the metric beats it.

    >>> stop = EarlyStopping(monitor="val_loss", patience=2, min_delta=1e-3)
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = False,
                 baseline: float | None = None, start_from_epoch: int = 0,
                 verbose: int = 0) -> None:
        if patience < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0, got {patience}")
        self.monitor, self.patience = monitor, int(patience)
        self.min_delta = abs(float(min_delta))
        self.mode = monitor_mode(monitor, mode)
        self.restore_best_weights, self.baseline = restore_best_weights, baseline
        self.start_from_epoch, self.verbose = start_from_epoch, verbose
        self._reset()

    def _reset(self) -> None:
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights: dict[str, np.ndarray] | None = None

    def _is_improvement(self, current: float, reference: float) -> bool:
        if self.mode == "min":
            return current < reference - self.min_delta
        return current > reference + self.min_delta

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._reset()

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        current = monitored_value(logs, self.monitor, "EarlyStopping")
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = _snapshot(self.model), epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = _snapshot(self.model)
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping ({self.monitor} did not "
                  f"improve for {self.wait} epochs)")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": self.best, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch, "best_weights": self.best_weights}


# ---------------------------------------------------------------- ModelCheckpoint
class ModelCheckpoint(Callback):
    """Save a checkpoint every ``every_n_epochs`` epochs (or only when ``monitor`` improves,
    with ``save_best_only``), atomically, through ``ember.save``.

    The file is a full training checkpoint (``Trainer.save_checkpoint``: model, optimizer,
    scheduler, history, RNG states) unless ``save_weights_only``, then the model's
    ``state_dict``. ``path`` may hold format fields: ``{epoch}`` (1-based) and any log key,
    e.g. ``"runs/ckpt-{epoch:02d}-{val_loss:.3f}.safetensors"``. Put it after the other
    callbacks so that their states in the checkpoint are those of the epoch just ended.

    >>> ModelCheckpoint("runs/best.safetensors", monitor="val_accuracy", save_best_only=True)
    """

    def __init__(self, path: str | os.PathLike, monitor: str = "val_loss",
                 save_best_only: bool = False, every_n_epochs: int = 1, mode: str = "auto",
                 save_weights_only: bool = False, verbose: int = 0) -> None:
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) \
                or every_n_epochs < 1:
            raise ValueError(f"ModelCheckpoint: every_n_epochs must be a positive integer, got "
                             f"{every_n_epochs!r}")
        self.path, self.monitor = os.fspath(path), monitor
        self.save_best_only, self.every_n_epochs = save_best_only, every_n_epochs
        self.mode = monitor_mode(monitor, mode)
        self.save_weights_only, self.verbose = save_weights_only, verbose
        self.best = math.inf if self.mode == "min" else -math.inf
        self.last_path: str | None = None

    def _improved(self, current: float) -> bool:
        return current < self.best if self.mode == "min" else current > self.best

    def format_path(self, epoch: int, logs: Logs | None) -> str:
        try:
            return self.path.format(epoch=epoch + 1, **(logs or {}))
        except (KeyError, IndexError) as err:
            raise ValueError(f"ModelCheckpoint: path {self.path!r} names the field {err}, "
                             f"which is not 'epoch' or a log key {sorted(logs or {})}") from None

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs:
            return
        if self.save_best_only:
            current = monitored_value(logs, self.monitor, "ModelCheckpoint")
            if not self._improved(current):
                return
            self.best = current
        path = self.format_path(epoch, logs)
        if self.save_weights_only:
            folder = os.path.dirname(path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            ember.save(self.model.state_dict(), path)
        else:
            self.trainer.save_checkpoint(path)
        self.last_path = path
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved {path}")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "last_path": self.last_path}


# ---------------------------------------------------------------- CSVLogger
class CSVLogger(Callback):
    """Write each epoch's logs as a CSV row (``epoch`` 0-based, then the log keys).

    The file is rewritten when training starts, or appended to with ``append=True``
    and when the trainer resumed from a checkpoint. Rows are flushed as written.
    """

    def __init__(self, path: str | os.PathLike, separator: str = ",",
                 append: bool = False) -> None:
        self.path, self.separator, self.append = os.fspath(path), separator, append
        self._file: IO[str] | None = None
        self._keys: list[str] | None = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        resumed = self.trainer is not None and getattr(self.trainer, "initial_epoch", 0) > 0
        appending = (self.append or resumed) and os.path.exists(self.path) \
            and os.path.getsize(self.path) > 0
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self._keys = self._header() if appending else None
        self._file = open(self.path, "a" if appending else "w", newline="")  # noqa: SIM115

    def _header(self) -> list[str] | None:
        with open(self.path, newline="") as f:
            row = next(csv.reader(f, delimiter=self.separator), None)
        return row[1:] if row else None

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = dict(logs or {})
        writer = csv.writer(self._file, delimiter=self.separator)
        if self._keys is None:
            self._keys = list(logs)
            writer.writerow(["epoch", *self._keys])
        writer.writerow([epoch, *(logs.get(k, "NA") for k in self._keys)])
        self._file.flush()

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# ---------------------------------------------------------------- TerminateOnNaN
class TerminateOnNaN(Callback):
    """Stop training as soon as a batch's loss is NaN or infinite (that epoch is not logged)."""

    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: invalid loss {loss}, terminating training")
            self.trainer.stop_training = True


# ---------------------------------------------------------------- progress
def _format_logs(logs: Logs) -> str:
    parts = []
    for key, value in logs.items():
        parts.append(f"{key} {value:.4g}" if key == "lr" else f"{key} {value:.4f}")
    return "  ".join(parts)


class ProgressBar(Callback):
    """A tqdm bar per epoch with the running loss and samples/s, on ``file`` (stderr) only
    when it is a terminal and ``verbose`` is 1; one summary line per epoch (stdout) when
    ``verbose`` is 1 or 2. ``verbose=0``: silent. The Trainer adds one itself."""

    def __init__(self, verbose: int = 1, file: IO[str] | None = None) -> None:
        self.verbose, self.file = verbose, file
        self._bar: Any = None

    def _stream(self) -> IO[str]:
        return self.file if self.file is not None else sys.stderr

    def _use_bar(self) -> bool:
        stream = self._stream()
        if self.verbose != 1 or not getattr(stream, "isatty", lambda: False)():
            return False
        try:
            import tqdm  # noqa: F401
        except ImportError:
            return False
        return True

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._start, self._samples, self._loss_sum = time.perf_counter(), 0, 0.0
        self._train_seconds = 0.0
        if self._use_bar():
            from tqdm.auto import tqdm

            total = _length(self.trainer.train_loader)
            self._bar = tqdm(total=total, desc=f"epoch {epoch + 1}/{self.trainer.epochs}",
                             file=self._stream(), unit="batch", leave=False,
                             dynamic_ncols=True)

    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        logs = logs or {}
        size = int(logs.get("size", 0))
        self._samples += size
        self._loss_sum += float(logs.get("loss", 0.0)) * size
        self._train_seconds = time.perf_counter() - self._start
        if self._bar is not None:
            rate = self._samples / max(self._train_seconds, 1e-9)
            loss = self._loss_sum / max(self._samples, 1)
            # tqdm redraws at most every 0.1 s; the first batch is drawn at once
            self._bar.set_postfix_str(f"loss {loss:.4f}, {rate:,.0f} samples/s",
                                      refresh=batch == 0)
            self._bar.update(1)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self._close_bar()
        if self.verbose in (1, 2):
            seconds = time.perf_counter() - self._start
            rate = self._samples / max(self._train_seconds, 1e-9)  # training throughput
            print(f"epoch {epoch + 1}/{self.trainer.epochs}  {_format_logs(logs or {})}  "
                  f"{seconds:.1f} s ({rate:,.0f} samples/s)", flush=True)

    def on_train_end(self, logs: Logs | None = None) -> None:
        self._close_bar()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _length(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None
