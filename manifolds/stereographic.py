"""The κ-stereographic model: one code path for every signed curvature `k`.

Curvature convention: `k` is the signed sectional curvature, keyword-only.
  * k < 0: Poincaré ball of radius 1/sqrt(-k) (hyperbolic space),
  * k = 0: Euclidean space R^d with the metric 4·I (so `dist(x, y) = 2|x - y|`,
    the k -> 0 limit of both other cases),
  * k > 0: stereographic projection of the sphere of radius 1/sqrt(k) from its
    "south pole"; the origin is the north pole and the south pole is the point at
    infinity (antipodal points x, y satisfy y = -x / (k|x|^2)).

Points and tangent vectors are arrays `[..., d]`; every reduction is over the
last axis. `k` is a scalar or an array whose last axis has size 1 that
broadcasts against `[..., 1]` (per-point curvature: `k[..., None]`).

The metric is conformal: g_x = lambda_x^2 I with lambda_x = 2 / (1 + k|x|^2).

Numerics
  * tan_k / artan_k are written as x * f(k x^2) with f an even function of
    sqrt(|k|)·x, evaluated by a 5-term Taylor series when |k x^2| < 1e-3 and by
    tan/tanh (resp. arctan/artanh) otherwise. Both branches are evaluated at safe
    arguments (double-where), so values and gradients w.r.t. points AND k are
    exact and finite through k = 0 and at the origin.
  * artanh arguments are clipped to 1 - machine eps; points leaving the ball are
    pulled back to radius (1 - eps)/sqrt(-k) with a per-dtype eps (`project`).
  * Distances use |(-x) ⊕ y|^2 = |x - y|^2 / (1 + 2k<x,y> + k^2|x|^2|y|^2), which
    is accurate for nearby points (no cancellation in the Möbius sum).
  * On the sphere (k > 0) the point at infinity is only approached: denominators
    are clamped at the dtype's smallest normal number, giving large finite points.
  * Domain: squared norms are formed directly, so inputs whose |x|^2 overflows the
    dtype (|x| > ~1.8e19 in float32) give inf/NaN; functions other than `project`
    assume ball points (k < 0) lie inside the ball (`project` them first).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from manifolds._common import (
    Array,
    ArrayLike,
    artanh_clip,
    as_curvature,
    as_float,
    ball_eps,
    check_same_dim,
    polyval,
    safe_norm,
    safe_sqrt,
    sq_norm,
)

__all__ = [
    "tan_k",
    "artan_k",
    "safe_norm",
    "lambda_x",
    "project",
    "mobius_add",
    "mobius_scalar_mul",
    "mobius_matvec",
    "gyration",
    "expmap0",
    "logmap0",
    "expmap",
    "logmap",
    "dist",
    "dist0",
    "sqdist_from_gram",
    "gram",
    "pairwise_dot",
    "inner",
    "norm",
    "egrad2rgrad",
    "ptransp",
    "ptransp0",
    "midpoint_terms",
    "lift0",
    "chord_h0",
    "sqchord0",
    "midpoint_from_sums",
    "tangent_midpoint_from_sums",
    "weighted_midpoint",
    "random_point",
]

# |k x^2| below this uses the Taylor series (its 6th term is < 1e-17 here).
_TAYLOR_T = 1e-3
# tan(s)/s = 1 + s^2/3 + 2 s^4/15 + 17 s^6/315 + 62 s^8/2835 (t = s^2; t<0 gives tanh)
_TAN_SERIES = (1.0, 1.0 / 3.0, 2.0 / 15.0, 17.0 / 315.0, 62.0 / 2835.0)
# arctan(s)/s = 1 - s^2/3 + s^4/5 - s^6/7 + s^8/9 (t = s^2; t<0 gives artanh)
_ARTAN_SERIES = (1.0, -1.0 / 3.0, 1.0 / 5.0, -1.0 / 7.0, 1.0 / 9.0)
# sin(s)/s = 1 - s^2/6 + s^4/120 - s^6/5040 + s^8/362880 (t = s^2; t<0 gives sinh)
_SIN_SERIES = (1.0, -1.0 / 6.0, 1.0 / 120.0, -1.0 / 5040.0, 1.0 / 362880.0)


def _prep(x: ArrayLike, k: ArrayLike, name: str = "x") -> tuple[Array, Array]:
    x = as_float(x, name)
    return x, as_curvature(k, x.dtype, x.shape, name)


def _tiny(dtype) -> float:
    """Floor for denominators: eps^2 (not `finfo.tiny`, whose square underflows in gradients)."""
    return float(jnp.finfo(dtype).eps) ** 2


def _gyro_den(x2: Array, y2: Array, p: Array, q2: Array, k: Array) -> Array:
    """1 + 2k p + k^2 x2 y2 without cancellation, floored at eps^2. [..., 1].

    q2 must equal x2 + y2 - 2p. For k<0 it is (1 + k x2)(1 + k y2) - k q2 (a sum of
    positive terms inside the ball); for k>=0 (1 + k p)^2 + k^2 (x2 y2 - p^2)
    (Cauchy-Schwarz: both non-negative; zero only for antipodal points).
    """
    kx2, ky2, kp = k * x2, k * y2, k * p  # products of k-scaled terms: no overflow/underflow
    hyper = (1.0 + kx2) * (1.0 + ky2) - k * q2
    sphere = (1.0 + kp) ** 2 + jnp.maximum(kx2 * ky2 - kp * kp, 0.0)
    return jnp.maximum(jnp.where(k < 0, hyper, sphere), _tiny(x2.dtype))


def _tan_ratio(t: Array) -> Array:
    """tan_k(x)/x as a function of t = k x^2: tan(√t)/√t (t>0), tanh(√-t)/√-t (t<0)."""
    small = jnp.abs(t) < _TAYLOR_T
    t_safe = jnp.where(small, 1.0, t)
    s = jnp.sqrt(jnp.abs(t_safe))
    big = jnp.where(t_safe > 0, jnp.tan(s), jnp.tanh(s)) / s
    return jnp.where(small, polyval(_TAN_SERIES, t), big)


def _sin_ratio(t: Array) -> Array:
    """sin(√t)/√t (t>0), sinh(√-t)/√-t (t<0), 1 at t=0 (Taylor series near 0)."""
    small = jnp.abs(t) < _TAYLOR_T
    t_safe = jnp.where(small, 1.0, t)
    s = jnp.sqrt(jnp.abs(t_safe))
    pos = t_safe > 0  # sinh only sees its own (non-positive t) inputs: no inf * 0 = NaN gradients
    big = jnp.where(pos, jnp.sin(jnp.where(pos, s, 0.0)), jnp.sinh(jnp.where(pos, 0.0, s))) / s
    return jnp.where(small, polyval(_SIN_SERIES, t), big)


def _artan_ratio(t: Array) -> Array:
    """artan_k(y)/y as a function of t = k y^2: arctan(√t)/√t (t>0), artanh(√-t)/√-t (t<0)."""
    small = jnp.abs(t) < _TAYLOR_T
    t_safe = jnp.where(small, 1.0, t)
    s = jnp.sqrt(jnp.abs(t_safe))
    s_h = jnp.minimum(s, artanh_clip(t.dtype))
    big = jnp.where(t_safe > 0, jnp.arctan(s) / s, jnp.arctanh(s_h) / s_h)
    return jnp.where(small, polyval(_ARTAN_SERIES, t), big)


def tan_k(x: ArrayLike, *, k: ArrayLike) -> Array:
    """Elementwise tan_k(x) = tan(√k x)/√k (k>0), x (k=0), tanh(√-k x)/√-k (k<0)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    k = jnp.asarray(k, dtype=x.dtype)
    return x * _tan_ratio(k * x * x)


