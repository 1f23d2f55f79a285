"""Random augmentations: vectorised batches against per-sample reference loops written here,
seeding and worker-independence, statistics, layouts and dtypes, bad arguments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ember
from ember.data import DataLoader, default_collate
from ember.data.datasets import ImageArrayDataset
from ember.data.transforms import (Compose, Normalize, RandomCrop, RandomErasing,
                                   RandomHorizontalFlip, RandomVerticalFlip, ToTensor)

RNG = np.random.default_rng(99)
LAYOUTS = ["hwc_uint8", "hw_uint8", "chw_float32", "hw_tensor_float64"]


def make_batch(layout: str, n: int = 6, h: int = 9, w: int = 11):
    """A batch in one of the documented layouts: arrays are NHW(C), Tensors N(C)HW."""
    if layout == "hwc_uint8":
        return RNG.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    if layout == "hw_uint8":
        return RNG.integers(0, 256, (n, h, w), dtype=np.uint8)
    if layout == "chw_float32":
        return ember.tensor(RNG.standard_normal((n, 3, h, w)).astype(np.float32))
    return ember.tensor(RNG.standard_normal((n, h, w)), dtype=ember.float64)


def samples_hwc(batch) -> list[np.ndarray]:
    """Each sample as an (H, W, C) array (a copy), whatever the batch layout."""
    if isinstance(batch, ember.Tensor):
        a = batch.array
        return [(x.transpose(1, 2, 0) if x.ndim == 3 else x[:, :, None]).copy() for x in a]
    return [(x if x.ndim == 3 else x[:, :, None]).copy() for x in batch]


def like(batch, hwc_samples: list[np.ndarray]):
    """Stack HWC samples back into ``batch``'s layout, as an array."""
    stacked = np.stack(hwc_samples)
    if isinstance(batch, ember.Tensor):
        return stacked.transpose(0, 3, 1, 2) if batch.ndim == 4 else stacked[..., 0]
    return stacked if batch.ndim == 4 else stacked[..., 0]


def as_array(x) -> np.ndarray:
    return x.array if isinstance(x, ember.Tensor) else x


def run_seeded(transform, batch, seed: int = 5):
    ember.manual_seed(seed)  # outside a DataLoader, batch_generator() is ember's generator
    return transform.batch(batch)


# ------------------------------------------------------------ reference loops
def reference_crop(batch, size, sides=(0, 0, 0, 0), fill=0, mode="constant", seed=5):
    """Per sample: pad (np.pad), then cut the window at offsets drawn as documented."""
    rng = np.random.default_rng(seed)
    left, top, right, bottom = sides
    padded = []
    for img in samples_hwc(batch):
        widths = ((top, bottom), (left, right), (0, 0))
        kwargs = {"constant_values": fill} if mode == "constant" else {}
        padded.append(np.pad(img, widths, mode=mode, **kwargs))
    height, width = padded[0].shape[:2]
    tops = rng.integers(0, height - size[0] + 1, size=len(padded))
    lefts = rng.integers(0, width - size[1] + 1, size=len(padded))
    return like(batch, [img[t:t + size[0], s:s + size[1]]
                        for img, t, s in zip(padded, tops, lefts)])


def reference_flip(batch, p, seed=5, vertical=False):
    rng = np.random.default_rng(seed)
    flips = rng.random(len(batch)) < p
    out = []
    for img, flip in zip(samples_hwc(batch), flips):
        if flip:
            img = img[::-1] if vertical else img[:, ::-1]
        out.append(img)
    return like(batch, out)


def reference_erase(batch, p, scale, ratio, value, seed=5):
    """torchvision's RandomErasing, one sample at a time, on the documented draws."""
    rng = np.random.default_rng(seed)
    images = samples_hwc(batch)
    height, width = images[0].shape[:2]
    n = len(images)
    coins = rng.random(n) < p
    scales = rng.uniform(scale[0], scale[1], size=(n, 10))
    log_ratios = rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=(n, 10))
    sizes = []
    for k in range(n):
        found = (0, 0, False)
        for attempt in range(10):
            area = height * width * scales[k, attempt]
            aspect = math.exp(log_ratios[k, attempt])
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if h < height and w < width:
                found = (h, w, True)
                break
        sizes.append(found)
    hs = np.array([s[0] for s in sizes])
    ws = np.array([s[1] for s in sizes])
    tops = rng.integers(0, height - hs + 1)
    lefts = rng.integers(0, width - ws + 1)
    for k, img in enumerate(images):
        if coins[k] and sizes[k][2]:
            img[tops[k]:tops[k] + hs[k], lefts[k]:lefts[k] + ws[k], :] = value
    return like(batch, images)


