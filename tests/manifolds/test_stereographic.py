"""Unit tests for manifolds.stereographic: closed forms, midpoints, bad input, NaN reporting."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _manifolds_dtype import DTYPE

import manifolds as M
from manifolds import stereographic as st

TOL = 2e-5 if DTYPE == jnp.float32 else 1e-10


def _pts(seed, shape, scale=0.3):
    """Small points: |x| <= scale·sqrt(d)·(max of normals) — only for flat-ish use."""
    return scale * jax.random.normal(jax.random.key(seed), shape, DTYPE)


def _ball_pts(seed, shape, k, radius=2.0):
    """Valid points of Stereographic(k) within Riemannian distance `radius` of 0."""
    return M.Stereographic(k).random_point(jax.random.key(seed), shape, radius=radius, dtype=DTYPE)


@pytest.fixture(autouse=True)
def _nan_reporting():
    with M.check_finite():
        yield


def test_flat_limit_is_conformally_euclidean():
    x, y = _pts(0, (5, 3)), _pts(1, (5, 3))
    np.testing.assert_allclose(st.dist(x, y, k=0.0), 2 * jnp.linalg.norm(x - y, axis=-1), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(st.expmap0(x, k=0.0), x, rtol=TOL)
    np.testing.assert_allclose(st.mobius_add(x, y, k=0.0), x + y, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(st.lambda_x(x, k=0.0), 2.0)


def test_poincare_ball_closed_form():
    """k=-1: dist = arcosh(1 + 2|x-y|^2 / ((1-|x|^2)(1-|y|^2)))."""
    x, y = _ball_pts(2, (6, 4), -1.0), _ball_pts(3, (6, 4), -1.0)
    nx, ny = jnp.sum(x * x, -1), jnp.sum(y * y, -1)
    ref = jnp.arccosh(1 + 2 * jnp.sum((x - y) ** 2, -1) / ((1 - nx) * (1 - ny)))
    np.testing.assert_allclose(st.dist(x, y, k=-1.0), ref, rtol=1e-4 if DTYPE == jnp.float32 else 1e-9)


def test_tan_artan_inverse_and_k_sign():
    x = jnp.linspace(-0.6, 0.6, 13, dtype=DTYPE)
    for k in (-1.5, -1e-7, 0.0, 1e-7, 0.9):
        np.testing.assert_allclose(st.artan_k(st.tan_k(x, k=k), k=k), x, atol=TOL)
    np.testing.assert_allclose(st.tan_k(x, k=-1.0), jnp.tanh(x), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(st.tan_k(x, k=4.0), jnp.tan(2 * x) / 2, rtol=TOL, atol=TOL)


def test_mobius_matvec_identity_and_scalar_mul():
    x = _pts(4, (5, 3))
    np.testing.assert_allclose(st.mobius_matvec(jnp.eye(3, dtype=DTYPE), x, k=-1.0), x, atol=TOL)
    np.testing.assert_allclose(
        st.mobius_matvec(2.0 * jnp.eye(3, dtype=DTYPE), x, k=-1.0), st.mobius_scalar_mul(2.0, x, k=-1.0), atol=TOL
    )
    two_x = st.mobius_add(x, x, k=-1.0)
    np.testing.assert_allclose(st.mobius_scalar_mul(2.0, x, k=-1.0), two_x, atol=10 * TOL)
    m = jax.random.normal(jax.random.key(5), (7, 3), DTYPE)
    assert st.mobius_matvec(m, x, k=0.5).shape == (5, 7)
    np.testing.assert_allclose(st.mobius_matvec(m, x, k=0.0), x @ m.T, rtol=1e-4, atol=TOL)


def test_ptransp0_matches_ptransp_from_origin():
    y, v = _ball_pts(6, (4, 3), -1.0), _pts(7, (4, 3))
    for k in (-1.0, 0.0, 0.8):
        np.testing.assert_allclose(st.ptransp0(y, v, k=k), st.ptransp(jnp.zeros_like(y), y, v, k=k), atol=TOL)


@pytest.mark.parametrize("k", [-1.0, -0.3, 0.0, 0.5, 2.0])
def test_two_point_midpoint_is_geodesic_midpoint(k):
    x, y = _ball_pts(8, (6, 3), k), _ball_pts(9, (6, 3), k)
    m = st.weighted_midpoint(jnp.stack([x, y], axis=-2), jnp.ones((6, 2), DTYPE), k=k)
    half = st.dist(x, y, k=k) / 2
    np.testing.assert_allclose(st.dist(m, x, k=k), half, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(st.dist(m, y, k=k), half, rtol=1e-3, atol=1e-4)


def test_midpoint_flat_is_weighted_mean():
    x = _pts(10, (5, 4, 3))
    w = jax.random.uniform(jax.random.key(11), (5, 4), DTYPE)
    ref = jnp.sum(w[..., None] * x, 1) / jnp.sum(w, 1)[..., None]
    np.testing.assert_allclose(st.weighted_midpoint(x, w, k=0.0), ref, rtol=1e-4, atol=TOL)


def test_midpoint_segment_sum_equivalence():
    """weighted_midpoint == midpoint_from_sums over segment_sum'd midpoint_terms (graph use)."""
    x = _ball_pts(12, (10, 3), -1.0, radius=1.5)  # valid for k = -1, 0, 1
    w = jax.random.uniform(jax.random.key(13), (10,), DTYPE)
    seg = jnp.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    for k in (-1.0, 0.0, 1.0):
        num_t, den_t = st.midpoint_terms(x, k=k)
        num = jax.ops.segment_sum(w[:, None] * num_t, seg, num_segments=5)
        den = jax.ops.segment_sum(w[:, None] * den_t, seg, num_segments=5)
        out = st.midpoint_from_sums(num, den, k=k)
        for s in range(4):
            ref = st.weighted_midpoint(x[seg == s], w[seg == s], k=k, axis=0)
            np.testing.assert_allclose(out[s], ref, atol=1e-5 if DTYPE == jnp.float32 else 1e-12)
        # Segment 4 has no members: A = B = 0 gives the origin, not NaN.
        np.testing.assert_array_equal(out[4], jnp.zeros(3, DTYPE))


