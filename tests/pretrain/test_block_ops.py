"""`geofm.ops` on dense blocks (`BlockGraph`) == the CSR kernels on the same edges."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geofm import ops
from geofm.graph import build_csr


def _pair(nb: int = 3, n: int = 5, p: float = 0.4, seed: int = 0):
    """A random BlockGraph and the CSR over the same B*n*n edge slots (mask = edge_mask)."""
    rng = np.random.default_rng(seed)
    mask = rng.random((nb, n, n)) < p
    mask[0, 1] = False  # a node without incoming edges
    b, i, j = np.meshgrid(np.arange(nb), np.arange(n), np.arange(n), indexing="ij")
    csr = build_csr((b * n + j).ravel(), (b * n + i).ravel(), nb * n, edge_mask=mask.ravel())
    return ops.block_graph(jnp.asarray(mask)), csr


def test_propagate_values_and_grads_match_csr():
    blk, csr = _pair()
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((blk.num_nodes, 4)), jnp.float32)
    w = jnp.asarray(rng.random(blk.num_edges), jnp.float32)
    for weights in (None, w):
        np.testing.assert_allclose(ops.propagate(x, weights, blk), ops.propagate(x, weights, csr), atol=1e-5)

    def f(x, w, g):
        return jnp.sum(jnp.sin(ops.propagate(x, w, g)))

    ga = jax.grad(f, argnums=(0, 1))(x, w, blk)
    gb = jax.grad(f, argnums=(0, 1))(x, w, csr)
    np.testing.assert_allclose(ga[0], gb[0], atol=1e-5)
    mask = np.asarray(blk.mask)  # the weight gradient only matters on real edges
    np.testing.assert_allclose(np.asarray(ga[1])[mask], np.asarray(gb[1])[mask], atol=1e-5)


def test_per_head_and_per_channel_weights():
    blk, csr = _pair(seed=2)
    rng = np.random.default_rng(3)
    xh = jnp.asarray(rng.standard_normal((blk.num_nodes, 2, 3)), jnp.float32)
    wh = jnp.asarray(rng.random((blk.num_edges, 2)), jnp.float32)
    np.testing.assert_allclose(ops.propagate(xh, wh, blk), ops.propagate(xh, wh, csr), atol=1e-5)
    xc = jnp.asarray(rng.standard_normal((blk.num_nodes, 3)), jnp.float32)
    wc = jnp.asarray(rng.random((blk.num_edges, 3)), jnp.float32)
    np.testing.assert_allclose(ops.propagate(xc, wc, blk), ops.propagate(xc, wc, csr), atol=1e-5)


def test_segments_gathers_softmax_norm_match_csr():
    blk, csr = _pair(seed=4)
    rng = np.random.default_rng(5)
    e = jnp.asarray(rng.standard_normal((blk.num_edges, 2)), jnp.float32)
    x = jnp.asarray(rng.standard_normal((blk.num_nodes, 3)), jnp.float32)
    for name in ("segment_sum", "segment_mean", "segment_max"):
        np.testing.assert_allclose(getattr(ops, name)(e, blk), getattr(ops, name)(e, csr), atol=1e-5, err_msg=name)
    for name in ("gather_senders", "gather_receivers"):
        np.testing.assert_allclose(getattr(ops, name)(x, blk), getattr(ops, name)(x, csr), atol=1e-6, err_msg=name)
    np.testing.assert_allclose(ops.segment_softmax(e, blk), ops.segment_softmax(e, csr), atol=1e-5)
    np.testing.assert_allclose(ops.gcn_norm(blk), ops.gcn_norm(csr), atol=1e-6)
    np.testing.assert_allclose(blk.in_degree, csr.in_degree)


def test_block_graph_rejects_bad_mask():
    with pytest.raises(ValueError, match=r"adj must be \[B, n, n\]"):
        ops.block_graph(jnp.ones((2, 3, 4), bool))
    blk, _ = _pair()
    with pytest.raises(ValueError, match="propagate: x"):
        ops.propagate(jnp.ones((blk.num_nodes + 1, 2)), None, blk)
