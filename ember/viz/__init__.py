"""See inside: computational-graph pictures (and, later, training plots)."""

from ember.viz.graph import draw_graph, graph_nodes, graph_text, retain_grads, save_graph
from ember.viz.plots import (confusion_matrix, plot_confusion_matrix, plot_decision_boundary,
                             plot_filters, plot_history, plot_samples, save_figure)

__all__ = ["draw_graph", "graph_nodes", "graph_text", "retain_grads", "save_graph",
           "plot_history", "plot_decision_boundary", "plot_filters", "plot_samples",
           "plot_confusion_matrix", "confusion_matrix", "save_figure"]
