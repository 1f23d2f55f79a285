"""Graph pictures: DOT text of a known expression, text trees, highlight, files."""

from __future__ import annotations

import re

import numpy as np
import pytest

import ember
from ember.viz import draw_graph, graph_text, retain_grads, save_graph


def _expression():
    x = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
    w = ember.tensor([0.5, -1.0, 2.0], requires_grad=True)
    y = (x * w).sum() + 1.0
    return x, w, y


def _nodes_and_edges(source: str) -> tuple[list[str], list[str]]:
    nodes = re.findall(r"^\s*(\d+) \[label=", source, re.M)
    edges = re.findall(r"^\s*(\d+) -> (\d+)", source, re.M)
    return nodes, edges


def test_dot_of_known_expression_has_expected_nodes_edges_and_labels():
    x, w, y = _expression()
    dot = draw_graph(y, params={"x": x, "w": w})
    nodes, edges = _nodes_and_edges(dot.source)
    assert len(nodes) == 6  # x, w, Mul, Sum, the constant 1.0, Add
    assert len(edges) == 5  # x->Mul, w->Mul, Mul->Sum, Sum->Add, const->Add
    for label in ("x\n3 float32", "w\n3 float32", "Mul\n3 float32", "Sum\nscalar float32",
                  "Add\nscalar float32", "const\nscalar float32"):
        assert f'label="{label}"' in dot.source.replace("\\n", "\n")
    ids = {re.search(rf'(\d+) \[label="{name}', dot.source).group(1): name
           for name in ("x", "w", "Mul", "Sum", "Add")}
    named = {(ids.get(a), ids.get(b)) for a, b in edges}
    assert {("x", "Mul"), ("w", "Mul"), ("Mul", "Sum"), ("Sum", "Add")} <= named  # data flow


def test_show_grad_adds_gradient_norms_after_backward():
    x, w, y = _expression()
    retain_grads(y)
    y.backward()
    source = draw_graph(y, params={"x": x, "w": w}, show_grad=True).source
    assert f"|grad| {np.linalg.norm(w.array):.3g}" in source  # d y / d x = w
    assert source.count("|grad|") == 5  # every node but the constant


def test_highlight_colours_the_path_to_one_parameter():
    x, w, y = _expression()
    source = draw_graph(y, params={"x": x, "w": w}, highlight=w).source
    red_edges = re.findall(r"-> \d+ \[color=red", source)
    assert len(red_edges) == 3  # w->Mul, Mul->Sum, Sum->Add


def test_graph_text_is_an_indented_tree():
    x, w, y = _expression()
    text = graph_text(y, params={"x": x, "w": w})
    assert text.splitlines() == [
        "Add  scalar float32",
        "├─ Sum  scalar float32",
        "│  └─ Mul  3 float32",
        "│     ├─ x  3 float32",
        "│     └─ w  3 float32",
        "└─ const  scalar float32",
    ]


def test_shared_nodes_are_marked_in_text():
    x = ember.tensor(2.0, requires_grad=True)
    a = x * 3.0
    text = graph_text(a * a)
    assert text.count("(shown above)") == 1


def test_deep_graph_needs_no_recursion():
    x = ember.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    assert len(graph_text(y).splitlines()) == 10001


@pytest.mark.parametrize("suffix", ["dot", "svg", "png"])
def test_save_graph_writes_files(tmp_path, suffix):
    _, _, y = _expression()
    path = save_graph(draw_graph(y), tmp_path / f"g.{suffix}")
    data = open(path, "rb").read()
    assert {"dot": b"digraph", "svg": b"<svg", "png": b"\x89PNG"}[suffix] in data[:400]
