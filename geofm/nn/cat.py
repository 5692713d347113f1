"""CAT: Curvature-Adaptive Transformer block (our reconstruction of arXiv 2510.01634,
see ../shared/methods/papers.md §3.2; the paper's equations were not available).

One attention layer with up to three branches that share the Q/K/V/O projections:

  euclidean   scores q·k / sqrt(d_h); output A v.
  hyperbolic  q, k, v -> expmap0 on the Poincaré ball (curvature k_H = -softplus(a) < 0);
              scores -beta_H d_{k_H}(q_i, k_j)^2; output = logmap0 of the attention-weighted
              gyro-midpoint of the value points.
  spherical   same on the stereographic sphere (k_S = +softplus(a) > 0); scores from the
              geodesic angle theta_ij (d = theta / sqrt(k_S)); output = logmap0 of the
              weighted spherical midpoint.

A per-token router (`geofm.gating.TokenRouter`, linear + softmax over branches) mixes
the branch outputs in the common tangent space at the origin; then the output
projection, residual, and a pre-LayerNorm FFN. Parameter overhead over a plain block of
the same width: the router (dim*B + B), one curvature and one score scale per curved
branch. Token sequences are dense [batch, T, dim] with a key mask [batch, T].

The branch kernels below are small pure functions so the KG model (geofm/kg) can reuse
them: `dot_product_scores`, `hyperbolic_scores`, `spherical_scores`, `masked_softmax`,
`midpoint_attend`, `branch_attention`. Per-head tensors are [..., T, d_h].
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from geofm.gating import TokenRouter
from geofm.kg.scoring import gram_sqdist_hyperbolic
from geofm.nn.curvature import Curvature, inverse_softplus
from manifolds import stereographic as st

BRANCH_GEOMETRY: dict[str, str] = {
    "euclidean": "euclidean",
    "hyperbolic": "hyperbolic",
    "spherical": "spherical",
}


# ----------------------------------------------------------------------------- kernels


def default_curvature(width: int) -> tuple[float, float]:
    """Initial (k_H < 0, k_S > 0) = (-1/width, +1/width) for vectors of `width` coordinates.

    Tokens leaving LayerNorm + a linear map have norm ~sqrt(width); at |k| = 1/width
    they sit at geodesic radius 2 sqrt|k| |v| ~ 2. At |k| = 1 they would sit at
    ~2 sqrt(width): on the ball near the boundary (distances blow up, attention
    turns one-hot); on the sphere past the antipode (the map from tangent vectors
    to sphere points is periodic, so tokens wrap around and collide).
    """
    return (-1.0 / width, 1.0 / width)


def default_beta(head_dim: int) -> float:
    """Initial scale beta of curved attention scores -beta d^2: 1/(8 sqrt(d_h)).

    Near the origin d^2 ~ 4 |q - k|^2 (conformal factor 2), so -beta d^2 equals
    q.k / sqrt(d_h) up to per-row constants: the temperature of dot-product attention.
    """
    return 1.0 / (8.0 * math.sqrt(head_dim))



def masked_softmax(scores: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Softmax over the last axis of scores [..., T, S] restricted to mask (bool,
    broadcastable to scores; True = attend). Fully masked rows give all zeros."""
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    s = jnp.where(mask, scores, -jnp.inf)
    m = jnp.max(s, axis=-1, keepdims=True)
    m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
    e = jnp.where(mask, jnp.exp(jnp.where(mask, scores, 0.0) - m), 0.0)
    den = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.where(den > 0, den, 1.0)


def dot_product_scores(q: jax.Array, key: jax.Array) -> jax.Array:
    """Scaled dot product q·k / sqrt(d_h): q [..., T, d_h], key [..., S, d_h] -> [..., T, S]."""
    return jnp.einsum("...td,...sd->...ts", q, key) / math.sqrt(q.shape[-1])


def hyperbolic_sqdist(q: jax.Array, key: jax.Array, *, k: jax.Array) -> jax.Array:
    """d_k(expmap0 q_i, expmap0 key_j)^2 on the Poincaré ball (k < 0).

    q [..., T, d], key [..., S, d] tangent vectors at the origin -> [..., T, S].
    Gram form (one matmul), no [T, S, d] tensor.
    """
    x = st.expmap0(q, k=k)
    y = st.expmap0(key, k=k)
    return gram_sqdist_hyperbolic(*st.gram(x, y), k=k)


