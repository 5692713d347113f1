"""Geometric GCN / attention layers: k=0 consistency, midpoint correctness, NaN-freedom,
one compilation per padded shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from geofm import ops
from geofm.graph import Graph, add_self_loops, build_csr, csr_from_graph, pad_graph, symmetrize
from geofm.nn.layers import AGGREGATIONS, GeoGATConv, GeoGCNConv, local_aggregate, midpoint_aggregate
from manifolds import stereographic as st


def _graph(n: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    ring = np.stack([np.arange(n), (np.arange(n) + 1) % n])
    extra = rng.integers(0, n, size=(2, n))
    ei = add_self_loops(symmetrize(np.concatenate([ring, extra], 1), n), n)
    return ei, build_csr(ei[0], ei[1], n)


def _copy_weights(dst: GeoGCNConv, src: GeoGCNConv) -> None:
    dst.linear.kernel[...] = src.linear.kernel[...]
    dst.bias[...] = jnp.linspace(-0.3, 0.3, src.bias.shape[0])
    src.bias[...] = dst.bias[...]


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_euclidean_fast_path_equals_generic_k0(aggregation):
    _, csr = _graph()
    u = jax.random.normal(jax.random.PRNGKey(0), (7, 5))
    w = ops.gcn_norm(csr)
    flat = GeoGCNConv(5, 4, geometry="euclidean", aggregation=aggregation, rngs=nnx.Rngs(0))
    gen = GeoGCNConv(5, 4, geometry="free", k=0.0, learn_curvature=False, aggregation=aggregation,
                     rngs=nnx.Rngs(1))
    _copy_weights(gen, flat)
    np.testing.assert_allclose(flat(u, csr, w), gen(u, csr, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [-1.3, 0.7])
def test_midpoint_aggregate_matches_dense_weighted_midpoint(k):
    ei, csr = _graph()
    w = ops.gcn_norm(csr)
    p = st.expmap0(0.5 * jax.random.normal(jax.random.PRNGKey(2), (7, 3)), k=k)
    got = midpoint_aggregate(p, w, csr, k=k)
    dense = np.zeros((7, 7), np.float32)
    np.add.at(dense, (ei[1], ei[0]), np.asarray(w))
    want = jnp.stack([st.weighted_midpoint(p, dense[i], k=k, axis=0) for i in range(7)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_local_aggregate_matches_per_node_formula():
    ei, csr = _graph()
    k = -0.8
    w = ops.gcn_norm(csr)
    p = st.expmap0(0.4 * jax.random.normal(jax.random.PRNGKey(3), (7, 3)), k=k)
    got = local_aggregate(p, w, csr, k=k)
    for i in range(7):
        v = sum(float(w[e]) * st.logmap(p[i], p[ei[0, e]], k=k) for e in np.flatnonzero(ei[1] == i))
        np.testing.assert_allclose(got[i], st.expmap(p[i], v, k=k), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("geometry", ["hyperbolic", "spherical", "free"])
def test_gcn_nan_free_near_boundary_and_large_inputs(geometry):
    """Rows from 1e-6 to 1e6 in norm (hyperbolic: points pinned 1e-5 from the boundary),
    every aggregation: finite values and gradients."""
    _, csr = _graph()
    scale = jnp.array([1.0, 1e-6, 1.0, 1e3, 1e6, 30.0, 1.0])[:, None]
    u = scale * jax.random.normal(jax.random.PRNGKey(4), (7, 4))
    k0 = {"free": -1.0}.get(geometry)
    layers = [GeoGCNConv(4, 4, geometry=geometry, k=k0, aggregation=a, rngs=nnx.Rngs(0)) for a in AGGREGATIONS]

    def loss(ms, u):
        return sum(jnp.sum(m(u, csr, ops.gcn_norm(csr)) ** 2) for m in ms)

    val, (gm, gu) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(layers, u)
    assert np.isfinite(float(val))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(nnx.state(gm)))
    assert bool(jnp.all(jnp.isfinite(gu)))


@pytest.mark.parametrize("geometry", ["hyperbolic", "spherical", "euclidean"])
def test_gat_points_at_boundary_finite_and_attention_normalised(geometry):
    _, csr = _graph()
    layer = GeoGATConv(4, 3, heads=2, geometry=geometry, rngs=nnx.Rngs(0))
    k = -1.0
    # points 1e-5 (relative) inside the unit ball's boundary, given as their tangents
    dirs = jax.random.normal(jax.random.PRNGKey(5), (7, 4))
    x = (1 - 1e-5) * dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)
    u = st.logmap0(x, k=k)

    def loss(m, u):
        return jnp.sum(m(u, csr) ** 2)

    val, (gm, gu) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(layer, u)
    assert np.isfinite(float(val)) and bool(jnp.all(jnp.isfinite(gu)))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(nnx.state(gm)))
    p = st.expmap0(layer.linear(u).reshape(7, 2, 3), k=layer.k()) if geometry != "euclidean" else \
        layer.linear(u).reshape(7, 2, 3)
    alpha = layer.attention(p, csr)
    np.testing.assert_allclose(ops.segment_sum(alpha, csr), np.ones((7, 2)), rtol=1e-5)


def test_attention_prefers_geometrically_close_neighbour():
    """Hyperbolic logits are -d^2: a near sender gets more weight than a far one."""
    s, r = np.array([1, 2]), np.array([0, 0])
    csr = build_csr(s, r, 3)
    layer = GeoGATConv(2, 2, geometry="hyperbolic", rngs=nnx.Rngs(0))
    p = st.expmap0(jnp.array([[[0.1, 0.0]], [[0.15, 0.0]], [[-1.0, 0.5]]]), k=-1.0)
    alpha = layer.attention(p, csr)
    assert float(alpha[0, 0]) > float(alpha[1, 0])


def test_one_compilation_per_padded_shape():
    layer = GeoGCNConv(4, 4, geometry="hyperbolic", rngs=nnx.Rngs(0))

    traces = []

    @nnx.jit
    def fwd(m, x, csr):
        traces.append(1)  # runs once per trace, i.e. once per compilation
        return m(x, csr, ops.gcn_norm(csr))

    for seed, n in ((0, 9), (1, 11), (2, 12)):
        ei, _ = _graph(n, seed)
        g = Graph(nodes=np.ones((n, 4), np.float32), edges=None, senders=ei[0], receivers=ei[1],
                  globals=None, n_node=np.array([n]), n_edge=np.array([ei.shape[1]]))
        gp = pad_graph(g, n_node=16, n_edge=64, n_graph=2)
        out = fwd(layer, jnp.asarray(gp.nodes), csr_from_graph(gp, padded=True))
        assert bool(jnp.all(jnp.isfinite(out)))
    assert len(traces) == 1
