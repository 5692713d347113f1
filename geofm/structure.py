"""Local structural descriptors of a graph: the inputs of curvature-adaptive gates.

Everything here runs on the host in vectorised numpy / scipy.sparse. Graphs are
treated as simple and undirected: the input ``edge_index`` [2, E] is
symmetrised, self-loops and duplicate edges are dropped.

Curvature sign convention (as everywhere in geofm): negative = hyperbolic /
tree-like (edges are bridges between diverging neighbourhoods), positive =
spherical / clique-like (neighbourhoods overlap), zero = flat.

Per-edge quantities are returned for the *undirected* edge list
``undirected_edges(edge_index, num_nodes)`` ([2, M] int64, rows ``u < v``,
sorted lexicographically), and are aggregated to nodes by the mean over the
incident edges (0 for isolated nodes).

Costs, with N nodes, M undirected edges, d_v degrees:
- degree, Forman, Jost-Liu: O(M) once the per-edge triangle counts are known.
- triangle counts, clustering, 4-cycles and the 2-hop ball (one chunked pass
  over the rows of A @ A): O(sum_v d_v^2) time, memory bounded per chunk.
- Ollivier lower bound (balanced Forman): O(M + sum_e min(cap, d_u d_v) log M).
- growth beyond 2 hops: O(sum_v |B_{h-1}(v)| * mean degree) (BFS by rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from geofm.graph import sorted_unique

DESCRIPTOR_NAMES: tuple[str, ...] = (
    "degree",  # d_v
    "log_degree",  # log(1 + d_v)
    "clustering",  # triangles / (d choose 2), in [0, 1]
    "square_clustering",  # 4-cycles through v / (d choose 2)
    "forman",  # mean augmented Forman-Ricci curvature of incident edges
    "ollivier",  # mean Ollivier-Ricci lower bound (balanced Forman) of incident edges
    "tree_likeness",  # |S_2(v)| / non-backtracking 2-walks, in [0, 1]; 1 = locally a tree
    "growth",  # log((1 + |S_h|) / (1 + |S_{h-1}|)), the last-hop growth rate
)

# Work budget (entries of A @ A rows, or node pairs) per vectorised chunk: bounds memory.
_CHUNK_WORK = 2_000_000


@dataclass(frozen=True)
class _Adj:
    """Symmetric simple adjacency in CSR form (sorted column indices).

    indptr [N+1], indices [2M] int64; deg [N] int64; keys [2M] sorted row*N+col;
    upper [2M] bool (col > row) marks the canonical copy of each undirected edge.
    """

    num_nodes: int
    indptr: np.ndarray
    indices: np.ndarray
    deg: np.ndarray
    rows: np.ndarray
    keys: np.ndarray
    upper: np.ndarray

    @property
    def csr(self) -> sp.csr_matrix:
        data = np.ones(self.indices.shape[0], dtype=np.int32)
        return sp.csr_matrix((data, self.indices, self.indptr), shape=(self.num_nodes,) * 2)


def _validate(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """Check an edge_index [2, E] of integer ids in [0, num_nodes); return it as int64."""
    if not isinstance(num_nodes, (int, np.integer)) or num_nodes < 0:
        raise ValueError(f"num_nodes must be a non-negative int, got {num_nodes!r}")
    ei = np.asarray(edge_index)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {ei.shape}")
    if ei.size and not np.issubdtype(ei.dtype, np.integer):
        raise ValueError(f"edge_index must hold integer node ids, got dtype {ei.dtype}")
    ei = ei.astype(np.int64, copy=False)
    if ei.size and (ei.min() < 0 or ei.max() >= num_nodes):
        bad = int(ei.min()) if ei.min() < 0 else int(ei.max())
        raise ValueError(f"edge_index holds node id {bad} outside [0, {num_nodes})")
    return ei


def _adjacency(edge_index: np.ndarray, num_nodes: int) -> _Adj:
    """Symmetrise, drop self-loops and duplicates. O(E log E)."""
    ei = _validate(edge_index, num_nodes)
    src, dst = ei
    keep = src != dst
    src, dst = src[keep], dst[keep]
    n = int(num_nodes)
    keys = sorted_unique(np.concatenate([src * n + dst, dst * n + src]))
    rows, cols = keys // max(n, 1), keys % max(n, 1)
    deg = np.bincount(rows, minlength=n).astype(np.int64)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(deg, out=indptr[1:])
    return _Adj(n, indptr, cols, deg, rows, keys, cols > rows)


def undirected_edges(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """The simple undirected edge list [2, M] int64 (u < v, sorted) that per-edge values index."""
    a = _adjacency(edge_index, num_nodes)
    return np.stack([a.rows[a.upper], a.indices[a.upper]])


def _lookup(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Positions of ``query`` in sorted ``keys`` (-1 where absent). O(Q log K)."""
    if keys.size == 0:
        return np.full(query.shape, -1, dtype=np.int64)
    pos = np.searchsorted(keys, query)
    pos = np.minimum(pos, keys.size - 1)
    return np.where(keys[pos] == query, pos, -1)


