"""Linear, logistic and polynomial regression by gradient descent, with the data and the fit.

    python examples/regression.py                  # writes out/regression/*.png

Each model is one ``nn.Linear`` trained with full-batch gradient descent; the linear
and polynomial fits are checked against the closed-form least-squares solution.

Writes linear_regression.png, logistic_regression.png, polynomial_regression.png
and regression_losses.png.
"""

import argparse
import os

import numpy as np
from matplotlib.figure import Figure

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.data import toy
from ember.viz import plot_decision_boundary, plot_history, save_figure

# ---- config
N = 100  # points per data set
NOISE = 0.1
LINEAR = dict(steps=300, lr=0.5)  # y = 2x + 1 + noise
LOGISTIC = dict(steps=300, lr=0.5)  # two Gaussian blobs
POLY = dict(steps=3000, lr=0.5, degree=3)  # y = x³ - x + noise; x, x², x³ are ill-conditioned
SEED = 0

parser = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", default="out/regression", help="folder for the PNGs")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
ember.manual_seed(SEED)
losses = {}


def fit(model, inputs, targets, loss_fn, steps, lr):
    """Full-batch gradient descent; returns the loss per step."""
    optimizer = ember.optim.SGD(model.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        loss = loss_fn(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history


def least_squares(features, y):
    """Closed-form weights and bias of the same linear model."""
    design = np.c_[features, np.ones(len(features))].astype(np.float64)
    solution = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)[0].reshape(-1)
    return solution[:-1], solution[-1]


def fmt(values):
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def powers(x, degree):
    return np.concatenate([x ** k for k in range(1, degree + 1)], axis=1)


# ---- linear regression
x, y = toy.regression_1d("linear", N, noise=NOISE, seed=SEED)
line = nn.Linear(1, 1)
losses["linear_loss"] = fit(line, ember.tensor(x), ember.tensor(y), F.mse_loss, **LINEAR)
w, b = line.weight.item(), line.bias.item()
w_ls, b_ls = least_squares(x, y)
print(f"linear:     w {w:.4f}  b {b:.4f}   least squares w {w_ls[0]:.4f}  b {b_ls:.4f}   "
      f"(true 2, 1)  max difference {max(abs(w - w_ls[0]), abs(b - b_ls)):.1e}")

fig = Figure(figsize=(5.4, 4.2), layout="constrained")
ax = fig.add_subplot()
grid = np.linspace(-1, 1, 100)
ax.scatter(x, y, s=14, alpha=0.6, label="data")
ax.plot(grid, w * grid + b, "r", lw=2, label=f"gradient descent: {w:.2f}x + {b:.2f}")
ax.plot(grid, w_ls[0] * grid + b_ls, "k--", lw=1, label="least squares")
ax.set(xlabel="x", ylabel="y", title="linear regression")
ax.legend()
save_figure(fig, os.path.join(args.out, "linear_regression.png"))

# ---- logistic regression
X, labels = toy.blobs(2 * N, centers=[[-1.0, -1.0], [1.0, 1.0]], std=0.8, seed=SEED)
logistic = nn.Linear(2, 1)
targets = ember.tensor(labels[:, None].astype(np.float32))
losses["logistic_loss"] = fit(logistic, ember.tensor(X), targets,
                              F.binary_cross_entropy_with_logits, **LOGISTIC)
with ember.no_grad():
    accuracy = float(((logistic(ember.tensor(X)).numpy()[:, 0] > 0) == labels).mean())
print(f"logistic:   accuracy {accuracy:.3f}  final loss {losses['logistic_loss'][-1]:.4f}")
plot_decision_boundary(logistic, X, labels, title=f"logistic regression ({accuracy:.0%})",
                       path=os.path.join(args.out, "logistic_regression.png"))

# ---- polynomial regression: a linear model on the features x, x², x³
x, y = toy.regression_1d("poly", N, noise=NOISE, seed=SEED + 1)
degree = POLY["degree"]
poly = nn.Linear(degree, 1)
losses["polynomial_loss"] = fit(poly, ember.tensor(powers(x, degree)), ember.tensor(y),
                                F.mse_loss, POLY["steps"], POLY["lr"])
coefficients = poly.weight.detach().numpy().reshape(-1)
w_ls, b_ls = least_squares(powers(x, degree), y)
gap = float(np.abs(np.r_[coefficients, poly.bias.item()] - np.r_[w_ls, b_ls]).max())
print(f"polynomial: coefficients {fmt(coefficients)}  bias {poly.bias.item():.3f}   "
      f"least squares {fmt(w_ls)}  "
      f"(true [-1, 0, 1])  max difference {gap:.1e}")

fig = Figure(figsize=(5.4, 4.2), layout="constrained")
ax = fig.add_subplot()
with ember.no_grad():
    fitted = poly(ember.tensor(powers(grid[:, None].astype(np.float32), degree))).numpy()
ax.scatter(x, y, s=14, alpha=0.6, label="data")
ax.plot(grid, fitted, "r", lw=2, label="gradient descent")
ax.plot(grid, grid ** 3 - grid, "k--", lw=1, label="true $x^3 - x$")
ax.set(xlabel="x", ylabel="y", title=f"polynomial regression (degree {degree})")
ax.legend()
save_figure(fig, os.path.join(args.out, "polynomial_regression.png"))

fig = plot_history(losses, title="training loss per gradient step (full batch)")
fig.axes[0].set_xscale("log")  # the runs differ in length by 10x
save_figure(fig, os.path.join(args.out, "regression_losses.png"))
print(f"wrote linear_regression.png, logistic_regression.png, polynomial_regression.png, "
      f"regression_losses.png to {args.out}")
