"""Scoring kernels shared by the KG models: Givens transforms and Gram-form distances.

Distances between queries and many candidates are computed from Gram terms
(x·y via one matmul, |x|^2, |y|^2) so that 1-N scoring against all entities is
a [B, d] x [d, E] matmul plus O(B E) elementwise work, never a [B, E, d] tensor.

The Gram matmuls run in full float32 (`st.pairwise_dot`): |x|^2 + |y|^2 - 2 x·y cancels for
close points, and JAX's GPU default for float32 matmuls (TF32: 10-bit mantissa, ~1e-3 relative
in x·y) would put that error into the small difference.

Curvature: `k` is the signed sectional curvature (k<0 Poincaré ball, k=0 flat,
k>0 stereographic sphere), keyword-only, shaped [B, 1] per query or scalar.
Candidates given as tangent vectors v at the origin are the points
y = expmap0(v, k) = tan_k(|v|) v / |v| of the query's own geometry (as in
Chami et al. 2020, where entity embeddings live in the tangent space and each
relation has its own curvature).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from manifolds import stereographic as st

__all__ = [
    "givens_rotation",
    "givens_reflection",
    "gram_sqdist_k",
    "gram_sqdist_hyperbolic",
    "sqdist_to_tangent_shared",
    "sqdist_to_tangent_rows",
    "euclidean_sqdist_shared",
    "sqchord_tangent_shared",
    "sqchord_tangent_rows",
]


def _halves(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    if x.shape[-1] % 2:
        raise ValueError(f"Givens transforms need an even dimension, got {x.shape[-1]}")
    m = x.shape[-1] // 2
    return x[..., :m], x[..., m:]


def _unit_cos_sin(params: jax.Array) -> tuple[jax.Array, jax.Array]:
    a, b = _halves(params)
    n2 = a * a + b * b
    inv = jax.lax.rsqrt(jnp.where(n2 > 0, n2, 1.0))
    return jnp.where(n2 > 0, a * inv, 1.0), jnp.where(n2 > 0, b * inv, 0.0)


def givens_rotation(params: jax.Array, x: jax.Array) -> jax.Array:
    """Block-diagonal 2x2 rotations of x: [..., d] by params [..., d].

    Coordinate i is paired with i + d/2 (contiguous halves: ~4x faster on CPU
    than interleaved pairs, and the same model family up to a fixed permutation
    of coordinates). (cos, sin) = params' halves after normalising each pair.
    """
    c, s = _unit_cos_sin(params)
    x0, x1 = _halves(x)
    return jnp.concatenate([c * x0 - s * x1, s * x0 + c * x1], -1)


def givens_reflection(params: jax.Array, x: jax.Array) -> jax.Array:
    """Block-diagonal 2x2 reflections [[c, s], [s, -c]] of x: [..., d] (pairs as in `givens_rotation`).

    (A true reflection; the public AttH code's variant maps (x0, x1) to
    (c x0 + s x1, s x0 - c x0), which is not orthogonal.)
    """
    c, s = _unit_cos_sin(params)
    x0, x1 = _halves(x)
    return jnp.concatenate([c * x0 + s * x1, s * x0 - c * x1], -1)


def gram_sqdist_k(xy: jax.Array, x2: jax.Array, y2: jax.Array, *, k: jax.Array) -> jax.Array:
    """Squared geodesic distance d_k(x, y)^2 from Gram terms (`manifolds.stereographic.sqdist_from_gram`).

    At k = 0 this is 4|x - y|^2 (the stereographic model's flat metric is 4 I).
    """
    return st.sqdist_from_gram(xy, x2, y2, k=k)


def gram_sqdist_hyperbolic(xy: jax.Array, x2: jax.Array, y2: jax.Array, *, k: jax.Array) -> jax.Array:
    """`gram_sqdist_k` specialised to k < 0 (one artanh per pair; about 2x faster).

    For models whose curvature is negative by construction (k = -softplus(raw)).
    d = 2 artanh(sqrt(-k) u) / sqrt(-k), with the artanh argument clipped below 1.
    """
    c = jnp.maximum(-k, jnp.finfo(xy.dtype).tiny)
    diff2 = jnp.maximum(x2 + y2 - 2.0 * xy, 0.0)
    # 1 + 2k xy + k^2 x2 y2 written as (1 + k x2)(1 + k y2) - k |x - y|^2: a sum of
    # non-negative terms inside the ball, so no cancellation near the boundary.
    den = jnp.maximum((1.0 + k * x2) * (1.0 + k * y2) - k * diff2, jnp.finfo(xy.dtype).tiny)
    z = jnp.minimum(jnp.sqrt(c * diff2 / den), 1.0 - jnp.finfo(xy.dtype).eps)
    d = jnp.arctanh(z)
    return 4.0 * d * d / c


def _tangent_scale(vnorm: jax.Array, k: jax.Array, hyperbolic: bool) -> jax.Array:
    """gamma = tan_k(|v|) / |v| so that expmap0(v) = gamma v (finite at |v| = 0)."""
    safe = jnp.where(vnorm > 0, vnorm, 1.0)
    if hyperbolic:
        sc = jnp.sqrt(jnp.maximum(-k, jnp.finfo(vnorm.dtype).tiny))
        ratio = jnp.tanh(sc * safe) / (sc * safe)
    else:
        ratio = st.tan_k(safe, k=k) / safe
    return jnp.where(vnorm > 0, ratio, 1.0)


def _sqdist_gram(xv, x2, vnorm, k, hyperbolic):
    gamma = _tangent_scale(vnorm, k, hyperbolic)
    fn = gram_sqdist_hyperbolic if hyperbolic else gram_sqdist_k
    return fn(gamma * xv, x2, (gamma * vnorm) ** 2, k=k)


def sqdist_to_tangent_shared(x: jax.Array, v: jax.Array, *, k: jax.Array, hyperbolic: bool = False) -> jax.Array:
    """d_k(x_b, expmap0(v_e))^2 for all pairs: x [B, d] points, v [E, d] tangent, k [B, 1] -> [B, E].

    hyperbolic=True: the caller guarantees k < 0 (uses `gram_sqdist_hyperbolic`).
    """
    vnorm = jnp.sqrt(jnp.sum(v * v, -1))[None, :]  # [1, E]
    x2 = jnp.sum(x * x, -1, keepdims=True)
    return _sqdist_gram(st.pairwise_dot(x, v), x2, vnorm, k, hyperbolic)


def sqdist_to_tangent_rows(x: jax.Array, v: jax.Array, *, k: jax.Array, hyperbolic: bool = False) -> jax.Array:
    """Per-row candidates: x [B, d], v [B, K, d] tangent, k [B, 1] -> [B, K]."""
    vnorm = jnp.sqrt(jnp.sum(v * v, -1))
    x2 = jnp.sum(x * x, -1, keepdims=True)
    return _sqdist_gram(st.pairwise_dot(x[:, None, :], v)[:, 0, :], x2, vnorm, k, hyperbolic)


def sqchord_tangent_shared(q: jax.Array, v: jax.Array, *, k: jax.Array) -> jax.Array:
    """Squared chordal distance between expmap0(q_b) and expmap0(v_e): q [B, d], v [E, d], scalar k -> [B, E].

    `st.sqchord0`: one [B, d] x [d, E] matmul. For k > 0 it is (2/k)(1 - cos θ),
    an increasing function of the geodesic distance θ/√k, so it ranks
    candidates exactly as d_k does, and it is smooth on the whole sphere
    (tangent vectors with 2√k|v| >= π wrap around instead of blowing up
    through the stereographic chart). 4|q - v|^2 at k = 0.
    """
    return st.sqchord0(q, v, k=k)


def sqchord_tangent_rows(q: jax.Array, v: jax.Array, *, k: jax.Array) -> jax.Array:
    """Per-row candidates: q [B, d], v [B, K, d] tangent, scalar k -> [B, K] (see `sqchord_tangent_shared`)."""
    return st.sqchord0(q[:, None, :], v, k=k)[:, 0, :]


def euclidean_sqdist_shared(x: jax.Array, y: jax.Array) -> jax.Array:
    """|x_b - y_e|^2 for x [B, d], y [E, d] -> [B, E] (Gram form, clamped at 0)."""
    xy, x2, y2 = st.gram(x, y)
    return jnp.maximum(x2 + y2 - 2.0 * xy, 0.0)
