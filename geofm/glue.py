"""GraphGlue: adaptive orthogonal frames, EMA prototypes, gluing losses, transferability.

Our implementation of multi-domain Riemannian graph gluing (papers.md §1). Each sample
is a small graph (the 2-hop ego subgraph of a node, capped at ``max_nodes``). Per sample:

1. node inputs x [n, F] -> per-domain input projection -> h0 [n, d];
2. M generator nodes g_bm = g_m + C(mean h0 of the sample) are attached to the
   sample's own nodes: weight sigmoid(<P g_bm, P h0_v> / sqrt(a)) for the top-``knn``
   nodes v of that sample, 0 otherwise;
3. a backbone GNN runs over the augmented graph (plain GCN, or the gated mixed-geometry
   expert encoder `geofm.experts.MixtureEncoder`; edge weights symmetrically normalised);
4. z_b = mean of the sample's node embeddings; tangent vectors V_bm = h(g_bm) - z_b;
   V_b^T = Q_b R_b (QR by Gram-Schmidt, Q_bm points along the residual of V_bm); frame vectors
   e_bm = s_bm Q_bm with s_bm = ||V_bm||; diagonal metric g_bm = s_bm^2.

Layout: each sample is a dense block (its S = ``max_nodes`` node slots plus its M
generators); the backbone's message passing is a batched [B, S+M, S+M] matmul
(`geofm.ops.BlockGraph`) and every batch has the same shapes (one compilation). Small
samples make this the fast path on CPU: no gathers or scatters in forward or backward.

The "manifold" is the implicit Riemannian structure of these frames and metrics (no
constant curvature; k does not appear here, the gated backbone's experts carry theirs).

Losses (``locality_loss``, ``prototype_loss``, ``glue_loss``), the EMA prototypes
(``Prototypes``: log-Euclidean EMA of the metric, bias-corrected; model state that is
saved in checkpoints), 2-path sampling on kNN graphs and the transferability score
(``transferability``) live here too.

Reference quirks (GraphGlue code, papers.md §1.3-1.6) and what we do instead:
- the reference calls every GNN layer on the raw input, so only the last layer counts:
  our layers are CHAINED;
- the reference's generators are identical rows across the batch and pick their top-k
  nodes over the whole batch: ours are conditioned on the sample and attach only to
  the sample's own nodes (and the top-1 column is not dropped);
- the reference redraws the random feature projection on every call: ours is fixed per
  dataset (`geofm.features.project_features`, seeded, saved with the run);
- with diagonal metrics the reference holonomy sqrt(Gj/Gk) sqrt(Gi/Gj) - sqrt(Gi/Gk)
  is identically 0: we transport with the FULL frames,
  T_{a->b} = diag(1/s_b) Q_b^T Q_a diag(s_a) (coordinates in frame a -> frame b), so
  ||T_{j->k} T_{i->j} - T_{i->k}||^2 measures how much the frame of j fails to relay
  i's frame to k (0 when the three frames span the same subspace);
- the reference's adaptation mixes prototype metrics in exp-space while naming them
  log: we mix log-metrics (the log-Euclidean mean).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from geofm import ops
from geofm.experts import MixtureEncoder
from geofm.graph import CSR

__all__ = [
    "GlueConfig",
    "GlueBatch",
    "GlueOutput",
    "GlueModel",
    "Prototypes",
    "BACKBONES",
    "register_backbone",
    "build_glue_batch",
    "batch_shape",
    "stack_batches",
    "flatten_parallel",
    "augmented_graph",
    "frames",
    "transport",
    "locality_loss",
    "prototype_loss",
    "sample_inputs",
    "text_align_loss",
    "glue_loss",
    "knn_paths",
    "transferability",
]

EPS = 1e-6


@dataclass(frozen=True)
class GlueConfig:
    """GraphGlue model hyper-parameters.

    dim: shared width; num_generators: M frame vectors per sample; knn: nodes each
    generator attaches to; att_dim: width of the attachment similarity; max_nodes: cap
    on nodes per sample (static slot table); backbone: {"name": "gcn"|"gated", "kwargs"};
    pool: how z_b is read from the sample ("mean" over its nodes, as the reference, or
    "center" = the centre node, or "mean_center" = their average); tau: locality /
    prototype temperature; ema: prototype EMA decay; path_knn: kNN for 2-path sampling;
    num_paths: 2-paths per batch in the global phase; input_projection: "per_domain" (one
    learned input map per pretraining domain, the reference's design) or "shared" (one map
    for all domains: right when every domain lives in the same input space, e.g. MiniLM
    text embeddings; the target then enters through exactly the map the backbone was
    trained on, not the mean of K independently learned ones).
    """

    dim: int = 64
    num_generators: int = 8
    knn: int = 5
    att_dim: int = 64
    max_nodes: int = 32
    backbone: dict[str, Any] = field(default_factory=lambda: {"name": "gcn", "kwargs": {"num_layers": 2}})
    pool: str = "mean"
    tau: float = 1.0
    ema: float = 0.99
    path_knn: int = 5
    num_paths: int = 256
    input_projection: str = "per_domain"


# ----------------------------------------------------------------------------- batches


class GlueBatch(NamedTuple):
    """One batch of B samples in the dense per-sample layout (host numpy or device).

    Sample b owns the S = ``max_nodes`` node slots b*S .. b*S + S - 1 (its nodes in the
    sampler's hop order, centre first; empty slots are zero padding), so the shapes
    depend on (B, S, F) only: one compilation for a whole run, whatever the subgraphs.

    x: [B*S, F] node inputs (0 on empty slots); members: [B, S] int32 row of slot s of sample b (= b*S + s); member_mask: [B, S] bool
    (a real node in the slot); sample_mask: [B] bool (real samples); sample_domain: [B]
    int32; label: [B] int32 (-1 unknown); paths: [T, 3] int32 sample indices of 2-paths
    (i, j, k) given by the host (refine phase), path_mask: [T]; adj: [B, S, S] bool,
    adj[b, i, j] = the edge j -> i between two slots of sample b (each undirected edge
    both ways, no self loops). The model adds self loops and the M generator nodes per
    sample (`augmented_graph`).
    """

    x: Any
    members: Any
    member_mask: Any
    sample_mask: Any
    sample_domain: Any
    label: Any
    paths: Any
    path_mask: Any
    adj: Any


def build_glue_batch(
    parts: Sequence[tuple[Any, int]],
    *,
    num_generators: int,
    max_nodes: int,
    labels: Sequence[np.ndarray | None] | None = None,
    paths: np.ndarray | None = None,
    num_paths: int = 1,
    num_samples: int | None = None,
    n_pad: int | None = None,
    e_pad: int | None = None,
    bucket_minimum: int | None = None,
) -> GlueBatch:
    """Host: merge sampled subgraph batches [(SubgraphBatch, domain id), ...] into a GlueBatch.

    Every part's samples keep their order (part 0 first). Samples are truncated to
    ``max_nodes`` nodes (the sampler's hop order keeps the centre and nearest nodes).
    labels: per part, [num_nodes] int labels of that domain (gathered at the centres).
    paths: optional [T, 3] sample-index triples (padded to ``num_paths`` rows).
    num_samples pads the sample axis with empty (masked) samples.
    num_generators is validated here; the generator nodes themselves are added by the
    model. n_pad / e_pad / bucket_minimum (node / edge padding of the earlier sparse
    layout) have no effect: the dense layout's shape is fixed by (samples, max_nodes).
    """
    del n_pad, e_pad, bucket_minimum  # the dense layout needs no padding buckets
    if not parts:
        raise ValueError("build_glue_batch needs at least one subgraph batch")
    if num_generators < 1 or max_nodes < 1:
        raise ValueError(f"num_generators and max_nodes must be >= 1, got {num_generators}, {max_nodes}")
    s_cap = int(max_nodes)
    slot_rows, feats, adj_idx, smask, sdom, slab = [], [], [], [], [], []
    base = 0  # samples before this part
    for p, (sub, dom) in enumerate(parts):
        g = sub.graph
        if g.nodes is None:
            raise ValueError("subgraph batches need node features (sampler features=...)")
        b = sub.sample_mask.shape[0]
        n_node = np.asarray(g.n_node[:b], np.int64)
        total_n = int(n_node.sum())
        total_e = int(np.asarray(g.n_edge[:b]).sum())
        sid = np.repeat(np.arange(b), n_node)  # sample of every node
        local = np.arange(total_n) - np.repeat(np.cumsum(n_node) - n_node, n_node)
        keep = local < s_cap
        slot_rows.append((base + sid[keep]) * s_cap + local[keep])
        feats.append(np.asarray(g.nodes[:total_n])[keep])
        s_, r_ = np.asarray(g.senders[:total_e], np.int64), np.asarray(g.receivers[:total_e], np.int64)
        ke = keep[s_] & keep[r_]
        adj_idx.append((base + sid[r_[ke]], local[r_[ke]], local[s_[ke]]))
        smask.append(np.asarray(sub.sample_mask, bool) & (n_node > 0))
        sdom.append(np.full(b, dom, np.int32))
        lab = None if labels is None else labels[p]
        cids = np.asarray(sub.center_ids)
        slab.append(np.where(cids >= 0, np.asarray(lab)[np.maximum(cids, 0)], -1).astype(np.int32)
                    if lab is not None else np.full(b, -1, np.int32))
        base += b
    if num_samples is not None:
        if num_samples < base:
            raise ValueError(f"num_samples={num_samples} is smaller than the {base} samples")
        extra = num_samples - base
        smask.append(np.zeros(extra, bool))
        sdom.append(np.zeros(extra, np.int32))
        slab.append(np.full(extra, -1, np.int32))
        base = num_samples
    nb = base
    sample_mask = np.concatenate(smask)
    sample_domain = np.concatenate(sdom)
    rows = np.concatenate(slot_rows)
    f = feats[0].shape[1]
    x = np.zeros((nb * s_cap, f), np.float32)
    x[rows] = np.concatenate(feats)
    member_mask = np.zeros(nb * s_cap, bool)
    member_mask[rows] = True
    member_mask = member_mask.reshape(nb, s_cap) & sample_mask[:, None]
    adj = np.zeros((nb, s_cap, s_cap), bool)
    for bi, ri, si in adj_idx:
        adj[bi, ri, si] = True
    adj &= member_mask[:, :, None] & member_mask[:, None, :]
    t = max(int(num_paths), 1)
    pth = np.zeros((t, 3), np.int32)
    pmask = np.zeros(t, bool)
    if paths is not None:
        paths = np.asarray(paths, np.int32).reshape(-1, 3)
        if paths.shape[0] > t:
            raise ValueError(f"{paths.shape[0]} paths do not fit num_paths={t}")
        pth[: paths.shape[0]] = paths
        pmask[: paths.shape[0]] = sample_mask[paths].all(axis=1)
    return GlueBatch(
        x=x, members=np.arange(nb * s_cap, dtype=np.int32).reshape(nb, s_cap),
        member_mask=member_mask, sample_mask=sample_mask, sample_domain=sample_domain,
        label=np.concatenate(slab), paths=pth, path_mask=pmask, adj=adj,
    )


def batch_shape(b: GlueBatch) -> tuple[int, int]:
    """(samples, node slots per sample) of a GlueBatch: its shape bucket."""
    nb, s_cap = np.shape(b.member_mask)[-2:]
    return int(nb), int(s_cap)


def stack_batches(batches: Sequence[GlueBatch]) -> GlueBatch:
    """Stack equally-shaped host GlueBatches along a new leading (device) axis."""
    shapes = {(batch_shape(b), np.shape(b.x)[-1], np.shape(b.paths)[0]) for b in batches}
    if len(shapes) != 1:
        raise ValueError(f"stack_batches needs equally shaped batches, got {sorted(shapes)}")
    return jax.tree_util.tree_map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *batches)


def flatten_parallel(b: GlueBatch) -> GlueBatch:
    """Stacked [P, ...] GlueBatch (P sub-batches of B samples) -> one GlueBatch of P*B samples.

    Paths are offset to index the merged sample axis. Works on host and traced arrays.
    """
    p, nb, s_cap = b.member_mask.shape
    t = b.paths.shape[1]
    offs = (jnp.arange(p, dtype=jnp.int32) * nb)[:, None, None]
    return GlueBatch(
        x=b.x.reshape((p * nb * s_cap,) + b.x.shape[2:]),
        members=jnp.arange(p * nb * s_cap, dtype=jnp.int32).reshape(p * nb, s_cap),
        member_mask=b.member_mask.reshape(p * nb, s_cap), sample_mask=b.sample_mask.reshape(p * nb),
        sample_domain=b.sample_domain.reshape(p * nb), label=b.label.reshape(p * nb),
        paths=(b.paths + offs).reshape(p * t, 3), path_mask=b.path_mask.reshape(p * t),
        adj=b.adj.reshape(p * nb, s_cap, s_cap))


def augmented_graph(adj: jax.Array, member_mask: jax.Array, w: jax.Array) -> tuple[ops.BlockGraph, jax.Array]:
    """The per-sample augmented graph as dense blocks of n = S + M nodes (slots, then generators).

    adj [B, S, S] bool real edges; member_mask [B, S]; w [B, M, S] generator attachment
    weights (0 off the top-knn). Edges: real edges (weight 1), self loops on real slots
    and generators (1), node <-> generator both ways (w). Returns (BlockGraph, symmetric
    GCN weights [B*n*n] = A_ij / sqrt(deg_i deg_j) with deg the weighted in-degree).
    """
    nb, s_cap, _ = adj.shape
    m = w.shape[1]
    dt = w.dtype
    real = adj | (jnp.eye(s_cap, dtype=bool)[None] & member_mask[:, :, None])
    attach = jnp.broadcast_to(member_mask[:, None, :], (nb, m, s_cap))
    eye_m = jnp.broadcast_to(jnp.eye(m, dtype=bool), (nb, m, m))
    struct = jnp.concatenate([jnp.concatenate([real, jnp.swapaxes(attach, 1, 2)], axis=2),
                              jnp.concatenate([attach, eye_m], axis=2)], axis=1)
    a = jnp.concatenate([jnp.concatenate([real.astype(dt), jnp.swapaxes(w, 1, 2)], axis=2),
                         jnp.concatenate([w, eye_m.astype(dt)], axis=2)], axis=1)
    inv = jax.lax.rsqrt(jnp.maximum(a.sum(-1), EPS))
    a = a * inv[:, :, None] * inv[:, None, :]
    return ops.BlockGraph(adj=struct), a.reshape(-1)


# ----------------------------------------------------------------------------- backbones


class GCNBackbone(nnx.Module):
    """Chained GCN layers: h <- LayerNorm(act(A_w h W + b)) (last layer without act);
    with ``residual`` h <- LayerNorm(h + act(A_w h W + b)) (identity is one step away, so
    the backbone can keep its input while adding graph context).

    Inputs/outputs [N, dim] Euclidean; edge weights [E] already normalised.
    """

    def __init__(self, dim: int, *, num_layers: int = 2, activation: str = "relu", dtype: str = "float32",
                 residual: bool = False, rngs: nnx.Rngs):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        dt = jnp.dtype(dtype)
        self.linears = nnx.List([nnx.Linear(dim, dim, dtype=dt, rngs=rngs) for _ in range(num_layers)])
        self.norms = nnx.List([nnx.LayerNorm(dim, dtype=dt, rngs=rngs) for _ in range(num_layers)])
        self.act = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "tanh": jnp.tanh}[activation]
        self.dtype = dt
        self.residual = bool(residual)

    def __call__(self, h: jax.Array, csr: CSR | ops.BlockGraph,
                 weights: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        h = h.astype(self.dtype)
        for i, (lin, norm) in enumerate(zip(self.linears, self.norms)):
            u = ops.propagate(lin(h), weights.astype(h.dtype), csr)
            if i < len(self.linears) - 1:
                u = self.act(u)
            h = norm(h + u if self.residual else u)
        return h.astype(jnp.float32), None


class GatedBackbone(nnx.Module):
    """The mixed-geometry gated expert encoder (`geofm.experts.MixtureEncoder`).

    Returns the gate-fused tangent vectors at the origin [N, dim] (LayerNorm(input + fused)
    with ``residual``) and gate weights [N, E].
    """

    def __init__(self, dim: int, *, experts: Sequence[Any] = ("hyperbolic", "spherical", "euclidean"),
                 num_layers: int = 2, aggregation: str = "tangent", residual: bool = False, rngs: nnx.Rngs,
                 **kwargs: Any):
        self.enc = MixtureEncoder(dim, dim, experts=tuple(experts), descriptor_dim=0, gate_uses_embedding=True,
                                  num_layers=num_layers, aggregation=aggregation, rngs=rngs, **kwargs)
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.residual = bool(residual)

    def __call__(self, h: jax.Array, csr: CSR | ops.BlockGraph,
                 weights: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        out = self.enc(h, csr, weights)
        return self.norm(h + out.fused if self.residual else out.fused), out.weights


BACKBONES: dict[str, Any] = {"gcn": GCNBackbone, "gated": GatedBackbone}


def register_backbone(name: str, factory: Any) -> None:
    """Register `factory(dim, *, rngs, **kwargs) -> module` returning (h [N, dim], gate weights | None)."""
    if name in BACKBONES:
        raise ValueError(f"backbone {name!r} is already registered")
    BACKBONES[name] = factory


def build_backbone(spec: dict[str, Any], dim: int, *, rngs: nnx.Rngs) -> nnx.Module:
    if not isinstance(spec, dict) or "name" not in spec or set(spec) - {"name", "kwargs"}:
        raise ValueError(f"backbone must be {{'name': ..., 'kwargs': {{...}}}}, got {spec!r}")
    name = spec["name"]
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    try:
        return BACKBONES[name](dim, rngs=rngs, **dict(spec.get("kwargs") or {}))
    except TypeError as err:
        raise ValueError(f"bad model.backbone.kwargs for backbone {name!r}: {err}") from None


# ----------------------------------------------------------------------------- prototypes


class ProtoState(nnx.Variable):
    """Non-trainable model state (EMA prototypes); saved in checkpoints, not optimised."""


class Prototypes(nnx.Module):
    """Per-domain EMA prototypes: point [K, d] and log-metric [K, M], bias-corrected.

    update: P_k <- a P_k + (1-a) mean_{b in k} z_b and L_k <- a L_k + (1-a) mean log g_b
    (the log-Euclidean EMA of diagonal SPD metrics), only for domains present in the
    batch. Reads divide by (1 - a^count_k) so the first update is not shrunk toward 0.
    """

    def __init__(self, num_domains: int, dim: int, num_generators: int, *, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.point = ProtoState(jnp.zeros((num_domains, dim), jnp.float32))
        self.log_metric = ProtoState(jnp.zeros((num_domains, num_generators), jnp.float32))
        self.count = ProtoState(jnp.zeros((num_domains,), jnp.float32))

    def read(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(points [K, d], log-metrics [K, M], valid [K] bool), bias-corrected."""
        corr = 1.0 - self.decay ** self.count[...]
        safe = jnp.where(corr > 0, corr, 1.0)[:, None]
        return self.point[...] / safe, self.log_metric[...] / safe, self.count[...] > 0

    def update(self, z: jax.Array, log_g: jax.Array, domain: jax.Array, mask: jax.Array) -> None:
        """z [B, d], log_g [B, M], domain [B] int, mask [B] bool (stop-gradient inside)."""
        z, log_g = jax.lax.stop_gradient(z), jax.lax.stop_gradient(log_g)
        k = self.count.shape[0]
        onehot = jax.nn.one_hot(domain, k) * mask[:, None]  # [B, K]
        n = onehot.sum(0)
        present = n > 0
        mean_z = (onehot.T @ z) / jnp.maximum(n, 1.0)[:, None]
        mean_l = (onehot.T @ log_g) / jnp.maximum(n, 1.0)[:, None]
        a = self.decay
        self.point[...] = jnp.where(present[:, None], a * self.point[...] + (1 - a) * mean_z, self.point[...])
        self.log_metric[...] = jnp.where(present[:, None], a * self.log_metric[...] + (1 - a) * mean_l,
                                         self.log_metric[...])
        self.count[...] = self.count[...] + present.astype(jnp.float32)


# ----------------------------------------------------------------------------- model


class GlueOutput(NamedTuple):
    """z [B, d] sample points; V [B, M, d] tangent vectors; Q [B, d, M] orthonormal frame;
    s [B, M] frame lengths (metric g = s^2); log_g [B, M]; gate [B, S, E] gate weights of
    the node slots (gated backbone) or None."""

    z: jax.Array
    V: jax.Array
    Q: jax.Array
    s: jax.Array
    log_g: jax.Array
    gate: jax.Array | None


def _safe_norm(x: jax.Array, axis: int = -1) -> jax.Array:
    sq = jnp.sum(x * x, axis=axis)
    ok = sq > EPS * EPS
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, sq, 1.0)), EPS)


