"""detect_anomaly names the op and the user's line in planted failures."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import ember
from ember.autograd import detect_anomaly


def _line_of(marker: str) -> int:
    source, start = inspect.getsourcelines(inspect.currentframe().f_back.f_code)
    return start + next(i for i, line in enumerate(source) if marker in line)


def test_log_of_negative_is_caught_in_forward():
    x = ember.tensor([1.0, -2.0], requires_grad=True)
    with detect_anomaly(), pytest.raises(ember.AnomalyError) as info:
        x.log()  # planted: log
    message = str(info.value)
    assert "Log produced NaN in its forward output" in message
    assert f"test_anomaly.py:{_line_of('planted: log')}" in message
    assert "input 0: shape (2,), min -2, max 1, NaN 0, Inf 0" in message


def test_sqrt_of_negative_is_caught():
    x = ember.tensor([4.0, -1.0])
    with detect_anomaly(), pytest.raises(ember.AnomalyError, match="Sqrt produced NaN"):
        x.sqrt()


def test_overflow_in_exp_is_caught():
    x = ember.tensor([1.0, 100.0])
    with detect_anomaly(), pytest.raises(ember.AnomalyError, match="Exp produced Inf"):
        x.exp()


def test_zero_over_zero_only_in_backward_is_caught_there():
    x = ember.tensor([0.0, 1.0], requires_grad=True)
    with detect_anomaly():
        y = x.sqrt()  # planted: sqrt
        loss = y.sum()  # forward is finite: sqrt(0) = 0
        with pytest.raises(ember.AnomalyError) as info:
            loss.backward()  # d sqrt / dx = 1 / (2 * 0) = inf
    message = str(info.value)
    assert "Sqrt produced Inf in its backward gradient for input 0" in message
    assert f"test_anomaly.py:{_line_of('planted: sqrt')}" in message


def test_decorator_form_and_mode_is_restored():
    @detect_anomaly()
    def broken():
        return ember.tensor([-1.0]).log()

    with pytest.raises(ember.AnomalyError):
        broken()
    assert np.isnan(ember.tensor([-1.0]).log().item())  # outside the context NaN is allowed


def test_zero_over_zero_in_backward_only_is_named():
    x = ember.tensor([0.0, 4.0], requires_grad=True)
    with detect_anomaly():
        y = x.sqrt() * 0.0  # forward is finite everywhere
        with pytest.raises(ember.AnomalyError) as info:
            y.sum().backward()  # d sqrt(0) gets 0 / (2 * 0) = nan
    assert "Sqrt produced NaN in its backward gradient for input 0" in str(info.value)
    assert "NaN 0, Inf 0" in str(info.value)  # its input was finite: the NaN starts here
