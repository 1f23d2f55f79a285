"""ember.ops.simd_conv: direct float32 convolutions against torch (float64, on the same
float32 operands), on one thread and two, with non-finite inputs, and when they run.

Like ``test_simd``, the kernels compile on any x86 CPU (as AVX2 halves without AVX-512),
so the tests switch ``simd`` on and check them everywhere."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import ember
from ember import blas
from ember.nn import functional as F
from ember.ops import conv, kernels, simd, simd_conv

pytestmark = pytest.mark.skipif(not kernels.enabled(np.float32), reason="needs Numba")


@pytest.fixture
def calls(monkeypatch):
    """``simd`` on; the names of the ``simd_conv`` functions the convolutions called."""
    previous = simd.set_wanted(True)
    taken = []
    for name in ("forward", "weight_grad"):
        real = getattr(simd_conv, name)
        monkeypatch.setattr(simd_conv, name,
                            lambda *a, _real=real, _name=name: taken.append(_name) or _real(*a))
    yield taken
    simd.set_wanted(previous)


# (n, c, h, w, c_out, kernel, padding, bias): rows of 10 pixels (6 of a vector's 16 lanes
# unused), 28 (LeNet-5's first layer), 33 (three vectors, the last one lane), 15 and 20;
# output channels past a tile of 6 (7, 13, 16, 24) and fewer (1, 3, 5); weight gradients
# with the channels as lanes (16, 13 and 24: a whole vector, a part of one, one and a half);
# 1x1, even, asymmetric and whole-image kernels; taps not a multiple of 3 or 12
GEOMETRIES = [
    (3, 2, 12, 10, 7, (3, 3), 1, True),
    (2, 1, 28, 28, 6, (5, 5), 2, True),
    (4, 6, 14, 14, 16, (5, 5), 0, True),
    (2, 3, 9, 33, 5, (3, 3), (0, 1), False),
    (1, 4, 6, 20, 13, (1, 1), 0, True),
    (3, 2, 7, 16, 1, (2, 4), 1, False),
    (2, 5, 5, 5, 3, (5, 5), 2, True),
    (2, 3, 8, 10, 24, (3, 3), 1, True),
    (2, 3, 8, 8, 4, (3, 3), 3, True),  # padding past the kernel's reach: no stride-1 gradient
]


def operands(n, c, h, w, c_out, kernel, bias, seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((n, c, h, w)).astype(np.float32),
              rng.standard_normal((c_out, c, *kernel)).astype(np.float32)]
    return arrays + ([rng.standard_normal(c_out).astype(np.float32)] if bias else [])


def ember_conv(arrays, padding, grad_seed=0):
    ts = [ember.tensor(a, requires_grad=True) for a in arrays]
    out = F.conv2d(*ts, padding=padding)
    g = np.random.default_rng(grad_seed).standard_normal(out.shape).astype(np.float32)
    out.backward(ember.tensor(g))
    return out.array, [t.grad.array for t in ts], g


def torch_conv(arrays, padding, g):
    ts = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in arrays]
    out = TF.conv2d(*ts, padding=padding)
    out.backward(torch.tensor(g.astype(np.float64)))
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


def assert_float32_close(got, exact):
    assert got.dtype == np.float32 and got.shape == exact.shape
    scale = np.abs(exact).max() + 1e-30
    assert np.abs(got - exact).max() <= 2e-6 * scale


@pytest.mark.parametrize("n, c, h, w, c_out, kernel, padding, bias", GEOMETRIES)
def test_direct_conv_matches_torch(calls, n, c, h, w, c_out, kernel, padding, bias):
    arrays = operands(n, c, h, w, c_out, kernel, bias, seed=n * 100 + c_out)
    out, grads, g = ember_conv(arrays, padding)
    win = conv.conv_window("conv2d", arrays[0].shape, arrays[1].shape, 1, padding, 1)
    direct_gx = conv.direct_input_grad(arrays[1], win, False)
    direct_gw = simd_conv.weight_grad_fits(win, c_out)
    assert calls == ["forward"] * (1 + direct_gx) + ["weight_grad"] * direct_gw
    expected, expected_grads = torch_conv(arrays, padding, g)
    assert_float32_close(out, expected)
    for mine, theirs in zip(grads, expected_grads):
        assert_float32_close(mine, theirs)


def test_same_bits_on_one_thread_and_two(calls, monkeypatch):
    arrays = operands(5, 3, 16, 28, 8, (3, 3), True, seed=3)
    monkeypatch.setattr(blas, "get_num_threads", lambda: 1)
    one = ember_conv(arrays, 1)
    monkeypatch.setattr(blas, "get_num_threads", lambda: 3)  # two halves, on two threads
    two = ember_conv(arrays, 1)
    assert calls == ["forward", "forward", "weight_grad"] * 2
    assert one[0].tobytes() == two[0].tobytes()
    for a, b in zip(one[1], two[1]):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("w, c_out", [(28, 7), (10, 16)])  # pixels, channels as lanes
def test_non_finite_inputs_give_torchs_non_finite_outputs(calls, w, c_out):
    """inf and -inf where torch has them. Corner pixels reach only some taps' weight
    gradients; the lanes past the end of a padded row's last vector read the next row's
    first pixels (here the infinities), which must not make 0 * inf."""
    arrays = operands(2, 2, 9, w, c_out, (3, 3), True, seed=4)
    x = arrays[0]
    x[0, 0, 0, 0], x[1, 1, 8, w - 1], x[0, 1, 4, 0] = np.inf, -np.inf, np.inf
    out, grads, g = ember_conv(arrays, 1)
    assert calls == ["forward"] * (1 + (w == 28)) + ["weight_grad"]  # rows of 28 fill
    expected, expected_grads = torch_conv(arrays, 1, g)
    for got, exact in [(out, expected)] + list(zip(grads, expected_grads)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(exact))
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(exact))
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(exact))
        finite = np.isfinite(exact)
        assert finite.any()
        assert_float32_close(got[finite], exact[finite])


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_non_finite_weight_meets_the_padding_as_in_torch(calls, padding):
    """An infinite weight on a per-sample-sized layer: torch's (float64, im2col) NaN and inf
    pattern. Its forward then multiplies the padding's zero rows too, and its input
    gradient stays with the columns, which never meet the padded gradient's zeros."""
    arrays = operands(2, 2, 9, 28, 7, (3, 3), True, seed=15)
    arrays[1][3, 1, 0, 2], arrays[1][5, 0, 2, 1] = np.inf, -np.inf
    out, grads, g = ember_conv(arrays, padding)
    assert calls == ["forward", "weight_grad"]
    expected, expected_grads = torch_conv(arrays, padding, g)
    for got, exact in [(out, expected)] + list(zip(grads, expected_grads)):
        for kind in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(kind(got), kind(exact))
    assert np.isnan(expected).any() == (padding > 0) and np.isinf(expected_grads[0]).any()


