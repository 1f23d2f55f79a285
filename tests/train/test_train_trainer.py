"""Trainer against the hand-written loop it replaces: the same numbers, bit for bit.

Every comparison runs the plain loop (zero_grad, backward, [clip], step, [scheduler])
and the Trainer from the same seed and checks losses, metrics, weights, learning
rates and outputs for exact equality; top-k is checked against torch.topk.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.data import DataLoader, TensorDataset
from ember.optim.lr_scheduler import ReduceLROnPlateau, StepLR
from ember.train import Callback, History, Trainer, TopK
from ember.train.metrics import build_metrics

N_FEATURES, N_CLASSES = 20, 5


def _datasets(seed: int = 0, n_train: int = 96, n_val: int = 40):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(N_FEATURES, N_CLASSES))

    def make(n):
        x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
        y = (x @ w + rng.normal(scale=0.5, size=(n, N_CLASSES))).argmax(1)
        return TensorDataset(ember.tensor(x), ember.tensor(y))
    return make(n_train), make(n_val)


def _setup(seed: int = 0, lr: float = 0.05):
    """Model with dropout (so RNG order matters), SGD with momentum, loaders (shuffled)."""
    ember.manual_seed(seed)
    train, val = _datasets()
    model = nn.Sequential(nn.Linear(N_FEATURES, 32), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(32, N_CLASSES))
    opt = ember.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return (model, opt, DataLoader(train, batch_size=16, shuffle=True),
            DataLoader(val, batch_size=16))


class BatchLosses(Callback):
    def __init__(self):
        self.losses, self.lrs = [], []

    def on_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])
        self.lrs.append(self.trainer.optimizer.param_groups[0]["lr"])


def _plain_eval(model, loader):
    model.eval()
    loss_sum = correct = n = 0.0
    with ember.no_grad():
        for x, y in loader:
            out = model(x)
            loss_sum += F.cross_entropy(out, y).item() * len(y)
            correct += float((out.array.argmax(1) == y.array).mean()) * len(y)
            n += len(y)
    model.train()
    return loss_sum / n, correct / n


def _plain_fit(model, opt, train, val, epochs, scheduler=None, per_batch=False, clip=None):
    """The loop a user writes by hand; returns batch losses and per-epoch logs."""
    batch_losses, logs = [], []
    for _ in range(epochs):
        model.train()
        loss_sum = correct = n = 0.0
        for x, y in train:
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            if scheduler is not None and per_batch:
                scheduler.step()
            batch_losses.append(loss.item())
            loss_sum += loss.item() * len(y)
            correct += float((out.array.argmax(1) == y.array).mean()) * len(y)
            n += len(y)
        val_loss, val_acc = _plain_eval(model, val)
        lr = opt.param_groups[0]["lr"]
        if scheduler is not None and not per_batch:
            scheduler.step()
        logs.append({"train_loss": loss_sum / n, "train_accuracy": correct / n,
                     "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr})
    return batch_losses, logs


def _assert_same_weights(a, b):
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(p.array, q.array, err_msg=name)


@pytest.mark.parametrize("clip", [None, 0.5])
def test_fit_matches_the_plain_loop_bit_for_bit(clip):
    model, opt, train, val = _setup()
    expected_losses, expected_logs = _plain_fit(model, opt, train, val, epochs=3, clip=clip)

    model2, opt2, train2, val2 = _setup()
    recorder = BatchLosses()
    trainer = Trainer(model2, F.cross_entropy, opt2, train_loader=train2, val_loader=val2,
                      grad_clip=clip, callbacks=[recorder], verbose=0)
    history = trainer.fit(3)
    assert recorder.losses == expected_losses  # exact float equality
    for key in expected_logs[0]:
        assert history.history[key] == [log[key] for log in expected_logs], key
    assert history.epoch == [0, 1, 2] and trainer.epoch == 3 and trainer.step == 3 * len(train)
    _assert_same_weights(model, model2)


def test_evaluate_and_predict_match_the_plain_loop():
    model, opt, train, val = _setup()
    trainer = Trainer(model, F.cross_entropy, opt, train_loader=train, val_loader=val,
                      metrics=["loss", "accuracy", "top2"], verbose=0)
    trainer.fit(1)
    assert model.training  # evaluate restores the mode
    results = trainer.evaluate(val)
    assert model.training
    loss, acc = _plain_eval(model, val)
    assert results["loss"] == loss and results["accuracy"] == acc
    model.eval()
    with ember.no_grad():
        expected = np.concatenate([model(x).array for x, _ in val])
    model.train()
    predicted = trainer.predict(val)
    assert isinstance(predicted, ember.Tensor) and predicted.shape == (40, N_CLASSES)
    np.testing.assert_array_equal(predicted.array, expected)
    inputs_only = DataLoader(TensorDataset(val.dataset.tensors[0]), batch_size=16)
    np.testing.assert_array_equal(trainer.predict(
        [batch[0] for batch in inputs_only]).array, expected)


def test_scheduler_per_batch_and_per_epoch_match_the_plain_loop():
    for per_batch in (False, True):
        model, opt, train, val = _setup()
        sched = StepLR(opt, step_size=2, gamma=0.5)
        expected_losses, expected_logs = _plain_fit(model, opt, train, val, 3, sched, per_batch)

        model2, opt2, train2, val2 = _setup()
        sched2 = StepLR(opt2, step_size=2, gamma=0.5)
        recorder = BatchLosses()
        trainer = Trainer(model2, F.cross_entropy, opt2, sched2, train2, val2,
                          scheduler_step="batch" if per_batch else "epoch",
                          callbacks=[recorder], verbose=0)
        history = trainer.fit(3)
        assert recorder.losses == expected_losses
        assert history.history["lr"] == [log["lr"] for log in expected_logs]
        assert sched2.get_last_lr() == sched.get_last_lr()
    # per batch: 6 batches an epoch, halved every 2 steps; per epoch: halved every 2 epochs
    assert recorder.lrs[:4] == [0.05, 0.025, 0.025, 0.0125]


class ScriptedMetric(Callback):
    """Overwrites a logged value with a scripted sequence, before later callbacks see it."""

    def __init__(self, key, values):
        self.key, self.values = key, values

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


def test_reduce_lr_on_plateau_steps_on_the_monitored_metric():
    model, opt, train, val = _setup()
    plateau = ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=1)
    trainer = Trainer(model, F.cross_entropy, opt, plateau, train, val,
                      monitor_for_plateau="val_accuracy", verbose=0)
    seen = []
    original = plateau.step
    plateau.step = lambda metric: (seen.append(metric), original(metric))[1]
    history = trainer.fit(3)
    assert seen == history.history["val_accuracy"]

    # a scripted metric: the torch scheduler given the same values gives the same lrs
    model, opt, train, val = _setup()
    plateau = ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=1)
    values = [1.0, 0.9, 0.95, 0.97, 0.99, 0.8]
    trainer = Trainer(model, F.cross_entropy, opt, plateau, train, val,
                      monitor_for_plateau="train_loss", verbose=0)
    trainer.fit = _with_scripted_logs(trainer, "train_loss", values)
    lrs = trainer.fit(6).history["lr"]
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.05)
    t_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(t_opt, mode="min", factor=0.5,
                                                         patience=1)
    expected = []
    for v in values:
        expected.append(t_opt.param_groups[0]["lr"])
        t_sched.step(v)
    assert lrs == expected and lrs[-1] < lrs[0]


def _with_scripted_logs(trainer, key, values):
    """fit() whose epoch logs carry scripted values for ``key`` before the scheduler sees
    them (patches the trainer's scheduler step, the only reader that runs before callbacks)."""
    real = trainer._step_scheduler_after_epoch

    def scripted(logs):
        logs[key] = values[len(trainer.history)]
        real(logs)
    trainer._step_scheduler_after_epoch = scripted
    return Trainer.fit.__get__(trainer)


def test_missing_monitor_and_bad_arguments_are_clear_errors():
    model, opt, train, _ = _setup()
    plateau = ReduceLROnPlateau(opt)
    trainer = Trainer(model, F.cross_entropy, opt, plateau, train, verbose=0)
    with pytest.raises(ValueError, match=r"monitor 'val_loss' is not among .*train_loss"):
        trainer.fit(1)
    with pytest.raises(ValueError, match="scheduler_step"):
        Trainer(model, F.cross_entropy, opt, scheduler_step="step")
    with pytest.raises(ValueError, match="ReduceLROnPlateau steps on an epoch metric"):
        Trainer(model, F.cross_entropy, opt, plateau, scheduler_step="batch")
    with pytest.raises(ValueError, match="grad_clip"):
        Trainer(model, F.cross_entropy, opt, grad_clip=0)
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        Trainer(model, F.cross_entropy, opt, metrics=["f1"])
    with pytest.raises(ValueError, match="no train_loader"):
        Trainer(model, F.cross_entropy, opt).fit(1)


def test_metrics_topk_matches_torch_and_user_functions_are_named():
    rng = np.random.default_rng(3)
    outputs = rng.normal(size=(50, 7)).astype(np.float32)
    targets = rng.integers(0, 7, 50)
    for k in (1, 3, 5):
        metric = TopK(k)
        metric.update(outputs, targets)
        top = torch.from_numpy(outputs).topk(k, dim=1).indices
        expected = (top == torch.from_numpy(targets)[:, None]).any(1).double().mean().item()
        assert metric.compute() == pytest.approx(expected, abs=1e-12)

    def error_rate(out, y):
        return float((out.argmax(1) != y).mean())
    metrics = build_metrics(["loss", "accuracy", "top5", error_rate])
    assert [m.name for m in metrics] == ["accuracy", "top5", "error_rate"]
    metrics = build_metrics({"err": error_rate, "acc": "accuracy", "hits@2": TopK(2)})
    assert [m.name for m in metrics] == ["err", "acc", "hits@2"]
    acc, err = metrics[1], metrics[0]
    for m in (acc, err):
        m.update(outputs[:20], targets[:20])
        m.update(outputs[20:], targets[20:])
    assert acc.compute() + err.compute() == pytest.approx(1.0)
    assert acc.compute() == pytest.approx(float((outputs.argmax(1) == targets).mean()))


def test_user_metric_in_fit_and_history_is_json():
    def mean_confidence(out, y):
        e = np.exp(out - out.max(1, keepdims=True))
        return float((e / e.sum(1, keepdims=True)).max(1).mean())
    model, opt, train, val = _setup()
    trainer = Trainer(model, F.cross_entropy, opt, train_loader=train, val_loader=val,
                      metrics=["loss", mean_confidence], verbose=0)
    history = trainer.fit(2)
    assert set(history.history) == {"train_loss", "train_mean_confidence", "val_loss",
                                    "val_mean_confidence", "lr"}
    assert all(0.2 <= v <= 1 for v in history.history["val_mean_confidence"])
    restored = History.from_dict(json.loads(history.to_json()))
    assert restored == history and restored.epoch == [0, 1]


def test_history_pads_late_keys_and_names_missing_ones():
    h = History()
    h.append(0, {"a": 1.0})
    h.append(1, {"a": 2.0, "b": 3.0})
    assert h.history["a"] == [1.0, 2.0] and math.isnan(h.history["b"][0])
    with pytest.raises(KeyError, match="History has no 'c'"):
        h["c"]


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def _fit_with_output(monkeypatch, capsys, stream, verbose):
    monkeypatch.setattr("sys.stderr", stream)
    model, opt, train, val = _setup()
    Trainer(model, F.cross_entropy, opt, train_loader=train, val_loader=val,
            verbose=verbose).fit(2)
    return capsys.readouterr().out, stream.getvalue()


def test_progress_bar_only_on_a_terminal(monkeypatch, capsys):
    out, err = _fit_with_output(monkeypatch, capsys, io.StringIO(), verbose=1)
    assert err == ""  # not a TTY: no bar at all
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2") and "val_loss" in lines[0]
    out, err = _fit_with_output(monkeypatch, capsys, FakeTTY(), verbose=1)
    assert "samples/s" in err and "loss" in err and "epoch 1/2" in err  # the tqdm bar
    assert len(out.strip().splitlines()) == 2
    out, err = _fit_with_output(monkeypatch, capsys, FakeTTY(), verbose=0)
    assert out == "" and err == ""
    out, err = _fit_with_output(monkeypatch, capsys, FakeTTY(), verbose=2)
    assert err == "" and len(out.strip().splitlines()) == 2


def test_stop_training_from_a_callback_and_fit_continues_to_a_total():
    class StopAfterFirst(Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.trainer.stop_training = True
    model, opt, train, val = _setup()
    trainer = Trainer(model, F.cross_entropy, opt, train_loader=train, callbacks=[
        StopAfterFirst()], verbose=0)
    assert len(trainer.fit(5)) == 1
    trainer.callbacks = []
    assert trainer.fit(3).epoch == [0, 1, 2]  # epochs is the total to reach
    with pytest.warns(UserWarning, match="nothing to train"):
        trainer.fit(2)
