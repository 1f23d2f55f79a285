"""Pictures of the computational graph: Graphviz (``draw_graph``) and plain text
(``graph_text``).

Vertices are tensors: a leaf (a parameter, an input, a constant) or the output
of an op, labelled with the op's name, shape and dtype. Edges run in data-flow
direction, from an op's inputs to the op.
"""

from __future__ import annotations

import os
from typing import Any

from ember.backend import xp
from ember.tensor import Tensor

__all__ = ["graph_nodes", "draw_graph", "graph_text", "retain_grads", "save_graph"]


def graph_nodes(root: Tensor) -> list[Tensor]:
    """Every tensor the graph of ``root`` reaches, inputs before the ops using them
    (iterative, so deep graphs need no recursion)."""
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack += [(p, False) for p in _inputs(node) if id(p) not in seen]
    return order


def _inputs(t: Tensor) -> tuple:
    return tuple(t.grad_fn.parents) if t.grad_fn is not None else ()


def retain_grads(root: Tensor) -> None:
    """Keep ``.grad`` on every op output of the graph during the next backward,
    so ``draw_graph(..., show_grad=True)`` can show a norm at every node."""
    for t in graph_nodes(root):
        if t.grad_fn is not None:
            t.retain_grad()


def _names(params: Any) -> dict[int, str]:
    if params is None:
        return {}
    items = params.items() if isinstance(params, dict) else params
    return {id(p): name for name, p in items}


def _label(t: Tensor, names: dict[int, str], show_grad: bool) -> str:
    shape = "×".join(str(n) for n in t.shape) or "scalar"
    dtype = str(t.dtype)
    if t.grad_fn is not None:
        title = t.grad_fn.name
    else:
        title = names.get(id(t), "input" if t.requires_grad else "const")
    lines = [title, f"{shape} {dtype}"]
    if show_grad and t.grad is not None:
        lines.append(f"|grad| {float(xp.linalg.norm(t.grad.array)):.3g}")
    return "\n".join(lines)


def _on_path(order: list[Tensor], target: Any) -> set[int]:
    """Tensors from which ``target`` can be reached (the path to highlight)."""
    if target is None:
        return set()
    reach: set[int] = set()
    for t in order:
        if t is target or any(id(p) in reach for p in _inputs(t)):
            reach.add(id(t))
    return reach


def draw_graph(tensor: Tensor, params: Any = None, show_grad: bool = False,
               highlight: Tensor | None = None) -> Any:
    """The graph that produced ``tensor`` as a ``graphviz.Digraph``.

    params: ``model.named_parameters()`` (or a dict) to name the leaves.
    show_grad: after backward, add each node's gradient norm (op outputs need
    ``retain_grads(tensor)`` before backward). highlight: a parameter whose path
    to the output is coloured.

    >>> x = ember.tensor([1.0, 2.0], requires_grad=True)
    >>> dot = ember.viz.draw_graph((x * x).sum())
    >>> save_graph(dot, "graph.svg")
    """
    import graphviz

    names = _names(params)
    order = graph_nodes(tensor)
    path = _on_path(order, highlight)
    dot = graphviz.Digraph("ember", graph_attr={"rankdir": "TB"},
                           node_attr={"fontname": "Helvetica", "fontsize": "10"})
    for t in order:
        style = _style(t, id(t) in path)
        dot.node(str(id(t)), _label(t, names, show_grad), **style)
        for p in _inputs(t):
            hot = id(p) in path and id(t) in path
            dot.edge(str(id(p)), str(id(t)), **({"color": "red", "penwidth": "2"} if hot else {}))
    return dot


def _style(t: Tensor, hot: bool) -> dict:
    if t.grad_fn is not None:
        style = {"shape": "box", "style": "rounded,filled", "fillcolor": "lightblue"}
    elif t.requires_grad:
        style = {"shape": "ellipse", "style": "filled", "fillcolor": "lightyellow"}
    else:
        style = {"shape": "ellipse", "style": "filled", "fillcolor": "grey92"}
    if hot:
        style.update(color="red", penwidth="2")
    return style


def save_graph(dot: Any, path: str | os.PathLike) -> str:
    """Write a Digraph as .dot (text), .svg or .png, chosen by the suffix."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    if suffix in ("dot", "gv"):
        data = dot.source.encode()
    elif suffix in ("svg", "png", "pdf"):
        data = dot.pipe(format=suffix)
    else:
        raise ValueError(f"save_graph: unknown format {suffix!r}; use .dot, .svg, .png or .pdf")
    from ember.serialize import atomic_write
    atomic_write(path, data)
    return path


def graph_text(tensor: Tensor, params: Any = None) -> str:
    """The graph as an indented tree, output first; needs no Graphviz.

    A tensor reached a second time (the graph is a DAG) is marked ``(shown above)``.
    """
    names = _names(params)
    lines: list[str] = []
    shown: set[int] = set()
    stack: list[tuple[Tensor, str, str]] = [(tensor, "", "")]
    while stack:
        t, lead, branch = stack.pop()
        label = _label(t, names, show_grad=False).replace("\n", "  ")
        again = id(t) in shown
        lines.append(f"{lead}{branch}{label}{'  (shown above)' if again else ''}")
        if again:
            continue
        shown.add(id(t))
        inputs = _inputs(t)
        child_lead = lead + ("   " if branch.startswith("└") else "│  " if branch else "")
        for i, p in reversed(list(enumerate(inputs))):
            stack.append((p, child_lead, "└─ " if i == len(inputs) - 1 else "├─ "))
    return "\n".join(lines)