# ------------------------------------------------------------ RandomCrop
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("padding,sides", [(None, (0, 0, 0, 0)), (2, (2, 2, 2, 2)),
                                           ((1, 3), (1, 3, 1, 3)),
                                           ((0, 1, 2, 3), (0, 1, 2, 3))])
def test_random_crop_batch_equals_reference_loop(layout, padding, sides):
    batch = make_batch(layout)
    size = (7, 8)
    out = run_seeded(RandomCrop(size, padding=padding, fill=3), batch)
    want = reference_crop(batch, size, sides, fill=3)
    assert type(out) is type(batch) and as_array(out).dtype == as_array(batch).dtype
    assert as_array(out).shape == want.shape and as_array(out).flags.c_contiguous
    np.testing.assert_array_equal(as_array(out), want)


@pytest.mark.parametrize("mode", ["edge", "reflect", "symmetric"])
def test_random_crop_padding_modes_equal_reference_loop(mode):
    batch = make_batch("hwc_uint8")
    out = run_seeded(RandomCrop(9, padding=3, padding_mode=mode), batch)
    np.testing.assert_array_equal(out, reference_crop(batch, (9, 9), (3,) * 4, mode=mode))


@pytest.mark.parametrize("mode,torch_mode", [("constant", "constant"), ("edge", "replicate"),
                                             ("reflect", "reflect")])
def test_full_size_crop_is_torchs_padding(mode, torch_mode):
    """A crop as large as the padded image has one position: it is the padding itself."""
    batch = make_batch("chw_float32")
    sides = (1, 2, 3, 4)  # left, top, right, bottom
    crop = RandomCrop((9 + 2 + 4, 11 + 1 + 3), padding=sides, fill=0.5, padding_mode=mode)
    kwargs = {"value": 0.5} if mode == "constant" else {}
    want = torch.nn.functional.pad(torch.from_numpy(batch.array), (1, 3, 2, 4), mode=torch_mode,
                                   **kwargs)
    np.testing.assert_array_equal(crop.batch(batch).array, want.numpy())


def test_random_crop_per_channel_fill_and_pad_if_needed():
    batch = make_batch("hwc_uint8", h=5, w=6)
    out = run_seeded(RandomCrop(8, pad_if_needed=True, fill=(10, 20, 30)), batch)
    want = reference_crop(batch, (8, 8), (2, 3, 2, 3), fill=0)  # (w: 8-6 each side, h: 8-5)
    padding = reference_crop(np.zeros_like(batch), (8, 8), (2, 3, 2, 3), fill=1).astype(bool)
    want = np.where(padding, np.array([10, 20, 30], np.uint8), want)
    np.testing.assert_array_equal(out, want)
    chw = make_batch("chw_float32")
    out = RandomCrop((9 + 2, 11 + 2), padding=1, fill=(1.0, 2.0, 3.0)).batch(chw).array
    assert out[:, :, 0, 0].tolist() == [[1.0, 2.0, 3.0]] * len(chw)


def test_random_crop_single_sample_is_a_batch_of_one():
    for layout in LAYOUTS:
        image = make_batch(layout, n=1)[0]
        ember.manual_seed(8)
        one = RandomCrop(5, padding=1)(image)
        batch = run_seeded(RandomCrop(5, padding=1), make_batch_of(image), seed=8)
        assert type(one) is type(image)
        np.testing.assert_array_equal(as_array(one), as_array(batch)[0])


def make_batch_of(image):
    return ember.Tensor._make(image.array[None], False, None) if isinstance(
        image, ember.Tensor) else image[None]


