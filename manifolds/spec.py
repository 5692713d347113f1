"""Manifold specs: a thin, uniform object interface over the pure functions.

`Stereographic(k)`, `Lorentz(k)`, `Euclidean()` (and `manifolds.product.Product`)
are frozen dataclasses whose methods delegate to `manifolds.stereographic` /
`manifolds.lorentz`; they hold no math of their own. They are what
`manifolds.optim` (one spec per parameter leaf) and `manifolds.testing`
(the invariant suite) consume.

Specs are deliberately NOT pytrees: inside a tree of specs each one is a leaf.
`k` may be a float or a (possibly traced) array: `with_curvatures` rebuilds a
spec with new curvature values, e.g. to differentiate w.r.t. k.

Note `Stereographic(0.0)` is R^d with the conformal metric 4·I (distances 2|x-y|,
the k -> 0 limit of the curved models) while `Euclidean()` is R^d with metric I.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from manifolds import lorentz as _lo
from manifolds import stereographic as _st
from manifolds._common import Array, ArrayLike, check_same_dim, safe_norm, sq_norm

__all__ = ["ManifoldSpec", "Stereographic", "Lorentz", "Euclidean", "random_unit"]


def random_unit(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
    """Uniformly random unit vectors over the last axis: [*shape]."""
    g = jax.random.normal(key, shape, dtype=dtype)
    return g / jnp.maximum(safe_norm(g, keepdims=True), jnp.finfo(dtype).tiny)


def _radii(key: jax.Array, shape: tuple[int, ...], radius: float, dtype) -> Array:
    return jax.random.uniform(key, tuple(shape[:-1]) + (1,), dtype=dtype, maxval=radius)


class ManifoldSpec:
    """Common interface. Points `[..., n]` with n = the ambient width of the last axis.

    Methods: expmap, logmap, expmap0, logmap0, dist, inner, norm, ptransp,
    egrad2rgrad, project, proj_tangent, origin, random_point, random_tangent,
    contains, intrinsic_dim, curvatures, with_curvatures.
    """

    def retract(self, x: ArrayLike, v: ArrayLike) -> Array:
        """First-order retraction project(x + v) (cheaper than expmap)."""
        return self.project(jnp.asarray(x) + jnp.asarray(v))

    def norm(self, x: ArrayLike, u: ArrayLike, *, keepdims: bool = False) -> Array:
        """Riemannian norm of u at x: -> [...] (or [..., 1])."""
        sq = jnp.maximum(self.inner(x, u, u, keepdims=True), 0.0)
        out = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
        return out if keepdims else out[..., 0]


@dataclasses.dataclass(frozen=True)
class Stereographic(ManifoldSpec):
    """κ-stereographic model (ball k<0, 4·I-flat k=0, sphere k>0); see `manifolds.stereographic`."""

    k: Any = -1.0

    def curvatures(self) -> tuple[Any, ...]:
        return (self.k,)

    def with_curvatures(self, ks: tuple[Any, ...]) -> "Stereographic":
        (k,) = ks
        return dataclasses.replace(self, k=k)

    def intrinsic_dim(self, ambient_dim: int) -> int:
        return ambient_dim

    def expmap(self, x, v):
        return _st.expmap(x, v, k=self.k)

    def logmap(self, x, y):
        return _st.logmap(x, y, k=self.k)

    def expmap0(self, v):
        return _st.expmap0(v, k=self.k)

    def logmap0(self, y):
        return _st.logmap0(y, k=self.k)

    def dist(self, x, y, *, keepdims: bool = False):
        return _st.dist(x, y, k=self.k, keepdims=keepdims)

    def inner(self, x, u, v, *, keepdims: bool = False):
        return _st.inner(x, u, v, k=self.k, keepdims=keepdims)

    def norm(self, x, u, *, keepdims: bool = False):
        return _st.norm(x, u, k=self.k, keepdims=keepdims)

    def ptransp(self, x, y, v):
        return _st.ptransp(x, y, v, k=self.k)

    def egrad2rgrad(self, x, g):
        return _st.egrad2rgrad(x, g, k=self.k)

    def project(self, x):
        return _st.project(x, k=self.k)

    def proj_tangent(self, x, u):
        return jnp.asarray(u)

    def mobius_add(self, x, y):
        return _st.mobius_add(x, y, k=self.k)

    def origin(self, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
        return jnp.zeros(shape, dtype)

    def contains(self, x, *, atol: float = 0.0) -> Array:
        """Boolean [...]: finite and (k<0) inside the ball: k|x|^2 > -1 - atol (atol 0:
        strictly inside; atol > 0 tolerates points that far past the rim, in units of k|x|^2)."""
        x = jnp.asarray(x)
        k = jnp.asarray(self.k, x.dtype)
        inside = (k >= 0) | (k * sq_norm(x) > -1.0 - atol)
        return jnp.all(jnp.isfinite(x), axis=-1) & inside[..., 0]

    def random_point(self, key, shape, *, radius: float = 2.0, dtype=jnp.float32):
        """Points at Riemannian distance U(0, radius) from the origin, uniform direction.

        On the sphere the radius is capped at 0.45·π·R, so pairwise distances stay
        below 0.9·π·R (away from the cut locus).
        """
        k = float(jnp.max(jnp.asarray(self.k))) if not isinstance(self.k, jax.core.Tracer) else 0.0
        if k > 0:
            radius = min(radius, 0.45 * math.pi / math.sqrt(k))
        ku, kr = jax.random.split(key)
        v = random_unit(ku, shape, dtype) * _radii(kr, shape, radius, dtype) * 0.5
        return _st.expmap0(v, k=self.k)

    def random_tangent(self, key, x, *, scale: float = 1.0):
        """Tangent vectors at x with Riemannian norm U(0, scale)."""
        x = jnp.asarray(x)
        ku, kr = jax.random.split(key)
        u = random_unit(ku, x.shape, x.dtype) * _radii(kr, x.shape, scale, x.dtype)
        return u / _st.lambda_x(x, k=self.k)


@dataclasses.dataclass(frozen=True)
class Lorentz(ManifoldSpec):
    """Hyperboloid model with k < 0; points [..., d+1]. See `manifolds.lorentz`."""

    k: Any = -1.0

    def __post_init__(self):
        _lo.check_curvature(self.k)

    def curvatures(self) -> tuple[Any, ...]:
        return (self.k,)

    def with_curvatures(self, ks: tuple[Any, ...]) -> "Lorentz":
        (k,) = ks
        return dataclasses.replace(self, k=k)

    def intrinsic_dim(self, ambient_dim: int) -> int:
        return ambient_dim - 1

    def expmap(self, x, v):
        return _lo.expmap(x, v, k=self.k)

    def logmap(self, x, y):
        return _lo.logmap(x, y, k=self.k)

    def expmap0(self, v):
        return _lo.expmap0(v, k=self.k)

    def logmap0(self, y):
        return _lo.logmap0(y, k=self.k)

    def dist(self, x, y, *, keepdims: bool = False):
        return _lo.dist(x, y, k=self.k, keepdims=keepdims)

    def inner(self, x, u, v, *, keepdims: bool = False):
        return _lo.inner(u, v, keepdims=keepdims)

    def ptransp(self, x, y, v):
        return _lo.ptransp(x, y, v, k=self.k)

    def egrad2rgrad(self, x, g):
        return _lo.egrad2rgrad(x, g, k=self.k)

    def project(self, x):
        return _lo.project(x, k=self.k)

    def proj_tangent(self, x, u):
        return _lo.proj_tangent(x, u, k=self.k)

    def origin(self, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
        o = _lo.origin(shape[-1] - 1, k=self.k, dtype=dtype)
        return jnp.broadcast_to(o, shape)

    def contains(self, x, *, atol: float = 1e-4) -> Array:
        """Boolean [...]: finite, x_0 > 0 and |<x,x>_L - 1/k| <= atol·x_0^2."""
        x = jnp.asarray(x)
        k = jnp.asarray(self.k, x.dtype)
        q = _lo.inner(x, x, keepdims=True)
        ok = (jnp.abs(q - 1.0 / k) <= atol * x[..., :1] ** 2) & (x[..., :1] > 0)
        return jnp.all(jnp.isfinite(x), axis=-1) & ok[..., 0]

    def random_point(self, key, shape, *, radius: float = 2.0, dtype=jnp.float32):
        """Points at distance U(0, radius) from the origin, uniform direction."""
        ku, kr = jax.random.split(key)
        spatial = tuple(shape[:-1]) + (shape[-1] - 1,)
        v = random_unit(ku, spatial, dtype) * _radii(kr, shape, radius, dtype)
        v = jnp.concatenate([jnp.zeros_like(v[..., :1]), v], axis=-1)
        return _lo.expmap0(v, k=self.k)

    def random_tangent(self, key, x, *, scale: float = 1.0):
        """Tangent vectors at x with Riemannian norm U(0, scale)."""
        x = jnp.asarray(x)
        ku, kr = jax.random.split(key)
        spatial = tuple(x.shape[:-1]) + (x.shape[-1] - 1,)
        v = random_unit(ku, spatial, x.dtype) * _radii(kr, x.shape, scale, x.dtype)
        v = jnp.concatenate([jnp.zeros_like(v[..., :1]), v], axis=-1)
        # Transport from the origin: exact norm, no cancellation at far-out x.
        return _lo.ptransp0(x, v, k=self.k)


@dataclasses.dataclass(frozen=True)
class Euclidean(ManifoldSpec):
    """R^d with the standard metric I (distance |x - y|)."""

    def curvatures(self) -> tuple[Any, ...]:
        return ()

    def with_curvatures(self, ks: tuple[Any, ...]) -> "Euclidean":
        if ks:
            raise ValueError(f"Euclidean has no curvature, got {ks}")
        return self

    def intrinsic_dim(self, ambient_dim: int) -> int:
        return ambient_dim

    def expmap(self, x, v):
        x, v = jnp.asarray(x), jnp.asarray(v)
        check_same_dim(x, v, "Euclidean.expmap")
        return x + v

    def logmap(self, x, y):
        x, y = jnp.asarray(x), jnp.asarray(y)
        check_same_dim(x, y, "Euclidean.logmap")
        return y - x

    def expmap0(self, v):
        return jnp.asarray(v)

    def logmap0(self, y):
        return jnp.asarray(y)

    def dist(self, x, y, *, keepdims: bool = False):
        x, y = jnp.asarray(x), jnp.asarray(y)
        check_same_dim(x, y, "Euclidean.dist")
        return safe_norm(x - y, keepdims=keepdims)

    def inner(self, x, u, v, *, keepdims: bool = False):
        u, v = jnp.asarray(u), jnp.asarray(v)
        check_same_dim(u, v, "Euclidean.inner")
        return jnp.sum(u * v, axis=-1, keepdims=keepdims)

    def ptransp(self, x, y, v):
        return jnp.asarray(v)

    def egrad2rgrad(self, x, g):
        return jnp.asarray(g)

    def project(self, x):
        return jnp.asarray(x)

    def proj_tangent(self, x, u):
        return jnp.asarray(u)

    def mobius_add(self, x, y):
        return jnp.asarray(x) + jnp.asarray(y)

    def origin(self, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
        return jnp.zeros(shape, dtype)

    def contains(self, x, *, atol: float = 0.0) -> Array:
        """Boolean [...]: finite (R^d has no constraint for atol to relax)."""
        return jnp.all(jnp.isfinite(jnp.asarray(x)), axis=-1)

    def random_point(self, key, shape, *, radius: float = 2.0, dtype=jnp.float32):
        ku, kr = jax.random.split(key)
        return random_unit(ku, shape, dtype) * _radii(kr, shape, radius, dtype)

    def random_tangent(self, key, x, *, scale: float = 1.0):
        x = jnp.asarray(x)
        ku, kr = jax.random.split(key)
        return random_unit(ku, x.shape, x.dtype) * _radii(kr, x.shape, scale, x.dtype)