def artan_k(y: ArrayLike, *, k: ArrayLike) -> Array:
    """Elementwise inverse of `tan_k`: arctan(√k y)/√k (k>0), y (k=0), artanh(√-k y)/√-k (k<0)."""
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(jnp.result_type(float))
    k = jnp.asarray(k, dtype=y.dtype)
    return y * _artan_ratio(k * y * y)


def _clip_ball(x: Array, x2: Array, k: Array, eps: float) -> Array:
    """Scale points with |x|^2 = x2 > ((1-eps) R)^2 back onto that radius (k<0 only).

    Works with c = -k|x|^2 (no division by k), so gradients w.r.t. k stay finite
    even for |k| near the smallest normal number.
    """
    c = -k * x2
    lim = (1.0 - eps) ** 2
    over = (k < 0) & (c > lim)
    # The outer where gives exactly 1 (and zero gradient) off the boundary.
    ratio = jnp.where(over, lim / jnp.where(over, c, 1.0), 1.0)
    return x * jnp.sqrt(ratio)


def project(x: ArrayLike, *, k: ArrayLike, eps: float | None = None) -> Array:
    """Pull points of the ball (k<0) inside radius (1 - eps)/sqrt(-k); identity for k >= 0.

    x: [..., d] -> [..., d]. `eps` defaults to a per-dtype margin (float32: 1e-5,
    float64: 1e-9), relative to the ball's radius.
    """
    x, k = _prep(x, k)
    eps = ball_eps(x.dtype) if eps is None else float(eps)
    return _clip_ball(x, sq_norm(x), k, eps)


