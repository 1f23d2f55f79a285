"""ember.optim optimizers against torch.optim, row by row.

Every row runs the same ten steps in both libraries from identical float64
parameters; each step's gradient is that of sum(sin(p) * c), computed by each
library's own autograd at its current parameters. A fourth parameter never
gets a gradient, so every row also checks that it is skipped.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import ember
from ember import optim

SHAPES = [(3,), (2, 4), (), (4, 1, 2)]
FROZEN = 3  # index of the parameter that never receives a gradient
STEPS = 10
RTOL = {np.float64: 1e-9, np.float32: 1e-5}
ATOL = {np.float64: 1e-12, np.float32: 1e-6}

ROWS = [
    (optim.SGD, dict(lr=0.1)),
    (optim.SGD, dict()),  # torch 2.13's default lr 1e-3
    (optim.SGD, dict(lr=0.1, momentum=0.9)),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.3)),
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (optim.SGD, dict(lr=0.1, weight_decay=0.1)),
    (optim.SGD, dict(lr=0.1, maximize=True)),
    (optim.SGD, dict(lr=0.05, momentum=0.5, dampening=0.5, weight_decay=0.2, maximize=True)),
    (optim.SGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1, maximize=True)),
    (optim.Adam, dict()),
    (optim.Adam, dict(lr=0.05)),
    (optim.Adam, dict(lr=0.05, weight_decay=0.1)),
    (optim.Adam, dict(lr=0.05, amsgrad=True)),
    (optim.Adam, dict(lr=0.05, maximize=True)),
    (optim.Adam, dict(lr=0.05, betas=(0.3, 0.6), eps=1e-3)),  # lerp weight >= 0.5 branch
    (optim.Adam, dict(lr=0.05, weight_decay=0.1, amsgrad=True, maximize=True)),
    (optim.Adam, dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),
    (optim.AdamW, dict()),
    (optim.AdamW, dict(lr=0.05, weight_decay=0.1)),
    (optim.AdamW, dict(lr=0.05, weight_decay=0.1, amsgrad=True)),
    (optim.AdamW, dict(lr=0.05, weight_decay=0.1, maximize=True)),
    (optim.AdamW, dict(lr=0.05, weight_decay=0)),
    (optim.RMSprop, dict()),
    (optim.RMSprop, dict(lr=0.01, alpha=0.9, eps=1e-4)),
    (optim.RMSprop, dict(lr=0.01, momentum=0.9)),
    (optim.RMSprop, dict(lr=0.01, centered=True)),
    (optim.RMSprop, dict(lr=0.01, centered=True, momentum=0.9)),
    (optim.RMSprop, dict(lr=0.01, centered=True, alpha=0.3)),  # lerp weight >= 0.5 branch
    (optim.RMSprop, dict(lr=0.01, weight_decay=0.1)),
    (optim.RMSprop, dict(lr=0.01, maximize=True)),
    (optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1, maximize=True)),
    (optim.Adagrad, dict()),
    (optim.Adagrad, dict(lr=0.1, lr_decay=0.05)),
    (optim.Adagrad, dict(lr=0.1, weight_decay=0.1)),
    (optim.Adagrad, dict(lr=0.1, initial_accumulator_value=0.5)),
    (optim.Adagrad, dict(lr=0.1, eps=1e-3, maximize=True)),
    (optim.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.05,
                         initial_accumulator_value=0.1, maximize=True)),
    (optim.Adadelta, dict()),
    (optim.Adadelta, dict(lr=0.5, rho=0.5, eps=1e-4)),
    (optim.Adadelta, dict(lr=0.5, rho=0.3)),
    (optim.Adadelta, dict(lr=0.5, weight_decay=0.1)),
    (optim.Adadelta, dict(lr=0.5, weight_decay=0.1, maximize=True)),
]

# One row per optimizer with every kind of state buffer switched on.
STATEFUL_ROWS = [
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
    (optim.Adam, dict(lr=0.05, amsgrad=True, weight_decay=0.1)),
    (optim.AdamW, dict(lr=0.05, amsgrad=True)),
    (optim.RMSprop, dict(lr=0.01, momentum=0.9, centered=True)),
    (optim.Adagrad, dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
    (optim.Adadelta, dict(lr=0.5, weight_decay=0.1)),
]


def row_id(row: tuple) -> str:
    cls, kwargs = row
    return cls.__name__ + "-" + ",".join(f"{k}={v}" for k, v in kwargs.items())


def torch_class(cls: type) -> type:
    return getattr(torch.optim, cls.__name__)


# ---------------------------------------------------------------- twins
def initial_arrays(dtype=np.float64, seed=0) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    values = [rng.uniform(-1.5, 1.5, s).astype(dtype) for s in SHAPES]
    coefs = [rng.uniform(0.5, 2.0, s).astype(dtype) for s in SHAPES]
    return values, coefs


def twin_params(dtype=np.float64, seed=0) -> tuple[list, list, list]:
    values, coefs = initial_arrays(dtype, seed)
    ours = [ember.tensor(v, dtype=v.dtype, requires_grad=True) for v in values]
    theirs = [torch.tensor(v, requires_grad=True) for v in values]
    return ours, theirs, coefs


def ember_loss(params: list, coefs: list):
    terms = [(p.sin() * ember.tensor(c, dtype=c.dtype)).sum()
             for i, (p, c) in enumerate(zip(params, coefs)) if i != FROZEN]
    return terms[0] + terms[1] + terms[2]


def torch_loss(params: list, coefs: list):
    return sum((p.sin() * torch.from_numpy(c)).sum()
               for i, (p, c) in enumerate(zip(params, coefs)) if i != FROZEN)


def ember_step(opt, params: list, coefs: list) -> None:
    opt.zero_grad()
    ember_loss(params, coefs).backward()
    opt.step()


def torch_step(opt, params: list, coefs: list) -> None:
    opt.zero_grad()
    torch_loss(params, coefs).backward()
    opt.step()


def assert_params_match(ours: list, theirs: list, dtype=np.float64, where: str = "") -> None:
    for i, (o, t) in enumerate(zip(ours, theirs)):
        assert o.array.dtype == dtype, f"{where} param {i}: dtype {o.array.dtype}"
        np.testing.assert_allclose(o.array, t.detach().numpy(), rtol=RTOL[dtype],
                                   atol=ATOL[dtype], err_msg=f"{where} param {i}")


def run_twins(cls, kwargs, dtype=np.float64, steps=STEPS) -> tuple:
    ours, theirs, coefs = twin_params(dtype)
    opt, topt = cls(ours, **kwargs), torch_class(cls)(theirs, **kwargs)
    for k in range(steps):
        ember_step(opt, ours, coefs)
        torch_step(topt, theirs, coefs)
        assert_params_match(ours, theirs, dtype, where=f"step {k + 1}")
    return ours, theirs, opt, topt


# ---------------------------------------------------------------- update rules
@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_matches_torch_float64(row):
    cls, kwargs = row
    ours, _, opt, _ = run_twins(cls, kwargs)
    assert ours[FROZEN].grad is None
    assert np.array_equal(ours[FROZEN].array, initial_arrays()[0][FROZEN])
    if cls is not optim.Adagrad:  # Adagrad creates state for every parameter up front
        assert ours[FROZEN] not in opt.state


SGD_ROWS = [row for row in ROWS if row[0] is optim.SGD]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("row", SGD_ROWS, ids=row_id)
def test_sgd_blas_axpy_path_matches_torch(monkeypatch, row, dtype):
    """Without the compiled kernels, SGD steps through ember.blas.axpy from 8192 elements;
    here from one, so every row's update takes that path (checked: it was really used)."""
    from ember import blas
    from ember.ops import kernels
    if blas._blas_pool() is None or not blas._blas_pool().axpy:
        pytest.skip("NumPy's OpenBLAS axpy is not reachable here")
    monkeypatch.setattr(blas, "AXPY_MIN_SIZE", 1)
    monkeypatch.setattr(kernels, "_wanted", False)  # the kernels come first where they run
    calls = []
    real = blas.axpy
    monkeypatch.setattr(optim.sgd, "axpy", lambda *a: calls.append(real(*a)) or calls[-1])
    run_twins(*row, dtype=dtype)
    assert calls and all(calls)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("row", SGD_ROWS, ids=row_id)
