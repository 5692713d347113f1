"""Subgraph sampling: k-hop ego subgraphs and GraphSAGE-style fanout sampling.

One code path: ``fanouts[t]`` neighbours are drawn (uniformly, without
replacement) for every node discovered at hop t; ``-1`` takes all of them, so
``fanouts=[-1, -1]`` is the 2-hop ego subgraph and ``[10, 10]`` is GraphSAGE's
sampler. Each sample (one centre node) becomes one graph of a jraph-layout
``Graph`` batch whose nodes are the sampled nodes (the centre first, then hop 1,
hop 2, ...) and whose edges are ALL edges of the input graph among them (the
induced subgraph, both directions), so cycles and cliques stay visible to the
geometry-aware layers.

Batches are padded with ``geofm.graph.pad_graph`` to a node / edge count on the
bucket ladder ``minimum * growth**j`` and always hold ``batch_size`` sample graphs
(missing samples are empty graphs flagged by ``sample_mask``) plus the padding
graph, so a run sees a handful of shapes.

``loader(...)`` wraps the sampler in a ``grain.MapDataset``: seeded shuffle of
the node ids (reshuffled every epoch), batching, and a ``random_map`` whose RNG
is derived from (seed, batch index). Batch i is therefore a pure function of
(seed, i): iterators (``make_iterator``) are deterministic, and ``it.get_state()`` (a small dict,
``{"next_index": i}``) saved in a checkpoint restores the exact continuation
with ``it.set_state(state)``.

Cost per batch: O(sum over sampled frontier nodes of their degree) to sample,
plus O(sum of degrees of the sampled nodes * log) for the induced edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import grain
import numpy as np

from geofm.graph import Graph, next_bucket, pad_graph


class SubgraphBatch(NamedTuple):
    """A padded batch of sampled subgraphs (host numpy).

    graph: ``Graph`` with ``batch_size + 1`` graphs (the last is jraph's padding graph);
        nodes = ``features[node_ids]`` (zeros on padding) or None; edges/globals None.
    node_ids: [N_pad] int32 original node id of every batch node, -1 on padding nodes.
    centers: [B] int32 batch index of each sample's centre node (the padding node for
        missing samples, so gathers stay in range).
    center_ids: [B] int32 original id of each centre, -1 for missing samples.
    sample_mask: [B] bool, True for real samples.
    """

    graph: Graph
    node_ids: np.ndarray
    centers: np.ndarray
    center_ids: np.ndarray
    sample_mask: np.ndarray


def _unique(x: np.ndarray, *, return_counts: bool = False):
    """Sorted unique values of a 1-D int array (and counts), via sort + mask.

    numpy 2.4's hash-based ``np.unique`` is ~100x slower than sorting on large
    int64 arrays, so hot paths use this instead.
    """
    s = np.sort(x, kind="stable")
    first = np.r_[True, s[1:] != s[:-1]] if s.size else np.zeros(0, dtype=bool)
    if not return_counts:
        return s[first]
    starts = np.flatnonzero(first)
    return s[first], np.diff(np.r_[starts, s.size])


def _csr(edge_index: np.ndarray, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric, loop-free, duplicate-free CSR (indptr [N+1], indices [2M], both int64)."""
    ei = np.asarray(edge_index)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {ei.shape}")
    if ei.size and not np.issubdtype(ei.dtype, np.integer):
        raise ValueError(f"edge_index must be integer, got dtype {ei.dtype}")
    ei = ei.astype(np.int64)
    if ei.size and (ei.min() < 0 or ei.max() >= num_nodes):
        raise ValueError(f"edge_index holds ids outside [0, {num_nodes})")
    ei = ei[:, ei[0] != ei[1]]
    keys = _unique(np.concatenate([ei[0] * num_nodes + ei[1], ei[1] * num_nodes + ei[0]]))
    rows = keys // max(num_nodes, 1)
    indptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=num_nodes), out=indptr[1:])
    return indptr, keys % max(num_nodes, 1)


