"""Toy data sets: shapes and dtypes, balance, seeding, and each one's geometry."""

from __future__ import annotations

import math
import operator

import numpy as np
import pytest

import ember
from ember.data import DataLoader, TensorDataset
from ember.data.toy import (LOGIC_GATES, REGRESSION_FUNCTIONS, SPIRAL_SWEEP, blobs, circles,
                            logic_gate, regression_1d, spirals, two_moons, xor)

CLASSIFIERS = {
    "two_moons": lambda seed, n=101: two_moons(n, noise=0.1, seed=seed),
    "spirals": lambda seed, n=101: spirals(n, classes=3, noise=0.05, seed=seed),
    "circles": lambda seed, n=101: circles(n, noise=0.05, factor=0.4, seed=seed),
    "blobs": lambda seed, n=101: blobs(n, centers=4, std=0.5, seed=seed),
    "xor": lambda seed, n=None: xor(noise=0.1, repeats=25, seed=seed),
}


def radius(X):
    return np.hypot(X[:, 0].astype(np.float64), X[:, 1].astype(np.float64))


# ------------------------------------------------------------ common contract
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_shapes_dtypes_and_seed_repeatability(name):
    make = CLASSIFIERS[name]
    X, y = make(0)
    assert X.dtype == np.float32 and X.ndim == 2 and X.shape[1] == 2
    assert y.dtype == np.int64 and y.shape == (len(X),)
    for again in (make(0), make(np.random.default_rng(0))):
        np.testing.assert_array_equal(again[0], X)
        np.testing.assert_array_equal(again[1], y)
    assert not np.array_equal(make(1)[0], X)
    ember.manual_seed(7)
    from_global = make(None)
    ember.manual_seed(7)
    np.testing.assert_array_equal(make(None)[0], from_global[0])


@pytest.mark.parametrize("name,classes", [("two_moons", 2), ("spirals", 3), ("circles", 2),
                                          ("blobs", 4), ("xor", 2)])
def test_labels_are_balanced(name, classes):
    for n in (100, 101, 103):
        _, y = CLASSIFIERS[name](0, n)
        counts = np.bincount(y, minlength=classes)
        assert len(counts) == classes and counts.max() - counts.min() <= 1
        assert counts.sum() == (100 if name == "xor" else n)


def test_regression_contract_and_a_dataloader():
    X, y = regression_1d("sin", 64, noise=0.1, seed=3)
    assert X.shape == y.shape == (64, 1) and X.dtype == y.dtype == np.float32
    np.testing.assert_array_equal(regression_1d("sin", 64, noise=0.1, seed=3)[1], y)
    xb, yb = next(iter(DataLoader(TensorDataset(X, y), batch_size=16)))
    assert xb.shape == (16, 1) and isinstance(yb, ember.Tensor)
    np.testing.assert_array_equal(xb.array, X[:16])


# ------------------------------------------------------------ geometry
@pytest.mark.parametrize("gate,op", [("AND", operator.and_), ("OR", operator.or_),
                                     ("NAND", lambda a, b: 1 - (a & b)),
                                     ("NOR", lambda a, b: 1 - (a | b)),
                                     ("XOR", operator.xor)])
def test_logic_gate_truth_tables(gate, op):
    X, y = logic_gate(gate, repeats=3)
    bits = X.astype(np.int64)
    assert X.shape == (12, 2) and set(X.ravel().tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(y, op(bits[:, 0], bits[:, 1]))
    assert logic_gate(gate.lower())[1].tolist() == list(LOGIC_GATES[gate])


def test_xor_noise_keeps_the_points_near_their_corners():
    X, y = xor(noise=0.05, repeats=200, seed=0)
    corners = np.tile(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32), (200, 1))
    offsets = X - corners
    assert abs(offsets.std() - 0.05) < 0.005 and abs(offsets.mean()) < 0.01
    np.testing.assert_array_equal(y, np.tile([0, 1, 1, 0], 200))
    clean_x, clean_y = xor()
    assert clean_x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] and clean_y.tolist() == [0, 1, 1, 0]


def test_moons_lie_on_their_half_circles():
    X, y = two_moons(201, seed=0)
    X = X.astype(np.float64)
    upper, lower = X[y == 0], X[y == 1]
    np.testing.assert_allclose(radius(upper), 1, atol=1e-6)
    assert upper[:, 1].min() >= -1e-6
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1, lower[:, 1] - 0.5), 1, atol=1e-6)
    assert lower[:, 1].max() <= 0.5 + 1e-6
    assert len(upper) == 100 and len(lower) == 101


def test_noisy_moons_are_separated_by_the_known_curves():
    X, y = two_moons(2000, noise=0.1, seed=1)
    X = X.astype(np.float64)
    to_upper = np.abs(radius(X) - 1) + np.maximum(-X[:, 1], 0)  # distance-like to each arc
    to_lower = np.abs(np.hypot(X[:, 0] - 1, X[:, 1] - 0.5) - 1) + np.maximum(X[:, 1] - 0.5, 0)
    predicted = (to_lower < to_upper).astype(np.int64)
    assert (predicted == y).mean() > 0.95