def test_sgd_split_update_matches_torch_and_is_the_same_with_or_without_kernels(
        monkeypatch, row, dtype):
    """A big weight that BLAS's threads have read is stepped by ``axpy(..., split=True)``
    (docs/performance.md, section 25); here every parameter is, in every row. The buffer
    then comes from the compiled ``momentum_update`` or NumPy's passes: the same bits."""
    from ember import blas
    from ember.ops import kernels
    if blas._blas_pool() is None or not blas._blas_pool().axpy:
        pytest.skip("NumPy's OpenBLAS axpy is not reachable here")
    monkeypatch.setattr(blas, "AXPY_MIN_SIZE", 1)
    monkeypatch.setattr(optim.sgd, "split_pays", lambda param: True)
    calls = []
    real = blas.axpy
    monkeypatch.setattr(optim.sgd, "axpy", lambda *a, **k: calls.append((k, real(*a, **k))) or
                        calls[-1][1])
    compiled_buffers = []
    real_buffer = kernels.momentum_update
    monkeypatch.setattr(kernels, "momentum_update",
                        lambda *a: compiled_buffers.append(real_buffer(*a)) or compiled_buffers[-1])
    results = []
    for wanted in (True, False):
        monkeypatch.setattr(kernels, "_wanted", wanted)
        ours, _, _, _ = run_twins(*row, dtype=dtype)  # checks every step against torch
        results.append([p.array.copy() for p in ours])
    assert calls and all(k == {"split": True} and ok for k, ok in calls)
    kwargs = row[1]
    if kwargs.get("momentum") and not kwargs.get("nesterov"):
        assert any(compiled_buffers)  # the compiled buffer pass ran (with the kernels on)
    for compiled, numpy_path in zip(*results, strict=True):
        np.testing.assert_array_equal(compiled, numpy_path)