def lambda_x(x: ArrayLike, *, k: ArrayLike, keepdims: bool = True) -> Array:
    """Conformal factor lambda_x = 2 / (1 + k|x|^2): [..., d] -> [..., 1] (or [...])."""
    x, k = _prep(x, k)
    den = jnp.maximum(1.0 + k * sq_norm(x), _tiny(x.dtype))
    lam = 2.0 / den
    return lam if keepdims else lam[..., 0]


def _mobius_add(x: Array, y: Array, k: Array) -> tuple[Array, Array]:
    """Unprojected x ⊕_k y and its squared norm (both from the same reductions)."""
    x2, y2 = sq_norm(x), sq_norm(y)
    xy = jnp.sum(x * y, axis=-1, keepdims=True)
    sum2 = jnp.maximum(x2 + 2.0 * xy + y2, 0.0)  # |x + y|^2
    den = _gyro_den(x2, y2, -xy, sum2, k)  # 1 - 2k<x,y> + k^2|x|^2|y|^2
    out = ((1.0 - 2.0 * k * xy - k * y2) * x + (1.0 + k * x2) * y) / den
    # |x ⊕ y|^2 = |x + y|^2 / den (same identity as in `_diff_sq`).
    out2 = sum2 / den
    return out, out2


def mobius_add(x: ArrayLike, y: ArrayLike, *, k: ArrayLike) -> Array:
    """Möbius (gyro) addition x ⊕_k y: [..., d], [..., d] -> [..., d] (projected into the ball)."""
    x, k = _prep(x, k)
    y = as_float(y, "y").astype(x.dtype)
    check_same_dim(x, y, "mobius_add(x, y)")
    out, out2 = _mobius_add(x, y, k)
    return _clip_ball(out, out2, k, ball_eps(x.dtype))


def _expmap0(v: Array, k: Array) -> Array:
    v2 = sq_norm(v)
    t = k * v2
    f = _tan_ratio(t)
    return _clip_ball(v * f, v2 * f * f, k, ball_eps(v.dtype))


def _logmap0(y: Array, k: Array) -> Array:
    return y * _artan_ratio(k * sq_norm(y))


def expmap0(v: ArrayLike, *, k: ArrayLike) -> Array:
    """Exponential map at the origin: tan_k(|v|) v/|v|. [..., d] -> [..., d].

    Note the origin's conformal factor is 2, so dist0(expmap0(v)) = 2|v|.
    """
    v, k = _prep(v, k, "v")
    return _expmap0(v, k)


def logmap0(y: ArrayLike, *, k: ArrayLike) -> Array:
    """Logarithmic map at the origin: artan_k(|y|) y/|y|. [..., d] -> [..., d]."""
    y, k = _prep(y, k, "y")
    return _logmap0(y, k)


def expmap(x: ArrayLike, v: ArrayLike, *, k: ArrayLike) -> Array:
    """Exponential map at x: x ⊕ tan_k(lambda_x |v| / 2) v/|v|. [..., d] x2 -> [..., d]."""
    x, k = _prep(x, k)
    v = as_float(v, "v").astype(x.dtype)
    check_same_dim(x, v, "expmap(x, v)")
    lam = lambda_x(x, k=k)
    out, out2 = _mobius_add(x, _expmap0(0.5 * lam * v, k), k)
    return _clip_ball(out, out2, k, ball_eps(x.dtype))