def test_circles_radii_and_angles():
    X, y = circles(100, factor=0.3, shuffle=False)
    np.testing.assert_allclose(radius(X[y == 0]), 1, atol=1e-6)
    np.testing.assert_allclose(radius(X[y == 1]), 0.3, atol=1e-6)
    angles = np.sort(np.mod(np.arctan2(X[y == 0, 1], X[y == 0, 0]), 2 * np.pi))
    np.testing.assert_allclose(np.diff(angles), 2 * np.pi / 50, atol=1e-5)
    noisy, labels = circles(2000, noise=0.05, factor=0.5, seed=0)
    assert ((radius(noisy) < 0.75) == (labels == 1)).mean() > 0.99


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_spirals_follow_their_arms(classes):
    X, y = spirals(50 * classes, classes=classes, shuffle=False)
    X = X.astype(np.float64)
    for k in range(classes):
        arm = X[y == k]
        t = np.arange(1, len(arm) + 1) / len(arm)
        np.testing.assert_allclose(radius(arm), t, atol=1e-6)
        want = 2 * np.pi * k / classes + SPIRAL_SWEEP * t
        got = np.arctan2(arm[:, 1], arm[:, 0])
        np.testing.assert_allclose(np.cos(got - want), 1, atol=1e-6)


def test_noisy_spirals_are_separated_by_nearest_arm():
    classes = 3
    X, y = spirals(900, classes=classes, noise=0.02, seed=0)
    t = np.linspace(0.001, 1, 1500)
    arms = [np.stack([t * np.cos(2 * np.pi * k / classes + SPIRAL_SWEEP * t),
                      t * np.sin(2 * np.pi * k / classes + SPIRAL_SWEEP * t)], 1)
            for k in range(classes)]
    distance = np.stack([np.min(np.linalg.norm(X[:, None, :] - arm[None], axis=2), axis=1)
                         for arm in arms], 1)
    assert (distance.argmin(axis=1) == y).mean() > 0.95


def test_blobs_centres_and_spread():
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, -10.0]])
    X, y, got_centers = blobs(3000, centers=centers, std=[0.5, 1.0, 2.0], seed=0,
                              return_centers=True)
    np.testing.assert_array_equal(got_centers, centers.astype(np.float32))
    for k, std in enumerate([0.5, 1.0, 2.0]):
        cluster = X[y == k].astype(np.float64)
        assert len(cluster) == 1000
        np.testing.assert_allclose(cluster.mean(0), centers[k], atol=5 * std / math.sqrt(1000))
        np.testing.assert_allclose(cluster.std(0), std, rtol=0.1)
    X, y, drawn = blobs(40, centers=5, seed=2, box=(-3, 3), return_centers=True)
    assert drawn.shape == (5, 2) and np.all(np.abs(drawn) <= 3)
    X3, _ = blobs(10, centers=np.zeros((2, 3)), std=0.0, seed=0)
    assert X3.shape == (10, 3) and not X3.any()


@pytest.mark.parametrize("fn", sorted(REGRESSION_FUNCTIONS))
def test_regression_targets_are_the_function(fn):
    X, y = regression_1d(fn, 500, seed=0, low=-2, high=3)
    x = X.astype(np.float64)
    assert x.min() >= -2 and x.max() < 3
    formulas = {"linear": 2 * x + 1, "sin": np.sin(np.pi * x), "abs": np.abs(x),
                "step": (x > 0).astype(np.float64), "poly": x**3 - x}
    np.testing.assert_allclose(y, formulas[fn], rtol=1e-6, atol=1e-6)
    Xn, yn = regression_1d(fn, 4000, noise=0.2, seed=0)
    residual = yn.astype(np.float64) - REGRESSION_FUNCTIONS[fn](Xn.astype(np.float64))
    assert abs(residual.std() - 0.2) < 0.01 and abs(residual.mean()) < 0.02


# ------------------------------------------------------------ bad arguments
def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="unknown gate 'XNAND'.*AND, OR, NAND, NOR, XOR"):
        logic_gate("XNAND")
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        xor(repeats=0)
    with pytest.raises(ValueError, match="two_moons: noise must be a non-negative number"):
        two_moons(10, noise=-0.1)
    with pytest.raises(ValueError, match="two_moons: n must be an integer >= 2"):
        two_moons(1)
    with pytest.raises(ValueError, match="circles: factor has to be between 0 and 1"):
        circles(10, factor=1.0)
    with pytest.raises(ValueError, match="spirals: classes must be an integer >= 2"):
        spirals(10, classes=1)
    with pytest.raises(ValueError, match="fewer than one point per class"):
        spirals(2, classes=3)
    with pytest.raises(ValueError, match="blobs: std must be a non-negative number or one per"):
        blobs(10, centers=3, std=[1.0, 2.0])
    with pytest.raises(ValueError, match="blobs: centers must be a count or an array"):
        blobs(10, centers=[1.0, 2.0])
    with pytest.raises(ValueError, match="unknown fn 'cos'"):
        regression_1d("cos")
    with pytest.raises(ValueError, match="low < high"):
        regression_1d("sin", low=1, high=1)
    with pytest.raises(TypeError, match="seed must be an int"):
        two_moons(10, seed="abc")
