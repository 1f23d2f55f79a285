"""gradcheck_module (every real layer passes, a planted wrong backward is flagged, the model
is untouched) and TrainingHealth (hand-computed numbers, vanishing/exploding warnings)."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.autograd import REGISTRY, Function
from ember.diagnostics import (GradcheckResult, TrainingHealth, TrainingHealthWarning,
                               _add_forward_hook, gradcheck_module)


def _randn(*shape, scale=1.0):
    return ember.tensor(np.random.default_rng(sum(shape)).standard_normal(shape) * scale)


def _mse_to_random(out):
    target = np.random.default_rng(1).standard_normal(out.shape)
    return F.mse_loss(out, ember.tensor(target, dtype=out.dtype))


class _PoolUnpool(nn.Module):
    """Conv -> MaxPool2d(return_indices) -> MaxUnpool2d: MaxUnpool2d needs the indices."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.pool, self.unpool = nn.MaxPool2d(2, return_indices=True), nn.MaxUnpool2d(2)

    def forward(self, x):
        out, indices = self.pool(self.conv(x))
        return self.unpool(out, indices)


class _BilinearPair(nn.Module):
    def __init__(self):
        super().__init__()
        self.bilinear = nn.Bilinear(3, 2, 4)

    def forward(self, a, b):
        return self.bilinear(a, b)


def _conv(*layers):
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), *layers)


def _linear(*layers, width=4):
    return nn.Sequential(nn.Linear(3, width), *layers)


ACTIVATIONS = [nn.ReLU(), nn.ReLU6(), nn.LeakyReLU(0.1), nn.Sigmoid(), nn.Tanh(), nn.ELU(),
               nn.SELU(), nn.GELU(), nn.GELU("tanh"), nn.SiLU(), nn.Softplus(),
               nn.Hardtanh(), nn.Softmax(dim=1), nn.LogSoftmax(dim=1), nn.LogSigmoid()]

# (id, model factory, inputs, loss on the output); inputs are scaled so that ReLU6 and
# Hardtanh see values past their corners.
LAYER_CASES = [
    ("Linear", lambda: nn.Linear(3, 4), (_randn(5, 3),), _mse_to_random),
    ("Bilinear", _BilinearPair, (_randn(5, 3), _randn(5, 2)), _mse_to_random),
    ("Conv1d", lambda: nn.Conv1d(2, 3, 3, padding=1), (_randn(2, 2, 7),), _mse_to_random),
    ("Conv2d", lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (_randn(2, 2, 6, 6),),
     _mse_to_random),
    ("Conv2d-groups-dilation", lambda: nn.Conv2d(2, 4, 3, padding=2, dilation=2, groups=2),
     (_randn(2, 2, 5, 5),), _mse_to_random),
    ("ConvTranspose2d", lambda: nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1,
                                                   output_padding=1),
     (_randn(2, 2, 3, 3),), _mse_to_random),
    ("BatchNorm1d-train", lambda: _linear(nn.BatchNorm1d(4)), (_randn(6, 3),), _mse_to_random),
    ("BatchNorm2d-train", lambda: _conv(nn.BatchNorm2d(4)), (_randn(3, 2, 4, 4),),
     _mse_to_random),
    ("LayerNorm", lambda: _linear(nn.LayerNorm(4)), (_randn(5, 3),), _mse_to_random),
    ("GroupNorm", lambda: _conv(nn.GroupNorm(2, 4)), (_randn(2, 2, 3, 3),), _mse_to_random),
    ("InstanceNorm2d", lambda: _conv(nn.InstanceNorm2d(4, affine=True)),
     (_randn(2, 2, 4, 4),), _mse_to_random),
    ("Embedding", lambda: nn.Embedding(10, 4), (ember.tensor([[1, 3, 5], [7, 9, 3]]),),
     _mse_to_random),
    ("MaxPool2d", lambda: _conv(nn.MaxPool2d(2)), (_randn(2, 2, 4, 4),), _mse_to_random),
    ("AvgPool2d", lambda: _conv(nn.AvgPool2d(2, stride=1, padding=1)), (_randn(2, 2, 4, 4),),
     _mse_to_random),
    ("AdaptiveAvgPool2d", lambda: _conv(nn.AdaptiveAvgPool2d((2, 3))), (_randn(2, 2, 5, 5),),
     _mse_to_random),
    ("AdaptiveMaxPool2d", lambda: _conv(nn.AdaptiveMaxPool2d(2)), (_randn(2, 2, 5, 5),),
     _mse_to_random),
    ("MaxUnpool2d", _PoolUnpool, (_randn(2, 1, 4, 4),), _mse_to_random),
    ("Upsample-nearest", lambda: _conv(nn.Upsample(scale_factor=2)), (_randn(1, 2, 3, 3),),
     _mse_to_random),
    ("Upsample-bilinear", lambda: _conv(nn.Upsample(scale_factor=2, mode="bilinear")),
     (_randn(1, 2, 3, 3),), _mse_to_random),
    ("PixelShuffle", lambda: _conv(nn.PixelShuffle(2)), (_randn(1, 2, 3, 3),), _mse_to_random),
    ("PixelUnshuffle", lambda: _conv(nn.PixelUnshuffle(2)), (_randn(1, 2, 4, 4),),
     _mse_to_random),
    ("Flatten-Unflatten", lambda: _conv(nn.Flatten(), nn.Unflatten(1, (4, 9))),
     (_randn(2, 2, 3, 3),), _mse_to_random),
    ("Identity", lambda: _linear(nn.Identity()), (_randn(5, 3),), _mse_to_random),
    ("Dropout", lambda: _linear(nn.Dropout(0.5)), (_randn(5, 3),), _mse_to_random),
    ("AlphaDropout", lambda: _linear(nn.AlphaDropout(0.5)), (_randn(5, 3),), _mse_to_random),
    ("Dropout2d", lambda: _conv(nn.Dropout2d(0.5)), (_randn(2, 2, 3, 3),), _mse_to_random),
    *[(type(a).__name__ + ("-tanh" if getattr(a, "approximate", "") == "tanh" else ""),
       lambda a=a: _linear(a), (_randn(5, 3, scale=4.0),), _mse_to_random)
      for a in ACTIVATIONS],
]

