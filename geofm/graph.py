"""Graph container with jraph.GraphsTuple field names (extended by the data layer)."""

from __future__ import annotations

from typing import Any, NamedTuple


class Graph(NamedTuple):
    """A batch of graphs in jraph's layout.

    nodes: [N, ...] node features; edges: [E, ...] or None; senders/receivers: [E] int32;
    globals: [G, ...] or None; n_node/n_edge: [G] int32 counts per graph.
    """

    nodes: Any
    edges: Any
    senders: Any
    receivers: Any
    globals: Any
    n_node: Any
    n_edge: Any
