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
import numpy as np
import optax
import scipy.sparse as sp
from flax import nnx
from scipy.sparse.csgraph import shortest_path

from geofm import ops
from geofm.config import check_sequence
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

    @property
    def fusable(self) -> bool:
        """All layers are GCN layers whose aggregation is one propagate (see GeoGCNConv)."""
        return self.conv == "gcn" and all(layer.fusable for layer in self.layers)

    def output(self, u: jax.Array) -> ExpertOutput:
        """Final tangent u [N, dim] -> ExpertOutput (points on the last layer's manifold)."""
        k = self.k()
        return ExpertOutput(points=st.expmap0(u, k=k), tangent=u, k=k)

    def __call__(self, u: jax.Array, csr: CSR, weights: jax.Array | None = None) -> ExpertOutput:
        """u [N, dim] tangent; csr + edge weights [E] (GCN only) -> ExpertOutput."""
        for layer in self.layers:
            u = self.dropout(u)
            u = layer(u, csr, weights) if self.conv == "gcn" else layer(u, csr)
        return self.output(u)


def run_fused(experts: Sequence[GeoExpert], u: jax.Array, csr: CSR, weights: jax.Array | None) -> list[ExpertOutput]:
    """Run fusable experts with the same depth in lockstep: at each depth ONE propagate
    over the concatenation of every expert's message rows (identical values to running
    them one by one, fewer passes over the edges). u [N, dim] is every expert's input."""
    us = [u] * len(experts)
    for depth in range(len(experts[0].layers)):
        msgs = [e.layers[depth].messages(e.dropout(ui)) for e, ui in zip(experts, us)]
        widths = [m.shape[-1] for m, _ in msgs]
        sums = ops.propagate(jnp.concatenate([m for m, _ in msgs], axis=-1), weights, csr)
        parts = jnp.split(sums, np.cumsum(widths)[:-1].tolist(), axis=-1)
        us = [e.layers[depth].combine(s, k) for e, s, (_, k) in zip(experts, parts, msgs)]
    return [e.output(ui) for e, ui in zip(experts, us)]


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
    try:
        return EXPERTS[name](dim, rngs=rngs, **{**defaults, **kwargs})
    except TypeError as err:  # a misspelled keyword: name the expert and the keywords given
        if "unexpected keyword argument" not in str(err):
            raise
        raise TypeError(f"expert {name!r}: {err}; keywords given (expert kwargs and MixtureEncoder extra keywords): "
                        f"{sorted({**defaults, **kwargs})}") from None


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
    `gate_uses_embedding`. Parameters are Euclidean (plain optax). With
    `fuse_propagate` (default), GCN experts of equal depth share one propagate per
    depth (`run_fused`): same values, one pass over the edges instead of one per expert.
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
        fuse_propagate: bool = True,
        rngs: nnx.Rngs,
        **expert_defaults: Any,
    ):
        experts = check_sequence(experts, "MixtureEncoder experts", (str, dict))
        if not experts:
            raise ValueError("MixtureEncoder needs at least one expert")
        self.names = tuple(_spec(e)[0] for e in experts)
        self.fuse_propagate = fuse_propagate
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
        if x.ndim != 2 or x.shape[1] != self.proj.in_features:
            raise ValueError(f"MixtureEncoder: x must be [N, {self.proj.in_features}] (in_dim), got {tuple(x.shape)}")
        if self.gate is not None and self.descriptor_dim and (
                descriptors is None or tuple(descriptors.shape) != (x.shape[0], self.descriptor_dim)):
            got = None if descriptors is None else tuple(descriptors.shape)
            raise ValueError(f"MixtureEncoder: descriptors must be [N, descriptor_dim] = "
                             f"[{x.shape[0]}, {self.descriptor_dim}], got {got}")
        if weights is None:
            weights = ops.gcn_norm(csr)
        u0 = self.proj(self.input_dropout(x))
        experts = list(self.experts)
        if len(experts) > 1 and self.fuse_propagate and all(
                isinstance(e, GeoExpert) and e.fusable and len(e.layers) == len(experts[0].layers) for e in experts):
            outs = run_fused(experts, u0, csr, weights)
        else:
            outs = [e(u0, csr, weights) for e in experts]
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


# ----------------------------------------------------------------------------- distance fitting


