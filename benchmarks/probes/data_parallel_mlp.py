"""Probe (session 21): what "one thread pool, matching splits" could give the ReLU MLP.

The benchmark's ReLU MLP (784-256-128-64-32-10, batch 200, SGD with momentum) runs its
products on OpenBLAS's two threads and everything else on the calling thread; in the
machine's slow stretches handing cache lines between the two cores costs it more than it
costs torch (docs/performance.md, sections 24-26). This probe writes the step by hand the
other way: each of two threads of one compiled pool (Numba's ``prange``) runs the forward
and backward of *its half of the batch* (products on one-thread OpenBLAS, called from
compiled code; bias, ReLU, cross-entropy and ReLU's gradient on the rows it wrote), then
the same two threads add the two halves' weight gradients and take the momentum step, each
on its half of the parameters. It times that against the NumPy reference
(benchmarks/numpy_reference.py), ember and torch, in rounds of 50 steps whose order
rotates, with a pause before each round so that no pool is still spinning from the last.

    pip install numba threadpoolctl && python -m benchmarks.probes.data_parallel_mlp [rounds]

Not used by ember: it is the measured ceiling of a design, not a fast path (see
docs/performance.md, section 27, for the numbers and what ember would need to change).
Random data: only the time matters here.
"""

from __future__ import annotations

import ctypes
import sys
import time

import numpy as np
import torch

try:
    from numba import njit, prange
    from numba.typed import List
except ImportError:  # pragma: no cover - the probe needs it; ember does not
    raise SystemExit("this probe needs Numba: pip install numba") from None
from threadpoolctl import ThreadpoolController

import ember
import ember.nn.functional as F
from benchmarks.numpy_reference import SGD, NumpyMLP
from ember import models

SIZES, BATCH, STEPS, LR, MOMENTUM = (784, 256, 128, 64, 32, 10), 200, 50, 0.05, 0.9
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def _openblas() -> tuple:
    """NumPy's OpenBLAS: ``cblas_sgemm`` (ILP64, as a ctypes function Numba can call) and
    ``openblas_set_num_threads``."""
    lib = next(c for c in ThreadpoolController().lib_controllers if c.internal_api == "openblas")
    i64, f32 = ctypes.c_int64, ctypes.c_float
    proto = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, f32,
                             i64, i64, i64, i64, f32, i64, i64)
    sgemm = proto(ctypes.cast(lib.dynlib.scipy_cblas_sgemm64_, ctypes.c_void_p).value)
    return sgemm, lib.dynlib.scipy_openblas_set_num_threads64_


sgemm, set_blas_threads = _openblas()


@njit(nogil=True)
def product(a, b, c, ta, tb):  # c = op(a) @ op(b), all C-ordered 2-D float32
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    sgemm(ROW_MAJOR, TRANS if ta else NO_TRANS, TRANS if tb else NO_TRANS, m, n, k, 1.0,
          a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], 0.0, c.ctypes.data, c.shape[1])


@njit(nogil=True)
def add_bias(z, b, relu):
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            v = z[i, j] + b[j]
            z[i, j] = 0.0 if relu and v < 0 else v


@njit(nogil=True)
def cross_entropy_grad(z, labels, scale):  # (softmax(z) - onehot) * scale, in place
    for i in range(z.shape[0]):
        top = z[i].max()
        total = 0.0
        for j in range(z.shape[1]):
            z[i, j] = np.exp(z[i, j] - top)
            total += z[i, j]
        for j in range(z.shape[1]):
            z[i, j] = z[i, j] / total * scale
        z[i, labels[i]] -= scale


@njit(nogil=True)
def relu_grad(g, a):
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            if a[i, j] <= 0:
                g[i, j] = 0.0


@njit(nogil=True)
def column_sums(g, out):
    out[:] = 0
    for i in range(g.shape[0]):
        out += g[i]


@njit(parallel=True)
def forward_backward(x, labels, weights, biases, acts, grads, weight_grads, bias_grads):
    half, layers = x.shape[0] // 2, len(weights)
    for t in prange(2):  # thread t: rows [t*half, (t+1)*half) of every activation
        rows = slice(t * half, (t + 1) * half)
        a = x[rows]
        for i in range(layers):
            product(a, weights[i], acts[i][rows], False, True)
            add_bias(acts[i][rows], biases[i], i < layers - 1)
            a = acts[i][rows]
        g = acts[layers - 1][rows]
        cross_entropy_grad(g, labels[rows], np.float32(1.0 / x.shape[0]))
        for i in range(layers - 1, -1, -1):
            a_in = x[rows] if i == 0 else acts[i - 1][rows]
            product(g, a_in, weight_grads[i][t], True, False)  # this half's share
            column_sums(g, bias_grads[i][t])
            if i:
                product(g, weights[i], grads[i - 1][rows], False, False)
                relu_grad(grads[i - 1][rows], a_in)
                g = grads[i - 1][rows]


@njit(parallel=True)
def momentum_step(params, buf, halves, lr, momentum):
    size = params.size
    part = (size + 1) // 2
    for t in prange(2):  # thread t: one contiguous half of all parameters
        for i in range(t * part, min(size, (t + 1) * part)):
            b = buf[i] * momentum + (halves[0, i] + halves[1, i])
            buf[i] = b
            params[i] -= lr * b


