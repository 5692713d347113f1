"""Graph–text contrastive alignment (GraphShaper-style, our reconstruction) and its data prep.

Pipeline per text-attributed graph (TAG):

    t_i  = TextEncoder(node text)                         [N, D]  L2-normalised
    p_i  = propagate_text(t, hops)                        [N, D]  SGC-style k-hop average
    u    = MixtureEncoder([t, p], graph, descriptors)     [N, d]  gated experts fused in the
                                                                  tangent space at the origin
                                                                  (logmap0 of each expert's
                                                                  point, signed curvature k:
                                                                  k<0 hyperbolic, k>0
                                                                  spherical, k=0 flat)
    x_ih = normalize(S^h t)_i, h = 0..H                   [N, H+1, D] propagation depths
    c_i  = M [u_i, desc_i]                                [N, H+1] per-node depth weights
                                                                  (model.depth_mix)
    z_i  = normalize(b_i + sum_h c_ih x_ih + A b_i + W u_i)
                                                          [N, D]  residual over the base
                                                                  b = normalize(p): the graph
                                                                  model predicts a correction
                                                                  in the text space; A full or
                                                                  low-rank (model.adapter_rank),
                                                                  W optional (model.head)

The depth-mixing term is the structure-driven, label-space-free part: a node's own text
(h=0) for heterophilous pages, neighbours (h>=1) for homophilous citation graphs, decided
per node by the gated experts' fused representation and the structural descriptors. A and
W map into the text space directly and can overfit the sources' class prompts; which terms
to use is selected on held-out *sources* (`geofm.zero_shot.select_on_sources`). At
inference the correction can be shrunk towards the baseline by how well the sources'
label space covers the target's (`label_overlap` ** eval.overlap_power): a correction
learned on WebKB page types is trusted fully on another WebKB graph, little on arXiv topics.
eval.overlap_scope says what is shrunk: "all" (the whole correction) or "semantic" (only
the label-space terms A b + W u; the structural depth mixing, which names no label, stays
at full strength). The forward returns the three parts separately (`AlignOutput.base`,
`.structural`, `.semantic`), so any scale is applied without another forward (`compose`).

Losses on a batch of nodes of one source domain: a symmetric InfoNCE between z and the
node's own text embedding t (keeps z in the text space), plus a label-text term: cross
entropy of z against the domain's class-prompt embeddings (class name + description, several
templates averaged), both with learnable temperatures. Training mixes several source domains
(one full-graph forward per step on a domain drawn uniformly); the target dataset is never
seen. With `M`, `A`, `W` initialised to zero the untrained model *is* the text+propagation
baseline, so everything training adds is measured against it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, NamedTuple, Sequence, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp
from flax import nnx

from geofm import ops
from geofm.config import check_config, check_sequence, dump_config, from_dict, to_dict
from geofm.data.types import TAGDataset
from geofm.experts import MixtureEncoder
from geofm.graph import CSR, add_self_loops, build_csr, symmetrize
from geofm.structure import DESCRIPTOR_NAMES, fit_standardizer, node_descriptors, standardize

log = logging.getLogger("geofm.align")

__all__ = [
    "PromptConfig",
    "AlignModelConfig",
    "AlignLossConfig",
    "AlignTrainConfig",
    "EvalConfig",
    "AlignConfig",
    "DomainInputs",
    "GraphTextAligner",
    "AlignOutput",
    "OVERLAP_SCOPES",
    "check_scope",
    "compose",
    "TrainResult",
    "templates_for",
    "class_texts",
    "propagate_text",
    "propagate_with",
    "propagation_depths",
    "label_overlap",
    "prepare_domain",
    "build_aligner",
    "info_nce",
    "label_loss",
    "train_aligner",
    "sample_subgraph",
    "save_aligner",
    "load_aligner",
    "embed_nodes",
    "encode_classes",
    "encode_texts",
    "normalized_adjacency",
    "unit_rows",
    "config_from_dict",
    "config_to_dict",
]

DEFAULT_TEMPLATES: tuple[str, ...] = ("{name}: {description}", "{name}")
# what eval.overlap_power shrinks: the whole learned correction, or only its label-space terms
OverlapScope = Literal["all", "semantic"]
OVERLAP_SCOPES: tuple[str, ...] = get_args(OverlapScope)


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class PromptConfig:
    """Class-prompt templates. `templates` maps a dataset name or a word of its domain
    (e.g. "citation", "web") to a list of templates with `{name}` / `{description}`;
    the first key that matches wins, else `default`. A template that uses
    `{description}` falls back to the name alone when the class has no description."""

    templates: dict[str, list[str]] = field(default_factory=dict)
    default: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))


@dataclass(frozen=True)
class AlignModelConfig:
    """dim: expert width; experts: registry specs (geofm.experts); hops: propagation depth
    of the input/base p; residual: z = normalize(b + correction) (else normalize(correction));
    adapter: add a linear text-space map A b (zero-initialised), full D x D when
    adapter_rank == 0, else U V^T of that rank; head: add W u (fused expert output ->
    text space, zero-initialised); depth_mix: add sum_h c_ih normalize(S^h t)_i for
    h = 0..mix_hops with per-node c from a zero-initialised Linear on [u, descriptors]."""

    dim: int = 64
    experts: list[Any] = field(default_factory=lambda: ["hyperbolic", "spherical", "euclidean"])
    num_layers: int = 2
    aggregation: str = "midpoint"
    gate_hidden: int = 32
    dropout: float = 0.1
    hops: int = 2
    residual: bool = True
    adapter: bool = True
    adapter_rank: int = 0
    head: bool = True
    depth_mix: bool = False
    mix_hops: int = 3


@dataclass(frozen=True)
class AlignLossConfig:
    """self_weight / label_weight: weights of the node-text InfoNCE and the label-text CE;
    init_temperature for both (learnable when learn_temperature); class_balance p weights
    each labelled node by count(class)^-p (0 = plain CE, 1 = fully balanced)."""

    self_weight: float = 0.3
    label_weight: float = 1.0
    init_temperature: float = 0.05
    learn_temperature: bool = True
    class_balance: float = 0.5


@dataclass(frozen=True)
class AlignTrainConfig:
    """steps: optimizer steps (each on one source domain drawn uniformly); batch_nodes:
    loss nodes per step (all nodes of smaller domains). Sources with more than
    max_full_nodes nodes are trained on a fresh induced subgraph per step: the batch
    nodes plus random neighbours, subgraph_nodes nodes in all (padded, so one compile
    per edge bucket); their propagated inputs and descriptors come from the full graph."""

    steps: int = 300
    batch_nodes: int = 256
    max_full_nodes: int = 8192
    subgraph_nodes: int = 4096
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0


@dataclass(frozen=True)
class EvalConfig:
    """hops: propagation depth of the text+propagation baseline; few_shot_k: shots per class;
    few_shot_trials: random draws of the labelled nodes; overlap_power: at inference the
    learned correction is scaled by label_overlap(target classes, source classes) **
    overlap_power (0 = always full); overlap_scope: which part is scaled, "all" (everything
    added to the base b) or "semantic" (only A b + W u; the depth mixing stays full)."""

    hops: int = 2
    overlap_power: float = 0.0
    overlap_scope: OverlapScope = "all"
    few_shot_k: list[int] = field(default_factory=lambda: [1, 5])
    few_shot_trials: int = 5


@dataclass(frozen=True)
class AlignConfig:
    """The zero-shot alignment run (configs/zero_shot/*.yaml)."""

    seed: int = 0
    sources: list[str] = field(default_factory=list)
    data_dir: str | None = None
    text_model: str | None = None
    text_batch_size: int = 64
    prompts: PromptConfig = field(default_factory=PromptConfig)
    model: AlignModelConfig = field(default_factory=AlignModelConfig)
    loss: AlignLossConfig = field(default_factory=AlignLossConfig)
    train: AlignTrainConfig = field(default_factory=AlignTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ----------------------------------------------------------------------------- prompts


def templates_for(prompts: PromptConfig, *, name: str, domain: str) -> list[str]:
    """Templates for a dataset: first key of `prompts.templates` equal to its name or
    contained in its domain string (case-insensitive), else the default list."""
    low_name, low_domain = name.lower(), domain.lower()
    for key, temps in prompts.templates.items():
        k = key.lower()
        if k == low_name or (k and k in low_domain):
            return list(temps)
    return list(prompts.default)


def class_texts(names: Sequence[str], descriptions: Sequence[str], templates: Sequence[str]
                ) -> tuple[list[list[str]], int]:
    """Per class, one prompt per template -> (texts [C][T], #classes without a description).

    Templates are checked for unknown fields (ValueError naming the template). A class
    without a description uses its name alone wherever a template asks for `{description}`.
    """
    if not templates:
        raise ValueError("no class-prompt templates given")
    for t in templates:
        try:
            t.format(name="x", description="y")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"class-prompt template {t!r}: only {{name}} and {{description}} are "
                             f"allowed ({err!r})") from None
    if len(descriptions) != len(names):
        raise ValueError(f"{len(names)} class names but {len(descriptions)} descriptions")
    out, missing = [], 0
    for name, desc in zip(names, descriptions):
        desc = (desc or "").strip()
        missing += not desc
        row = []
        for t in templates:
            row.append(t.format(name=name, description=desc) if desc or "{description}" not in t
                       else t.replace("{description}", "{name}").format(name=name))
        out.append(row)
    return out, missing


def encode_classes(encoder: Any, prompts: list[list[str]], *, batch_size: int = 64) -> np.ndarray:
    """Prompt-ensemble class embeddings [C, D]: mean of each class's template embeddings,
    L2-normalised. `encoder` has `.encode(texts, batch_size=...)` -> [n, D]."""
    flat = [p for row in prompts for p in row]
    emb = np.asarray(encoder.encode(flat, batch_size=batch_size), np.float32)
    emb = emb.reshape(len(prompts), -1, emb.shape[-1]).mean(axis=1)
    return unit_rows(emb)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of x [N, D] scaled to unit L2 norm (zero rows stay zero), float32."""
    return _l2n(np.asarray(x)).astype(np.float32)


# ----------------------------------------------------------------------------- graph prep


def normalized_adjacency(edge_index: np.ndarray, num_nodes: int, *, norm: str = "sym") -> sp.csr_matrix:
    """Host-side propagation matrix of the symmetrised graph with self-loops [N, N]:
    "sym" = D^-1/2 (A+I) D^-1/2 (SGC), "mean" = D^-1 (A+I) (neighbourhood average)."""
    if norm not in ("sym", "mean"):
        raise ValueError(f"norm must be 'sym' or 'mean', got {norm!r}")
    ei = add_self_loops(symmetrize(edge_index, num_nodes), num_nodes)
    a = sp.csr_matrix((np.ones(ei.shape[1], np.float64), (ei[1], ei[0])), shape=(num_nodes, num_nodes))
    deg = np.asarray(a.sum(axis=1)).ravel()
    if norm == "mean":
        return (sp.diags(1.0 / deg) @ a).tocsr()
    inv = 1.0 / np.sqrt(deg)
    return (sp.diags(inv) @ a @ sp.diags(inv)).tocsr()


def propagate_text(x: np.ndarray, edge_index: np.ndarray, *, hops: int, norm: str = "sym") -> np.ndarray:
    """Parameter-free k-hop propagation S^hops x of node embeddings x [N, D] (S from
    `normalized_adjacency`), re-normalised to unit rows. hops=0 returns x normalised."""
    x = np.asarray(x, np.float32)
    return propagate_with(normalized_adjacency(edge_index, x.shape[0], norm=norm).astype(np.float32), x, hops=hops)


def propagate_with(s: Any, x: np.ndarray, *, hops: int) -> np.ndarray:
    """Unit rows of S^hops x for a prebuilt propagation matrix s [N, N] (sparse or dense) and
    x [N, D]: `propagate_text` without rebuilding S, for callers that propagate several inputs."""
    if hops < 0:
        raise ValueError(f"hops must be >= 0, got {hops}")
    x = np.asarray(x, np.float32)
    for _ in range(hops):
        x = s @ x
    return unit_rows(np.asarray(x))


@dataclass(frozen=True)
class DomainInputs:
    """Everything the aligner needs about one TAG, precomputed on the host.

    text [N, D], prop [N, D] unit rows; descriptors [N, F] standardised; csr/weights: the
    symmetrised graph with self-loops and its GCN weights [E]; labels [N] (-1 unknown);
    class_emb [C, D]; edge_index [2, E] as loaded; hops used for prop; counts of empty /
    truncated texts and classes without description; depths [N, H+1, D] unit rows
    normalize(S^h t) for h = 0..H (None when prepared with mix_hops=0).
    """

    name: str
    text: np.ndarray
    prop: np.ndarray
    descriptors: np.ndarray
    csr: CSR
    weights: jax.Array
    labels: np.ndarray
    class_emb: np.ndarray
    class_names: list[str]
    edge_index: np.ndarray
    hops: int
    n_empty: int = 0
    n_truncated: int = 0
    n_missing_descriptions: int = 0
    depths: np.ndarray | None = None

    @property
    def num_nodes(self) -> int:
        return int(self.text.shape[0])


def encode_texts(encoder: Any, texts: Sequence[str | None], *, batch_size: int = 64) -> tuple[np.ndarray, int, int]:
    """Node texts -> (embeddings [N, D], #empty or missing, #truncated). Missing (None)
    texts are embedded as ""; the counts come from the encoder's stats when it has them."""
    texts = ["" if t is None else t for t in texts]
    if hasattr(encoder, "encode_with_stats"):
        emb, stats = encoder.encode_with_stats(texts, batch_size=batch_size)
        return np.asarray(emb, np.float32), int(stats.n_empty), int(stats.n_truncated)
    emb = encoder.encode(texts, batch_size=batch_size)
    return np.asarray(emb, np.float32), sum(1 for t in texts if not t.strip()), 0


def propagation_depths(x: np.ndarray, edge_index: np.ndarray, *, max_hops: int, norm: str = "sym") -> np.ndarray:
    """Unit rows normalize(S^h x) for h = 0..max_hops -> [N, max_hops+1, D] float32
    (S from `normalized_adjacency`; each depth propagates the unnormalised previous one,
    so depth h equals `propagate_text(x, hops=h)`)."""
    if max_hops < 0:
        raise ValueError(f"max_hops must be >= 0, got {max_hops}")
    x = np.asarray(x, np.float32)
    s = normalized_adjacency(edge_index, x.shape[0], norm=norm).astype(np.float32)
    out = np.empty((x.shape[0], max_hops + 1, x.shape[1]), np.float32)
    for h in range(max_hops + 1):
        out[:, h] = unit_rows(x)
        if h < max_hops:
            x = np.asarray(s @ x)
    return out


def label_overlap(class_emb: np.ndarray, source_class_emb: np.ndarray) -> float:
    """How much a target's label space is covered by the training sources' labels:
    mean over target classes [C, D] of the best cosine to any source class prompt [K, D]
    (unit rows), clipped to [0, 1]. 1 = every target class is (nearly) a source class;
    ~0.2 for unrelated label spaces (WebKB page types vs paper topics)."""
    c, s = np.asarray(class_emb, np.float32), np.asarray(source_class_emb, np.float32)
    if c.ndim != 2 or s.ndim != 2 or c.shape[1] != s.shape[1] or not len(c) or not len(s):
        raise ValueError(f"label_overlap: need [C, D] and [K, D] with C, K >= 1, got {c.shape} and {s.shape}")
    return float(np.clip((c @ s.T).max(axis=1).mean(), 0.0, 1.0))


def prepare_domain(ds: TAGDataset, encoder: Any, prompts: PromptConfig, *, hops: int,
                   batch_size: int = 64, mix_hops: int = 0) -> DomainInputs:
    """Encode a TAG's node texts and class prompts, propagate, build CSR + descriptors;
    mix_hops > 0 also stores the propagation depths 0..mix_hops (model.depth_mix)."""
    if ds.num_nodes < 1:
        raise ValueError(f"dataset {ds.name!r} has no nodes")
    if len(ds.texts) != ds.num_nodes:
        raise ValueError(f"dataset {ds.name!r}: {len(ds.texts)} texts for {ds.num_nodes} nodes")
    text, n_empty, n_trunc = encode_texts(encoder, ds.texts, batch_size=batch_size)
    if n_empty:
        log.warning("%s: %d node(s) with empty or missing text (embedded as \"\")", ds.name, n_empty)
    if n_trunc:
        log.info("%s: %d node text(s) truncated to the text model's max length", ds.name, n_trunc)
    temps = templates_for(prompts, name=ds.name, domain=ds.domain)
    prompt_rows, missing = class_texts(ds.class_names, ds.class_descriptions, temps)
    if missing:
        log.warning("%s: %d class(es) without a description in labels.json: prompts use the name",
                    ds.name, missing)
    class_emb = encode_classes(encoder, prompt_rows, batch_size=batch_size)
    n = ds.num_nodes
    ei = np.asarray(ds.edge_index, np.int64).reshape(2, -1)
    depths = propagation_depths(text, ei, max_hops=mix_hops) if mix_hops > 0 else None
    # depth h of `depths` is propagate_text(hops=h): reuse it instead of propagating twice
    prop = depths[:, hops].copy() if depths is not None and hops <= mix_hops else propagate_text(text, ei, hops=hops)
    desc = node_descriptors(ei, n)
    desc = standardize(desc, fit_standardizer(desc))
    full = add_self_loops(symmetrize(ei, n), n)
    csr = build_csr(full[0], full[1], n, static_shapes=False)
    return DomainInputs(name=ds.name, text=text, prop=prop, descriptors=np.nan_to_num(desc), csr=csr,
                        weights=ops.gcn_norm(csr), labels=np.asarray(ds.labels, np.int32),
                        class_emb=class_emb, class_names=list(ds.class_names), edge_index=ei, hops=hops,
                        n_empty=n_empty,
                        n_truncated=n_trunc, n_missing_descriptions=missing, depths=depths)


# ----------------------------------------------------------------------------- model


class AlignOutput(NamedTuple):
    """embedding [N, D] unit rows in the text space (= compose(self) at the scale it was
    asked for); gate [N, E] expert weights; tangent [N, d] fused tangent vector at the
    origin; ks [E] expert curvatures; the unnormalised parts of z, each [N, D]: base b (the
    propagated text; zeros when model.residual is off), structural (the depth-mixing term,
    zeros without model.depth_mix) and semantic (A b + W u, zeros without adapter and head)."""

    embedding: jax.Array
    gate: jax.Array
    tangent: jax.Array
    ks: jax.Array
    base: jax.Array
    structural: jax.Array
    semantic: jax.Array


def _l2n(x: Any) -> Any:
    """Unit rows of x [..., D] (numpy or JAX; zero rows stay zero)."""
    xp = jnp if isinstance(x, jax.Array) else np
    return x / xp.sqrt(xp.maximum(xp.sum(x * x, axis=-1, keepdims=True), 1e-24))


def check_scope(scope: str) -> None:
    """ValueError unless `scope` is one of OVERLAP_SCOPES (the eval.overlap_scope values)."""
    if scope not in OVERLAP_SCOPES:
        raise ValueError(f"eval.overlap_scope must be one of {list(OVERLAP_SCOPES)}, got {scope!r}")


def compose(out: AlignOutput, *, scale: float | jax.Array = 1.0, scope: str = "all") -> Any:
    """z = normalize(base + s_struct * structural + s_sem * semantic) [N, D] from the parts
    of one forward: scope "all" scales both terms by `scale`, "semantic" only the semantic
    one. scale 0 with scope "all" gives the text+propagation baseline (residual models).
    numpy in, numpy out (host-side rescoring without another forward); JAX in, JAX out."""
    check_scope(scope)
    s_struct = scale if scope == "all" else 1.0
    return _l2n(out.base + s_struct * out.structural + scale * out.semantic)


class GraphTextAligner(nnx.Module):
    """Gated mixed-geometry graph encoder projected into the text space.

    Inputs per graph: text [N, D] and prop [N, D] unit rows, csr + GCN weights [E],
    descriptors [N, F], depths [N, H+1, D] (used only with cfg.depth_mix, H = cfg.mix_hops).
    Output `AlignOutput`. All parameters are Euclidean (plain optax): the experts'
    curvatures are sign-constrained raw scalars (geofm.nn.curvature), the fused
    representation is a tangent vector at the origin, so the head, the depth mixer and the
    adapter are plain Linear maps, all zero-initialised on the path into z (untrained model
    = text+propagation baseline). Temperatures are stored as log inverse temperatures.
    """

    def __init__(self, text_dim: int, cfg: AlignModelConfig, *, descriptor_dim: int,
                 init_temperature: float = 0.05, rngs: nnx.Rngs):
        if text_dim < 1 or cfg.dim < 1:
            raise ValueError(f"text_dim and model.dim must be >= 1, got {text_dim}, {cfg.dim}")
        if not 0 < init_temperature < 10:
            raise ValueError(f"loss.init_temperature must be in (0, 10), got {init_temperature}")
        if cfg.adapter_rank < 0 or cfg.adapter_rank >= text_dim:
            raise ValueError(f"model.adapter_rank must be 0 (full) or in [1, {text_dim - 1}], got {cfg.adapter_rank}")
        if cfg.depth_mix and cfg.mix_hops < 1:
            raise ValueError(f"model.mix_hops must be >= 1 with model.depth_mix, got {cfg.mix_hops}")
        if not cfg.residual and not cfg.head:
            raise ValueError("model.residual: false needs model.head: true (z would not depend on the graph)")
        self.residual, self.use_adapter, self.text_dim = cfg.residual, cfg.adapter, int(text_dim)
        self.num_depths = cfg.mix_hops + 1 if cfg.depth_mix else 0
        self.encoder = MixtureEncoder(2 * text_dim, cfg.dim, experts=list(cfg.experts),
                                      descriptor_dim=descriptor_dim, gate_hidden=cfg.gate_hidden,
                                      num_layers=cfg.num_layers, aggregation=cfg.aggregation,
                                      dropout=cfg.dropout, rngs=rngs)
        zeros = nnx.initializers.zeros_init()
        init = zeros if cfg.residual else nnx.initializers.lecun_normal()
        self.head = nnx.Linear(cfg.dim, text_dim, kernel_init=init, rngs=rngs) if cfg.head else None
        low_rank = cfg.adapter and cfg.adapter_rank > 0
        # low rank: A = U V^T with V random and U zero, so A starts at 0
        self.adapter_in = (nnx.Linear(text_dim, cfg.adapter_rank, use_bias=False, rngs=rngs) if low_rank else None)
        self.adapter = (nnx.Linear(cfg.adapter_rank if low_rank else text_dim, text_dim, use_bias=False,
                                   kernel_init=zeros, rngs=rngs) if cfg.adapter else None)
        self.mixer = (nnx.Linear(cfg.dim + descriptor_dim, self.num_depths, kernel_init=zeros, rngs=rngs)
                      if self.num_depths else None)
        s = math.log(1.0 / init_temperature)
        self.log_scale_self = nnx.Param(jnp.asarray(s, jnp.float32))
        self.log_scale_label = nnx.Param(jnp.asarray(s, jnp.float32))

    def __call__(self, text: jax.Array, prop: jax.Array, csr: CSR, weights: jax.Array,
                 descriptors: jax.Array, depths: jax.Array | None = None) -> AlignOutput:
        """Full-strength forward (correction scale 1); `compose` rescales its parts."""
        out = self.encoder(jnp.concatenate([text, prop], axis=-1), csr, weights, descriptors)
        semantic = jnp.zeros_like(prop)
        if self.head is not None:
            semantic = semantic + self.head(out.fused)
        if self.adapter is not None:
            semantic = semantic + self.adapter(prop if self.adapter_in is None else self.adapter_in(prop))
        structural = jnp.zeros_like(prop)
        if self.mixer is not None:
            if depths is None or depths.ndim != 3 or depths.shape[1] < self.num_depths:
                got = None if depths is None else tuple(depths.shape)
                raise ValueError(f"model.depth_mix needs depths [N, >={self.num_depths}, D] (prepare the domain "
                                 f"with mix_hops >= {self.num_depths - 1}), got {got}")
            c = self.mixer(jnp.concatenate([out.fused, descriptors], axis=-1))
            structural = jnp.einsum("nh,nhd->nd", c, depths[:, : self.num_depths])
        base = prop if self.residual else jnp.zeros_like(prop)
        z = _l2n(base + structural + semantic)
        return AlignOutput(z, out.weights, out.fused, out.ks, base, structural, semantic)

    def scales(self) -> tuple[jax.Array, jax.Array]:
        """Inverse temperatures (self, label), clipped to [1, 100]."""
        return (jnp.exp(jnp.clip(self.log_scale_self[...], 0.0, math.log(100.0))),
                jnp.exp(jnp.clip(self.log_scale_label[...], 0.0, math.log(100.0))))


def build_aligner(cfg: AlignConfig, *, text_dim: int) -> GraphTextAligner:
    """A fresh aligner for `cfg` (parameters from cfg.seed)."""
    return GraphTextAligner(text_dim, cfg.model, descriptor_dim=len(DESCRIPTOR_NAMES),
                            init_temperature=cfg.loss.init_temperature, rngs=nnx.Rngs(cfg.seed))


# ----------------------------------------------------------------------------- losses


info_nce = ops.info_nce  # symmetric InfoNCE of paired unit rows (shared with GraphGlue's text-align term)


def label_loss(z: jax.Array, class_emb: jax.Array, labels: jax.Array, weights: jax.Array, *,
               scale: jax.Array) -> jax.Array:
    """Weighted CE of node embeddings z [B, D] against class prompts class_emb [C, D].
    labels [B] (entries < 0 ignored); weights [B] >= 0 per node."""
    w = jnp.where(labels >= 0, weights, 0.0)
    ce = optax.softmax_cross_entropy_with_integer_labels(scale * (z @ class_emb.T), jnp.maximum(labels, 0))
    return jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-12)


class TrainResult(NamedTuple):
    """losses: per-step total loss; domains: domain index of each step; compiles: number
    of distinct step shapes compiled (one per source domain)."""

    losses: list[float]
    domains: list[int]
    compiles: int


def _class_weights(labels: np.ndarray, num_classes: int, power: float) -> np.ndarray:
    counts = np.bincount(labels[labels >= 0], minlength=num_classes).astype(np.float64)
    w = np.where(labels >= 0, np.maximum(counts[np.maximum(labels, 0)], 1.0) ** (-power), 0.0)
    return (w / max(w[labels >= 0].mean() if (labels >= 0).any() else 1.0, 1e-12)).astype(np.float32)


def sample_subgraph(d: DomainInputs, adj: sp.csr_matrix, centres: np.ndarray, rng: np.random.Generator, *,
                    max_nodes: int) -> dict[str, Any]:
    """Device inputs of the subgraph induced by `centres` [B] (listed first, so their
    positions are 0..B-1) plus random neighbours, padded to `max_nodes` nodes; edges
    (adj [N, N] with self-loops) padded to a power-of-two bucket and masked."""
    from geofm.graph import next_bucket

    b = centres.size
    if b > max_nodes:
        raise ValueError(f"train.subgraph_nodes={max_nodes} must be >= train.batch_nodes={b}")
    neigh = np.unique(adj[centres].indices)
    neigh = neigh[~np.isin(neigh, centres)]
    room = max_nodes - b
    if neigh.size > room:
        neigh = np.sort(rng.choice(neigh, size=room, replace=False))
    nodes = np.concatenate([centres, neigh]).astype(np.int64)
    sub = adj[nodes][:, nodes].tocoo()
    e = sub.nnz
    cap = next_bucket(e, minimum=1024)
    snd = np.zeros(cap, np.int32)
    rcv = np.zeros(cap, np.int32)
    snd[:e], rcv[:e] = sub.col, sub.row
    mask = np.arange(cap) < e
    csr = build_csr(snd, rcv, max_nodes, edge_mask=mask, static_shapes=True)

    def pad(x: np.ndarray) -> jax.Array:
        out = np.zeros((max_nodes,) + x.shape[1:], np.float32)
        out[: nodes.size] = x[nodes]
        return jnp.asarray(out)

    return {"text": pad(d.text), "prop": pad(d.prop), "desc": pad(d.descriptors), "csr": csr,
            "w": ops.gcn_norm(csr), "cls": jnp.asarray(d.class_emb), "depths": pad(_depths(d))}


def _adjacency_with_loops(d: DomainInputs) -> sp.csr_matrix:
    full = add_self_loops(symmetrize(d.edge_index, d.num_nodes), d.num_nodes)
    return sp.csr_matrix((np.ones(full.shape[1], np.float32), (full[1], full[0])), shape=(d.num_nodes, d.num_nodes))


def _depths(d: DomainInputs) -> np.ndarray:
    """The domain's propagation depths, or the bare text [N, 1, D] when it has none."""
    return d.depths if d.depths is not None else d.text[:, None, :]


def check_text_dim(model: GraphTextAligner, d: DomainInputs) -> None:
    """ValueError when the domain's text embeddings are not as wide as the aligner's text space."""
    if d.text.ndim != 2 or d.text.shape[1] != model.text_dim:
        raise ValueError(f"domain {d.name!r}: text embeddings of shape {tuple(d.text.shape)} do not match the "
                         f"aligner's text_dim {model.text_dim} (built for another text encoder?)")


def _device_domain(d: DomainInputs) -> dict[str, Any]:
    return {"text": jnp.asarray(d.text), "prop": jnp.asarray(d.prop), "desc": jnp.asarray(d.descriptors),
            "csr": d.csr, "w": d.weights, "cls": jnp.asarray(d.class_emb), "depths": jnp.asarray(_depths(d))}


def _loss(m: GraphTextAligner, g: dict[str, Any], idx: jax.Array, labels: jax.Array, w: jax.Array,
          coef: dict[str, jax.Array]) -> jax.Array:
    out = m(g["text"], g["prop"], g["csr"], g["w"], g["desc"], g["depths"])
    z = out.embedding[idx]
    s_self, s_label = m.scales()
    s_self = jnp.where(coef["learn_t"], s_self, jax.lax.stop_gradient(s_self))
    s_label = jnp.where(coef["learn_t"], s_label, jax.lax.stop_gradient(s_label))
    total = coef["self"] * info_nce(z, g["text"][idx], scale=s_self)
    return total + coef["label"] * label_loss(z, g["cls"], labels, w, scale=s_label)


@nnx.jit
def _train_step(m: GraphTextAligner, o: nnx.Optimizer, g: dict[str, Any], idx: jax.Array, labels: jax.Array,
                w: jax.Array, coef: dict[str, jax.Array]) -> jax.Array:
    """One AdamW step; module-level so runs with the same model config and graph shapes
    (other seeds, other targets sharing a source) reuse the compiled executable."""
    loss, grads = nnx.value_and_grad(_loss)(m, g, idx, labels, w, coef)
    o.update(m, grads)
    return loss


@functools.lru_cache(maxsize=16)
def _optimizer(lr: float, weight_decay: float, grad_clip: float) -> optax.GradientTransformation:
    """AdamW (+ global-norm clipping), one object per setting: the optimizer's graphdef
    then compares equal across runs, so the jitted step is not recompiled."""
    tx = optax.adamw(lr, weight_decay=weight_decay)
    return optax.chain(optax.clip_by_global_norm(grad_clip), tx) if grad_clip > 0 else tx


def _step_compiles() -> int:
    """Executables compiled so far by the shared train step."""
    return int(_train_step.jitted_fn._cache_size())


def train_aligner(model: GraphTextAligner, domains: Sequence[DomainInputs], cfg: AlignConfig, *,
                  progress: bool = False, callback: Callable[[int, GraphTextAligner], None] | None = None,
                  callback_steps: Sequence[int] = ()) -> TrainResult:
    """Multi-domain contrastive training, in place. Each step draws a source domain
    uniformly (seeded numpy Generator), `batch_nodes` of its nodes without replacement
    (all of them for smaller graphs), runs the full-graph forward (an induced subgraph
    around the batch for sources above train.max_full_nodes, see `sample_subgraph`) and
    takes one AdamW step on self_weight * InfoNCE(z, t) + label_weight * CE(z, class prompts).
    `callback(step, model)` runs after each step listed in callback_steps (1-based; e.g.
    to score a held-out source for early stopping), the model back in train mode after it.
    Returns losses, the domain of each step and how many step executables were compiled."""
    check_config(cfg, AlignConfig, "train_aligner")
    domains = check_sequence(domains, "train_aligner domains", DomainInputs)
    if not domains:
        raise ValueError("train_aligner needs at least one source domain")
    for d in domains:
        check_text_dim(model, d)
    tc, lc = cfg.train, cfg.loss
    if tc.steps < 0 or tc.batch_nodes < 2:
        raise ValueError(f"train.steps must be >= 0 and train.batch_nodes >= 2, got {tc.steps}, {tc.batch_nodes}")
    opt = nnx.Optimizer(model, _optimizer(tc.lr, tc.weight_decay, tc.grad_clip or 0.0), wrt=nnx.Param)
    big = [d.num_nodes > tc.max_full_nodes for d in domains]
    dev = [None if b else _device_domain(d) for d, b in zip(domains, big)]
    adj = [_adjacency_with_loops(d) if b else None for d, b in zip(domains, big)]
    cw = [_class_weights(d.labels, d.class_emb.shape[0], lc.class_balance) for d in domains]
    coef = {"self": jnp.float32(lc.self_weight), "label": jnp.float32(lc.label_weight),
            "learn_t": jnp.asarray(lc.learn_temperature)}
    before = _step_compiles()
    rng = np.random.default_rng(cfg.seed)
    model.train()
    losses, picked = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.steps, desc="align", leave=False)
    at = set(int(s) for s in callback_steps)
    for step in range(1, tc.steps + 1):
        k = int(rng.integers(len(domains)))
        d = domains[k]
        b = min(tc.batch_nodes, d.num_nodes)
        idx = np.sort(rng.choice(d.num_nodes, size=b, replace=False)).astype(np.int32)
        if big[k]:
            g, pos = sample_subgraph(d, adj[k], idx, rng, max_nodes=tc.subgraph_nodes), np.arange(b, dtype=np.int32)
        else:
            g, pos = dev[k], idx
        loss = _train_step(model, opt, g, jnp.asarray(pos), jnp.asarray(d.labels[idx]),
                           jnp.asarray(cw[k][idx]), coef)
        losses.append(float(loss))
        picked.append(k)
        if callback is not None and step in at:
            callback(step, model)
            model.train()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", domain=d.name)
    if bar is not None:
        bar.close()
    model.eval()
    bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"alignment loss is not finite at step {bad[0]} (domain {domains[picked[bad[0]]].name})")
    return TrainResult(losses, picked, _step_compiles() - before)


def embed_nodes(model: GraphTextAligner, d: DomainInputs, *, correction_scale: float = 1.0,
                scope: str = "all") -> AlignOutput:
    """Frozen forward on a whole graph (eval mode, no dropout) -> AlignOutput as numpy
    arrays, its embedding composed with `correction_scale` on `scope` (see `compose`;
    1 = as trained, 0 with scope "all" = the text+propagation baseline). The parts stay
    unscaled, so `compose(out, scale=..., scope=...)` rescores other scales for free."""
    check_scope(scope)
    check_text_dim(model, d)
    model.eval()
    out = AlignOutput(*(np.asarray(a) for a in _embed(model, _device_domain(d))))
    if correction_scale == 1.0:
        return out
    return out._replace(embedding=compose(out, scale=np.float32(correction_scale), scope=scope))


@nnx.jit
def _embed(model: GraphTextAligner, g: dict[str, Any]) -> AlignOutput:
    return model(g["text"], g["prop"], g["csr"], g["w"], g["desc"], g["depths"])


# ----------------------------------------------------------------------------- persistence


CHECKPOINT_DIR = "checkpoints"
SOURCE_CLASSES = "source_classes.npy"


def save_aligner(run: str | Path, model: GraphTextAligner, cfg: AlignConfig, *, text_dim: int,
                 info: dict[str, Any] | None = None, source_class_emb: np.ndarray | None = None) -> Path:
    """Write run/config.yaml, run/aligner.json (text_dim, sources, info), the parameters
    (orbax, run/checkpoints) and, when given, the sources' class-prompt embeddings [K, D]
    (run/source_classes.npy, for `label_overlap`). Returns the run folder."""
    from geofm.checkpoint import Checkpointer
    from geofm.data.cache import atomic_write_bytes, atomic_write_text

    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / "config.yaml", dump_config(cfg))
    meta = {"text_dim": int(text_dim), "sources": list(cfg.sources), **(info or {})}
    atomic_write_text(run / "aligner.json", json.dumps(meta, indent=1, default=str))
    if source_class_emb is not None:
        emb = np.asarray(source_class_emb, np.float32)
        atomic_write_bytes(run / SOURCE_CLASSES, lambda f: np.save(f, emb))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    with Checkpointer(run / CHECKPOINT_DIR, metric="final_loss", mode="min", metadata=meta) as ck:
        ck.save(0, params, metrics={"final_loss": float((info or {}).get("final_loss", math.nan))})
    return run


def load_aligner(run: str | Path) -> tuple[GraphTextAligner, AlignConfig, dict[str, Any]]:
    """Rebuild and restore a frozen aligner from a run folder written by `save_aligner`;
    meta["source_class_emb"] holds the sources' class prompts [K, D] when saved (else None).

    ValueError naming the missing file when the folder is not such a run."""
    from geofm.checkpoint import Checkpointer
    from geofm.config import load_config

    run = Path(run)
    for name in ("config.yaml", "aligner.json", CHECKPOINT_DIR):
        if not (run / name).exists():
            raise ValueError(f"{run} is not an alignment run folder: missing {name} "
                             f"(train one with `geofm zero-shot --config configs/zero_shot/<...>.yaml --out RUN`)")
    cfg = load_config(run / "config.yaml", AlignConfig)
    try:
        meta = json.loads((run / "aligner.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{run / 'aligner.json'}:{err.lineno}: invalid JSON: {err.msg}") from None
    model = build_aligner(cfg, text_dim=int(meta["text_dim"]))
    state = nnx.state(model, nnx.Param)
    with Checkpointer(run / CHECKPOINT_DIR, metric="final_loss", mode="min") as ck:
        params, _ = ck.restore(nnx.to_pure_dict(state))
    nnx.replace_by_pure_dict(state, params)
    nnx.update(model, state)
    model.eval()
    meta["source_class_emb"] = np.load(run / SOURCE_CLASSES) if (run / SOURCE_CLASSES).exists() else None
    return model, cfg, meta


def config_from_dict(data: dict[str, Any]) -> AlignConfig:
    """Validate a raw mapping into `AlignConfig` (tests, programmatic use)."""
    return from_dict(AlignConfig, data)


def config_to_dict(cfg: AlignConfig) -> dict[str, Any]:
    return to_dict(cfg)