def spherical_sqdist(q: jax.Array, key: jax.Array, *, k: jax.Array) -> jax.Array:
    """d_k(expmap0 q_i, expmap0 key_j)^2 = theta_ij^2 / k on the sphere (k > 0).

    theta is the angle between the points lifted to the sphere of radius 1/sqrt(k) in
    R^{d+1} (`st.lift0` gives the lift (lambda x, lambda - 1) up to 1/sqrt(k) straight from
    the tangent vector), so cos theta = k <lx_i, lx_j> + (l_i - 1)(l_j - 1): finite for every
    q and key, including 2 sqrt(k)|v| >= pi where the stereographic chart sends points to
    infinity. q [..., T, d], key [..., S, d] -> [..., T, S].
    """
    a_num, a_den = st.lift0(q, k=k)
    b_num, b_den = st.lift0(key, k=k)
    cos = k * jnp.einsum("...td,...sd->...ts", a_num, b_num) + a_den * jnp.swapaxes(b_den, -1, -2)
    lim = 1.0 - float(jnp.finfo(cos.dtype).eps)
    theta = jnp.arccos(jnp.clip(cos, -lim, lim))
    return theta * theta / k


def hyperbolic_scores(q: jax.Array, key: jax.Array, *, k: jax.Array, beta: jax.Array) -> jax.Array:
    """-beta * d_k^2 on the Poincaré ball (k < 0): [..., T, d], [..., S, d] -> [..., T, S]."""
    return -beta * hyperbolic_sqdist(q, key, k=k)


def spherical_scores(q: jax.Array, key: jax.Array, *, k: jax.Array, beta: jax.Array) -> jax.Array:
    """-beta * (squared chordal distance) on the sphere (k > 0): -> [..., T, S].

    The chord (2/k)(1 - cos θ) (`st.sqchord0`) orders pairs exactly like the
    geodesic distance but keeps bounded gradients at the antipode, where
    d θ^2 / d cos θ = -2θ / sin θ is unbounded (it produced NaN gradients under
    jit once many heads' points spread past the equator).
    """
    return -beta * st.sqchord0(q, key, k=k)


def midpoint_attend(attn: jax.Array, v: jax.Array, *, k: jax.Array) -> jax.Array:
    """Attention-weighted gyro-midpoint of expmap0(v), returned in the tangent space.

    attn [..., T, S] (non-negative rows), v [..., S, d] tangent vectors -> [..., T, d]
    = logmap0(midpoint_j(attn_ij; expmap0(v_j))). One matmul over the lifted [..., S, d+1] values.
    """
    lifted = jnp.concatenate(st.lift0(v, k=k), axis=-1)
    sums = jnp.einsum("...ts,...sd->...td", attn, lifted)  # one matmul for both sums
    return st.tangent_midpoint_from_sums(sums[..., :-1], sums[..., -1:], k=k)


def branch_attention(
    q: jax.Array,
    key: jax.Array,
    v: jax.Array,
    mask: jax.Array | None,
    *,
    branch: str,
    k: jax.Array | None = None,
    beta: jax.Array | None = None,
) -> jax.Array:
    """One CAT branch: q, key, v [..., T|S, d_h] tangent vectors, mask broadcastable to
    [..., T, S] -> tangent output [..., T, d_h]. `k`, `beta` are needed by the curved
    branches (k<0 for "hyperbolic", k>0 for "spherical")."""
    if branch == "euclidean":
        return jnp.einsum("...ts,...sd->...td", masked_softmax(dot_product_scores(q, key), mask), v)
    if branch not in ("hyperbolic", "spherical"):
        raise ValueError(f"unknown CAT branch {branch!r}; known: {list(BRANCH_GEOMETRY)}")
    if k is None or beta is None:
        raise ValueError(f"branch {branch!r} needs curvature k and score scale beta")
    score_fn = hyperbolic_scores if branch == "hyperbolic" else spherical_scores
    attn = masked_softmax(score_fn(q, key, k=k, beta=beta), mask)
    return midpoint_attend(attn, v, k=k)


# ----------------------------------------------------------------------------- module


class CATOutput(NamedTuple):
    """out: [B, T, dim] block output; weights: [B, T, n_branches] router weights."""

    out: jax.Array
    weights: jax.Array


