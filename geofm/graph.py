"""Graph container (jraph.GraphsTuple field names), batching, padding, masks, edge helpers.

Layout (jraph's): a `Graph` holds one or many graphs concatenated along the node and
edge axes. `n_node[g]` / `n_edge[g]` count the nodes / edges of graph g; edge endpoints
`senders[e] -> receivers[e]` are global node indices into `nodes`.

Padding follows jraph: `pad_graph` appends ONE padding graph that owns every padded
node and padded edge; padded edges point from and to the first padded node, and any
further padded graphs are empty. The mask helpers therefore assume the LAST graph of a
padded batch is the padding graph (exactly like `jraph.get_*_padding_mask`).

`pad_to_bucket` rounds (nodes + 1, edges, graphs + 1) up to the next size in a short
geometric ladder, so a training run compiles once per bucket, not once per batch.
`node_graph_index` / `graph_pool` give per-node graph ids and sum/mean/max readouts.

Edge-index helpers (`symmetrize`, `add_self_loops`, `remove_self_loops`, `coalesce`)
work on host numpy arrays of shape [2, E] (row 0 = source, row 1 = destination).

`CSR` / `build_csr` precompute, once per graph on the host, the receiver-sorted and
sender-sorted ("transposed") edge orders plus the chunked layout the kernels in
`geofm.ops` use, so that neither the forward nor the backward pass scatters per edge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Graph",
    "batch",
    "unbatch",
    "pad_graph",
    "pad_to_bucket",
    "bucket_sizes",
    "next_bucket",
    "node_mask",
    "edge_mask",
    "graph_mask",
    "node_graph_index",
    "graph_pool",
    "symmetrize",
    "add_self_loops",
    "remove_self_loops",
    "coalesce",
    "ChunkPlan",
    "CSR",
    "build_csr",
    "csr_from_graph",
    "to_jraph",
    "from_jraph",
]


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


# --------------------------------------------------------------------------- batching


def _num_nodes(g: Graph) -> int:
    return int(np.sum(np.asarray(g.n_node)))


def _check_graph(g: Graph, where: str = "graph") -> None:
    """Validate a host graph's counts and endpoints; ValueError names the field."""
    n_node = np.asarray(g.n_node)
    n_edge = np.asarray(g.n_edge)
    if n_node.ndim != 1 or n_edge.ndim != 1 or n_node.shape != n_edge.shape:
        raise ValueError(f"{where}: n_node and n_edge must be 1-D with the same length, "
                         f"got shapes {n_node.shape} and {n_edge.shape}")
    s, r = np.asarray(g.senders), np.asarray(g.receivers)
    if s.shape != r.shape or s.ndim != 1:
        raise ValueError(f"{where}: senders/receivers must be 1-D of equal length, "
                         f"got {s.shape} and {r.shape}")
    if int(n_edge.sum()) != s.shape[0]:
        raise ValueError(f"{where}: sum(n_edge)={int(n_edge.sum())} but {s.shape[0]} edges")
    n = int(n_node.sum())
    if g.nodes is not None and np.shape(g.nodes)[0] != n:
        raise ValueError(f"{where}: nodes has {np.shape(g.nodes)[0]} rows, sum(n_node)={n}")
    if s.size and (min(s.min(), r.min()) < 0 or max(s.max(), r.max()) >= n):
        raise ValueError(f"{where}: edge endpoint out of range [0, {n})")


def _concat(parts: list[Any]) -> Any:
    if all(p is None for p in parts):
        return None
    if any(p is None for p in parts):
        raise ValueError("batch: a field is None in some graphs but not in others")
    return np.concatenate([np.asarray(p) for p in parts], axis=0)


