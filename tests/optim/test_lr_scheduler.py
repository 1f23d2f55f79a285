"""ember.optim.lr_scheduler against torch.optim.lr_scheduler, row by row.

Each row builds the same scheduler in both libraries (a builder receives the
scheduler module and an optimizer over two groups with different base lrs),
steps it 100 times, and compares every learning rate (and, for OneCycleLR, the
momentum or beta1 it sets) at 1e-12.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.optim.lr_scheduler as T

import ember
import ember.optim.lr_scheduler as E
from ember import optim

STEPS = 100
BASE_LRS = (0.1, 0.05)


def make_optimizer(lib: str, kind: str = "sgd"):
    """An optimizer over two dummy parameters (never given gradients) in two groups."""
    if lib == "ember":
        params = [ember.zeros(2, requires_grad=True) for _ in BASE_LRS]
        cls = {"sgd": optim.SGD, "adam": optim.Adam}[kind]
    else:
        params = [torch.zeros(2, requires_grad=True) for _ in BASE_LRS]
        cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[kind]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, BASE_LRS)]
    return cls(groups, momentum=0.9) if kind == "sgd" else cls(groups)


def halving_every_20(epoch):
    return 0.5 ** (epoch // 20)


class Warmup:
    """A callable object: LambdaLR saves its __dict__ in the state dict."""

    def __init__(self, steps):
        self.steps = steps

    def __call__(self, epoch):
        return min(1.0, (epoch + 1) / self.steps)


ROWS = {
    "StepLR": lambda S, o: S.StepLR(o, step_size=7, gamma=0.5),
    "StepLR-every-step": lambda S, o: S.StepLR(o, step_size=1, gamma=0.97),
    "MultiStepLR": lambda S, o: S.MultiStepLR(o, milestones=[10, 30, 30, 70], gamma=0.3),
    "MultiStepLR-unsorted": lambda S, o: S.MultiStepLR(o, milestones=[50, 5]),
    "ExponentialLR": lambda S, o: S.ExponentialLR(o, gamma=0.97),
    "CosineAnnealingLR-past-T_max": lambda S, o: S.CosineAnnealingLR(o, T_max=30),
    "CosineAnnealingLR-eta_min": lambda S, o: S.CosineAnnealingLR(o, T_max=100, eta_min=1e-3),
    "CosineAnnealingLR-short": lambda S, o: S.CosineAnnealingLR(o, T_max=7, eta_min=0.01),
    "WarmRestarts": lambda S, o: S.CosineAnnealingWarmRestarts(o, T_0=10),
    "WarmRestarts-T_mult": lambda S, o: S.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2,
                                                                     eta_min=1e-3),
    "WarmRestarts-T_mult3": lambda S, o: S.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=3),
    "OneCycleLR": lambda S, o: S.OneCycleLR(o, max_lr=0.5, total_steps=STEPS),
    "OneCycleLR-linear": lambda S, o: S.OneCycleLR(
        o, max_lr=[0.5, 0.2], epochs=10, steps_per_epoch=10, pct_start=0.25,
        anneal_strategy="linear", div_factor=10.0, final_div_factor=100.0),
    "OneCycleLR-three-phase": lambda S, o: S.OneCycleLR(
        o, max_lr=0.3, total_steps=120, three_phase=True, base_momentum=[0.8, 0.7],
        max_momentum=[0.9, 0.99]),
    "OneCycleLR-no-momentum": lambda S, o: S.OneCycleLR(o, max_lr=0.3, total_steps=STEPS,
                                                        cycle_momentum=False),
    "LinearLR": lambda S, o: S.LinearLR(o),
    "LinearLR-partial": lambda S, o: S.LinearLR(o, start_factor=0.25, end_factor=0.75,
                                                total_iters=40),
    "LinearLR-decay": lambda S, o: S.LinearLR(o, start_factor=1.0, end_factor=0.0,
                                              total_iters=STEPS),
    "LambdaLR": lambda S, o: S.LambdaLR(o, lr_lambda=lambda epoch: 0.95 ** epoch),
    "LambdaLR-per-group": lambda S, o: S.LambdaLR(o, lr_lambda=[halving_every_20, Warmup(10)]),
    "SequentialLR": lambda S, o: S.SequentialLR(
        o, schedulers=[S.LinearLR(o, start_factor=0.1, total_iters=10),
                       S.ExponentialLR(o, gamma=0.95)], milestones=[10]),
    "SequentialLR-three": lambda S, o: S.SequentialLR(
        o, schedulers=[S.ConstantLR(o, factor=0.5, total_iters=3),
                       S.CosineAnnealingLR(o, T_max=30, eta_min=1e-3),
                       S.StepLR(o, step_size=9, gamma=0.5)], milestones=[5, 40]),
    "ConstantLR": lambda S, o: S.ConstantLR(o, factor=0.5, total_iters=8),
    "PolynomialLR": lambda S, o: S.PolynomialLR(o, total_iters=60, power=2.0),
    "MultiplicativeLR": lambda S, o: S.MultiplicativeLR(o, lr_lambda=lambda epoch: 0.98),
    "ChainedScheduler": lambda S, o: S.ChainedScheduler(
        [S.ConstantLR(o, factor=0.25, total_iters=5), S.ExponentialLR(o, gamma=0.96)]),
}
ADAM_ROWS = {
    "OneCycleLR-adam-betas": lambda S, o: S.OneCycleLR(o, max_lr=0.01, total_steps=STEPS,
                                                       base_momentum=0.8, max_momentum=0.92),
    "OneCycleLR-adam-three-phase": lambda S, o: S.OneCycleLR(o, max_lr=0.01, total_steps=STEPS,
                                                             three_phase=True),
}
ALL_ROWS = [(name, "sgd") for name in ROWS] + [(name, "adam") for name in ADAM_ROWS]


def builder(name: str):
    return ROWS.get(name) or ADAM_ROWS[name]


def twins(name: str, kind: str):
    opt, topt = make_optimizer("ember", kind), make_optimizer("torch", kind)
    return opt, builder(name)(E, opt), topt, builder(name)(T, topt)


def assert_same_schedule(opt, sched, topt, tsched, where: str) -> None:
    np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-12, atol=0,
                               err_msg=where)
    for group, tgroup in zip(opt.param_groups, topt.param_groups):
        np.testing.assert_allclose(group["lr"], tgroup["lr"], rtol=1e-12, atol=0, err_msg=where)
        for key in ("momentum", "betas"):
            if key in tgroup:
                np.testing.assert_allclose(group[key], tgroup[key], rtol=1e-12, atol=0,
                                           err_msg=f"{where} {key}")


def step_both(opt, sched, topt, tsched, steps: int, start: int = 0) -> set:
    """Step both twins, comparing after every step; returns the distinct lrs seen."""
    seen = set()
    for k in range(start, start + steps):
        opt.step()
        sched.step()
        topt.step()
        tsched.step()
        assert_same_schedule(opt, sched, topt, tsched, where=f"step {k + 1}")
        seen.add(tuple(sched.get_last_lr()))
    return seen


@pytest.mark.parametrize("name,kind", ALL_ROWS, ids=[n for n, _ in ALL_ROWS])
def test_schedule_matches_torch(name, kind):
    opt, sched, topt, tsched = twins(name, kind)
    assert_same_schedule(opt, sched, topt, tsched, where="after construction")
    assert len(step_both(opt, sched, topt, tsched, STEPS)) > 1  # the schedule did move
    assert [g["initial_lr"] for g in opt.param_groups] == \
        [g["initial_lr"] for g in topt.param_groups]


@pytest.mark.parametrize("name,kind", ALL_ROWS, ids=[n for n, _ in ALL_ROWS])
def test_state_dict_round_trip_mid_sequence(name, kind):
    opt, sched, topt, tsched = twins(name, kind)
    step_both(opt, sched, topt, tsched, 40)
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    assert _allowed_types(sched_state)
    assert set(sched_state) == set(tsched.state_dict())
    # as torch advises: build the scheduler, then load the optimizer, then the scheduler
    opt2 = make_optimizer("ember", kind)
    sched2 = builder(name)(E, opt2)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    assert_same_schedule(opt2, sched2, topt, tsched, where="after loading")
    step_both(opt2, sched2, topt, tsched, STEPS - 40, start=40)


def _allowed_types(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _allowed_types(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_allowed_types(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def test_lambda_state_dict_saves_callable_objects_only():
    opt = make_optimizer("ember")
    warmup = Warmup(10)
    sched = E.LambdaLR(opt, lr_lambda=[halving_every_20, warmup])
    state = sched.state_dict()
    assert state["lr_lambdas"] == [None, {"steps": 10}]
    other = Warmup(3)
    sched2 = E.LambdaLR(make_optimizer("ember"), lr_lambda=[halving_every_20, other])
    sched2.load_state_dict(state)
    assert other.steps == 10 and sched2.lr_lambdas[0] is halving_every_20


# ---------------------------------------------------------------- fractional epochs, closed forms
@pytest.mark.parametrize("kwargs", [dict(T_0=10), dict(T_0=4, T_mult=2, eta_min=0.001),
                                    dict(T_0=3, T_mult=3)])
def test_warm_restarts_fractional_epochs(kwargs):
    opt, topt = make_optimizer("ember"), make_optimizer("torch")
    sched = E.CosineAnnealingWarmRestarts(opt, **kwargs)
    tsched = T.CosineAnnealingWarmRestarts(topt, **kwargs)
    for k in range(STEPS):
        epoch = k * 0.37
        opt.step()
        topt.step()
        sched.step(epoch)
        tsched.step(epoch)
        assert_same_schedule(opt, sched, topt, tsched, where=f"epoch {epoch}")
        assert sched.last_epoch == tsched.last_epoch == math.floor(epoch)
    with pytest.raises(ValueError, match="non-negative epoch"):
        sched.step(-1)


CLOSED_FORM_ROWS = ["StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR-eta_min",
                    "LinearLR-partial", "ConstantLR", "PolynomialLR"]


@pytest.mark.parametrize("name", CLOSED_FORM_ROWS)
def test_step_with_epoch_uses_closed_form(name):
    opt, sched, topt, tsched = twins(name, "sgd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in [3, 8, 15, 15, 31, 64, 2, 90]:
            opt.step()
            topt.step()
            sched.step(epoch)
            tsched.step(epoch)
            assert_same_schedule(opt, sched, topt, tsched, where=f"epoch {epoch}")


# ---------------------------------------------------------------- ReduceLROnPlateau
def plateau_series() -> list[float]:
    """Improvements, long plateaus, tiny improvements below the thresholds, spikes."""
    rng = np.random.default_rng(1)
    values, level = [], 10.0
    for segment in range(10):
        for _ in range(10):
            if segment % 3 == 0:
                level -= 0.5  # steady improvement
            elif segment % 3 == 1:
                level -= 1e-5  # improves by less than any threshold used
            values.append(level + (0.3 * rng.random() if segment % 3 == 2 else 0.0))
    return values


PLATEAU_ROWS = [
    dict(),
    dict(mode="min", factor=0.5, patience=2),
    dict(mode="min", factor=0.5, patience=3, threshold=1e-3, threshold_mode="abs"),
    dict(mode="min", factor=0.5, patience=0, threshold=1e-7, threshold_mode="rel"),
    dict(mode="max", factor=0.3, patience=2),
    dict(mode="max", factor=0.3, patience=1, threshold=0.01, threshold_mode="abs"),
    dict(mode="max", factor=0.3, patience=2, threshold=1e-6, threshold_mode="rel"),
    dict(factor=0.5, patience=1, cooldown=4),
    dict(factor=0.2, patience=1, min_lr=0.01),
    dict(factor=0.2, patience=1, min_lr=[0.02, 1e-3], cooldown=2),
    dict(factor=0.9, patience=0, eps=1e-3),
]


@pytest.mark.parametrize("kwargs", PLATEAU_ROWS, ids=[str(r) for r in PLATEAU_ROWS])
def test_reduce_on_plateau_matches_torch(kwargs):
    opt, topt = make_optimizer("ember"), make_optimizer("torch")
    sched, tsched = E.ReduceLROnPlateau(opt, **kwargs), T.ReduceLROnPlateau(topt, **kwargs)
    sign = -1.0 if kwargs.get("mode") == "max" else 1.0
    series = [sign * v for v in plateau_series()]
    lrs = set()
    for k, metric in enumerate(series):
        opt.step()
        topt.step()
        sched.step(ember.tensor(metric) if k % 2 else metric)  # a Tensor metric works too
        tsched.step(metric)
        assert_same_schedule(opt, sched, topt, tsched, where=f"epoch {k + 1}")
        assert (sched.num_bad_epochs, sched.cooldown_counter) == \
            (tsched.num_bad_epochs, tsched.cooldown_counter)
        lrs.add(sched.get_last_lr()[0])
        if k == 50:  # a state-dict round trip mid-sequence
            state = sched.state_dict()
            assert _allowed_types(state) and set(state) == set(tsched.state_dict())
            sched = E.ReduceLROnPlateau(opt, mode="max" if sign > 0 else "min")
            sched.load_state_dict(state)
    assert len(lrs) > 1  # the series did trigger reductions


# ---------------------------------------------------------------- errors and warnings
BAD_SCHEDULERS = [
    ("LinearLR", lambda S, o: S.LinearLR(o, start_factor=0.0)),
    ("LinearLR", lambda S, o: S.LinearLR(o, end_factor=1.5)),
    ("ConstantLR", lambda S, o: S.ConstantLR(o, factor=2.0)),
    ("WarmRestarts", lambda S, o: S.CosineAnnealingWarmRestarts(o, T_0=0)),
    ("WarmRestarts", lambda S, o: S.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=0)),
    ("WarmRestarts", lambda S, o: S.CosineAnnealingWarmRestarts(o, T_0=5, eta_min="x")),
    ("OneCycleLR", lambda S, o: S.OneCycleLR(o, max_lr=0.1)),
    ("OneCycleLR", lambda S, o: S.OneCycleLR(o, max_lr=0.1, total_steps=0)),
    ("OneCycleLR", lambda S, o: S.OneCycleLR(o, max_lr=0.1, epochs=0, steps_per_epoch=3)),
    ("OneCycleLR", lambda S, o: S.OneCycleLR(o, max_lr=0.1, total_steps=10, pct_start=1.5)),
    ("OneCycleLR", lambda S, o: S.OneCycleLR(o, max_lr=0.1, total_steps=10,
                                             anneal_strategy="step")),
    ("OneCycleLR", lambda S, o: S.OneCycleLR(o, max_lr=[0.1], total_steps=10)),
    ("ReduceLROnPlateau", lambda S, o: S.ReduceLROnPlateau(o, factor=1.0)),
    ("ReduceLROnPlateau", lambda S, o: S.ReduceLROnPlateau(o, mode="best")),
    ("ReduceLROnPlateau", lambda S, o: S.ReduceLROnPlateau(o, threshold_mode="pct")),
    ("ReduceLROnPlateau", lambda S, o: S.ReduceLROnPlateau(o, min_lr=[0.1])),
    ("LambdaLR", lambda S, o: S.LambdaLR(o, lr_lambda=[halving_every_20])),
    ("SequentialLR", lambda S, o: S.SequentialLR(o, [S.StepLR(o, 3)], milestones=[3])),
    ("SequentialLR", lambda S, o: S.SequentialLR(o, [S.StepLR(o, 3), S.ReduceLROnPlateau(o)],
                                                 milestones=[3])),
]


@pytest.mark.parametrize("name,build", BAD_SCHEDULERS, ids=[r[0] for r in BAD_SCHEDULERS])
def test_invalid_arguments_raise_like_torch(name, build):
    with pytest.raises(ValueError) as ours:
        build(E, make_optimizer("ember"))
    with pytest.raises(ValueError) as theirs:
        build(T, make_optimizer("torch"))
    assert str(ours.value) == str(theirs.value)


def test_one_cycle_needs_momentum_and_stops_at_total_steps():
    adagrad = optim.Adagrad([ember.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match="must support momentum or beta1"):
        E.OneCycleLR(adagrad, max_lr=0.1, total_steps=10)
    opt = make_optimizer("ember")
    sched = E.OneCycleLR(opt, max_lr=0.1, total_steps=3)
    for _ in range(3):
        opt.step()
        sched.step()
    with pytest.raises(ValueError, match="Tried to step 4 times"):
        sched.step()


def test_requires_an_ember_optimizer():
    with pytest.raises(TypeError, match="is not an Optimizer"):
        E.StepLR(make_optimizer("torch"), step_size=3)
    with pytest.raises(KeyError, match="initial_lr"):
        E.StepLR(make_optimizer("ember"), step_size=3, last_epoch=5)


def test_warns_when_stepped_before_the_optimizer():
    opt = make_optimizer("ember")
    sched = E.StepLR(opt, step_size=3)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        sched.step()
    opt = make_optimizer("ember")
    sched = E.StepLR(opt, step_size=3)
    opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()
        sched.step()


def test_no_false_warning_for_an_optimizer_that_overrides_step():
    class Halving(optim.Optimizer):
        def __init__(self, params, lr=0.1):
            super().__init__(params, dict(lr=lr))

        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.array *= 0.5

    opt = Halving([ember.zeros(2, requires_grad=True)])
    sched = E.ExponentialLR(opt, gamma=0.5)
    opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()
    assert sched.get_last_lr() == [0.05]


def test_get_lr_outside_step_warns():
    sched = E.StepLR(make_optimizer("ember"), step_size=3)
    with pytest.warns(UserWarning, match="get_last_lr"):
        sched.get_lr()


RESUMABLE_ROWS = ["CosineAnnealingLR-past-T_max", "LinearLR-partial", "ExponentialLR",
                  "PolynomialLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR",
                  "LambdaLR", "WarmRestarts-T_mult"]


@pytest.mark.parametrize("name", RESUMABLE_ROWS)
def test_resume_with_last_epoch_matches_torch(name):
    """``last_epoch=k`` resumes from the groups' current lrs and their 'initial_lr'."""
    opt, topt = make_optimizer("ember"), make_optimizer("torch")
    for group, tgroup in zip(opt.param_groups, topt.param_groups):
        group["initial_lr"] = tgroup["initial_lr"] = group["lr"] * 2
    build = builder(name)
    sched = _with_last_epoch(build, E, opt, 4)
    tsched = _with_last_epoch(build, T, topt, 4)
    assert sched.last_epoch == tsched.last_epoch == 5
    assert_same_schedule(opt, sched, topt, tsched, where="after construction")
    step_both(opt, sched, topt, tsched, 30)


def _with_last_epoch(build, module, opt, last_epoch):
    """Run a row's builder with ``last_epoch`` added to the scheduler's arguments."""
    class WithLastEpoch:
        def __getattr__(self, name):
            cls = getattr(module, name)
            return lambda *args, **kwargs: cls(*args, last_epoch=last_epoch, **kwargs)
    return build(WithLastEpoch(), opt)
