"""Hunting a NaN: a model with a planted bug, found by ``ember.autograd.detect_anomaly``.

    python examples/nan_hunt.py                    # writes out/nan_hunt/nan_hunt.png

The model normalises its hidden layer by hand, ``h / sqrt(mean(h²))``, and forgot
the usual ``eps``. It trains fine until a batch brings a blank (all-zero) input:
that row's hidden activations are all zero, so the division is 0 / 0 = NaN, the
loss turns NaN and the update poisons every weight. Training again under
``detect_anomaly()`` stops at the first op that produced NaN and names it and the
line of this file that called it. With ``eps`` added the same run trains through.

Writes nan_hunt.png (the loss of the broken and the fixed model).
"""

import argparse
import os

import numpy as np
from matplotlib.figure import Figure

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.viz import save_figure

# ---- config
STEPS = 60
BATCH = 32
BLANK_STEP = 37  # the step whose batch holds a blank input
LR = 0.05
SEED = 0

parser = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", default="out/nan_hunt", help="folder for the PNG")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
np.seterr(divide="ignore", invalid="ignore")  # NumPy's warning would point inside ember


class RMSNormMLP(nn.Module):
    """8 -> 16 -> 1 with the hidden layer scaled to unit root-mean-square."""

    def __init__(self, eps):
        super().__init__()
        self.hidden = nn.Linear(8, 16, bias=False)
        self.out = nn.Linear(16, 1)
        self.eps = eps

    def forward(self, x):
        h = self.hidden(x).relu()
        rms = (h.pow(2).mean(dim=1, keepdim=True) + self.eps).sqrt()
        return self.out(h / rms)  # the bug: with eps = 0 a zero row gives 0 / 0


def batches():
    """The same stream of regression batches every run; one holds a blank input."""
    rng = np.random.default_rng(SEED)
    for step in range(STEPS):
        x = rng.standard_normal((BATCH, 8)).astype(np.float32)
        if step == BLANK_STEP:
            x[5] = 0.0  # e.g. an empty image, or padding, slipped into the data
        y = np.tanh(x[:, :2].sum(1, keepdims=True)).astype(np.float32)
        yield ember.tensor(x), ember.tensor(y)


def train(eps):
    """Train from the same seed; returns the loss per step (stops at the first NaN)."""
    ember.manual_seed(SEED)
    model = RMSNormMLP(eps)
    optimizer = ember.optim.SGD(model.parameters(), lr=LR)
    losses = []
    for x, y in batches():
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if not np.isfinite(losses[-1]):
            break
    return losses


# ---- 1. the broken model: the loss suddenly turns NaN
broken = train(eps=0.0)
nan_step = len(broken) - 1
print(f"broken model: loss {broken[0]:.3f} at step 0, {broken[nan_step - 1]:.3f} at step "
      f"{nan_step - 1}, {broken[nan_step]} at step {nan_step}")

# ---- 2. the same run under detect_anomaly: stops at the op that made the NaN
try:
    with ember.autograd.detect_anomaly():
        train(eps=0.0)
except ember.AnomalyError as error:
    print("detect_anomaly says:")
    print(error)

# ---- 3. the fix: eps under the square root
fixed = train(eps=1e-6)
print(f"fixed model (eps=1e-6): final loss {fixed[-1]:.4f} after {len(fixed)} steps, "
      f"all finite: {bool(np.isfinite(fixed).all())}")

fig = Figure(figsize=(6.4, 4.0), layout="constrained")
ax = fig.add_subplot()
ax.plot(fixed, label="fixed: sqrt(mean(h²) + 1e-6)", color="tab:green")
ax.plot(broken, label="broken: sqrt(mean(h²))", color="tab:red", lw=2.5, alpha=0.7)
ax.axvline(nan_step, color="tab:red", ls="--", lw=1)
ax.annotate(f"NaN at step {nan_step}:\nDiv 0 / 0 on a blank input",
            (nan_step, broken[nan_step - 1]), xytext=(nan_step + 3, max(fixed) * 0.5),
            color="tab:red", arrowprops={"arrowstyle": "->", "color": "tab:red"})
ax.set(xlabel="step", ylabel="MSE loss", title="a NaN found by detect_anomaly", yscale="log")
ax.grid(alpha=0.3)
ax.legend()
save_figure(fig, os.path.join(args.out, "nan_hunt.png"))
print(f"wrote nan_hunt.png to {args.out}")
