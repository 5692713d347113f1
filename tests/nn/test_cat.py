"""CAT block: branch kernels against the manifold API, masking, router, overhead, NaN-freedom."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from geofm.nn.cat import (
    CATBlock,
    count_params,
    hyperbolic_sqdist,
    masked_softmax,
    midpoint_attend,
    spherical_sqdist,
)
from manifolds import stereographic as st


def _pairwise(q, key, k):
    return st.dist(st.expmap0(q[..., :, None, :], k=k), st.expmap0(key[..., None, :, :], k=k), k=k) ** 2


def test_hyperbolic_and_spherical_sqdist_match_manifold_dist():
    q = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 4))
    key = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 4))
    want = _pairwise(q, key, -0.3)
    np.testing.assert_allclose(hyperbolic_sqdist(q, key, k=-0.3), want, rtol=1e-4, atol=1e-3)
    for k in (0.3, 2.0):  # 2.0 wraps past the antipode for some points
        np.testing.assert_allclose(spherical_sqdist(q, key, k=k), _pairwise(q, key, k), rtol=1e-3, atol=1e-3)


def test_midpoint_attend_one_hot_returns_value_and_uniform_is_symmetric():
    v = jnp.array([[0.3, -0.2], [-0.3, 0.2], [0.1, 0.5]])
    for k in (-1.0, 1.0):
        onehot = jnp.array([[0.0, 0.0, 1.0]])
        np.testing.assert_allclose(midpoint_attend(onehot, v, k=k), v[2:], rtol=1e-5, atol=1e-6)
        half = jnp.array([[0.5, 0.5, 0.0]])
        np.testing.assert_allclose(midpoint_attend(half, v, k=k), 0.0, atol=1e-6)


def test_masked_softmax_zero_on_masked_and_zero_rows_when_all_masked():
    s = jnp.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    m = jnp.array([[True, False, True], [False, False, False]])
    a = masked_softmax(s, m)
    assert float(a[0, 1]) == 0.0 and float(a[0].sum()) == pytest.approx(1.0)
    np.testing.assert_array_equal(a[1], 0.0)


def test_padding_tokens_do_not_change_real_tokens():
    blk = CATBlock(16, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(2), (1, 6, 16))
    mask = jnp.arange(6)[None] < 4
    y1 = blk(x, mask).out
    y2 = blk(x.at[:, 4:].set(100.0), mask).out
    np.testing.assert_allclose(y1[:, :4], y2[:, :4], rtol=1e-5, atol=1e-5)


def test_router_weights_and_parameter_overhead():
    blk = CATBlock(64, 4, rngs=nnx.Rngs(0))
    plain = CATBlock(64, 4, branches=("euclidean",), rngs=nnx.Rngs(0))
    out = blk(jax.random.normal(jax.random.PRNGKey(3), (2, 5, 64)))
    np.testing.assert_allclose(out.weights.sum(-1), 1.0, rtol=1e-6)
    assert out.weights.shape == (2, 5, 3)
    assert plain.router is None
    overhead = count_params(blk) / count_params(plain) - 1
    assert 0 < overhead <= 0.10
    ks = blk.curvature_values()
    assert float(ks["hyperbolic"]) < 0 < float(ks["spherical"])


@pytest.mark.slow
def test_nan_free_for_large_inputs_and_one_compilation():
    blk = CATBlock(16, 2, rngs=nnx.Rngs(0))
    traces = []

    @nnx.jit
    def loss_and_grad(m, x, mask):
        traces.append(1)
        return nnx.value_and_grad(lambda m: jnp.sum(m(x, mask).out ** 2))(m)

    for scale in (1.0, 1e3, 1e6):
        x = scale * jax.random.normal(jax.random.PRNGKey(4), (2, 5, 16))
        mask = jnp.array([[True] * 5, [True, True, False, False, False]])
        val, g = loss_and_grad(blk, x, mask)
        assert np.isfinite(float(val))
        assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(nnx.state(g)))
    assert len(traces) == 1  # three input scales, one fixed padded shape: one compilation
    # inputs whose q/k/v land 1e-5 from the ball's boundary: a huge LayerNorm gain
    blk.ln1.scale[...] = jnp.full((16,), 1e4)
    val, g = loss_and_grad(blk, x, mask)
    assert np.isfinite(float(val)) and all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(nnx.state(g)))


def test_bad_config_errors():
    with pytest.raises(ValueError, match="divisible"):
        CATBlock(10, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown CAT branch"):
        CATBlock(8, 2, branches=("euclidean", "elliptic"), rngs=nnx.Rngs(0))
