"""Probe (session 5, a negative result): Winograd F(2x2, 3x3) convolution, with Numba
kernels for the tile transforms and OpenBLAS for the 16 products, against ember's im2col
convolution and torch, forward + backward, on the CIFAR CNN's layers at batch 128.

    pip install numba && python -m benchmarks.probes.winograd

Not used by ember: on this machine it was at best ~20% faster than ember's im2col path
on the largest layer and slower on others (docs/performance.md, section 11). Kept so the
measurement can be repeated where GEMMs or memory behave differently.

Winograd (Lavin & Gray 2015): per 4x4 input tile d and 3x3 kernel w,
``y = A^T [(G w G^T) * (B^T d B)] A`` gives a 2x2 output tile with 16 instead of 36
multiplications; summed over input channels, the 16 elementwise products become 16 matrix
products (C_out x C_in) @ (C_in x tiles). By linearity the backward is the transposed
chain: ``dV = U^T dM``, ``dx = B dV B^T`` (added over overlapping tiles) and
``dU = dM V^T``, ``dw = G^T dU G``, with ``dM = A dy A^T``.
"""

from __future__ import annotations

import time

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - the probe needs it; ember does not
    raise SystemExit("this probe needs Numba: pip install numba") from None

G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
PLANE_GAP = 16  # extra elements between the 16 planes: same-offset planes 4K-alias (6x slower)


def planes(shape: tuple, dtype: np.dtype) -> np.ndarray:
    """A (16, *shape) array whose planes do not start at multiples of 4 KiB apart."""
    size, item = int(np.prod(shape)), np.dtype(dtype).itemsize
    buf = np.empty(16 * (size + PLANE_GAP), dtype)
    strides = [item]
    for s in reversed(shape[1:]):
        strides.insert(0, strides[0] * s)
    return np.lib.stride_tricks.as_strided(buf, (16, *shape), ((size + PLANE_GAP) * item,
                                                                *strides))


@njit(cache=True)
def input_tiles(p, v):  # pragma: no cover - compiled
    """v[4a+b, c, n, i, j] = (B^T d B)[a, b], d the 4x4 tile of padded p at (2i, 2j)."""
    n_, c_ = p.shape[0], p.shape[1]
    th, tw = v.shape[3], v.shape[4]
    t = np.empty((4, 4), p.dtype)
    for n in range(n_):
        for c in range(c_):
            for i in range(th):
                r0, r1, r2, r3 = p[n, c, 2 * i], p[n, c, 2 * i + 1], p[n, c, 2 * i + 2], \
                    p[n, c, 2 * i + 3]
                for j in range(tw):
                    for b in range(4):  # rows of B^T d, one column b at a time
                        s = 2 * j + b
                        t[0, b], t[1, b] = r0[s] - r2[s], r1[s] + r2[s]
                        t[2, b], t[3, b] = r2[s] - r1[s], r1[s] - r3[s]
                    for a in range(4):  # then (.) B along each row a
                        q = 4 * a
                        v[q, c, n, i, j], v[q + 1, c, n, i, j] = t[a, 0] - t[a, 2], \
                            t[a, 1] + t[a, 2]
                        v[q + 2, c, n, i, j], v[q + 3, c, n, i, j] = t[a, 2] - t[a, 1], \
                            t[a, 1] - t[a, 3]


@njit(cache=True)
def output_tiles(m, bias, y):  # pragma: no cover - compiled
    """y[n, k, 2i:2i+2, 2j:2j+2] = A^T m A + bias[k] (even output sizes)."""
    k_, n_, th, tw = m.shape[1], m.shape[2], m.shape[3], m.shape[4]
    s = np.empty((2, 4), m.dtype)
    for n in range(n_):
        for k in range(k_):
            for i in range(th):
                for j in range(tw):
                    for b in range(4):  # rows of A^T m
                        s[0, b] = m[b, k, n, i, j] + m[4 + b, k, n, i, j] + m[8 + b, k, n, i, j]
                        s[1, b] = m[4 + b, k, n, i, j] - m[8 + b, k, n, i, j] - \
                            m[12 + b, k, n, i, j]
                    for a in range(2):  # then (.) A along each row
                        y[n, k, 2 * i + a, 2 * j] = s[a, 0] + s[a, 1] + s[a, 2] + bias[k]
                        y[n, k, 2 * i + a, 2 * j + 1] = s[a, 1] - s[a, 2] - s[a, 3] + bias[k]


@njit(cache=True)
def grad_tiles(g, dm):  # pragma: no cover - compiled
    """dm[4a+b, k, n, i, j] = (A dy A^T)[a, b] for each 2x2 tile dy of g."""
    n_, k_ = g.shape[0], g.shape[1]
    th, tw = dm.shape[3], dm.shape[4]
    for n in range(n_):
        for k in range(k_):
            for i in range(th):
                for j in range(tw):
                    a0, a1 = g[n, k, 2 * i, 2 * j], g[n, k, 2 * i, 2 * j + 1]
                    b0, b1 = g[n, k, 2 * i + 1, 2 * j], g[n, k, 2 * i + 1, 2 * j + 1]
                    rows = ((a0, a1), (a0 + b0, a1 + b1), (a0 - b0, a1 - b1), (-b0, -b1))
                    for a in range(4):
                        u0, u1 = rows[a]
                        dm[4 * a, k, n, i, j], dm[4 * a + 1, k, n, i, j] = u0, u0 + u1
                        dm[4 * a + 2, k, n, i, j], dm[4 * a + 3, k, n, i, j] = u0 - u1, -u1


