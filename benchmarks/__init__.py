"""ember's benchmark suite: ember against PyTorch (CPU) and a hand-written NumPy reference.

Run it with ``python -m benchmarks.run`` (``--quick`` for a ten-second smoke run);
the method and the targets are described in docs/performance.md.
"""

import os

# torch's OpenMP threads busy-wait after each parallel region by default. On a
# machine whose cores are shared with other work that made torch 10-100x slower
# with 2 threads (docs/performance.md), so torch gets the passive policy unless
# the caller chose one. It only takes effect if set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