def batch(graphs: Sequence[Graph]) -> Graph:
    """Concatenate graphs (host numpy) into one `Graph`; node ids are offset per graph.

    Each input may itself hold several graphs. Feature fields must be all None or all
    arrays with matching trailing shapes.
    """
    if len(graphs) == 0:
        raise ValueError("batch: need at least one graph")
    offsets = np.cumsum([0] + [_num_nodes(g) for g in graphs[:-1]])
    for i, g in enumerate(graphs):
        _check_graph(g, f"batch: graph {i}")
    senders = np.concatenate([np.asarray(g.senders, np.int32) + o for g, o in zip(graphs, offsets)])
    receivers = np.concatenate(
        [np.asarray(g.receivers, np.int32) + o for g, o in zip(graphs, offsets)])
    return Graph(
        nodes=_concat([g.nodes for g in graphs]),
        edges=_concat([g.edges for g in graphs]),
        senders=senders.astype(np.int32),
        receivers=receivers.astype(np.int32),
        globals=_concat([g.globals for g in graphs]),
        n_node=np.concatenate([np.asarray(g.n_node, np.int32) for g in graphs]),
        n_edge=np.concatenate([np.asarray(g.n_edge, np.int32) for g in graphs]),
    )


def unbatch(g: Graph) -> list[Graph]:
    """Split a batched `Graph` (host) into one `Graph` per entry of n_node (inverse of batch)."""
    n_node = np.asarray(g.n_node, np.int64)
    n_edge = np.asarray(g.n_edge, np.int64)
    node_off = np.concatenate([[0], np.cumsum(n_node)])
    edge_off = np.concatenate([[0], np.cumsum(n_edge)])
    out = []
    for i in range(len(n_node)):
        ns, ne = slice(node_off[i], node_off[i + 1]), slice(edge_off[i], edge_off[i + 1])
        out.append(Graph(
            nodes=None if g.nodes is None else np.asarray(g.nodes)[ns],
            edges=None if g.edges is None else np.asarray(g.edges)[ne],
            senders=(np.asarray(g.senders)[ne] - node_off[i]).astype(np.int32),
            receivers=(np.asarray(g.receivers)[ne] - node_off[i]).astype(np.int32),
            globals=None if g.globals is None else np.asarray(g.globals)[i:i + 1],
            n_node=n_node[i:i + 1].astype(np.int32),
            n_edge=n_edge[i:i + 1].astype(np.int32),
        ))
    return out


# --------------------------------------------------------------------------- padding


def next_bucket(n: int, *, minimum: int = 8, growth: int = 2) -> int:
    """Smallest size `minimum * growth**j >= n` (j >= 0): the bucket ladder for padding."""
    if n < 0:
        raise ValueError(f"next_bucket: n must be >= 0, got {n}")
    if minimum < 1 or growth < 2:
        raise ValueError(f"next_bucket: need minimum >= 1 and growth >= 2, got {minimum}, {growth}")
    size = minimum
    while size < n:
        size *= growth
    return size


def bucket_sizes(num_nodes: int, num_edges: int, num_graphs: int = 1, *,
                 minimum: int = 8, growth: int = 2) -> tuple[int, int, int]:
    """Padded (nodes, edges, graphs) for a batch of this size.

    Reserves one padding node and one padding graph (jraph's convention), so the result
    satisfies nodes > num_nodes, graphs > num_graphs, edges >= num_edges. Every batch
    whose counts fall in the same bucket gets identical shapes: one compilation each.
    """
    return (next_bucket(num_nodes + 1, minimum=minimum, growth=growth),
            next_bucket(num_edges, minimum=minimum, growth=growth),
            next_bucket(num_graphs + 1, minimum=2, growth=growth))


def _pad_rows(x: Any, total: int) -> Any:
    if x is None:
        return None
    x = np.asarray(x)
    pad = np.zeros((total - x.shape[0],) + x.shape[1:], x.dtype)
    return np.concatenate([x, pad], axis=0)


