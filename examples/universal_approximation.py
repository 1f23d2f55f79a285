"""Universal approximation: one hidden layer of tanh units fits sin, |x| and a step.

    python examples/universal_approximation.py     # writes out/universal_approximation/*.png

A 1-32-1 network is a sum of 32 shifted, scaled tanh curves plus a constant; the
picture shows the fit and, faintly, each hidden unit's contribution
``w2_j * tanh(w1_j x + b1_j)`` that adds up to it.

Writes universal_approximation.png and universal_approximation_loss.png.
"""

import argparse
import os

import numpy as np
from matplotlib.figure import Figure

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.data import toy
from ember.viz import plot_history, save_figure

# ---- config
TARGETS = {"sin": "sin(πx)", "abs": "|x|", "step": "step (x > 0)"}
HIDDEN = 32
N = 200  # training points, uniform in [-1, 1)
STEPS = 1500  # full-batch Adam steps per target
LR = 0.02
SEED = 0

parser = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", default="out/universal_approximation", help="folder for the PNGs")
parser.add_argument("--steps", type=int, default=STEPS)
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
ember.manual_seed(SEED)

fig = Figure(figsize=(4.3 * len(TARGETS), 3.8), layout="constrained")
axes = fig.subplots(1, len(TARGETS))
grid = np.linspace(-1, 1, 400, dtype=np.float32)[:, None]
losses = {}
for ax, (name, title) in zip(axes, TARGETS.items()):
    x, y = toy.regression_1d(name, N, seed=SEED)
    inputs, targets = ember.tensor(x), ember.tensor(y)
    model = nn.Sequential(nn.Linear(1, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))
    optimizer = ember.optim.Adam(model.parameters(), lr=LR)

    # ---- the training loop
    history = []
    for _ in range(args.steps):
        loss = F.mse_loss(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    losses[f"{name}_loss"] = history
    print(f"{name:<5} final MSE {history[-1]:.2e}")

    # ---- the fit, and the hidden units it is made of
    with ember.no_grad():
        hidden = model[1](model[0](ember.tensor(grid))).numpy()  # (400, HIDDEN)
        fit = model(ember.tensor(grid)).numpy()
    parts = hidden * model[2].weight.detach().numpy()  # unit j's share of the output
    ax.plot(grid, parts, color="grey", lw=0.6, alpha=0.35)[0].set_label("hidden units")
    ax.scatter(x, y, s=8, color="tab:blue", alpha=0.5, label="data")
    ax.plot(grid, fit, color="tab:red", lw=2, label=f"fit (MSE {history[-1]:.1e})")
    ax.set(title=f"{title}: 1-{HIDDEN}-1 tanh network", xlabel="x",
           ylim=(y.min() - 0.6, y.max() + 0.6))
    ax.legend(loc="lower right", fontsize="small")
save_figure(fig, os.path.join(args.out, "universal_approximation.png"))
plot_history(losses, title="training loss (MSE) per step",
             path=os.path.join(args.out, "universal_approximation_loss.png"))
print(f"wrote universal_approximation.png, universal_approximation_loss.png to {args.out}")
