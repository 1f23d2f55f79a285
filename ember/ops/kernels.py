"""Optional compiled kernels (Numba) for work NumPy cannot do in long runs or one pass.

im2col and col2im of a small convolution (LeNet-5's layers: 10x10 outputs, 5x5
kernels) are copies and adds of rows of 10-14 elements. NumPy does each of the
25 kernel taps as one strided call whose innermost loop is such a row, and pays
its per-row overhead thousands of times per tap; a compiled loop nest does the
same work without it (measured on LeNet-5's second layer: col2im 1.4-1.9 ms ->
0.24-0.30, im2col 0.5 -> 0.2; docs/performance.md, section 13). The 2x2 max pool
and its gradient, and batch norm's per-channel passes, are the other kernels here:
each does in one pass over a plane what NumPy does in several strided ones. ReLU, its
gradient, Sigmoid's and Tanh's gradients and the Adam and SGD updates are one pass over
flat arrays where NumPy makes one call per operation (sections 14-16), with NumPy's
rounding, so the same bits (ReLU keeps torch's -0 where NumPy's maximum gives +0); so is
a uint8 image batch's ToTensor + Normalize (section 16). The blocked convolution's small
layers build their columns with the same im2col kernel, a block at a time (section 15).
Cross-entropy's common case is one pass each way (sections 20, 23 and 29): for small or
short-row logits with the C library's exponentials, for long float32 rows with a
vectorised exponential of its own; both are within an ulp of NumPy's, so they agree with
the NumPy path to rounding rather than bit for bit. The Winograd
convolution's input, output and kernel transforms are kernels too (sections 16 and 23).

Numba is an optional dependency (``pip install ember[fast]``). Without it, or
with ``EMBER_NUMBA=0``, or after ``set_enabled(False)``, ``enabled()`` is False
and the ops use their NumPy formulas, which the tests check these kernels
against. Kernels are compiled on first use and cached on disk
(``cache=True``), and release the GIL, so ``ember.parallel`` runs them on
several threads, each on its own samples.
"""

from __future__ import annotations

import functools
import os
from types import SimpleNamespace
from typing import Any

from ember import parallel
from ember.backend import xp

__all__ = ["enabled", "set_enabled", "im2col", "block_im2col", "col2im_into", "max_pool_2x2",
           "max_pool_2x2_grad", "max_pool_grad_into", "norm_ready", "batch_moments",
           "normalize_into", "norm_grad_sums",
           "norm_input_grad_into", "relu_into", "relu_grad_into", "sigmoid",
           "sigmoid_grad_into", "tanh_grad_into", "flat_ready", "adam_scalars", "adam_update",
           "sgd_update", "sgd_momentum_update", "cross_entropy_rows", "cross_entropy_long_rows",
           "cross_entropy_grad",
           "unit_normalize", "normalize_table", "winograd_input",
           "winograd_output", "winograd_weights", "jit_compiler"]

_wanted = os.environ.get("EMBER_NUMBA", "1") != "0"
_DTYPES = (xp.dtype(xp.float32), xp.dtype(xp.float64))
_kernels: Any = None  # the compiled functions, made on first use (importing numba: ~0.3 s)


