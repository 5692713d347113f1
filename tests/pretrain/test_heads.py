"""Graph-level and link-level (relation) adaptation heads on a frozen GraphGlue backbone."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from geofm import adapt, glue
from geofm.data.sampler import SubgraphSampler
from geofm.pretrain import Domain

IN_DIM = 8


def _model() -> glue.GlueModel:
    cfg = glue.GlueConfig(dim=16, num_generators=4, knn=3, att_dim=8, max_nodes=12)
    return glue.GlueModel(cfg, in_dim=IN_DIM, num_domains=2, rngs=nnx.Rngs(0))


def _graph(dense: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A sparse path-like tree (class 0) or a dense random graph (class 1), degree features."""
    n = int(rng.integers(6, 11))
    if dense:
        iu = np.triu_indices(n, 1)
        keep = rng.random(iu[0].size) < 0.7
        ei = np.stack([iu[0][keep], iu[1][keep]])
    else:
        ei = np.stack([np.arange(1, n), rng.integers(0, np.arange(1, n))])
    deg = np.bincount(ei.ravel(), minlength=n)
    x = np.zeros((n, IN_DIM), np.float32)
    x[:, 0], x[:, 1] = deg / 4.0, 1.0
    x[:, 2:] = 0.05 * rng.standard_normal((n, IN_DIM - 2))
    return x, ei


def test_graph_batch_layout():
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    b = adapt.graph_batch([(x, np.array([[0, 1, 4], [1, 2, 0]]))], max_nodes=4, num_samples=2)
    assert b.x.shape == (8, 3) and b.adj.shape == (2, 4, 4)
    np.testing.assert_array_equal(b.x[:4], x[:4])  # truncated to max_nodes; edge (4, 0) dropped
    assert b.member_mask.tolist() == [[True] * 4, [False] * 4] and b.sample_mask.tolist() == [True, False]
    want = np.zeros((4, 4), bool)
    want[[1, 0, 2, 1], [0, 1, 1, 2]] = True
    np.testing.assert_array_equal(b.adj[0], want)
    with pytest.raises(ValueError, match="outside"):
        adapt.graph_batch([(x, np.array([[0], [7]]))], max_nodes=4)


def test_graph_head_separates_sparse_from_dense_graphs():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    graphs = [_graph(bool(c), rng) for c in labels]
    ids = rng.permutation(60)
    train, valid, test = ids[:20], ids[20:30], ids[30:]
    pred, best = adapt.fit_graph_head(_model(), graphs, labels, train, valid, epochs=100, batch_size=32)
    assert pred.shape == (60,) and 0.0 <= best <= 1.0
    assert np.mean(pred[test] == labels[test]) >= 0.85
    with pytest.raises(ValueError, match="in_dim"):
        adapt.embed_graphs(_model(), [(np.ones((3, IN_DIM + 1), np.float32), np.zeros((2, 0), int))])


def _communities(rng: np.random.Generator, n: int = 80) -> Domain:
    comm = np.arange(n) % 2
    u, v = np.triu_indices(n, 1)
    p = np.where(comm[u] == comm[v], 0.12, 0.01)
    keep = rng.random(u.size) < p
    ei = np.stack([u[keep], v[keep]])
    x = 0.3 * rng.standard_normal((n, IN_DIM)).astype(np.float32)
    x[np.arange(n), comm] += 1.0
    smp = SubgraphSampler(ei, n, fanouts=[-1, -1], max_nodes=12, features=x)
    return Domain("communities", n, ei, x, comm.astype(np.int32), 2, np.eye(IN_DIM, dtype=np.float32), "structural",
                  "-", smp)


def test_link_head_learns_relation_types():
    rng = np.random.default_rng(1)
    dom = _communities(rng)
    pairs = rng.integers(0, dom.num_nodes, (300, 2))
    cu, cv = dom.labels[pairs[:, 0]], dom.labels[pairs[:, 1]]
    rel = np.where(cu == cv, cu, 2)  # 0: both in community 0, 1: both in 1, 2: across
    train, valid, test = np.arange(120), np.arange(120, 170), np.arange(170, 300)
    pred, best = adapt.fit_link_head(_model(), dom, pairs, rel, train, valid, epochs=150, batch_size=64)
    assert pred.shape == (300,) and best > 0.5
    acc = np.mean(pred[test] == rel[test])
    assert acc >= 0.8, acc
    with pytest.raises(ValueError, match=r"\[P, 2\]"):
        adapt.fit_link_head(_model(), dom, pairs[:, :1], rel, train, valid)