_TARGET = ember.tensor([0, 2, 1, 3, 2])
_PROBS = np.random.default_rng(2).dirichlet(np.ones(4), size=5)
LOSS_CASES = [
    ("MSELoss", [], lambda: nn.MSELoss(), lambda out: _mse_to_random(out)),
    ("L1Loss", [], nn.L1Loss, None),
    ("HuberLoss", [], lambda: nn.HuberLoss(delta=0.5), None),
    ("SmoothL1Loss", [], lambda: nn.SmoothL1Loss(beta=0.5), None),
    ("BCELoss", [nn.Sigmoid()], nn.BCELoss, "binary"),
    ("BCEWithLogitsLoss", [], nn.BCEWithLogitsLoss, "binary"),
    ("CrossEntropyLoss", [], lambda: nn.CrossEntropyLoss(label_smoothing=0.1), "classes"),
    ("NLLLoss", [nn.LogSoftmax(dim=1)], nn.NLLLoss, "classes"),
    ("KLDivLoss", [nn.LogSoftmax(dim=1)], lambda: nn.KLDivLoss(reduction="batchmean"),
     "probs"),
]


def _loss_target(kind, shape):
    if kind == "binary":
        return ember.tensor((np.random.default_rng(3).random(shape) > 0.5).astype(np.float64))
    if kind == "classes":
        return _TARGET
    if kind == "probs":
        return ember.tensor(_PROBS)
    return ember.tensor(np.random.default_rng(4).standard_normal(shape))


@pytest.mark.parametrize("make, inputs, loss_fn", [c[1:] for c in LAYER_CASES],
                         ids=[c[0] for c in LAYER_CASES])
def test_every_layer_passes_gradcheck_module(make, inputs, loss_fn):
    ember.manual_seed(0)
    result = gradcheck_module(make(), inputs, loss_fn, max_elements_per_param=24,
                              verbose=False)
    assert isinstance(result, GradcheckResult)
    assert result.ok, result.table()
    assert result.params and all(c.max_rel_error < 1e-4 for c in result.params.values())