class DataParallel:
    """The hand-written step: all parameters in one flat buffer, as views."""

    def __init__(self, layers: list) -> None:
        shapes = [w.shape for w, _ in layers]
        size = sum(o * i + o for o, i in shapes)
        self.params, self.buf = np.empty(size, np.float32), np.zeros(size, np.float32)
        self.halves = np.zeros((2, size), np.float32)  # each thread's gradient share
        ws, bs, gws, gbs, start = [], [], [], [], 0
        for (w, b), (o, i) in zip(layers, shapes, strict=True):
            ws.append(self.params[start:start + o * i].reshape(o, i))
            gws.append(self.halves[:, start:start + o * i].reshape(2, o, i))
            ws[-1][...], start = w, start + o * i
            bs.append(self.params[start:start + o])
            gbs.append(self.halves[:, start:start + o])
            bs[-1][...], start = b, start + o
        self.lists = [List(ws), List(bs), List([np.empty((BATCH, o), np.float32)
                                                for o, _ in shapes]),
                      List([np.empty((BATCH, o), np.float32) for o, _ in shapes[:-1]]),
                      List(gws), List(gbs)]

    def gradient(self) -> np.ndarray:
        return self.halves[0] + self.halves[1]

    def step(self, x: np.ndarray, labels: np.ndarray) -> None:
        w, b, acts, grads, gw, gb = self.lists
        forward_backward(x, labels, w, b, acts, grads, gw, gb)
        momentum_step(self.params, self.buf, self.halves, np.float32(LR), np.float32(MOMENTUM))


def contestants(layers: list, xs: np.ndarray, ys: np.ndarray) -> dict:
    """One function a contestant: 50 training steps."""
    dp = DataParallel(layers)
    ref = NumpyMLP(layers, "relu", "cross_entropy")
    ref_opt = SGD(ref.params, LR, MOMENTUM)
    dp.step(xs[0], ys[0])  # the same first step's gradient from the same weights
    ref.backward(ref.loss(ref.forward(xs[0], keep=True), ys[0])[1])
    err = np.abs(dp.gradient() - ref.params.grad).max() / np.abs(ref.params.grad).max()
    print(f"gradient of the first step, data parallel against the reference: {err:.2e}")
    net = models.mlp(SIZES, "relu")
    tnet = torch.nn.Sequential(*[m for i, o in zip(SIZES, SIZES[1:])
                                 for m in (torch.nn.Linear(i, o), torch.nn.ReLU())][:-1])
    for p, tp, a in zip(net.parameters(), tnet.parameters(),
                        [a for pair in layers for a in pair], strict=True):
        p.data[...] = a
        tp.data.copy_(torch.from_numpy(a))
    opt = ember.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    topt = torch.optim.SGD(tnet.parameters(), lr=LR, momentum=MOMENTUM)
    ex, ey = [ember.Tensor(x) for x in xs], [ember.Tensor(y) for y in ys]
    tx, ty = [torch.from_numpy(x) for x in xs], [torch.from_numpy(y) for y in ys]

    def data_parallel() -> None:
        set_blas_threads(1)  # one-thread products, on the compiled pool's two threads
        for x, y in zip(xs, ys, strict=True):
            dp.step(x, y)
        set_blas_threads(2)

    def reference() -> None:
        for x, y in zip(xs, ys, strict=True):
            ref.train_step(x, y, ref_opt)

    def ember_step() -> None:
        for x, y in zip(ex, ey, strict=True):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()

    def torch_step() -> None:
        for x, y in zip(tx, ty, strict=True):
            topt.zero_grad()
            torch.nn.functional.cross_entropy(tnet(x), y).backward()
            topt.step()
    return {"data parallel": data_parallel, "numpy": reference, "ember": ember_step,
            "torch": torch_step}


def main(rounds: int, pause: float = 0.3) -> None:
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    layers = [((rng.standard_normal((o, i)) * np.sqrt(2 / i)).astype(np.float32),
               np.full(o, 0.01, np.float32)) for i, o in zip(SIZES, SIZES[1:])]
    xs = rng.random((STEPS, BATCH, SIZES[0]), dtype=np.float32)
    ys = rng.integers(0, SIZES[-1], (STEPS, BATCH))
    runs = contestants(layers, xs, ys)
    names = list(runs)
    for fn in runs.values():  # compile and warm up
        fn()
    times: dict = {name: [] for name in names}
    after: dict = {}  # (contestant, the one before it) -> times
    for r in range(rounds):
        order = names[r % 4:] + names[:r % 4]
        for k, name in enumerate(order):
            time.sleep(pause)  # the last contestant's pool stops spinning
            start = time.perf_counter()
            runs[name]()
            times[name].append((time.perf_counter() - start) / STEPS * 1e6)
            after.setdefault((name, order[k - 1]), []).append(times[name][-1] / times[name][0])
        print(f"round {r}: " + ", ".join(f"{n} {times[n][-1]:.0f}" for n in names) + " µs a step",
              flush=True)
    t = {n: np.array(v) for n, v in times.items()}
    print("medians (µs a step): " + ", ".join(f"{n} {np.median(v):.0f}" for n, v in t.items()))
    for a, b in (("data parallel", "numpy"), ("data parallel", "ember"), ("ember", "numpy"),
                 ("data parallel", "torch"), ("ember", "torch")):
        print(f"{a} / {b}: median of per-round ratios {np.median(t[a] / t[b]):.3f}")
    for (name, before), v in sorted(after.items()):
        print(f"{name} after {before}: median time / its first round {np.median(v):.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30,
         float(sys.argv[2]) if len(sys.argv) > 2 else 0.3)