class CATBlock(nnx.Module):
    """Pre-LN transformer block with curvature-adaptive multi-branch attention.

    `branches` picks a subset of ("euclidean", "hyperbolic", "spherical"); with a single
    branch there is no router (weights are all ones), so `CATBlock(branches=("euclidean",))`
    is a plain transformer block of the same width (the baseline). Curvatures are learnable
    and sign-constrained (`geofm.nn.curvature.Curvature`); default |k| = 1/d_h so that
    initial q/k/v (norm ~ sqrt(d_h)) land at geodesic radius ~2 from the origin.
    Parameters are Euclidean (plain optax).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        branches: Sequence[str] = ("euclidean", "hyperbolic", "spherical"),
        ffn_mult: int = 4,
        router_temperature: float = 1.0,
        curvature: dict[str, float] | None = None,
        learn_curvature: bool = True,
        rngs: nnx.Rngs,
    ):
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        branches = tuple(branches)
        if not branches or len(set(branches)) != len(branches):
            raise ValueError(f"branches must be a non-empty list without repeats, got {branches}")
        for b in branches:
            if b not in BRANCH_GEOMETRY:
                raise ValueError(f"unknown CAT branch {b!r}; known: {list(BRANCH_GEOMETRY)}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.branches = branches
        self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
        self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
        self.proj = nnx.Linear(dim, dim, rngs=rngs)
        self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
        self.ff1 = nnx.Linear(dim, ffn_mult * dim, rngs=rngs)
        self.ff2 = nnx.Linear(ffn_mult * dim, dim, rngs=rngs)
        self.router = (
            TokenRouter(dim, len(branches), temperature=router_temperature, rngs=rngs)
            if len(branches) > 1
            else None
        )
        curvature = dict(curvature or {})
        unknown = set(curvature) - {"hyperbolic", "spherical"}
        if unknown:
            raise ValueError(f"curvature: unknown branch keys {sorted(unknown)}")
        k_h0, k_s0 = default_curvature(self.head_dim)
        default = {"hyperbolic": k_h0, "spherical": k_s0}
        beta0 = inverse_softplus(default_beta(self.head_dim))
        curved = [b for b in branches if b != "euclidean"]
        self.curvatures = nnx.Dict(
            {b: Curvature(b, k=curvature.get(b, default[b]), learnable=learn_curvature) for b in curved}
        )
        self.beta_raw = nnx.Dict({b: nnx.Param(jnp.asarray(beta0, jnp.float32)) for b in curved})

    def curvature_values(self) -> dict[str, jax.Array]:
        """Current signed curvature per curved branch."""
        return {b: self.curvatures[b]() for b in self.branches if b != "euclidean"}

    def _heads(self, x: jax.Array) -> jax.Array:
        b, t, _ = x.shape
        return x.reshape(b, t, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    def attention(self, h: jax.Array, mask: jax.Array | None) -> CATOutput:
        """Mixed attention of normalised tokens h [B, T, dim] -> ([B, T, dim], weights)."""
        b, t, _ = h.shape
        q, key, v = (self._heads(z) for z in jnp.split(self.qkv(h), 3, axis=-1))
        m = None if mask is None else mask[:, None, None, :].astype(bool)
        outs = []
        for br in self.branches:
            if br == "euclidean":
                outs.append(branch_attention(q, key, v, m, branch=br))
            else:
                beta = jax.nn.softplus(self.beta_raw[br][...])
                outs.append(branch_attention(q, key, v, m, branch=br, k=self.curvatures[br](), beta=beta))
        if self.router is None:
            w = jnp.ones((b, t, 1), h.dtype)
            mixed = outs[0]
        else:
            w = self.router(h)
            mixed = jnp.einsum("nbhtd,btn->bhtd", jnp.stack(outs), w)
        mixed = mixed.transpose(0, 2, 1, 3).reshape(b, t, self.dim)
        return CATOutput(self.proj(mixed), w)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> CATOutput:
        """x [B, T, dim], mask [B, T] (True = real token) -> CATOutput."""
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"CATBlock expects x of shape [B, T, {self.dim}], got {x.shape}")
        att = self.attention(self.ln1(x), mask)
        y = x + att.out
        y = y + self.ff2(jax.nn.gelu(self.ff1(self.ln2(y))))
        return CATOutput(y, att.weights)


def count_params(module: nnx.Module) -> int:
    """Number of scalars in the module's nnx.Param leaves."""
    return sum(int(p.size) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))