@pytest.mark.parametrize("layers, make_loss, target_kind", [c[1:] for c in LOSS_CASES],
                         ids=[c[0] for c in LOSS_CASES])
def test_every_loss_passes_gradcheck_module(layers, make_loss, target_kind):
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), *layers)
    loss_module = make_loss()
    target = _loss_target(target_kind, (5, 4))
    result = gradcheck_module(model, _randn(5, 3), lambda out: loss_module(out, target),
                              verbose=False)
    assert result.ok, result.table()


def test_the_layer_table_covers_every_layer_in_ember_nn():
    covered = {case[0].split("-")[0] for case in LAYER_CASES} | {c[0] for c in LOSS_CASES}
    covered |= {"Flatten", "Unflatten", "MaxUnpool2d", "Upsample"}
    containers = {"Module", "Sequential", "ModuleList", "ModuleDict"}
    layers = {name for name in nn.__all__ if isinstance(getattr(nn, name), type)
              and issubclass(getattr(nn, name), nn.Module)} - containers
    assert layers - covered == set()


# ---------------------------------------------------------------- a planted bug
class _SquareWithWrongBackward(Function):
    """x² whose backward forgets the factor 2: used only here, never registered."""

    name = "SquareWithWrongBackward"

    def forward(self, x):
        self.save(x)
        return x * x

    def backward(self, g):
        (x,) = self.saved
        return g * x  # planted: the true gradient is 2 g x


class _SquareWithRightBackward(_SquareWithWrongBackward):
    def backward(self, g):
        (x,) = self.saved
        return 2 * g * x


class _Squarer(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fc1, self.fc2, self.fn = nn.Linear(3, 4), nn.Linear(4, 2), fn

    def forward(self, x):
        return self.fc2(self.fn.apply(self.fc1(x)))


def test_a_planted_wrong_backward_is_flagged(capsys):
    ember.manual_seed(0)
    result = gradcheck_module(_Squarer(_SquareWithWrongBackward), _randn(5, 3), _mse_to_random)
    assert not result.ok
    assert result.failed == ["fc1.weight", "fc1.bias"]  # fc2 sits after the bad op
    assert result.params["fc1.weight"].max_rel_error > 0.1
    assert result.params["fc2.weight"].ok and result.params["fc2.weight"].max_rel_error < 1e-6
    printed = capsys.readouterr().out
    assert "MISMATCH in fc1.weight, fc1.bias" in printed
    assert [line.split()[0] for line in printed.splitlines() if "FAILED" in line] == \
        ["fc1.weight", "fc1.bias"]
    assert "SquareWithWrongBackward" not in REGISTRY  # the op table is untouched


def test_the_same_module_with_the_right_backward_passes():
    ember.manual_seed(0)
    result = gradcheck_module(_Squarer(_SquareWithRightBackward), _randn(5, 3), _mse_to_random,
                              verbose=False)
    assert result.ok and result.failed == []


def test_the_original_model_is_untouched():
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))
    before = {k: v.array.copy() for k, v in model.state_dict().items()}
    rng_state = copy.deepcopy(ember.get_rng_state())
    gradcheck_module(model, _randn(6, 3), _mse_to_random, verbose=False)
    after = model.state_dict()
    for key, value in before.items():
        assert after[key].array.dtype == value.dtype  # still float32 (int64 counter)
        np.testing.assert_array_equal(after[key].array, value)  # running stats too
    assert all(p.grad is None for p in model.parameters())
    assert ember.get_rng_state() == rng_state  # the global random state is as it was


def test_big_parameters_are_checked_on_a_fixed_sample():
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 30), nn.Tanh(), nn.Linear(30, 1))
    x = _randn(8, 40)
    first = gradcheck_module(model, x, _mse_to_random, max_elements_per_param=20,
                             verbose=False)
    again = gradcheck_module(model, x, _mse_to_random, max_elements_per_param=20,
                             verbose=False)
    assert [c.checked for c in first.params.values()] == [20, 20, 20, 1]
    assert first.ok and first.params == again.params  # the same subset, the same errors
    full = gradcheck_module(model, x, _mse_to_random, max_elements_per_param=None,
                            verbose=False)
    assert full.params["0.weight"].checked == 1200


