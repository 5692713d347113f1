"""Learnable signed curvature with an optional sign constraint.

Convention: `k` is the signed sectional curvature (k<0 hyperbolic / Poincaré ball,
k>0 spherical / stereographic sphere, k=0 flat). A `Curvature` module stores an
unconstrained raw parameter `a` (optimised with plain optax) and maps it to k:

    geometry="hyperbolic": k = -softplus(a)   (always < 0)
    geometry="spherical":  k = +softplus(a)   (always > 0)
    geometry="euclidean":  k = 0              (no parameter, not learnable)
    geometry="free":       k = a              (any sign; the stereographic maps use a
                                               Taylor branch near 0, so k may cross 0)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

GEOMETRIES: tuple[str, ...] = ("hyperbolic", "spherical", "euclidean", "free")


def _check_geometry(geometry: str) -> None:
    if geometry not in GEOMETRIES:
        raise ValueError(f"unknown geometry {geometry!r}; known: {list(GEOMETRIES)}")


def inverse_softplus(y: float) -> float:
    """Raw value a with softplus(a) == y (y > 0), stable for large y."""
    if y <= 0:
        raise ValueError(f"inverse_softplus needs y > 0, got {y}")
    return y + math.log(-math.expm1(-y))


def raw_to_curvature(raw: jax.Array, *, geometry: str) -> jax.Array:
    """Map the unconstrained parameter to signed curvature k (see module docstring)."""
    _check_geometry(geometry)
    if geometry == "hyperbolic":
        return -jax.nn.softplus(raw)
    if geometry == "spherical":
        return jax.nn.softplus(raw)
    if geometry == "euclidean":
        return jnp.zeros_like(raw)
    return raw


def curvature_to_raw(k: float, *, geometry: str) -> float:
    """Inverse of `raw_to_curvature` for an initial value; checks the sign of k."""
    _check_geometry(geometry)
    if geometry == "hyperbolic":
        if k >= 0:
            raise ValueError(f"hyperbolic curvature must be < 0, got k={k}")
        return inverse_softplus(-k)
    if geometry == "spherical":
        if k <= 0:
            raise ValueError(f"spherical curvature must be > 0, got k={k}")
        return inverse_softplus(k)
    if geometry == "euclidean":
        if k != 0:
            raise ValueError(f"euclidean curvature must be 0, got k={k}")
        return 0.0
    return float(k)


DEFAULT_K: dict[str, float] = {"hyperbolic": -1.0, "spherical": 1.0, "euclidean": 0.0, "free": 0.0}


class Curvature(nnx.Module):
    """Signed curvature, learnable by default; `__call__()` returns a float32 scalar k.

    The raw parameter lives in R (plain optax). `learnable=False` stores it as a
    non-trainable `nnx.Variable` so `nnx.Optimizer(..., wrt=nnx.Param)` skips it.
    """

    def __init__(self, geometry: str, *, k: float | None = None, learnable: bool = True):
        _check_geometry(geometry)
        self.geometry = geometry
        k0 = DEFAULT_K[geometry] if k is None else float(k)
        raw = jnp.asarray(curvature_to_raw(k0, geometry=geometry), jnp.float32)
        self.learnable = learnable and geometry != "euclidean"
        self.raw = nnx.Param(raw) if self.learnable else nnx.Variable(raw)

    def __call__(self) -> jax.Array:
        return raw_to_curvature(self.raw[...], geometry=self.geometry)
