"""DataLoader: batching, shuffling determinism, collation, worker threads, the fast path."""

from __future__ import annotations

import collections
import gc
import threading
import time

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import ember
from ember.data import DataLoader, Dataset, Subset, TensorDataset, batch_generator, default_collate
from ember.data.datasets import MNIST
from ember.data.loader import WORKER_THREAD_PREFIX
from ember.data.transforms import Compose, Lambda, Normalize, OneHot, Standardize, ToTensor


def as_numpy(batch):
    """A batch (nested lists/dicts of Tensors) with every Tensor replaced by its array."""
    if isinstance(batch, ember.Tensor):
        return batch.array
    if isinstance(batch, torch.Tensor):
        return batch.numpy()
    if isinstance(batch, dict):
        return {k: as_numpy(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return [as_numpy(v) for v in batch]
    return batch


def assert_same(a, b):
    """Bit-identical nested batches: same structure, dtypes and values."""
    a, b = as_numpy(a), as_numpy(b)
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def worker_threads():
    return [t for t in threading.enumerate() if t.name.startswith(WORKER_THREAD_PREFIX)]


def epoch(loader):
    return [as_numpy(b) for b in loader]


class Counting(Dataset):
    """Samples are their index; counts loads; optional jitter to scramble thread timing."""

    def __init__(self, n, jitter=0.0, fail_at=None):
        self.n, self.jitter, self.fail_at = n, jitter, fail_at
        self.loads = 0
        self.lock = threading.Lock()

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        with self.lock:
            self.loads += 1
        if self.jitter:
            time.sleep(self.jitter * ((i * 7919) % 5) / 5)
        if i == self.fail_at:
            raise KeyError(f"sample {i} is broken")
        return i


class RandomNoise(Dataset):
    """Each sample adds noise drawn from batch_generator(): a random per-sample transform."""

    def __init__(self, n):
        self.base = np.arange(n * 3, dtype=np.float32).reshape(n, 3)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        noise = batch_generator().standard_normal(3).astype(np.float32)
        return self.base[i] + noise, i


@pytest.fixture(autouse=True)
def no_threads_left_behind():
    yield
    if worker_threads():
        gc.collect()  # an iterator caught in a reference cycle is closed only by the collector
    assert worker_threads() == [], "a test left DataLoader worker threads alive"


# ------------------------------------------------------------ batching and len
@pytest.mark.parametrize("n,bs,drop_last", [(10, 3, False), (10, 3, True), (9, 3, False),
                                            (9, 3, True), (2, 5, False), (2, 5, True),
                                            (7, 1, False)])
def test_batches_and_len_match_torch(n, bs, drop_last):
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n, dtype=np.int64)
    ours = DataLoader(TensorDataset(x, y), batch_size=bs, drop_last=drop_last)
    theirs = tud.DataLoader(tud.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                            batch_size=bs, drop_last=drop_last)
    assert len(ours) == len(theirs)
    got, want = epoch(ours), epoch(theirs)
    assert len(got) == len(want) == len(ours)
    for a, b in zip(got, want):
        assert_same(a, b)


def test_slow_path_batches_match_torch_for_a_plain_dataset():
    data = [(np.full(2, i, np.float32), i, {"id": i, "name": f"s{i}"}) for i in range(7)]
    ours = DataLoader(data, batch_size=3)
    theirs = tud.DataLoader(data, batch_size=3)
    assert not ours.uses_fast_path
    for a, b in zip(epoch(ours), epoch(theirs)):
        assert_same(a, b)


@pytest.mark.parametrize("bad", [0, -1, -64, None, 2.5, True, "4"])
def test_bad_batch_size_is_a_value_error(bad):
    with pytest.raises(ValueError, match="batch_size should be a positive integer"):
        DataLoader(list(range(4)), batch_size=bad)


def test_bad_num_workers_and_generator_are_refused():
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(list(range(4)), num_workers=-1)
    with pytest.raises(TypeError, match="generator"):
        DataLoader(list(range(4)), shuffle=True, generator=42)


# ------------------------------------------------------------ shuffling
def order_of(loader):
    return np.concatenate([b.array for b in loader]).tolist()


def test_shuffle_repeats_with_the_same_seed_and_changes_with_another():
    loader = DataLoader(list(range(50)), batch_size=8, shuffle=True)
    ember.manual_seed(0)
    first = order_of(loader)
    second = order_of(loader)
    ember.manual_seed(0)
    assert order_of(loader) == first and order_of(loader) == second
    ember.manual_seed(1)
    assert order_of(loader) != first
    assert sorted(first) == list(range(50)) and first != list(range(50))
    assert first != second  # a new permutation every epoch


def test_shuffle_draws_from_a_given_generator_not_the_global_one():
    def run(seed):
        return order_of(DataLoader(list(range(30)), batch_size=4, shuffle=True,
                                   generator=np.random.default_rng(seed)))
    ember.manual_seed(0)
    a = run(7)
    ember.manual_seed(123)
    assert run(7) == a and run(8) != a

    class Holder:
        generator = np.random.default_rng(7)
    assert order_of(DataLoader(list(range(30)), batch_size=4, shuffle=True,
                               generator=Holder())) == a


def test_generator_state_can_be_checkpointed_and_restored():
    loader = DataLoader(list(range(40)), batch_size=5, shuffle=True)
    ember.manual_seed(3)
    assert loader.rng is ember.random.generator()
    state = ember.get_rng_state()
    first = order_of(loader)
    ember.set_rng_state(state)
    assert order_of(loader) == first


def test_no_shuffle_keeps_dataset_order():
    assert order_of(DataLoader(list(range(23)), batch_size=5)) == list(range(23))


# ------------------------------------------------------------ collate
Point = collections.namedtuple("Point", "x y")


@pytest.mark.parametrize("samples", [
    [1, 2, 3],
    [True, False],
    [np.float32(1.5), np.float32(2.0)],
    [np.int32(1), np.int32(4)],
    [np.arange(3.0), np.ones(3)],
    [np.arange(4, dtype=np.uint8).reshape(2, 2)] * 3,
    [(1, np.zeros(2)), (2, np.ones(2))],
    [[1, 2], [3, 4]],
    [{"a": 1, "b": np.ones(2, np.float32), "s": "x"}, {"a": 2, "b": np.zeros(2, np.float32),
                                                       "s": "y"}],
    [Point(1, np.int64(2)), Point(3, np.int64(4))],
    ["cat", "dog"],
], ids=lambda s: type(s[0]).__name__)
def test_default_collate_matches_torch(samples):
    assert_same(default_collate(samples), tud.default_collate(samples))
    assert isinstance(default_collate([Point(1, 2)] * 2), Point)


def test_default_collate_turns_python_floats_into_float32_and_stacks_tensors():
    got = default_collate([0.5, 1.25])
    assert got.dtype == np.float32 and got.tolist() == [0.5, 1.25]
    stacked = default_collate([ember.tensor([1.0, 2.0]), ember.tensor([3.0, 4.0])])
    assert stacked.shape == (2, 2) and stacked.dtype == np.float32
    nested = default_collate([{"img": ember.zeros(2, 2), "y": (1, 0.5)}] * 4)
    assert nested["img"].shape == (4, 2, 2) and nested["y"][0].dtype == np.int64
    assert nested["y"][1].dtype == np.float32


def test_default_collate_errors_are_clear():
    with pytest.raises(RuntimeError, match=r"equal size.*\[2\] at entry 0 and \[3\] at entry 1"):
        default_collate([ember.zeros(2), ember.zeros(3)])
    with pytest.raises(RuntimeError, match="each element in list of batch should be of equal"):
        default_collate([(1, 2), (1,)])
    with pytest.raises(TypeError, match="default_collate: batch must contain"):
        default_collate([object(), object()])


# ------------------------------------------------------------ worker threads
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_give_the_same_batches_in_order(workers):
    data = Counting(40, jitter=0.004)
    serial = DataLoader(data, batch_size=3)
    threaded = DataLoader(data, batch_size=3, num_workers=workers)
    got, want = epoch(threaded), epoch(serial)
    assert [b.tolist() for b in got] == [b.tolist() for b in want]
    assert np.concatenate(got).tolist() == list(range(40))


def test_workers_are_bit_identical_with_shuffle_and_random_transforms():
    data = RandomNoise(37)

    def run(workers):
        ember.manual_seed(11)
        return [epoch(DataLoader(data, batch_size=4, shuffle=True, num_workers=workers))
                for _ in range(2)]
    serial = run(0)
    for workers in (1, 2, 4):
        threaded = run(workers)
        for a, b in zip(serial, threaded):
            for x, y in zip(a, b):
                assert_same(x, y)
    assert not np.array_equal(serial[0][0][0], serial[1][0][0])  # new noise each epoch


def test_workers_fast_path_equals_serial():
    ds = MNIST(sample=True, train=False, transform=Compose([ToTensor(), Normalize((0.5,),
                                                                                  (0.25,))]))
    ember.manual_seed(5)
    serial = epoch(DataLoader(ds, batch_size=100, shuffle=True))
    ember.manual_seed(5)
    threaded = epoch(DataLoader(ds, batch_size=100, shuffle=True, num_workers=2))
    for a, b in zip(serial, threaded):
        assert_same(a, b)


def test_break_out_of_the_loop_stops_the_threads():
    loader = DataLoader(Counting(200, jitter=0.002), batch_size=2, num_workers=3)
    for i, _ in enumerate(loader):
        if i == 0:
            assert worker_threads()
        if i == 3:
            break
    assert worker_threads() == []


def test_exception_in_the_loop_body_stops_the_threads():
    loader = DataLoader(Counting(200), batch_size=2, num_workers=2)
    with pytest.raises(ZeroDivisionError):
        for batch in loader:
            int(batch.array[0]) / 0
    assert worker_threads() == []


def test_dropped_iterator_and_loader_stop_the_threads():
    loader = DataLoader(Counting(200), batch_size=2, num_workers=2)
    it = iter(loader)
    next(it)
    assert worker_threads()
    del it, loader
    gc.collect()
    assert worker_threads() == []


def test_explicit_close_stops_the_threads():
    it = iter(DataLoader(Counting(50), batch_size=2, num_workers=2))
    next(it)
    it.close()
    assert worker_threads() == []


def test_error_in_a_worker_reaches_the_main_thread_and_stops_the_threads():
    loader = DataLoader(Counting(40, fail_at=13), batch_size=4, num_workers=2)
    seen = []
    with pytest.raises(KeyError, match="sample 13 is broken"):
        for batch in loader:
            seen.append(batch)
    assert len(seen) == 3  # batches 0..2 arrive in order before batch 3 fails
    assert worker_threads() == []


def test_prefetch_queue_is_bounded():
    data = Counting(400)
    loader = DataLoader(data, batch_size=2, num_workers=2, prefetch_factor=2)
    it = iter(loader)
    next(it)
    time.sleep(0.2)
    assert data.loads <= (1 + 2 * 2) * 2  # the batch taken plus at most 4 ahead
    it.close()


# ------------------------------------------------------------ the fast path
def fast_and_slow(ds, **kw):
    ember.manual_seed(2)
    fast_loader = DataLoader(ds, **kw)
    fast = epoch(fast_loader)
    ember.manual_seed(2)
    slow_loader = DataLoader(ds, collate_fn=default_collate, **kw)
    slow = epoch(slow_loader)
    assert fast_loader.uses_fast_path and not slow_loader.uses_fast_path
    return fast, slow


@pytest.mark.parametrize("transform,target_transform", [
    (None, None),
    (ToTensor(), None),
    (Compose([ToTensor(), Normalize((0.1307,), (0.3081,))]), OneHot(10)),
    (Standardize(per_feature=False).fit(MNIST(sample=True).images[:500]), None),  # arrays out
])
def test_mnist_fast_path_equals_per_sample_path(transform, target_transform):
    ds = MNIST(sample=True, train=False, transform=transform, target_transform=target_transform)
    fast, slow = fast_and_slow(ds, batch_size=64, shuffle=True)
    assert len(fast) == len(slow) == 32
    for a, b in zip(fast, slow):
        assert_same(a, b)


def test_tensor_dataset_and_subset_fast_path_equals_per_sample_path():
    x = np.random.default_rng(0).standard_normal((50, 3, 4)).astype(np.float32)
    y = np.arange(50)
    ds = TensorDataset(ember.tensor(x), ember.tensor(y))
    for data in (ds, Subset(ds, np.arange(49, 0, -3))):
        fast, slow = fast_and_slow(data, batch_size=7, shuffle=True, drop_last=True)
        for a, b in zip(fast, slow):
            assert_same(a, b)


def test_fast_path_never_touches_getitem(monkeypatch):
    ds = MNIST(sample=True, train=False, transform=ToTensor())
    monkeypatch.setattr(MNIST, "__getitem__", lambda self, i: pytest.fail("per-sample call"))
    images, labels = next(iter(DataLoader(ds, batch_size=16)))
    assert images.shape == (16, 1, 28, 28) and labels.shape == (16,)


def test_fast_path_is_off_for_transforms_that_cannot_batch():
    plain = MNIST(sample=True, train=False, transform=lambda img: img.astype(np.float32))
    per_sample = MNIST(sample=True, train=False, transform=Compose([ToTensor(),
                                                                   Lambda(lambda t: t * 2)]))
    batched = MNIST(sample=True, train=False,
                    transform=Compose([ToTensor(), Lambda(lambda t: t * 2, batched=True)]))
    assert not DataLoader(plain).uses_fast_path
    assert not DataLoader(per_sample).uses_fast_path
    assert DataLoader(batched).uses_fast_path
    assert_same(next(iter(DataLoader(per_sample, batch_size=8))),
                next(iter(DataLoader(batched, batch_size=8))))