def test_gradcheck_module_is_reachable_from_autograd_and_loaded_lazily():
    assert ember.autograd.gradcheck_module is gradcheck_module
    code = "import sys, ember; print('ember.diagnostics' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"  # the core does not import nn-level diagnostics
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        ember.autograd.nonexistent  # noqa: B018


def test_loss_fn_must_return_a_scalar():
    with pytest.raises(TypeError, match="loss_fn must return a scalar Tensor"):
        gradcheck_module(nn.Linear(3, 2), _randn(4, 3), lambda out: out, verbose=False)


# ================================================================ TrainingHealth
def _sgd_step(model, optimizer, x, y, health, loss_fn=F.mse_loss):
    loss = loss_fn(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    health.step()
    return loss


def test_numbers_equal_hand_computed_ones():
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3), nn.Sigmoid(),
                          nn.Linear(3, 2), nn.Tanh())
    health = TrainingHealth(model)
    before = [p.array.copy() for p in model.parameters()]
    x, y = _randn(16, 4, scale=3.0), _randn(16, 2)
    optimizer = ember.optim.SGD(model.parameters(), lr=0.1)
    _sgd_step(model, optimizer, x, y, health)
    latest = health.latest()
    for name, (i, j) in {"0": (0, 1), "2": (2, 3), "4": (4, 5)}.items():
        grads = [model[int(name)].weight.grad.array, model[int(name)].bias.grad.array]
        grad_norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
        change = np.sqrt(sum(((a - b).astype(np.float64) ** 2).sum()
                             for a, b in zip([model[int(name)].weight.array,
                                              model[int(name)].bias.array], before[i:j + 1])))
        weight = np.sqrt(sum((b.astype(np.float64) ** 2).sum() for b in before[i:j + 1]))
        assert latest[name]["grad_norm"] == pytest.approx(grad_norm, rel=1e-6)
        assert latest[name]["update_ratio"] == pytest.approx(change / weight, rel=1e-6)
        assert latest[name]["update_ratio"] == pytest.approx(0.1 * grad_norm / weight,
                                                             rel=1e-4)  # SGD: Δw = -lr g
    with ember.no_grad():  # the forward the hooks saw, recomputed by hand
        h1 = np.maximum(x.array @ before[0].T + before[1], 0)
        h2 = 1 / (1 + np.exp(-(h1 @ before[2].T + before[3])))
        h3 = np.tanh(h2 @ before[4].T + before[5])
    assert latest["1"]["dead_fraction"] == pytest.approx(np.mean(np.all(h1 <= 0, axis=0)))
    assert latest["3"]["saturation"] == pytest.approx(np.mean((h2 < 0.01) | (h2 > 0.99)))
    assert latest["5"]["saturation"] == pytest.approx(np.mean(np.abs(h3) > 0.99))
    assert list(health.history) == ["0", "1", "2", "3", "4", "5"]  # model order


def test_a_relu_layer_with_a_large_negative_bias_is_all_dead():
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1))
    with ember.no_grad():
        model[0].bias.fill_(-100.0)
    health = TrainingHealth(model)
    optimizer = ember.optim.SGD(model.parameters(), lr=0.01)
    with pytest.warns(TrainingHealthWarning, match="layer '0' are vanishing.*dead ReLUs after "
                      "it") as caught:
        _sgd_step(model, optimizer, _randn(32, 5), _randn(32, 1), health)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert health.latest()["1"]["dead_fraction"] == 1.0
    assert health.latest()["0"]["grad_norm"] == 0.0  # no gradient reaches a dead layer


def _deep_sigmoid_net(depth=10, width=16, scale=0.01):
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(width, 1))
    with ember.no_grad():
        for p in model.parameters():
            p.mul_(scale)  # a tiny initialisation
    return model