def frames(V: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Tangent vectors V [B, M, d] (M <= d) -> (Q [B, d, M] orthonormal, sign-fixed so
    <Q_m, V_m> >= 0; s [B, M] = ||V_m||; log g [B, M] = 2 log s).

    Modified Gram-Schmidt over the M vectors (a `lax.scan`: step m normalises the m-th
    residual and removes its direction from the later ones). This is the QR factor of
    V^T with a positive diagonal, i.e. the same Q as Householder QR with the sign fix
    (agreement ~1e-7 in float32), but built from elementwise ops and reductions only:
    XLA:CPU's LAPACK QR / triangular-solve calls made the training step 3-10x slower and
    stalled for seconds under CPU contention. A residual that vanishes (V_m in the span of
    the earlier vectors) gives a zero column instead of an arbitrary unit vector.
    """
    m = V.shape[-2]
    later = jnp.arange(m)

    def step(w: jax.Array, i: jax.Array) -> tuple[jax.Array, jax.Array]:
        v = jax.lax.dynamic_index_in_dim(w, i, axis=-2, keepdims=False)  # [B, d]
        q = v / _safe_norm(v)[..., None]
        c = jnp.einsum("...jd,...d->...j", w, q) * (later > i)
        return w - c[..., None] * q[..., None, :], q

    _, qs = jax.lax.scan(step, V, later)  # [M, B, d]
    q = jnp.moveaxis(qs, 0, -1)
    s = _safe_norm(V)
    return q, s, 2.0 * jnp.log(s)


class GlueModel(nnx.Module):
    """The GraphGlue AOF network: per-domain input projection, generators, backbone.

    Parameters are Euclidean (plain optax); prototypes are `ProtoState`, not `nnx.Param`.
    """

    def __init__(self, cfg: GlueConfig, *, in_dim: int, num_domains: int, rngs: nnx.Rngs):
        if cfg.num_generators > cfg.dim:
            raise ValueError(f"num_generators={cfg.num_generators} must be <= dim={cfg.dim} (QR frame)")
        if cfg.knn < 1:
            raise ValueError(f"knn must be >= 1, got {cfg.knn}")
        if cfg.pool not in ("mean", "center", "mean_center"):
            raise ValueError(f"pool must be 'mean', 'center' or 'mean_center', got {cfg.pool!r}")
        if cfg.input_projection not in ("per_domain", "shared"):
            raise ValueError(f"input_projection must be 'per_domain' or 'shared', got {cfg.input_projection!r}")
        self.cfg = cfg
        d, m = cfg.dim, cfg.num_generators
        key = rngs.params()
        kp = 1 if cfg.input_projection == "shared" else num_domains
        self.in_w = nnx.Param(jax.random.normal(key, (kp, in_dim, d)) / np.sqrt(in_dim))
        self.in_b = nnx.Param(jnp.zeros((kp, d)))
        g = jax.random.normal(rngs.params(), (d, m))
        self.generators = nnx.Param(jnp.linalg.qr(g)[0].T)  # [M, d] orthonormal rows
        self.gen_cond = nnx.Linear(d, d, rngs=rngs)
        self.att_g = nnx.Linear(d, cfg.att_dim, rngs=rngs)
        self.att_x = nnx.Linear(d, cfg.att_dim, rngs=rngs)
        self.backbone = build_backbone(dict(cfg.backbone), d, rngs=rngs)
        self.decoder = nnx.Linear(d, in_dim, use_bias=False, rngs=rngs)  # z -> input space (text-align loss)
        self.protos = Prototypes(num_domains, d, m, decay=cfg.ema)

    def project(self, x: jax.Array, sample_domain: jax.Array) -> jax.Array:
        """Input projection: x [B*S, F] (slot layout), sample_domain [B] -> h0 [B*S, d].

        Shared: one matmul. Per domain: every domain's projection of every node (one
        [F, K*d] matmul), then each sample keeps its own domain's (one-hot contraction: no
        gather, no scatter in the gradient).
        """
        k = self.in_w.shape[0]
        if k == 1:
            return x @ self.in_w[0] + self.in_b[0]
        nb, d = sample_domain.shape[0], self.in_w.shape[-1]
        y = (x @ jnp.moveaxis(self.in_w[...], 0, 1).reshape(x.shape[-1], k * d)).reshape(nb, -1, k, d)
        onehot = jax.nn.one_hot(sample_domain, k, dtype=x.dtype)  # [B, K]
        h = jnp.einsum("bskd,bk->bsd", y, onehot) + (onehot @ self.in_b[...])[:, None]
        return h.reshape(x.shape[0], d)

    def attach(self, h0: jax.Array, batch: GlueBatch) -> tuple[jax.Array, jax.Array]:
        """Generator features [B, M, d] and attachment weights [B, M, S] (top-knn per sample)."""
        cfg = self.cfg
        mm = batch.member_mask
        hm = h0.reshape(mm.shape + h0.shape[-1:])  # [B, S, d] (slot layout)
        cnt = jnp.maximum(mm.sum(1, keepdims=True), 1)
        pooled = (hm * mm[..., None]).sum(1) / cnt
        g = self.generators[...][None] + self.gen_cond(pooled)[:, None, :]  # [B, M, d]
        sim = jnp.einsum("bma,bsa->bms", self.att_g(g), self.att_x(hm)) / np.sqrt(cfg.att_dim)
        w = jax.nn.sigmoid(sim)
        masked = jnp.where(mm[:, None, :], w, -1.0)
        kk = min(cfg.knn, masked.shape[-1])
        thr = jax.lax.top_k(masked, kk)[0][..., -1:]
        w = jnp.where((masked >= thr) & mm[:, None, :], w, 0.0)
        return g, w

    def encode(self, batch: GlueBatch, h0: jax.Array | None = None) -> GlueOutput:
        """Forward pass over one GlueBatch (h0 [B*S, d] overrides the input projection, e.g. adapters)."""
        if h0 is None:
            h0 = self.project(batch.x, batch.sample_domain)
        mm = batch.member_mask
        nb, s_cap = mm.shape
        m = self.cfg.num_generators
        g, w = self.attach(h0, batch)
        graph, ew = augmented_graph(batch.adj, mm, w.astype(h0.dtype))
        h_aug = jnp.concatenate([h0.reshape(nb, s_cap, -1), g.astype(h0.dtype)], axis=1)
        h, gate = self.backbone(h_aug.reshape(nb * (s_cap + m), -1), graph, ew)
        h = h.reshape(nb, s_cap + m, -1)
        hm, hg = h[:, :s_cap], h[:, s_cap:]
        mean = (hm * mm[..., None]).sum(1) / jnp.maximum(mm.sum(1, keepdims=True), 1)
        pool = self.cfg.pool
        z = mean if pool == "mean" else hm[:, 0] if pool == "center" else 0.5 * (mean + hm[:, 0])
        V = hg - z[:, None, :]
        Q, s, log_g = frames(V)
        if gate is not None:
            gate = gate.reshape(nb, s_cap + m, -1)[:, :s_cap]
        return GlueOutput(z=z, V=V, Q=Q, s=s, log_g=log_g, gate=gate)


# ----------------------------------------------------------------------------- losses


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    m = mask.astype(x.dtype)
    return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)


def _l2n(x: jax.Array) -> jax.Array:
    return x / _safe_norm(x)[..., None]


def locality_loss(out: GlueOutput, mask: jax.Array, *, tau: float) -> jax.Array:
    """Contrastive locality loss (papers.md §1.4a), masked: mean_{b,m} -log(pos/(neg+pos)).

    pos_bm = exp(-||n(z_b + e_bm) - n(z_b)||^2 / tau); neg_b sums exp(-||n(z_b') - n(z_b)||^2 / tau)
    over the other real samples. out.z [B, d], frame vectors e = s Q.
    """
    e = jnp.swapaxes(out.Q, -1, -2) * out.s[..., None]  # [B, M, d]
    nz = _l2n(out.z)
    pos = jnp.exp(-jnp.sum((_l2n(out.z[:, None] + e) - nz[:, None]) ** 2, -1) / tau)  # [B, M]
    d2 = jnp.sum((nz[:, None] - nz[None]) ** 2, -1)
    pair = mask[:, None] & mask[None, :] & ~jnp.eye(mask.shape[0], dtype=bool)
    neg = jnp.sum(jnp.where(pair, jnp.exp(-d2 / tau), 0.0), axis=1)  # [B]
    nll = -jnp.log(pos / (neg[:, None] + pos + EPS) + EPS)
    return _masked_mean(nll, jnp.broadcast_to(mask[:, None], nll.shape))


def prototype_loss(out: GlueOutput, domain: jax.Array, mask: jax.Array, protos: Prototypes, *,
                   tau: float) -> jax.Array:
    """CE(z @ P^T / tau, domain) against the (stop-gradient) EMA prototypes; domains whose
    prototype is not initialised yet are excluded from the softmax and the mean."""
    p, _, valid = protos.read()
    logits = out.z @ jax.lax.stop_gradient(p).T / tau
    logits = jnp.where(valid[None], logits, -1e9)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, domain[:, None], axis=1)[:, 0]
    return _masked_mean(nll, mask & valid[domain])


def sample_inputs(x: jax.Array, member_mask: jax.Array, *, how: str) -> jax.Array:
    """What a sample's embedding should keep of its inputs: x [B*S, F] (slot layout),
    member_mask [B, S] -> [B, F]: the centre node's input ("center", slot 0) or the mean
    input of the sample's nodes ("mean", i.e. the ego-subgraph-propagated input)."""
    nb, s_cap = member_mask.shape
    xs = x.reshape(nb, s_cap, -1)
    if how == "center":
        return xs[:, 0]
    if how != "mean":
        raise ValueError(f"text-align target must be 'mean' or 'center', got {how!r}")
    m = member_mask.astype(x.dtype)
    return (xs * m[..., None]).sum(1) / jnp.maximum(m.sum(1), 1.0)[:, None]


def text_align_loss(pred: jax.Array, target: jax.Array, mask: jax.Array, *, tau: float) -> jax.Array:
    """Input-preservation (text-alignment) loss: symmetric InfoNCE between the decoded
    sample embeddings pred [B, F] and their own inputs target [B, F] (stop-gradient),
    cosine similarities / tau, the other real samples of the batch as negatives.

    It asks the backbone output to identify its own sample's (neighbourhood) text among
    the batch's, so pretraining keeps, rather than narrows, the input semantics that
    few-shot heads need; 0 weight disables it (the ablation). Masked mean over samples.
    """
    return ops.info_nce(_l2n(pred), _l2n(jax.lax.stop_gradient(target)), scale=1.0 / tau, mask=mask)


def transport(Q_a: jax.Array, s_a: jax.Array, Q_b: jax.Array, s_b: jax.Array) -> jax.Array:
    """Frame-coordinate transport a -> b: diag(1/s_b) Q_b^T Q_a diag(s_a) -> [..., M, M].

    Q_*: [..., d, M] orthonormal frames; s_*: [..., M] frame lengths.
    """
    c = jnp.einsum("...dm,...dn->...mn", Q_b, Q_a)
    return c * s_a[..., None, :] / s_b[..., :, None]


def glue_loss(out: GlueOutput, paths: jax.Array, path_mask: jax.Array) -> dict[str, jax.Array]:
    """Gluing terms on 2-paths (i, j, k) [T, 3]: {"holonomy", "curvature"} (masked means).

    holonomy = mean ||T_{j->k} T_{i->j} - T_{i->k}||_F^2 / M (full-frame transport, see
    module docstring); curvature = mean_m (log g_i - 2 log g_j + log g_k)^2.
    """
    i, j, k = paths[:, 0], paths[:, 1], paths[:, 2]
    Q, s = out.Q, jnp.maximum(out.s, 1e-3)
    t_ij = transport(Q[i], s[i], Q[j], s[j])
    t_jk = transport(Q[j], s[j], Q[k], s[k])
    t_ik = transport(Q[i], s[i], Q[k], s[k])
    m = Q.shape[-1]
    hol = jnp.sum((t_jk @ t_ij - t_ik) ** 2, axis=(-2, -1)) / m
    lg = out.log_g
    curv = jnp.mean((lg[i] - 2.0 * lg[j] + lg[k]) ** 2, axis=-1)
    return {"holonomy": _masked_mean(hol, path_mask), "curvature": _masked_mean(curv, path_mask)}


def knn_paths(z: jax.Array, mask: jax.Array, domain: jax.Array, key: jax.Array, *, knn: int,
              num_paths: int, cross_domain: bool) -> tuple[jax.Array, jax.Array]:
    """2-paths on the kNN graph of z [B, d] (static shapes): (paths [T, 3] int32, valid [T] bool).

    The centre j is uniform over real samples; i != k are two of its ``knn`` nearest
    neighbours (other domains only when ``cross_domain``). z is stop-gradient here: paths
    are sampled, the loss is differentiated.
    """
    z = jax.lax.stop_gradient(z)
    b = z.shape[0]
    kk = max(min(knn, b - 1), 2)
    d2 = jnp.sum((z[:, None] - z[None]) ** 2, -1)
    ok = mask[:, None] & mask[None, :] & ~jnp.eye(b, dtype=bool)
    if cross_domain:
        ok &= domain[:, None] != domain[None, :]
    neg, nbr = jax.lax.top_k(jnp.where(ok, -d2, -jnp.inf), min(kk, b))
    nvalid = jnp.isfinite(neg)
    k1, k2, k3 = jax.random.split(key, 3)
    p = mask.astype(jnp.float32)
    j = jax.random.choice(k1, b, (num_paths,), p=p / jnp.maximum(p.sum(), 1.0))
    a = jax.random.randint(k2, (num_paths,), 0, nbr.shape[1])
    c = (a + jax.random.randint(k3, (num_paths,), 1, max(nbr.shape[1], 2))) % nbr.shape[1]
    i, k = nbr[j, a], nbr[j, c]
    valid = nvalid[j, a] & nvalid[j, c] & (a != c) & (p.sum() > 0)
    return jnp.stack([i, j, k], axis=1).astype(jnp.int32), valid


def transferability(holonomy: float, curvature: float) -> float:
    """The geometric transferability score GTM = dH + dC (lower = more consistent)."""
    return float(holonomy) + float(curvature)