def _diff_sq(x: Array, y: Array, k: Array) -> tuple[Array, Array]:
    """|(-x) ⊕ y|^2 = |x - y|^2 / (1 + 2k<x,y> + k^2|x|^2|y|^2) and that denominator."""
    x2, y2 = sq_norm(x), sq_norm(y)
    diff2 = sq_norm(x - y)
    # <x,y> from the three norms (one pass fewer over x and y). It only enters the
    # k>0 branch of the denominator, where its absolute error eps·(|x|^2+|y|^2) is
    # harmless; |x - y|^2 itself is computed directly (accurate for nearby points).
    xy = 0.5 * (x2 + y2 - diff2)
    den = _gyro_den(x2, y2, xy, diff2, k)
    return diff2 / den, den


def logmap(x: ArrayLike, y: ArrayLike, *, k: ArrayLike) -> Array:
    """Logarithmic map at x: (2/lambda_x) artan_k(|w|) w/|w|, w = (-x) ⊕ y. -> [..., d]."""
    x, k = _prep(x, k)
    y = as_float(y, "y").astype(x.dtype)
    check_same_dim(x, y, "logmap(x, y)")
    w, _ = _mobius_add(-x, y, k)
    w2, _ = _diff_sq(x, y, k)
    lam = lambda_x(x, k=k)
    return (2.0 / lam) * w * _artan_ratio(k * w2)


def dist(x: ArrayLike, y: ArrayLike, *, k: ArrayLike, keepdims: bool = False) -> Array:
    """Geodesic distance 2 artan_k(|(-x) ⊕ y|): [..., d] x2 -> [...] (or [..., 1])."""
    x, k = _prep(x, k)
    y = as_float(y, "y").astype(x.dtype)
    check_same_dim(x, y, "dist(x, y)")
    w2, _ = _diff_sq(x, y, k)
    d = 2.0 * safe_sqrt(w2) * _artan_ratio(k * w2)
    return d if keepdims else d[..., 0]


def pairwise_dot(x: ArrayLike, y: ArrayLike) -> Array:
    """<x_t, y_s> for all pairs: [..., T, d] x [..., S, d] -> [..., T, S], in full float32.

    The Gram forms (|x|^2 + |y|^2 - 2<x, y> in `sqdist_from_gram`, `sqchord0`) cancel for
    close points, so the matmul asks for HIGHEST precision: JAX's GPU default for float32
    is TF32 (10-bit mantissa, ~1e-3 relative), whose error would land in the small difference.
    """
    return jnp.einsum("...td,...sd->...ts", x, y, precision=jax.lax.Precision.HIGHEST)


