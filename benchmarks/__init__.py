"""ember's benchmark suite: ember against PyTorch (CPU) and a hand-written NumPy reference.

Run it with ``python -m benchmarks.run`` (``--quick`` for a ten-second smoke run);
the method and the targets are described in docs/performance.md.
"""

# torch runs with its own OpenMP defaults, as its users get it. Sessions 2-5 set
# OMP_WAIT_POLICY=PASSIVE here (torch's threads then sleep after every parallel
# region); session 6 measured that this made torch's seed-MLP step at batch 10 2-3x
# slower (1.4-1.7 vs 0.5-0.9 ms), LeNet-5's 1.5-2x (10-12 vs 5-8 ms) and the CIFAR
# CNN's ~5%, flattering every ember/torch ratio (docs/performance.md, section 12).
# Set the variable yourself to choose a policy; run.py reports it in the header.