def pad_graph(g: Graph, *, n_node: int, n_edge: int, n_graph: int) -> Graph:
    """Pad a host `Graph` to exactly n_node nodes, n_edge edges, n_graph graphs.

    One padding graph (index = number of real graphs) receives all padded nodes and
    edges; padded edges point from and to the first padded node; padded features are 0.
    Requires n_node > nodes, n_edge >= edges, n_graph > graphs.
    """
    _check_graph(g, "pad_graph")
    nn_, ne_, ng_ = _num_nodes(g), len(np.asarray(g.senders)), len(np.asarray(g.n_node))
    if n_node < nn_ + 1 or n_edge < ne_ or n_graph < ng_ + 1:
        raise ValueError(
            f"pad_graph: target (n_node={n_node}, n_edge={n_edge}, n_graph={n_graph}) too "
            f"small for a graph with {nn_} nodes, {ne_} edges, {ng_} graphs "
            "(need one spare node and one spare graph)")
    pad_node = np.int32(nn_)
    counts_n = np.zeros(n_graph, np.int32)
    counts_e = np.zeros(n_graph, np.int32)
    counts_n[:ng_] = np.asarray(g.n_node)
    counts_e[:ng_] = np.asarray(g.n_edge)
    counts_n[ng_] = n_node - nn_
    counts_e[ng_] = n_edge - ne_
    fill = np.full(n_edge - ne_, pad_node, np.int32)
    return Graph(
        nodes=_pad_rows(g.nodes, n_node),
        edges=_pad_rows(g.edges, n_edge),
        senders=np.concatenate([np.asarray(g.senders, np.int32), fill]),
        receivers=np.concatenate([np.asarray(g.receivers, np.int32), fill]),
        globals=_pad_rows(g.globals, n_graph),
        n_node=counts_n,
        n_edge=counts_e,
    )


def pad_to_bucket(g: Graph, *, minimum: int = 8, growth: int = 2) -> Graph:
    """Pad a host `Graph` to the bucket `bucket_sizes` picks for it (see module doc)."""
    n_node, n_edge, n_graph = bucket_sizes(
        _num_nodes(g), len(np.asarray(g.senders)), len(np.asarray(g.n_node)),
        minimum=minimum, growth=growth)
    return pad_graph(g, n_node=n_node, n_edge=n_edge, n_graph=n_graph)


def _num_padding_graphs(n_node: Any) -> jax.Array:
    """jraph's rule: the padding graph has >= 1 node and only empty graphs follow it."""
    n_node = jnp.asarray(n_node)
    return jnp.argmin(n_node[::-1] == 0) + 1


def _static_len(nodes: Any, n_node: Any) -> int:
    """Number of node rows: nodes.shape[0], else sum(n_node) (needs concrete n_node)."""
    if nodes is not None:
        return int(jnp.shape(nodes)[0])
    return int(np.sum(np.asarray(n_node)))


def node_mask(g: Graph) -> jax.Array:
    """[N] bool, False on the padding graph's nodes (`pad_graph` / jraph convention). jit-safe."""
    total = _static_len(g.nodes, g.n_node)
    pad = jnp.asarray(g.n_node)[-_num_padding_graphs(g.n_node)]
    return jnp.arange(total) < total - pad


def edge_mask(g: Graph) -> jax.Array:
    """[E] bool, False on the padding graph's edges (`pad_graph` / jraph convention). jit-safe."""
    total = int(jnp.shape(g.senders)[0])
    pad = jnp.asarray(g.n_edge)[-_num_padding_graphs(g.n_node)]
    return jnp.arange(total) < total - pad


def graph_mask(g: Graph) -> jax.Array:
    """[G] bool, False on the padding graph and the empty graphs after it. jit-safe."""
    total = int(jnp.shape(g.n_node)[0])
    return jnp.arange(total) < total - _num_padding_graphs(g.n_node)


def node_graph_index(g: Graph) -> jax.Array:
    """[N] int32 index of the graph each node belongs to (jit-safe: N is static)."""
    total = _static_len(g.nodes, g.n_node)
    n_node = jnp.asarray(g.n_node)
    return jnp.repeat(jnp.arange(n_node.shape[0], dtype=jnp.int32), n_node,
                      total_repeat_length=total)