@njit(cache=True)
def input_grad_tiles(dv, dx):  # pragma: no cover - compiled
    """dx = the interior of the sum over tiles of B dv B^T placed at (2i, 2j) (padding 1)."""
    c_, n_, th, tw = dv.shape[1], dv.shape[2], dv.shape[3], dv.shape[4]
    h, w = dx.shape[2], dx.shape[3]
    acc = np.empty((2 * th + 2, 2 * tw + 2), dx.dtype)
    e = np.empty((4, 4), dx.dtype)
    for n in range(n_):
        for c in range(c_):
            acc[:] = 0
            for i in range(th):
                for j in range(tw):
                    for a in range(4):  # dv B^T along rows
                        v0, v1 = dv[4 * a, c, n, i, j], dv[4 * a + 1, c, n, i, j]
                        v2, v3 = dv[4 * a + 2, c, n, i, j], dv[4 * a + 3, c, n, i, j]
                        e[a, 0], e[a, 1], e[a, 2], e[a, 3] = v0, v1 - v2 + v3, v1 + v2 - v0, -v3
                    for b in range(4):  # then B (.) down the columns, added in place
                        acc[2 * i, 2 * j + b] += e[0, b]
                        acc[2 * i + 1, 2 * j + b] += e[1, b] - e[2, b] + e[3, b]
                        acc[2 * i + 2, 2 * j + b] += e[1, b] + e[2, b] - e[0, b]
                        acc[2 * i + 3, 2 * j + b] -= e[3, b]
            dx[n, c] = acc[1:h + 1, 1:w + 1]


def transformed_input(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    p = np.zeros((n, c, h + 2, w + 2), x.dtype)
    p[:, :, 1:-1, 1:-1] = x
    v = planes((c, n, h // 2, w // 2), x.dtype)
    input_tiles(p, v)
    return v


def transformed_weight(w: np.ndarray) -> np.ndarray:
    g = G.astype(w.dtype)
    return np.einsum("ar,kcrs,bs->abkc", g, w, g).reshape(16, w.shape[0], w.shape[1])


def forward(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    n, c, h, wd = x.shape
    v, u = transformed_input(x), transformed_weight(w)
    m = planes((w.shape[0], n, h // 2, wd // 2), x.dtype)
    np.matmul(u, v.reshape(16, c, -1), out=m.reshape(16, w.shape[0], -1))
    y = np.empty((n, w.shape[0], h, wd), x.dtype)
    output_tiles(m, bias, y)
    return y


def backward(g: np.ndarray, x: np.ndarray, w: np.ndarray) -> tuple:
    """(dx, dw) of a padding-1 3x3 convolution; the input transform is recomputed."""
    n, c, h, wd = x.shape
    k = w.shape[0]
    v, u = transformed_input(x), transformed_weight(w)
    dm = planes((k, n, h // 2, wd // 2), x.dtype)
    grad_tiles(g, dm)
    dv = planes((c, n, h // 2, wd // 2), x.dtype)
    np.matmul(u.transpose(0, 2, 1), dm.reshape(16, k, -1), out=dv.reshape(16, c, -1))
    dx = np.empty_like(x)
    input_grad_tiles(dv, dx)
    du = np.matmul(dm.reshape(16, k, -1), v.reshape(16, c, -1).transpose(0, 2, 1))
    gt = G.astype(x.dtype)
    return dx, np.einsum("ar,abkc,bs->kcrs", gt, du.reshape(4, 4, k, c), gt)


def _best_ms(fn, repeats: int = 9) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    import torch
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 8))
    w, b, g = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4), \
        rng.standard_normal((2, 4, 6, 8))
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, torch.tensor(b), padding=1)
    yt.backward(torch.tensor(g))
    dx, dw = backward(g, x, w)
    err = max(np.abs(forward(x, w, b) - yt.detach().numpy()).max(),
              np.abs(dx - xt.grad.numpy()).max(), np.abs(dw - wt.grad.numpy()).max())
    print(f"float64 max difference from torch (forward, dx, dw): {err:.1e}")
    threadpool_limits(2)
    torch.set_num_threads(2)
    print("C_in C_out  HxW | fwd+bwd ms: ember im2col  winograd  torch")
    for c, k, hw in [(24, 24, 32), (24, 48, 16), (48, 48, 16), (48, 96, 8), (96, 96, 8)]:
        times = _time_layer(rng, c, k, hw)
        print(f"{c:4d} {k:5d} {hw:4d} | " + "  ".join(f"{t:8.1f}" for t in times))


def _time_layer(rng: np.random.Generator, c: int, k: int, hw: int) -> list[float]:
    """Median ms of forward + backward at batch 128: ember, this probe, torch."""
    import torch

    import ember
    import ember.nn.functional as F

    x = rng.standard_normal((128, c, hw, hw), dtype=np.float32)
    w = rng.standard_normal((k, c, 3, 3), dtype=np.float32) * 0.1
    b, g = np.zeros(k, np.float32), rng.standard_normal((128, k, hw, hw), dtype=np.float32)
    xe, we = ember.tensor(x, requires_grad=True), ember.tensor(w, requires_grad=True)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)

    def run_ember() -> None:
        xe.grad = we.grad = None
        F.conv2d(xe, we, ember.tensor(b), padding=1).backward(ember.tensor(g))

    def run_torch() -> None:
        xt.grad = wt.grad = None
        torch.nn.functional.conv2d(xt, wt, torch.tensor(b), padding=1).backward(torch.tensor(g))

    def run_winograd() -> None:
        forward(x, w, b)
        backward(g, x, w)
    return [_best_ms(f) for f in (run_ember, run_winograd, run_torch)]

if __name__ == "__main__":
    main()
