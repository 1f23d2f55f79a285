"""Probe (session 27): is ember's one-epoch float32 CIFAR accuracy lower than torch's?

The benchmark's CIFAR CNN trains one epoch, and a one-epoch float32 run is chaotic: any
change in the order of float32 sums moves the final test accuracy by a point or more.
So one run of each framework says little, and the benchmark's three float32 variants a
side are few. This probe draws more samples of both: start ``k`` is torch's
initialisation with every weight nudged by one ulp up, down or not at all (a seeded
random choice per weight), and both frameworks train one epoch from that same start on
the same batches as the benchmark. It prints one JSON line per start, then the two
means, their difference and Welch's t statistic.

    python -m benchmarks.probes.cifar_accuracy [first_start] [count] --data DIR

Numbers and what they settled: docs/performance.md, section 33.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from benchmarks import measure
from benchmarks.training import CASES, EmberRunner, TorchRunner, data_root, load_data, \
    nudged_start

SCHEDULE = [(999, 2), (1000, 3), (1001, None)]  # the benchmark's: set-up, warm-up, epoch


def welch_t(a: list[float], b: list[float]) -> float:
    """Welch's t statistic of ``mean(a) - mean(b)``."""
    se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    return (np.mean(a) - np.mean(b)) / se


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=int, nargs="?", default=1)
    parser.add_argument("count", type=int, nargs="?", default=8)
    parser.add_argument("--data", help="folder holding cifar-10/ (default: $EMBER_DATA)")
    args = parser.parse_args()
    measure.limit_threads(2)
    case = next(c for c in CASES if c.key == "cifar_cnn_b128")
    data = load_data("cifar10", data_root(args.data), None, None)
    x_test = data.test_inputs()
    accuracies: dict = {"ember": [], "torch": []}
    for k in range(args.first, args.first + args.count):
        model = nudged_start(case, k)
        runners = [EmberRunner(case, data, model), TorchRunner(case, data, model)]  # copies first
        row: dict = {"start": k}
        for runner in runners:
            began = time.perf_counter()
            for seed, limit in SCHEDULE:
                runner.train_epoch(seed, limit)
            accuracy = float(np.mean(runner.predict(x_test) == data.test_labels))
            accuracies[runner.name].append(accuracy)
            row[runner.name], row[f"{runner.name} s"] = accuracy, round(
                time.perf_counter() - began, 1)
        print(json.dumps(row), flush=True)
    e, t = accuracies["ember"], accuracies["torch"]
    if len(e) > 1:
        print(f"ember mean {np.mean(e):.4f} (sd {np.std(e, ddof=1):.4f}), torch mean "
              f"{np.mean(t):.4f} (sd {np.std(t, ddof=1):.4f}), difference "
              f"{np.mean(e) - np.mean(t):+.4f}, Welch t {welch_t(e, t):+.2f}")


if __name__ == "__main__":
    main()