def gram(x: ArrayLike, y: ArrayLike) -> tuple[Array, Array, Array]:
    """Gram terms for `sqdist_from_gram`: x [..., T, d], y [..., S, d] -> (<x, y> [..., T, S],
    |x|^2 [..., T, 1], |y|^2 [..., 1, S]); <x, y> from `pairwise_dot`."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    return pairwise_dot(x, y), jnp.sum(x * x, -1)[..., :, None], jnp.sum(y * y, -1)[..., None, :]


def sqdist_from_gram(xy: ArrayLike, x2: ArrayLike, y2: ArrayLike, *, k: ArrayLike) -> Array:
    """Squared geodesic distance d_k(x, y)^2 from Gram terms, elementwise with broadcasting.

    xy = <x, y>, x2 = |x|^2, y2 = |y|^2 (any broadcastable shapes, e.g. [B, 1], [1, E]
    and a [B, E] matmul), so 1-N scoring never materialises [B, E, d]. The gyro
    denominator is formed without cancellation (as in `dist`), so values and
    gradients stay finite 1e-5 from the ball boundary. |x - y|^2 comes from
    x2 + y2 - 2xy, which loses relative accuracy for nearly equal points: use
    `dist` when x and y are close and both available.
    """
    xy = jnp.asarray(xy)
    if not jnp.issubdtype(xy.dtype, jnp.floating):
        xy = xy.astype(jnp.result_type(float))
    x2, y2 = jnp.asarray(x2, xy.dtype), jnp.asarray(y2, xy.dtype)
    k = jnp.asarray(k, xy.dtype)
    diff2 = jnp.maximum(x2 + y2 - 2.0 * xy, 0.0)
    w2 = diff2 / _gyro_den(x2, y2, xy, diff2, k)
    d = 2.0 * safe_sqrt(w2) * _artan_ratio(k * w2)
    return d * d


def dist0(x: ArrayLike, *, k: ArrayLike, keepdims: bool = False) -> Array:
    """Distance to the origin 2 artan_k(|x|): [..., d] -> [...] (or [..., 1])."""
    x, k = _prep(x, k)
    x2 = sq_norm(x)
    d = 2.0 * safe_sqrt(x2) * _artan_ratio(k * x2)
    return d if keepdims else d[..., 0]


def mobius_scalar_mul(r: ArrayLike, x: ArrayLike, *, k: ArrayLike) -> Array:
    """r ⊗_k x = tan_k(r artan_k|x|) x/|x| = expmap0(r logmap0(x)).

    r: scalar or [..., 1] broadcastable against x[..., :1]; x: [..., d] -> [..., d].
    """
    x, k = _prep(x, k)
    r = as_curvature(r, x.dtype, x.shape, "x", what="r")
    return _expmap0(r * _logmap0(x, k), k)


def mobius_matvec(m: ArrayLike, x: ArrayLike, *, k: ArrayLike) -> Array:
    """Möbius matrix-vector product expmap0(logmap0(x) @ m.T).

    m: [d_out, d_in], x: [..., d_in] -> [..., d_out] (the Möbius version of x @ m.T).
    """
    x, k = _prep(x, k)
    m = jnp.asarray(m, dtype=x.dtype)
    if m.ndim != 2 or m.shape[1] != x.shape[-1]:
        raise ValueError(
            f"mobius_matvec: expected m of shape [d_out, {x.shape[-1]}] for x of shape "
            f"{x.shape}, got {m.shape}"
        )
    return _expmap0(_logmap0(x, k) @ m.T, k)


def gyration(u: ArrayLike, v: ArrayLike, w: ArrayLike, *, k: ArrayLike) -> Array:
    """gyr[u, v] w = ⊖(u ⊕ v) ⊕ (u ⊕ (v ⊕ w)) in closed form: [..., d] x3 -> [..., d]."""
    u, k = _prep(u, k, "u")
    v = as_float(v, "v").astype(u.dtype)
    w = as_float(w, "w").astype(u.dtype)
    check_same_dim(u, v, "gyration(u, v, w)")
    check_same_dim(u, w, "gyration(u, v, w)")
    u2, v2 = sq_norm(u), sq_norm(v)
    uv = jnp.sum(u * v, axis=-1, keepdims=True)
    uw = jnp.sum(u * w, axis=-1, keepdims=True)
    vw = jnp.sum(v * w, axis=-1, keepdims=True)
    kuw, kvw = k * uw, k * vw
    a = -kuw * (k * v2) - kvw + 2.0 * (k * uv) * kvw
    b = -kvw * (k * u2) + kuw
    den = _gyro_den(u2, v2, -uv, jnp.maximum(u2 + 2.0 * uv + v2, 0.0), k)
    return w + 2.0 * (a * u + b * v) / den


def inner(x: ArrayLike, u: ArrayLike, v: ArrayLike, *, k: ArrayLike, keepdims: bool = False) -> Array:
    """Riemannian inner product lambda_x^2 <u, v> at x: -> [...] (or [..., 1])."""
    x, k = _prep(x, k)
    u = jnp.asarray(u, dtype=x.dtype)
    v = jnp.asarray(v, dtype=x.dtype)
    check_same_dim(x, u, "inner(x, u, v)")
    check_same_dim(u, v, "inner(x, u, v)")
    lam = lambda_x(x, k=k)
    out = lam * lam * jnp.sum(u * v, axis=-1, keepdims=True)
    return out if keepdims else out[..., 0]


def norm(x: ArrayLike, u: ArrayLike, *, k: ArrayLike, keepdims: bool = False) -> Array:
    """Riemannian norm lambda_x |u| of a tangent vector u at x: -> [...] (or [..., 1])."""
    x, k = _prep(x, k)
    u = jnp.asarray(u, dtype=x.dtype)
    check_same_dim(x, u, "norm(x, u)")
    out = lambda_x(x, k=k) * safe_norm(u, keepdims=True)
    return out if keepdims else out[..., 0]


def egrad2rgrad(x: ArrayLike, g: ArrayLike, *, k: ArrayLike) -> Array:
    """Riemannian gradient from a Euclidean one: g / lambda_x^2. [..., d] -> [..., d]."""
    x, k = _prep(x, k)
    g = jnp.asarray(g, dtype=x.dtype)
    check_same_dim(x, g, "egrad2rgrad(x, g)")
    half_inv_lam = 0.5 * (1.0 + k * sq_norm(x))
    return g * half_inv_lam * half_inv_lam


def ptransp(x: ArrayLike, y: ArrayLike, v: ArrayLike, *, k: ArrayLike) -> Array:
    """Parallel transport of v from x to y: gyr[y, -x] v · lambda_x / lambda_y. -> [..., d]."""
    x, k = _prep(x, k)
    y = as_float(y, "y").astype(x.dtype)
    v = as_float(v, "v").astype(x.dtype)
    check_same_dim(x, y, "ptransp(x, y, v)")
    check_same_dim(x, v, "ptransp(x, y, v)")
    scale = lambda_x(x, k=k) / lambda_x(y, k=k)
    return gyration(y, -x, v, k=k) * scale


def ptransp0(y: ArrayLike, v: ArrayLike, *, k: ArrayLike) -> Array:
    """Parallel transport of v from the origin to y: v · 2/lambda_y = v (1 + k|y|^2)."""
    y, k = _prep(y, k, "y")
    v = as_float(v, "v").astype(y.dtype)
    check_same_dim(y, v, "ptransp0(y, v)")
    return v * (1.0 + k * sq_norm(y))


def midpoint_terms(x: ArrayLike, *, k: ArrayLike) -> tuple[Array, Array]:
    """Per-point terms of the gyro/Einstein midpoint: (lambda_x x [..., d], lambda_x - 1 [..., 1]).

    (lambda_x x, (lambda_x - 1)/sqrt|k|) is the point lifted to the hyperboloid (k<0)
    or the sphere in R^{d+1} (k>0). For non-negative weights w_i,

        weighted_midpoint(x, w) == midpoint_from_sums(sum_i w_i num_i, sum_i w_i den_i)

    so neighbour aggregation can form the two sums with `segment_sum` over edges.
    """
    x, k = _prep(x, k)
    lam = lambda_x(x, k=k)
    return lam * x, lam - 1.0


def _lift_inputs(v: Array, k: Array) -> tuple[Array, Array]:
    """(v, |v|^2) with v shrunk, for k<0, to where `expmap0` clips the ball (so lifts match it)."""
    v2 = sq_norm(v)
    phi_max = math.atanh(1.0 - ball_eps(v.dtype))
    over = jnp.where(k < 0, -k * v2, 0.0) > phi_max**2
    shrink = jnp.where(over, phi_max / jnp.sqrt(jnp.where(over, -k * v2, 1.0)), 1.0)
    return v * shrink, v2 * shrink * shrink


def chord_h0(v: ArrayLike, *, k: ArrayLike) -> Array:
    """h = (1 - cos_k(2|v|)) / k = 2|v|^2 (sin_k|v| / |v|)^2 for x = expmap0(v), [..., d] -> [..., 1].

    Stable for every k (no division by k): h -> 2|v|^2 as k -> 0. With the lift
    (num, den) = `lift0(v)`, den = 1 - k h, and the squared chordal distance
    between two lifted points is 2 (h_1 + h_2 - k h_1 h_2 - num_1 . num_2)
    (= 4|v_1 - v_2|^2 at k = 0; for k > 0 it is (2/k)(1 - cos θ), a smooth
    increasing function of the geodesic distance θ/√k).
    """
    v, k = _prep(v, k, "v")
    return _lift_terms(v, k)[1]


def _lift_terms(v: Array, k: Array) -> tuple[Array, Array]:
    """(lift num [..., d], h [..., 1]) of expmap0(v): one pass over v for both."""
    v, v2 = _lift_inputs(v, k)
    r = _sin_ratio(k * v2)
    return 2.0 * v * _sin_ratio(4.0 * k * v2), 2.0 * v2 * r * r


def sqchord0(u: ArrayLike, v: ArrayLike, *, k: ArrayLike) -> Array:
    """Pairwise squared chordal distance of expmap0(u_t) and expmap0(v_s): [..., T, d] x [..., S, d] -> [..., T, S].

    2 (h_u + h_v - k h_u h_v - num_u . num_v) from `lift0` / `chord_h0`, one
    matmul; k broadcastable to [..., 1, 1]. For k > 0 it equals (2/k)(1 - cos θ),
    an increasing function of the geodesic distance θ/√k with bounded gradients
    everywhere (no arccos: d θ^2 / d cos θ is unbounded at the antipode); for
    k < 0, (2/|k|)(cosh(√|k| d) - 1); 4|u - v|^2 at k = 0.
    """
    u, k = _prep(u, k, "u")
    v = as_float(v, "v").astype(u.dtype)
    (nu, hu), (nv, hv) = _lift_terms(u, k), _lift_terms(v, k)
    hv = jnp.swapaxes(hv, -1, -2)
    return 2.0 * (hu + hv - k * hu * hv - pairwise_dot(nu, nv))  # cancels for close points: full float32


def lift0(v: ArrayLike, *, k: ArrayLike) -> tuple[Array, Array]:
    """`midpoint_terms(expmap0(v))` = (λ_x x [..., d], λ_x - 1 [..., 1]) computed from v directly.

    num = 2 v sin_k(2|v|)/(2|v|), den = cos_k(2|v|) (sinh/cosh for k<0). Unlike the
    chart route it stays finite with finite gradients on the whole sphere (k>0),
    where expmap0 sends 2√k|v| = π to infinity; for k<0 it matches expmap0's clip.
    """
    v, k = _prep(v, k, "v")
    num, h = _lift_terms(v, k)
    return num, 1.0 - k * h


def _sums_args(num: ArrayLike, den: ArrayLike, k: ArrayLike, fn: str) -> tuple[Array, Array, Array]:
    """Validated (A [..., d], B [..., 1], k) for the midpoint-from-sums functions."""
    a = as_float(num, "num")
    b = jnp.asarray(den, dtype=a.dtype)
    if b.shape[-1:] != (1,):
        raise ValueError(f"{fn}: den must have a trailing axis of size 1, got {b.shape}")
    return a, b, as_curvature(k, a.dtype, a.shape, "num")


def midpoint_from_sums(num: ArrayLike, den: ArrayLike, *, k: ArrayLike) -> Array:
    """Midpoint from weighted sums A = sum w λx [..., d] and B = sum w (λ-1) [..., 1].

    Returns A / (B + sqrt(B^2 + k|A|^2)) [..., d]. For k <= 0 this equals Ungar's
    gyromidpoint ½ ⊗ (A/B) (the Einstein midpoint of the ball). For k > 0 it is the
    normalised extrinsic mean on the sphere mapped back by stereographic projection;
    unlike ½ ⊗ (A/B) it stays correct when B < 0 (weighted mass beyond the equator,
    where ½ ⊗ (A/B) would return the antipode). Degenerate sums: A = 0 and B = 0
    (e.g. a node without neighbours, all weights zero) gives the origin; on the sphere
    a zero ambient sum (antipodal pairs with equal weight) has no midpoint and a
    finite but arbitrary point is returned. Scale-invariant in the weights.
    """
    a, b, k = _sums_args(num, den, k, "midpoint_from_sums")
    a2 = sq_norm(a)
    root = safe_sqrt(jnp.maximum(b * b + k * a2, 0.0))
    tiny = _tiny(a.dtype)
    direct = (b >= 0) | (k <= 0)
    den1 = jnp.where(direct, b + root, 1.0)
    den1 = jnp.where(den1 > tiny, den1, 1.0)
    den2 = jnp.where(direct, 1.0, jnp.maximum(k * a2, tiny))
    out = jnp.where(direct, a / den1, a * (root - b) / den2)
    return _clip_ball(out, sq_norm(out), k, ball_eps(a.dtype))


def tangent_midpoint_from_sums(num: ArrayLike, den: ArrayLike, *, k: ArrayLike) -> Array:
    """logmap0(midpoint_from_sums(A, B)) [..., d] computed from the lifted sums without the chart.

    v = A / (2|A|) * atan2_k(|A|, B). On the sphere (k > 0) v = A/(2|A|) *
    atan2(√k|A|, B)/√k for every B, including B <= 0 (weighted mass beyond the
    equator), reaching the antipode's distance π/(2√k) smoothly where the
    stereographic point itself goes to infinity; for k <= 0 (B > 0)
    v = A/(2B) * artan_ratio(k|A|^2/B^2). A = 0 gives 0 (for B < 0 the direction to the antipode is undefined).
    num [..., d], den [..., 1].
    """
    a, b, k = _sums_args(num, den, k, "tangent_midpoint_from_sums")
    a2 = sq_norm(a)
    tiny = _tiny(a.dtype)
    pos = k > 0
    # sphere: atan2 form, stable for every B (the ratio form's d/dB overflows as B -> 0+)
    an = jnp.sqrt(a2 + tiny)
    sk = jnp.sqrt(jnp.where(pos, k, 1.0))
    g_sphere = jnp.arctan2(sk * an, jnp.where(pos, b, 1.0)) / (2.0 * sk * an)
    # ball and flat space: B >= sqrt(-k)|A| > 0 for weighted sums of lifts
    b_r = jnp.where(b > tiny, b, 1.0)
    t = jnp.where(pos, 0.0, k * a2 / (b_r * b_r))
    g_ball = jnp.where(b > tiny, _artan_ratio(jnp.maximum(t, -1.0)) / (2.0 * b_r), 0.0)
    return a * jnp.where(pos, g_sphere, g_ball)


def weighted_midpoint(x: ArrayLike, w: ArrayLike, *, k: ArrayLike, axis: int = -2) -> Array:
    """Weighted gyro/Einstein midpoint of points along `axis`.

    x: [..., n, ..., d] (points along `axis`, which must not be the last axis);
    w: non-negative weights broadcastable to x.shape[:-1] (not necessarily
    normalised); k broadcastable to the result's [..., 1]. Result: x with `axis`
    removed. See `midpoint_from_sums` for the sphere and degenerate cases.
    """
    x = as_float(x)
    ax = axis % x.ndim if -x.ndim <= axis < x.ndim else None
    if ax is None or ax == x.ndim - 1:
        raise ValueError(f"weighted_midpoint: axis={axis} must index a non-last axis of x {x.shape}")
    k = as_curvature(k, x.dtype, x.shape[:ax] + x.shape[ax + 1:], "the midpoint")
    w = jnp.asarray(w, dtype=x.dtype)
    try:
        jnp.broadcast_shapes(w.shape, x.shape[:-1])
    except ValueError:
        raise ValueError(
            f"weighted_midpoint: weights of shape {w.shape} do not broadcast to x.shape[:-1]={x.shape[:-1]}"
        ) from None
    pos = ax - x.ndim
    k_terms = jnp.expand_dims(k, pos) if 0 < k.ndim and k.ndim >= -pos - 1 else k
    num_t, den_t = midpoint_terms(x, k=k_terms)
    w = w[..., None]
    return midpoint_from_sums(jnp.sum(w * num_t, axis=ax), jnp.sum(w * den_t, axis=ax), k=k)


def random_point(key: jax.Array, shape: tuple[int, ...], *, k: ArrayLike, scale: float = 1.0,
                 dtype=jnp.float32) -> Array:
    """Random points expmap0(v) with v ~ N(0, scale^2 I) / 2 (so dist0 ~ scale·chi_d). [*shape]."""
    v = 0.5 * scale * jax.random.normal(key, shape, dtype=dtype)
    return expmap0(v, k=k)
