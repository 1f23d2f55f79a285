"""Logic gates with a tiny MLP: XOR needs the hidden layer, AND/OR/NAND/NOR would not.

    python examples/logic_gates.py                 # writes out/logic_gates/*.png

One 2-4-1 network per gate (tanh hidden layer, one logit, binary cross-entropy,
full batch, Adam). Its output is drawn as a contour over the unit square with the
four truth-table points on top.

Writes logic_gates.png (every gate), xor.png (the XOR boundary) and xor_loss.png.
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
GATES = ["XOR", "AND", "OR", "NAND", "NOR"]
HIDDEN = 4  # two tanh units suffice for XOR in principle; four train reliably
STEPS = 1000  # full-batch steps (the data set is the four rows of the truth table)
LR = 0.05
SEED = 0
UNIT_SQUARE = (-0.1, 1.1, -0.1, 1.1)  # plot bounds: [0, 1]² and a margin for the points

parser = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", default="out/logic_gates", help="folder for the PNGs")
parser.add_argument("--steps", type=int, default=STEPS)
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
ember.manual_seed(SEED)

results = {}
for gate in GATES:
    X, y = toy.logic_gate(gate)
    inputs, targets = ember.tensor(X), ember.tensor(y[:, None].astype(np.float32))
    model = nn.Sequential(nn.Linear(2, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))
    optimizer = ember.optim.Adam(model.parameters(), lr=LR)

    # ---- the training loop
    losses = []
    for _ in range(args.steps):
        loss = F.binary_cross_entropy_with_logits(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    with ember.no_grad():
        probs = model(inputs).sigmoid().numpy().reshape(-1)
    separates = bool(np.all((probs > 0.5) == (y == 1)))  # each point on its class's side
    results[gate] = (model, X, y, losses)
    outputs = ", ".join(f"{p:.3f}" for p in probs)
    print(f"{gate:<4}  final loss {losses[-1]:.5f}  outputs [{outputs}]  "
          f"separates the four points: {separates}")

# ---- pictures
fig = Figure(figsize=(4.2 * len(GATES), 3.6), layout="constrained")
for ax, (gate, (model, X, y, _)) in zip(fig.subplots(1, len(GATES)), results.items()):
    plot_decision_boundary(model, X, y, ax=ax, bounds=UNIT_SQUARE, resolution=120, title=gate)
save_figure(fig, os.path.join(args.out, "logic_gates.png"))

model, X, y, losses = results["XOR"]
plot_decision_boundary(model, X, y, bounds=UNIT_SQUARE, title="XOR: a 2-4-1 tanh network",
                       path=os.path.join(args.out, "xor.png"))
plot_history({"loss": losses}, title="XOR training loss (one step per epoch)",
             path=os.path.join(args.out, "xor_loss.png"))
print(f"wrote logic_gates.png, xor.png, xor_loss.png to {args.out}")
