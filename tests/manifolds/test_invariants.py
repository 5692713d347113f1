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