@pytest.mark.parametrize("x_shape, c_out, kernel, padding", [((3, 1, 28, 28), 6, (5, 5), 2),
                                                             ((3, 16, 10, 10), 6, (5, 5), 4),
                                                             ((2, 3, 16, 17), 8, (3, 3), (2, 1))])
def test_skipping_the_paddings_rows_keeps_the_bits(calls, monkeypatch, x_shape, c_out, kernel,
                                                   padding):
    """The forward skips kernel rows that fall on padding (LeNet-5's first layer; its second
    layer's input gradient, a 10x10 gradient padded by 4; padding taller than wide): FMAs
    that would add exact zeros, so the bits are those of the full sums."""
    arrays = operands(x_shape[0], x_shape[1], *x_shape[2:], c_out, kernel, True, seed=16)
    win = conv.conv_window("conv2d", x_shape, arrays[1].shape, 1, padding, 1)
    skipped = simd_conv.forward(arrays[0], arrays[1], win, arrays[2])
    monkeypatch.setattr(simd_conv, "SKIP_PADDING", False)
    full = simd_conv.forward(arrays[0], arrays[1], win, arrays[2])
    assert skipped.tobytes() == full.tobytes() and calls == ["forward", "forward"]
    exact = TF.conv2d(*(torch.tensor(a.astype(np.float64)) for a in arrays[:2]),
                      torch.tensor(arrays[2].astype(np.float64)), padding=padding).numpy()
    assert_float32_close(skipped, exact)