def test_a_deep_sigmoid_net_with_tiny_init_warns_vanishing_once_per_layer():
    ember.manual_seed(0)
    model = _deep_sigmoid_net()
    health = TrainingHealth(model)
    optimizer = ember.optim.SGD(model.parameters(), lr=0.1)
    x = _randn(32, 16)
    y = ember.tensor(np.sin(x.array[:, :1] * 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(4):
            _sgd_step(model, optimizer, x, y, health)
    vanishing = [str(w.message) for w in caught if issubclass(w.category, TrainingHealthWarning)
                 and "vanishing" in str(w.message)]
    layers = [message.split("'")[1] for message in vanishing]
    assert "0" in layers  # the first layer, furthest from the loss
    assert len(layers) == len(set(layers))  # once per layer over four steps
    assert "20" not in layers  # the output layer learns
    assert ("0", "vanishing") in health.warned
    assert all("Try ReLU" in message for message in vanishing)


def test_a_huge_init_and_learning_rate_warn_exploding_once():
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    with ember.no_grad():
        model[2].weight.mul_(1e4)
    health = TrainingHealth(model)
    optimizer = ember.optim.SGD(model.parameters(), lr=10.0)
    x, y = _randn(16, 4), _randn(16, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            _sgd_step(model, optimizer, x, y, health)
    exploding = [str(w.message) for w in caught if "exploding" in str(w.message)]
    layers = [message.split("'")[1] for message in exploding]
    assert "2" in layers and len(layers) == len(set(layers))
    assert health.history["2"]["grad_norm"][0] > 1e3
    assert "clip_grad_norm_" in exploding[0]


def test_evaluation_under_no_grad_is_not_recorded_and_close_removes_hooks():
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    health = TrainingHealth(model)
    with ember.no_grad():
        model(_randn(8, 3))
    health.step()
    assert "dead_fraction" not in health.history["1"]
    health.close()
    model(_randn(8, 3))
    health.step()
    assert "dead_fraction" not in health.history["1"]
    assert len(health.history["0"]["grad_norm"]) == 2  # NaN: no gradient yet
    assert np.isnan(health.history["0"]["grad_norm"]).all()


def test_the_fallback_forward_tap_calls_the_hook_and_is_not_copied():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    relu = model[1]
    object.__setattr__(relu, "register_forward_hook", None)  # as if Module had none
    seen = []
    remove = _add_forward_hook(relu, lambda m, args, out: seen.append(out.shape))
    model(_randn(2, 3))
    twin = copy.deepcopy(model)
    twin(_randn(5, 3))  # the copy computes but does not report
    assert seen == [(2, 4)]
    remove()
    model(_randn(2, 3))
    assert seen == [(2, 4)] and "forward" not in relu.__dict__


def test_works_as_a_trainer_callback():
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    health = TrainingHealth()  # as a callback: watches the trainer's model
    health.trainer = type("FakeTrainer", (), {"model": model})()
    health.on_train_begin({})
    optimizer = ember.optim.SGD(model.parameters(), lr=0.1)
    for batch in range(3):
        health.on_batch_begin(batch, {})
        loss = F.mse_loss(model(_randn(8, 3)), _randn(8, 1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        health.on_batch_end(batch, {"loss": loss.item()})
    health.on_epoch_end(0, {})
    health.on_train_end({})
    assert health.steps == 3 and len(health.history["1"]["dead_fraction"]) == 3
    assert "grad_norm" in health.report() and health.model is model


def test_step_without_a_model_says_what_to_do():
    with pytest.raises(RuntimeError, match="no model to watch"):
        TrainingHealth().step()


def test_inside_the_real_trainer():
    train = pytest.importorskip("ember.train")
    from ember.data import DataLoader, TensorDataset

    assert isinstance(TrainingHealth(), train.Callback)
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    loader = DataLoader(TensorDataset(np.random.default_rng(0).standard_normal((40, 3))
                                      .astype(np.float32),
                                      np.zeros((40, 1), np.float32)), batch_size=10)
    health = TrainingHealth()
    trainer = train.Trainer(model, F.mse_loss, ember.optim.SGD(model.parameters(), lr=0.1),
                            train_loader=loader, metrics=("loss",), callbacks=[health],
                            verbose=0)
    trainer.fit(2)
    assert health.steps == 8
    assert len(health.history["0"]["update_ratio"]) == 8
    assert all(r > 0 for r in health.history["0"]["update_ratio"])