def _lift(x, k):
    lam = st.lambda_x(x, k=k)
    return jnp.concatenate([lam * x, (lam - 1) / math.sqrt(k)], -1)


def test_sphere_midpoint_beyond_equator():
    """k>0 with weighted mass beyond the equator (B < 0): the result is the normalised
    extrinsic mean, where Ungar's ½⊗(A/B) would return its antipode."""
    k = 1.0
    x = jnp.array([[1.8, 0.2], [2.5, -0.4], [3.0, 0.1]], DTYPE)  # |x| > 1: southern hemisphere
    w = jnp.array([1.0, 2.0, 0.5], DTYPE)
    num_t, den_t = st.midpoint_terms(x, k=k)
    assert float(jnp.sum(w[:, None] * den_t)) < 0
    m = st.weighted_midpoint(x, w, k=k, axis=0)
    s = jnp.sum(w[:, None] * _lift(x, k), 0)
    ref = s / jnp.linalg.norm(s)
    np.testing.assert_allclose(_lift(m[None], k)[0], ref, atol=1e-5 if DTYPE == jnp.float32 else 1e-12)
    ungar = st.mobius_scalar_mul(0.5, jnp.sum(w[:, None] * num_t, 0) / jnp.sum(w[:, None] * den_t, 0), k=k)
    assert float(st.dist(ungar, m, k=k)) > 3.0  # nearly antipodal (pi R = 3.14)


def test_weighted_midpoint_is_scale_invariant_and_per_point_k():
    x = _ball_pts(14, (3, 4, 2), -1.0, radius=1.5)
    w = jax.random.uniform(jax.random.key(15), (3, 4), DTYPE)
    k = jnp.array([[-1.0], [0.0], [0.7]], DTYPE)
    m1 = st.weighted_midpoint(x, w, k=k)
    m2 = st.weighted_midpoint(x, 7.0 * w, k=k)
    np.testing.assert_allclose(m1, m2, atol=TOL)
    for i in range(3):
        np.testing.assert_allclose(m1[i], st.weighted_midpoint(x[i], w[i], k=float(k[i, 0]), axis=0), atol=TOL)


