"""Synthetic text-attributed graphs with known geometry.

Used by tests, by ``make demo`` when no real data is present, and by the gating
tests (a curvature-adaptive gate should put hyperbolic weight on tree regions,
spherical weight on clique regions, Euclidean weight on grids).

Edge generators return ``edge_index`` [2, E] int64 with each undirected edge
stored once (u < v). Dataset builders return a ``TAGDataset`` (edges once,
symmetrise with ``geofm.graph`` helpers) whose ``meta`` holds:
- ``region`` [N] int32: geometry region of each node (``REGIONS`` index),
- ``community`` [N] int32: finer structure id (tree branch / clique / grid block),
- ``region_names``, ``generator``, ``params``, ``seed``.
Labels are ``labels="region"`` (class = geometry region, the default) or
``labels="community"`` (class = community id). Node texts are templates with a
region word and a role ("a lineage parent at level 2", "a team member of group 3
..."): with ``text_noise=0`` the text alone reveals the region; ``text_noise=p``
replaces a fraction p of texts by a neutral one, so structure must carry the rest. All randomness comes from a
seeded ``numpy.random.Generator``: same arguments, same dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from geofm.data.types import TAGDataset

REGIONS: tuple[str, ...] = ("tree", "cliques", "grid", "ring")
REGION_DESCRIPTIONS: dict[str, str] = {
    "tree": "a branching hierarchy: tree-like, exponential growth, hyperbolic geometry",
    "cliques": "tight-knit groups where everyone knows everyone: dense cycles, spherical geometry",
    "grid": "a regular lattice of neighbouring cells: flat, Euclidean geometry",
    "ring": "a long chain closing into a circle: locally a line, flat geometry",
}
_REGION_WORDS: dict[str, list[str]] = {
    "tree": ["hierarchy", "branch", "lineage", "taxonomy", "descendant"],
    "cliques": ["group", "circle", "team", "club", "cluster"],
    "grid": ["lattice", "cell", "tile", "block", "mesh"],
    "ring": ["chain", "loop", "relay", "sequence", "necklace"],
}


def _check_int(name: str, value: Any, minimum: int) -> int:
    if not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _canonical(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Undirected edges once, u < v, sorted and unique: [2, E] int64."""
    u, v = np.minimum(src, dst), np.maximum(src, dst)
    keep = u != v
    pairs = np.unique(np.stack([u[keep], v[keep]], axis=1).astype(np.int64), axis=0)
    return pairs.T.reshape(2, -1)