@pytest.mark.parametrize("ow, c_out, fits", [(10, 7, False), (12, 7, True), (16, 1, True),
                                             (17, 5, False), (28, 6, True), (10, 16, True),
                                             (10, 12, True), (10, 20, False), (10, 40, True)])
def test_weight_grad_runs_where_rows_or_channels_fill_the_vectors(ow, c_out, fits):
    win = conv.conv_window("conv2d", (2, 1, 5, ow + 2), (c_out, 1, 3, 3), 1, 0, 1)
    assert win.ow == ow and simd_conv.weight_grad_fits(win, c_out) == fits


def test_direct_path_only_for_float32_stride_1_single_group(calls):
    arrays = operands(2, 4, 10, 10, 4, (3, 3), False, seed=5)
    x64, w64 = (ember.tensor(a, dtype=ember.float64) for a in arrays)
    F.conv2d(x64, w64, padding=1)
    x, w = (ember.tensor(a) for a in arrays)
    F.conv2d(x, w, stride=2)
    F.conv2d(x, w[:, :2], groups=2)
    F.conv2d(x, w, dilation=2)
    assert calls == []
    F.conv2d(x, w)
    assert calls == ["forward"]


def test_switched_off_and_unwanted(calls, monkeypatch):
    arrays = operands(2, 4, 10, 10, 4, (3, 3), False, seed=6)
    x, w = (ember.tensor(a) for a in arrays)
    monkeypatch.setattr(simd_conv, "ENABLED", False)
    F.conv2d(x, w)
    monkeypatch.setattr(simd_conv, "ENABLED", True)
    simd.set_wanted(False)
    F.conv2d(x, w)
    assert calls == []


def test_direct_forward_for_a_batch_the_columns_would_block(calls, monkeypatch):
    """A per-sample-sized layer whose whole batch of columns would be too big for the
    per-sample layout (LeNet-5 at inference's batch of 1000) still runs direct: it builds no
    columns), and so do its input and weight gradients."""
    monkeypatch.setattr(conv, "SAMPLE_MAX_COLUMNS_BYTES", 1)
    arrays = operands(3, 6, 14, 14, 16, (5, 5), True, seed=7)
    win = conv.conv_window("conv2d", arrays[0].shape, arrays[1].shape, 1, 0, 1)
    assert conv.blocked(win, 1) and not conv.stays_per_sample(win, 16)
    out, grads, g = ember_conv(arrays, 0)
    assert calls == ["forward", "forward", "weight_grad"]
    expected, expected_grads = torch_conv(arrays, 0, g)
    for mine, theirs in zip([out] + grads, [expected] + expected_grads):
        assert_float32_close(mine, theirs)


@pytest.mark.parametrize("h, w, direct", [(16, 16, True), (10, 32, True), (8, 8, False),
                                          (16, 20, False)])
def test_blocked_layers_run_direct_where_rows_fill_the_vectors(calls, monkeypatch, h, w,
                                                               direct):
    """Above the per-sample size (here: all), a blocked layer runs its forward and input
    gradient direct where its rows fill 3/4 of the vectors (16 and 32 wide, not 8 or 20),
    its weight gradient from the blocked layout's columns."""
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    arrays = operands(3, 8, h, w, 12, (3, 3), True, seed=8)
    out, grads, g = ember_conv(arrays, 1)
    assert calls == (["forward", "forward"] if direct else [])
    expected, expected_grads = torch_conv(arrays, 1, g)
    for mine, theirs in zip([out] + grads, [expected] + expected_grads):
        assert_float32_close(mine, theirs)


