"""Structure descriptors: known answers on trees / cycles / cliques / grids, a pure-python
reference on tiny graphs, and the Ollivier lower-bound property against exact transport."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linprog
from scipy.sparse.csgraph import shortest_path

from geofm import structure as S

COL = {name: i for i, name in enumerate(S.DESCRIPTOR_NAMES)}


def tree(branching: int, depth: int) -> tuple[np.ndarray, int]:
    edges, frontier, nxt = [], [0], 1
    for _ in range(depth):
        new = []
        for p in frontier:
            for _ in range(branching):
                edges.append((p, nxt))
                new.append(nxt)
                nxt += 1
        frontier = new
    return np.array(edges).T, nxt


def grid(rows: int, cols: int) -> tuple[np.ndarray, int]:
    idx = np.arange(rows * cols).reshape(rows, cols)
    src = np.concatenate([idx[:, :-1].ravel(), idx[:-1].ravel()])
    dst = np.concatenate([idx[:, 1:].ravel(), idx[1:].ravel()])
    return np.stack([src, dst]), rows * cols


def clique(n: int) -> tuple[np.ndarray, int]:
    i, j = np.triu_indices(n, 1)
    return np.stack([i, j]), n


def cycle(n: int) -> tuple[np.ndarray, int]:
    return np.stack([np.arange(n), (np.arange(n) + 1) % n]), n


def random_graph(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    iu = np.triu_indices(n, 1)
    keep = rng.random(iu[0].size) < p
    ei = np.stack([iu[0][keep], iu[1][keep]])
    # directed duplicates, reversed copies and self-loops must all be ignored
    extra = np.stack([ei[1][:3], ei[0][:3]])
    loops = np.stack([np.arange(2), np.arange(2)])
    return np.concatenate([ei, extra, ei[:, :2], loops], axis=1)


# ---------------------------------------------------------------- pure-python reference
def ref_neighbours(ei: np.ndarray, n: int) -> list[set[int]]:
    nb: list[set[int]] = [set() for _ in range(n)]
    for u, v in ei.T.tolist():
        if u != v:
            nb[u].add(v)
            nb[v].add(u)
    return nb


def ref_edge_values(ei: np.ndarray, n: int) -> dict[tuple[int, int], tuple[float, float, float]]:
    """(Forman, Jost-Liu, balanced Forman with all 4-cycles) per undirected edge."""
    nb = ref_neighbours(ei, n)
    out = {}
    for u in range(n):
        for v in sorted(nb[u]):
            if v < u:
                continue
            du, dv = len(nb[u]), len(nb[v])
            t = len(nb[u] & nb[v])
            forman = 4 - du - dv + 3 * t
            base = 1 - 1 / du - 1 / dv
            jl = -max(base - t / min(du, dv), 0) - max(base - t / max(du, dv), 0) + t / max(du, dv)
            cyc_k, cyc_w = {}, {}
            for k in nb[u] - nb[v] - {v}:
                for w in nb[v] - nb[u] - {u}:
                    if w in nb[k]:
                        cyc_k[k] = cyc_k.get(k, 0) + 1
                        cyc_w[w] = cyc_w.get(w, 0) + 1
            gamma = max(list(cyc_k.values()) + list(cyc_w.values()) + [0])
            bf = 2 / du + 2 / dv - 2 + 2 * t / max(du, dv) + t / min(du, dv)
            if gamma:
                bf += (len(cyc_k) + len(cyc_w)) / (gamma * max(du, dv))
            if min(du, dv) == 1:
                bf = 0.0
            out[(u, v)] = (forman, jl, bf)
    return out


def ref_node_values(ei: np.ndarray, n: int, hops: int) -> np.ndarray:
    nb = ref_neighbours(ei, n)
    rows = []
    for v in range(n):
        d = len(nb[v])
        tri = sum(1 for a, b in itertools.combinations(sorted(nb[v]), 2) if b in nb[a])
        squares = 0  # 4-cycles v-a-u-b-v: count pairs {a, b} of neighbours sharing u != v
        for u in range(n):
            if u != v:
                c = len(nb[v] & nb[u])
                squares += c * (c - 1) // 2
        dist = {v: 0}
        frontier = [v]
        for t in range(1, hops + 1):
            nxt = []
            for x in frontier:
                for y in nb[x]:
                    if y not in dist:
                        dist[y] = t
                        nxt.append(y)
            frontier = nxt
        sphere = [sum(1 for x in dist.values() if x == t) for t in range(hops + 1)]
        walks = sum(len(nb[u]) - 1 for u in nb[v])
        pairs = max(d * (d - 1) / 2, 1)
        rows.append([d, np.log1p(d), tri / pairs, squares / pairs,
                     sphere[2] / walks if walks else 1.0,
                     np.log1p(sphere[hops]) - np.log1p(sphere[hops - 1])])
    return np.array(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_python_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 16))
    ei = random_graph(rng, n, float(rng.uniform(0.15, 0.5)))
    ref = ref_edge_values(ei, n)
    edges, forman = S.forman_curvature(ei, n)
    _, jl = S.jost_liu_curvature(ei, n)
    _, bf = S.ollivier_ricci_lower_bound(ei, n)
    assert sorted(ref) == [tuple(e) for e in edges.T.tolist()]
    want = np.array([ref[tuple(e)] for e in edges.T.tolist()])
    np.testing.assert_allclose(forman, want[:, 0], atol=1e-5)
    np.testing.assert_allclose(jl, want[:, 1], atol=1e-5)
    np.testing.assert_allclose(bf, want[:, 2], atol=1e-5)
    for hops in (2, 3):
        x = S.node_descriptors(ei, n, hops=hops)
        r = ref_node_values(ei, n, hops)
        cols = [COL[c] for c in ("degree", "log_degree", "clustering", "square_clustering",
                                 "tree_likeness", "growth")]
        np.testing.assert_allclose(x[:, cols], r, rtol=1e-5, atol=1e-5)
    # node aggregation = mean over incident edges
    f_node = np.zeros(n)
    deg = np.zeros(n)
    for (u, v), val in zip(edges.T.tolist(), forman):
        f_node[[u, v]] += val
        deg[[u, v]] += 1
    np.testing.assert_allclose(x[:, COL["forman"]], f_node / np.maximum(deg, 1), rtol=1e-5)


def lazy_ollivier(ei: np.ndarray, n: int, alpha: float = 0.5) -> dict[tuple[int, int], float]:
    """Exact Ollivier curvature of the alpha-lazy walk, divided by (1 - alpha) (= Lin-Lu-Yau)."""
    A = np.zeros((n, n))
    A[ei[0], ei[1]] = 1
    A[ei[1], ei[0]] = 1
    np.fill_diagonal(A, 0)
    D = shortest_path(A, unweighted=True)
    out = {}
    for u, v in zip(*np.nonzero(np.triu(A))):
        mu = (1 - alpha) * A[u] / A[u].sum()
        mu[u] += alpha
        mv = (1 - alpha) * A[v] / A[v].sum()
        mv[v] += alpha
        su, sv = np.flatnonzero(mu), np.flatnonzero(mv)
        a, b = su.size, sv.size
        eq = np.zeros((a + b, a * b))
        for i in range(a):
            eq[i, i * b:(i + 1) * b] = 1
        for j in range(b):
            eq[a + j, j::b] = 1
        res = linprog(D[np.ix_(su, sv)].ravel(), A_eq=eq, b_eq=np.r_[mu[su], mv[sv]], bounds=(0, None))
        out[(int(u), int(v))] = (1 - res.fun) / (1 - alpha)
    return out


@pytest.mark.parametrize("cap", [256, 0])
def test_ollivier_estimates_are_lower_bounds(cap: int) -> None:
    rng = np.random.default_rng(7)
    for _ in range(12):
        n = int(rng.integers(6, 12))
        ei = random_graph(rng, n, float(rng.uniform(0.2, 0.6)))
        exact = lazy_ollivier(ei, n)
        edges, bf = S.ollivier_ricci_lower_bound(ei, n, square_pair_cap=cap)
        _, jl = S.jost_liu_curvature(ei, n)
        want = np.array([exact[tuple(e)] for e in edges.T.tolist()])
        assert np.all(bf <= want + 1e-5)
        assert np.all(jl <= want + 1e-5)


def test_known_geometries() -> None:
    # regular tree: every interior edge has negative curvature, exact 4/d - 2 for d = 4
    ei, n = tree(3, 4)
    edges, bf = S.ollivier_ricci_lower_bound(ei, n)
    _, forman = S.forman_curvature(ei, n)
    deg = np.bincount(ei.ravel(), minlength=n)
    interior = (deg[edges[0]] == 4) & (deg[edges[1]] == 4)
    np.testing.assert_allclose(bf[interior], 4 / 4 - 2)
    np.testing.assert_allclose(forman[interior], 4 - 8)
    x = S.node_descriptors(ei, n)
    np.testing.assert_allclose(x[:, COL["tree_likeness"]], 1.0)
    assert np.all(x[:, COL["clustering"]] == 0)
    assert x[0, COL["growth"]] > 0.5  # root: 3 -> 9 nodes

    # clique K_n: positive, n / (n - 1) and Forman n
    ei, n = clique(6)
    _, bf = S.ollivier_ricci_lower_bound(ei, n)
    _, forman = S.forman_curvature(ei, n)
    np.testing.assert_allclose(bf, 6 / 5, rtol=1e-6)
    np.testing.assert_allclose(forman, 6)
    x = S.node_descriptors(ei, n)
    np.testing.assert_allclose(x[:, COL["clustering"]], 1.0)
    assert np.all(x[:, COL["growth"]] < 0)

    # long cycle: flat (0) for both estimates
    ei, n = cycle(12)
    assert np.all(S.ollivier_ricci_lower_bound(ei, n)[1] == 0)
    assert np.all(S.forman_curvature(ei, n)[1] == 0)

    # grid: interior Ollivier estimate exactly 0 (Jost-Liu, blind to 4-cycles, says -1)
    ei, n = grid(8, 8)
    edges, bf = S.ollivier_ricci_lower_bound(ei, n)
    _, jl = S.jost_liu_curvature(ei, n)
    deg = np.bincount(ei.ravel(), minlength=n)
    interior = (deg[edges[0]] == 4) & (deg[edges[1]] == 4)
    np.testing.assert_allclose(bf[interior], 0.0, atol=1e-6)
    np.testing.assert_allclose(jl[interior], -1.0)
    x = S.node_descriptors(ei, n)
    inner = np.arange(n).reshape(8, 8)[2:6, 2:6].ravel()  # all incident edges are interior
    assert abs(x[inner, COL["ollivier"]]).max() < 1e-6
    np.testing.assert_allclose(x[inner, COL["tree_likeness"]], 8 / 12, rtol=1e-6)


def test_ordering_tree_grid_clique() -> None:
    """Mean node Ollivier estimate orders the three geometries: tree < grid < clique."""
    means = [S.node_descriptors(*g)[:, COL["ollivier"]].mean() for g in (tree(3, 4), grid(8, 8), clique(6))]
    assert means[0] < -0.1 < means[1] < 0.5 < means[2]


def test_edge_cases_and_errors() -> None:
    x = S.node_descriptors(np.zeros((2, 0), dtype=np.int64), 3)
    assert x.shape == (3, len(S.DESCRIPTOR_NAMES)) and x.dtype == np.float32
    assert np.all(np.isfinite(x))
    with pytest.raises(ValueError, match="outside"):
        S.node_descriptors(np.array([[0], [5]]), 3)
    with pytest.raises(ValueError, match=r"\[2, E\]"):
        S.forman_curvature(np.zeros((3, 2), dtype=np.int64), 3)
    with pytest.raises(ValueError, match="hops"):
        S.node_descriptors(np.array([[0], [1]]), 2, hops=0)
    with pytest.raises(ValueError, match="integer"):
        S.forman_curvature(np.array([[0.0], [1.0]]), 2)


def test_standardize_and_summary() -> None:
    ei, n = grid(6, 6)
    x = S.node_descriptors(ei, n)
    stats = S.fit_standardizer(x)
    z = S.standardize(x, stats)
    assert z.dtype == np.float32 and z.shape == x.shape
    varying = x.std(0) > 1e-6
    np.testing.assert_allclose(z[:, varying].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, varying].std(0), 1, atol=1e-4)
    assert np.abs(S.standardize(x * 100, stats, clip=3.0)).max() <= 3.0
    with pytest.raises(ValueError, match="columns"):
        S.standardize(x[:, :3], stats)
    summary = S.graph_curvature_summary(ei, n)
    _, bf = S.ollivier_ricci_lower_bound(ei, n)
    assert summary["num_undirected_edges"] == 60
    assert summary["ollivier_mean"] == pytest.approx(float(bf.mean()), abs=1e-6)
    assert summary["forman_q05"] <= summary["forman_q50"] <= summary["forman_q95"]


def test_arxiv2023_speed(data_dir) -> None:
    """Prints the descriptor time on arxiv2023 (34k nodes, 306k edges); never asserts time."""
    import time

    path = data_dir / "tag" / "arxiv2023" / "edges.tsv"
    if not path.exists():
        pytest.skip("arxiv2023 not present")
    ei = np.loadtxt(path, skiprows=1, dtype=np.int64).T
    t0 = time.perf_counter()
    x = S.node_descriptors(ei, 33868)
    print(f"\nnode_descriptors(arxiv2023): {time.perf_counter() - t0:.2f} s, shape {x.shape}")
    assert np.all(np.isfinite(x))


def test_descriptors_identify_geometry_regions() -> None:
    """A linear softmax classifier on standardised descriptors recovers the region of
    held-out nodes of a mixed tree / cliques / grid graph (the signal a gate needs)."""
    from geofm.data import synthetic

    ds = synthetic.mixed_dataset(seed=0, tree_nodes=150)
    x = S.node_descriptors(ds.edge_index, ds.num_nodes)
    train, test = ds.splits["train"], ds.splits["test"]
    z = S.standardize(x, S.fit_standardizer(x[train]))
    z = np.c_[z, np.ones(len(z))]
    W = np.zeros((z.shape[1], ds.num_classes))
    for _ in range(300):
        logits = z[train] @ W
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(train.size), ds.labels[train]] -= 1
        W -= 0.5 * z[train].T @ p / train.size
    accuracy = (np.argmax(z[test] @ W, 1) == ds.labels[test]).mean()
    assert accuracy > 0.9
