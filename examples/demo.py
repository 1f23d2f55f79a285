"""ember's first job: train a small network on two interleaved spirals, with
nothing but tensors and autograd, and print what it learned.

Run: python examples/demo.py
"""

import numpy as np

import ember

# ---- config
SEED, POINTS, HIDDEN, STEPS, LR = 0, 200, 32, 600, 0.5

# ---- data: two spirals, one per class
rng = np.random.default_rng(SEED)
t = np.sqrt(rng.uniform(0, 1, POINTS)) * 3 * np.pi
labels = np.arange(POINTS) % 2
sign = np.where(labels == 0, 1.0, -1.0)
xy = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], 1) / 10
xy += rng.normal(0, 0.02, xy.shape)
X, y = ember.tensor(xy), ember.tensor(labels)

# ---- model: 2 -> HIDDEN -> HIDDEN -> 2, tanh, weights with 1/sqrt(fan_in) scale
ember.manual_seed(SEED)
sizes = [2, HIDDEN, HIDDEN, 2]
params = []
for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
    params += [(ember.randn(fan_in, fan_out) / fan_in ** 0.5).requires_grad_(),
               ember.zeros(fan_out, requires_grad=True)]


def forward(x):
    for i in range(0, len(params), 2):
        x = x @ params[i] + params[i + 1]
        if i < len(params) - 2:
            x = x.tanh()
    return x


# ---- training loop: cross-entropy from logits, plain gradient descent
for step in range(STEPS + 1):
    logits = forward(X)
    loss = -logits.log_softmax(1).gather(1, y.reshape(-1, 1)).mean()
    for p in params:
        p.grad = None
    loss.backward()
    with ember.no_grad():
        for p in params:
            p -= LR * p.grad
    if step % 200 == 0:
        accuracy = (logits.argmax(1) == y).float().mean().item()
        print(f"step {step:4d}  loss {loss.item():.4f}  accuracy {accuracy:.1%}")
