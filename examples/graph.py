"""The computational graph of a 2-4-1 network, with the gradient norm at every node.

    python examples/graph.py                       # writes out/graph/*

One forward pass of a 2-4-1 sigmoid network on the XOR inputs and its binary
cross-entropy loss, then ``backward()``. ``draw_graph`` draws every tensor the loss
was computed from (parameters yellow, constants grey, op outputs blue) with its
shape, dtype and |grad|; the second picture colours the path from the first
layer's weight to the loss. ``graph_text`` prints the same graph as a tree.

Writes graph.png, graph.svg and graph_highlight.png (needs Graphviz's ``dot``).
"""

import argparse
import os

import numpy as np

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.data import toy
from ember.viz import draw_graph, graph_text, retain_grads, save_graph

# ---- config
SEED = 0
DPI = "110"  # Graphviz PNG resolution

parser = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", default="out/graph", help="folder for the pictures")
args = parser.parse_args()
os.makedirs(args.out, exist_ok=True)
ember.manual_seed(SEED)

X, y = toy.xor()
inputs, targets = ember.tensor(X), ember.tensor(y[:, None].astype(np.float32))
model = nn.Sequential(nn.Linear(2, 4), nn.Sigmoid(), nn.Linear(4, 1))
params = dict(model.named_parameters())  # names the leaves: "0.weight", ...

# ---- one forward and backward pass
loss = F.binary_cross_entropy_with_logits(model(inputs), targets)
retain_grads(loss)  # keep .grad on the op outputs too, so every node shows a norm
loss.backward()
print(f"loss {loss.item():.4f}")
for name, p in params.items():
    print(f"|grad {name}| = {np.linalg.norm(p.grad.numpy()):.4f}")

# ---- pictures and the text tree
dot = draw_graph(loss, params=params, show_grad=True)
dot.attr(dpi=DPI)
save_graph(dot, os.path.join(args.out, "graph.png"))
save_graph(dot, os.path.join(args.out, "graph.svg"))
path = draw_graph(loss, params=params, show_grad=True, highlight=params["0.weight"])
path.attr(dpi=DPI)
save_graph(path, os.path.join(args.out, "graph_highlight.png"))
print(graph_text(loss, params=params))
print(f"wrote graph.png, graph.svg, graph_highlight.png to {args.out}")
