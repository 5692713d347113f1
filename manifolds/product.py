"""Product manifolds over slices of the last axis.

`Product(components=(Stereographic(-1.), Stereographic(1.), Euclidean()), dims=(16, 16, 32))`
is H^16 x S^16 x E^32: a point `[..., 64]` is the concatenation of one point per
component (a Lorentz component of intrinsic dimension d takes d+1 columns).
Each component keeps its own model and curvature (signed k, keyword-free here:
the component specs carry it). Distances combine as the l2 norm of component
distances; inner products add; every other map acts per component.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from manifolds._common import Array, ArrayLike, safe_sqrt
from manifolds.spec import ManifoldSpec

__all__ = ["Product"]


@dataclasses.dataclass(frozen=True)
class Product(ManifoldSpec):
    """Product of `components` (ManifoldSpecs) over consecutive last-axis slices of width `dims`."""

    components: tuple[ManifoldSpec, ...]
    dims: tuple[int, ...]

    def __post_init__(self):
        comps, dims = tuple(self.components), tuple(int(d) for d in self.dims)
        object.__setattr__(self, "components", comps)
        object.__setattr__(self, "dims", dims)
        if len(comps) != len(dims) or not comps:
            raise ValueError(
                f"Product: expected one width per component, got {len(comps)} components and dims={dims}"
            )
        for i, (c, d) in enumerate(zip(comps, dims)):
            if not isinstance(c, ManifoldSpec):
                raise ValueError(f"Product: component {i} is {c!r}, expected a ManifoldSpec")
            if d < 1 or c.intrinsic_dim(d) < 1:
                raise ValueError(f"Product: component {i} ({type(c).__name__}) cannot have width {d}")

    @property
    def ambient_dim(self) -> int:
        return sum(self.dims)

    def intrinsic_dim(self, ambient_dim: int | None = None) -> int:
        if ambient_dim is not None and ambient_dim != self.ambient_dim:
            raise ValueError(f"Product: ambient width is {self.ambient_dim}, got {ambient_dim}")
        return sum(c.intrinsic_dim(d) for c, d in zip(self.components, self.dims))

    def curvatures(self) -> tuple[Any, ...]:
        return tuple(k for c in self.components for k in c.curvatures())

    def with_curvatures(self, ks: tuple[Any, ...]) -> "Product":
        ks, comps = tuple(ks), []
        for c in self.components:
            n = len(c.curvatures())
            comps.append(c.with_curvatures(ks[:n]))
            ks = ks[n:]
        if ks:
            raise ValueError(f"Product.with_curvatures: {len(ks)} curvature values left over")
        return dataclasses.replace(self, components=tuple(comps))

    # -- slicing helpers -------------------------------------------------
    def split(self, x: ArrayLike, name: str = "x") -> list[Array]:
        """[..., sum(dims)] -> list of component slices [..., dims[i]]."""
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.ambient_dim:
            raise ValueError(
                f"Product: {name} must have last axis {self.ambient_dim} (dims={self.dims}), got shape {x.shape}"
            )
        bounds = [sum(self.dims[:i]) for i in range(1, len(self.dims))]
        return jnp.split(x, bounds, axis=-1)

    def _map(self, fn: Callable[..., Array], *arrays: ArrayLike) -> Array:
        parts = [self.split(a, f"arg{i}") for i, a in enumerate(arrays)]
        out = [fn(c, *ps) for c, *ps in zip(self.components, *parts)]
        return jnp.concatenate(out, axis=-1)

    def _sum(self, fn: Callable[..., Array], *arrays: ArrayLike, keepdims: bool) -> Array:
        parts = [self.split(a, f"arg{i}") for i, a in enumerate(arrays)]
        out = sum(fn(c, *ps) for c, *ps in zip(self.components, *parts))
        return out if keepdims else out[..., 0]

    # -- geometry ----------------------------------------------------------
    def expmap(self, x, v):
        return self._map(lambda c, a, b: c.expmap(a, b), x, v)

    def logmap(self, x, y):
        return self._map(lambda c, a, b: c.logmap(a, b), x, y)

    def expmap0(self, v):
        return self._map(lambda c, a: c.expmap0(a), v)

    def logmap0(self, y):
        return self._map(lambda c, a: c.logmap0(a), y)

    def component_dists(self, x, y) -> Array:
        """Per-component distances [..., n_components]."""
        parts = zip(self.components, self.split(x), self.split(y, "y"))
        return jnp.concatenate([c.dist(a, b, keepdims=True) for c, a, b in parts], axis=-1)

    def dist(self, x, y, *, keepdims: bool = False):
        """l2 norm of the component distances: -> [...] (or [..., 1])."""
        sq = self._sum(lambda c, a, b: c.dist(a, b, keepdims=True) ** 2, x, y, keepdims=True)
        d = safe_sqrt(sq)
        return d if keepdims else d[..., 0]

    def inner(self, x, u, v, *, keepdims: bool = False):
        return self._sum(lambda c, a, b, e: c.inner(a, b, e, keepdims=True), x, u, v, keepdims=keepdims)

    def ptransp(self, x, y, v):
        return self._map(lambda c, a, b, e: c.ptransp(a, b, e), x, y, v)

    def egrad2rgrad(self, x, g):
        return self._map(lambda c, a, b: c.egrad2rgrad(a, b), x, g)

    def project(self, x):
        return self._map(lambda c, a: c.project(a), x)

    def proj_tangent(self, x, u):
        return self._map(lambda c, a, b: c.proj_tangent(a, b), x, u)

    def origin(self, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
        if shape[-1] != self.ambient_dim:
            raise ValueError(f"Product.origin: last axis must be {self.ambient_dim}, got {shape}")
        return jnp.concatenate(
            [c.origin(tuple(shape[:-1]) + (d,), dtype) for c, d in zip(self.components, self.dims)], axis=-1
        )

    def contains(self, x, *, atol: float = 1e-4) -> Array:
        parts = zip(self.components, self.split(x))
        out = [c.contains(a, atol=atol) for c, a in parts]
        return jnp.all(jnp.stack(out, axis=-1), axis=-1)

    def random_point(self, key, shape, *, radius: float = 2.0, dtype=jnp.float32):
        if shape[-1] != self.ambient_dim:
            raise ValueError(f"Product.random_point: last axis must be {self.ambient_dim}, got {shape}")
        keys = jax.random.split(key, len(self.components))
        return jnp.concatenate(
            [
                c.random_point(kk, tuple(shape[:-1]) + (d,), radius=radius, dtype=dtype)
                for c, d, kk in zip(self.components, self.dims, keys)
            ],
            axis=-1,
        )

    def random_tangent(self, key, x, *, scale: float = 1.0):
        keys = jax.random.split(key, len(self.components))
        parts = self.split(x)
        return jnp.concatenate(
            [c.random_tangent(kk, a, scale=scale) for c, a, kk in zip(self.components, parts, keys)], axis=-1
        )

    def has_mobius_add(self) -> bool:
        return all(hasattr(c, "mobius_add") for c in self.components)

    def mobius_add(self, x, y):
        if not self.has_mobius_add():
            raise ValueError("Product.mobius_add: every component needs a gyro-addition (no Lorentz)")
        return self._map(lambda c, a, b: c.mobius_add(a, b), x, y)
