"""Hand-written NumPy training code: the floor ember's overhead is measured against.

No autograd, no graph, no per-op dispatch: each model's forward and backward are
written out by hand, float32 throughout, with every matrix product a single BLAS
call. Parameters and gradients live in two flat buffers (each weight is a view),
so the optimizer updates all of them in a few whole-buffer NumPy calls.

- ``NumpyMLP``: Linear + Sigmoid/Tanh/ReLU layers, MSE (one-hot) or cross-entropy.
- ``NumpyLeNet5``: ember.models.lenet5. Activations are kept channels-first
  ``(C, N, H, W)``, so im2col copies runs of whole image rows and a convolution is
  one ``(C_out, k*k*C_in) @ (k*k*C_in, N*H*W)`` product; max-pooling is applied
  before ReLU (they commute), on the smaller array.

Matrix products go through ``ember.blas.matmul``, so the reference uses BLAS
threads exactly as ember does (one thread for products below ~1e8 FLOP): the
comparison then measures framework overhead, not thread scheduling.

Weights are given in torch's layout (``(out, in)`` and ``(out, in, kh, kw)``), so
both models start from a torch model's initial values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ember.blas import matmul  # the same BLAS thread policy as ember (see docstring)

__all__ = ["FlatParams", "SGD", "Adam", "NumpyMLP", "NumpyLeNet5", "softmax_xent_grad"]

f32 = np.float32


class FlatParams:
    """Parameters and gradients as views into two flat float32 buffers."""

    def __init__(self, arrays: Sequence[np.ndarray]) -> None:
        sizes = [a.size for a in arrays]
        self.flat = np.empty(sum(sizes), f32)
        self.grad = np.zeros_like(self.flat)
        self.values, self.grads = [], []
        start = 0
        for a, n in zip(arrays, sizes):
            view = self.flat[start:start + n].reshape(a.shape)
            view[...] = a
            self.values.append(view)
            self.grads.append(self.grad[start:start + n].reshape(a.shape))
            start += n


class SGD:
    """torch.optim.SGD (momentum, no dampening) on a flat buffer."""

    def __init__(self, params: FlatParams, lr: float, momentum: float = 0.0) -> None:
        self.p, self.lr, self.momentum = params, f32(lr), f32(momentum)
        self.buf: np.ndarray | None = None
        self.tmp = np.empty_like(params.flat)

    def step(self) -> None:
        g = self.p.grad
        if self.momentum:
            if self.buf is None:
                self.buf = g.copy()
            else:
                self.buf *= self.momentum
                self.buf += g
            g = self.buf
        np.multiply(g, self.lr, out=self.tmp)
        self.p.flat -= self.tmp


class Adam:
    """torch.optim.Adam (no weight decay) on a flat buffer, torch's order of operations."""

    def __init__(self, params: FlatParams, lr: float = 1e-3, betas: tuple = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.p, self.lr, self.eps = params, lr, eps
        self.b1, self.b2 = betas
        self.m = np.zeros_like(params.flat)
        self.v = np.zeros_like(params.flat)
        self.tmp = np.empty_like(params.flat)
        self.t = 0

    def step(self) -> None:
        self.t += 1
        g, m, v, tmp = self.p.grad, self.m, self.v, self.tmp
        np.subtract(g, m, out=tmp)  # m = lerp(m, g, 1 - beta1)
        tmp *= f32(1 - self.b1)
        m += tmp
        v *= f32(self.b2)
        np.multiply(g, g, out=tmp)
        tmp *= f32(1 - self.b2)
        v += tmp
        np.sqrt(v, out=tmp)
        tmp /= f32((1 - self.b2 ** self.t) ** 0.5)
        tmp += f32(self.eps)
        np.divide(m, tmp, out=tmp)
        tmp *= f32(self.lr / (1 - self.b1 ** self.t))
        self.p.flat -= tmp


def softmax_xent_grad(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient ``(softmax - onehot) / N``, fused."""
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    total = z.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    loss = float(np.mean(np.log(total[:, 0]) - np.log(z[rows, labels])))
    z /= total
    z[rows, labels] -= 1
    z *= f32(1.0 / len(labels))
    return loss, z


def mse_onehot_grad(out: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """``mean((out - onehot)^2)`` over all elements and its gradient."""
    diff = out.copy()
    diff[np.arange(len(labels)), labels] -= 1
    loss = float(np.mean(diff * diff))
    diff *= f32(2.0 / diff.size)
    return loss, diff


LOSSES = {"cross_entropy": softmax_xent_grad, "mse": mse_onehot_grad}


def _activate(z: np.ndarray, kind: str) -> np.ndarray:
    """Apply the activation in place; returns ``z``."""
    if kind == "relu":
        return np.maximum(z, 0, out=z)
    if kind == "tanh":
        return np.tanh(z, out=z)
    np.negative(z, out=z)  # sigmoid: 1 / (1 + exp(-z))
    np.exp(z, out=z)
    z += 1
    return np.reciprocal(z, out=z)


def _activation_grad(g: np.ndarray, a: np.ndarray, kind: str) -> np.ndarray:
    """Multiply ``g`` in place by the activation's derivative, written via its output ``a``."""
    if kind == "relu":
        g *= a > 0
    elif kind == "tanh":
        g *= 1 - a * a
    else:
        g *= a * (1 - a)
    return g


class NumpyMLP:
    """An MLP: ``weights`` is ``[(W, b), ...]`` in torch's ``(out, in)`` layout."""

    def __init__(self, weights: Sequence[tuple], activation: str, loss: str) -> None:
        self.params = FlatParams([a for pair in weights for a in pair])
        self.activation, self.loss = activation, LOSSES[loss]
        self.layers = len(weights)

    def _pairs(self, seq: list) -> list[tuple]:
        return list(zip(seq[0::2], seq[1::2]))

    def forward(self, x: np.ndarray, keep: bool = False) -> np.ndarray:
        acts = [x.reshape(len(x), -1)]
        for i, (w, b) in enumerate(self._pairs(self.params.values)):
            z = matmul(acts[-1], w.T)
            z += b
            if i < self.layers - 1:
                _activate(z, self.activation)
            acts.append(z)
        self.acts = acts if keep else None
        return acts[-1]

    def train_step(self, x: np.ndarray, labels: np.ndarray, optimizer) -> float:
        loss, g = self.loss(self.forward(x, keep=True), labels)
        self.backward(g)
        optimizer.step()
        return loss

    def backward(self, g: np.ndarray) -> None:
        pairs = self._pairs(self.params.values)
        grads = self._pairs(self.params.grads)
        for i in range(self.layers - 1, -1, -1):
            a_in = self.acts[i]
            matmul(g.T, a_in, out=grads[i][0])
            g.sum(axis=0, out=grads[i][1])
            if i:
                g = _activation_grad(matmul(g, pairs[i][0]), a_in, self.activation)

    def torch_layout_grads(self) -> list[np.ndarray]:
        return [g.copy() for g in self.params.grads]


class NumpyLeNet5:
    """LeNet-5 (ember.models.lenet5) by hand. ``weights``: the torch model's 10 tensors."""

    def __init__(self, weights: Sequence[np.ndarray]) -> None:
        c1w, c1b, c2w, c2b, *fc = [np.asarray(w, f32) for w in weights]
        self.params = FlatParams([_gemm_kernel(c1w), c1b, _gemm_kernel(c2w), c2b, *fc])
        self.buffers: dict[int, dict] = {}

    def _buffers(self, n: int) -> dict:
        """im2col and padding buffers for batch size ``n``, reused across steps."""
        if n not in self.buffers:
            self.buffers[n] = {"pad": np.zeros((1, n, 32, 32), f32),
                               "cols1": np.empty((5, 5, 1, n, 28, 28), f32),
                               "cols2": np.empty((5, 5, 6, n, 10, 10), f32)}
        return self.buffers[n]

    def forward(self, x: np.ndarray, keep: bool = False) -> np.ndarray:
        n = len(x)
        buf = self._buffers(n)
        w1, b1, w2, b2, f1, fb1, f2, fb2, f3, fb3 = self.params.values
        buf["pad"][0, :, 2:30, 2:30] = x.reshape(n, 28, 28)
        cols1 = _im2col(buf["pad"], buf["cols1"], 28)
        a1, pool1 = _conv_pool_relu(w1, b1, cols1, (6, n, 28, 28), keep)
        cols2 = _im2col(a1, buf["cols2"], 10)
        a2, pool2 = _conv_pool_relu(w2, b2, cols2, (16, n, 10, 10), keep)
        flat = a2.transpose(1, 0, 2, 3).reshape(n, 400)  # torch's (c, h, w) order
        h1 = _activate(_affine(flat, f1, fb1), "relu")
        h2 = _activate(_affine(h1, f2, fb2), "relu")
        out = _affine(h2, f3, fb3)
        if keep:
            self.saved = (cols1, pool1, a1, cols2, pool2, a2, flat, h1, h2)
        return out

    def train_step(self, x: np.ndarray, labels: np.ndarray, optimizer) -> float:
        loss, g = softmax_xent_grad(self.forward(x, keep=True), labels)
        self.backward(g)
        optimizer.step()
        return loss

    def backward(self, g: np.ndarray) -> None:
        cols1, pool1, a1, cols2, pool2, a2, flat, h1, h2 = self.saved
        w1, b1, w2, b2, f1, fb1, f2, fb2, f3, fb3 = self.params.values
        gw1, gb1, gw2, gb2, gf1, gfb1, gf2, gfb2, gf3, gfb3 = self.params.grads
        n = len(g)
        g = _affine_backward(g, h2, f3, gf3, gfb3)
        g = _affine_backward(_activation_grad(g, h2, "relu"), h1, f2, gf2, gfb2)
        g = _affine_backward(_activation_grad(g, h1, "relu"), flat, f1, gf1, gfb1)
        g = g.reshape(n, 16, 5, 5).transpose(1, 0, 2, 3)
        gz2 = _unpool(_activation_grad(np.ascontiguousarray(g), a2, "relu"), pool2)
        gcols2 = _conv_backward(gz2, cols2, w2, gw2, gb2, need_input=True)
        ga1 = _col2im(gcols2.reshape(5, 5, 6, n, 10, 10), (6, n, 14, 14))
        gz1 = _unpool(_activation_grad(ga1, a1, "relu"), pool1)
        _conv_backward(gz1, cols1, w1, gw1, gb1, need_input=False)
        self.saved = None

    def torch_layout_grads(self) -> list[np.ndarray]:
        g = [a.copy() for a in self.params.grads]
        g[0] = g[0].reshape(6, 5, 5, 1).transpose(0, 3, 1, 2)
        g[2] = g[2].reshape(16, 5, 5, 6).transpose(0, 3, 1, 2)
        return g


def _gemm_kernel(w: np.ndarray) -> np.ndarray:
    """(out, in, kh, kw) -> (out, kh*kw*in), matching the im2col row order (i, j, c)."""
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1))