@pytest.mark.parametrize("c, hw, c_out, kernel, padding", [(3, 32, 8, (3, 3), 1),
                                                             (6, 14, 16, (5, 5), 0)])
def test_weight_gradient_over_a_batch_is_as_accurate_as_the_columns(calls, monkeypatch, c, hw,
                                                                    c_out, kernel, padding):
    """Summed over 96 samples (~10^5 pixels: the CIFAR CNN's first layer, LeNet-5's second,
    pixels and channels as lanes), the direct weight gradient stays within 1.5x the
    error of the columns' per-sample products: each lane's chain restarts every sample.
    (One chain over the batch had 3.5x and 7x their error.)"""
    arrays = operands(96, c, hw, hw, c_out, kernel, False, seed=9)
    _, (_, direct), g = ember_conv(arrays, padding)
    assert calls == ["forward", "forward", "weight_grad"]
    monkeypatch.setattr(simd_conv, "ENABLED", False)
    _, (_, columns), _ = ember_conv(arrays, padding)
    exact = torch_conv(arrays, padding, g)[1][1]
    error = np.abs(direct - exact).max()
    assert error <= 1.5 * np.abs(columns - exact).max()


def test_blocked_layers_keep_the_columns_bits(calls, monkeypatch):
    """On a blocked layer the direct forward and input gradient are the columns' products
    on ``simd``'s kernels, bit for bit: each output is the same chain of FMAs over (channel,
    row, column) taps, from zero (no bias here: the direct sums start at it)."""
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    arrays = operands(4, 8, 16, 16, 12, (3, 3), False, seed=10)
    direct = ember_conv(arrays, 1)
    assert calls == ["forward", "forward"]
    monkeypatch.setattr(simd_conv, "ENABLED", False)
    columns = ember_conv(arrays, 1)
    assert direct[0].tobytes() == columns[0].tobytes()
    assert direct[1][0].tobytes() == columns[1][0].tobytes()


def test_strided_operands(calls):
    """Views with other strides (a transposed input, a reversed weight, a sliced output
    gradient) give the values of their contiguous copies."""
    arrays = operands(3, 4, 12, 12, 16, (3, 3), True, seed=11)
    x = np.swapaxes(arrays[0], 2, 3)
    w = arrays[1][:, :, ::-1]
    g = np.random.default_rng(12).standard_normal((3, 16, 12, 24)).astype(np.float32)[..., ::2]
    ts = [ember.tensor(a, requires_grad=True) for a in (x, w, arrays[2])]
    out = F.conv2d(*ts, padding=1)
    out.backward(ember.tensor(g))
    assert calls == ["forward", "forward", "weight_grad"]
    expected, expected_grads = torch_conv([np.ascontiguousarray(x), np.ascontiguousarray(w),
                                           arrays[2]], 1, np.ascontiguousarray(g))
    for mine, theirs in zip([out.array] + [t.grad.array for t in ts],
                            [expected] + expected_grads):
        assert_float32_close(mine, theirs)


def test_blocked_layers_stay_blocked_where_the_products_are_the_blas(calls, monkeypatch):
    """With a BLAS that has AVX-512 kernels of its own (``simd.wanted()`` False, the vectors
    still wanted: ``simd.vectors_wanted``), small layers run direct and blocked ones keep the
    blocked layout (Winograd's forward there was not measured against the direct one)."""
    monkeypatch.setattr(simd, "wanted", lambda: False)
    small = operands(2, 3, 12, 12, 8, (3, 3), False, seed=13)
    ember_conv(small, 1)
    assert calls == ["forward", "forward", "weight_grad"]
    calls.clear()
    monkeypatch.setattr(conv, "SAMPLE_LAYOUT", False)
    ember_conv(operands(3, 8, 16, 16, 12, (3, 3), False, seed=14), 1)
    assert calls == []
