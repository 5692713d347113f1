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
    # truth: the closed form in float64 on the same float32 points. Rounding |x|^2 in float32
    # alone moves 1 - |x|^2 (= 2e-5 here) by up to eps32 / (1 - |x|^2) = 6e-3 relative, for ANY
    # float32 method (st.dist too: 2.0e-3 on CPU; the rounding, and so the error, differs on a GPU).
    X, Y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x2, y2 = (X * X).sum(-1)[:, None], (Y * Y).sum(-1)[None]
    diff2 = x2 + y2 - 2.0 * X @ Y.T
    truth = (2.0 * np.arctanh(np.sqrt(diff2 / ((1 - x2) * (1 - y2) + diff2)))) ** 2
    cond = 1.0 / (1.0 - x2.max())
    np.testing.assert_allclose(np.asarray(d2), truth, rtol=np.finfo(np.float32).eps * cond)
    np.testing.assert_allclose(np.asarray(st.dist(x[:, None], y[None], k=k) ** 2), truth,
                               rtol=np.finfo(np.float32).eps * cond)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


@pytest.mark.parametrize("k", [-1.0, 0.0, 1e-7, 0.7])
def test_sqdist_from_gram_matches_dist(k):
    kx, ky = jax.random.split(jax.random.PRNGKey(1))
    x = 0.3 * jax.random.normal(kx, (5, 8))
    y = 0.3 * jax.random.normal(ky, (7, 8))
    d2 = st.sqdist_from_gram(x @ y.T, jnp.sum(x * x, -1, keepdims=True), jnp.sum(y * y, -1)[None], k=k)
    ref = st.dist(x[:, None], y[None], k=k) ** 2
    np.testing.assert_allclose(np.asarray(d2), np.asarray(ref), rtol=1e-4, atol=1e-6)


def test_sphere_chord_scores_rank_like_geodesic_and_stay_finite_past_the_antipode():
    """S-branch scores of CAT-KG: shared == rows, same order as -d_k^2 inside the chart, and finite
    scores/gradients for tangent vectors with 2 sqrt(k)|v| >= pi (where expmap0 is infinite)."""
    from geofm.kg.scoring import sqchord_tangent_rows, sqchord_tangent_shared

    k = jnp.float32(1.3)
    kq, ke = jax.random.split(jax.random.PRNGKey(1))
    q = 0.3 * jax.random.normal(kq, (4, 6))
    e = 0.3 * jax.random.normal(ke, (50, 6))
    shared = sqchord_tangent_shared(q, e, k=k)
    rows = sqchord_tangent_rows(q, jnp.broadcast_to(e, (4, 50, 6)), k=k)
    np.testing.assert_allclose(np.asarray(shared), np.asarray(rows), rtol=1e-4, atol=1e-5)
    geo = st.dist(st.expmap0(q, k=k)[:, None], st.expmap0(e, k=k)[None], k=k)
    np.testing.assert_allclose(np.asarray(shared), np.asarray(2 / k * (1 - jnp.cos(jnp.sqrt(k) * geo))), rtol=1e-3, atol=1e-5)
    assert all((np.argsort(np.asarray(shared[i])) == np.argsort(np.asarray(geo[i]))).all() for i in range(4))
    far = e * (10.0 / jnp.linalg.norm(e, axis=-1, keepdims=True))  # 2 sqrt(k)|v| ~ 22.8 > pi
    val, grads = jax.value_and_grad(lambda a, b: jnp.sum(sqchord_tangent_shared(a, b, k=k)), argnums=(0, 1))(q * 20, far)
    assert np.isfinite(float(val)) and all(np.isfinite(np.asarray(g)).all() for g in grads)
    assert float(jnp.max(sqchord_tangent_shared(q * 20, far, k=k))) <= 4 / float(k) + 1e-4  # chord <= diameter^2


@pytest.mark.parametrize("which", ["tangent_shared", "tangent_rows", "euclid_shared", "chord_shared", "chord_rows"])
def test_gram_matmuls_ask_for_full_float32(which, dot_precisions):
    """|x|^2 + |y|^2 - 2 x.y cancels for close points, so every matmul of the Gram kernels, forward
    and backward, asks for HIGHEST precision: on GPUs JAX's default for float32 is TF32 (10-bit
    mantissa, ~1e-3 relative in x.y). (On the CPU backend the flag changes no number, so this
    checks the request, not the rounding.)"""
    from geofm.kg import scoring as sc

    x, v, rows = 0.1 * jnp.ones((3, 4)), 0.2 * jnp.ones((5, 4)), 0.2 * jnp.ones((3, 5, 4))
    fns = {"tangent_shared": lambda x, v: sc.sqdist_to_tangent_shared(x, v, k=-jnp.ones((3, 1)), hyperbolic=True),
           "tangent_rows": lambda x, v: sc.sqdist_to_tangent_rows(x, rows + v[:1], k=-jnp.ones((3, 1))),
           "euclid_shared": sc.euclidean_sqdist_shared,
           "chord_shared": lambda x, v: sc.sqchord_tangent_shared(x, v, k=jnp.float32(0.7)),
           "chord_rows": lambda x, v: sc.sqchord_tangent_rows(x, rows + v[:1], k=jnp.float32(0.7))}
    total = lambda x, v: jnp.sum(fns[which](x, v))  # noqa: E731
    jaxpr = jax.make_jaxpr(jax.value_and_grad(total, argnums=(0, 1)))(x, v).jaxpr
    precisions = dot_precisions(jaxpr)
    assert precisions and all(p == (jax.lax.Precision.HIGHEST,) * 2 for p in precisions), precisions