def graph_pool(x: jax.Array, g: Graph, *, mode: str = "mean") -> jax.Array:
    """Readout per graph: x [N, ...] -> [G, ...] by "sum", "mean" or "max" over its nodes.

    Empty graphs (and the empty trailing padding graphs) get 0. The padding graph's
    own row pools the padded nodes; mask it with `graph_mask`.
    """
    if mode not in ("sum", "mean", "max"):
        raise ValueError(f"graph_pool: mode must be 'sum', 'mean' or 'max', got {mode!r}")
    seg = node_graph_index(g)
    n_graph = int(jnp.shape(g.n_node)[0])
    counts = jnp.asarray(g.n_node).reshape((-1,) + (1,) * (x.ndim - 1))
    if mode == "max":
        out = jax.ops.segment_max(x, seg, n_graph, indices_are_sorted=True)
        return jnp.where(counts > 0, out, jnp.zeros((), x.dtype))
    out = jax.ops.segment_sum(x, seg, n_graph, indices_are_sorted=True)
    if mode == "mean":
        out = out / jnp.maximum(counts, 1).astype(x.dtype)
    return out


# --------------------------------------------------------------------------- edge index


def _as_edge_index(edge_index: Any, num_nodes: int | None, where: str) -> np.ndarray:
    ei = np.asarray(edge_index)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"{where}: edge_index must have shape [2, E], got {ei.shape}")
    if ei.size and not np.issubdtype(ei.dtype, np.integer):
        raise ValueError(f"{where}: edge_index must be integer, got {ei.dtype}")
    if ei.size and ei.min() < 0:
        raise ValueError(f"{where}: negative node id {int(ei.min())} in edge_index")
    if num_nodes is not None and ei.size and ei.max() >= num_nodes:
        raise ValueError(f"{where}: node id {int(ei.max())} out of range for {num_nodes} nodes")
    return ei.astype(np.int64)


def sorted_unique(x: np.ndarray, *, return_counts: bool = False):
    """Sorted unique values of a 1-D int array (and their counts), via sort + mask.

    numpy 2.x's hash-based `np.unique` is ~100x slower than sorting on large
    int64 arrays, so host-side graph code uses this instead.
    """
    s = np.sort(np.asarray(x), kind="stable")
    first = np.r_[True, s[1:] != s[:-1]] if s.size else np.zeros(0, dtype=bool)
    if not return_counts:
        return s[first]
    starts = np.flatnonzero(first)
    return s[first], np.diff(np.r_[starts, s.size])