# ------------------------------------------------------------------ edge generators
def balanced_tree(branching: int, depth: int) -> tuple[np.ndarray, int]:
    """Complete ``branching``-ary tree of ``depth`` levels below the root (BFS ids, root 0).

    Returns (edge_index [2, N-1], N) with N = sum_{l<=depth} branching^l.
    """
    b = _check_int("branching", branching, 1)
    d = _check_int("depth", depth, 0)
    n = sum(b**level for level in range(d + 1))
    child = np.arange(1, n, dtype=np.int64)
    return _canonical((child - 1) // b, child), n


def random_tree(num_nodes: int, *, rng: np.random.Generator, max_children: int | None = None) -> np.ndarray:
    """Random recursive tree: node i attaches to a uniform earlier node (with < max_children kids).

    Returns edge_index [2, num_nodes - 1]. Node 0 is the root.
    """
    n = _check_int("num_nodes", num_nodes, 1)
    if max_children is None:
        parents = np.floor(rng.random(n - 1) * np.arange(1, n)).astype(np.int64)
    else:
        cap = _check_int("max_children", max_children, 1)
        kids = np.zeros(n, dtype=np.int64)
        parents = np.empty(n - 1, dtype=np.int64)
        for i in range(1, n):  # sequential by nature; n is small for synthetic data
            open_ = np.flatnonzero(kids[:i] < cap)
            p = open_[rng.integers(open_.size)]
            parents[i - 1] = p
            kids[p] += 1
    return _canonical(parents, np.arange(1, n, dtype=np.int64))


def cycle(num_nodes: int) -> np.ndarray:
    """Ring C_n: edge_index [2, n] (n >= 3)."""
    n = _check_int("num_nodes", num_nodes, 3)
    i = np.arange(n, dtype=np.int64)
    return _canonical(i, (i + 1) % n)


def ring_of_cliques(num_cliques: int, clique_size: int) -> tuple[np.ndarray, int]:
    """``num_cliques`` cliques K_s, clique c holding ids [c*s, (c+1)*s), joined in a ring
    by one edge from the last node of clique c to the first node of clique c+1.

    Returns (edge_index [2, c*s*(s-1)/2 + c], N = c*s). With one clique there is no ring edge.
    """
    c = _check_int("num_cliques", num_cliques, 1)
    s = _check_int("clique_size", clique_size, 2)
    i, j = np.triu_indices(s, 1)
    base = np.arange(c, dtype=np.int64)[:, None] * s
    src, dst = (base + i).ravel(), (base + j).ravel()
    if c > 1:
        src = np.concatenate([src, base.ravel() + s - 1])
        dst = np.concatenate([dst, ((base.ravel() + s) % (c * s))])
    return _canonical(src, dst), c * s


def grid(rows: int, cols: int) -> tuple[np.ndarray, int]:
    """rows x cols 4-neighbour lattice, node id r * cols + c. Returns (edge_index, rows*cols)."""
    r = _check_int("rows", rows, 1)
    c = _check_int("cols", cols, 1)
    idx = np.arange(r * c, dtype=np.int64).reshape(r, c)
    src = np.concatenate([idx[:, :-1].ravel(), idx[:-1].ravel()])
    dst = np.concatenate([idx[:, 1:].ravel(), idx[1:].ravel()])
    return _canonical(src, dst), r * c


# ------------------------------------------------------------------ datasets
def _bfs_tree(edge_index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """BFS from node 0: (hop depth [N], root-child ancestor [N]; the root gets 0)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import breadth_first_order

    A = sp.coo_matrix((np.ones(edge_index.shape[1]), tuple(edge_index)), shape=(n, n)).tocsr()
    order, pred = breadth_first_order(A, 0, directed=False)
    depth = np.zeros(n, dtype=np.int64)
    branch = np.zeros(n, dtype=np.int64)
    for v in order[1:]:  # BFS order: a parent is always processed before its children
        p = pred[v]
        depth[v] = depth[p] + 1
        branch[v] = v if p == 0 else branch[p]
    return depth, branch


def _texts(region: str, roles: list[str], rng: np.random.Generator, noise: float) -> list[str]:
    """Template texts: a region word + a role phrase; with prob. ``noise`` a neutral text."""
    words = _REGION_WORDS[region]
    pick = rng.integers(len(words), size=len(roles))
    neutral = rng.random(len(roles)) < noise
    return [
        "an entity with some connections" if z else f"a {words[w]} {role}"
        for role, w, z in zip(roles, pick.tolist(), neutral.tolist())
    ]


def _tree_part(branching: int = 3, depth: int = 4, random_nodes: int | None = None,
               max_children: int | None = None, rng: np.random.Generator | None = None,
               ) -> tuple[np.ndarray, int, np.ndarray, list[str]]:
    """Balanced tree, or a random recursive tree of ``random_nodes`` nodes when given.

    Community = the root's child subtree a node hangs from (the root joins the first one).
    """
    if random_nodes is None:
        ei, n = balanced_tree(branching, depth)
    else:
        n = _check_int("random_nodes", random_nodes, 2)
        ei = random_tree(n, rng=rng if rng is not None else np.random.default_rng(0), max_children=max_children)
    d, branch = _bfs_tree(ei, n)
    deg = np.bincount(ei.ravel(), minlength=n)
    comm = np.unique(branch, return_inverse=True)[1].ravel()
    if n > 1:
        comm[0] = comm[np.flatnonzero(d == 1)[0]]
    roles = ["root node at the top" if v == 0 else
             (f"leaf at level {d[v]}" if deg[v] == 1 else f"parent at level {d[v]}") for v in range(n)]
    return ei, n, comm, roles


def _clique_part(num_cliques: int, clique_size: int) -> tuple[np.ndarray, int, np.ndarray, list[str]]:
    ei, n = ring_of_cliques(num_cliques, clique_size)
    comm = np.arange(n, dtype=np.int64) // clique_size
    roles = [f"member of group {c} where all members are linked" for c in comm.tolist()]
    return ei, n, comm, roles


def _grid_part(rows: int, cols: int, blocks: int = 2) -> tuple[np.ndarray, int, np.ndarray, list[str]]:
    ei, n = grid(rows, cols)
    r, c = np.divmod(np.arange(n), cols)
    comm = (r * blocks // rows) * blocks + (c * blocks // cols)
    roles = [f"cell at row {a} column {b} of a regular layout" for a, b in zip(r.tolist(), c.tolist())]
    return ei, n, comm, roles


def _ring_part(num_nodes: int, segments: int = 4) -> tuple[np.ndarray, int, np.ndarray, list[str]]:
    ei = cycle(num_nodes)
    comm = np.arange(num_nodes) * segments // num_nodes
    roles = [f"link {i} in a closed loop" for i in range(num_nodes)]
    return ei, num_nodes, comm, roles


_PARTS: dict[str, Callable[..., tuple[np.ndarray, int, np.ndarray, list[str]]]] = {
    "tree": _tree_part,
    "cliques": _clique_part,
    "grid": _grid_part,
    "ring": _ring_part,
}


def _assemble(
    name: str,
    parts: list[tuple[str, dict[str, Any]]],
    *,
    seed: int,
    bridges: int,
    labels: str,
    text_noise: float,
    permute: bool,
    split: tuple[float, float, float],
) -> TAGDataset:
    """Stack region graphs, join consecutive regions by ``bridges`` random edges, label, split."""
    if labels not in ("region", "community"):
        raise ValueError(f"labels must be 'region' or 'community', got {labels!r}")
    if not 0.0 <= text_noise <= 1.0:
        raise ValueError(f"text_noise must be in [0, 1], got {text_noise!r}")
    if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1.0) > 1e-6:
        raise ValueError(f"split must be three non-negative fractions summing to 1, got {split!r}")
    _check_int("bridges", bridges, 0)
    rng = np.random.default_rng(seed)
    edges, regions, comms, texts, offsets = [], [], [], [], [0]
    comm_base = 0
    for region, kwargs in parts:
        extra = {"rng": rng} if region == "tree" else {}
        ei, n, comm, roles = _PARTS[region](**kwargs, **extra)
        off = offsets[-1]
        edges.append(ei + off)
        regions.append(np.full(n, REGIONS.index(region), dtype=np.int32))
        comm = np.unique(comm, return_inverse=True)[1].ravel()  # dense community ids
        comms.append(comm + comm_base)
        comm_base += int(comm.max()) + 1
        texts += _texts(region, roles, rng, text_noise)
        offsets.append(off + n)
    for a in range(len(parts) - 1):  # structural boundaries between consecutive regions
        lo_a, hi_a, hi_b = offsets[a], offsets[a + 1], offsets[a + 2]
        src = rng.integers(lo_a, hi_a, size=bridges)
        dst = rng.integers(hi_a, hi_b, size=bridges)
        edges.append(np.stack([src, dst]).astype(np.int64))
    n = offsets[-1]
    region = np.concatenate(regions)
    community = np.concatenate(comms).astype(np.int32)
    ei = np.concatenate(edges, axis=1)
    perm = rng.permutation(n) if permute else np.arange(n)  # old id -> new id
    inv = np.argsort(perm)
    ei = _canonical(perm[ei[0]], perm[ei[1]])
    region, community = region[inv], community[inv]
    texts = [texts[i] for i in inv.tolist()]
    used = [r for r, _ in parts]
    if labels == "region":
        names = [r for r in REGIONS if r in used]
        y = np.searchsorted([REGIONS.index(r) for r in names], region).astype(np.int32)
        class_names = [f"{r} region" for r in names]
        descriptions = [REGION_DESCRIPTIONS[r] for r in names]
    else:
        y = community
        reg_of = {int(c): REGIONS[int(r)] for c, r in zip(community, region)}
        class_names = [f"{reg_of[c]} community {c}" for c in range(int(community.max()) + 1)]
        descriptions = [f"community {c} inside the {reg_of[c]} region: {REGION_DESCRIPTIONS[reg_of[c]]}"
                        for c in range(len(class_names))]
    order = rng.permutation(n)
    n_train, n_valid = int(round(split[0] * n)), int(round(split[1] * n))
    splits = {
        "train": np.sort(order[:n_train]).astype(np.int32),
        "valid": np.sort(order[n_train:n_train + n_valid]).astype(np.int32),
        "test": np.sort(order[n_train + n_valid:]).astype(np.int32),
    }
    meta = {
        "region": region.astype(np.int32),
        "community": community,
        "region_names": list(REGIONS),
        "generator": name,
        "params": {"parts": [[r, dict(k)] for r, k in parts], "bridges": bridges, "labels": labels,
                   "text_noise": text_noise, "permute": permute},
        "seed": seed,
    }
    return TAGDataset(name=name, num_nodes=n, edge_index=ei.astype(np.int32), texts=texts, labels=y,
                      class_names=class_names, class_descriptions=descriptions, splits=splits,
                      meta=meta, domain="synthetic")


_COMMON = dict(bridges=3, labels="region", text_noise=0.0, permute=True, split=(0.6, 0.2, 0.2))


def tree_dataset(*, branching: int = 3, depth: int = 4, random_nodes: int | None = None,
                 max_children: int | None = None, seed: int = 0, **kw: Any) -> TAGDataset:
    """A balanced tree, or a seeded random recursive tree of ``random_nodes`` nodes
    (hyperbolic); labels = the root's child subtree."""
    tree = dict(branching=branching, depth=depth, random_nodes=random_nodes, max_children=max_children)
    return _assemble("synthetic-tree", [("tree", tree)], seed=seed, **{**_COMMON, "labels": "community", **kw})


def cliques_dataset(*, num_cliques: int = 8, clique_size: int = 6, seed: int = 0, **kw: Any) -> TAGDataset:
    """A ring of cliques (spherical); labels = clique id."""
    return _assemble("synthetic-cliques", [("cliques", dict(num_cliques=num_cliques, clique_size=clique_size))],
                     seed=seed, **{**_COMMON, "labels": "community", **kw})


def grid_dataset(*, rows: int = 10, cols: int = 10, seed: int = 0, **kw: Any) -> TAGDataset:
    """A 4-neighbour lattice (flat); labels = 2x2 block."""
    return _assemble("synthetic-grid", [("grid", dict(rows=rows, cols=cols))], seed=seed,
                     **{**_COMMON, "labels": "community", **kw})


def ring_dataset(*, num_nodes: int = 64, seed: int = 0, **kw: Any) -> TAGDataset:
    """A plain cycle; labels = quarter of the ring."""
    return _assemble("synthetic-ring", [("ring", dict(num_nodes=num_nodes))], seed=seed,
                     **{**_COMMON, "labels": "community", **kw})


def mixed_dataset(
    *,
    branching: int = 3,
    depth: int = 4,
    tree_nodes: int | None = None,
    num_cliques: int = 10,
    clique_size: int = 6,
    rows: int = 8,
    cols: int = 8,
    seed: int = 0,
    **kw: Any,
) -> TAGDataset:
    """Tree + ring-of-cliques + grid regions joined by ``bridges`` edges per boundary.

    The tree is balanced (``branching``, ``depth``) or, with ``tree_nodes``, a seeded
    random recursive tree of that size. Defaults: 121 tree nodes, 60 clique nodes, 64 grid nodes (245 total). Labels are the
    region (3 classes: tree / cliques / grid) unless ``labels="community"``.
    ``meta["region"]`` [N] int32 indexes ``REGIONS``.
    """
    parts = [("tree", dict(branching=branching, depth=depth, random_nodes=tree_nodes)),
             ("cliques", dict(num_cliques=num_cliques, clique_size=clique_size)),
             ("grid", dict(rows=rows, cols=cols))]
    return _assemble("synthetic-mixed", parts, seed=seed, **{**_COMMON, **kw})


GENERATORS: dict[str, Callable[..., TAGDataset]] = {
    "synthetic-tree": tree_dataset,
    "synthetic-cliques": cliques_dataset,
    "synthetic-grid": grid_dataset,
    "synthetic-ring": ring_dataset,
    "synthetic-mixed": mixed_dataset,
}


def make_synthetic(name: str, *, seed: int = 0, **kwargs: Any) -> TAGDataset:
    """Build a synthetic dataset by name (``GENERATORS``); unknown names list the known ones."""
    key = name.lower()
    if key not in GENERATORS:
        raise ValueError(f"unknown synthetic dataset {name!r}; known: {', '.join(sorted(GENERATORS))}")
    return GENERATORS[key](seed=seed, **kwargs)
