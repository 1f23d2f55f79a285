"""ember.nn.init against torch.nn.init: gains and fans exactly, draws statistically."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.init as tinit

import ember
import ember.nn as nn
from ember.nn import init

GAIN_CASES = [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None),
              ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 3),
              ("selu", None), ("conv_transpose3d", None)]


@pytest.mark.parametrize("nonlinearity,param", GAIN_CASES)
def test_calculate_gain_equals_torch(nonlinearity, param):
    assert init.calculate_gain(nonlinearity, param) == tinit.calculate_gain(nonlinearity, param)


def test_calculate_gain_rejects_what_torch_rejects():
    for args in [("softmax", None), ("leaky_relu", True), ("leaky_relu", "0.1")]:
        with pytest.raises(ValueError):
            tinit.calculate_gain(*args)
        with pytest.raises(ValueError):
            init.calculate_gain(*args)


@pytest.mark.parametrize("shape", [(5, 3), (8, 4, 3, 3), (6, 2, 5), (2, 7, 1, 2, 3)])
def test_fans_equal_torch(shape):
    expected = tinit._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert init._calculate_fan_in_and_fan_out(ember.empty(*shape)) == expected


def test_fans_need_two_dims():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init._calculate_fan_in_and_fan_out(ember.empty(4))


def assert_uniform(array, low, high):
    n = array.size
    assert array.min() >= low and array.max() <= high
    mean, std = (low + high) / 2, (high - low) / math.sqrt(12)
    assert abs(array.mean() - mean) < 5 * std / math.sqrt(n)
    assert abs(array.std() / std - 1) < 0.02


def assert_normal(array, mean, std):
    assert abs(array.mean() - mean) < 5 * std / math.sqrt(array.size)
    assert abs(array.std() / std - 1) < 0.02


SHAPES = [(400, 300), (64, 32, 3, 3)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_xavier(shape, gain):
    fan_in, fan_out = tinit._calculate_fan_in_and_fan_out(torch.empty(shape))
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    assert_uniform(init.xavier_uniform_(ember.empty(*shape), gain).array,
                   -math.sqrt(3) * std, math.sqrt(3) * std)
    assert_normal(init.xavier_normal_(ember.empty(*shape), gain).array, 0.0, std)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("a,mode,nonlinearity", [(0, "fan_in", "leaky_relu"),
                                                 (math.sqrt(5), "fan_in", "leaky_relu"),
                                                 (0, "fan_out", "relu"),
                                                 (0.1, "fan_out", "tanh")])
def test_kaiming(shape, a, mode, nonlinearity):
    fan = tinit._calculate_correct_fan(torch.empty(shape), mode)
    std = tinit.calculate_gain(nonlinearity, a) / math.sqrt(fan)
    w = init.kaiming_uniform_(ember.empty(*shape), a, mode, nonlinearity)
    assert_uniform(w.array, -math.sqrt(3) * std, math.sqrt(3) * std)
    w = init.kaiming_normal_(ember.empty(*shape), a, mode, nonlinearity)
    assert_normal(w.array, 0.0, std)


def test_kaiming_rejects_bad_mode_and_skips_empty_tensors():
    with pytest.raises(ValueError, match="fan_avg not supported"):
        init.kaiming_uniform_(ember.empty(3, 3), mode="fan_avg")
    with pytest.warns(UserWarning, match="zero-element"):
        init.kaiming_normal_(ember.empty(0, 3))


def test_uniform_normal_constant_ones_zeros_eye():
    assert_uniform(init.uniform_(ember.empty(100_000), -2.0, 3.0).array, -2.0, 3.0)
    assert_normal(init.normal_(ember.empty(100_000), 1.5, 0.3).array, 1.5, 0.3)
    np.testing.assert_array_equal(init.constant_(ember.empty(2, 3), 0.25).array,
                                  np.full((2, 3), 0.25))
    np.testing.assert_array_equal(init.ones_(ember.empty(3)).array, np.ones(3))
    np.testing.assert_array_equal(init.zeros_(ember.empty(3)).array, np.zeros(3))
    np.testing.assert_array_equal(init.eye_(ember.empty(2, 3)).array,
                                  tinit.eye_(torch.empty(2, 3)).numpy())


def _truncated_normal_moments(mean, std, a, b):
    def pdf(z):
        return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    def cdf(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))
    alpha, beta = (a - mean) / std, (b - mean) / std
    mass = cdf(beta) - cdf(alpha)
    shift = (pdf(alpha) - pdf(beta)) / mass
    var = 1 + (alpha * pdf(alpha) - beta * pdf(beta)) / mass - shift ** 2
    return mean + std * shift, std * math.sqrt(var)


@pytest.mark.parametrize("mean,std,a,b", [(0.0, 1.0, -2.0, 2.0), (0.0, 0.02, -0.04, 0.04),
                                          (1.0, 1.0, 2.0, 3.0), (0.0, 1.0, -0.5, 4.0)])
def test_trunc_normal_distribution(mean, std, a, b):
    ember.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "mean is more than 2 std from [a, b]"
        values = init.trunc_normal_(ember.empty(200_000, dtype=ember.float64), mean, std, a,
                                    b).array
    assert values.min() >= a and values.max() <= b
    expected_mean, expected_std = _truncated_normal_moments(mean, std, a, b)
    assert abs(values.mean() - expected_mean) < 5 * expected_std / math.sqrt(values.size)
    assert abs(values.std() / expected_std - 1) < 0.02


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 2, 3, 3)])
def test_orthogonal(shape):
    w = init.orthogonal_(ember.empty(*shape, dtype=ember.float64), gain=2.0).array
    flat = w.reshape(shape[0], -1)
    small = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
    np.testing.assert_allclose(small, 4.0 * np.eye(small.shape[0]), atol=1e-12)
    with pytest.raises(ValueError, match="2 or more dimensions"):
        init.orthogonal_(ember.empty(3))


def test_init_works_in_place_on_parameters_and_repeats_under_seed():
    p = nn.Parameter(ember.zeros(4, 4))
    array = p.array
    ember.manual_seed(5)
    out = init.kaiming_normal_(p)
    assert out is p and p.array is array and p.requires_grad and p.grad_fn is None
    first = array.copy()
    ember.manual_seed(5)
    init.kaiming_normal_(p)
    np.testing.assert_array_equal(p.array, first)
