"""Expert registry, mixture encoder, and evidence that the geometry helps (distance
reconstruction on trees and cycles; gates pick the matching expert per region)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from geofm.data import synthetic as syn
from geofm.experts import EXPERTS, MixtureEncoder, build_expert, fit_distances, graph_distances, region_distances, register_expert
from geofm.graph import add_self_loops, build_csr, symmetrize
from geofm.structure import fit_standardizer, node_descriptors, standardize


def _csr(ei, n):
    e2 = add_self_loops(symmetrize(ei, n), n)
    return build_csr(e2[0], e2[1], n)


def _fit_single(ei, n, expert, **kw):
    model = MixtureEncoder(n, 2, experts=[{"name": expert, "kwargs": dict(num_layers=1, **kw)}],
                           rngs=nnx.Rngs(0))
    return fit_distances(model, jnp.eye(n), _csr(ei, n), graph_distances(ei, n), steps=300, lr=0.03)


def test_registry_by_name_and_errors():
    assert {"hyperbolic", "spherical", "euclidean"} <= set(EXPERTS)
    e = build_expert({"name": "spherical", "kwargs": {"num_layers": 3}}, 4, rngs=nnx.Rngs(0))
    assert len(e.layers) == 3 and float(e.k()) > 0
    with pytest.raises(ValueError, match="known"):
        build_expert("elliptic", 4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="already registered"):
        register_expert("euclidean", lambda dim, **kw: None)
    with pytest.raises(TypeError, match="experts must be a list, got the single string 'hyperbolic'"):
        MixtureEncoder(5, 6, experts="hyperbolic", rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="expert 'hyperbolic': .*'descriptr_dim'.*keywords given"):
        MixtureEncoder(5, 6, descriptr_dim=3, rngs=nnx.Rngs(0))
    ei, n = syn.balanced_tree(2, 2)
    m = MixtureEncoder(5, 6, descriptor_dim=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x must be \[N, 5\] \(in_dim\), got \(7, 4\)"):
        m(jnp.ones((n, 4)), _csr(ei, n), descriptors=jnp.ones((n, 3)))
    with pytest.raises(ValueError, match=r"descriptors must be \[N, descriptor_dim\] = \[7, 3\], got None"):
        m(jnp.ones((n, 5)), _csr(ei, n))


def test_mixture_outputs_and_single_expert_has_no_gate():
    ei, n = syn.balanced_tree(2, 3)
    csr = _csr(ei, n)
    desc = jnp.asarray(node_descriptors(ei, n))
    m = MixtureEncoder(5, 6, descriptor_dim=desc.shape[1], rngs=nnx.Rngs(0))
    out = m(jnp.ones((n, 5)), csr, descriptors=desc)
    assert out.fused.shape == (n, 6) and out.product.shape == (n, 18) and out.tangent.shape == (n, 3, 6)
    np.testing.assert_allclose(out.weights.sum(-1), 1.0, rtol=1e-6)
    assert float(out.ks[0]) < 0 < float(out.ks[1]) and float(out.ks[2]) == 0
    single = MixtureEncoder(5, 6, experts=["euclidean"], rngs=nnx.Rngs(0))
    assert single.gate is None and single(jnp.ones((n, 5)), csr).weights.shape == (n, 1)


@pytest.mark.slow
def test_hyperbolic_beats_euclidean_on_tree_distances():
    ei, n = syn.balanced_tree(3, 3)
    hyp = _fit_single(ei, n, "hyperbolic", aggregation="tangent")
    euc = _fit_single(ei, n, "euclidean", aggregation="tangent")
    assert hyp.distortion < 0.8 * euc.distortion, (hyp.distortion, euc.distortion)


@pytest.mark.slow
def test_spherical_beats_euclidean_on_cycle_distances():
    ei, n = syn.cycle(20), 20
    sph = _fit_single(ei, n, "spherical", k=0.1)
    euc = _fit_single(ei, n, "euclidean")
    assert sph.distortion < 0.5 * euc.distortion, (sph.distortion, euc.distortion)


@pytest.mark.slow
def test_gates_pick_the_matching_expert_per_region():
    """Tree + ring of cliques + grid; the gate sees only structure descriptors and is
    trained with the competitive distance objective: per region, the winning expert must
    be hyperbolic on the tree, spherical on the cliques and Euclidean on the grid."""
    ds = syn.mixed_dataset(branching=3, depth=3, num_cliques=6, clique_size=5, rows=6, cols=6, seed=0)
    n, ei, region = ds.num_nodes, ds.edge_index, ds.meta["region"]
    desc = node_descriptors(ei, n)
    desc = jnp.asarray(standardize(desc, fit_standardizer(desc)))
    model = MixtureEncoder(n, 2, experts=["hyperbolic", "spherical", "euclidean"], descriptor_dim=desc.shape[1],
                           gate_uses_embedding=False, num_layers=1, rngs=nnx.Rngs(0))
    res = fit_distances(model, jnp.eye(n), _csr(ei, n), region_distances(ei, region), descriptors=desc,
                        steps=300, lr=0.03, objective="competitive", balance=1.0)
    w = np.asarray(res.output.weights)
    expected = {"tree": 0, "cliques": 1, "grid": 2}
    for name, expert in expected.items():
        mean_w = w[region == syn.REGIONS.index(name)].mean(0)
        assert int(np.argmax(mean_w)) == expert, (name, mean_w)
        assert mean_w[expert] > 0.5, (name, mean_w)


def test_fused_propagate_matches_expert_by_expert():
    rng = np.random.default_rng(0)
    n = 30
    csr = _csr(rng.integers(0, n, (2, 80)), n)
    x = jax.random.normal(jax.random.PRNGKey(0), (n, 7))
    desc = jax.random.normal(jax.random.PRNGKey(1), (n, 8))
    for agg in ("midpoint", "tangent"):
        fused = MixtureEncoder(7, 6, descriptor_dim=8, aggregation=agg, rngs=nnx.Rngs(0))
        plain = MixtureEncoder(7, 6, descriptor_dim=8, aggregation=agg, fuse_propagate=False, rngs=nnx.Rngs(0))
        np.testing.assert_allclose(fused(x, csr, descriptors=desc).fused, plain(x, csr, descriptors=desc).fused,
                                   rtol=1e-5, atol=1e-6)
