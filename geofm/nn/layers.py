"""Geometric graph layers for any signed curvature k (κ-GCN / HGCN style).

Curvature convention: `k` signed (k<0 Poincaré ball, k>0 stereographic sphere, k=0
flat); each layer owns a `Curvature` (learnable, sign-constrained by `geometry`).

Representation between layers: tangent vectors at the origin, u = logmap0(x, k). A
layer maps u [N, d_in] to u' [N, d_out]; the manifold point is expmap0(u', k=layer.k()).
This is the HGCN pipeline with the logmap0(expmap0(.)) pairs between layers cancelled
(they are the identity), which halves the transcendental work:

    h = u W                          (= logmap0 of the Möbius matvec W ⊗ x)
    p = expmap0(h) ⊕ expmap0(b)      (bias by Möbius addition; b lives in the tangent space)
    m = AGG_j(w_ij; p_j)             aggregation over incoming edges j -> i
    u' = act(logmap0(m))             (nonlinearity in the tangent space)

Aggregations (`aggregation=`):
  "midpoint": weighted gyro-midpoint (κ-GCN) from two segment sums of the per-point
              lifts (st.midpoint_terms), fused in ONE propagate over [N, d+1]. At k=0 it
              is the weighted MEAN sum_j w_ij h_j / sum_j w_ij (scale-invariant in w).
  "tangent":  expmap0(sum_j w_ij logmap0(p_j)) (tangent space at the origin; at k=0 it
              is the plain GCN sum).
  "local":    HGCN's aggregation in the tangent space of each receiver i:
              expmap_{p_i}(sum_j w_ij logmap_{p_i}(p_j)); per-edge work [E, d].
Edge weights must be non-negative (e.g. `geofm.ops.gcn_norm`, attention softmax).
For geometry="euclidean" (k fixed 0) a flat fast path computes exactly the k=0 values.
All neighbourhood sums go through `geofm.ops` (CSR kernels); parameters are Euclidean
(plain optax).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from geofm import ops
from geofm.graph import CSR
from geofm.nn.curvature import Curvature, inverse_softplus
from manifolds import stereographic as st

AGGREGATIONS: tuple[str, ...] = ("midpoint", "tangent", "local")
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "tanh": jnp.tanh,
    "silu": jax.nn.silu,
    "identity": lambda x: x,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Activation by name; ValueError listing the known ones."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


# ----------------------------------------------------------------------------- aggregation


def midpoint_aggregate(p: jax.Array, weights: jax.Array | None, csr: CSR, *, k: jax.Array) -> jax.Array:
    """Weighted gyro-midpoint of incoming neighbours: p [N, d] or [N, H, d] points,
    weights [E] or [E, H] (>= 0) -> [N, ...] points. Nodes without incoming edges
    get the origin. One fused propagate over the lifted [N, ..., d+1] array."""
    num, den = st.midpoint_terms(p, k=k)
    sums = ops.propagate(jnp.concatenate([num, den], axis=-1), weights, csr)
    return st.midpoint_from_sums(sums[..., :-1], sums[..., -1:], k=k)


def tangent_aggregate(p: jax.Array, weights: jax.Array | None, csr: CSR, *, k: jax.Array) -> jax.Array:
    """expmap0(sum_j w_ij logmap0(p_j)): points [N, ..., d] -> points [N, ..., d]."""
    return st.expmap0(ops.propagate(st.logmap0(p, k=k), weights, csr), k=k)


def local_aggregate(p: jax.Array, weights: jax.Array | None, csr: CSR, *, k: jax.Array) -> jax.Array:
    """HGCN aggregation at each receiver: expmap_{p_i}(sum_j w_ij logmap_{p_i}(p_j)).

    p [N, ..., d], weights [E] / [E, H] or None -> [N, ..., d]. Costs [E, d] per-edge maps.
    """
    ps = ops.gather_senders(p, csr)
    pr = ops.gather_receivers(p, csr)
    v = st.logmap(pr, ps, k=k)
    if weights is not None:
        v = v * weights.reshape(weights.shape + (1,) * (v.ndim - weights.ndim))
    return st.expmap(p, ops.segment_sum(v, csr), k=k)


_AGG_FNS = {"midpoint": midpoint_aggregate, "tangent": tangent_aggregate, "local": local_aggregate}


def aggregate(p: jax.Array, weights: jax.Array | None, csr: CSR, *, k: jax.Array, how: str) -> jax.Array:
    """Dispatch to the aggregation named `how` (see module docstring)."""
    if how not in _AGG_FNS:
        raise ValueError(f"unknown aggregation {how!r}; known: {list(AGGREGATIONS)}")
    return _AGG_FNS[how](p, weights, csr, k=k)


def _flat_aggregate(h: jax.Array, weights: jax.Array | None, csr: CSR, how: str) -> jax.Array:
    """k = 0 values of `aggregate` on flat features h (the Euclidean fast path)."""
    if how not in _AGG_FNS:
        raise ValueError(f"unknown aggregation {how!r}; known: {list(AGGREGATIONS)}")
    if how == "midpoint":
        ones = jnp.ones(h.shape[:-1] + (1,), h.dtype)
        sums = ops.propagate(jnp.concatenate([h, ones], axis=-1), weights, csr)
        den = sums[..., -1:]
        return jnp.where(den > 0, sums[..., :-1] / jnp.where(den > 0, den, 1.0), 0.0)
    if how == "tangent":
        return ops.propagate(h, weights, csr)
    # local at k=0: h_i + sum_j w_ij (h_j - h_i)
    wsum = ops.propagate(jnp.ones(h.shape[:-1] + (1,), h.dtype), weights, csr)
    return h + ops.propagate(h, weights, csr) - wsum * h


# ----------------------------------------------------------------------------- GCN


class GeoGCNConv(nnx.Module):
    """Geometric graph convolution: tangent u [N, d_in] -> tangent u' [N, d_out].

    geometry: "hyperbolic" | "spherical" | "euclidean" | "free" (sign of the layer's
    learnable curvature, see `geofm.nn.curvature`); k: initial curvature.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        geometry: str = "hyperbolic",
        k: float | None = None,
        learn_curvature: bool = True,
        aggregation: str = "midpoint",
        activation: str = "relu",
        use_bias: bool = True,
        rngs: nnx.Rngs,
    ):
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; known: {list(AGGREGATIONS)}")
        self.geometry = geometry
        self.curvature = Curvature(geometry, k=k, learnable=learn_curvature)
        self.aggregation = aggregation
        self.act_name = activation
        self.act = get_activation(activation)
        self.linear = nnx.Linear(in_dim, out_dim, use_bias=False, rngs=rngs)
        self.bias = nnx.Param(jnp.zeros((out_dim,), jnp.float32)) if use_bias else None

    def k(self) -> jax.Array:
        """This layer's (output) curvature."""
        return self.curvature()

    @property
    def fusable(self) -> bool:
        """True when the layer's neighbourhood sum is one `ops.propagate` of per-node rows
        (`messages` -> propagate -> `combine`), so several layers (e.g. the experts of a
        mixture) can share ONE propagate over their concatenated rows."""
        return self.aggregation != "local"

    def messages(self, u: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """Rows to aggregate [N, c] (c = d_out + 1 for "midpoint", d_out for "tangent") and
        the curvature used (None on the flat path), for `combine`."""
        if not self.fusable:
            raise ValueError("aggregation='local' has per-edge messages; call the layer directly")
        h = self.linear(u)
        if self.geometry == "euclidean":  # static: flat fast path, same values as k = 0
            if self.bias is not None:
                h = h + self.bias[...]
            if self.aggregation == "midpoint":
                return jnp.concatenate([h, jnp.ones(h.shape[:-1] + (1,), h.dtype)], axis=-1), None
            return h, None
        k = self.k()
        p = st.expmap0(h, k=k)
        if self.bias is not None:
            p = st.mobius_add(p, st.expmap0(self.bias[...], k=k), k=k)
        if self.aggregation == "midpoint":
            return jnp.concatenate(st.midpoint_terms(p, k=k), axis=-1), k
        return st.logmap0(p, k=k), k

    def combine(self, sums: jax.Array, k: jax.Array | None) -> jax.Array:
        """Propagated rows (weighted sums of `messages`) -> output tangent [N, d_out]."""
        if self.geometry == "euclidean":
            if self.aggregation == "midpoint":
                den = sums[..., -1:]
                sums = jnp.where(den > 0, sums[..., :-1] / jnp.where(den > 0, den, 1.0), 0.0)
            return self.act(sums)
        if self.aggregation == "midpoint":
            m = st.midpoint_from_sums(sums[..., :-1], sums[..., -1:], k=k)
        else:
            m = st.expmap0(sums, k=k)
        return self.act(st.logmap0(m, k=k))

    def pre_activation(self, u: jax.Array, csr: CSR, weights: jax.Array | None) -> jax.Array:
        """Aggregated manifold points m [N, d_out] (before the tangent nonlinearity)."""
        h = self.linear(u)
        if self.geometry == "euclidean":
            if self.bias is not None:
                h = h + self.bias[...]
            return _flat_aggregate(h, weights, csr, self.aggregation)
        k = self.k()
        p = st.expmap0(h, k=k)
        if self.bias is not None:
            p = st.mobius_add(p, st.expmap0(self.bias[...], k=k), k=k)
        return aggregate(p, weights, csr, k=k, how=self.aggregation)

    def __call__(self, u: jax.Array, csr: CSR, weights: jax.Array | None = None) -> jax.Array:
        """u [N, d_in] tangent at the origin -> [N, d_out] tangent at the origin."""
        if self.fusable:
            rows, k = self.messages(u)
            return self.combine(ops.propagate(rows, weights, csr), k)
        m = self.pre_activation(u, csr, weights)
        if self.geometry == "euclidean":
            return self.act(m)
        return self.act(st.logmap0(m, k=self.k()))


# ----------------------------------------------------------------------------- attention


def edge_scores(
    pr: jax.Array, ps: jax.Array, *, geometry: str, k: jax.Array
) -> jax.Array:
    """Geometric attention logits per edge (before the scale): receiver points pr and
    sender points ps [E, H, d] -> [E, H].

    hyperbolic / free: -d_k(pr, ps)^2; spherical: cos of the geodesic angle (from the
    lifts to R^{d+1}: k <lx_r, lx_s> + (l_r-1)(l_s-1)); euclidean: <pr, ps> / sqrt(d).
    """
    if geometry == "euclidean":
        return jnp.sum(pr * ps, axis=-1) / math.sqrt(pr.shape[-1])
    if geometry == "spherical":
        nr, dr = st.midpoint_terms(pr, k=k)
        ns, ds = st.midpoint_terms(ps, k=k)
        return k * jnp.sum(nr * ns, axis=-1) + (dr * ds)[..., 0]
    d = st.dist(pr, ps, k=k)
    return -(d * d)


class GeoGATConv(nnx.Module):
    """Geometric graph attention: tangent u [N, d_in] -> tangent [N, heads * head_dim].

    Each head maps u to points p = expmap0(u W_h) on its own head_dim-manifold (shared
    curvature per layer); logits from the geometry (`edge_scores`) times a learnable
    positive scale per head; masked softmax over each node's incoming edges
    (`ops.segment_softmax`); aggregation by the attention-weighted gyro-midpoint;
    nonlinearity in the tangent space. Add self-loops to the graph to let a node
    attend to itself.
    """

    def __init__(
        self,
        in_dim: int,
        head_dim: int,
        *,
        heads: int = 1,
        geometry: str = "hyperbolic",
        k: float | None = None,
        learn_curvature: bool = True,
        activation: str = "relu",
        rngs: nnx.Rngs,
    ):
        self.geometry = geometry
        self.heads, self.head_dim = heads, head_dim
        self.curvature = Curvature(geometry, k=k, learnable=learn_curvature)
        self.linear = nnx.Linear(in_dim, heads * head_dim, use_bias=False, rngs=rngs)
        self.scale_raw = nnx.Param(jnp.full((heads,), inverse_softplus(1.0), jnp.float32))
        self.act = get_activation(activation)

    def k(self) -> jax.Array:
        return self.curvature()

    def attention(self, p: jax.Array, csr: CSR) -> jax.Array:
        """Attention weights [E, heads] for points p [N, heads, head_dim]."""
        logits = edge_scores(
            ops.gather_receivers(p, csr), ops.gather_senders(p, csr), geometry=self.geometry, k=self.k()
        )
        return ops.segment_softmax(logits * jax.nn.softplus(self.scale_raw[...]), csr)

    def __call__(self, u: jax.Array, csr: CSR) -> jax.Array:
        """u [N, d_in] tangent -> [N, heads * head_dim] tangent at the origin."""
        n = u.shape[0]
        h = self.linear(u).reshape(n, self.heads, self.head_dim)
        if self.geometry == "euclidean":
            alpha = self.attention(h, csr)
            out = ops.propagate(h, alpha, csr)
        else:
            k = self.k()
            p = st.expmap0(h, k=k)
            alpha = self.attention(p, csr)
            out = st.logmap0(midpoint_aggregate(p, alpha, csr, k=k), k=k)
        return self.act(out.reshape(n, self.heads * self.head_dim))