def _im2col(x: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """cols[i, j] = x[:, :, i:i+size, j:j+size] for each kernel offset; x is (C, N, H, W)."""
    k = cols.shape[0]
    for i in range(k):
        for j in range(k):
            cols[i, j] = x[:, :, i:i + size, j:j + size]
    return cols.reshape(k * k * x.shape[0], -1)


def _col2im(gcols: np.ndarray, shape: tuple) -> np.ndarray:
    """The adjoint of ``_im2col``: scatter-add each kernel offset's slab back."""
    gx = np.zeros(shape, f32)
    k, size = gcols.shape[0], gcols.shape[-1]
    for i in range(k):
        for j in range(k):
            gx[:, :, i:i + size, j:j + size] += gcols[i, j]
    return gx


def _conv_pool_relu(w, b, cols, shape, keep) -> tuple[np.ndarray, tuple | None]:
    """Convolution as one GEMM, 2x2 max-pool, then ReLU. The pool is the elementwise
    maximum of the four strided views of each window's corners (a reduction over two
    strided axes is ~20x slower); ``keep`` returns the views and the pooled values."""
    c, n, h, wd = shape
    z = matmul(w, cols)
    z += b[:, None]
    corners = _corners(z.reshape(c, n, h // 2, 2, wd // 2, 2))
    pooled = np.maximum(corners[0], corners[1])
    np.maximum(pooled, corners[2], out=pooled)
    np.maximum(pooled, corners[3], out=pooled)
    saved = (corners, pooled.copy()) if keep else None
    return np.maximum(pooled, 0, out=pooled), saved


def _corners(windows: np.ndarray) -> list[np.ndarray]:
    """The four (C, N, h, w) strided views of a (C, N, h, 2, w, 2) window array."""
    return [windows[:, :, :, dy, :, dx] for dy in (0, 1) for dx in (0, 1)]


def _unpool(g: np.ndarray, saved: tuple) -> np.ndarray:
    """Route each pooled gradient to its window's maximum: (C, N, h, w) -> (C, N*2h*2w)."""
    corners, pooled = saved
    c, n, h, w = g.shape
    out = np.empty((c, n, h, 2, w, 2), f32)
    for view, corner in zip(_corners(out), corners):
        np.multiply(g, corner == pooled, out=view)
    return out.reshape(c, n * h * w * 4)


def _conv_backward(gz, cols, w, gw, gb, need_input: bool) -> np.ndarray | None:
    gw[...] = matmul(cols, gz.T).T  # this orientation of the long-inner product: ~2x faster
    gz.sum(axis=1, out=gb)
    return matmul(w.T, gz) if need_input else None


def _affine(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    z = matmul(x, w.T)
    z += b
    return z


def _affine_backward(g, x, w, gw, gb) -> np.ndarray:
    matmul(g.T, x, out=gw)
    g.sum(axis=0, out=gb)
    return matmul(g, w)