def graph_distances(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """All-pairs hop distances of the undirected graph [N, N] float32 (inf if disconnected)."""
    ei = np.asarray(edge_index)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index must be [2, E], got {ei.shape}")
    adj = sp.coo_matrix((np.ones(ei.shape[1]), (ei[0], ei[1])), shape=(num_nodes, num_nodes)).tocsr()
    return shortest_path(adj, method="D", directed=False, unweighted=True).astype(np.float32)


def region_distances(edge_index: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Hop distances inside each region's induced subgraph; inf across regions. [N, N] float32."""
    n = region.shape[0]
    out = np.full((n, n), np.inf, np.float32)
    for r in np.unique(region):
        idx = np.flatnonzero(region == r)
        keep = np.isin(edge_index[0], idx) & np.isin(edge_index[1], idx)
        remap = np.full(n, -1)
        remap[idx] = np.arange(idx.size)
        out[np.ix_(idx, idx)] = graph_distances(remap[edge_index[:, keep]], idx.size)
    return out


def pairwise_dist(points: jax.Array, *, k: jax.Array) -> jax.Array:
    """Geodesic distances between all rows of points [N, d] with curvature k -> [N, N].

    Broadcasts `st.dist` over an [N, N, d] array (meant for small N: distance fitting);
    floored at 1e-6 so the diagonal has a finite gradient."""
    return jnp.maximum(st.dist(points[:, None, :], points[None, :, :], k=k), 1e-6)


def expert_distances(out: MixtureOutput) -> jax.Array:
    """Each expert's pairwise geodesic distances [N, N, E]. `out.tangent` holds each
    expert's logmap0, so its points are expmap0(tangent, k_e)."""
    return jnp.stack([pairwise_dist(st.expmap0(out.tangent[:, e], k=out.ks[e]), k=out.ks[e])
                      for e in range(out.tangent.shape[1])], axis=-1)


def pair_weights(weights: jax.Array) -> jax.Array:
    """Gate weight of a pair: wbar_ij = (w_i + w_j) / 2, [N, E] -> [N, N, E]."""
    return 0.5 * (weights[:, None, :] + weights[None, :, :])


def mixture_distances(out: MixtureOutput) -> jax.Array:
    """Pairwise distance prediction [N, N] of a mixture: sum_e wbar_ije d_e(i, j)."""
    return jnp.sum(pair_weights(out.weights) * expert_distances(out), axis=-1)


def distortion(pred: jax.Array, target: jax.Array, pair_mask: jax.Array) -> jax.Array:
    """Mean relative distortion |pred / target - 1| over pairs where pair_mask [N, N] is True
    (target > 0 there)."""
    rel = jnp.abs(pred / jnp.where(pair_mask, target, 1.0) - 1.0)
    return jnp.sum(jnp.where(pair_mask, rel, 0.0)) / jnp.maximum(jnp.sum(pair_mask), 1)


class FitResult(NamedTuple):
    """Outcome of `fit_distances`: final distortion, loss history, the trained model's output."""

    distortion: float
    losses: list[float]
    output: MixtureOutput


def fit_distances(
    model: MixtureEncoder,
    x: jax.Array,
    csr: CSR,
    target: np.ndarray,
    *,
    pair_mask: np.ndarray | None = None,
    descriptors: jax.Array | None = None,
    steps: int = 300,
    lr: float = 0.02,
    balance: float = 0.0,
    objective: str = "mixture",
) -> FitResult:
    """Train `model` so that its (mixture) geodesic distances match `target` [N, N].

    Loss over pair_mask (default: all i != j with finite target), r_e = d_e / d_target - 1:
      objective="mixture":     mean (sum_e wbar_e d_e / d_target - 1)^2  (the mixed distance)
      objective="competitive": mean sum_e wbar_e r_e^2  (mixture of experts' errors, Jacobs
                               et al. 1991: each pair's gate mass flows to the expert that
                               reconstructs it best, and that expert specialises on it)
    plus balance * load_balance_loss(w). Adam(lr), `steps` full-batch steps, one
    compilation. Returns the final mean relative distortion of the mixed distance.
    """
    if objective not in ("mixture", "competitive"):
        raise ValueError(f"unknown objective {objective!r}; known: ['mixture', 'competitive']")
    target = np.asarray(target, np.float32)
    n = target.shape[0]
    if pair_mask is None:
        pair_mask = np.isfinite(target) & ~np.eye(n, dtype=bool)
    pair_mask = jnp.asarray(np.asarray(pair_mask, bool) & np.isfinite(target) & (target > 0))
    tgt = jnp.where(pair_mask, jnp.asarray(np.where(np.isfinite(target), target, 1.0)), 1.0)
    opt = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

    def loss_fn(m: MixtureEncoder):
        out = m(x, csr, descriptors=descriptors)
        if objective == "mixture":
            rel = mixture_distances(out) / tgt - 1.0
            err = rel * rel
        else:
            rel = expert_distances(out) / tgt[..., None] - 1.0
            err = jnp.sum(pair_weights(out.weights) * rel * rel, axis=-1)
        loss = jnp.sum(jnp.where(pair_mask, err, 0.0)) / jnp.sum(pair_mask)
        return loss + balance * load_balance_loss(out.weights), out

    @nnx.jit
    def step(m, o):
        (loss, _), grads = nnx.value_and_grad(loss_fn, has_aux=True)(m)
        o.update(m, grads)
        return loss

    losses = [float(step(model, opt)) for _ in range(steps)]
    out = model(x, csr, descriptors=descriptors)
    return FitResult(float(distortion(mixture_distances(out), tgt, pair_mask)), losses, out)
