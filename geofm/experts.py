"""Expert encoders per geometry and the gated mixture (GraphShaper-style) encoder.

An expert is a stack of geometric graph layers (`geofm.nn.layers`) of one geometry;
its output is a manifold point [N, d] with the last layer's signed curvature k
(k<0 hyperbolic, k>0 spherical, k=0 Euclidean). Experts are chosen by name from a
registry (`EXPERTS`, `register_expert`, `build_expert`), so configs can write
`experts: [{name: hyperbolic, kwargs: {num_layers: 2}}, euclidean]`.

`MixtureEncoder` = shared input projection (Linear, tangent at the origin) -> experts
-> `geofm.gating.GraphShaperGate` fusion in the tangent space at the origin. With one
expert there is no gate (weight 1), which gives the single-geometry baselines.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from geofm import ops
from geofm.gating import GraphShaperGate, fuse_tangent, load_balance_loss, node_entropy
from geofm.graph import CSR
from geofm.nn.layers import GeoGATConv, GeoGCNConv
from manifolds import stereographic as st


class ExpertOutput(NamedTuple):
    """points: [N, d] on the expert's manifold; tangent: logmap0(points) [N, d]; k: scalar."""

    points: jax.Array
    tangent: jax.Array
    k: jax.Array


class GeoExpert(nnx.Module):
    """A stack of `num_layers` geometric GCN (or GAT) layers of one geometry.

    Input: tangent vectors u [N, dim] at the origin (e.g. the shared projection).
    Hidden layers use `activation`; the last layer is linear in the tangent space
    (activation "identity") so the output can take any direction. Each layer has its
    own learnable curvature; the output lives on the last layer's manifold.
    """

    def __init__(
        self,
        dim: int,
        *,
        geometry: str,
        num_layers: int = 2,
        conv: str = "gcn",
        heads: int = 1,
        aggregation: str = "midpoint",
        activation: str = "relu",
        k: float | None = None,
        learn_curvature: bool = True,
        dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if conv not in ("gcn", "gat"):
            raise ValueError(f"unknown conv {conv!r}; known: ['gcn', 'gat']")
        if conv == "gat" and dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.geometry, self.conv = geometry, conv
        layers = []
        for i in range(num_layers):
            act = activation if i < num_layers - 1 else "identity"
            if conv == "gcn":
                layers.append(GeoGCNConv(dim, dim, geometry=geometry, k=k, learn_curvature=learn_curvature,
                                         aggregation=aggregation, activation=act, rngs=rngs))
            else:
                layers.append(GeoGATConv(dim, dim // heads, heads=heads, geometry=geometry, k=k,
                                         learn_curvature=learn_curvature, activation=act, rngs=rngs))
        self.layers = nnx.List(layers)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def k(self) -> jax.Array:
        """Curvature of the output manifold (the last layer's)."""
        return self.layers[-1].k()

    def __call__(self, u: jax.Array, csr: CSR, weights: jax.Array | None = None) -> ExpertOutput:
        """u [N, dim] tangent; csr + edge weights [E] (GCN only) -> ExpertOutput."""
        for layer in self.layers:
            u = self.dropout(u)
            u = layer(u, csr, weights) if self.conv == "gcn" else layer(u, csr)
        k = self.k()
        points = st.expmap0(u, k=k)
        return ExpertOutput(points=points, tangent=u, k=k)


# ----------------------------------------------------------------------------- registry

ExpertFactory = Callable[..., nnx.Module]
EXPERTS: dict[str, ExpertFactory] = {}


def register_expert(name: str, factory: ExpertFactory | None = None):
    """Register `factory(dim, *, rngs, **kwargs) -> expert` under `name` (decorator or call)."""

    def _register(f: ExpertFactory) -> ExpertFactory:
        if name in EXPERTS:
            raise ValueError(f"expert {name!r} is already registered")
        EXPERTS[name] = f
        return f

    return _register if factory is None else _register(factory)


for _geo in ("hyperbolic", "spherical", "euclidean"):
    register_expert(_geo, lambda dim, *, _g=_geo, **kw: GeoExpert(dim, geometry=_g, **kw))
    register_expert(f"{_geo}_gat", lambda dim, *, _g=_geo, **kw: GeoExpert(dim, geometry=_g, conv="gat", **kw))
register_expert("free", lambda dim, **kw: GeoExpert(dim, geometry="free", **kw))


def _spec(spec: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if not isinstance(spec, dict) or "name" not in spec or set(spec) - {"name", "kwargs"}:
        raise ValueError(f"expert spec must be a name or {{'name': ..., 'kwargs': {{...}}}}, got {spec!r}")
    return spec["name"], dict(spec.get("kwargs") or {})


def build_expert(spec: str | dict[str, Any], dim: int, *, rngs: nnx.Rngs, **defaults: Any) -> nnx.Module:
    """Build an expert from a name or {"name", "kwargs"}; kwargs override `defaults`."""
    name, kwargs = _spec(spec)
    if name not in EXPERTS:
        raise ValueError(f"unknown expert {name!r}; known: {sorted(EXPERTS)}")
    return EXPERTS[name](dim, rngs=rngs, **{**defaults, **kwargs})


# ----------------------------------------------------------------------------- mixture


class MixtureOutput(NamedTuple):
    """fused [N, dim] tangent at the origin (gate-weighted); product [N, E*dim] manifold
    points of the product manifold; weights [N, E]; tangent [N, E, dim]; ks [E]."""

    fused: jax.Array
    product: jax.Array
    weights: jax.Array
    tangent: jax.Array
    ks: jax.Array


class MixtureEncoder(nnx.Module):
    """Shared input projection -> geometric experts -> GraphShaper gate.

    x [N, in_dim] node features; descriptors [N, descriptor_dim] standardised structure
    features (`geofm.structure`); the gate also sees the shared projection when
    `gate_uses_embedding`. Parameters are Euclidean (plain optax).
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        *,
        experts: Sequence[str | dict[str, Any]] = ("hyperbolic", "spherical", "euclidean"),
        descriptor_dim: int = 0,
        gate_uses_embedding: bool = True,
        gate_hidden: int = 32,
        temperature: float = 1.0,
        input_dropout: float = 0.0,
        rngs: nnx.Rngs,
        **expert_defaults: Any,
    ):
        if not experts:
            raise ValueError("MixtureEncoder needs at least one expert")
        self.names = tuple(_spec(e)[0] for e in experts)
        self.proj = nnx.Linear(in_dim, dim, rngs=rngs)
        self.input_dropout = nnx.Dropout(input_dropout, rngs=rngs)
        self.experts = nnx.List([build_expert(e, dim, rngs=rngs, **expert_defaults) for e in experts])
        self.descriptor_dim = descriptor_dim
        self.gate = (
            GraphShaperGate(len(experts), descriptor_dim, dim if gate_uses_embedding else 0,
                            hidden=gate_hidden, temperature=temperature, rngs=rngs)
            if len(experts) > 1
            else None
        )

    def __call__(
        self,
        x: jax.Array,
        csr: CSR,
        weights: jax.Array | None = None,
        descriptors: jax.Array | None = None,
    ) -> MixtureOutput:
        """x [N, in_dim]; csr; edge weights [E] (default `ops.gcn_norm(csr)`); descriptors [N, F]."""
        if weights is None:
            weights = ops.gcn_norm(csr)
        u0 = self.proj(self.input_dropout(x))
        outs = [e(u0, csr, weights) for e in self.experts]
        ks = jnp.stack([o.k for o in outs])
        if self.gate is None:
            o = outs[0]
            ones = jnp.ones((x.shape[0], 1), u0.dtype)
            return MixtureOutput(o.tangent, o.points, ones, o.tangent[:, None], ks)
        w = self.gate(descriptors, u0 if self.gate.embed_dim else None)
        # The experts' outputs are expmap0(tangent): their logmap0 is the tangent itself
        # (exactly, without the ball clip), so fuse those directly.
        tangent = jnp.stack([o.tangent for o in outs], axis=1)
        product = jnp.concatenate([o.points for o in outs], axis=-1)
        return MixtureOutput(fuse_tangent(tangent, w), product, w, tangent, ks)

    def regularizers(self, out: MixtureOutput, mask: jax.Array | None = None) -> dict[str, jax.Array]:
        """Optional gate losses: {"load_balance", "entropy"} (see `geofm.gating`)."""
        return {"load_balance": load_balance_loss(out.weights, mask), "entropy": node_entropy(out.weights, mask)}
