"""The toy demos in examples/: each runs in a subprocess into tmp_path, writes its PNGs
(at least 10 KB, not blank) and prints the numbers it promises."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_example(name: str, out: pathlib.Path) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH")] if p)
    env["OPENBLAS_NUM_THREADS"] = "1"  # toy-sized matmuls: BLAS threads only add overhead
    done = subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), "--out",
                           str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_pngs(out: pathlib.Path, names: list[str]) -> None:
    for name in names:
        path = out / name
        assert path.stat().st_size >= 10_000, f"{name}: {path.stat().st_size} bytes"
        assert imread(path)[..., :3].var() > 1e-3, f"{name} looks blank"


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in the output:\n{text}"
    return float(match.group(1))


def test_logic_gates(tmp_path):
    out = run_example("logic_gates", tmp_path)
    assert_pngs(tmp_path, ["logic_gates.png", "xor.png", "xor_loss.png"])
    assert number(r"XOR\s+final loss ([\d.e-]+)", out) < 0.01
    for gate in ["XOR", "AND", "OR", "NAND", "NOR"]:
        assert re.search(rf"^{gate}\s.*separates the four points: True$", out, re.M), out


def test_regression(tmp_path):
    out = run_example("regression", tmp_path)
    assert_pngs(tmp_path, ["linear_regression.png", "logistic_regression.png",
                           "polynomial_regression.png", "regression_losses.png"])
    assert number(r"linear:\s+w ([\d.-]+)", out) == pytest.approx(2.0, abs=0.1)
    assert number(r"linear:.*?b ([\d.-]+)", out) == pytest.approx(1.0, abs=0.1)
    # gradient descent lands on the closed-form least-squares solution
    assert number(r"linear:.*max difference ([\d.e+-]+)", out) < 1e-3
    assert number(r"polynomial:.*max difference ([\d.e+-]+)", out) < 1e-3
    assert number(r"logistic:\s+accuracy ([\d.]+)", out) > 0.9


def test_universal_approximation(tmp_path):
    out = run_example("universal_approximation", tmp_path)
    assert_pngs(tmp_path, ["universal_approximation.png", "universal_approximation_loss.png"])
    assert number(r"sin\s+final MSE ([\d.e+-]+)", out) < 1e-3
    assert number(r"abs\s+final MSE ([\d.e+-]+)", out) < 1e-3
    assert number(r"step\s+final MSE ([\d.e+-]+)", out) < 0.02


@pytest.mark.skipif(shutil.which("dot") is None and os.environ.get("CI") != "true",
                    reason="Graphviz's dot is not installed")
def test_graph(tmp_path):
    out = run_example("graph", tmp_path)
    assert_pngs(tmp_path, ["graph.png", "graph_highlight.png"])
    assert b"<svg" in (tmp_path / "graph.svg").read_bytes()[:500]
    assert number(r"\|grad 0.weight\| = ([\d.]+)", out) > 0
    for node in ["Sigmoid  4×4 float32", "0.weight  4×2 float32", "2.bias  1 float32"]:
        assert node in out  # the graph_text tree


def test_nan_hunt(tmp_path):
    out = run_example("nan_hunt", tmp_path)
    assert_pngs(tmp_path, ["nan_hunt.png"])
    source = (ROOT / "examples" / "nan_hunt.py").read_text().splitlines()
    line = next(i for i, text in enumerate(source, 1) if "h / rms" in text)
    assert "Div produced NaN in its forward output" in out
    assert f"nan_hunt.py:{line}" in out  # the line with the planted 0 / 0
    assert "nan at step 37" in out
    assert "all finite: True" in out