def _random_order(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Permutation sorting non-negative int ``groups`` ascending, uniformly random inside a group."""
    return np.argsort(groups.astype(np.float64) + rng.random(groups.size), kind="stable")


def _group_rank(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rank of every element inside its group under a uniformly random order: [K] int64."""
    if groups.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = _random_order(groups, rng)
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    counts = np.diff(np.r_[starts, g.size])
    rank = np.empty(groups.size, dtype=np.int64)
    rank[order] = np.arange(g.size) - np.repeat(starts, counts)
    return rank


def _isin_sorted(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(query.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.size - 1)
    return sorted_keys[pos] == query


class SubgraphSampler:
    """Samples subgraphs around centre nodes of one graph (host, vectorised numpy).

    edge_index: [2, E] integer ids in [0, num_nodes); symmetrised, self-loops and
        duplicates dropped.
    fanouts: per hop, neighbours drawn per node (-1 = all). ``[-1] * k`` = k-hop ego.
    max_nodes: optional cap on nodes per sample (centre included); the hop that
        overflows it keeps a uniform random subset. Without it a sample holds at most
        1 + f1 + f1 f2 + ... nodes (unbounded with -1 hops: cap ego subgraphs on
        graphs with hubs, or use fanouts).
    features: optional [num_nodes, ...] array gathered into ``graph.nodes``.
    bucket_minimum / bucket_growth: the padding ladder (see ``geofm.graph.next_bucket``).
    """

    def __init__(
        self,
        edge_index: np.ndarray,
        num_nodes: int,
        *,
        fanouts: Sequence[int] = (10, 10),
        max_nodes: int | None = None,
        features: np.ndarray | None = None,
        bucket_minimum: int = 64,
        bucket_growth: int = 2,
    ) -> None:
        if not isinstance(num_nodes, (int, np.integer)) or num_nodes < 1:
            raise ValueError(f"num_nodes must be a positive int, got {num_nodes!r}")
        fanouts = [int(f) for f in fanouts]
        if not fanouts or any(f == 0 or f < -1 for f in fanouts):
            raise ValueError(f"fanouts must be a non-empty list of ints >= 1 or -1 (all), got {fanouts}")
        if max_nodes is not None and max_nodes < 1:
            raise ValueError(f"max_nodes must be >= 1, got {max_nodes}")
        if features is not None and np.shape(features)[0] != num_nodes:
            raise ValueError(f"features has {np.shape(features)[0]} rows, expected num_nodes={num_nodes}")
        self.num_nodes = int(num_nodes)
        self.indptr, self.indices = _csr(edge_index, self.num_nodes)
        self.deg = np.diff(self.indptr)
        rows = np.repeat(np.arange(self.num_nodes, dtype=np.int64), self.deg)
        self.keys = rows * self.num_nodes + self.indices  # sorted (CSR order)
        self.fanouts = fanouts
        self.max_nodes = max_nodes
        self.features = None if features is None else np.asarray(features)
        self.bucket_minimum = bucket_minimum
        self.bucket_growth = bucket_growth

    # -------------------------------------------------------------- node sets
    def _neighbours(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For nodes [K]: (owner index in [0, K) per neighbour entry, neighbour id)."""
        deg = self.deg[nodes]
        owner = np.repeat(np.arange(nodes.size), deg)
        start = np.repeat(self.indptr[nodes], deg)
        offset = np.arange(owner.size) - np.repeat(np.cumsum(deg) - deg, deg)
        return owner, self.indices[start + offset]

    def _draw(self, nodes: np.ndarray, fanout: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``fanout`` distinct uniform neighbours of each node (-1: all of them).

        Returns (owner index in [0, K), neighbour id). Nodes with degree <= fanout keep
        all neighbours; for the others, offsets are drawn with replacement and
        de-duplicated until ``fanout`` distinct ones are held (a uniform random subset,
        by symmetry) when degree > 8 * fanout, costing O(fanout) per node instead of
        O(degree); otherwise a random-rank selection over the neighbour list.
        """
        if fanout < 0:
            return self._neighbours(nodes)
        deg = self.deg[nodes]
        # all neighbours, then keep a random `fanout` of them where degree <= 8 * fanout
        mid = np.flatnonzero(deg <= 8 * fanout)
        owner_m, nbr_m = self._neighbours(nodes[mid])
        keep = (deg[mid][owner_m] <= fanout) | (_group_rank(owner_m, rng) < fanout)
        owner_m, nbr_m = mid[owner_m[keep]], nbr_m[keep]
        # high degree: draw offsets with replacement, de-duplicate, top up (few rounds)
        big = np.flatnonzero(deg > 8 * fanout)
        width = int(deg.max(initial=1))
        chosen = np.zeros(0, dtype=np.int64)  # keys: big-index * width + offset
        need = np.full(big.size, fanout, dtype=np.int64)
        while need.sum() > 0:
            who = np.repeat(np.arange(big.size), need)
            off = np.floor(rng.random(who.size) * deg[big][who]).astype(np.int64)
            chosen = _unique(np.concatenate([chosen, who * width + off]))
            need = fanout - np.bincount(chosen // width, minlength=big.size)
        owner_b = big[chosen // width]
        nbr_b = self.indices[self.indptr[nodes[owner_b]] + chosen % width]
        return np.concatenate([owner_m, owner_b]), np.concatenate([nbr_m, nbr_b])

    def node_sets(self, centers: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Sampled nodes of every sample: (sample id [K], node id [K]) in sample-major,
        hop-by-hop order with each sample's centre first. Nodes are unique per sample."""
        centers = np.asarray(centers, dtype=np.int64)
        if centers.size and (centers.min() < 0 or centers.max() >= self.num_nodes):
            raise ValueError(f"centre ids must be in [0, {self.num_nodes})")
        n = self.num_nodes
        sids = [np.arange(centers.size, dtype=np.int64)]
        nids = [centers]
        count = np.ones(centers.size, dtype=np.int64)
        visited = np.sort(sids[0] * n + centers)
        f_sid, f_nid = sids[0], centers
        for fanout in self.fanouts:
            owner, nbr = self._draw(f_nid, fanout, rng)
            keys = _unique(f_sid[owner] * n + nbr)
            keys = keys[~_isin_sorted(visited, keys)]
            new_sid, new_nid = keys // n, keys % n
            if self.max_nodes is not None:
                room = self.max_nodes - count[new_sid]
                keep = _group_rank(new_sid, rng) < room
                new_sid, new_nid = new_sid[keep], new_nid[keep]
            # random order inside each sample's new hop (not sorted by id)
            order = _random_order(new_sid, rng)
            new_sid, new_nid = new_sid[order], new_nid[order]
            count += np.bincount(new_sid, minlength=centers.size)
            visited = np.sort(np.concatenate([visited, new_sid * n + new_nid]))
            sids.append(new_sid)
            nids.append(new_nid)
            f_sid, f_nid = new_sid, new_nid
        sid, nid = np.concatenate(sids), np.concatenate(nids)
        order = np.argsort(sid, kind="stable")  # sample-major, hop order kept inside a sample
        return sid[order], nid[order]

    def induced_edges(self, sid: np.ndarray, nid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All input edges among each sample's nodes: (senders, receivers) as positions in
        the (sid, nid) arrays, grouped by receiver (hence by sample).

        Ordinary nodes scan their neighbour lists against their sample. A hub (degree
        larger than its sample) is not scanned: its edges to ordinary nodes are the
        reverses of what those nodes' scans find, and hub-hub pairs of a sample are
        tested against the global adjacency. Cost O(sum_v min(d_v, |S_v|)) lookups;
        membership uses a dense [samples, N] bit table when that is <= 32 MB, else
        binary search.
        """
        n = self.num_nodes
        size = np.bincount(sid)
        start = np.concatenate([[0], np.cumsum(size)[:-1]])
        hub = self.deg[nid] > size[sid]
        # (a) scans of ordinary nodes: edge (neighbour -> node) when the neighbour is sampled
        idx = np.flatnonzero(~hub)
        owner, nbr = self._neighbours(nid[idx])
        owner = idx[owner]
        snd_a = self._positions(sid, nid, sid[owner], nbr)
        ok = snd_a >= 0
        snd_a, rcv_a = snd_a[ok], owner[ok]
        # (b) ordinary node -> hub: reverses of the scanned edges whose sender is a hub
        back = hub[snd_a]
        snd_b, rcv_b = rcv_a[back], snd_a[back]
        # (c) hub <-> hub inside the same sample
        hidx = np.flatnonzero(hub)
        hcount = np.bincount(sid[hidx], minlength=size.size)
        hstart = np.concatenate([[0], np.cumsum(hcount)[:-1]])
        reps = hcount[sid[hidx]]
        rcv_c = np.repeat(hidx, reps)
        first = np.repeat(hstart[sid[hidx]], reps)
        snd_c = hidx[first + np.arange(rcv_c.size) - np.repeat(np.cumsum(reps) - reps, reps)]
        keep = (snd_c != rcv_c) & self._adjacent(nid[snd_c], nid[rcv_c])
        snd = np.concatenate([snd_a, snd_b, snd_c[keep]])
        rcv = np.concatenate([rcv_a, rcv_b, rcv_c[keep]])
        order_e = np.argsort(rcv, kind="stable")  # receiver-sorted, as geofm.ops expects
        return snd[order_e].astype(np.int64), rcv[order_e].astype(np.int64)

    def _positions(self, sid: np.ndarray, nid: np.ndarray, q_sid: np.ndarray, q_nid: np.ndarray) -> np.ndarray:
        """Position of (q_sid, q_nid) in the (sid, nid) arrays, -1 where not sampled."""
        n = self.num_nodes
        num_samples = int(sid.max(initial=-1)) + 1
        if num_samples * n <= 32 * 2**20:  # dense membership bits first: O(1) per query
            member = np.zeros(num_samples * n, dtype=bool)
            member[sid * n + nid] = True
            hit = np.flatnonzero(member[q_sid * n + q_nid])
        else:
            hit = np.arange(q_sid.size)
        keys = sid * n + nid
        order = np.argsort(keys)
        sorted_keys = keys[order]
        q = q_sid[hit] * n + q_nid[hit]
        pos = np.minimum(np.searchsorted(sorted_keys, q), max(sorted_keys.size - 1, 0))
        out = np.full(q_sid.size, -1, dtype=np.int64)
        found = sorted_keys[pos] == q if sorted_keys.size else np.zeros(q.size, bool)
        out[hit[found]] = order[pos[found]]
        return out

    def _adjacent(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """[K] bool: is (u, v) an edge? Binary search in the global sorted key array."""
        return _isin_sorted(self.keys, u * self.num_nodes + v)

    # -------------------------------------------------------------- batches
    def sample(self, centers: np.ndarray, rng: np.random.Generator, *, batch_size: int | None = None) -> SubgraphBatch:
        """Sample around ``centers`` [b] and pad to ``batch_size`` (default b) sample graphs.

        The graph has exactly ``batch_size + 1`` graphs; node and edge counts are padded
        to the bucket ladder. Deterministic given the state of ``rng``.
        """
        centers = np.asarray(centers, dtype=np.int64).reshape(-1)
        b = centers.size
        bs = b if batch_size is None else int(batch_size)
        if bs < b or bs < 1:
            raise ValueError(f"batch_size={bs} must be >= 1 and >= the number of centres ({b})")
        sid, nid = self.node_sets(centers, rng)
        snd, rcv = self.induced_edges(sid, nid)
        n_node = np.bincount(sid, minlength=bs).astype(np.int32)
        n_edge = np.bincount(sid[rcv], minlength=bs).astype(np.int32)
        nodes = None if self.features is None else self.features[nid]
        g = Graph(nodes=nodes, edges=None, senders=snd.astype(np.int32), receivers=rcv.astype(np.int32),
                  globals=None, n_node=n_node, n_edge=n_edge)
        total_n, total_e = int(sid.size), int(snd.size)
        pn = next_bucket(total_n + 1, minimum=self.bucket_minimum, growth=self.bucket_growth)
        pe = next_bucket(total_e, minimum=self.bucket_minimum, growth=self.bucket_growth)
        g = pad_graph(g, n_node=pn, n_edge=pe, n_graph=bs + 1)
        node_ids = np.full(pn, -1, dtype=np.int32)
        node_ids[:total_n] = nid
        starts = np.concatenate([[0], np.cumsum(n_node)[:-1]]).astype(np.int32)
        mask = np.arange(bs) < b
        centers_pos = np.where(mask, starts, total_n).astype(np.int32)
        center_ids = np.full(bs, -1, dtype=np.int32)
        center_ids[:b] = centers
        return SubgraphBatch(g, node_ids, centers_pos, center_ids, mask)


class _SampleBatch(grain.transforms.RandomMap):
    """grain transform: node ids [b] + per-index RNG -> SubgraphBatch (picklable)."""

    def __init__(self, sampler: SubgraphSampler, batch_size: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size

    def random_map(self, element: np.ndarray, rng: np.random.Generator) -> SubgraphBatch:
        return self.sampler.sample(element, rng, batch_size=self.batch_size)


def loader(
    sampler: SubgraphSampler,
    nodes: np.ndarray | None = None,
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = 1,
    drop_remainder: bool = False,
) -> grain.MapDataset:
    """A ``grain.MapDataset`` of ``SubgraphBatch`` over ``nodes`` (default: all nodes).

    Node ids are shuffled with ``seed`` (a new order every epoch), repeated
    ``num_epochs`` times (None = forever; epochs then flow into each other, so
    only the very last batch can be partial) and cut into batches of ``batch_size``.
    Random access: ``ds[i]`` is batch i. Iterate with ``it = make_iterator(ds)``
    (bounded read-ahead; plain ``iter(ds)`` prefetches hundreds of batches);
    ``it.get_state()`` / ``it.set_state(state)`` resume exactly. Multi-host: give
    each process its slice, ``ds[jax.process_index()::jax.process_count()]``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
    ids = np.arange(sampler.num_nodes, dtype=np.int64) if nodes is None else np.asarray(nodes, np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"nodes must be a non-empty 1-D array of node ids, got shape {ids.shape}")
    if ids.min() < 0 or ids.max() >= sampler.num_nodes:
        raise ValueError(f"nodes hold ids outside [0, {sampler.num_nodes})")
    ds = grain.MapDataset.source(ids).seed(seed)
    if shuffle:
        ds = ds.shuffle()
    ds = ds.repeat(num_epochs)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.random_map(_SampleBatch(sampler, batch_size))


def make_iterator(ds: grain.MapDataset, *, num_threads: int = 1, prefetch: int = 2) -> grain.DatasetIterator:
    """Iterator over a loader / mixture with bounded read-ahead.

    ``iter(ds)`` uses grain's defaults (16 threads, 500 prefetched elements), which
    samples hundreds of batches ahead; this keeps ``prefetch`` batches in flight on
    ``num_threads`` threads (0 = synchronous). State: ``get_state()`` / ``set_state()``.
    """
    if num_threads < 0 or prefetch < 0:
        raise ValueError(f"num_threads and prefetch must be >= 0, got {num_threads}, {prefetch}")
    opts = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch if num_threads else 0)
    return iter(ds.to_iter_dataset(opts))
