"""Callbacks: EarlyStopping (Keras's rule), ModelCheckpoint, CSVLogger, TerminateOnNaN.

EarlyStopping is driven with scripted metric sequences whose stopping epochs are
worked out by hand from Keras's rule (wait += 1; reset on an improvement of more
than min_delta; stop once wait >= patience after the first epoch).
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.data import DataLoader, TensorDataset
from ember.train import (Callback, CSVLogger, EarlyStopping, ModelCheckpoint, TerminateOnNaN,
                         Trainer, read_checkpoint)
from ember.train.callbacks import monitor_mode


class _Stub:
    """The little of a Trainer that EarlyStopping touches."""

    def __init__(self, model=None):
        self.model = model or nn.Linear(2, 1)
        self.stop_training = False


def _run_early_stopping(values, **kwargs):
    """The 0-based epoch after which training stops (None: never), driving the callback
    with a scripted metric sequence."""
    stub = _Stub()
    stop = EarlyStopping(**kwargs)
    stop.set_trainer(stub)
    stop.on_train_begin()
    for epoch, value in enumerate(values):
        stop.on_epoch_end(epoch, {kwargs.get("monitor", "val_loss"): value})
        if stub.stop_training:
            return epoch
    return None


@pytest.mark.parametrize("values, kwargs, stops_after", [
    ([1.0, 0.9, 0.95, 0.8], dict(patience=0), 2),                 # first non-improvement
    ([1.0, 0.9, 0.95, 0.96, 0.8], dict(patience=2), 3),          # two bad epochs in a row
    ([1.0, 0.9, 0.95, 0.85, 0.96, 0.97], dict(patience=2), 5),   # 0.85 resets the wait
    ([1.0, 0.95, 0.91, 0.88], dict(patience=1, min_delta=0.05), 1),  # 0.95: not > 0.05 better
    ([1.0, 0.94, 0.90, 0.80], dict(patience=1, min_delta=0.05), 2),
    ([0.5, 0.6, 0.55, 0.58], dict(monitor="val_accuracy", patience=1), 2),  # auto: max
    ([0.5, 0.6, 0.55, 0.58], dict(monitor="val_accuracy", patience=1, mode="min"), 1),
    ([3.0, 2.0, 1.0, 0.5], dict(patience=0), None),
    ([1.0, 1.0, 1.0], dict(patience=0, start_from_epoch=2), None),
    ([1.0, 0.9, 0.95], dict(patience=2, baseline=0.5), 2),  # below baseline: wait never reset
    ([1.0, 0.9, 0.95], dict(patience=2), None),
])
def test_early_stopping_follows_keras_rule(values, kwargs, stops_after):
    assert _run_early_stopping(values, **kwargs) == stops_after


def test_monitor_mode_auto_and_bad_mode():
    assert monitor_mode("val_accuracy", "auto") == "max"
    assert monitor_mode("train_top5", "auto") == "max"
    assert monitor_mode("val_loss", "auto") == "min"
    with pytest.raises(ValueError, match="mode must be"):
        EarlyStopping(mode="bigger")


def _tiny(seed=0):
    ember.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    loader = DataLoader(TensorDataset(ember.tensor(x), ember.tensor(y)), batch_size=16,
                        shuffle=True)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = ember.optim.SGD(model.parameters(), lr=0.1)
    return model, opt, loader


class Script(Callback):
    """Overwrites logs[key] with scripted values and keeps each epoch's weights."""

    def __init__(self, key, values):
        self.key, self.values, self.weights = key, values, []

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]
        self.weights.append({k: v.array.copy() for k, v in self.model.state_dict().items()})


def test_early_stopping_in_fit_restores_the_best_weights():
    model, opt, loader = _tiny()
    script = Script("val_loss", [1.0, 0.5, 0.7, 0.8, 0.9, 0.1])
    stop = EarlyStopping(patience=2, restore_best_weights=True)
    trainer = Trainer(model, F.cross_entropy, opt, train_loader=loader,
                      callbacks=[script, stop], verbose=0)
    history = trainer.fit(6)
    assert history.epoch == [0, 1, 2, 3] and stop.stopped_epoch == 3 and stop.best_epoch == 1
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value.array, script.weights[1][key])
        assert not np.array_equal(value.array, script.weights[3][key]) or "bias" in key


def test_early_stopping_without_restore_keeps_the_last_weights():
    model, opt, loader = _tiny()
    script = Script("val_loss", [1.0, 2.0, 3.0])
    trainer = Trainer(model, F.cross_entropy, opt, train_loader=loader,
                      callbacks=[script, EarlyStopping(patience=1)], verbose=0)
    trainer.fit(3)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value.array, script.weights[1][key])