@pytest.mark.parametrize("row", STATEFUL_ROWS + [(optim.SGD, dict(lr=0.1))], ids=row_id)
def test_float32_params_stay_float32(row):
    cls, kwargs = row
    ours, _, opt, _ = run_twins(cls, kwargs, dtype=np.float32)
    for p in ours:
        for value in opt.state[p].values():
            if isinstance(value, ember.Tensor):
                assert value.dtype == np.float32


@pytest.mark.parametrize("row", STATEFUL_ROWS, ids=row_id)
def test_updates_in_place_and_grads_untouched(row):
    cls, kwargs = row
    kwargs = dict(kwargs, maximize=True)
    ours, _, coefs = twin_params()
    opt = cls(ours, **kwargs)
    arrays = [p.array for p in ours]
    ember_step(opt, ours, coefs)
    buffers = {(i, k): v.array for i, p in enumerate(ours) for k, v in opt.state[p].items()
               if isinstance(v, ember.Tensor)}
    for _ in range(3):
        opt.zero_grad()
        ember_loss(ours, coefs).backward()
        grads = [None if p.grad is None else p.grad.array.copy() for p in ours]
        opt.step()
        for p, g in zip(ours, grads):
            assert (p.grad is None) == (g is None)
            if g is not None:  # the update never writes into p.grad
                assert np.array_equal(p.grad.array, g)
    assert all(p.array is a for p, a in zip(ours, arrays))
    assert all(opt.state[ours[i]][k].array is a for (i, k), a in buffers.items())


# ---------------------------------------------------------------- groups
def test_param_groups_with_different_options():
    ours, theirs, coefs = twin_params()

    def groups(ps):
        return [{"params": ps[:2], "lr": 0.2, "momentum": 0.9},
                {"params": ps[2:], "nesterov": True, "momentum": 0.5, "weight_decay": 0.1}]

    opt, topt = optim.SGD(groups(ours), lr=0.01), torch.optim.SGD(groups(theirs), lr=0.01)
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.01]
    for k in range(STEPS):
        ember_step(opt, ours, coefs)
        torch_step(topt, theirs, coefs)
        assert_params_match(ours, theirs, where=f"step {k + 1}")


@pytest.mark.parametrize("cls", [optim.Adam, optim.Adagrad, optim.RMSprop])
def test_add_param_group_midway(cls):
    ours, theirs, coefs = twin_params()
    opt, topt = cls(ours[:2], lr=0.05), torch_class(cls)(theirs[:2], lr=0.05)
    for k in range(STEPS):
        if k == 4:
            opt.add_param_group({"params": ours[2:], "lr": 0.01})
            topt.add_param_group({"params": theirs[2:], "lr": 0.01})
            assert opt.param_groups[1]["lr"] == 0.01
            assert opt.param_groups[1]["eps"] == opt.defaults["eps"]
        ember_step(opt, ours, coefs)
        torch_step(topt, theirs, coefs)
        assert_params_match(ours, theirs, where=f"step {k + 1}")


