"""Transforms against their formulas computed in torch (torchvision's definitions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from ember.data.transforms import (Compose, Lambda, MinMaxScale, Normalize, OneHot, Standardize,
                                   ToTensor)

RNG = np.random.default_rng(1234)


def images(*shape, dtype=np.uint8):
    return RNG.integers(0, 256, size=shape).astype(dtype)


def assert_bitwise(ours, theirs):
    ours = ours.array if isinstance(ours, ember.Tensor) else ours
    theirs = theirs.numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


# ------------------------------------------------------------ ToTensor
def torchvision_to_tensor(array):
    """torchvision.transforms.functional.to_tensor for an ndarray, written out."""
    if array.ndim == 2:
        array = array[:, :, None]
    t = torch.from_numpy(array.transpose(2, 0, 1).copy()).contiguous()
    return t.to(torch.float32).div(255) if t.dtype == torch.uint8 else t


@pytest.mark.parametrize("shape", [(28, 28), (5, 7, 3), (4, 6, 1)])
def test_to_tensor_matches_torchvision_formula(shape):
    a = images(*shape)
    out = ToTensor()(a)
    assert isinstance(out, ember.Tensor)
    assert_bitwise(out, torchvision_to_tensor(a))
    assert out.array.min() >= 0 and out.array.max() <= 1


def test_to_tensor_keeps_non_uint8_values_like_torchvision():
    a = RNG.standard_normal((4, 5, 2))
    assert_bitwise(ToTensor()(a), torchvision_to_tensor(a))
    assert ToTensor()(a).dtype == np.float64


@pytest.mark.parametrize("shape", [(6, 28, 28), (3, 5, 7, 3)])
def test_to_tensor_batch_equals_stacked_samples(shape):
    batch = images(*shape)
    per_sample = np.stack([torchvision_to_tensor(x).numpy() for x in batch])
    assert_bitwise(ToTensor().batch(batch), per_sample)


def test_to_tensor_refuses_wrong_ranks():
    with pytest.raises(ValueError, match="ToTensor: expected an HW or HWC image"):
        ToTensor()(np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="ToTensor.batch: expected NHW or NHWC"):
        ToTensor().batch(np.zeros((2, 3), np.uint8))


# ------------------------------------------------------------ Normalize
def torchvision_normalize(t, mean, std):
    """torchvision.transforms.functional.normalize, written out."""
    mean = torch.as_tensor(mean, dtype=t.dtype).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=t.dtype).view(-1, 1, 1)
    return t.sub(mean).div(std)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,mean,std", [
    ((1, 28, 28), (0.1307,), (0.3081,)),
    ((3, 4, 5), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ((8, 3, 4, 5), (0.5, 0.4, 0.3), (0.2, 0.3, 0.4)),
    ((3, 2, 2), (0.5,), (0.25,)),
])
def test_normalize_matches_torchvision_formula(dtype, shape, mean, std):
    x = RNG.random(shape).astype(dtype)
    want = torchvision_normalize(torch.from_numpy(x), mean, std)
    out = Normalize(mean, std)(ember.tensor(x, dtype=dtype))
    assert isinstance(out, ember.Tensor)
    assert_bitwise(out, want)
    assert_bitwise(Normalize(mean, std)(x), want)  # arrays in, arrays out
    assert_bitwise(Normalize(mean, std).batch(x), want)


@pytest.mark.parametrize("shape,mean,std", [
    ((10, 28, 28), (0.1307,), (0.3081,)),                                  # MNIST, NHW
    ((7, 32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),  # CIFAR, NHWC
    ((5, 6, 4, 3), (0.5,), (0.25,)),                                       # one value, 3 channels
])
def test_to_tensor_then_normalize_batch_fused_gives_the_bits_of_the_two(monkeypatch, shape,
                                                                          mean, std):
    """Compose.batch runs ToTensor + Normalize on uint8 images as one compiled pass: the
    same float32 bits as the two transforms one after the other, and as torchvision's
    formula; the fused kernel was really used."""
    from ember.ops import kernels
    if not kernels.enabled():
        pytest.skip("Numba is not installed")
    images = RNG.integers(0, 256, shape, dtype=np.uint8)
    images.reshape(-1)[:256] = np.arange(256)  # every byte value (the kernel reads a table)
    tf = Compose([ToTensor(), Normalize(mean, std)])
    calls = []
    real = kernels.unit_normalize
    monkeypatch.setattr(kernels, "unit_normalize", lambda *a: calls.append(1) or real(*a))
    fused = tf.batch(images)
    assert calls and isinstance(fused, ember.Tensor) and fused.array.flags.c_contiguous
    separate = Normalize(mean, std).batch(ToTensor().batch(images))
    assert_bitwise(fused, torch.from_numpy(separate.array))
    chw = torch.from_numpy(images).float().div(255)
    chw = chw[:, None] if chw.ndim == 3 else chw.permute(0, 3, 1, 2)
    assert_bitwise(fused, torchvision_normalize(chw, mean, std))
    monkeypatch.setattr(kernels, "_wanted", False)
    assert_bitwise(tf.batch(images), torch.from_numpy(separate.array))  # the NumPy path


def test_fused_normalize_keeps_the_checks_and_leaves_floats_to_the_two_passes():
    with pytest.raises(ValueError, match="std evaluated to zero"):
        Compose([ToTensor(), Normalize((0.5,), (0.0,))]).batch(np.ones((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="2 mean values for an image with 3 channels"):
        Compose([ToTensor(), Normalize((0.5, 0.5), (0.5, 0.5))]).batch(
            np.ones((2, 4, 4, 3), np.uint8))
    floats = RNG.random((3, 4, 4)).astype(np.float32)
    out = Compose([ToTensor(), Normalize((0.5,), (0.25,))]).batch(floats)
    assert_bitwise(out, torch.from_numpy((floats[:, None] - np.float32(0.5)) / np.float32(0.25)))


def test_normalize_refuses_bad_input():
    with pytest.raises(ValueError, match="std evaluated to zero"):
        Normalize((0.5,), (0.0,))(np.ones((1, 2, 2), np.float32))
    with pytest.raises(TypeError, match="float tensor.*ToTensor"):
        Normalize((0.5,), (0.5,))(np.ones((1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="2 mean values for an image with 3 channels"):
        Normalize((0.5, 0.5), (0.5, 0.5))(np.ones((3, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(\.\.\., C, H, W\)"):
        Normalize((0.5,), (0.5,))(np.ones((2, 2), np.float32))


# ------------------------------------------------------------ Standardize / MinMaxScale
def test_standardize_per_feature_matches_formula():
    train = RNG.standard_normal((100, 6)) * 3 + 2
    test = RNG.standard_normal((10, 6))
    t = torch.from_numpy(train)
    want = (torch.from_numpy(test) - t.mean(0)) / t.std(0, unbiased=False)
    s = Standardize().fit(train)
    np.testing.assert_allclose(s(test), want.numpy(), rtol=1e-12)
    np.testing.assert_allclose(s.batch(test), want.numpy(), rtol=1e-12)
    np.testing.assert_allclose(s(test[3]), want.numpy()[3], rtol=1e-12)
    fitted = s(train)
    np.testing.assert_allclose(fitted.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(fitted.std(0), 1, rtol=1e-12)


def test_standardize_scalar_stats_on_uint8_images_gives_float32():
    train = images(50, 28, 28)
    s = Standardize(per_feature=False).fit(ember.tensor(train))
    t = torch.from_numpy(train).double()
    mean, std = t.mean(), t.std(unbiased=False)
    out = s(ember.tensor(train[:3]))
    assert isinstance(out, ember.Tensor) and out.dtype == np.float32
    want = (torch.from_numpy(train[:3]).float() - mean.float()) / std.float()
    np.testing.assert_allclose(out.array, want.numpy(), rtol=1e-6)


def test_standardize_constant_feature_gets_unit_std_and_refuses_before_fit():
    train = np.array([[1.0, 5.0], [3.0, 5.0]])
    out = Standardize().fit(train)(train)
    np.testing.assert_array_equal(out, [[-1.0, 0.0], [1.0, 0.0]])
    with pytest.raises(RuntimeError, match=r"Standardize: call \.fit\(train_data\)"):
        Standardize()(train)
    with pytest.raises(ValueError, match="non-empty"):
        Standardize().fit(np.zeros((0, 3)))


@pytest.mark.parametrize("feature_range", [(0.0, 1.0), (-1.0, 1.0), (2.0, 5.0)])
def test_minmax_scale_matches_formula(feature_range):
    train = RNG.standard_normal((80, 5)) * 4
    test = RNG.standard_normal((7, 5)) * 4
    lo, hi = feature_range
    t = torch.from_numpy(train)
    tmin, tmax = t.min(0).values, t.max(0).values
    want = (torch.from_numpy(test) - tmin) / (tmax - tmin) * (hi - lo) + lo
    m = MinMaxScale(feature_range).fit(train)
    np.testing.assert_allclose(m(test), want.numpy(), rtol=1e-12, atol=1e-12)
    scaled = m(train)
    np.testing.assert_allclose(scaled.min(0), lo, atol=1e-12)
    np.testing.assert_allclose(scaled.max(0), hi, atol=1e-12)


def test_minmax_scale_errors_and_constant_features():
    with pytest.raises(RuntimeError, match="MinMaxScale: call .fit"):
        MinMaxScale()(np.ones(3))
    with pytest.raises(ValueError, match="low < high"):
        MinMaxScale((1.0, 0.0))
    out = MinMaxScale().fit(np.array([[2.0, 0.0], [2.0, 4.0]]))(np.array([2.0, 1.0]))
    np.testing.assert_array_equal(out, [0.0, 0.25])


def test_minmax_scale_whole_array_on_uint8():
    train = images(20, 4, 4)
    m = MinMaxScale(per_feature=False).fit(train)
    out = m(train)
    lo, hi = float(train.min()), float(train.max())
    want = (torch.from_numpy(train).float() - lo) / (hi - lo)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, want.numpy(), rtol=1e-6)


# ------------------------------------------------------------ OneHot, Lambda, Compose
def test_one_hot_matches_torch():
    labels = RNG.integers(0, 10, size=25)
    want = torch.nn.functional.one_hot(torch.from_numpy(labels), 10).float()
    assert_bitwise(OneHot(10).batch(labels), want)
    assert_bitwise(OneHot(10)(int(labels[4])), want[4])
    assert OneHot(3, dtype=ember.int64)(2).array.tolist() == [0, 0, 1]


def test_one_hot_refuses_bad_labels():
    with pytest.raises(ValueError, match="class index 10 is out of range for num_classes=10"):
        OneHot(10)(10)
    with pytest.raises(ValueError, match="class index -1"):
        OneHot(10).batch(np.array([1, -1]))
    with pytest.raises(TypeError, match="integers"):
        OneHot(10)(1.5)
    with pytest.raises(ValueError, match="num_classes"):
        OneHot(0)


def test_lambda_and_compose():
    tf = Compose([Lambda(lambda x: x + 1), Lambda(lambda x: x * 3)])
    assert tf(2) == 9
    assert not tf.batchable
    with pytest.raises(RuntimeError, match="batched=True"):
        tf.batch(np.arange(3))
    both = Compose([ToTensor(), Lambda(lambda t: t * 2, batched=True)])
    assert both.batchable
    batch = images(3, 4, 4)
    assert_bitwise(both.batch(batch), np.stack([both(x).array for x in batch]))
    with pytest.raises(TypeError, match="callable"):
        Lambda(3)
    assert "ToTensor()" in repr(both)