def test_model_checkpoint_every_n_epochs_formats_the_path(tmp_path):
    model, opt, loader = _tiny()
    ckpt = ModelCheckpoint(tmp_path / "ep{epoch:02d}-{train_loss:.3f}.safetensors",
                           every_n_epochs=2)
    trainer = Trainer(model, F.cross_entropy, opt, train_loader=loader, callbacks=[ckpt],
                      verbose=0)
    history = trainer.fit(5)
    names = sorted(p.name for p in tmp_path.iterdir())
    losses = history.history["train_loss"]
    assert names == [f"ep02-{losses[1]:.3f}.safetensors", f"ep04-{losses[3]:.3f}.safetensors"]
    state = read_checkpoint(tmp_path / names[1])
    assert state["epoch"] == 4 and state["history"]["history"]["train_loss"] == losses[:4]
    assert not list(tmp_path.glob(".tmp-*"))  # atomic writes leave no temp files


def test_model_checkpoint_best_only_saves_on_improvement(tmp_path):
    model, opt, loader = _tiny()
    script = Script("val_accuracy", [0.5, 0.7, 0.6, 0.9, 0.8])
    saved = []

    class Spy(Callback):
        def on_epoch_end(self, epoch, logs=None):
            path = tmp_path / "best.safetensors"
            if path.exists():
                saved.append(read_checkpoint(path)["epoch"])
    ckpt = ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_accuracy",
                           save_best_only=True)
    trainer = Trainer(model, F.cross_entropy, opt, train_loader=loader,
                      callbacks=[script, ckpt, Spy()], verbose=0)
    trainer.fit(5)
    assert saved == [1, 2, 2, 4, 4] and ckpt.best == 0.9

    weights = ModelCheckpoint(tmp_path / "w.safetensors", save_weights_only=True,
                              monitor="train_loss")
    Trainer(model, F.cross_entropy, opt, train_loader=loader, callbacks=[weights],
            verbose=0).fit(1)
    loaded = ember.load(tmp_path / "w.safetensors")
    assert sorted(loaded) == sorted(model.state_dict())


def test_model_checkpoint_errors_name_the_problem(tmp_path):
    model, opt, loader = _tiny()
    trainer = Trainer(model, F.cross_entropy, opt, train_loader=loader, verbose=0,
                      callbacks=[ModelCheckpoint(tmp_path / "{val_acc}.safetensors")])
    with pytest.raises(ValueError, match=r"names the field 'val_acc'.*train_loss"):
        trainer.fit(1)
    trainer = Trainer(model, F.cross_entropy, opt, train_loader=loader, verbose=0,
                      callbacks=[ModelCheckpoint(tmp_path / "b.safetensors",
                                                 save_best_only=True)])
    with pytest.raises(ValueError, match="monitor 'val_loss' is not among"):
        trainer.fit(1)
    with pytest.raises(ValueError, match="every_n_epochs"):
        ModelCheckpoint("x", every_n_epochs=0)


def test_csv_logger_writes_every_epoch_and_appends_on_resume(tmp_path):
    model, opt, loader = _tiny()
    path = tmp_path / "logs" / "history.csv"
    trainer = Trainer(model, F.cross_entropy, opt, train_loader=loader,
                      callbacks=[CSVLogger(path)], verbose=0)
    history = trainer.fit(2)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "train_loss", "train_accuracy", "lr"]
    assert [int(r[0]) for r in rows[1:]] == [0, 1]
    assert [float(r[1]) for r in rows[1:]] == history.history["train_loss"]  # full precision
    trainer.initial_epoch = 2  # as after a resume: append, without a second header
    trainer.fit(3)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert [r[0] for r in rows] == ["epoch", "0", "1", "2"]


def test_terminate_on_nan_stops_at_the_bad_batch(capsys):
    model, opt, loader = _tiny()
    seen = []

    def loss_fn(out, y):
        loss = F.cross_entropy(out, y)
        seen.append(len(seen))
        return loss * float("nan") if len(seen) == 6 else loss

    class Count(Callback):
        def on_batch_end(self, batch, logs=None):
            self.last = (batch, logs["loss"])
    count = Count()
    trainer = Trainer(model, loss_fn, opt, train_loader=loader,
                      callbacks=[TerminateOnNaN(), count], verbose=0)
    history = trainer.fit(5)
    assert len(seen) == 6 and count.last[0] == 1 and math.isnan(count.last[1])
    assert history.epoch == [0]  # the broken epoch is not logged
    assert trainer.stop_training and "Batch 1: invalid loss nan" in capsys.readouterr().out
