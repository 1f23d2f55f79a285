"""DataLoader: batches from a dataset, optionally shuffled, optionally prefetched by threads.

Determinism: every epoch's plan (the sample order and one base seed) is drawn on
the main thread when iteration starts. Batch ``i`` is then loaded by a pure
function of ``(plan, i)``; random transforms draw from ``batch_generator()``,
which is seeded by ``(base seed, i)``. So worker threads give the same batches,
bit for bit, as ``num_workers=0``, and ``ember.manual_seed(s)`` repeats an epoch.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ember import random as ember_random
from ember.data.collate import default_collate
from ember.data.dataset import resolve_generator

__all__ = ["DataLoader", "batch_generator", "WORKER_THREAD_PREFIX"]

WORKER_THREAD_PREFIX = "ember-data-worker"


class _BatchSeed(threading.local):
    seed: tuple | None = None
    rng: np.random.Generator | None = None


_batch_seed = _BatchSeed()


def batch_generator() -> np.random.Generator:
    """The generator a random transform should draw from.

    While a DataLoader loads a batch (on the main thread or a worker), this is a
    generator seeded by that epoch's base seed and the batch's index, so random
    augmentation repeats exactly whatever ``num_workers`` is. Elsewhere it is
    ember's global generator.

    >>> flip = Lambda(lambda img: img[:, ::-1] if batch_generator().random() < 0.5 else img)
    """
    if _batch_seed.seed is None:
        return ember_random.generator()
    if _batch_seed.rng is None:
        _batch_seed.rng = np.random.default_rng(_batch_seed.seed)
    return _batch_seed.rng


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size <= 0:
        raise ValueError("batch_size should be a positive integer value, but got "
                         f"batch_size={batch_size!r}")
    return int(batch_size)


class DataLoader:
    """Iterate over ``dataset`` in batches.

    shuffle: a fresh permutation each epoch, drawn from ``generator`` (a
    ``numpy.random.Generator``, an object holding one as ``.generator``, or None
    for ember's global generator, so ``ember.manual_seed`` repeats the order).
    collate_fn: turns a list of samples into a batch (default: ``default_collate``).
    num_workers: >0 loads batches in that many background threads, in order,
    at most ``num_workers * prefetch_factor`` ahead.
    Array-backed datasets (``get_batch`` and ``batchable``) are sliced a whole
    batch at a time when ``collate_fn`` is None: the same batches, faster.

    >>> ds = TensorDataset(ember.arange(10.0), ember.arange(10))
    >>> [tuple(x.shape) for x, y in DataLoader(ds, batch_size=4)]
    [(4,), (4,), (2,)]
    """

    def __init__(self, dataset: Any, batch_size: int = 1, shuffle: bool = False,
                 generator: Any = None, drop_last: bool = False,
                 collate_fn: Callable | None = None, num_workers: int = 0,
                 prefetch_factor: int = 2) -> None:
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 "
                             f"to disable multiprocessing, got {num_workers!r}")
        if not isinstance(prefetch_factor, int) or prefetch_factor < 1:
            raise ValueError(f"prefetch_factor should be a positive integer, got "
                             f"{prefetch_factor!r}")
        if generator is not None:
            resolve_generator(generator)  # refuse a wrong type now, not at the first epoch
        self.dataset = dataset
        self.batch_size = _check_batch_size(batch_size)
        self.shuffle = bool(shuffle)
        self.generator = generator
        self.drop_last = bool(drop_last)
        self.collate_fn = collate_fn
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor

    @property
    def rng(self) -> np.random.Generator:
        """The NumPy generator the next epoch draws from (checkpoint its bit_generator.state)."""
        return resolve_generator(self.generator)

    @property
    def uses_fast_path(self) -> bool:
        """Whether batches come from ``dataset.get_batch`` rather than sample by sample."""
        return (self.collate_fn is None and callable(getattr(self.dataset, "get_batch", None))
                and bool(getattr(self.dataset, "batchable", False)))

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        plan = self._epoch_plan()
        if self.num_workers == 0:
            return _serial(self._loader(plan), plan[1])
        return _prefetch(self._loader(plan), plan[1], self.num_workers,
                         self.num_workers * self.prefetch_factor)

    def _epoch_plan(self) -> tuple[np.ndarray, int, int]:
        """This epoch's sample order, its number of batches and its base seed, drawn on the
        calling thread. Batch ``i`` is ``order[i * batch_size:][:batch_size]``, sliced when
        it is loaded: a list of 6000 slices (MNIST at batch 10) held 1.2 MB."""
        n = len(self.dataset)
        rng = self.rng
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        base_seed = int(rng.integers(0, 2**63 - 1))
        return order, len(self), base_seed

    def _loader(self, plan: tuple[np.ndarray, int, int]) -> Callable[[int], Any]:
        """A function loading batch ``i`` of ``plan``: pure, so any thread may run it."""
        order, _, base_seed = plan
        dataset, fast, size = self.dataset, self.uses_fast_path, self.batch_size
        collate = self.collate_fn or default_collate

        def load(i: int) -> Any:
            _batch_seed.seed, _batch_seed.rng = (base_seed, i), None
            indices = order[i * size:(i + 1) * size]
            try:
                if fast:
                    return dataset.get_batch(indices)
                return collate([dataset[int(j)] for j in indices])
            finally:
                _batch_seed.seed, _batch_seed.rng = None, None
        return load

    def __repr__(self) -> str:
        return (f"DataLoader(batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, num_workers={self.num_workers}, "
                f"batches={len(self)})")


def _serial(load: Callable[[int], Any], count: int) -> Iterator[Any]:
    for i in range(count):
        yield load(i)


def _prefetch(load: Callable[[int], Any], count: int, workers: int,
              depth: int) -> Iterator[Any]:
    """Yield ``load(0..count-1)`` in order while threads work up to ``depth`` batches ahead.

    The pool is shut down (threads joined) however iteration ends: exhausted, a
    ``break`` (the generator is closed when dropped), an exception, or ``close()``.
    """
    pool = ThreadPoolExecutor(workers, thread_name_prefix=WORKER_THREAD_PREFIX)
    pending: collections.deque = collections.deque()
    submitted = 0
    try:
        for _ in range(count):
            while submitted < count and len(pending) < depth:
                pending.append(pool.submit(load, submitted))
                submitted += 1
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
