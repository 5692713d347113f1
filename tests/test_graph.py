"""Graph container: batching, padding to buckets, masks, edge-index helpers, CSR, jraph."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofm.graph import (
    Graph,
    add_self_loops,
    batch,
    bucket_sizes,
    build_csr,
    coalesce,
    csr_from_graph,
    edge_mask,
    from_jraph,
    graph_mask,
    graph_pool,
    node_graph_index,
    next_bucket,
    node_mask,
    pad_graph,
    pad_to_bucket,
    remove_self_loops,
    symmetrize,
    to_jraph,
    unbatch,
)


def random_graph(rng: np.random.Generator, n: int, e: int, d: int = 3) -> Graph:
    return Graph(
        nodes=rng.standard_normal((n, d)).astype(np.float32),
        edges=rng.standard_normal((e, 2)).astype(np.float32),
        senders=rng.integers(0, n, e).astype(np.int32),
        receivers=rng.integers(0, n, e).astype(np.int32),
        globals=rng.standard_normal((1, 4)).astype(np.float32),
        n_node=np.array([n], np.int32),
        n_edge=np.array([e], np.int32),
    )


def test_batch_offsets_and_unbatch_roundtrip():
    rng = np.random.default_rng(0)
    gs = [random_graph(rng, n, e) for n, e in [(4, 6), (1, 0), (7, 9)]]
    b = batch(gs)
    assert b.nodes.shape == (12, 3) and b.senders.shape == (15,)
    np.testing.assert_array_equal(b.n_node, [4, 1, 7])
    np.testing.assert_array_equal(b.senders[6:], gs[2].senders + 5)  # offset 4 + 1
    for g, back in zip(gs, unbatch(b)):
        for field in Graph._fields:
            np.testing.assert_array_equal(getattr(g, field), getattr(back, field))


def test_batch_rejects_inconsistent_graph():
    g = random_graph(np.random.default_rng(1), 3, 2)
    bad = g._replace(senders=np.array([0, 5], np.int32))
    with pytest.raises(ValueError, match="out of range"):
        batch([g, bad])
    with pytest.raises(ValueError, match="None in some graphs"):
        batch([g, g._replace(edges=None)])


def test_pad_graph_follows_jraph_convention():
    rng = np.random.default_rng(2)
    b = batch([random_graph(rng, 3, 4), random_graph(rng, 2, 1)])
    p = pad_graph(b, n_node=8, n_edge=8, n_graph=4)
    assert p.nodes.shape == (8, 3) and p.edges.shape == (8, 2) and p.globals.shape == (4, 4)
    np.testing.assert_array_equal(p.n_node, [3, 2, 3, 0])
    np.testing.assert_array_equal(p.n_edge, [4, 1, 3, 0])
    assert (p.senders[5:] == 5).all() and (p.receivers[5:] == 5).all()  # first padded node
    assert not p.nodes[5:].any()
    # masks: graph 2 is the padding graph, graph 3 an empty trailing graph (jraph)
    np.testing.assert_array_equal(node_mask(p), np.arange(8) < 5)
    np.testing.assert_array_equal(edge_mask(p), np.arange(8) < 5)
    np.testing.assert_array_equal(graph_mask(p), [True, True, False, False])
    with pytest.raises(ValueError, match="too small"):
        pad_graph(b, n_node=5, n_edge=8, n_graph=4)  # no spare node


def test_graph_index_and_pooling_under_jit():
    rng = np.random.default_rng(8)
    b = batch([random_graph(rng, 3, 2), random_graph(rng, 2, 1)])
    p = jax.tree.map(jnp.asarray, pad_graph(b, n_node=8, n_edge=4, n_graph=4))
    np.testing.assert_array_equal(node_graph_index(p), [0, 0, 0, 1, 1, 2, 2, 2])
    x = p.nodes
    for mode, fn in [("sum", np.sum), ("mean", np.mean), ("max", np.max)]:
        out = jax.jit(lambda x, g, mode=mode: graph_pool(x, g, mode=mode))(x, p)
        np.testing.assert_allclose(out[0], fn(np.asarray(x[:3]), 0), rtol=1e-6)
        np.testing.assert_allclose(out[1], fn(np.asarray(x[3:5]), 0), rtol=1e-6)
        assert not np.asarray(out[3]).any()  # empty trailing graph -> 0
    with pytest.raises(ValueError, match="mode"):
        graph_pool(x, p, mode="median")


def test_bucket_ladder():
    assert next_bucket(0) == 8 and next_bucket(8) == 8 and next_bucket(9) == 16
    assert bucket_sizes(100, 1000, 3) == (128, 1024, 4)
    assert bucket_sizes(127, 1000, 2)[0] == 128 and bucket_sizes(128, 1000, 2)[0] == 256
    with pytest.raises(ValueError):
        next_bucket(-1)


def test_padded_batches_compile_once_per_bucket():
    rng = np.random.default_rng(3)
    traces = []

    @jax.jit
    def pooled(g: Graph, csr):
        traces.append(1)
        from geofm.ops import propagate
        h = propagate(g.nodes, None, csr)
        return jnp.sum(jnp.where(node_mask(g)[:, None], h, 0.0))

    sizes = [(20, 65), (25, 90), (30, 128), (17, 70)]  # all in bucket (32, 128, 2)
    for n, e in sizes:
        p = pad_to_bucket(random_graph(rng, n, e))
        assert p.nodes.shape[0] == 32 and p.senders.shape[0] == 128
        csr = csr_from_graph(p, padded=True)
        pooled(jax.tree.map(jnp.asarray, p), csr)
    assert len(traces) == 1
    pooled(jax.tree.map(jnp.asarray, pad_to_bucket(random_graph(rng, 40, 60))),
           csr_from_graph(pad_to_bucket(random_graph(rng, 40, 60)), padded=True))
    assert len(traces) == 2  # next node bucket -> exactly one more compilation


def test_edge_index_helpers():
    ei = np.array([[0, 1, 1, 2, 2], [1, 0, 0, 2, 0]])
    np.testing.assert_array_equal(coalesce(ei), [[0, 1, 2, 2], [1, 0, 0, 2]])
    np.testing.assert_array_equal(remove_self_loops(ei), [[0, 1, 1, 2], [1, 0, 0, 0]])
    sym = symmetrize(ei)
    pairs = set(map(tuple, sym.T))
    assert pairs == {(0, 1), (1, 0), (2, 2), (2, 0), (0, 2)}
    loops = add_self_loops(ei, 4)
    assert loops.shape == (2, 8)  # nodes 0, 1, 3 get loops; 2 already has one
    np.testing.assert_array_equal(loops[:, :5], ei)
    assert sym.dtype == np.int32 and loops.dtype == np.int32
    with pytest.raises(ValueError, match=r"shape \[2, E\]"):
        coalesce(np.zeros((3, 2), int))
    with pytest.raises(ValueError, match="out of range"):
        add_self_loops(ei, 2)
    with pytest.raises(ValueError, match="negative"):
        symmetrize(np.array([[0], [-1]]))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=40))
def test_symmetrize_is_symmetric_and_deduplicated(edges):
    ei = np.array(edges, dtype=np.int64).reshape(-1, 2).T
    sym = symmetrize(ei, num_nodes=10)
    pairs = list(map(tuple, sym.T))
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == {(a, b) for a, b in edges} | {(b, a) for a, b in edges}


def test_build_csr_orders_and_static_shapes():
    rng = np.random.default_rng(4)
    n, e = 30, 200
    s, r = rng.integers(0, n, e), rng.integers(0, n, e)
    mask = rng.random(e) < 0.8
    csr = build_csr(s, r, n, edge_mask=mask, chunk=4)
    perm, off = np.asarray(csr.perm), np.asarray(csr.offsets)
    assert off[-1] == mask.sum()
    for i in range(n):  # receiver-sorted order: row i's edges, stable, masked excluded
        np.testing.assert_array_equal(perm[off[i]:off[i + 1]], np.flatnonzero((r == i) & mask))
    tperm, toff = np.asarray(csr.t_perm), np.asarray(csr.t_offsets)
    for j in range(n):
        np.testing.assert_array_equal(tperm[toff[j]:toff[j + 1]], np.flatnonzero((s == j) & mask))
    np.testing.assert_array_equal(csr.in_degree, np.bincount(r[mask], minlength=n))
    # every unmasked edge appears exactly once in each chunk plan
    for plan in (csr.fwd, csr.bwd):
        ids = np.asarray(plan.edge).ravel()
        np.testing.assert_array_equal(np.sort(ids[ids < e]), np.flatnonzero(mask))
        assert (np.diff(np.asarray(plan.row)) >= 0).all()
    # static shapes depend on (N, E, chunk) only
    other = build_csr(rng.integers(0, n, e), np.zeros(e, int), n, chunk=4)
    assert jax.tree.map(jnp.shape, other) == jax.tree.map(jnp.shape, csr)
    with pytest.raises(ValueError, match="out of range"):
        build_csr([0, 5], [1, 2], 5)
    with pytest.raises(ValueError, match="edge_mask"):
        build_csr([0, 1], [1, 2], 5, edge_mask=[True])


def test_jraph_roundtrip():
    jraph = pytest.importorskip("jraph", reason="optional interop extra 'jraph' not installed")
    g = random_graph(np.random.default_rng(5), 5, 7)
    gt = to_jraph(g)
    assert isinstance(gt, jraph.GraphsTuple)
    back = from_jraph(gt)
    for field in Graph._fields:
        np.testing.assert_array_equal(getattr(g, field), getattr(back, field))
    # jraph's own padding mask agrees with ours on our padded graph
    p = pad_to_bucket(g)
    np.testing.assert_array_equal(jraph.get_node_padding_mask(to_jraph(p)), node_mask(p))
    np.testing.assert_array_equal(jraph.get_edge_padding_mask(to_jraph(p)), edge_mask(p))