def _row_chunks(work: np.ndarray, budget: int = _CHUNK_WORK) -> list[tuple[int, int]]:
    """Split rows 0..N-1 into contiguous ranges whose summed ``work`` stays near ``budget``."""
    n = work.shape[0]
    if n == 0:
        return []
    cum = np.cumsum(work)
    bounds = [0]
    while bounds[-1] < n:
        start = bounds[-1]
        base = cum[start - 1] if start > 0 else 0
        stop = int(np.searchsorted(cum, base + budget, side="right"))
        bounds.append(min(n, max(stop, start + 1)))
    return list(zip(bounds[:-1], bounds[1:]))


class _TwoHop(NamedTuple):
    tri_dir: np.ndarray  # [2M] triangles on each directed CSR entry
    squares: np.ndarray  # [N] 4-cycles through each node
    sphere2: np.ndarray  # [N] |S_2(v)|: nodes at distance exactly 2


def _two_hop(a: _Adj) -> _TwoHop:
    """One chunked pass over the rows of P = A @ A. O(sum_v d_v^2) time."""
    n = a.num_nodes
    A = a.csr
    tri_dir = np.zeros(a.indices.shape[0], dtype=np.int64)
    squares = np.zeros(n, dtype=np.int64)
    sphere2 = np.zeros(n, dtype=np.int64)
    work = np.asarray(A @ a.deg.astype(np.float64)).ravel() + 1  # upper bound of nnz(P[v])
    for r0, r1 in _row_chunks(work):
        Ac = A[r0:r1]
        P = (Ac @ A).tocsr()  # indices left unsorted: nothing below needs them sorted
        prow = np.repeat(np.arange(r0, r1, dtype=np.int64), np.diff(P.indptr))
        off_diag = P.indices != prow
        data = P.data.astype(np.int64)
        squares[r0:r1] = np.bincount(prow[off_diag] - r0, weights=(data * (data - 1) // 2)[off_diag],
                                     minlength=r1 - r0)
        T = Ac.multiply(P).tocsr()  # triangles on the chunk's edges (edges without any are absent)
        T.sort_indices()
        trow = np.repeat(np.arange(r0, r1, dtype=np.int64), np.diff(T.indptr))
        e0, e1 = a.indptr[r0], a.indptr[r1]
        pos = np.searchsorted(a.keys[e0:e1], trow * n + T.indices)
        tri_dir[e0 + pos] = T.data
        nnz_off = np.bincount(prow[off_diag] - r0, minlength=r1 - r0)
        with_tri = np.bincount(trow - r0, weights=T.data > 0, minlength=r1 - r0)
        sphere2[r0:r1] = nnz_off - with_tri.astype(np.int64)
    # A 4-cycle v-a-u-b is counted once at v via its opposite node u and pair {a, b}.
    return _TwoHop(tri_dir, squares, sphere2)


def _edge_triangles(a: _Adj) -> np.ndarray:
    """Triangles per undirected edge [M] int64 (lookup of A @ A on the edges)."""
    return _two_hop(a).tri_dir[a.upper]


def _upper_endpoints(a: _Adj) -> tuple[np.ndarray, np.ndarray]:
    return a.rows[a.upper], a.indices[a.upper]


def _forman(a: _Adj, tri: np.ndarray) -> np.ndarray:
    u, v = _upper_endpoints(a)
    return (4 - a.deg[u] - a.deg[v] + 3 * tri).astype(np.float64)


def forman_curvature(edge_index: np.ndarray, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Augmented Forman-Ricci curvature per undirected edge (Samal et al. 2018).

    F(u, v) = 4 - d_u - d_v + 3 t_uv, with t_uv the triangles containing the edge
    (the Forman curvature of the 2-complex whose faces are the triangles).
    Regular tree: 4 - 2d < 0; cycle: 0; clique K_n: n > 0; 4-regular grid: -4.
    Cost O(sum_v d_v^2). Returns (edges [2, M] int64, curvature [M] float32).
    """
    a = _adjacency(edge_index, num_nodes)
    u, v = _upper_endpoints(a)
    return np.stack([u, v]), _forman(a, _edge_triangles(a)).astype(np.float32)


def _jost_liu(a: _Adj, tri: np.ndarray) -> np.ndarray:
    u, v = _upper_endpoints(a)
    du, dv = a.deg[u].astype(np.float64), a.deg[v].astype(np.float64)
    lo, hi = np.minimum(du, dv), np.maximum(du, dv)
    base = 1.0 - 1.0 / du - 1.0 / dv
    return -np.maximum(base - tri / lo, 0.0) - np.maximum(base - tri / hi, 0.0) + tri / hi


def jost_liu_curvature(edge_index: np.ndarray, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Jost-Liu (2014) lower bound on Ollivier-Ricci curvature (uniform walk, no laziness).

    k(u, v) >= -(1 - 1/d_u - 1/d_v - t/min(d))_+ - (1 - 1/d_u - 1/d_v - t/max(d))_+ + t/max(d).
    Exact on trees; ignores 4-cycles (reads -1 on interior grid edges where
    Ollivier is 0). Cost O(sum_v d_v^2) for triangles, then O(M).
    Returns (edges [2, M] int64, curvature [M] float32).
    """
    a = _adjacency(edge_index, num_nodes)
    u, v = _upper_endpoints(a)
    return np.stack([u, v]), _jost_liu(a, _edge_triangles(a)).astype(np.float32)


def _square_terms(a: _Adj, cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per undirected edge (u, v): #sq_u, #sq_v, gamma_max and whether they were computed.

    For k in N(u) \\ ({v} U N(v)) and w in N(v) \\ ({u} U N(u)) with k ~ w, the
    4-cycle u-k-w-v has no diagonal. #sq_u counts such k, #sq_v such w, gamma_max
    is the largest number of such cycles through one k or w. Edges whose candidate
    pair count (d_u - 1)(d_v - 1) exceeds ``cap`` are skipped (computed=False).
    """
    u, v = _upper_endpoints(a)
    m = u.shape[0]
    nu, nv = a.deg[u] - 1, a.deg[v] - 1
    npairs = nu * nv
    todo = np.flatnonzero((npairs > 0) & (npairs <= cap))
    sq_u = np.zeros(m, np.int64)
    sq_v = np.zeros(m, np.int64)
    gamma = np.zeros(m, np.int64)
    if todo.size == 0:
        return sq_u, sq_v, gamma, npairs <= cap
    n = a.num_nodes
    cum = np.cumsum(a.deg[u[todo]] * a.deg[v[todo]])
    starts = np.concatenate([[0], np.searchsorted(cum, np.arange(1, cum[-1] // _CHUNK_WORK + 1) * _CHUNK_WORK)])
    for c0, c1 in zip(starts, np.append(starts[1:], todo.size)):
        if c1 <= c0:
            continue
        e = todo[c0:c1]
        du, dv = a.deg[u[e]], a.deg[v[e]]
        cnt = du * dv
        eid = np.repeat(np.arange(e.size), cnt)
        p = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        ki = p // np.repeat(dv, cnt)
        wi = p % np.repeat(dv, cnt)
        k = a.indices[a.indptr[u[e]][eid] + ki]
        w = a.indices[a.indptr[v[e]][eid] + wi]
        uu, vv = u[e][eid], v[e][eid]
        cand = np.flatnonzero((k != vv) & (w != uu) & (k != w))
        cand = cand[_lookup(a.keys, k[cand] * n + w[cand]) >= 0]  # k ~ w closes the 4-cycle
        cand = cand[_lookup(a.keys, k[cand] * n + vv[cand]) < 0]  # k not a neighbour of v
        cand = cand[_lookup(a.keys, w[cand] * n + uu[cand]) < 0]  # w not a neighbour of u
        ok = np.zeros(k.size, dtype=bool)
        ok[cand] = True
        # cycles through each (edge, k) and each (edge, w)
        kid = eid * n + k
        wid = eid * n + w
        kk, kc = sorted_unique(kid[ok], return_counts=True)
        ww, wc = sorted_unique(wid[ok], return_counts=True)
        sq_u[e] = np.bincount(kk // n, minlength=e.size)
        sq_v[e] = np.bincount(ww // n, minlength=e.size)
        g = np.zeros(e.size, np.int64)
        np.maximum.at(g, kk // n, kc)
        np.maximum.at(g, ww // n, wc)
        gamma[e] = g
    return sq_u, sq_v, gamma, npairs <= cap


def _balanced_forman(a: _Adj, tri: np.ndarray, cap: int) -> np.ndarray:
    u, v = _upper_endpoints(a)
    du, dv = a.deg[u].astype(np.float64), a.deg[v].astype(np.float64)
    lo, hi = np.minimum(du, dv), np.maximum(du, dv)
    sq_u, sq_v, gamma, _ = _square_terms(a, cap)
    with np.errstate(divide="ignore", invalid="ignore"):
        sq = np.where(gamma > 0, (sq_u + sq_v) / (np.maximum(gamma, 1) * hi), 0.0)
        ric = 2 / du + 2 / dv - 2 + 2 * tri / hi + tri / lo + sq
    return np.where(lo > 1, ric, 0.0)


def ollivier_ricci_lower_bound(
    edge_index: np.ndarray, num_nodes: int, *, square_pair_cap: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced Forman curvature (Topping et al. 2022), our Ollivier-Ricci approximation.

    Ric(u, v) = 2/d_u + 2/d_v - 2 + 2t/max(d) + t/min(d) + (#sq_u + #sq_v) / (gamma_max max(d)),
    and 0 when min(d) = 1, with t triangles and #sq / gamma_max counting diagonal-free
    4-cycles (see ``_square_terms``). It is a lower bound on the Lin-Lu-Yau
    curvature (Ollivier curvature of the lazy walk, kappa_LLY = kappa_alpha / (1 - alpha)
    for alpha >= 1/2); tests check this against exact optimal transport on random
    graphs. (It is NOT a bound for the non-lazy alpha = 0 walk: K_n has
    kappa_0 = (n - 2) / (n - 1).) Regular tree: 4/d - 2 (exact);
    interior grid edge: 0 (exact); cycle C_n, n >= 6: 0; clique K_n: n / (n - 1).
    The 4-cycle term costs O(d_u d_v log M) per edge; for edges with
    (d_u - 1)(d_v - 1) > ``square_pair_cap`` it is dropped, which keeps a valid
    (looser) lower bound. Total O(sum_v d_v^2 + M * cap * log M).
    Returns (edges [2, M] int64, curvature [M] float32).
    """
    a = _adjacency(edge_index, num_nodes)
    u, v = _upper_endpoints(a)
    ric = _balanced_forman(a, _edge_triangles(a), square_pair_cap)
    return np.stack([u, v]), ric.astype(np.float32)


def _edge_mean_to_nodes(a: _Adj, values: np.ndarray) -> np.ndarray:
    """Mean over incident edges [N] of per-undirected-edge values [M]; 0 for isolated nodes."""
    u, v = _upper_endpoints(a)
    total = np.bincount(u, weights=values, minlength=a.num_nodes)
    total += np.bincount(v, weights=values, minlength=a.num_nodes)
    return total / np.maximum(a.deg, 1)


def _sphere_sizes(a: _Adj, hops: int, sphere2: np.ndarray) -> np.ndarray:
    """|S_t(v)| for t = 0..hops as [hops + 1, N] (BFS by row chunks beyond 2 hops)."""
    n = a.num_nodes
    out = np.zeros((hops + 1, n), dtype=np.int64)
    out[0] = 1
    if hops >= 1:
        out[1] = a.deg
    if hops >= 2:
        out[2] = sphere2
    if hops <= 2:
        return out
    A = a.csr.astype(bool)
    eye = sp.identity(n, dtype=bool, format="csr")
    work = np.maximum(sphere2 + a.deg, 1) * (1 + a.deg.mean())
    for r0, r1 in _row_chunks(work):
        ball = (eye[r0:r1] + A[r0:r1]).astype(bool)
        ball = (ball + ball @ A).astype(bool).tocsr()
        prev = np.diff(ball.indptr)
        for t in range(3, hops + 1):
            ball = (ball + ball @ A).astype(bool).tocsr()
            size = np.diff(ball.indptr)
            out[t, r0:r1] = size - prev
            prev = size
    return out


def node_descriptors(edge_index: np.ndarray, num_nodes: int, *, hops: int = 2,
                     square_pair_cap: int = 256) -> np.ndarray:
    """Per-node local geometry descriptors [N, F] float32, columns ``DESCRIPTOR_NAMES``.

    degree, log(1 + degree), clustering, square clustering (4-cycles through v per
    neighbour pair), mean augmented Forman and mean Ollivier lower bound over
    incident edges, tree-likeness = |S_2(v)| / sum_{u~v} (d_u - 1) (1 on a tree,
    < 1 when triangles or 4-cycles fold the 2-hop sphere; 1 where that sum is 0),
    and growth = log((1 + |S_h|) / (1 + |S_{h-1}|)) with S_t the sphere at
    distance t: > 0 for exponential (hyperbolic) growth, ~0 along long cycles and
    paths, < 0 where neighbourhoods close up (cliques, for hops = 2). Cost: O(sum_v d_v^2) for hops <= 2,
    plus the BFS cost for larger ``hops`` (see module docstring).
    """
    if not isinstance(hops, (int, np.integer)) or hops < 1:
        raise ValueError(f"hops must be an int >= 1, got {hops!r}")
    a = _adjacency(edge_index, num_nodes)
    th = _two_hop(a)
    tri = th.tri_dir[a.upper]
    deg = a.deg.astype(np.float64)
    pairs = np.maximum(deg * (deg - 1) / 2, 1)
    node_tri = np.bincount(a.rows, weights=th.tri_dir, minlength=a.num_nodes) / 2
    nb_walks = np.asarray(a.csr @ np.maximum(deg - 1, 0)).ravel()
    spheres = _sphere_sizes(a, max(hops, 2), th.sphere2)
    tree_like = np.where(nb_walks > 0, spheres[2] / np.maximum(nb_walks, 1), 1.0)
    growth = np.log1p(spheres[hops]) - np.log1p(spheres[hops - 1])
    cols = [
        deg,
        np.log1p(deg),
        node_tri / pairs,
        th.squares / pairs,
        _edge_mean_to_nodes(a, _forman(a, tri)),
        _edge_mean_to_nodes(a, _balanced_forman(a, tri, square_pair_cap)),
        tree_like,
        growth,
    ]
    return np.stack(cols, axis=1).astype(np.float32)


class DescriptorStats(NamedTuple):
    """Per-column standardisation statistics: mean [F], std [F] (float32)."""

    mean: np.ndarray
    std: np.ndarray


def fit_standardizer(x: np.ndarray) -> DescriptorStats:
    """Column mean / std of descriptors x [N, F]; std floored at 1e-6 (constant columns)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"descriptors must be a non-empty [N, F] array, got shape {x.shape}")
    return DescriptorStats(x.mean(0).astype(np.float32), np.maximum(x.std(0), 1e-6).astype(np.float32))


def standardize(x: np.ndarray, stats: DescriptorStats, *, clip: float = 5.0) -> np.ndarray:
    """(x - mean) / std clipped to [-clip, clip], float32 [N, F]: bounded inputs for a gate."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != stats.mean.shape[0]:
        raise ValueError(f"descriptors shape {x.shape} does not match stats with {stats.mean.shape[0]} columns")
    return np.clip((x - stats.mean) / stats.std, -clip, clip).astype(np.float32)


def _summary(values: np.ndarray, prefix: str) -> dict[str, float]:
    if values.size == 0:
        return {f"{prefix}_{k}": float("nan") for k in ("mean", "std", "q05", "q25", "q50", "q75", "q95")}
    q = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
    out = {f"{prefix}_mean": float(values.mean()), f"{prefix}_std": float(values.std())}
    out.update({f"{prefix}_q{int(p * 100):02d}": float(x) for p, x in zip([0.05, 0.25, 0.5, 0.75, 0.95], q)})
    return out


def graph_curvature_summary(edge_index: np.ndarray, num_nodes: int, *, square_pair_cap: int = 256) -> dict:
    """Edge-curvature statistics for ``geofm data stats``: flat JSON-ready dict.

    Keys: num_undirected_edges, ollivier_method, forman_{mean,std,q05,q25,q50,q75,q95},
    ollivier_{...} (balanced Forman lower bound), clustering_mean, tree_likeness_mean.
    Cost O(sum_v d_v^2).
    """
    a = _adjacency(edge_index, num_nodes)
    th = _two_hop(a)
    tri = th.tri_dir[a.upper]
    deg = a.deg.astype(np.float64)
    node_tri = np.bincount(a.rows, weights=th.tri_dir, minlength=a.num_nodes) / 2
    nb_walks = np.asarray(a.csr @ np.maximum(deg - 1, 0)).ravel()
    out: dict = {"num_undirected_edges": int(tri.shape[0]),
                 "ollivier_method": "balanced_forman_lower_bound"}
    out.update(_summary(_forman(a, tri), "forman"))
    out.update(_summary(_balanced_forman(a, tri, square_pair_cap), "ollivier"))
    n = max(a.num_nodes, 1)
    out["clustering_mean"] = float((node_tri / np.maximum(deg * (deg - 1) / 2, 1)).sum() / n)
    out["tree_likeness_mean"] = float(np.where(nb_walks > 0, th.sphere2 / np.maximum(nb_walks, 1), 1.0).sum() / n)
    return out
