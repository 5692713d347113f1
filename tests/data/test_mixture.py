"""Multi-domain mixture: weights, empirical frequencies, tags, per-domain order, resume."""

from __future__ import annotations

import grain
import numpy as np
import pytest

from geofm.data import synthetic
from geofm.data.mixture import DomainBatch, mixture, mixture_weights, subgraph_mixture
from geofm.data.sampler import SubgraphSampler, make_iterator


def test_weights_formulas() -> None:
    n = [100, 400, 1600]
    np.testing.assert_allclose(mixture_weights(n, strategy="proportional"), np.array(n) / 2100)
    np.testing.assert_allclose(mixture_weights(n, strategy="uniform"), [1 / 3] * 3)
    np.testing.assert_allclose(mixture_weights(n, strategy="temperature", temperature=1.0), np.array(n) / 2100)
    sq = np.sqrt(n)
    np.testing.assert_allclose(mixture_weights(n, strategy="temperature", temperature=2.0), sq / sq.sum())
    hot = mixture_weights(n, strategy="temperature", temperature=1e6)
    np.testing.assert_allclose(hot, [1 / 3] * 3, atol=1e-5)
    big = mixture_weights([1e300, 1e-300], strategy="temperature", temperature=0.5)  # no overflow
    assert np.all(np.isfinite(big)) and big[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown mixture strategy"):
        mixture_weights(n, strategy="zipf")
    with pytest.raises(ValueError, match="positive"):
        mixture_weights([1, 0])
    with pytest.raises(ValueError, match="temperature"):
        mixture_weights(n, temperature=0.0)


def fake_domains(lengths: dict[str, int]) -> dict[str, grain.MapDataset]:
    """Domain k yields (k, i) for its i-th batch, so the order inside a domain is visible."""
    return {k: grain.MapDataset.range(n).map(lambda i, k=k: (k, int(i))) for k, n in lengths.items()}


@pytest.mark.parametrize("strategy,temperature", [("proportional", 1.0), ("uniform", 1.0), ("temperature", 2.0)])
def test_empirical_frequencies(strategy: str, temperature: float) -> None:
    lengths = {"a": 50, "b": 200, "c": 800}
    steps = 20000
    ds = mixture(fake_domains(lengths), num_batches=steps, seed=0, strategy=strategy, temperature=temperature)
    assert len(ds) == steps
    dom = np.array([ds[i].domain for i in range(steps)])
    p = mixture_weights(list(lengths.values()), strategy=strategy, temperature=temperature)
    freq = np.bincount(dom, minlength=3) / steps
    tol = 5 * np.sqrt(p * (1 - p) / steps)
    assert np.all(np.abs(freq - p) < tol), (freq, p)


def test_tags_order_and_wraparound() -> None:
    lengths = {"small": 3, "large": 1000}
    ds = mixture(fake_domains(lengths), num_batches=400, seed=1, strategy="uniform")
    seen: dict[str, list[int]] = {"small": [], "large": []}
    for step in ds:
        assert isinstance(step, DomainBatch)
        name, i = step.batch
        assert name == step.name == ["small", "large"][step.domain]
        seen[name].append(i)
    # each domain is read in its own order, a finite one wraps around
    assert seen["small"] == [k % 3 for k in range(len(seen["small"]))]
    assert seen["large"] == list(range(len(seen["large"])))


def test_explicit_weights_and_errors() -> None:
    ds = mixture(fake_domains({"a": 10, "b": 10}), num_batches=3000, seed=2, weights={"a": 3.0, "b": 1.0})
    frac = np.mean([ds[i].domain == 0 for i in range(3000)])
    assert abs(frac - 0.75) < 5 * np.sqrt(0.75 * 0.25 / 3000)
    with pytest.raises(ValueError, match="mismatched"):
        mixture(fake_domains({"a": 10}), num_batches=5, seed=0, weights={"b": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        mixture({}, num_batches=5, seed=0)
    with pytest.raises(ValueError, match="num_batches"):
        mixture(fake_domains({"a": 10}), num_batches=0, seed=0)


def test_deterministic_and_resumable() -> None:
    make = lambda seed: mixture(fake_domains({"a": 30, "b": 70, "c": 5}), num_batches=200, seed=seed,
                                strategy="temperature", temperature=3.0)
    a = [(s.domain, s.batch) for s in make(4)]
    assert a == [(s.domain, s.batch) for s in make(4)]
    assert a != [(s.domain, s.batch) for s in make(5)]
    it = make_iterator(make(4))
    for _ in range(37):
        next(it)
    state = it.get_state()
    rest = [(s.domain, s.batch) for s in it]
    resumed = make_iterator(make(4))
    resumed.set_state(state)
    assert [(s.domain, s.batch) for s in resumed] == rest == a[37:]


def test_iterator_state_round_trips_through_a_checkpoint(tmp_path) -> None:
    from geofm.checkpoint import Checkpointer

    make = lambda: mixture(fake_domains({"a": 30, "b": 70}), num_batches=100, seed=9, strategy="uniform")
    it = make_iterator(make())
    for _ in range(21):
        next(it)
    with Checkpointer(tmp_path / "run", metric="loss", mode="min") as ckpt:
        ckpt.save(21, {"w": np.zeros(2, np.float32)}, metrics={"loss": 1.0}, extra={"data": it.get_state()})
    expected = [(s.domain, s.batch) for s in it]
    with Checkpointer(tmp_path / "run", metric="loss", mode="min") as ckpt:
        state = ckpt.read_meta(ckpt.latest_step())["extra"]["data"]
    resumed = make_iterator(make())
    resumed.set_state(state)
    assert [(s.domain, s.batch) for s in resumed] == expected


def test_subgraph_mixture_batches() -> None:
    tree = synthetic.tree_dataset(depth=3, seed=0)
    grid = synthetic.grid_dataset(rows=6, cols=6, seed=0)
    domains = {
        "tree": (SubgraphSampler(tree.edge_index, tree.num_nodes, fanouts=[3, 3], bucket_minimum=16), None),
        "grid": (SubgraphSampler(grid.edge_index, grid.num_nodes, fanouts=[-1, -1], bucket_minimum=16),
                 grid.splits["train"]),
    }
    ds = subgraph_mixture(domains, batch_size=4, num_batches=30, seed=0, strategy="uniform")
    sizes = {"tree": tree.num_nodes, "grid": grid.num_nodes}
    for step in ds:
        b = step.batch
        assert b.center_ids.shape == (4,) and b.sample_mask.all()
        assert b.center_ids.max() < sizes[step.name]
        if step.name == "grid":
            assert np.all(np.isin(b.center_ids, grid.splits["train"]))
    again = subgraph_mixture(domains, batch_size=4, num_batches=30, seed=0, strategy="uniform")
    for x, y in zip(ds, again):
        assert x.domain == y.domain
        np.testing.assert_array_equal(x.batch.node_ids, y.batch.node_ids)