def _compile() -> Any:
    """The Numba kernels, or False when Numba is not installed."""
    # Helpers that kernels call are module globals, not closure variables: Numba keys a
    # cached function by its closure's pickled values, and a compiled function pickles
    # with a new id in every process, so a kernel closing over one was compiled again in
    # every process and its on-disk cache grew a file each time (section 29)
    global momentum_of, exp_nonpositive, float32_from_bits
    try:
        import llvmlite.ir
        import numba
        import numba.extending
    except ImportError:
        return False

    def compiler(**options: Any) -> Any:
        return jit_compiler(numba, **options)

    jit, u = compiler(), numba.uint64
    # Indices are cast to unsigned: NumPy-style negative indexing makes Numba wrap signed
    # ones, and that check in the innermost loop kept it from vectorising (4x slower).

    @jit
    def taps_kernel(img, cols, sh, sw, dh, dw, adjoint):
        # im2col: cols[n, c, i, j, y, x] = img[n, c, y*sh + i*dh, x*sw + j*dw];
        # its adjoint (col2im, ``adjoint``): the same places, img += cols
        n_, c_, kh, kw, oh, ow = cols.shape
        for n in range(n_):
            for c in range(c_):
                for i in range(kh):
                    for j in range(kw):
                        for y in range(oh):
                            r = u(y * sh + i * dh)
                            if adjoint:  # loop-invariant: LLVM compiles two inner loops
                                for x in range(ow):
                                    img[n, c, r, u(x * sw + j * dw)] += cols[n, c, i, j, y, x]
                            else:
                                for x in range(ow):
                                    cols[n, c, i, j, y, x] = img[n, c, r, u(x * sw + j * dw)]

    @jit
    def max_pool_2x2_kernel(img, best, which):
        # 2x2 windows at stride 2: each maximum and its offset (0-3, row-major): the first
        # of equal maxima, the last NaN if any (torch's `v > best or isnan(v)`); selects,
        # not branches, so that the loop vectorises (a general k x k loop did not)
        n_, c_, oh, ow = best.shape
        for n in range(n_):
            for c in range(c_):
                for y in range(oh):
                    top, bottom = img[n, c, u(2 * y)], img[n, c, u(2 * y + 1)]
                    for x in range(ow):
                        m, w = top[u(2 * x)], 0
                        for o, v in ((1, top[u(2 * x + 1)]), (2, bottom[u(2 * x)]),
                                     (3, bottom[u(2 * x + 1)])):
                            take = (v > m) | (v != v)
                            m, w = (v, o) if take else (m, w)
                        best[n, c, y, x], which[n, c, y, x] = m, w

    @jit
    def max_pool_2x2_grad_kernel(g, which, img, zero):
        # the adjoint of max_pool_2x2_kernel: every element of each window written, its
        # gradient at the offset that held the maximum and zeros elsewhere (no pass to zero
        # the image first, no read-modify-write). Along image rows, not windows, with
        # selects, so that the stores are contiguous and the loop vectorises (window by
        # window, four stores each, took 3.8x as long)
        n_, c_, oh, ow = g.shape
        for n in range(n_):
            for c in range(c_):
                for y in range(oh):
                    top, bottom = img[n, c, u(2 * y)], img[n, c, u(2 * y + 1)]
                    grads, offsets = g[n, c, y], which[n, c, y]
                    for j in range(2 * ow):
                        v, o, side = grads[u(j >> 1)], offsets[u(j >> 1)], j & 1
                        top[u(j)] = v if o == side else zero
                        bottom[u(j)] = v if o == side + 2 else zero

    @jit
    def max_pool_grad_kernel(g, which, img, kw, sh, sw, dh, dw):
        # the adjoint: each window's gradient goes to the offset that held its maximum
        n_, c_, oh, ow = g.shape
        for n in range(n_):
            for c in range(c_):
                for y in range(oh):
                    for x in range(ow):
                        o = which[n, c, y, x]
                        img[n, c, u(y * sh + (o // kw) * dh), u(x * sw + (o % kw) * dw)] += \
                            g[n, c, y, x]

    # Batch norm: per (sample, channel) plane, so each plane is read from cache; sums in
    # float64, reassociated so that they vectorise (their order is fixed by the plane, so
    # results do not depend on the number of threads)
    sums = compiler(fastmath={"reassoc"})

    @sums
    def plane_moments_kernel(x, means, m2s):
        # each plane's mean, and its sum of squares about that mean (two passes, in cache)
        n_, c_, size = x.shape
        for n in range(n_):
            for c in range(c_):
                total = 0.0
                for i in range(size):
                    total += x[n, c, i]
                mean = total / size
                squares = 0.0
                for i in range(size):
                    d = x[n, c, i] - mean
                    squares += d * d
                means[n, c], m2s[n, c] = mean, squares

    @sums
    def plane_grad_sums_kernel(g, x, mean, g_sums, g_centred):
        # each plane's sum(g) and sum(g * (x - mean[c]))
        n_, c_, size = x.shape
        for n in range(n_):
            for c in range(c_):
                m, total, centred = mean[c], 0.0, 0.0
                for i in range(size):
                    total += g[n, c, i]
                    centred += g[n, c, i] * (x[n, c, i] - m)
                g_sums[n, c], g_centred[n, c] = total, centred

    @jit
    def normalize_kernel(x, out, mean, scale, shift):
        # out = (x - mean) * scale + shift per channel: NumPy's three passes' arithmetic
        n_, c_, size = x.shape
        for n in range(n_):
            for c in range(c_):
                m, s, b = mean[c], scale[c], shift[c]
                for i in range(size):
                    out[n, c, i] = (x[n, c, i] - m) * s + b

    @jit
    def norm_input_grad_kernel(g, x, gx, mean, scale, per_centred, per_channel):
        # gx = g * scale - ((x - mean) * per_centred + per_channel) per channel
        n_, c_, size = x.shape
        for n in range(n_):
            for c in range(c_):
                m, s, pc, pch = mean[c], scale[c], per_centred[c], per_channel[c]
                for i in range(size):
                    gx[n, c, i] = g[n, c, i] * s - ((x[n, c, i] - m) * pc + pch)

    # Elementwise passes fused into one: no error checks on division (NumPy's rules, so
    # 0/0 is NaN, not an exception), which lets LLVM vectorise the loops; no fastmath, so
    # each product and sum rounds as NumPy's separate passes do (the same bits)
    flat = compiler(error_model="numpy")

    @flat
    def relu_kernel(a, out):
        # torch's relu (clamp_min 0): NaN stays NaN and -0 stays -0, where NumPy's
        # maximum(a, 0) gives +0
        af, of = a.reshape(a.size), out.reshape(out.size)
        for i in range(af.size):
            if af[i] < 0:
                of[i] = 0
            else:
                of[i] = af[i]

    @flat
    def relu_grad_kernel(g, out, grad):
        # torch's threshold_backward: 0 where the output is <= 0, else g (NaN outputs pass
        # g on; an infinite g at a zero output gives 0, not NaN). Arrays of any rank, all
        # C-contiguous: read as flat runs
        gf, of, rf = g.reshape(g.size), out.reshape(out.size), grad.reshape(grad.size)
        for i in range(gf.size):
            if of[i] <= 0:
                rf[i] = 0
            else:
                rf[i] = gf[i]

    @flat
    def sigmoid_grad_kernel(g, out, grad, one):
        # grad = (1 - out) * out * g, in the order of Sigmoid.backward's NumPy passes
        # (one = 1 in the arrays' dtype: a Python 1 would make Numba compute in float64)
        gf, of, rf = g.reshape(g.size), out.reshape(out.size), grad.reshape(grad.size)
        for i in range(gf.size):
            o = of[i]
            rf[i] = (one - o) * o * gf[i]

    @flat
    def sigmoid_kernel(a, out, one):
        # torch's formula, 1 / (1 + e^-a), in one pass; e^-a overflows to inf where a < -88
        # (float32), giving exactly 0 as torch does, with no warning to silence
        af, of = a.reshape(a.size), out.reshape(out.size)
        for i in range(af.size):
            of[i] = one / (one + xp.exp(-af[i]))

    @flat
    def tanh_grad_kernel(g, out, grad, one):
        # grad = g * (1 - out * out), in the order of Tanh.backward's NumPy passes
        gf, of, rf = g.reshape(g.size), out.reshape(out.size), grad.reshape(grad.size)
        for i in range(gf.size):
            o = of[i]
            rf[i] = gf[i] * (one - o * o)

    # Every operand of the arithmetic below has the arrays' dtype: a Python number in a
    # float32 expression (``1 - w``) would make Numba compute it, and all that follows,
    # in float64, and round differently from NumPy's float32 passes.
    @flat
    def adam_kernel(p, g, m, v, near_m, w, beta2, w2, bias2, eps, step):
        # m = lerp(m, g, 1 - beta1) in torch's two-sided form (from m when ``near_m``,
        # w = 1 - beta1, else from g, w = beta1), v = beta2 v + (g w2) g, then
        # p -= m / (sqrt(v) / bias2 + eps) * step: Adam._adam_step's passes, per element
        pf, gf, mf, vf = p.reshape(p.size), g.reshape(g.size), m.reshape(m.size), v.reshape(v.size)
        for i in range(pf.size):
            gi, mi = gf[i], mf[i]
            if near_m:
                mi = mi + (gi - mi) * w
            else:
                mi = gi - (gi - mi) * w
            vi = vf[i] * beta2 + gi * w2 * gi
            mf[i], vf[i] = mi, vi
            pf[i] = pf[i] - mi / (xp.sqrt(vi) / bias2 + eps) * step

    @flat
    def sgd_kernel(p, g, lr):
        # p -= g * lr, rounding the product first as NumPy's two passes do
        pf, gf = p.reshape(p.size), g.reshape(g.size)
        for i in range(pf.size):
            pf[i] = pf[i] - gf[i] * lr

    @flat
    def momentum_of(b, gi, momentum, keep):
        # one element of buf = momentum buf + keep g (keep = 1 - dampening; at 1, g is
        # added as it is, as torch does); LLVM inlines it into the two kernels below
        return b * momentum + (gi * keep if keep != 1 else gi)

    @flat
    def momentum_kernel(g, buf, momentum, keep):
        # the buffer's update alone: sgd_momentum_kernel's first half, for a parameter
        # whose own update BLAS shares between its threads (optim/sgd.py)
        gf, bf = g.reshape(g.size), buf.reshape(buf.size)
        for i in range(bf.size):
            bf[i] = momentum_of(bf[i], gf[i], momentum, keep)

    @flat
    def sgd_momentum_kernel(p, g, buf, momentum, keep, lr, nesterov):
        # the buffer's update, then p -= lr * direction, the direction being
        # g + momentum buf (Nesterov) or buf
        pf, gf, bf = p.reshape(p.size), g.reshape(g.size), buf.reshape(buf.size)
        for i in range(pf.size):
            gi = gf[i]
            b = momentum_of(bf[i], gi, momentum, keep)
            bf[i] = b
            pf[i] = pf[i] - (gi + b * momentum if nesterov else b) * lr

    @flat
    def xent_kernel(x, target, exps, sums, per_sample):
        # cross-entropy of (N, C) logits against class indices, CrossEntropy's plain
        # passes row by row: exps = exp(x - max), sums = their row sums, per_sample =
        # log(sum) - (x[t] - max). False, part-written, for a target outside 0..C-1 or a
        # row whose maximum is not finite: the general path then raises or handles it
        n_, c_ = x.shape
        for n in range(n_):
            row, t = x[n], target[n]
            if t < 0 or t >= c_:
                return False
            top = row[0]
            for c in range(1, c_):
                v = row[c]
                if v > top or v != v:  # NaN wins, as in NumPy's max
                    top = v
            total = top - top  # 0 in the logits' dtype, or NaN when top is inf or NaN
            if total != 0:
                return False
            for c in range(c_):
                e = xp.exp(row[c] - top)
                exps[n, c] = e
                total += e
            sums[n] = total
            per_sample[n] = xp.log(total) - (row[t] - top)
        return True

    # float32 exp(x) for x <= 0 in arithmetic LLVM vectorises (NumPy's exp in a compiled
    # loop is a C library call per element): Cephes' expf. x = n ln2 + r, |r| <= ln2/2,
    # n rounded by adding and subtracting 1.5 * 2^23, ln2 in two parts so that n ln2 is
    # exact; exp(r) by a degree-5 polynomial; 2^n as two powers of two built from their
    # bits, so that outputs below 2^-126 are subnormal as in NumPy, and 0 below -104.
    # Within 1 ulp of the exact value over (-inf, 0] (tests). No fastmath: its callers'
    # flags do not reach it, and the rounding trick must not be reassociated.
    @numba.extending.intrinsic
    def float32_from_bits(typingctx, bits):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvmlite.ir.FloatType())
        return numba.float32(numba.int32), codegen

    f32, i32 = numba.float32, numba.int32
    log2e, ln2_hi, ln2_lo = f32(1.44269504088896341), f32(0.693359375), f32(-2.12194440e-4)
    p0, p1, p2, p3, p4, p5 = (f32(1.9875691500e-4), f32(1.3981999507e-3), f32(8.3334519073e-3),
                              f32(4.1665795894e-2), f32(1.6666665459e-1), f32(5.0000001201e-1))
    lowest, rounder = f32(-104.0), f32(12582912.0)

    @flat
    def exp_nonpositive(x):
        xc = x if x > lowest else lowest  # selects, not branches: the loop vectorises
        n = (xc * log2e + rounder) - rounder
        r = xc - n * ln2_hi - n * ln2_lo
        y = (((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5) * (r * r) + r + f32(1)
        k = i32(n)
        half = k >> 1
        y = y * float32_from_bits((half + i32(127)) << 23) * \
            float32_from_bits((k - half + i32(127)) << 23)
        return y if x > lowest else f32(0)

    @compiler(error_model="numpy", fastmath={"reassoc"})
    def xent_long_kernel(x, top, target, exps, sums, per_sample):
        # xent_kernel for float32 rows of many classes, given each row's finite maximum
        # and targets in range: exp_nonpositive's exponentials, and row sums reassociated
        # (vector lanes) so that the loop vectorises; ~2x NumPy's four passes
        # (top, target, sums and per_sample are (N, 1): parallel.rows cuts them with x)
        for n in range(x.shape[0]):
            row, e, m = x[n], exps[n], top[n, 0]
            total = f32(0)
            for c in range(row.size):
                v = exp_nonpositive(row[c] - m)
                e[c] = v
                total += v
            sums[n, 0] = total
            per_sample[n, 0] = xp.log(total) - (row[target[n, 0]] - m)

    @flat
    def xent_grad_kernel(exps, sums, target, scale, grad):
        # (softmax - onehot) * scale, scale holding one value per row or one for all rows
        n_, c_ = exps.shape
        for n in range(n_):
            s = scale[n] if scale.size == n_ else scale[0]
            q = s / sums[n]
            for c in range(c_):
                grad[n, c] = exps[n, c] * q
            grad[n, target[n]] -= s

    @flat
    def unit_normalize_kernel(img, out, table):
        # ToTensor then Normalize of uint8 (n, c, h, w) images of any strides, in one pass:
        # out = table[c, img], the table holding (v / 255 - mean[c]) / std[c] for every
        # byte value v, computed by NumPy's own passes (``normalize_table``)
        n_, c_, h_, w_ = img.shape
        for n in range(n_):
            for c in range(c_):
                row = table[c]
                for y in range(h_):
                    for x in range(w_):
                        out[n, c, y, x] = row[img[n, c, y, x]]

    # Winograd F(2x2, 3x3) (ember/ops/conv_blocked.py): the input and output transforms of
    # 4x4 input tiles at stride 2, each in two separable passes through a small scratch,
    # so that every inner loop runs along contiguous rows
    @flat
    def winograd_input_kernel(img, v):
        # v[4i+j, c, n, t] = (B^T d B)[i, j] for tile t of img[n, c] (padded by 1), with
        # B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
        n_, c_, hp, wp = img.shape
        th, tw = (hp - 2) // 2, (wp - 2) // 2
        a = xp.empty((4, hp, tw), img.dtype)
        for n in range(n_):
            for c in range(c_):
                plane = img[u(n), u(c)]
                for y in range(hp):  # along x: the four columns of every tile of row y
                    r = plane[u(y)]
                    a0, a1, a2, a3 = a[0, u(y)], a[1, u(y)], a[2, u(y)], a[3, u(y)]
                    for tx in range(tw):
                        x0 = u(2 * tx)
                        p0, p1, p2, p3 = r[x0], r[x0 + 1], r[x0 + 2], r[x0 + 3]
                        a0[tx], a1[tx], a2[tx], a3[tx] = p0 - p2, p1 + p2, p2 - p1, p1 - p3
                for j in range(4):  # along y, into the transform's rows 0-3 of column j
                    aj = a[u(j)]
                    v0, v1 = v[u(j), u(c), u(n)], v[u(4 + j), u(c), u(n)]
                    v2, v3 = v[u(8 + j), u(c), u(n)], v[u(12 + j), u(c), u(n)]
                    for ty in range(th):
                        q0, q1 = aj[u(2 * ty)], aj[u(2 * ty + 1)]
                        q2, q3 = aj[u(2 * ty + 2)], aj[u(2 * ty + 3)]
                        base = u(ty * tw)
                        for tx in range(tw):
                            t = base + u(tx)
                            v0[t], v1[t] = q0[tx] - q2[tx], q1[tx] + q2[tx]
                            v2[t], v3[t] = q2[tx] - q1[tx], q1[tx] - q3[tx]

    @flat
    def winograd_weights_kernel(w, g, out):
        # out[4i+j, k, c] = (G w[k, c] G^T)[i, j] for (K, C, 3, 3) weights, each sum taken
        # in a matrix product's order (G's entries 0, +-1/2, 1 make every product exact,
        # so the values are those of NumPy's two products; a zero's sign may differ)
        k_, c_ = w.shape[0], w.shape[1]
        t = xp.empty((4, 3), w.dtype)
        for k in range(k_):
            for c in range(c_):
                f = w[u(k), u(c)]
                for i in range(4):
                    for b in range(3):
                        t[i, b] = g[i, 0] * f[0, b] + g[i, 1] * f[1, b] + g[i, 2] * f[2, b]
                for i in range(4):
                    for j in range(4):
                        out[u(4 * i + j), u(k), u(c)] = \
                            t[i, 0] * g[j, 0] + t[i, 1] * g[j, 1] + t[i, 2] * g[j, 2]

    @flat
    def winograd_output_kernel(m, shift, out):
        # out[n, k] tile t = A^T M A + shift[k], M[i, j] = m[4i+j, k, n, t], with
        # A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
        n_, k_, h, w = out.shape
        th, tw = h // 2, w // 2
        e = xp.empty((2, 4, tw), m.dtype)
        for n in range(n_):
            for k in range(k_):
                plane, b = out[u(n), u(k)], shift[u(k)]
                for ty in range(th):
                    base = u(ty * tw)
                    for j in range(4):  # along the tile's rows
                        m0, m1 = m[u(j), u(k), u(n)], m[u(4 + j), u(k), u(n)]
                        m2, m3 = m[u(8 + j), u(k), u(n)], m[u(12 + j), u(k), u(n)]
                        e0, e1 = e[0, u(j)], e[1, u(j)]
                        for tx in range(tw):
                            t = base + u(tx)
                            b1, b2 = m1[t], m2[t]
                            e0[tx], e1[tx] = m0[t] + b1 + b2, b1 - b2 - m3[t]
                    for i in range(2):  # along its columns, into two output rows
                        o = plane[u(2 * ty + i)]
                        f0, f1, f2, f3 = e[u(i), 0], e[u(i), 1], e[u(i), 2], e[u(i), 3]
                        for tx in range(tw):
                            c1, c2 = f1[tx], f2[tx]
                            o[u(2 * tx)] = f0[tx] + c1 + c2 + b
                            o[u(2 * tx + 1)] = c1 - c2 - f3[tx] + b

    @flat
    def winograd_grad_kernel(gy, z):
        # z[4i+j, k, n, t] = (A gy A^T)[i, j] for the 2x2 tile t of gy[n, k], with
        # A = [[1, 0], [1, 1], [1, -1], [0, -1]]: the products' gradient under
        # winograd_output_kernel, whose transform is A^T M A (the weight gradient's input)
        n_, k_, h, w = gy.shape
        th, tw = h // 2, w // 2
        a = xp.empty((4, h, tw), gy.dtype)
        for n in range(n_):
            for k in range(k_):
                plane = gy[u(n), u(k)]
                for y in range(h):  # along x: the four columns of every tile of row y
                    r = plane[u(y)]
                    a0, a1, a2, a3 = a[0, u(y)], a[1, u(y)], a[2, u(y)], a[3, u(y)]
                    for tx in range(tw):
                        p, q = r[u(2 * tx)], r[u(2 * tx + 1)]
                        a0[tx], a1[tx], a2[tx], a3[tx] = p, p + q, p - q, -q
                for j in range(4):  # along y, into the transform's rows 0-3 of column j
                    aj = a[u(j)]
                    z0, z1 = z[u(j), u(k), u(n)], z[u(4 + j), u(k), u(n)]
                    z2, z3 = z[u(8 + j), u(k), u(n)], z[u(12 + j), u(k), u(n)]
                    for ty in range(th):
                        q0, q1 = aj[u(2 * ty)], aj[u(2 * ty + 1)]
                        base = u(ty * tw)
                        for tx in range(tw):
                            t = base + u(tx)
                            z0[t], z1[t] = q0[tx], q0[tx] + q1[tx]
                            z2[t], z3[t] = q0[tx] - q1[tx], -q1[tx]

    return SimpleNamespace(
        winograd_input=winograd_input_kernel, winograd_output=winograd_output_kernel,
        winograd_grad=winograd_grad_kernel,
        winograd_weights=winograd_weights_kernel,
        unit_normalize=unit_normalize_kernel, relu=relu_kernel,
        sigmoid=sigmoid_kernel, sigmoid_grad=sigmoid_grad_kernel, tanh_grad=tanh_grad_kernel,
        relu_grad=relu_grad_kernel,
        adam=adam_kernel, sgd=sgd_kernel,
        sgd_momentum=sgd_momentum_kernel, momentum=momentum_kernel, xent=xent_kernel,
        xent_long=xent_long_kernel,
        xent_grad=xent_grad_kernel,
        taps=taps_kernel, max_pool_2x2=max_pool_2x2_kernel, max_pool_grad=max_pool_grad_kernel,
        max_pool_2x2_grad=max_pool_2x2_grad_kernel,
        plane_moments=plane_moments_kernel, plane_grad_sums=plane_grad_sums_kernel,
        normalize=normalize_kernel, norm_input_grad=norm_input_grad_kernel)


def jit_compiler(numba: Any, **options: Any) -> Any:
    """A decorator compiling a kernel with Numba: GIL released, cached on disk."""
    def jit(fn: Any) -> Any:
        try:  # cached on disk beside this file, or in the user's cache directory
            return numba.njit(nogil=True, cache=True, **options)(fn)
        except RuntimeError:  # neither is writable: compile each process instead
            return numba.njit(nogil=True, **options)(fn)
    return jit


def enabled(dtype: Any = None) -> bool:
    """Whether the compiled kernels are in use (Numba installed and not switched off),
    for arrays of ``dtype`` if given (float32 and float64 only: Numba's float16 is partial)."""
    global _kernels
    if not _wanted or (dtype is not None and dtype not in _DTYPES):
        return False
    if _kernels is None:
        _kernels = _compile()
    return bool(_kernels)


def set_enabled(enabled: bool) -> bool:
    """Use the compiled kernels (if Numba is installed) or not; returns the previous
    setting. Tests switch them off to check them against the NumPy formulas."""
    global _wanted
    previous, _wanted = _wanted, bool(enabled)
    return previous


def _as_rows(cols: Any) -> Any:
    """(n, c, kh, kw, oh, ow) as (n, c, kh*kw, oh*ow): the image's rank, so that
    ``parallel.rows`` cuts both by samples."""
    n, c, kh, kw, oh, ow = cols.shape
    return cols.reshape(n, c, kh * kw, oh * ow)


def im2col(img: Any, cols: Any, win: Any) -> None:
    """Fill per-sample columns (n, c, kh, kw, oh, ow) from a padded (n, c, hp, wp) image."""
    kernel, (c, kh, kw, oh, ow) = _kernels.taps, cols.shape[1:]

    def run(cols_part: Any, img_part: Any) -> None:
        kernel(img_part, cols_part.reshape(len(cols_part), c, kh, kw, oh, ow),
               win.sh, win.sw, win.dh, win.dw, False)
    parallel.rows(run, _as_rows(cols), img)


def winograd_weights(weight: Any, g: Any) -> Any:
    """Winograd F(2x2, 3x3) kernel transform ``G w G^T`` of (K, C, 3, 3) weights by the
    (4, 3) ``g``, as 16 (K, C) matrices: one compiled pass, where NumPy's stacked 4x3 and
    4x4 products cost ~1.5 ms for 96 x 96 channels (docs/performance.md, section 23)."""
    out = xp.empty((16,) + weight.shape[:2], weight.dtype)
    _kernels.winograd_weights(weight, g, out)
    return out


def winograd_input(img: Any, v: Any) -> None:
    """Winograd F(2x2, 3x3) input transform of a padded (n, c, 2th+2, 2tw+2) block into
    ``v`` (16, c, n, th*tw), on the calling thread."""
    _kernels.winograd_input(img, v)


def winograd_output(m: Any, shift: Any, out: Any) -> None:
    """Winograd F(2x2, 3x3) output transform of the products ``m`` (16, k, n, th*tw)
    into ``out`` (n, k, 2th, 2tw), plus ``shift[k]``, on the calling thread."""
    _kernels.winograd_output(m, shift, out)


def winograd_grad(gy: Any, z: Any) -> None:
    """Winograd F(2x2, 3x3) transform ``A g A^T`` of an output gradient block (n, k, 2th,
    2tw) into ``z`` (16, k, n, th*tw), on the calling thread: the gradient of the products
    that ``winograd_output`` transforms back."""
    _kernels.winograd_grad(gy, z)


def block_im2col(img: Any, cols: Any, win: Any) -> None:
    """``im2col`` of one block on the calling thread (a conv_blocked worker already is one
    of the threads): ``cols`` may be any strided view of shape (n, c, kh, kw, oh, ow)."""
    _kernels.taps(img, cols, win.sh, win.sw, win.dh, win.dw, False)


def col2im_into(cols: Any, img: Any, win: Any) -> None:
    """Add per-sample columns (n, c, kh, kw, oh, ow) into a padded (n, c, hp, wp) image
    back where ``im2col`` read them."""
    kernel, (c, kh, kw, oh, ow) = _kernels.taps, cols.shape[1:]

    def run(cols_part: Any, img_part: Any) -> None:
        kernel(img_part, cols_part.reshape(len(cols_part), c, kh, kw, oh, ow),
               win.sh, win.sw, win.dh, win.dw, True)
    parallel.rows(run, _as_rows(cols), img)  # the columns decide whether to split


def max_pool_2x2(img: Any, win: Any) -> tuple:
    """Maxima and their offsets (uint8) of 2x2 windows at stride 2 over a padded (n, c,
    hp, wp) image: ``ember.ops.pool.max_offsets``'s result for that window."""
    best = xp.empty((win.n, win.c, win.oh, win.ow), img.dtype)
    which = xp.empty(best.shape, xp.uint8)
    parallel.rows(_kernels.max_pool_2x2, img, best, which)
    return best, which


def max_pool_2x2_grad(g: Any, which: Any, win: Any) -> Any:
    """The padded (n, c, hp, wp) image that ``max_pool_2x2``'s windows' gradients ``g``
    make: each at the offset ``which`` names, zeros elsewhere. Every element is written
    once (zeroing the image and adding into it took ~1.5x as long: 141 against 92 us for
    LeNet-5's first pool); a last odd row or column, in no window, is zeroed."""
    img = xp.empty((win.n, win.c, win.hp, win.wp), g.dtype)
    img[:, :, 2 * win.oh:] = 0
    img[:, :, :, 2 * win.ow:] = 0
    zero = g.dtype.type(0)
    parallel.rows(lambda i, g_part, w_part: _kernels.max_pool_2x2_grad(g_part, w_part, i, zero),
                  img, g, which)
    return img


def max_pool_grad_into(g: Any, which: Any, img: Any, win: Any) -> None:
    """Add each window's gradient into a zeroed padded (n, c, hp, wp) image at the offset
    ``which`` names (the adjoint of ``max_pool``)."""
    def run(img_part: Any, g_part: Any, which_part: Any) -> None:
        _kernels.max_pool_grad(g_part, which_part, img_part, win.kw, win.sh, win.sw, win.dh, win.dw)
    parallel.rows(run, img, g, which)


# ---------------------------------------------------------------- batch norm
def norm_ready(*arrays: Any) -> bool:
    """Whether batch norm can use the kernels on these (N, C, ...) arrays: kernels on,
    float32/64, C-contiguous (viewed as (N, C, L) without a copy) and not empty."""
    return all(a.flags.c_contiguous and a.size and a.ndim >= 2 and enabled(a.dtype)
               for a in arrays)


def _planes(a: Any) -> Any:
    return a.reshape(a.shape[0], a.shape[1], -1)


def _per_plane(planes: Any) -> Any:
    """A float64 (N, C, 1) array for one number per plane: the planes' rank, so that
    ``parallel.rows`` cuts it by samples with them."""
    return xp.empty(planes.shape[:2] + (1,), xp.float64)


def batch_moments(x: Any) -> tuple:
    """Per-channel mean and biased variance of an (N, C, ...) array (``norm_ready``), in
    x's dtype: each plane's moments, then combined as in Chan et al. (all planes have
    the same count): ``m2 = sum(m2_p) + size * sum((mean_p - mean)^2)``."""
    planes = _planes(x)
    means, m2s = _per_plane(planes), _per_plane(planes)
    parallel.rows(lambda v, m, q: _kernels.plane_moments(v, m[..., 0], q[..., 0]),
                  planes, means, m2s)
    means, m2s, size = means[..., 0], m2s[..., 0], planes.shape[2]
    mean = means.mean(axis=0)
    m2 = m2s.sum(axis=0) + size * ((means - mean) ** 2).sum(axis=0)
    return mean.astype(x.dtype), (m2 / (planes.shape[0] * size)).astype(x.dtype)


def normalize_into(out: Any, x: Any, mean: Any, scale: Any, shift: Any) -> None:
    """``out = (x - mean) * scale + shift`` with per-channel (C,) vectors of x's dtype."""
    parallel.rows(lambda o, v: _kernels.normalize(v, o, mean, scale, shift),
                  _planes(out), _planes(x))


def norm_grad_sums(g: Any, x: Any, mean: Any) -> tuple:
    """Per-channel ``sum(g)`` and ``sum(g * (x - mean))``, in x's dtype."""
    g3 = _planes(g)
    sums, centred = _per_plane(g3), _per_plane(g3)
    parallel.rows(lambda a, b, s, c: _kernels.plane_grad_sums(a, b, mean, s[..., 0], c[..., 0]),
                  g3, _planes(x), sums, centred)
    return sums[..., 0].sum(axis=0).astype(x.dtype), centred[..., 0].sum(axis=0).astype(x.dtype)


def norm_input_grad_into(gx: Any, g: Any, x: Any, mean: Any, scale: Any, per_centred: Any,
                         per_channel: Any) -> None:
    """``gx = g * scale - ((x - mean) * per_centred + per_channel)``, per-channel vectors."""
    parallel.rows(lambda o, a, b: _kernels.norm_input_grad(
        a, b, o, mean, scale, per_centred, per_channel), _planes(gx), _planes(g), _planes(x))


# ---------------------------------------------------------------- elementwise and optimizers
def cross_entropy_rows(x: Any, target: Any) -> tuple | None:
    """``(exps, sums, per_sample)`` of (N, C) ``flat_ready`` logits and int64 class
    indices, in one pass: ``exp(x - max)`` by row, its row sums, and each sample's loss
    ``log(sum) - (x[t] - max)``. None for a target outside ``0..C-1`` or a row whose
    maximum is not finite. NumPy needs ~10 calls for this; at MNIST's 200 x 10 logits
    they cost ~40 µs, the kernel ~10 (docs/performance.md, section 20)."""
    n = x.shape[0]
    exps, sums, per_sample = xp.empty_like(x), xp.empty(n, x.dtype), xp.empty(n, x.dtype)
    if not _kernels.xent(x, target, exps, sums, per_sample):
        return None
    return exps, sums, per_sample


def cross_entropy_long_rows(x: Any, top: Any, target: Any) -> tuple:
    """``cross_entropy_rows``' results for float32 ``flat_ready`` (N, C) logits whose
    row maxima ``top`` (N, 1) are finite and whose targets are in range (the caller checks
    both): one compiled pass in place of NumPy's four, with vectorised exponentials
    (within an ulp of NumPy's) and row sums in another order (docs/performance.md,
    section 29). Big arrays are shared out between threads by rows."""
    exps, sums, per_sample = xp.empty_like(x), xp.empty_like(top), xp.empty_like(top)
    parallel.rows(_kernels.xent_long, x, top, target[:, None], exps, sums, per_sample)
    return exps, sums[:, 0], per_sample[:, 0]


def cross_entropy_grad(exps: Any, sums: Any, target: Any, scale: Any) -> Any:
    """``(exps / sums - onehot(target)) * scale`` from ``cross_entropy_rows``' results;
    ``scale`` is a 1-D array of one value per row, or of one value for all."""
    grad = xp.empty_like(exps)
    _kernels.xent_grad(exps, sums, target, scale, grad)
    return grad


def unit_normalize(images: Any, table: Any) -> Any:
    """``(images / 255 - mean[c]) / std[c]`` as a new float32 (n, c, h, w) array, from uint8
    (n, c, h, w) images of any strides (an NHWC batch transposed, say) and the statistics'
    ``normalize_table``: torchvision's ToTensor and Normalize in one pass, with the same
    roundings. The pass is a lookup: no divisions, which bound the arithmetic kernel it
    replaced (1.2-1.5x faster for MNIST at batch 200, 4-5x for a CIFAR batch's strided
    channels; docs/performance.md, section 18)."""
    out = xp.empty(images.shape, xp.float32)
    parallel.rows(lambda img, o: _kernels.unit_normalize(img, o, table), images, out)
    return out


def normalize_table(mean: Any, std: Any) -> Any:
    """(C, 256) float32: ``(v / 255 - mean[c]) / std[c]`` for every byte value ``v`` and
    float32 (C,) statistics, made by the very NumPy passes (ToTensor's division, then
    Normalize's subtraction and division) whose bits ``unit_normalize`` must give."""
    values = xp.arange(256, dtype=xp.float32) / xp.float32(255)
    return (values[None, :] - xp.asarray(mean, xp.float32)[:, None]) / \
        xp.asarray(std, xp.float32)[:, None]


def flat_ready(*arrays: Any) -> bool:
    """Whether the one-pass kernels below can take these arrays: kernels on, one float32
    or float64 dtype, and C-contiguous (so each is one flat run)."""
    dtype = arrays[0].dtype
    # the usual answer without calling enabled(): optimizers ask once per parameter
    if not (_kernels and _wanted and dtype in _DTYPES) and not enabled(dtype):
        return False
    for a in arrays:  # a loop, not all(...): an optimizer asks this for every parameter
        if a.dtype != dtype or not a.flags.c_contiguous:
            return False
    return True


def relu_into(out: Any, a: Any) -> None:
    """``out = 0 where a < 0, else a`` (``flat_ready`` arrays of one shape)."""
    parallel.rows(lambda o, x: _kernels.relu(x, o), out, a)


def relu_grad_into(grad: Any, g: Any, out: Any) -> None:
    """``grad = 0 where out <= 0, else g`` (``flat_ready`` arrays of one shape)."""
    parallel.rows(lambda a, b, c: _kernels.relu_grad(b, c, a), grad, g, out)


def sigmoid(a: Any) -> Any:
    """``1 / (1 + e^-a)`` of a small ``flat_ready`` array in one compiled pass. Its
    exponentials are the C library's, within a few ulp of NumPy's vectorised ones: faster
    than NumPy's four passes up to ~1400 elements, ~3x slower on big arrays, so
    ``Sigmoid`` calls it on small ones only (docs/performance.md, section 22)."""
    out = xp.empty_like(a)
    _kernels.sigmoid(a, out, _in_dtype(a.dtype, 1)[0])
    return out


def sigmoid_grad_into(grad: Any, g: Any, out: Any) -> None:
    """``grad = (1 - out) * out * g`` (``flat_ready`` arrays of one shape)."""
    _output_grad_into(_kernels.sigmoid_grad, grad, g, out)


def tanh_grad_into(grad: Any, g: Any, out: Any) -> None:
    """``grad = g * (1 - out * out)`` (``flat_ready`` arrays of one shape)."""
    _output_grad_into(_kernels.tanh_grad, grad, g, out)


def _output_grad_into(kernel: Any, grad: Any, g: Any, out: Any) -> None:
    """Run an activation-gradient kernel written in terms of the op's output, with 1 in
    the arrays' dtype (a Python 1 would make Numba compute in float64), on row blocks of
    big arrays in parallel."""
    one = _in_dtype(out.dtype, 1)[0]
    if grad.nbytes < parallel.MIN_BYTES:  # most calls: no closure, no thread split
        kernel(g, out, grad, one)
    else:
        parallel.rows(lambda a, b, c: kernel(b, c, a, one), grad, g, out)


@functools.lru_cache(maxsize=64)
def adam_scalars(dtype: Any, beta1: float, beta2: float, lr: float, eps: float,
                 step: float) -> tuple:
    """``adam_update``'s coefficients for one step, rounded to the arrays' dtype as NumPy
    rounds a Python float it meets in an operation (computed once per step, not per
    parameter). The moment's lerp weight is ``1 - beta1``; ``adam.lerp_`` multiplies by
    it below 0.5 and by ``1 - (1 - beta1)`` from the other end above."""
    real, weight = dtype.type, 1 - beta1
    near_m = abs(weight) < 0.5
    return (near_m, real(weight if near_m else 1 - weight), real(beta2), real(1 - beta2),
            real((1 - beta2 ** step) ** 0.5), real(eps), real(lr / (1 - beta1 ** step)))


def adam_update(param: Any, g: Any, m: Any, v: Any, scalars: tuple) -> None:
    """One Adam step in place on ``flat_ready`` arrays, in ``Adam._adam_step``'s order of
    operations, with ``adam_scalars``' coefficients."""
    _kernels.adam(param, g, m, v, *scalars)


def sgd_update(param: Any, g: Any, lr: float) -> bool:
    """``param -= lr * g`` in place in one compiled pass (NumPy's rounding); False,
    changing nothing, where the kernels cannot take the arrays (not ``flat_ready``)."""
    if not flat_ready(param, g):
        return False
    _kernels.sgd(param, g, _in_dtype(param.dtype, lr)[0])
    return True


def momentum_update(g: Any, buf: Any, momentum: float, dampening: float) -> bool:
    """``buf = momentum * buf + (1 - dampening) * g`` in place in one compiled pass
    (NumPy's rounding); False, changing nothing, where the kernels cannot take the arrays."""
    if not flat_ready(buf, g):
        return False
    _kernels.momentum(g, buf, *_in_dtype(buf.dtype, momentum, 1 - dampening))
    return True


def sgd_momentum_update(param: Any, g: Any, buf: Any, momentum: float, dampening: float,
                        lr: float, nesterov: bool) -> bool:
    """``buf = momentum * buf + (1 - dampening) * g``, then ``param -= lr * (g + momentum
    * buf if nesterov else buf)``, in place in one compiled pass; False, changing nothing,
    where the kernels cannot take the arrays (as ``sgd_update``)."""
    if not flat_ready(param, g, buf):
        return False
    _kernels.sgd_momentum(param, g, buf, *_in_dtype(param.dtype, momentum, 1 - dampening, lr),
                          nesterov)
    return True


@functools.lru_cache(maxsize=256)
def _in_dtype(dtype: Any, *values: float) -> tuple:
    """``values`` as NumPy scalars of ``dtype`` (rounded as NumPy rounds a Python float
    in an operation with such arrays), made once per value rather than per call: a scalar
    made per call costs ~0.35 µs more in a small kernel call, its making and Numba's
    dispatch on a new object (a 784-100-10 MLP's step makes ~10 such calls)."""
    return tuple(dtype.type(v) for v in values)
