"""Sign-constrained learnable curvature."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from geofm.nn.curvature import Curvature, curvature_to_raw, raw_to_curvature


@pytest.mark.parametrize("geometry,k0", [("hyperbolic", -2.0), ("spherical", 0.5), ("free", -0.3)])
def test_init_value_round_trips(geometry, k0):
    assert float(Curvature(geometry, k=k0)()) == pytest.approx(k0, rel=1e-5)


def test_sign_respected_for_any_raw_value():
    raw = jnp.linspace(-50.0, 50.0, 101)
    assert bool(jnp.all(raw_to_curvature(raw, geometry="hyperbolic") < 0))
    assert bool(jnp.all(raw_to_curvature(raw, geometry="spherical") > 0))
    assert bool(jnp.all(raw_to_curvature(raw, geometry="euclidean") == 0))


def test_sign_survives_gradient_steps():
    """Large gradient steps pushing k towards the other sign never flip it."""
    for geometry, push in (("hyperbolic", 1.0), ("spherical", -1.0)):
        c = Curvature(geometry)
        for _ in range(20):
            g = jax.grad(lambda m: push * m())(c)
            c.raw[...] = c.raw[...] + 5.0 * g.raw[...]
        k = float(c())
        assert (k < 0) if geometry == "hyperbolic" else (k > 0)


def test_euclidean_and_frozen_have_no_params():
    assert len(jax.tree.leaves(nnx.state(Curvature("euclidean"), nnx.Param))) == 0
    assert len(jax.tree.leaves(nnx.state(Curvature("hyperbolic", learnable=False), nnx.Param))) == 0
    assert len(jax.tree.leaves(nnx.state(Curvature("hyperbolic"), nnx.Param))) == 1


@pytest.mark.parametrize("geometry,k", [("hyperbolic", 1.0), ("spherical", -1.0), ("euclidean", 0.5)])
def test_wrong_sign_rejected(geometry, k):
    with pytest.raises(ValueError, match=geometry):
        curvature_to_raw(k, geometry=geometry)


def test_unknown_geometry_lists_known():
    with pytest.raises(ValueError, match="hyperbolic"):
        Curvature("elliptic")
