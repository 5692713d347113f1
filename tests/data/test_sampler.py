"""Subgraph sampler: BFS reference, fanout limits, padding buckets, determinism, resume."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from geofm import graph as gr
from geofm.data import synthetic
from geofm.data.sampler import SubgraphBatch, SubgraphSampler, loader, make_iterator


@pytest.fixture(scope="module")
def mixed():
    return synthetic.mixed_dataset(seed=0, depth=3, num_cliques=5, rows=5, cols=5)


def adjacency(ds) -> list[set[int]]:
    nb: list[set[int]] = [set() for _ in range(ds.num_nodes)]
    for u, v in ds.edge_index.T.tolist():
        if u != v:
            nb[u].add(v)
            nb[v].add(u)
    return nb


def bfs_dist(nb: list[set[int]], src: int, hops: int) -> dict[int, int]:
    dist, queue = {src: 0}, deque([src])
    while queue:
        x = queue.popleft()
        if dist[x] == hops:
            continue
        for y in nb[x]:
            if y not in dist:
                dist[y] = dist[x] + 1
                queue.append(y)
    return dist


def samples(batch: SubgraphBatch) -> list[tuple[np.ndarray, set[tuple[int, int]]]]:
    """Per real sample: original node ids (batch order) and original-id edge set."""
    g = batch.graph
    n_off = np.concatenate([[0], np.cumsum(g.n_node)])
    e_off = np.concatenate([[0], np.cumsum(g.n_edge)])
    out = []
    for i in np.flatnonzero(batch.sample_mask):
        ids = batch.node_ids[n_off[i]:n_off[i + 1]]
        s, r = g.senders[e_off[i]:e_off[i + 1]], g.receivers[e_off[i]:e_off[i + 1]]
        assert np.all((s >= n_off[i]) & (s < n_off[i + 1]) & (r >= n_off[i]) & (r < n_off[i + 1]))
        out.append((ids, {(int(batch.node_ids[a]), int(batch.node_ids[b])) for a, b in zip(s, r)}))
    return out


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_ego_subgraphs_match_bfs(mixed, hops: int) -> None:
    nb = adjacency(mixed)
    sampler = SubgraphSampler(mixed.edge_index, mixed.num_nodes, fanouts=[-1] * hops, bucket_minimum=16)
    centers = np.array([0, 3, 17, 60, mixed.num_nodes - 1, 3])  # duplicates are separate samples
    batch = sampler.sample(centers, np.random.default_rng(0), batch_size=8)
    got = samples(batch)
    assert len(got) == centers.size
    for c, (ids, edges) in zip(centers.tolist(), got):
        dist = bfs_dist(nb, c, hops)
        assert ids[0] == c and sorted(ids.tolist()) == sorted(dist)
        assert np.all(np.diff([dist[i] for i in ids.tolist()]) >= 0)  # hop order
        want = {(u, v) for u in dist for v in nb[u] if v in dist}
        assert edges == want
    np.testing.assert_array_equal(batch.node_ids[batch.centers[: centers.size]], centers)


def test_fanout_limits_and_parents(mixed) -> None:
    nb = adjacency(mixed)
    sampler = SubgraphSampler(mixed.edge_index, mixed.num_nodes, fanouts=[2, 3])
    rng = np.random.default_rng(1)
    centers = rng.integers(0, mixed.num_nodes, 40)
    batch = sampler.sample(centers, rng)
    for c, (ids, edges) in zip(centers.tolist(), samples(batch)):
        dist = bfs_dist(nb, c, 2)
        assert all(i in dist for i in ids.tolist()) and len(set(ids.tolist())) == ids.size
        k1 = min(2, len(nb[c]))
        hop1, hop2 = set(ids[1:1 + k1].tolist()), ids[1 + k1:].tolist()
        assert hop1 <= nb[c]  # first hop: k1 distinct neighbours of the centre
        assert len(hop2) <= 3 * k1
        assert all(nb[h] & hop1 for h in hop2)  # every hop-2 node hangs off a sampled hop-1 node
        want = {(u, v) for u in ids.tolist() for v in nb[u] if v in set(ids.tolist())}
        assert edges == want


def test_fanout_is_uniform_without_replacement() -> None:
    # star centre with 100 leaves (the rejection branch) and 12 leaves (the rank branch)
    for leaves in (100, 12):
        ei = np.stack([np.zeros(leaves, np.int64), np.arange(1, leaves + 1)])
        sampler = SubgraphSampler(ei, leaves + 1, fanouts=[5])
        rng = np.random.default_rng(2)
        counts = np.zeros(leaves + 1)
        trials = 400
        for _ in range(trials):
            sid, nid = sampler.node_sets(np.zeros(1, np.int64), rng)
            assert nid.size == 6 and np.unique(nid).size == 6
            counts[nid[1:]] += 1
        freq = counts[1:] / trials
        expected = 5 / leaves
        assert abs(freq.mean() - expected) < 1e-9
        assert np.abs(freq - expected).max() < 5 * np.sqrt(expected * (1 - expected) / trials) + 0.02


def test_max_nodes_cap(mixed) -> None:
    sampler = SubgraphSampler(mixed.edge_index, mixed.num_nodes, fanouts=[-1, -1, -1], max_nodes=7)
    batch = sampler.sample(np.arange(30), np.random.default_rng(0))
    assert batch.graph.n_node[:-1].max() <= 7
    nb = adjacency(mixed)
    for c, (ids, _) in zip(range(30), samples(batch)):
        assert ids.size == min(7, len(bfs_dist(nb, c, 3)))


def test_padding_shapes_and_masks(mixed) -> None:
    sampler = SubgraphSampler(mixed.edge_index, mixed.num_nodes, fanouts=[4, 4], bucket_minimum=32)
    ds = loader(sampler, batch_size=16, seed=0, num_epochs=3)
    ladder = {32 * 2**j for j in range(12)}
    shapes = set()
    for batch in ds:
        g = batch.graph
        n_pad, e_pad = g.senders.shape[0], batch.node_ids.shape[0]
        assert n_pad in ladder and e_pad in ladder
        assert g.n_node.shape == (17,) and batch.centers.shape == (16,)
        assert int(g.n_node.sum()) == e_pad and int(g.n_edge.sum()) == n_pad
        real = int(g.n_node[:-1].sum())
        assert int(np.asarray(gr.node_mask(g)).sum()) == real == int((batch.node_ids >= 0).sum())
        assert int(np.asarray(gr.edge_mask(g)).sum()) == int(g.n_edge[:-1].sum())
        assert np.all(g.senders < e_pad) and np.all(g.receivers < e_pad)
        shapes.add((n_pad, e_pad))
    assert 1 <= len(shapes) <= 4
    total = 3 * mixed.num_nodes  # 285 = 17 * 16 + 13: the final batch is partial
    assert len(ds) == -(-total // 16)
    last = ds[len(ds) - 1]
    assert last.sample_mask.sum() == total - (len(ds) - 1) * 16 < 16
    assert np.all(last.center_ids[~last.sample_mask] == -1)
    assert np.all(last.node_ids[last.centers[~last.sample_mask]] == -1)  # points at padding


def test_epoch_covers_every_node_once(mixed) -> None:
    sampler = SubgraphSampler(mixed.edge_index, mixed.num_nodes, fanouts=[2])
    seen = np.concatenate([b.center_ids[b.sample_mask] for b in loader(sampler, batch_size=32, seed=3)])
    np.testing.assert_array_equal(np.sort(seen), np.arange(mixed.num_nodes))
    two = np.concatenate([b.center_ids[b.sample_mask]
                          for b in loader(sampler, batch_size=32, seed=3, num_epochs=2)])
    assert not np.array_equal(two[: mixed.num_nodes], two[mixed.num_nodes:])  # reshuffled per epoch


def assert_same(a: SubgraphBatch, b: SubgraphBatch) -> None:
    for x, y in zip((a.node_ids, a.centers, a.center_ids, a.sample_mask, a.graph.senders,
                     a.graph.receivers, a.graph.n_node, a.graph.n_edge),
                    (b.node_ids, b.centers, b.center_ids, b.sample_mask, b.graph.senders,
                     b.graph.receivers, b.graph.n_node, b.graph.n_edge)):
        np.testing.assert_array_equal(x, y)


def test_determinism_and_resume(mixed) -> None:
    feats = np.random.default_rng(0).normal(size=(mixed.num_nodes, 3)).astype(np.float32)
    sampler = SubgraphSampler(mixed.edge_index, mixed.num_nodes, fanouts=[3, 2], features=feats)
    make = lambda seed: loader(sampler, mixed.splits["train"], batch_size=8, seed=seed, num_epochs=None)
    it_a, it_b = make_iterator(make(11)), make_iterator(make(11), num_threads=0)
    first = [next(it_a) for _ in range(5)]
    for x in first:
        assert_same(x, next(it_b))
        np.testing.assert_array_equal(x.graph.nodes[x.node_ids >= 0], feats[x.node_ids[x.node_ids >= 0]])
        assert np.all(np.isin(x.center_ids, mixed.splits["train"]))
    other = make(12)[0]
    assert not np.array_equal(other.center_ids, first[0].center_ids)
    state = it_a.get_state()
    cont = [next(it_a) for _ in range(4)]
    resumed = make_iterator(make(11), num_threads=2, prefetch=3)
    resumed.set_state(state)
    for x in cont:
        assert_same(x, next(resumed))


def test_bad_input(mixed) -> None:
    with pytest.raises(ValueError, match="fanouts"):
        SubgraphSampler(mixed.edge_index, mixed.num_nodes, fanouts=[0])
    with pytest.raises(ValueError, match="outside"):
        SubgraphSampler(np.array([[0], [10]]), 5)
    with pytest.raises(ValueError, match="features"):
        SubgraphSampler(mixed.edge_index, mixed.num_nodes, features=np.zeros((3, 2)))
    sampler = SubgraphSampler(mixed.edge_index, mixed.num_nodes)
    with pytest.raises(ValueError, match="centre ids"):
        sampler.sample(np.array([mixed.num_nodes]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="batch_size"):
        sampler.sample(np.arange(4), np.random.default_rng(0), batch_size=2)
    with pytest.raises(ValueError, match="nodes"):
        loader(sampler, np.array([-1]), batch_size=2, seed=0)


def test_buckets_bound_compilations(mixed) -> None:
    """A jitted step over a whole epoch compiles once per distinct padded shape, and few."""
    import jax
    import jax.numpy as jnp

    traces: list[tuple[int, int]] = []

    @jax.jit
    def degree_sum(node_ids, senders, receivers):
        traces.append((node_ids.shape[0], senders.shape[0]))
        return jax.ops.segment_sum(jnp.ones_like(senders), receivers, num_segments=node_ids.shape[0]).sum()

    sampler = SubgraphSampler(mixed.edge_index, mixed.num_nodes, fanouts=[3, 3], bucket_minimum=32)
    shapes = set()
    for b in loader(sampler, batch_size=8, seed=0, num_epochs=2):
        degree_sum(b.node_ids, b.graph.senders, b.graph.receivers)
        shapes.add((b.node_ids.shape[0], b.graph.senders.shape[0]))
    assert len(traces) == len(shapes) <= 3
