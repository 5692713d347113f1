"""Gram-form distances agree with `dist` and keep finite gradients at the ball boundary."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geofm.kg.scoring import gram_sqdist_hyperbolic, gram_sqdist_k
from manifolds import stereographic as st


def _near_boundary(key, n, d, k):
    x = jax.random.normal(key, (n, d))
    x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x * (1.0 - 1e-5) / jnp.sqrt(-k)


@pytest.mark.parametrize("fn", [gram_sqdist_k, gram_sqdist_hyperbolic])
def test_gram_distance_near_boundary(fn):
    k = jnp.float32(-1.0)
    kx, ky = jax.random.split(jax.random.PRNGKey(0))
    x, y = _near_boundary(kx, 8, 16, k), 0.5 * _near_boundary(ky, 8, 16, k)

    def total(x, y):
        d2 = fn(x @ y.T, jnp.sum(x * x, -1, keepdims=True), jnp.sum(y * y, -1)[None], k=k)
        return jnp.sum(d2), d2

    (_, d2), grads = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(x, y)
    ref = st.dist(x[:, None], y[None], k=k) ** 2
    np.testing.assert_allclose(np.asarray(d2), np.asarray(ref), rtol=2e-3)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


@pytest.mark.parametrize("k", [-1.0, 0.0, 1e-7, 0.7])
def test_sqdist_from_gram_matches_dist(k):
    kx, ky = jax.random.split(jax.random.PRNGKey(1))
    x = 0.3 * jax.random.normal(kx, (5, 8))
    y = 0.3 * jax.random.normal(ky, (7, 8))
    d2 = st.sqdist_from_gram(x @ y.T, jnp.sum(x * x, -1, keepdims=True), jnp.sum(y * y, -1)[None], k=k)
    ref = st.dist(x[:, None], y[None], k=k) ** 2
    np.testing.assert_allclose(np.asarray(d2), np.asarray(ref), rtol=1e-4, atol=1e-6)
