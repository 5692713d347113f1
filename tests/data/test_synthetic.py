"""Synthetic generators: exact sizes, known structure, determinism, and region geometry."""

from __future__ import annotations

import numpy as np
import pytest

from geofm import structure as S
from geofm.data import synthetic as G
from geofm.data.types import TAGDataset


def degrees(ei: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(ei.ravel(), minlength=n)


def test_edge_generators_exact() -> None:
    ei, n = G.balanced_tree(3, 3)
    assert n == 1 + 3 + 9 + 27 and ei.shape == (2, n - 1)
    assert sorted(np.bincount(degrees(ei, n)).nonzero()[0].tolist()) == [1, 3, 4]
    ei, n = G.grid(4, 5)
    assert n == 20 and ei.shape[1] == 4 * 4 + 3 * 5
    assert degrees(ei, n).max() == 4
    ei = G.cycle(7)
    assert np.all(degrees(ei, 7) == 2) and ei.shape[1] == 7
    ei, n = G.ring_of_cliques(4, 5)
    assert n == 20 and ei.shape[1] == 4 * 10 + 4
    tri_free = G.random_tree(50, rng=np.random.default_rng(0), max_children=2)
    assert tri_free.shape == (2, 49) and degrees(tri_free, 50).max() <= 3
    # every edge generator stores each undirected edge once with u < v
    for e in (ei, tri_free, G.grid(3, 3)[0], G.balanced_tree(2, 3)[0]):
        assert np.all(e[0] < e[1])
        assert np.unique(e, axis=1).shape == e.shape


def test_random_tree_is_connected_tree() -> None:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ei = G.random_tree(200, rng=np.random.default_rng(3))
    A = coo_matrix((np.ones(ei.shape[1]), tuple(ei)), shape=(200, 200))
    assert ei.shape[1] == 199 and connected_components(A, directed=False)[0] == 1


@pytest.mark.parametrize("name", sorted(G.GENERATORS))
def test_datasets_are_valid_and_deterministic(name: str) -> None:
    a = G.make_synthetic(name, seed=5)
    b = G.make_synthetic(name, seed=5)
    c = G.make_synthetic(name, seed=6)
    assert isinstance(a, TAGDataset) and a.domain == "synthetic"
    assert a.edge_index.dtype == np.int32 and a.edge_index.shape[0] == 2
    assert a.edge_index.min() >= 0 and a.edge_index.max() < a.num_nodes
    assert len(a.texts) == a.num_nodes and all(isinstance(t, str) and t for t in a.texts)
    assert a.labels.shape == (a.num_nodes,) and a.labels.min() >= 0 and a.labels.max() < a.num_classes
    assert np.all(np.bincount(a.labels, minlength=a.num_classes) > 0)
    assert len(a.class_descriptions) == a.num_classes
    parts = np.concatenate(list(a.splits.values()))
    assert np.array_equal(np.sort(parts), np.arange(a.num_nodes))  # disjoint and covering
    np.testing.assert_array_equal(a.edge_index, b.edge_index)
    assert a.texts == b.texts
    assert not np.array_equal(a.splits["train"], c.splits["train"])


def test_mixed_regions_and_boundaries() -> None:
    ds = G.mixed_dataset(seed=0, bridges=2)
    region = ds.meta["region"]
    assert region.shape == (ds.num_nodes,)
    counts = {G.REGIONS[r]: int(c) for r, c in zip(*np.unique(region, return_counts=True))}
    assert counts == {"tree": 121, "cliques": 60, "grid": 64}
    np.testing.assert_array_equal(ds.labels, np.searchsorted([0, 1, 2], region))
    u, v = ds.edge_index
    cross = region[u] != region[v]
    assert 1 <= cross.sum() <= 4  # two boundaries, two bridges each (duplicates may merge)
    within = ds.edge_index.shape[1] - cross.sum()
    assert within == 120 + (10 * 15 + 10) + (2 * 8 * 7)
    # texts carry region words
    words = {r: set(G._REGION_WORDS[r]) for r in ("tree", "cliques", "grid")}
    for t, r in zip(ds.texts, region.tolist()):
        assert set(t.split()) & words[G.REGIONS[r]]


def test_region_geometry_is_visible_to_descriptors() -> None:
    ds = G.mixed_dataset(seed=1)
    x = S.node_descriptors(ds.edge_index, ds.num_nodes)
    col = {n: i for i, n in enumerate(S.DESCRIPTOR_NAMES)}
    region = ds.meta["region"]
    oll = [x[region == r, col["ollivier"]].mean() for r in range(3)]
    assert oll[0] < oll[2] < oll[1]  # tree < grid < cliques
    assert x[region == 1, col["clustering"]].mean() > 0.5
    assert x[region == 0, col["tree_likeness"]].mean() > 0.95


def test_labels_community_and_noise() -> None:
    ds = G.mixed_dataset(seed=0, labels="community", text_noise=1.0, permute=False)
    # tree: 3 subtrees, cliques: 10, grid: 4 blocks
    assert ds.num_classes == 3 + 10 + 4
    assert all(t == "an entity with some connections" for t in ds.texts)
    np.testing.assert_array_equal(ds.meta["region"][:121], 0)  # unpermuted blocks


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown synthetic dataset"):
        G.make_synthetic("nope")
    with pytest.raises(ValueError, match="labels"):
        G.mixed_dataset(labels="colour")
    with pytest.raises(ValueError, match="branching"):
        G.balanced_tree(0, 2)
    with pytest.raises(ValueError, match="split"):
        G.grid_dataset(split=(0.5, 0.5, 0.5))


def test_random_tree_regions() -> None:
    ds = G.tree_dataset(random_nodes=150, max_children=4, seed=3)
    assert ds.num_nodes == 150 and ds.edge_index.shape[1] == 149
    assert degrees(ds.edge_index, 150).max() <= 5
    again = G.tree_dataset(random_nodes=150, max_children=4, seed=3)
    np.testing.assert_array_equal(ds.edge_index, again.edge_index)
    other = G.tree_dataset(random_nodes=150, max_children=4, seed=4)
    assert not np.array_equal(ds.edge_index, other.edge_index)
    mixed = G.mixed_dataset(tree_nodes=90, seed=0)
    assert int((mixed.meta["region"] == 0).sum()) == 90
