"""GraphShaper gate, regularisers, token router."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from geofm.gating import GraphShaperGate, TokenRouter, fuse_tangent, load_balance_loss, node_entropy
from manifolds import stereographic as st


def test_gate_rows_sum_to_one_and_temperature_sharpens():
    d = jax.random.normal(jax.random.PRNGKey(0), (9, 4))
    e = jax.random.normal(jax.random.PRNGKey(1), (9, 6))
    warm = GraphShaperGate(3, 4, 6, temperature=1.0, rngs=nnx.Rngs(0))
    cold = GraphShaperGate(3, 4, 6, temperature=0.1, rngs=nnx.Rngs(0))
    w_warm, w_cold = warm(d, e), cold(d, e)
    np.testing.assert_allclose(w_warm.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(w_cold.sum(-1), 1.0, rtol=1e-6)
    assert float(node_entropy(w_cold)) < float(node_entropy(w_warm))


def test_fuse_maps_each_expert_with_its_own_curvature():
    pts_h = st.expmap0(jnp.full((4, 2), 0.7), k=-1.0)
    pts_s = st.expmap0(jnp.full((4, 2), -0.3), k=2.0)
    gate = GraphShaperGate(2, 3, rngs=nnx.Rngs(0))
    out = gate.fuse([pts_h, pts_s], [jnp.array(-1.0), jnp.array(2.0)], jnp.zeros((4, 3)))
    np.testing.assert_allclose(out.tangent[:, 0], 0.7, rtol=1e-5)
    np.testing.assert_allclose(out.tangent[:, 1], -0.3, rtol=1e-5)
    want = out.weights[:, :1] * 0.7 - out.weights[:, 1:] * 0.3
    np.testing.assert_allclose(out.fused, jnp.broadcast_to(want, (4, 2)), rtol=1e-5)
    assert out.product.shape == (4, 4)
    np.testing.assert_allclose(fuse_tangent(out.tangent, jnp.array([[1.0, 0.0]] * 4)), out.tangent[:, 0])


def test_regularisers_extremes():
    uniform = jnp.full((10, 3), 1 / 3)
    onehot = jax.nn.one_hot(jnp.zeros(10, int), 3)
    assert float(load_balance_loss(uniform)) == pytest.approx(0.0, abs=1e-6)
    assert float(load_balance_loss(onehot)) == pytest.approx(2.0, abs=1e-6)
    assert float(node_entropy(uniform)) == pytest.approx(np.log(3), rel=1e-5)
    assert float(node_entropy(onehot)) == pytest.approx(0.0, abs=1e-6)
    # the mask drops padded rows: half collapsed rows masked away -> balanced again
    mixed = jnp.concatenate([uniform, onehot])
    mask = jnp.arange(20) < 10
    assert float(load_balance_loss(mixed, mask)) == pytest.approx(0.0, abs=1e-6)


def test_gate_shape_errors_are_clear():
    gate = GraphShaperGate(3, 4, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="descriptors"):
        gate(jnp.zeros((5, 3)), jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match="embedding"):
        gate(jnp.zeros((5, 4)), None)
    with pytest.raises(ValueError, match="temperature"):
        GraphShaperGate(3, 4, rngs=nnx.Rngs(0), temperature=0.0)


def test_token_router_uniform_at_init_and_normalised_after_training_step():
    router = TokenRouter(8, 3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 5, 8))
    np.testing.assert_allclose(router(x), 1 / 3, rtol=1e-6)
    g = nnx.grad(lambda r: jnp.sum(r(x)[..., 0] * x[..., 0]))(router)
    router.proj.kernel[...] = router.proj.kernel[...] + g.proj.kernel[...]
    w = router(x)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    assert float(jnp.std(w)) > 0
