"""Build ember/data/sample/mnist_sample.npz: a seeded, class-balanced subset of real MNIST.

Usage (from the repository root):
    python -m tools.make_mnist_sample [MNIST_FOLDER] [--out PATH]
MNIST_FOLDER holds the four original .gz files (default: $EMBER_DATA/mnist or
../shared/datasets/mnist). The files are md5-checked by ember's own reader.

Rule: for each split and each digit c, ``rng.choice`` draws ``PER_CLASS[split]``
indices without replacement from the indices whose label is c, with
``rng = numpy.random.default_rng(SEED)`` shared across the splits in the order
train then test, digits 0..9; the chosen indices of a split are sorted, so the
sample keeps the original file order. Stored: images (uint8), labels (uint8)
and the source indices (uint16) of each split, in a deflate-9 zip (np.load reads it).
"""

from __future__ import annotations

import argparse
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from ember.data.datasets import MNIST

REPO = Path(__file__).resolve().parent.parent

SEED = 20240229
PER_CLASS = {"train": 1000, "test": 200}
DEFAULT_OUT = REPO / "ember" / "data" / "sample" / "mnist_sample.npz"


def default_source() -> Path:
    env = os.environ.get("EMBER_DATA")
    return Path(env) / "mnist" if env else REPO.parent / "shared" / "datasets" / "mnist"


def balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` indices of each label 0..9, drawn without replacement, sorted."""
    chosen = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
              for c in range(10)]
    return np.sort(np.concatenate(chosen))


def build_sample(source: Path) -> dict[str, np.ndarray]:
    """The arrays of the sample file, drawn from the full MNIST in ``source``."""
    rng = np.random.default_rng(SEED)
    arrays = {}
    for split, train in (("train", True), ("test", False)):
        full = MNIST(root=source, train=train)
        idx = balanced_indices(full.labels, PER_CLASS[split], rng)
        arrays[f"{split}_images"] = full.images[idx]
        arrays[f"{split}_labels"] = full.labels[idx].astype(np.uint8)
        arrays[f"{split}_indices"] = idx.astype(np.uint16)
    return arrays


def write_npz(arrays: dict[str, np.ndarray], out: Path) -> None:
    """np.savez_compressed's format at the highest deflate level, written atomically."""
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, buffer.getvalue(), zipfile.ZIP_DEFLATED, compresslevel=9)
    os.replace(tmp, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=default_source())
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    arrays = build_sample(args.source)
    write_npz(arrays, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): "
          + ", ".join(f"{k} {v.shape}" for k, v in arrays.items()))


if __name__ == "__main__":
    main()
