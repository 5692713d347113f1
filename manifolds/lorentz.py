"""The hyperboloid (Lorentz) model of hyperbolic space with signed curvature k < 0.

Points are arrays `[..., d+1]` (time coordinate first) on
    H = {x : <x, x>_L = 1/k, x_0 > 0},   <x, y>_L = -x_0 y_0 + sum_i x_i y_i,
i.e. the sheet of radius R = 1/sqrt(-k). Tangent vectors at x are ambient vectors
u with <x, u>_L = 0; at the origin o = (R, 0, ..., 0) they have u_0 = 0, so
`expmap0`/`logmap0` take/return ambient `[..., d+1]` vectors (u_0 ignored/0).

`k` is keyword-only, a scalar or an array with a trailing axis of size 1, and
must be negative. A concrete k >= 0 (Python/NumPy number or a non-traced array)
raises ValueError; a traced k is NOT checked (k >= 0 then yields NaN).

Numerics: distances use sinh(d/2R) = |a x_s - y_s/a| / (2R), a = sqrt((R+y_0)/(R+x_0))
(the Poincaré-ball chord written in hyperboloid coordinates), which avoids the
catastrophic cancellation of arcosh(k<x,y>_L) for far-out or nearby points and
has finite gradients everywhere. cosh/sinh arguments in `expmap` are clipped at
`max_arg(dtype)` (float32: 32, float64: 300) and `project` keeps points within
distance max_arg·R of the origin, so coordinates and their products never overflow.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from manifolds._common import (
    Array,
    ArrayLike,
    as_curvature,
    as_float,
    check_same_dim,
    is_concrete,
    polyval,
    safe_sqrt,
    sq_norm,
)

__all__ = [
    "check_curvature",
    "inner",
    "norm",
    "project",
    "proj_tangent",
    "origin",
    "expmap",
    "logmap",
    "expmap0",
    "logmap0",
    "dist",
    "dist0",
    "ptransp",
    "ptransp0",
    "egrad2rgrad",
    "to_poincare",
    "from_poincare",
    "random_point",
    "max_arg",
]

_TAYLOR_T = 1e-3
# cosh(s) and sinh(s)/s as series in t = s^2
_COSH_SERIES = (1.0, 1.0 / 2.0, 1.0 / 24.0, 1.0 / 720.0, 1.0 / 40320.0)
_SINHC_SERIES = (1.0, 1.0 / 6.0, 1.0 / 120.0, 1.0 / 5040.0, 1.0 / 362880.0)
# arsinh(z)/z = 1 - z^2/6 + 3 z^4/40 - 5 z^6/112 + 35 z^8/1152 (in t = z^2)
_ARSINHC_SERIES = (1.0, -1.0 / 6.0, 3.0 / 40.0, -5.0 / 112.0, 35.0 / 1152.0)


def max_arg(dtype) -> float:
    """Largest cosh/sinh argument used by `expmap` for this dtype."""
    return 32.0 if jnp.finfo(dtype).bits <= 32 else 300.0


def check_curvature(k: ArrayLike) -> None:
    """ValueError if a concrete k is not strictly negative (traced k is not checked)."""
    if is_concrete(k):
        kv = np.asarray(k)
        if kv.size == 0 or not np.all(kv < 0):
            raise ValueError(f"Lorentz model needs curvature k < 0 (hyperbolic), got k={kv.tolist()}")


def _prep(x: ArrayLike, k: ArrayLike, name: str = "x") -> tuple[Array, Array]:
    check_curvature(k)
    x = as_float(x, name)
    if x.shape[-1] < 2:
        raise ValueError(f"{name}: Lorentz points need d+1 >= 2 coordinates on the last axis, got {x.shape}")
    kc = as_curvature(k, x.dtype, x.shape, name)
    if is_concrete(k) and not np.all(np.asarray(k).astype(np.dtype(x.dtype)) < 0):
        raise ValueError(f"Lorentz model needs k < 0; k={np.asarray(k).tolist()} rounds to 0 in {x.dtype}")
    return x, kc


def _radius(k: Array) -> Array:
    return jax.lax.rsqrt(-k)


def _minkowski(u: Array, v: Array) -> Array:
    uv = u * v
    return jnp.sum(uv[..., 1:], axis=-1, keepdims=True) - uv[..., :1]


def _cosh_sinhc(t: Array) -> tuple[Array, Array]:
    """(cosh(√t), sinh(√t)/√t) for t >= 0, smooth at t = 0."""
    small = t < _TAYLOR_T
    t_safe = jnp.where(small, 1.0, t)
    s = jnp.sqrt(t_safe)
    cosh = jnp.where(small, polyval(_COSH_SERIES, t), jnp.cosh(s))
    sinhc = jnp.where(small, polyval(_SINHC_SERIES, t), jnp.sinh(s) / s)
    return cosh, sinhc


def _arsinhc(t: Array) -> Array:
    """arsinh(z)/z as a function of t = z^2 >= 0, smooth at 0."""
    small = t < _TAYLOR_T
    t_safe = jnp.where(small, 1.0, t)
    z = jnp.sqrt(t_safe)
    return jnp.where(small, polyval(_ARSINHC_SERIES, t), jnp.arcsinh(z) / z)


def inner(u: ArrayLike, v: ArrayLike, *, keepdims: bool = False) -> Array:
    """Minkowski inner product -u_0 v_0 + sum u_i v_i: [..., d+1] x2 -> [...] (or [..., 1])."""
    u = as_float(u, "u")
    v = as_float(v, "v").astype(u.dtype)
    check_same_dim(u, v, "lorentz.inner(u, v)")
    out = _minkowski(u, v)
    return out if keepdims else out[..., 0]


def norm(u: ArrayLike, *, keepdims: bool = False) -> Array:
    """Norm sqrt(max(<u,u>_L, 0)) of a (spacelike) tangent vector: -> [...] (or [..., 1])."""
    u = as_float(u, "u")
    out = safe_sqrt(jnp.maximum(_minkowski(u, u), 0.0))
    return out if keepdims else out[..., 0]


def _project(x: Array, k: Array) -> Array:
    xs = x[..., 1:]
    r = _radius(k)
    # |x_s| without overflow (rescaled by the largest entry).
    m = jnp.max(jnp.abs(xs), axis=-1, keepdims=True)
    m = jnp.where(m > 0, m, 1.0)
    n = m * safe_sqrt(sq_norm(xs / m))
    # Confine points to distance max_arg·R from the origin (coordinates stay finite).
    cap = float(np.sinh(max_arg(x.dtype))) * r
    over = n > cap
    xs = xs * jnp.where(over, cap / jnp.where(over, n, 1.0), 1.0)
    nc = jnp.minimum(n, cap)
    x0 = jnp.sqrt(nc * nc + r * r)
    return jnp.concatenate([x0, xs], axis=-1)


def project(x: ArrayLike, *, k: ArrayLike) -> Array:
    """Put x on the hyperboloid by recomputing x_0 = sqrt(R^2 + |x_s|^2): [..., d+1] -> same."""
    x, k = _prep(x, k)
    return _project(x, k)


def _proj_tangent(x: Array, u: Array, k: Array) -> Array:
    return u - k * _minkowski(x, u) * x


def proj_tangent(x: ArrayLike, u: ArrayLike, *, k: ArrayLike) -> Array:
    """Orthogonal projection of an ambient u onto T_x H: u + <x,u>_L x / R^2. -> [..., d+1]."""
    x, k = _prep(x, k)
    u = as_float(u, "u").astype(x.dtype)
    check_same_dim(x, u, "lorentz.proj_tangent(x, u)")
    return _proj_tangent(x, u, k)


def origin(d: int, *, k: ArrayLike, dtype=jnp.float32) -> Array:
    """The origin (R, 0, ..., 0) of H^d: [d+1]."""
    check_curvature(k)
    k = jnp.asarray(k, dtype=dtype)
    return jnp.zeros((d + 1,), dtype).at[0].set(_radius(k).reshape(()))


def _expmap(x: Array, v: Array, k: Array) -> Array:
    t = -k * jnp.maximum(_minkowski(v, v), 0.0)  # (|v|_L / R)^2
    t = jnp.minimum(t, max_arg(x.dtype) ** 2)
    cosh, sinhc = _cosh_sinhc(t)
    return _project(cosh * x + sinhc * v, k)


def expmap(x: ArrayLike, v: ArrayLike, *, k: ArrayLike) -> Array:
    """Exponential map cosh(|v|/R) x + R sinh(|v|/R) v/|v|: [..., d+1] x2 -> [..., d+1]."""
    x, k = _prep(x, k)
    v = as_float(v, "v").astype(x.dtype)
    check_same_dim(x, v, "lorentz.expmap(x, v)")
    return _expmap(x, v, k)


def _half_chord(x: Array, y: Array, k: Array) -> Array:
    """sinh(d(x,y)/2R)^2 computed without cancellation: [..., 1]."""
    r = _radius(k)
    a = jnp.sqrt((r + y[..., :1]) / (r + x[..., :1]))
    diff = a * x[..., 1:] - y[..., 1:] / a
    return sq_norm(diff) * (-k) * 0.25


def _dist(x: Array, y: Array, k: Array) -> Array:
    t = _half_chord(x, y, k)  # z^2, z = sinh(d/2R)
    return 2.0 * _radius(k) * safe_sqrt(t) * _arsinhc(t)


def dist(x: ArrayLike, y: ArrayLike, *, k: ArrayLike, keepdims: bool = False) -> Array:
    """Geodesic distance R arcosh(k<x,y>_L), computed stably: [..., d+1] x2 -> [...] (or [..., 1])."""
    x, k = _prep(x, k)
    y = as_float(y, "y").astype(x.dtype)
    check_same_dim(x, y, "lorentz.dist(x, y)")
    d = _dist(x, y, k)
    return d if keepdims else d[..., 0]


def dist0(x: ArrayLike, *, k: ArrayLike, keepdims: bool = False) -> Array:
    """Distance to the origin R arcosh(x_0/R): [..., d+1] -> [...] (or [..., 1])."""
    x, k = _prep(x, k)
    o = jnp.zeros_like(x).at[..., :1].set(_radius(k) * jnp.ones_like(x[..., :1]))
    d = _dist(o, x, k)
    return d if keepdims else d[..., 0]


def _logmap(x: Array, y: Array, k: Array) -> Array:
    t = _half_chord(x, y, k)  # sinh(d/2R)^2
    d_over_r = 2.0 * safe_sqrt(t) * _arsinhc(t)
    _, sinhc = _cosh_sinhc(d_over_r * d_over_r)
    # u = y - cosh(d/R) x is tangent with |u|_L = R sinh(d/R); cosh(d/R) - 1 = 2t.
    u = (y - x) - 2.0 * t * x
    return u / sinhc


def logmap(x: ArrayLike, y: ArrayLike, *, k: ArrayLike) -> Array:
    """Logarithmic map at x: d(x,y) (y - cosh(d/R) x) / (R sinh(d/R)). -> [..., d+1]."""
    x, k = _prep(x, k)
    y = as_float(y, "y").astype(x.dtype)
    check_same_dim(x, y, "lorentz.logmap(x, y)")
    return _logmap(x, y, k)


def expmap0(v: ArrayLike, *, k: ArrayLike) -> Array:
    """Exponential map at the origin for ambient v [..., d+1] (v_0 ignored) -> [..., d+1]."""
    v, k = _prep(v, k, "v")
    vs = v[..., 1:]
    t = jnp.minimum(-k * sq_norm(vs), max_arg(v.dtype) ** 2)
    cosh, sinhc = _cosh_sinhc(t)
    r = _radius(k)
    return _project(jnp.concatenate([r * cosh, sinhc * vs], axis=-1), k)


def logmap0(y: ArrayLike, *, k: ArrayLike) -> Array:
    """Logarithmic map at the origin: [..., d+1] -> [..., d+1] with time coordinate 0."""
    y, k = _prep(y, k, "y")
    r = _radius(k)
    o = jnp.zeros_like(y).at[..., :1].set(r * jnp.ones_like(y[..., :1]))
    u = _logmap(o, y, k)
    return jnp.concatenate([jnp.zeros_like(u[..., :1]), u[..., 1:]], axis=-1)


def ptransp(x: ArrayLike, y: ArrayLike, v: ArrayLike, *, k: ArrayLike) -> Array:
    """Parallel transport of v from x to y along the geodesic:
    v + <y, v>_L / (R^2 - <x, y>_L) (x + y). [..., d+1] x3 -> [..., d+1]."""
    x, k = _prep(x, k)
    y = as_float(y, "y").astype(x.dtype)
    v = as_float(v, "v").astype(x.dtype)
    check_same_dim(x, y, "lorentz.ptransp(x, y, v)")
    check_same_dim(x, v, "lorentz.ptransp(x, y, v)")
    den = -1.0 / k - _minkowski(x, y)
    return v + _minkowski(y, v) / den * (x + y)


def ptransp0(y: ArrayLike, v: ArrayLike, *, k: ArrayLike) -> Array:
    """Parallel transport of v (tangent at the origin) to y. -> [..., d+1]."""
    y, k = _prep(y, k, "y")
    o = jnp.zeros_like(y).at[..., :1].set(_radius(k) * jnp.ones_like(y[..., :1]))
    return ptransp(o, y, v, k=k)


def egrad2rgrad(x: ArrayLike, g: ArrayLike, *, k: ArrayLike) -> Array:
    """Riemannian gradient: flip the time sign (inverse metric), project onto T_x H."""
    x, k = _prep(x, k)
    g = as_float(g, "g").astype(x.dtype)
    check_same_dim(x, g, "lorentz.egrad2rgrad(x, g)")
    u = jnp.concatenate([-g[..., :1], g[..., 1:]], axis=-1)
    return _proj_tangent(x, u, k)


def to_poincare(x: ArrayLike, *, k: ArrayLike) -> Array:
    """Hyperboloid -> Poincaré ball of the same k: R x_s / (R + x_0). [..., d+1] -> [..., d]."""
    x, k = _prep(x, k)
    r = _radius(k)
    return r * x[..., 1:] / (r + x[..., :1])


def from_poincare(p: ArrayLike, *, k: ArrayLike) -> Array:
    """Poincaré ball (stereographic, same k) -> hyperboloid: (R(λ-1), λ p), λ = 2/(1+k|p|^2).

    p: [..., d] -> [..., d+1]. Inverse of `to_poincare`.
    """
    check_curvature(k)
    p = as_float(p, "p")
    k = as_curvature(k, p.dtype, p.shape, "p")
    lam = 2.0 / jnp.maximum(1.0 + k * sq_norm(p), float(jnp.finfo(p.dtype).eps) ** 2)
    return jnp.concatenate([_radius(k) * (lam - 1.0), lam * p], axis=-1)


def random_point(key: jax.Array, shape: tuple[int, ...], *, k: ArrayLike, scale: float = 1.0,
                 dtype=jnp.float32) -> Array:
    """Random points expmap0(v), v_s ~ N(0, scale^2 I): [*shape] with shape[-1] = d+1."""
    v = scale * jax.random.normal(key, shape, dtype=dtype)
    return expmap0(v, k=k)
