"""CAT-KG: a curvature-adaptive transformer over (head, relation, [MASK]) tokens, 1-N scoring.

Our reconstruction of CAT (arXiv 2510.01634; see shared/methods/papers.md §3.2):
each block has three attention branches sharing the Q/K/V/O projections,
  E: scaled dot-product attention (k = 0),
  H: kappa-attention with learnable k_H = -softplus(a) < 0 per head (Poincaré ball),
  S: kappa-attention with learnable k_S = +softplus(a) > 0 per head (stereographic sphere),
and a per-token router w = softmax(MLP(x) / T) in R^3 that mixes the branch
outputs in the tangent space at the origin. The [MASK] token's output is the
query; it scores all entities in each geometry (dot product, -d_kH^2, and the
squared chordal distance on the sphere, which ranks like -d_kS^2), mixed with
the last block's router weights of that token. Fixed-geometry variants ("E",
"H", "S") keep one branch and no router.

The branch kernels (dot-product / Poincaré-ball / sphere attention with
gyro-midpoint aggregation) are shared with the node-graph CAT block:
`geofm.nn.cat.branch_attention`. `route` and `mix_tangent` are small pure functions.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from geofm.kg.models import KGModel, register_model
from geofm.kg.scoring import sqchord_tangent_rows, sqchord_tangent_shared, sqdist_to_tangent_rows, sqdist_to_tangent_shared
from geofm.nn.cat import branch_attention, default_beta, default_curvature
from geofm.nn.curvature import curvature_to_raw, inverse_softplus, raw_to_curvature
from manifolds import stereographic as st

__all__ = ["route", "mix_tangent", "default_score_scale", "CATKG", "BRANCHES"]

BRANCHES = ("E", "H", "S")


def route(logits: jax.Array, temperature: float) -> jax.Array:
    """Router weights [..., n_branches] = softmax(logits / temperature)."""
    return jax.nn.softmax(logits / temperature, axis=-1)


def mix_tangent(outs: Sequence[jax.Array], weights: jax.Array) -> jax.Array:
    """Tangent-space mixture sum_b weights[..., b] * outs[b]; outs: [..., D] each, weights [..., n]."""
    return sum(weights[..., i : i + 1] * o for i, o in enumerate(outs))


def default_score_scale(branch: str, dim: int) -> float:
    """Initial multiplier of a branch's entity score: 1 for E (<q, e>, not piloted) and
    H (-d^2), and 1/(4 sqrt(dim)) for S (-chord^2; 0.031 at dim 64). Chosen on WN18RR
    validation MRR after 5 epochs at dim 64 (bench/results/kg_cat_wn18rr_cpu.json, part
    pilot): H-only over {0.01, 0.03, 0.125, 0.5, 1, 2} peaked at 1 (0.193); S-only over
    {0.01, 0.03, 0.125, 0.5} at 0.03 (0.228; 0.028 at 0.5, where the S logits saturate
    the softmax). The 1/sqrt(dim) dependence of S is an assumption (only dim 64 was run)."""
    return {"E": 1.0, "H": 1.0, "S": 0.25 / math.sqrt(dim)}[branch]


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    if key is None or rate <= 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


class CATBlock(nnx.Module):
    """Pre-LN transformer block with E/H/S attention branches and a per-token router."""

    def __init__(self, dim: int, heads: int, branches: Sequence[str], *, rngs: nnx.Rngs, dtype: Any,
                 temperature: float = 1.0, ffn_mult: int = 2, curvature: Sequence[float] | None = None,
                 beta: float | None = None):
        if dim % heads:
            raise ValueError(f"CAT dim {dim} must be divisible by heads {heads}")
        self.heads, self.branches, self.temperature = heads, tuple(branches), temperature
        lin = lambda i, o: nnx.Linear(i, o, rngs=rngs, dtype=dtype, param_dtype=dtype)  # noqa: E731
        self.ln1 = nnx.LayerNorm(dim, rngs=rngs, dtype=dtype, param_dtype=dtype)
        self.ln2 = nnx.LayerNorm(dim, rngs=rngs, dtype=dtype, param_dtype=dtype)
        self.qkv = lin(dim, 3 * dim)
        self.out = lin(dim, dim)
        self.ff1, self.ff2 = lin(dim, ffn_mult * dim), lin(ffn_mult * dim, dim)
        if len(self.branches) > 1:
            self.router1, self.router2 = lin(dim, max(dim // 4, 4)), lin(max(dim // 4, 4), len(self.branches))
        curvature = default_curvature(dim // heads) if curvature is None else curvature
        beta0 = inverse_softplus(default_beta(dim // heads) if beta is None else beta)
        if "H" in self.branches:
            self.k_h = nnx.Param(jnp.full((heads,), curvature_to_raw(curvature[0], geometry="hyperbolic"), dtype))
            self.beta_h = nnx.Param(jnp.full((heads,), beta0, dtype))
        if "S" in self.branches:
            self.k_s = nnx.Param(jnp.full((heads,), curvature_to_raw(curvature[1], geometry="spherical"), dtype))
            self.beta_s = nnx.Param(jnp.full((heads,), beta0, dtype))

    def router(self, xn: jax.Array) -> jax.Array:
        """Per-token branch weights [B, T, n_branches] (ones for a single branch)."""
        if len(self.branches) == 1:
            return jnp.ones((*xn.shape[:-1], 1), xn.dtype)
        return route(self.router2(jax.nn.gelu(self.router1(xn))), self.temperature)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None, rate: float = 0.0) -> tuple[jax.Array, jax.Array]:
        b, t, d = x.shape
        xn = self.ln1(x)
        w = self.router(xn)
        qkv = self.qkv(xn).reshape(b, t, 3 * self.heads, d // self.heads).transpose(0, 2, 1, 3)
        q, k, v = jnp.split(qkv, 3, axis=1)  # [B, H, T, dh] each
        outs = []
        for name in self.branches:
            if name == "E":
                o = branch_attention(q, k, v, None, branch="euclidean")
            elif name == "H":
                curv = raw_to_curvature(self.k_h[...], geometry="hyperbolic")[:, None, None]
                beta = jax.nn.softplus(self.beta_h[...])[:, None, None]
                o = branch_attention(q, k, v, None, branch="hyperbolic", k=curv, beta=beta)
            else:
                curv = raw_to_curvature(self.k_s[...], geometry="spherical")[:, None, None]
                beta = jax.nn.softplus(self.beta_s[...])[:, None, None]
                o = branch_attention(q, k, v, None, branch="spherical", k=curv, beta=beta)
            outs.append(o.transpose(0, 2, 1, 3).reshape(b, t, d))
        k1, k2 = jax.random.split(key) if key is not None else (None, None)
        x = x + _dropout(self.out(mix_tangent(outs, w)), rate, k1)
        x = x + _dropout(self.ff2(jax.nn.gelu(self.ff1(self.ln2(x)))), rate, k2)
        return x, w


@register_model("cat")
class CATKG(KGModel):
    """CAT for KG completion (1-N). branches: subset of ("E", "H", "S"); one branch = fixed geometry.

    Entity embeddings are tangent vectors (plain optax), read through `entity_rows` so a
    text-projected table (geofm.kg.init) works too. score_g(q, e) is
    <q, e> for E, -d_k(exp0 q, exp0 e)^2 for H (k<0) and the squared chordal
    distance (2/k)(1 - cos θ) for S (k>0; same ranking as -d_k^2, smooth on the
    whole sphere: geofm.kg.scoring.sqchord_tangent_shared), each times a
    learnable scale (init `default_score_scale`); the final score mixes them with the
    [MASK] token's last router weights, plus an entity bias. score_curvature /
    attn_curvature: initial (k_H, k_S) of the H / S scoring geometries and of every
    block's attention heads (all learnable; default `geofm.nn.cat.default_curvature`
    of the width: ±1/dim and ±1/d_head). Curved attention scores start at attn_beta
    (default `geofm.nn.cat.default_beta`, the temperature of dot-product attention).
    The session-3 init (|k| = 1, beta ~ 1.19) sent sphere tokens past the antipode,
    where they wrap around (S-only valid MRR 0.023 vs 0.228 after 5 WN18RR epochs);
    on the ball it made attention nearly one-hot, which cost H-only nothing measurable.

    score_router: "mask" (default) mixes the geometries' scores with the [MASK] token's
    last-block router weights; "query" with a router over the encoded query itself (its
    own small MLP; `entropy_weight` regularises only the block routers). branch_queries:
    one query vector per geometry (a [d, n_branches * d] output projection) instead of one
    shared vector. Both are ignored with one branch; the defaults keep the original model's
    parameters (bench/kg_cat.py --part mix measures both options).
    """

    entity_rows_only = True

    def __init__(self, num_entities, num_relations, *, rngs, dtype=jnp.float32, dim=64, blocks=2, heads=4,
                 branches: Sequence[str] = BRANCHES, dropout=0.1, input_dropout=0.2, temperature=1.0,
                 entropy_weight=0.0, init_size=1e-1, score_curvature: Sequence[float] | None = None,
                 attn_curvature: Sequence[float] | None = None, attn_beta: float | None = None,
                 score_scale: Sequence[float] | None = None, score_router: Literal["mask", "query"] = "mask", branch_queries: bool = False):
        super().__init__(num_entities, num_relations, dim=dim, dtype=dtype)
        branches = tuple(branches)
        if score_router not in ("mask", "query"):
            raise ValueError(f"CAT score_router must be 'mask' or 'query', got {score_router!r}")
        if not branches or any(b not in BRANCHES for b in branches) or len(set(branches)) != len(branches):
            raise ValueError(f"CAT branches must be distinct names from {BRANCHES}, got {branches}")
        score_curvature = default_curvature(dim) if score_curvature is None else tuple(score_curvature)
        for name, pair in (("score_curvature", score_curvature), ("attn_curvature", attn_curvature)):
            if pair is not None and not (len(pair) == 2 and pair[0] < 0 < pair[1]):
                raise ValueError(f"CAT {name} must be [k_H < 0, k_S > 0], got {list(pair)}")
        if attn_beta is not None and not attn_beta > 0:
            raise ValueError(f"CAT attn_beta must be > 0 (or null for 1/(8 sqrt(d_head))), got {attn_beta}")
        self.branches, self.dropout, self.input_dropout, self.entropy_weight = branches, dropout, input_dropout, entropy_weight
        self.entity = nnx.Param(init_size * jax.random.normal(rngs.params(), (num_entities, dim), dtype))
        self.rel = nnx.Param(init_size * jax.random.normal(rngs.params(), (2 * num_relations, dim), dtype))
        self.mask_tok = nnx.Param(init_size * jax.random.normal(rngs.params(), (dim,), dtype))
        self.pos = nnx.Param(init_size * jax.random.normal(rngs.params(), (3, dim), dtype))
        self.blocks = nnx.List([CATBlock(dim, heads, branches, rngs=rngs, dtype=dtype, temperature=temperature,
                                              curvature=attn_curvature, beta=attn_beta) for _ in range(blocks)])
        self.ln_out = nnx.LayerNorm(dim, rngs=rngs, dtype=dtype, param_dtype=dtype)
        # branch_queries: one query vector per scoring geometry (a [d, n_branches * d] projection)
        self.n_queries = len(branches) if branch_queries and len(branches) > 1 else 1
        self.proj = nnx.Linear(dim, self.n_queries * dim, rngs=rngs, dtype=dtype, param_dtype=dtype)
        self.score_router = score_router if len(branches) > 1 else "mask"
        if self.score_router == "query":  # score weights from the encoded query, not the [MASK] token's block input
            hid = max(dim // 4, 4)
            self.qrouter1 = nnx.Linear(dim, hid, rngs=rngs, dtype=dtype, param_dtype=dtype)
            self.qrouter2 = nnx.Linear(hid, len(branches), rngs=rngs, dtype=dtype, param_dtype=dtype)
        self.temperature = temperature
        scale0 = [default_score_scale(b, dim) for b in branches] if score_scale is None else [float(v) for v in score_scale]
        if len(scale0) != len(branches) or min(scale0) <= 0:
            raise ValueError(f"CAT score_scale needs one positive value per branch {branches}, got {score_scale}")
        self.log_score_scale = nnx.Param(jnp.log(jnp.asarray(scale0, dtype)))
        k_h0, k_s0 = score_curvature
        self.k_out = nnx.Param(jnp.array([curvature_to_raw(k_h0, geometry="hyperbolic"), curvature_to_raw(k_s0, geometry="spherical")], dtype))
        self.bt = nnx.Param(jnp.zeros((num_entities,), dtype))

    def encode(self, h: jax.Array, r: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(query vectors [B, n_queries, d], router weights [B, blocks, 3 tokens, n_branches],
        score weights [B, n_branches])."""
        b = h.shape[0]
        x = jnp.stack([self.entity_rows(h), self.rel[...][r], jnp.broadcast_to(self.mask_tok[...], (b, self.dim))], 1)
        keys = jax.random.split(key, len(self.blocks) + 1) if key is not None else [None] * (len(self.blocks) + 1)
        x = _dropout(x + self.pos[...], self.input_dropout, keys[0])
        ws = []
        for blk, k in zip(self.blocks, keys[1:]):
            x, w = blk(x, key=k, rate=self.dropout)
            ws.append(w)
        z = self.ln_out(x[:, 2])
        ws = jnp.stack(ws, 1)
        if self.score_router == "query":
            w_score = route(self.qrouter2(jax.nn.gelu(self.qrouter1(z))), self.temperature)
        else:
            w_score = ws[:, -1, 2]
        return self.proj(z).reshape(b, self.n_queries, self.dim), ws, w_score

    def query(self, h, r, *, key=None):
        q, w, w_score = self.encode(h, r, key=key)
        return {"q": q, "w": w_score, "router": w}

    def _mixed_scores(self, q: Any, e: jax.Array, *, rows: bool) -> jax.Array:
        """Router-mixed scores of queries q["q"] [B, n_queries, d] against tangent entity vectors e:
        [N, d] shared by all queries (rows=False) or [B, K, d] per query (rows=True)."""
        qs = q["q"]
        k_h = raw_to_curvature(self.k_out[...][0], geometry="hyperbolic")
        k_s = raw_to_curvature(self.k_out[...][1], geometry="spherical")
        dot = (lambda a, b: jnp.einsum("bd,bkd->bk", a, b)) if rows else (lambda a, b: a @ b.T)
        chord = sqchord_tangent_rows if rows else sqchord_tangent_shared
        dist = sqdist_to_tangent_rows if rows else sqdist_to_tangent_shared
        out = []
        for i, name in enumerate(self.branches):
            qv = qs[:, i if self.n_queries > 1 else 0]
            if name == "E":
                s = dot(qv, e)
            elif name == "S":
                s = -chord(qv, e, k=k_s)
            else:
                kb = jnp.broadcast_to(k_h, (qv.shape[0], 1))
                s = -dist(st.expmap0(qv, k=k_h), e, k=kb, hyperbolic=True)
            out.append(jnp.exp(self.log_score_scale[...][i]) * s)
        return mix_tangent(out, q["w"])

    def score_shared(self, q, cand):
        return self._mixed_scores(q, self.entity_rows(cand), rows=False) + self.bt[...][cand][None, :]

    def score_rows(self, q, t):
        return self._mixed_scores(q, self.entity_rows(t), rows=True) + self.bt[...][t]

    def aux_loss(self, q: Any) -> jax.Array:
        """-entropy_weight * H(mean router weights): discourages collapse onto one branch."""
        if len(self.branches) == 1 or self.entropy_weight == 0.0:
            return jnp.zeros((), self.dtype)
        p = jnp.mean(q["router"], axis=(0, 1, 2))
        return self.entropy_weight * jnp.sum(p * jnp.log(p + 1e-9))

    def router_weights(self, h: jax.Array, r: jax.Array) -> jax.Array:
        """[B, blocks, 3 tokens, n_branches] router weights (no dropout)."""
        return self.encode(h, r)[1]

    def score_weights(self, h: jax.Array, r: jax.Array) -> jax.Array:
        """[B, n_branches] weights of the geometries in the final score (no dropout)."""
        return self.encode(h, r)[2]
