"""Unit tests for manifolds.lorentz: stability far out, ball maps, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _manifolds_dtype import DTYPE

import manifolds as M
from manifolds import lorentz as lo
from manifolds import stereographic as st


def _ref_dist(x, y, k):
    """float64 numpy reference R·arcosh(k<x,y>_L) from exactly-known points."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    mink = -x[..., 0] * y[..., 0] + np.sum(x[..., 1:] * y[..., 1:], -1)
    return np.arccosh(np.maximum(k * mink, 1.0)) / np.sqrt(-k)


def test_distance_stable_far_from_origin():
    """Two points 15 out, 0.5 apart: the naive arcosh(k<x,y>) loses everything in
    float32; the chord formula keeps ~1e-4 relative accuracy."""
    k = -1.0
    u = np.array([0.0, 1.0, 0.0], np.float64)
    w = np.array([0.0, np.cos(0.5 / np.sinh(15.0)), np.sin(0.5 / np.sinh(15.0))])
    x64 = np.concatenate([[np.cosh(15.0)], np.sinh(15.0) * u[1:]])
    y64 = np.concatenate([[np.cosh(15.0)], np.sinh(15.0) * w[1:]])
    ref = 2 * np.arcsinh(np.sinh(15.0) * np.sin(np.arccos(np.dot(u, w)) / 2))  # exact
    d = float(lo.dist(jnp.asarray(x64, DTYPE), jnp.asarray(y64, DTYPE), k=k))
    assert abs(d - ref) < 1e-3 * ref, (d, ref)
    naive = float(jnp.arccosh(jnp.maximum(k * lo.inner(jnp.asarray(x64, jnp.float32), jnp.asarray(y64, jnp.float32)), 1.0)))
    if DTYPE == jnp.float32:
        assert abs(naive - ref) > 0.1 * ref  # the problem the chord formula avoids


@pytest.mark.parametrize("k", [-0.3, -1.0, -2.0])
def test_matches_arcosh_and_poincare(k):
    x = M.Lorentz(k).random_point(jax.random.key(0), (6, 4), radius=3.0, dtype=DTYPE)
    y = M.Lorentz(k).random_point(jax.random.key(1), (6, 4), radius=3.0, dtype=DTYPE)
    np.testing.assert_allclose(lo.dist(x, y, k=k), _ref_dist(x, y, k), rtol=1e-3)
    px, py = lo.to_poincare(x, k=k), lo.to_poincare(y, k=k)
    assert bool(jnp.all(jnp.sum(px * px, -1) < -1.0 / k))
    np.testing.assert_allclose(st.dist(px, py, k=k), lo.dist(x, y, k=k), rtol=1e-3)
    np.testing.assert_allclose(lo.from_poincare(px, k=k), x, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(lo.dist0(x, k=k), st.dist0(px, k=k), rtol=1e-3)


def test_origin_maps_and_transport():
    k = -0.5
    v = jnp.array([[0.0, 0.3, -0.2, 0.1]], DTYPE)
    y = lo.expmap0(v, k=k)
    o = lo.origin(3, k=k, dtype=DTYPE)
    np.testing.assert_allclose(lo.expmap(o, v, k=k), y, atol=1e-5)
    np.testing.assert_allclose(lo.logmap0(y, k=k), v, atol=1e-5)
    np.testing.assert_allclose(lo.dist0(y, k=k), jnp.linalg.norm(v, axis=-1), rtol=1e-4)
    np.testing.assert_allclose(lo.ptransp0(y, v, k=k), lo.ptransp(o, y, v, k=k), atol=1e-6)
    np.testing.assert_allclose(lo.inner(o, o), 1.0 / k, rtol=1e-6)


def test_bad_input():
    x = jnp.ones((3, 4), DTYPE)
    for k in (0.0, 1.0, [[-1.0], [0.5], [-2.0]]):
        with pytest.raises(ValueError, match="k < 0"):
            lo.dist(x, x, k=k)
    with pytest.raises(ValueError, match="k < 0"):
        M.Lorentz(0.0)
    with pytest.raises(ValueError, match="last-axis size"):
        lo.logmap(x, jnp.ones((3, 5), DTYPE), k=-1.0)
    with pytest.raises(ValueError, match="d\\+1 >= 2"):
        lo.project(jnp.ones((3, 1), DTYPE), k=-1.0)
    with pytest.raises(ValueError, match=r"per-point k of shape \(2, 1\) does not broadcast against x"):
        lo.dist(x, x, k=-jnp.ones((2, 1), DTYPE))
    with pytest.raises(ValueError, match="dims"):
        M.Product((M.Lorentz(-1.0), M.Euclidean()), (4,))
    with pytest.raises(ValueError, match="cannot have width 1"):
        M.Product((M.Lorentz(-1.0),), (1,))
    with pytest.raises(ValueError, match="last axis 6"):
        M.Product((M.Lorentz(-1.0), M.Euclidean()), (4, 2)).dist(x, x)


def test_traced_k_is_not_checked_but_works():
    x = M.Lorentz(-1.0).random_point(jax.random.key(2), (4, 3), dtype=DTYPE)
    y = M.Lorentz(-1.0).random_point(jax.random.key(3), (4, 3), dtype=DTYPE)
    f = jax.jit(lambda kk: jnp.sum(lo.dist(lo.project(x, k=kk), lo.project(y, k=kk), k=kk)))
    val, g = jax.value_and_grad(f)(jnp.asarray(-1.0, DTYPE))
    assert bool(jnp.isfinite(val)) and bool(jnp.isfinite(g))
