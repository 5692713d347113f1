"""Property tests: the invariant suite (manifolds.testing) over random curvatures.

Curvatures are drawn from [-2, 2] with exactly 0 and |k| = 1e-7 always in the mix.
NaN reporting (`check_finite`) is on for every test in this module.
"""

from __future__ import annotations

import jax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import manifolds as M
from manifolds import testing as T

from _manifolds_dtype import DTYPE, X64

SPECIAL = [0.0, 1e-7, -1e-7, -2.0, 2.0, -1.0, 1.0]
curvature = st.one_of(st.sampled_from(SPECIAL), st.floats(-2.0, 2.0, allow_nan=False))
negative = st.one_of(st.sampled_from([-1e-7, -1.0, -2.0]), st.floats(-2.0, -1e-7))
positive = st.one_of(st.sampled_from([1e-7, 1.0, 2.0]), st.floats(1e-7, 2.0))
seeds = st.integers(0, 2**31 - 1)
# Modest, deterministic example counts: CI has 2 cores (the float64 re-run uses fewer).
N = 5 if X64 else 10
SETTINGS = settings(max_examples=N, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _nan_reporting():
    with M.check_finite():
        yield


@SETTINGS
@given(k=curvature, seed=seeds)
def test_stereographic_suite(k, seed):
    T.run_suite(M.Stereographic(k), jax.random.key(seed), (8, 4), DTYPE)


@pytest.mark.parametrize("k", [0.0, 1e-7, -1e-7, -1.0, 1.0])
def test_stereographic_suite_fixed(k):
    """The special curvatures, always (hypothesis may not draw every one)."""
    T.run_suite(M.Stereographic(k), jax.random.key(0), (8, 3), DTYPE)


@SETTINGS
@given(k=negative, seed=seeds)
def test_lorentz_suite(k, seed):
    T.run_suite(M.Lorentz(k), jax.random.key(seed), (8, 4), DTYPE)


@pytest.mark.slow  # one ~30 s compilation of the 5-component gradient probe
@settings(max_examples=N // 2, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(kh=negative, ks=positive, ke=curvature, kl=negative, seed=seeds)
def test_product_suite(kh, ks, ke, kl, seed):
    """H x S x (any k) x Lorentz x E in one point."""
    P = M.Product(
        (M.Stereographic(kh), M.Stereographic(ks), M.Stereographic(ke), M.Lorentz(kl), M.Euclidean()),
        (3, 3, 2, 4, 2),
    )
    T.run_suite(P, jax.random.key(seed), (6, 14), DTYPE)


def test_euclidean_suite():
    T.run_suite(M.Euclidean(), jax.random.key(0), (8, 4), DTYPE)


@settings(max_examples=N, deadline=None, derandomize=True)
@given(k=st.floats(-2.0, -0.05), seed=seeds)
def test_ball_matches_lorentz(k, seed):
    T.check_stereographic_matches_lorentz(k, jax.random.key(seed), (8, 4), DTYPE)


@settings(max_examples=N, deadline=None, derandomize=True)
@given(k=st.floats(0.05, 2.0), seed=seeds)
def test_sphere_closed_form(k, seed):
    T.check_sphere_closed_form(k, jax.random.key(seed), (8, 4), DTYPE)


@pytest.mark.parametrize("seed", [0, 1])
def test_taylor_branch(seed):
    T.check_taylor_branch(jax.random.key(seed), (8, 4), DTYPE)


def test_suite_detects_a_broken_manifold():
    """The suite can fail: a model whose expmap is off by 1% is rejected."""

    class Broken(M.Stereographic):
        def expmap(self, x, v):
            return super().expmap(x, 1.01 * v)

    with pytest.raises(AssertionError, match="expmap"):
        T.check_exp_log(Broken(-1.0), jax.random.key(0), (8, 4), DTYPE)
    with pytest.raises(AssertionError, match="expmap"):
        T.check_dist_expmap(Broken(-1.0), jax.random.key(0), (8, 4), DTYPE)


@SETTINGS
@given(k=curvature, seed=seeds)
def test_lift0_matches_chart_route_and_chord_identity(k, seed):
    """lift0(v) == midpoint_terms(expmap0(v)) where the chart is finite; den == 1 - k h; the
    chordal form 2(h1 + h2 - k h1 h2 - a1.a2) equals |P1 - P2|^2 of the lifted points, and for
    k > 0 equals (2/k)(1 - cos(sqrt(k) d)) with d the geodesic distance."""
    import jax.numpy as jnp
    import numpy as np

    from manifolds import stereographic as sg

    tol = 1e-9 if X64 else 2e-4
    k1, k2 = jax.random.split(jax.random.key(seed))
    # stay inside the chart: 2 sqrt(k)|v| < pi - 0.3 for k > 0
    lim = min((np.pi - 0.3) / (2 * np.sqrt(k)), 1.5) if k > 0 else 1.5
    v = jax.random.normal(k1, (6, 3), DTYPE)
    v = v * (lim * jax.random.uniform(k2, (6, 1), DTYPE) / jnp.linalg.norm(v, axis=-1, keepdims=True))
    num, den = sg.lift0(v, k=k)
    ref_num, ref_den = sg.midpoint_terms(sg.expmap0(v, k=k), k=k)
    assert np.allclose(num, ref_num, atol=tol, rtol=tol) and np.allclose(den, ref_den, atol=tol, rtol=tol)
    h = sg.chord_h0(v, k=k)
    assert np.allclose(den, 1.0 - k * h, atol=tol)
    a, b, ha, hb = num[:3], num[3:], h[:3, 0], h[3:, 0]
    chord = 2.0 * (ha + hb - k * ha * hb - jnp.sum(a * b, -1))
    pair = sg.sqchord0(v[:3], v[3:], k=k)  # pairwise [3, 3]: its diagonal is the per-row chord
    assert pair.shape == (3, 3) and np.allclose(jnp.diagonal(pair), chord, atol=tol * 10, rtol=tol * 10)
    if abs(k) > 1e-3:  # lifted points P = (num, den / sqrt|k|): Euclidean (k>0) / Minkowski (k<0) chord
        sgn = 1.0 if k > 0 else -1.0
        direct = jnp.sum((a - b) ** 2, -1) + sgn * ((den[:3, 0] - den[3:, 0]) ** 2) / abs(k)
        assert np.allclose(chord, direct, atol=tol * 10, rtol=tol * 10)
    if k > 1e-3:
        d = sg.dist(sg.expmap0(v[:3], k=k), sg.expmap0(v[3:], k=k), k=k)
        assert np.allclose(chord, (2.0 / k) * (1.0 - jnp.cos(np.sqrt(k) * d)), atol=tol * 10, rtol=tol * 10)
    if k == 0.0:
        assert np.allclose(chord, 4.0 * jnp.sum((v[:3] - v[3:]) ** 2, -1), atol=tol)


@pytest.mark.parametrize("k", [1e-7, 1.0, 2.0])
def test_lift0_is_finite_on_the_whole_sphere(k):
    """Tangent vectors at and beyond the antipode (2 sqrt(k)|v| >= pi), where expmap0 is infinite:
    the lift, h and their gradients stay finite, and the lift lies on the sphere."""
    import jax.numpy as jnp
    import numpy as np

    from manifolds import stereographic as sg

    r = np.array([np.pi / 2, np.pi / 2 + 1e-4, 2.0, 7.5, 40.0, 1e4]) / np.sqrt(k)
    v = jnp.asarray(np.stack([r, 0.3 * r], -1), DTYPE)
    num, den = sg.lift0(v, k=k)
    assert np.isfinite(num).all() and np.isfinite(den).all()
    assert np.allclose(k * jnp.sum(num * num, -1) + den[:, 0] ** 2, 1.0, atol=1e-4)
    g = jax.grad(lambda x: jnp.sum(sg.lift0(x, k=k)[0]) + jnp.sum(sg.lift0(x, k=k)[1]) + jnp.sum(sg.chord_h0(x, k=k)))(v)
    assert np.isfinite(g).all()


@SETTINGS
@given(k=curvature, seed=seeds)
def test_tangent_midpoint_matches_chart_route(k, seed):
    """tangent_midpoint_from_sums == logmap0(midpoint_from_sums) on weighted sums of lifts,
    including spherical sums with B < 0 (mass beyond the equator)."""
    import jax.numpy as jnp
    import numpy as np

    from manifolds import stereographic as sg

    tol = 1e-8 if X64 else 5e-4
    k1, k2 = jax.random.split(jax.random.key(seed))
    v = 0.8 * jax.random.normal(k1, (4, 6, 3), DTYPE)
    w = jax.random.uniform(k2, (4, 6, 1), DTYPE)
    num, den = sg.lift0(v, k=k)
    a, b = jnp.sum(w * num, 1), jnp.sum(w * den, 1)
    ref = sg.logmap0(sg.midpoint_from_sums(a, b, k=k), k=k)
    new = sg.tangent_midpoint_from_sums(a, b, k=k)
    assert np.allclose(new, ref, atol=tol, rtol=tol)


def test_tangent_midpoint_gradients_finite_near_the_antipode():
    """Sphere sums with B < 0 and A -> 0 (midpoint -> antipode, stereographic point -> infinity)."""
    import jax.numpy as jnp
    import numpy as np

    from manifolds import stereographic as sg

    for scale in (1e-2, 1e-5, 1e-9, 0.0):
        a = jnp.full((2, 4), scale, DTYPE)
        b = jnp.array([[-1.0], [-1e-3]], DTYPE)
        val, g = jax.value_and_grad(lambda a, b: jnp.sum(sg.tangent_midpoint_from_sums(a, b, k=1.0)), argnums=(0, 1))(a, b)
        assert np.isfinite(float(val)) and all(np.isfinite(np.asarray(x)).all() for x in g)
        out = sg.tangent_midpoint_from_sums(a, b, k=1.0)
        assert float(jnp.max(jnp.linalg.norm(out, axis=-1))) <= np.pi / 2 + 1e-5  # at most the antipode's distance


@SETTINGS
@given(k=curvature, seed=seeds)
def test_gram_terms_give_pairwise_distances(k, seed):
    """st.gram(x, y) feeds sqdist_from_gram: [T, d] x [S, d] (and batched [B, T, d]) -> the
    pairwise d_k^2 of `dist`, for points well inside the ball / chart."""
    import jax.numpy as jnp
    import numpy as np

    from manifolds import stereographic as sg

    tol = 1e-9 if X64 else 2e-4
    k1, k2 = jax.random.split(jax.random.key(seed))
    x = sg.expmap0(0.3 * jax.random.normal(k1, (2, 4, 3), DTYPE), k=k)
    y = sg.expmap0(0.3 * jax.random.normal(k2, (2, 5, 3), DTYPE), k=k)
    xy, x2, y2 = sg.gram(x, y)
    assert xy.shape == (2, 4, 5) and x2.shape == (2, 4, 1) and y2.shape == (2, 1, 5)
    ref = sg.dist(x[:, :, None], y[:, None, :], k=k) ** 2
    assert np.allclose(sg.sqdist_from_gram(xy, x2, y2, k=k), ref, atol=tol, rtol=tol)
    assert np.allclose(sg.pairwise_dot(x[0], y[0]), np.asarray(x[0]) @ np.asarray(y[0]).T, atol=tol)
