"""Microbenchmarks, ember against torch: one op (forward, or forward and backward) at a time.

Each benchmark builds the same inputs in both frameworks; the two are timed in
alternating rounds and the median time per call is reported.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

import ember
import ember.nn.functional as F
from benchmarks import measure
from benchmarks.measure import median

__all__ = ["MICRO", "run_micro", "MicroResult", "PER_OP", "PER_OP_NO_GC"]


@dataclass
class MicroResult:
    name: str
    ember_us: float
    torch_us: float

    @property
    def ratio(self) -> float:
        return self.ember_us / self.torch_us


def _pair(*shapes: tuple, grad: bool = True) -> tuple[list, list]:
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    return ([ember.tensor(a, requires_grad=grad) for a in arrays],
            [torch.tensor(a, requires_grad=grad) for a in arrays])


def _backward_of(fn: Callable) -> Callable:
    """``fn``, a backward through ``out.sum()``, then the inputs' gradients dropped
    (so that no call pays for accumulating into the previous call's gradient)."""
    def run(*xs):
        fn(*xs).sum().backward()
        for x in xs:
            x.grad = None
    return run


def _matmul(n: int) -> tuple:
    (a, b), (ta, tb) = _pair((n, n), (n, n), grad=False)
    return (lambda: a @ b), (lambda: ta @ tb)


def _linear(batch: int, fan_in: int, fan_out: int) -> tuple:
    e, t = _pair((batch, fan_in), (fan_out, fan_in), (fan_out,))
    return (lambda: _backward_of(F.linear)(*e)), \
        (lambda: _backward_of(torch.nn.functional.linear)(*t))


def _conv(n: int, c: int, hw: int, out: int, k: int, pad: int) -> tuple:
    e, t = _pair((n, c, hw, hw), (out, c, k, k), (out,))
    return (lambda: _backward_of(lambda *xs: F.conv2d(*xs, padding=pad))(*e)), \
        (lambda: _backward_of(lambda *xs: torch.nn.functional.conv2d(*xs, padding=pad))(*t))


def _pool(n: int, c: int, hw: int) -> tuple:
    (x,), (tx,) = _pair((n, c, hw, hw))
    return (lambda: _backward_of(lambda v: F.max_pool2d(v, 2))(x)), \
        (lambda: _backward_of(lambda v: torch.nn.functional.max_pool2d(v, 2))(tx))


def _xent(n: int, classes: int) -> tuple:
    (x,), (tx,) = _pair((n, classes))
    labels = np.random.default_rng(1).integers(0, classes, n)
    y, ty = ember.tensor(labels), torch.tensor(labels)
    return (lambda: _backward_of(lambda v: F.cross_entropy(v, y))(x)), \
        (lambda: _backward_of(lambda v: torch.nn.functional.cross_entropy(v, ty))(tx))


def _chain(length: int) -> tuple:
    """``length`` ops on 1-element tensors (alternating * and +), then backward."""
    (x, a, b), (tx, ta, tb) = _pair((1,), (1,), (1,))
    a.requires_grad = b.requires_grad = False
    ta.requires_grad_(False)
    tb.requires_grad_(False)
    a.array[...] = 0.999  # a factor near 1: 500 products stay finite (no overflow warnings)
    ta.fill_(0.999)

    def run(x, a, b):
        y = x
        for _ in range(length // 2):
            y = y * a
            y = y + b
        y.sum().backward()
        x.grad = None
    return (lambda: run(x, a, b)), (lambda: run(tx, ta, tb))


# name -> (setup, its arguments); the first argument is the batch size, which
# --quick divides by 8
MICRO: dict[str, tuple[Callable[..., tuple], tuple]] = {
    "matmul 512x512 @ 512x512 (forward)": (_matmul, (512,)),
    "linear 64x784 -> 100 (fwd+bwd)": (_linear, (64, 784, 100)),
    "conv2d 64x1x28x28, 6 out, k5 p2 (fwd+bwd)": (_conv, (64, 1, 28, 6, 5, 2)),
    "conv2d 64x6x14x14, 16 out, k5 (fwd+bwd)": (_conv, (64, 6, 14, 16, 5, 0)),
    "conv2d 128x48x16x16, 48 out, k3 p1 (fwd+bwd)": (_conv, (128, 48, 16, 48, 3, 1)),
    "max_pool2d 2x2, 64x6x28x28 (fwd+bwd)": (_pool, (64, 6, 28)),
    "max_pool2d 2x2, 128x24x32x32 (fwd+bwd)": (_pool, (128, 24, 32)),
    "softmax-cross-entropy 64x10 (fwd+bwd)": (_xent, (64, 10)),
    "softmax-cross-entropy 512x1000 (fwd+bwd)": (_xent, (512, 1000)),
    "per-op overhead: 1000-op chain of 1-element tensors (fwd+bwd)": (_chain, (1000,)),
    "per-op overhead, garbage collector paused while timed (timeit's default)":
        (_chain, (1000,)),
}
PER_OP = "per-op overhead: 1000-op chain of 1-element tensors (fwd+bwd)"
PER_OP_NO_GC = "per-op overhead, garbage collector paused while timed (timeit's default)"
"""The same chain with Python's collector off during each timed batch (collected before
it): reported beside the target row, not instead of it. ember's graph keeps two tracked
Python objects per op alive until backward and torch's none, so Python's full collections,
which walk every object in the process (most of them torch's and Numba's), fall on
ember's side (docs/performance.md, section 14)."""


def _calls_for(fn: Callable, budget: float) -> int:
    """How many calls fill ``budget`` seconds (at least one), from the fastest of three
    calls after an untimed first: a first call pays one-off set-up (a compiled kernel
    loading from Numba's cache, workspace allocation), and timed alone it once set the
    64x10 cross-entropy row to one call per round, 407 µs a call against 22."""
    fn()
    once = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        once.append(time.perf_counter() - start)
    return max(1, int(budget / max(min(once), 1e-7)))


WARM_SECONDS = 0.05
"""Untimed calls after each pause, before the timed ones: after its 0.3 s pause ember's
128x48x16x16 convolution ran its first 40-50 ms ~1.5x slower than later (fwd+bwd 19-22 ms
against 13-14 in a loop; section 34), a stretch that a 30 ms round was all of."""


def _per_call(fn: Callable, calls: int, pause_gc: bool = False, warm: float = WARM_SECONDS
              ) -> float:
    measure.settle()  # the other framework's idle threads stop spinning first
    warm_until = time.perf_counter() + warm
    while time.perf_counter() < warm_until:  # its own threads and caches, back in use
        fn()
    if pause_gc:
        gc.collect()
        gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls
    finally:
        if pause_gc:
            gc.enable()


def run_micro(names: list[str] | None = None, rounds: int = 7, budget: float = 0.03,
              quick: bool = False) -> list[MicroResult]:
    """Median microseconds per call of each benchmark, ember and torch alternating.
    ``quick``: batch sizes divided by 8 (except for the op chain and the matmul), and no
    untimed warm calls."""
    warm = 0.0 if quick else WARM_SECONDS
    results = []
    for name in names or list(MICRO):
        setup, args = MICRO[name]
        if quick and setup not in (_chain, _matmul):
            args = (max(1, args[0] // 8),) + args[1:]
        ember_fn, torch_fn = setup(*args)
        # the op chain decides a target: 5x the time and twice the rounds, for a steadier
        # median (its ratio read 0.84-1.03 across full runs of the same code otherwise)
        steady = 1 if quick or name not in (PER_OP, PER_OP_NO_GC) else 5
        calls = [_calls_for(f, budget * steady) for f in (ember_fn, torch_fn)]
        times: tuple[list, list] = ([], [])
        for _ in range(rounds * min(steady, 2)):
            for i, fn in enumerate((ember_fn, torch_fn)):
                times[i].append(_per_call(fn, calls[i], name == PER_OP_NO_GC, warm))
        results.append(MicroResult(name, median(times[0]) * 1e6, median(times[1]) * 1e6))
    return results