def test_add_param_group_errors():
    ours, _, _ = twin_params()
    opt = optim.SGD(ours[:2], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [ours[1], ours[2]]})
    with pytest.raises(TypeError, match="ordered collections"):
        opt.add_param_group({"params": {ours[2]}})
    with pytest.raises(TypeError, match="can only optimize Tensors"):
        opt.add_param_group({"params": [np.zeros(3)]})
    with pytest.raises(TypeError, match="must be a dict"):
        opt.add_param_group([ours[2]])
    opt.add_param_group({"params": ours[2]})  # a lone tensor is accepted, as in torch
    assert opt.param_groups[1]["params"][0] is ours[2]


def test_constructor_errors():
    w = ember.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="iterable of Tensors"):
        optim.SGD(w, lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([w * 2], lr=0.1)


def test_named_parameters_are_accepted():
    ours, theirs, coefs = twin_params()
    opt = optim.Adam([(f"p{i}", p) for i, p in enumerate(ours)], lr=0.05)
    topt = torch.optim.Adam([(f"p{i}", p) for i, p in enumerate(theirs)], lr=0.05)
    assert opt.param_groups[0]["param_names"] == ["p0", "p1", "p2", "p3"]
    for _ in range(3):
        ember_step(opt, ours, coefs)
        torch_step(topt, theirs, coefs)
    assert_params_match(ours, theirs)
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["p0", "p1", "p2", "p3"]


# ---------------------------------------------------------------- state dicts
def _allowed_types(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _allowed_types(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_allowed_types(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str, ember.Tensor))


def to_json(state: dict) -> str:
    def encode(value):
        if isinstance(value, ember.Tensor):
            return {"__tensor__": value.array.tolist(), "dtype": str(value.dtype)}
        raise TypeError(type(value))
    return json.dumps(state, default=encode)


def from_json(text: str) -> dict:
    def decode(obj):
        if "__tensor__" in obj:
            return ember.tensor(np.array(obj["__tensor__"], dtype=obj["dtype"]),
                                dtype=obj["dtype"])
        return obj
    return json.loads(text, object_hook=decode)


@pytest.mark.parametrize("through_json", [False, True], ids=["direct", "json"])
@pytest.mark.parametrize("row", STATEFUL_ROWS, ids=row_id)
def test_state_dict_round_trip_continues_bit_identically(row, through_json):
    cls, kwargs = row
    ours, theirs, coefs = twin_params()
    opt, topt = cls(ours, **kwargs), torch_class(cls)(theirs, **kwargs)
    for _ in range(4):
        ember_step(opt, ours, coefs)
        torch_step(topt, theirs, coefs)
    state = opt.state_dict()
    assert _allowed_types(state)
    assert_same_layout_as_torch(state, topt.state_dict())
    if through_json:
        state = from_json(to_json(state))
    resumed = [ember.tensor(p.array.copy(), dtype=p.dtype, requires_grad=True) for p in ours]
    opt2 = cls(resumed, lr=123.0)  # options come back from the state dict
    opt2.load_state_dict(state)
    for restored, original in zip(opt2.param_groups, opt.param_groups):
        restored = dict(restored)
        assert restored.keys() == original.keys()
        assert [id(p) for p in restored.pop("params")] == [id(p) for p in resumed]
        for key, value in original.items():  # same values and types (betas is a tuple again)
            if key == "params":
                continue
            assert type(restored[key]) is type(value) and restored[key] == value, key
    for _ in range(6):
        ember_step(opt, ours, coefs)
        ember_step(opt2, resumed, coefs)
    for a, b in zip(ours, resumed):
        assert np.array_equal(a.array, b.array)


def assert_same_layout_as_torch(ours: dict, theirs: dict) -> None:
    assert set(ours) == {"state", "param_groups"}
    assert sorted(ours["state"]) == sorted(theirs["state"])
    for index, entry in ours["state"].items():
        torch_entry = theirs["state"][index]
        assert set(entry) == set(torch_entry)
        for key, value in entry.items():
            expected = torch_entry[key]
            if key == "step":
                assert value == float(expected)
            else:
                np.testing.assert_allclose(value.array, expected.numpy(), rtol=1e-6, atol=1e-12)
    for group, torch_group in zip(ours["param_groups"], theirs["param_groups"]):
        assert group["params"] == torch_group["params"]
        for key, value in group.items():
            assert value == torch_group[key] or list(torch_group[key]) == value, key


def test_state_dict_is_a_snapshot():
    ours, _, coefs = twin_params()
    opt = optim.Adam(ours, lr=0.05)
    ember_step(opt, ours, coefs)
    state = opt.state_dict()
    saved = state["state"][0]["exp_avg"].array.copy()
    ember_step(opt, ours, coefs)
    assert np.array_equal(state["state"][0]["exp_avg"].array, saved)
    assert state["state"][0]["step"] == 1.0
    opt.param_groups[0]["lr"] = 7.0
    assert state["param_groups"][0]["lr"] == 0.05


def test_load_state_dict_copies_and_casts_buffers():
    ours, _, coefs = twin_params()
    opt = optim.RMSprop(ours, lr=0.01, momentum=0.9)
    ember_step(opt, ours, coefs)
    state = opt.state_dict()
    singles = [ember.tensor(p.array, dtype=ember.float32, requires_grad=True) for p in ours]
    opt32 = optim.RMSprop(singles, lr=0.01, momentum=0.9)
    opt32.load_state_dict(state)
    buf = opt32.state[singles[0]]["square_avg"]
    assert buf.dtype == np.float32
    assert buf.array is not state["state"][0]["square_avg"].array


def test_load_state_dict_errors():
    ours, _, coefs = twin_params()
    opt = optim.Adam(ours, lr=0.05)
    ember_step(opt, ours, coefs)
    state = opt.state_dict()
    two_groups = optim.Adam([{"params": ours[:2]}, {"params": ours[2:]}])
    with pytest.raises(ValueError, match="different number of parameter groups"):
        two_groups.load_state_dict(state)
    with pytest.raises(ValueError, match="doesn't match the size"):
        optim.Adam(ours[:3]).load_state_dict(state)
    swapped = optim.Adam(ours[1:2] + ours[:1] + ours[2:])
    with pytest.raises(ValueError, match="has shape"):
        swapped.load_state_dict(state)


def test_adamw_keeps_decoupled_weight_decay_after_loading():
    ours, _, _ = twin_params()
    state = optim.Adam(ours, weight_decay=0.1).state_dict()
    opt = optim.AdamW(ours)
    opt.load_state_dict(state)
    assert opt.param_groups[0]["decoupled_weight_decay"] is True


# ---------------------------------------------------------------- zero_grad, closure
def test_zero_grad_set_to_none():
    ours, _, coefs = twin_params()
    opt = optim.SGD(ours, lr=0.1)
    ember_loss(ours, coefs).backward()
    opt.zero_grad()
    assert all(p.grad is None for p in ours)


def test_zero_grad_in_place_zeros():
    ours, theirs, coefs = twin_params()
    opt, topt = optim.SGD(ours, lr=0.1), torch.optim.SGD(theirs, lr=0.1)
    ember_loss(ours, coefs).backward()
    torch_loss(theirs, coefs).backward()
    arrays = [None if p.grad is None else p.grad.array for p in ours]
    opt.zero_grad(set_to_none=False)
    topt.zero_grad(set_to_none=False)
    for p, t, a in zip(ours, theirs, arrays):
        assert (p.grad is None) == (t.grad is None)
        if p.grad is not None:
            assert p.grad.array is a and not p.grad.array.any()


def test_step_with_closure_matches_torch():
    ours, theirs, coefs = twin_params()
    opt, topt = optim.Adam(ours, lr=0.05), torch.optim.Adam(theirs, lr=0.05)

    def ember_closure():
        opt.zero_grad()
        loss = ember_loss(ours, coefs)
        loss.backward()
        return loss

    def torch_closure():
        topt.zero_grad()
        loss = torch_loss(theirs, coefs)
        loss.backward()
        return loss

    for _ in range(STEPS):
        with ember.no_grad():  # the closure still records its graph, as in torch
            loss = opt.step(ember_closure)
        torch_loss_value = topt.step(torch_closure)
        np.testing.assert_allclose(loss.item(), torch_loss_value.item(), rtol=1e-6)
    assert_params_match(ours, theirs)
    assert opt.step() is None


# ---------------------------------------------------------------- hyper-parameter checks
BAD_HYPERPARAMETERS = [
    (optim.SGD, dict(lr=-1), "Invalid learning rate: -1"),
    (optim.SGD, dict(lr=0.1, momentum=-0.5), "Invalid momentum value: -0.5"),
    (optim.SGD, dict(lr=0.1, weight_decay=-1e-4), "Invalid weight_decay value"),
    (optim.SGD, dict(lr=0.1, nesterov=True), "Nesterov momentum requires"),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     "Nesterov momentum requires"),
    (optim.Adam, dict(lr=-0.1), "Invalid learning rate: -0.1"),
    (optim.Adam, dict(eps=-1e-8), "Invalid epsilon value"),
    (optim.Adam, dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
    (optim.Adam, dict(betas=(-0.1, 0.999)), "Invalid beta parameter at index 0"),
    (optim.Adam, dict(betas=(0.9, 1.5)), "Invalid beta parameter at index 1: 1.5"),
    (optim.Adam, dict(weight_decay=-0.1), "Invalid weight_decay value"),
    (optim.AdamW, dict(lr=-1.0), "Invalid learning rate"),
    (optim.AdamW, dict(weight_decay=-1.0), "Invalid weight_decay value"),
    (optim.AdamW, dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1"),
    (optim.RMSprop, dict(lr=-0.01), "Invalid learning rate"),
    (optim.RMSprop, dict(eps=-1.0), "Invalid epsilon value"),
    (optim.RMSprop, dict(momentum=-0.9), "Invalid momentum value"),
    (optim.RMSprop, dict(weight_decay=-0.1), "Invalid weight_decay value"),
    (optim.RMSprop, dict(alpha=-0.5), "Invalid alpha value: -0.5"),
    (optim.Adagrad, dict(lr=-0.01), "Invalid learning rate"),
    (optim.Adagrad, dict(lr_decay=-0.1), "Invalid lr_decay value: -0.1"),
    (optim.Adagrad, dict(weight_decay=-0.1), "Invalid weight_decay value"),
    (optim.Adagrad, dict(initial_accumulator_value=-1.0),
     "Invalid initial_accumulator_value value: -1.0"),
    (optim.Adagrad, dict(eps=-1e-10), "Invalid epsilon value"),
    (optim.Adadelta, dict(lr=-1.0), "Invalid learning rate"),
    (optim.Adadelta, dict(rho=1.5), "Invalid rho value: 1.5"),
    (optim.Adadelta, dict(rho=-0.1), "Invalid rho value"),
    (optim.Adadelta, dict(eps=-1e-6), "Invalid epsilon value"),
    (optim.Adadelta, dict(weight_decay=-0.1), "Invalid weight_decay value"),
]


@pytest.mark.parametrize("cls,kwargs,message", BAD_HYPERPARAMETERS,
                         ids=[row_id(r[:2]) for r in BAD_HYPERPARAMETERS])
def test_invalid_hyperparameters_raise_like_torch(cls, kwargs, message):
    with pytest.raises(ValueError, match=message) as ours:
        cls([ember.zeros(2, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError) as theirs:
        torch_class(cls)([torch.zeros(2, requires_grad=True)], **kwargs)
    assert str(ours.value) == str(theirs.value)


def test_defaults_match_torch():
    for cls in (optim.SGD, optim.Adam, optim.AdamW, optim.RMSprop, optim.Adagrad,
                optim.Adadelta):
        ours = cls([ember.zeros(2, requires_grad=True)]).defaults
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = torch_class(cls)([torch.zeros(2, requires_grad=True)]).defaults
        for key, value in ours.items():
            assert theirs[key] == value, (cls.__name__, key)


# ---------------------------------------------------------------- docstring examples
@pytest.mark.parametrize("module", ["ember.optim", "ember.optim.optimizer", "ember.optim.sgd",
                                    "ember.optim.adam", "ember.optim.rmsprop",
                                    "ember.optim.adagrad", "ember.optim.adadelta",
                                    "ember.optim.lr_scheduler"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), extraglobs={"ember": ember})
    assert result.attempted > 0 and result.failed == 0