def test_project_keeps_points_inside():
    x = jnp.array([[3.0, 4.0], [0.1, 0.0]], DTYPE)
    p = st.project(x, k=-4.0)  # radius 0.5
    assert float(jnp.linalg.norm(p[0])) < 0.5
    np.testing.assert_allclose(p[1], x[1])
    np.testing.assert_allclose(st.project(x, k=1.0), x)
    far = st.expmap0(jnp.full((2,), 100.0, DTYPE), k=-1.0)
    assert float(jnp.linalg.norm(far)) < 1.0


def test_bad_input_raises_value_error():
    x = jnp.zeros((4, 3), DTYPE)
    with pytest.raises(ValueError, match="last-axis size"):
        st.dist(x, jnp.zeros((4, 2), DTYPE), k=-1.0)
    with pytest.raises(ValueError, match="do not broadcast"):
        st.mobius_add(x, jnp.zeros((5, 3), DTYPE), k=-1.0)
    with pytest.raises(ValueError, match="trailing axis of size 1"):
        st.expmap0(x, k=jnp.ones((4,), DTYPE))
    with pytest.raises(ValueError, match=r"per-point k of shape \(5, 1\) does not broadcast against v of shape \(4, 3\)"):
        st.expmap0(x, k=-jnp.ones((5, 1), DTYPE))
    with pytest.raises(ValueError, match=r"against x of shape \(4, 3\)"):
        st.mobius_add(x, x, k=-jnp.ones((3, 1), DTYPE))
    assert st.expmap0(x[None], k=-jnp.ones((2, 4, 1), DTYPE)).shape == (2, 4, 3)  # k may add leading axes
    with pytest.raises(ValueError, match=r"r must be a scalar or have a trailing axis of size 1 \(got shape \(3,\)\)"):
        st.mobius_scalar_mul(jnp.ones(3, DTYPE), x, k=-1.0)  # would scale each coordinate
    assert st.mobius_scalar_mul(jnp.ones((4, 1), DTYPE), x, k=-1.0).shape == (4, 3)
    with pytest.raises(ValueError, match=r"m of shape \[d_out, 3\]"):
        st.mobius_matvec(jnp.ones((2, 4), DTYPE), x, k=-1.0)
    with pytest.raises(ValueError, match="non-last axis"):
        st.weighted_midpoint(x, jnp.ones((4,), DTYPE), k=-1.0, axis=-1)
    with pytest.raises(ValueError, match="do not broadcast"):
        st.weighted_midpoint(x[None], jnp.ones((5,), DTYPE), k=-1.0)
    with pytest.raises(ValueError, match="at least one axis"):
        st.expmap0(1.0, k=-1.0)
    with pytest.raises(TypeError, match="k must be a number or an array, got the string '-1'"):
        st.expmap0(x, k="-1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Euclidean.dist: expected the same last-axis size"):
        M.Euclidean().dist(jnp.zeros(3, DTYPE), jnp.zeros(1, DTYPE))  # would broadcast to 0.0
    edge = jnp.array([[0.9999, 0.0], [1.0001, 0.0]], DTYPE)
    np.testing.assert_array_equal(M.Stereographic(-1.0).contains(edge), [True, False])
    np.testing.assert_array_equal(M.Stereographic(-1.0).contains(edge, atol=1e-3), [True, True])


_CHECK_FINITE_SCRIPT = """
import jax, jax.numpy as jnp, pytest
import manifolds as M
from manifolds import stereographic as st
bad = jnp.array([jnp.inf, 1.0], jnp.float32)
with M.check_finite():
    assert M.check_finite_enabled()
    with pytest.raises(FloatingPointError):
        st.expmap0(bad, k=-1.0)
    with pytest.raises(FloatingPointError):
        jax.jit(lambda v: st.expmap0(v, k=-1.0))(bad)
with M.check_finite(False):
    assert not M.check_finite_enabled()
    assert not bool(jnp.all(jnp.isfinite(st.expmap0(bad, k=-1.0))))
print("ok")
"""


def test_check_finite_reports_first_nan():
    """Run in a fresh process: JAX's compile caches from earlier tests in this
    process can hold executables traced before the flag was switched on."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", _CHECK_FINITE_SCRIPT], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]


def test_check_finite_off_by_default():
    import subprocess
    import sys

    code = "import manifolds, jax; assert not manifolds.check_finite_enabled(); assert not jax.config.jax_debug_nans"
    subprocess.run([sys.executable, "-c", code], check=True)