def test_random_crop_refuses_bad_arguments():
    with pytest.raises(ValueError, match="RandomCrop: required crop size \\(12, 12\\) is larger"):
        RandomCrop(12).batch(make_batch("hwc_uint8"))
    with pytest.raises(ValueError, match="only two dimensions"):
        RandomCrop((1, 2, 3))
    with pytest.raises(ValueError, match="positive"):
        RandomCrop(0)
    with pytest.raises(ValueError, match="1, 2, or 4 element tuple"):
        RandomCrop(4, padding=(1, 2, 3))
    with pytest.raises(ValueError, match="non-negative"):
        RandomCrop(4, padding=-1)
    with pytest.raises(ValueError, match="constant, edge, reflect or symmetric"):
        RandomCrop(4, padding=1, padding_mode="circular")
    with pytest.raises(ValueError, match=r"RandomCrop\.batch: expected an image array"):
        RandomCrop(4).batch(np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match=r"RandomCrop: expected .* got shape \(5,\)"):
        RandomCrop(4)(np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="2 \\(number of input channels\\), got 3"):
        RandomCrop(4, padding=1, fill=(1, 2, 3)).batch(np.zeros((1, 4, 4, 2), np.uint8))
    assert RandomCrop(4, pad_value=7).fill == 7  # the brief's name for torchvision's fill


# ------------------------------------------------------------ flips
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("vertical", [False, True])
def test_flip_batch_equals_reference_loop(layout, vertical):
    batch = make_batch(layout, n=12)
    flip = RandomVerticalFlip(0.5) if vertical else RandomHorizontalFlip(0.5)
    out = run_seeded(flip, batch)
    assert type(out) is type(batch) and as_array(out).dtype == as_array(batch).dtype
    np.testing.assert_array_equal(as_array(out), reference_flip(batch, 0.5, vertical=vertical))


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_flip_probability(p):
    n = 40000
    batch = np.tile(np.array([[[0, 1]]], np.uint8), (n, 1, 1))  # NHW images [[0, 1]]
    out = run_seeded(RandomHorizontalFlip(p), batch, seed=11)
    flipped = out[:, 0, 0] == 1
    assert np.all(np.where(flipped, out[:, 0, 1] == 0, out[:, 0, 1] == 1))
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(flipped.mean() - p) <= 5 * sigma


def test_flip_single_sample_and_no_aliasing():
    image = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    kept = image.copy()
    out = RandomHorizontalFlip(1.0)(image)
    np.testing.assert_array_equal(out, image[:, ::-1])
    same = RandomHorizontalFlip(0.0)(image)
    np.testing.assert_array_equal(same, image)
    same[0, 0, 0] ^= 1
    np.testing.assert_array_equal(image, kept)  # the input is never modified or aliased
    chw = ember.tensor(RNG.standard_normal((2, 3, 4)).astype(np.float32))
    np.testing.assert_array_equal(RandomHorizontalFlip(1.0)(chw).array, chw.array[:, :, ::-1])
    with pytest.raises(ValueError, match="RandomHorizontalFlip: p should be a probability"):
        RandomHorizontalFlip(1.5)


# ------------------------------------------------------------ RandomErasing
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("p,scale,ratio", [(0.5, (0.02, 0.33), (0.3, 3.3)),
                                           (1.0, (0.3, 0.9), (0.5, 2.0))])
def test_erasing_batch_equals_reference_loop(layout, p, scale, ratio):
    batch = make_batch(layout, n=24, h=12, w=10)
    before = as_array(batch).copy()
    out = run_seeded(RandomErasing(p, scale, ratio, value=7), batch)
    want = reference_erase(batch, p, scale, ratio, 7)
    assert type(out) is type(batch) and as_array(out).dtype == as_array(batch).dtype
    np.testing.assert_array_equal(as_array(out), want)
    np.testing.assert_array_equal(as_array(batch), before)  # not in place by default
    assert (as_array(out) != before).any()


def test_erasing_rectangles_statistics():
    n, side = 4000, 32
    batch = ember.ones(n, 1, side, side)
    out = run_seeded(RandomErasing(p=0.5, value=0), batch, seed=3).array[:, 0]
    erased = (out == 0).sum(axis=(1, 2))
    fraction = (erased > 0).mean()
    assert abs(fraction - 0.5) < 5 * math.sqrt(0.25 / n)
    areas = erased[erased > 0] / side**2
    assert areas.min() >= 0.01 and areas.max() <= 0.40  # scale (0.02, 0.33), rounding aside
    rows = (out == 0).any(axis=2).sum(axis=1)
    cols = (out == 0).any(axis=1).sum(axis=1)
    rect = erased > 0
    assert np.all(rows[rect] * cols[rect] == erased[rect])  # every erased region is a rectangle
    ratios = rows[rect] / cols[rect]
    assert ratios.min() >= 0.2 and ratios.max() <= 5  # ratio (0.3, 3.3), rounding aside