def coalesce(edge_index: Any, num_nodes: int | None = None) -> np.ndarray:
    """Sort edges by (source, destination) and drop duplicates. [2, E] -> [2, E'] int32."""
    ei = _as_edge_index(edge_index, num_nodes, "coalesce")
    if ei.shape[1] == 0:
        return ei.astype(np.int32)
    n = int(ei.max()) + 1
    keys = sorted_unique(ei[0] * n + ei[1])
    return np.stack([keys // n, keys % n]).astype(np.int32)


def symmetrize(edge_index: Any, num_nodes: int | None = None) -> np.ndarray:
    """Add every reverse edge, then coalesce. [2, E] -> [2, E'] int32."""
    ei = _as_edge_index(edge_index, num_nodes, "symmetrize")
    return coalesce(np.concatenate([ei, ei[::-1]], axis=1))


def remove_self_loops(edge_index: Any) -> np.ndarray:
    """Drop edges (i, i), keeping order. [2, E] -> [2, E'] int32."""
    ei = _as_edge_index(edge_index, None, "remove_self_loops")
    return ei[:, ei[0] != ei[1]].astype(np.int32)


def add_self_loops(edge_index: Any, num_nodes: int) -> np.ndarray:
    """Append (i, i) for every node in [0, num_nodes) that has no self-loop yet.

    [2, E] -> [2, E + (#nodes without a loop)] int32; existing edges keep their order.
    """
    ei = _as_edge_index(edge_index, num_nodes, "add_self_loops")
    has_loop = np.zeros(num_nodes, bool)
    has_loop[ei[0, ei[0] == ei[1]]] = True
    new = np.flatnonzero(~has_loop)
    return np.concatenate([ei, np.stack([new, new])], axis=1).astype(np.int32)


# --------------------------------------------------------------------------- CSR


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """Edges of one direction grouped by output row into fixed-width chunks.

    Row i's incoming edges (in sorted order) are cut into ceil(deg_i / C) chunks of C
    slots; chunk m covers slots `idx[:, m]`. Aggregation = a dense reduction over the C
    slots of each chunk (a fused gather, no [E, d] intermediate) followed by a sorted
    segment sum over chunks (about E / C + N rows, not E).

    idx:  [C, M] int32 source row per slot (0 on empty slots);
    edge: [C, M] int32 original edge id per slot (num_edges on empty slots);
    row:  [M] int32 output row per chunk, non-decreasing; num_rows on padding chunks.
    """

    idx: jax.Array
    edge: jax.Array
    row: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CSR:
    """Host-precomputed sparse structure of a graph, built once by `build_csr`.

    Pass it as an ARGUMENT to jitted functions (its int fields are static metadata).
    senders/receivers: [E] int32 original endpoints; mask: [E] bool (False = padded
    edge, ignored everywhere); offsets: [N+1] int32 row offsets of the receiver-sorted
    order `perm` ([E] int32 edge ids, masked edges last); t_offsets / t_perm: the same for
    the sender-sorted (transposed) order; in_degree / out_degree: [N] float32 counts of
    unmasked edges; fwd: chunks grouped by receiver (aggregation), bwd: chunks grouped by
    sender (the transpose, used by backward passes).
    """

    senders: jax.Array
    receivers: jax.Array
    mask: jax.Array
    offsets: jax.Array
    perm: jax.Array
    t_offsets: jax.Array
    t_perm: jax.Array
    in_degree: jax.Array
    out_degree: jax.Array
    fwd: ChunkPlan
    bwd: ChunkPlan
    num_nodes: int = dataclasses.field(metadata=dict(static=True))
    num_edges: int = dataclasses.field(metadata=dict(static=True))
    chunk: int = dataclasses.field(metadata=dict(static=True))


def _sorted_order(rows: np.ndarray, mask: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable order of edges by row (masked edges last) and row offsets [n+1]."""
    key = np.where(mask, rows, n)
    perm = np.argsort(key, kind="stable")
    counts = np.bincount(rows[mask], minlength=n)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return perm.astype(np.int32), offsets.astype(np.int32)


def _chunk_plan(rows: np.ndarray, cols: np.ndarray, perm: np.ndarray, offsets: np.ndarray,
                n: int, num_edges: int, chunk: int, static: bool) -> ChunkPlan:
    """Cut each row's edges (in `perm` order) into chunks of `chunk` slots (see ChunkPlan)."""
    deg = np.diff(offsets).astype(np.int64)
    e_real = int(offsets[-1])
    nch = (deg + chunk - 1) // chunk
    ch_off = np.concatenate([[0], np.cumsum(nch)])
    m_real = int(ch_off[-1])
    # Static capacity: each non-empty row wastes < 1 chunk, so M <= E/C + min(N, E).
    m = (-(-num_edges // chunk) + min(n, num_edges)) if static else m_real
    m = max(m, 1)
    order = perm[:e_real]
    r_sorted = rows[order].astype(np.int64)
    pos = np.arange(e_real) - offsets[r_sorted]
    ch = ch_off[r_sorted] + pos // chunk
    lane = pos % chunk
    idx = np.zeros((chunk, m), np.int32)
    edge = np.full((chunk, m), num_edges, np.int32)
    idx[lane, ch] = cols[order]
    edge[lane, ch] = order
    row = np.full(m, n, np.int32)
    row[:m_real] = np.repeat(np.arange(n, dtype=np.int32), nch)
    return ChunkPlan(idx=jnp.asarray(idx), edge=jnp.asarray(edge), row=jnp.asarray(row))


def build_csr(senders: Any, receivers: Any, num_nodes: int, *, edge_mask: Any = None,
              chunk: int = 8, static_shapes: bool = True) -> CSR:
    """Precompute a `CSR` (host numpy, O(E log E)) for the kernels in `geofm.ops`.

    senders/receivers: [E] ints in [0, num_nodes); edge_mask: optional [E] bool, False
    edges are ignored (padding). chunk: slots per chunk (8 suits average degrees ~4-30).
    static_shapes=True sizes the chunk arrays from (num_nodes, E, chunk) only, so every
    graph padded to the same bucket gets identical shapes (one compilation); False sizes
    them exactly (slightly faster for one big fixed graph).
    """
    s = np.asarray(senders)
    r = np.asarray(receivers)
    if s.ndim != 1 or r.shape != s.shape:
        raise ValueError(f"build_csr: senders/receivers must be 1-D of equal length, "
                         f"got {s.shape} and {r.shape}")
    if chunk < 1:
        raise ValueError(f"build_csr: chunk must be >= 1, got {chunk}")
    e = s.shape[0]
    mask = np.ones(e, bool) if edge_mask is None else np.asarray(edge_mask, bool)
    if mask.shape != (e,):
        raise ValueError(f"build_csr: edge_mask must have shape ({e},), got {mask.shape}")
    if e and (min(s.min(), r.min()) < 0 or max(s.max(), r.max()) >= num_nodes):
        raise ValueError(f"build_csr: edge endpoint out of range [0, {num_nodes})")
    s = s.astype(np.int32)
    r = r.astype(np.int32)
    perm, offsets = _sorted_order(r, mask, num_nodes)
    t_perm, t_offsets = _sorted_order(s, mask, num_nodes)
    return CSR(
        senders=jnp.asarray(s), receivers=jnp.asarray(r), mask=jnp.asarray(mask),
        offsets=jnp.asarray(offsets), perm=jnp.asarray(perm),
        t_offsets=jnp.asarray(t_offsets), t_perm=jnp.asarray(t_perm),
        in_degree=jnp.asarray(np.diff(offsets).astype(np.float32)),
        out_degree=jnp.asarray(np.diff(t_offsets).astype(np.float32)),
        fwd=_chunk_plan(r, s, perm, offsets, num_nodes, e, chunk, static_shapes),
        bwd=_chunk_plan(s, r, t_perm, t_offsets, num_nodes, e, chunk, static_shapes),
        num_nodes=int(num_nodes), num_edges=int(e), chunk=int(chunk),
    )


def csr_from_graph(g: Graph, *, padded: bool = False, chunk: int = 8,
                   static_shapes: bool = True) -> CSR:
    """`build_csr` for a host `Graph`; padded=True masks the padding graph's edges."""
    n = _static_len(g.nodes, g.n_node)
    mask = np.asarray(edge_mask(g)) if padded else None
    return build_csr(g.senders, g.receivers, n, edge_mask=mask, chunk=chunk,
                     static_shapes=static_shapes)


# --------------------------------------------------------------------------- jraph


def to_jraph(g: Graph) -> Any:
    """Convert to `jraph.GraphsTuple` (requires the optional `jraph` package)."""
    try:
        import jraph
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("to_jraph needs the optional 'jraph' package "
                          "(pip install 'geofm[interop]')") from err
    return jraph.GraphsTuple(nodes=g.nodes, edges=g.edges, senders=g.senders,
                             receivers=g.receivers, globals=g.globals,
                             n_node=g.n_node, n_edge=g.n_edge)


def from_jraph(gt: Any) -> Graph:
    """Convert any object with jraph.GraphsTuple's fields into a `Graph`."""
    return Graph(nodes=gt.nodes, edges=gt.edges, senders=gt.senders, receivers=gt.receivers,
                 globals=gt.globals, n_node=gt.n_node, n_edge=gt.n_edge)
