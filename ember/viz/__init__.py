"""See inside: computational-graph pictures (and, later, training plots)."""

from ember.viz.graph import draw_graph, graph_nodes, graph_text, retain_grads, save_graph

__all__ = ["draw_graph", "graph_nodes", "graph_text", "retain_grads", "save_graph"]
