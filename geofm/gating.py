"""Curvature-adaptive gating: GraphShaper-style node fusion and CAT token routing.

GraphShaper (our reconstruction, see ../shared/methods/papers.md §2.3; the paper was
withdrawn, so this is not a reproduction): every node gets a softmax weight per
geometric expert, computed by a small MLP from its structural descriptors
(`geofm.structure.node_descriptors`) and its own (tangent) embedding. Expert outputs
are manifold points; they are mapped to the common tangent space at the origin
(`logmap0` with each expert's signed curvature k) and mixed there, never as raw
manifold points. The product-manifold embedding (concatenation of the experts'
points) and the gate weights are returned too.

CAT routing (papers.md §3.2): `TokenRouter` is a per-token linear map + softmax over
the attention branches.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from manifolds import stereographic as st


class GateOutput(NamedTuple):
    """Result of `GraphShaperGate.fuse`.

    fused:   [N, d] weighted sum of the experts' tangent vectors at the origin.
    tangent: [N, E, d] each expert's output mapped by logmap0 (its own k).
    product: [N, E*d] concatenated manifold points (product-manifold embedding).
    weights: [N, E] gate weights (rows sum to 1).
    logits:  [N, E] gate logits before the temperature softmax.
    """

    fused: jax.Array
    tangent: jax.Array
    product: jax.Array
    weights: jax.Array
    logits: jax.Array


def _masked_mean(x: jax.Array, mask: jax.Array | None, axis: int = 0) -> jax.Array:
    """Mean of x over `axis`, counting only rows where mask [N] is True."""
    if mask is None:
        return jnp.mean(x, axis=axis)
    m = mask.astype(x.dtype).reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    return jnp.sum(x * m, axis=axis) / jnp.maximum(jnp.sum(m, axis=axis), 1.0)


def load_balance_loss(weights: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """E * sum_e mean_n(w_ne)^2 - 1 for weights [N, E]: 0 when experts are used evenly,
    E-1 when one expert takes every node. Add +lambda * this to spread the load."""
    p = _masked_mean(weights, mask)
    return weights.shape[-1] * jnp.sum(p * p) - 1.0


def node_entropy(weights: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean per-node entropy -sum_e w log w of weights [N, E] (nats). Add +lambda * this
    to make each node's gate decisive; -lambda * this to keep gates soft."""
    h = -jnp.sum(weights * jnp.log(jnp.clip(weights, 1e-12, 1.0)), axis=-1)
    return _masked_mean(h, mask)


def fuse_tangent(tangent: jax.Array, weights: jax.Array) -> jax.Array:
    """Convex combination sum_e w_ne t_ned of tangent [N, E, d] with weights [N, E]."""
    return jnp.einsum("ne,ned->nd", weights, tangent)


def experts_to_tangent(points: Sequence[jax.Array], ks: Sequence[jax.Array]) -> jax.Array:
    """Stack logmap0(points[e], k=ks[e]) -> [N, E, d]; each points[e] is [N, d]."""
    if len(points) != len(ks):
        raise ValueError(f"got {len(points)} expert outputs but {len(ks)} curvatures")
    return jnp.stack([st.logmap0(p, k=k) for p, k in zip(points, ks)], axis=-2)


class GraphShaperGate(nnx.Module):
    """Per-node expert weights w = softmax(MLP([descriptors, embedding]) / T).

    descriptors: [N, F] standardised structure features; embedding: [N, D] the
    node's own tangent embedding (e.g. the shared input projection), or None when
    `embed_dim=0`. Parameters are Euclidean (plain optax).
    """

    def __init__(
        self,
        num_experts: int,
        descriptor_dim: int,
        embed_dim: int = 0,
        *,
        hidden: int = 32,
        temperature: float = 1.0,
        rngs: nnx.Rngs,
    ):
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if descriptor_dim + embed_dim < 1:
            raise ValueError("the gate needs descriptor_dim + embed_dim >= 1 input features")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.num_experts = num_experts
        self.descriptor_dim = descriptor_dim
        self.embed_dim = embed_dim
        self.temperature = temperature
        self.hidden = nnx.Linear(descriptor_dim + embed_dim, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, num_experts, rngs=rngs)

    def logits(self, descriptors: jax.Array | None, embedding: jax.Array | None = None) -> jax.Array:
        """Gate logits [N, E]."""
        parts = []
        if self.descriptor_dim:
            if descriptors is None or descriptors.shape[-1] != self.descriptor_dim:
                got = None if descriptors is None else descriptors.shape
                raise ValueError(f"gate expects descriptors [N, {self.descriptor_dim}], got {got}")
            parts.append(descriptors)
        if self.embed_dim:
            if embedding is None or embedding.shape[-1] != self.embed_dim:
                got = None if embedding is None else embedding.shape
                raise ValueError(f"gate expects embedding [N, {self.embed_dim}], got {got}")
            parts.append(embedding)
        h = jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        return self.out(jax.nn.gelu(self.hidden(h)))

    def __call__(self, descriptors: jax.Array | None, embedding: jax.Array | None = None) -> jax.Array:
        """Gate weights [N, E], rows summing to 1."""
        return jax.nn.softmax(self.logits(descriptors, embedding) / self.temperature, axis=-1)

    def fuse(
        self,
        points: Sequence[jax.Array],
        ks: Sequence[jax.Array],
        descriptors: jax.Array | None,
        embedding: jax.Array | None = None,
    ) -> GateOutput:
        """Fuse expert outputs points[e] [N, d] (manifold points with curvature ks[e])."""
        if len(points) != self.num_experts:
            raise ValueError(f"gate built for {self.num_experts} experts, got {len(points)} outputs")
        logits = self.logits(descriptors, embedding)
        w = jax.nn.softmax(logits / self.temperature, axis=-1)
        tangent = experts_to_tangent(points, ks)
        return GateOutput(
            fused=fuse_tangent(tangent, w),
            tangent=tangent,
            product=jnp.concatenate(list(points), axis=-1),
            weights=w,
            logits=logits,
        )


class TokenRouter(nnx.Module):
    """CAT router: per-token weights softmax((W x + b) / T) over `num_branches`.

    x: [..., d] -> [..., num_branches], rows summing to 1. Zero-initialised kernel so
    every branch starts with equal weight.
    """

    def __init__(self, dim: int, num_branches: int = 3, *, temperature: float = 1.0, rngs: nnx.Rngs):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.proj = nnx.Linear(dim, num_branches, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.softmax(self.proj(x) / self.temperature, axis=-1)