def test_erasing_values_per_channel_random_and_inplace():
    chw = ember.tensor(RNG.random((50, 3, 16, 16)).astype(np.float32) + 10)
    out = run_seeded(RandomErasing(p=1.0, value=(-1, -2, -3)), chw).array
    for c, v in enumerate((-1, -2, -3)):
        erased = out[:, c] < 0
        assert erased.any() and np.all(out[:, c][erased] == v)
        np.testing.assert_array_equal(erased, out[:, 0] < 0)  # same rectangle in every channel
    hwc = RNG.integers(100, 200, (20, 16, 16, 3), dtype=np.uint8)
    out = run_seeded(RandomErasing(p=1.0, value=(0, 255, 7)), hwc)
    erased = (out != hwc).any(axis=-1)
    assert out.dtype == np.uint8 and np.all(out[erased] == [0, 255, 7])
    noisy = run_seeded(RandomErasing(p=1.0, value="random"), chw).array
    erased = noisy != chw.array
    values = noisy[erased]
    assert values.size > 1000 and abs(values.mean()) < 0.1 and abs(values.std() - 1) < 0.1
    target = ember.tensor(chw.array.copy())
    RandomErasing(p=1.0, value=0, inplace=True).batch(target)
    assert (target.array == 0).any()


def test_erasing_refuses_bad_arguments():
    with pytest.raises(ValueError, match="should be 'random'"):
        RandomErasing(value="noise")
    with pytest.raises(TypeError, match="number or str or a sequence"):
        RandomErasing(value=None)
    with pytest.raises(ValueError, match="scale should be between 0 and 1"):
        RandomErasing(scale=(0.1, 1.5))
    with pytest.raises(ValueError, match="probability"):
        RandomErasing(p=-0.1)
    with pytest.raises(ValueError, match="ratio values must be positive"):
        RandomErasing(ratio=(0.0, 1.0))
    with pytest.warns(UserWarning, match="Scale and ratio should be of kind"):
        RandomErasing(scale=(0.3, 0.1))
    with pytest.raises(TypeError, match="value='random' needs float images"):
        RandomErasing(p=1.0, value="random").batch(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="3 \\(number of input channels\\), got 2"):
        RandomErasing(p=1.0, value=(1, 2)).batch(ember.zeros(2, 3, 8, 8))


# ------------------------------------------------------------ seeding through the DataLoader
class RandomImages(ImageArrayDataset):
    def __init__(self, n, transform):
        self.images = RNG.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
        self.labels = np.arange(n) % 10
        self.classes = [str(i) for i in range(10)]
        self.transform, self.target_transform = transform, None


def augmented(seed, workers, fast=True):
    pipeline = Compose([RandomCrop(16, padding=2), RandomHorizontalFlip(), ToTensor(),
                        Normalize((0.5,) * 3, (0.25,) * 3), RandomErasing()])
    ds = RandomImages(40, pipeline)
    ember.manual_seed(seed)
    loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=workers,
                        collate_fn=None if fast else default_collate)
    assert loader.uses_fast_path == fast
    return [(x.array, y.array) for x, y in loader]


@pytest.mark.parametrize("fast", [True, False])
def test_augmentation_repeats_with_the_seed_whatever_the_workers(fast):
    RNG.bit_generator.state = np.random.default_rng(0).bit_generator.state
    first = augmented(1, workers=0, fast=fast)
    RNG.bit_generator.state = np.random.default_rng(0).bit_generator.state
    threaded = augmented(1, workers=3, fast=fast)
    RNG.bit_generator.state = np.random.default_rng(0).bit_generator.state
    other = augmented(2, workers=0, fast=fast)
    assert len(first) == len(threaded) == 5
    for (xa, ya), (xb, yb) in zip(first, threaded):
        assert xa.shape == (8, 3, 16, 16) and xa.dtype == np.float32
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_batch_transform_draws_from_the_batch_generator():
    """Two batches of the same samples in one epoch get different random crops."""
    images = RNG.integers(0, 256, (1, 12, 12, 3), dtype=np.uint8).repeat(64, axis=0)
    ds = RandomImages(64, RandomCrop(8))
    ds.images = images
    ember.manual_seed(0)
    batches = [x.array for x, _ in DataLoader(ds, batch_size=32)]
    assert not np.array_equal(batches[0], batches[1])
