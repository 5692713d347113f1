"""Few-shot adaptation of a pretrained GraphGlue model (frozen foundation model).

The foundation model is frozen, INCLUDING its input map: target inputs enter through the
mean of the pretrained per-domain input projections (all text domains share the MiniLM
space, so this is the pretrained map; learning a fresh 384 x d projection from 7-35
labelled nodes over-fits). Every target node is therefore embedded ONCE
(`embed_frozen`: z [N, d], tangent vectors V [N, M, d]), and adaptation trains a small
head on those cached features: fast enough for 5 splits x a validation-selected grid.

Head (`AdapterHead`, papers.md §1.7 with our fixes and additions), logits [B, C] =
  backbone part: linear map of [z', log g', mixed log-metric] where z' = z W, V' = V W
      (W orthogonally initialised), frames/metric re-derived from V' (QR), and the
      Riemannian mixture of domain prototypes w = softmax(MLP(z')), mixed log-metric
      w @ log G_proto (the log-Euclidean mean); inputs standardised with constants from
      the unlabelled target nodes;
  text part (skip connection): propagated target inputs P = S^hops x (unit rows; S the
      symmetric-normalised adjacency with self-loops) times a map initialised from the
      class-prompt embeddings of the target's class names/descriptions through the text
      encoder (the zero-shot prior), L2-regularised TOWARD that prior, so few-shot
      training refines it rather than replacing it;
  decoder prior (optional, ``AdapterSpec.decoder_prior``; text domains only): the backbone
      part also reads the frozen model's outputs decoded back into its INPUT space (the
      column-z-scored, fixed-projected ``in_dim`` space of `geofm.features.project_features`;
      the text space itself only when in_dim = 384 and the projection is the identity) by the
      text-alignment decoder, propagated like the skip, through a map initialised at the class
      prompts mapped into that same space: zero-shot-initialised prototypes that only a
      pretrained decoder makes meaningful (`decoder_features`);
Loss = CE + weight_decay ||head||^2 + text_decay (||text - prior||^2 + ||dec - dec_prior||^2)
+ glue_weight * (holonomy + curvature) on 2-paths of the training batch's kNN graph (the
adaptation gluing loss).
After training, optional label propagation of the predicted class probabilities over the
target graph (train nodes clamped to their labels): Y <- (1-a) Y0 + a S Y.

Model selection never looks at test labels: per split, the weight decay and the
propagation strength a are picked on that split's validation nodes, with early stopping
on validation accuracy. `AdapterSpec` switches the parts on/off (the bench ablations):
``backbone=False`` is a text-only head (no foundation-model graph features at all).

k-shot protocol: per split, k labelled nodes per class for training, ``val_fraction``
of the remaining labelled nodes for validation, the rest for testing (optionally
capped at ``max_test``, noted in the result); mean ± std over splits. The
transferability score GTM = holonomy + curvature of the frozen model on real-graph
2-paths of the target is computed before any fine-tuning.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp
from scipy.special import softmax
from flax import nnx

from geofm.align import normalized_adjacency, propagate_with, unit_rows
from geofm.features import zscore_columns
from geofm.glue import GlueBatch, GlueModel, GlueOutput, build_glue_batch, frames, glue_loss, knn_paths

log = logging.getLogger("geofm.adapt")

__all__ = [
    "AdapterSpec", "TargetFeatures", "AdapterHead", "kshot_splits", "embed_frozen", "target_features",
    "label_propagation", "pseudo_labels", "fit_head", "adapt_split", "run_kshot", "restrict", "effective_rank",
    "adapt_kshot", "transferability_score", "format_table", "decoder_features", "VARIANTS",
]


@dataclass(frozen=True)
class AdapterSpec:
    """Which parts the adapter uses (defaults: everything) and the validation grids.

    backbone: head on the frozen GraphGlue features [z', log g', mixed prototype metric];
    text_skip: head on the propagated target inputs (``hops`` propagation steps);
    prompt_prior: initialise (and regularise) the text part at the class-prompt embeddings
    (text domains only); text_decay: L2 pull of the text part (``AdapterHead.text``) AND of
    the decoder-prior map (``AdapterHead.dec``) toward their prompt initialisations;
    weight_decays (L2 on the backbone head) / label_prop (alphas, 0 = off): candidates
    chosen per split on the validation nodes; self_train: pseudo-labels per class for one
    round of self-training (0 = off; kept only when it raises validation accuracy);
    text_fallback: also try the head WITHOUT the backbone part as one more validation
    candidate (the split keeps the backbone only where it raises validation accuracy);
    fusion: late-fusion weights beta in [0, 1] (more validation candidates): a
    backbone-only head and the text-only head trained separately, probabilities mixed
    (1 - beta) p_text + beta p_backbone (empty = off; beta 0 is the text-only head, so the
    split falls back to it when the backbone does not help on validation);
    decoder_prior: the backbone part also reads the frozen model's DECODED outputs (its
    text-alignment decoder maps z back into the model's input space: the projected, column
    z-scored ``in_dim`` space, which equals the text space only when in_dim = 384 with the
    identity projection; propagated like the skip, unit rows), through a map initialised at
    (and L2-pulled toward) the class-prompt embeddings mapped into that same space:
    zero-shot-initialised class prototypes on the backbone side. Needs ``backbone`` and
    ``prompt_prior`` on and a text domain with class names (`target_features` raises
    otherwise). Only a model whose decoder was trained (text-alignment term) makes that prior
    meaningful; a random one decodes noise.
    """

    backbone: bool = True
    text_skip: bool = True
    prompt_prior: bool = True
    hops: int = 2
    prior_scale: float = 20.0
    text_decay: float = 1e-3
    weight_decays: tuple[float, ...] = (1e-2, 1e-1, 1.0)
    label_prop: tuple[float, ...] = (0.0, 0.5, 0.8, 0.9, 0.95)
    self_train: int = 10
    text_fallback: bool = False
    fusion: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    decoder_prior: bool = False

    def __post_init__(self):
        if not (self.backbone or self.text_skip):
            raise ValueError("AdapterSpec: at least one of backbone / text_skip must be on")
        if self.hops < 0 or not self.weight_decays or not self.label_prop:
            raise ValueError("AdapterSpec: hops >= 0 and non-empty weight_decays / label_prop grids needed")
        if any(not 0.0 <= a < 1.0 for a in self.label_prop):
            raise ValueError(f"AdapterSpec.label_prop alphas must be in [0, 1), got {self.label_prop}")
        if any(not 0.0 <= b <= 1.0 for b in self.fusion):
            raise ValueError(f"AdapterSpec.fusion betas must be in [0, 1], got {self.fusion}")
        if self.decoder_prior and not (self.backbone and self.prompt_prior):
            raise ValueError("AdapterSpec.decoder_prior needs backbone=True and prompt_prior=True (it is a "
                             "class-prompt-initialised map on the backbone's decoded outputs)")


# The adapter variants of `geofm adapt --variant` and bench/pretrain_kshot.py (ONE
# table: the README's k-shot columns come from the bench, the CLI reproduces them).
VARIANTS: dict[str, AdapterSpec] = {
    # head: linear head on the frozen backbone's features only
    "graphglue_head": AdapterSpec(text_skip=False, label_prop=(0.0,), self_train=0, weight_decays=(1e-2, 1e-1, 1.0)),
    # full (the README's k-shot column; AdapterSpec() -- what `geofm demo`, `pretrain --adapt` and
    # bench/scaling_law.py use -- is the same adapter with weight decay 1e-2 added to the validation grid):
    # + propagated-text skip at the class prompts (joint or late fusion)
    # + label propagation + one self-training round
    "full": AdapterSpec(weight_decays=(1e-1, 1.0), fusion=(0.0, 0.25, 0.5, 0.75)),
    # text_only: no backbone at all (text encoder + prompts + graph smoothing)
    "text_only": AdapterSpec(backbone=False),
    # prompt: graphglue_head + the decoder prior, no raw-text skip
    "backbone_prompt": AdapterSpec(text_skip=False, label_prop=(0.0,), self_train=0, weight_decays=(1e-2, 1e-1, 1.0),
                                   decoder_prior=True),
    # prompt+LP: backbone_prompt + label propagation + self-training
    "backbone_full": AdapterSpec(text_skip=False, weight_decays=(1e-2, 1e-1, 1.0), decoder_prior=True),
}


class TargetFeatures(NamedTuple):
    """Cached inputs of the head for all N target nodes (host numpy).

    z [N, d] standardised frozen sample points; V [N, M, d] frozen tangent vectors (scaled
    by the same per-column std as z); lg_mu, lg_sd: scalars standardising log-metrics;
    skip [N, F] unit rows (propagated inputs; F = 1 zeros when off); prior [F, C] text
    prior (zeros when off); adj: [N, N] propagation matrix S (scipy CSR); dec [N, in_dim]
    unit rows of the propagated decoded backbone outputs in the model's input space and
    dec_prior [in_dim, C] the class prompts mapped into that space (None = off: no decoder
    prior).
    """

    z: np.ndarray
    V: np.ndarray
    lg_mu: float
    lg_sd: float
    skip: np.ndarray
    prior: np.ndarray
    adj: Any
    dec: np.ndarray | None = None
    dec_prior: np.ndarray | None = None


def _dec_parts(f: TargetFeatures) -> tuple[np.ndarray, np.ndarray]:
    """(dec [N, F'], dec_prior [F', C]) with a zero [N, 1] / [1, C] pair when off."""
    if f.dec is None or f.dec_prior is None:
        return np.zeros((f.z.shape[0], 1), np.float32), np.zeros((1, f.prior.shape[1]), np.float32)
    return f.dec, f.dec_prior


class AdapterHead(nnx.Module):
    """Trainable adaptation parameters: W [d, d] (orthogonal init), prototype router
    (router1, router2), backbone head ``head`` (zero init), text head ``text`` [F, C] +
    ``text_bias`` [C] (init prior_scale * prior), and ``dec`` [F', C], the decoder-prior map on
    the decoded backbone outputs (init prior_scale * dec_prior; a [1, C] zero map, unused,
    when there is no decoder prior)."""

    def __init__(self, *, dim: int, num_generators: int, num_domains: int, num_classes: int, prior: np.ndarray,
                 prior_scale: float, rngs: nnx.Rngs, dec_prior: np.ndarray | None = None):
        d, m = dim, num_generators
        self.W = nnx.Param(jnp.linalg.qr(jax.random.normal(rngs.params(), (d, d)))[0])
        self.router1 = nnx.Linear(d, 32, rngs=rngs)
        self.router2 = nnx.Linear(32, num_domains, rngs=rngs)
        self.head = nnx.Linear(d + 2 * m, num_classes, kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.text = nnx.Param(jnp.asarray(prior, jnp.float32) * prior_scale)
        self.text_bias = nnx.Param(jnp.zeros((num_classes,), jnp.float32))
        dp = np.zeros((1, num_classes), np.float32) if dec_prior is None else dec_prior
        self.dec = nnx.Param(jnp.asarray(dp, jnp.float32) * prior_scale)

    def __call__(self, z: jax.Array, V: jax.Array, skip: jax.Array, proto_lg: jax.Array, valid: jax.Array,
                 lg_mu: jax.Array, lg_sd: jax.Array, use_backbone: bool,
                 dec: jax.Array | None = None) -> tuple[jax.Array, GlueOutput]:
        """z [B, d], V [B, M, d], skip [B, F], proto_lg [K, M], valid [K], dec [B, F'] (decoded
        backbone outputs, None = no decoder part) -> logits [B, C], frames."""
        text = skip @ self.text[...] + self.text_bias[...]
        zp = z @ self.W[...]
        Vp = V @ self.W[...]
        Q, s, log_g = frames(Vp)
        out = GlueOutput(z=zp, V=Vp, Q=Q, s=s, log_g=log_g, gate=None)
        if not use_backbone:
            return text, out
        r = self.router2(jax.nn.gelu(self.router1(zp)))
        r = jnp.where(valid[None], r, -1e9)
        mix = jax.nn.softmax(r, axis=-1) @ proto_lg
        feats = jnp.concatenate([zp, (log_g - lg_mu) / lg_sd, (mix - lg_mu) / lg_sd], axis=-1)
        bb = self.head(feats) if dec is None else self.head(feats) + dec @ self.dec[...]
        return bb + text, out


# ----------------------------------------------------------------------------- batches


class _Batcher:
    """Fixed-shape GlueBatches of ego subgraphs around given centres (target domain)."""

    def __init__(self, domain: Any, model: GlueModel, batch_size: int, *, seed: int = 0):
        # `seed` is kept for callers; batch shapes depend only on batch_size and max_nodes
        # (dense per-sample layout), so no edge-count probing is needed.
        self.d, self.cfg, self.bs = domain, model.cfg, batch_size

    def __call__(self, centers: np.ndarray, rng: np.random.Generator, paths: np.ndarray | None = None) -> GlueBatch:
        sub = self.d.sampler.sample(np.asarray(centers), rng, batch_size=self.bs)
        b = build_glue_batch([(sub, 0)], num_generators=self.cfg.num_generators, max_nodes=self.cfg.max_nodes,
                             labels=[self.d.labels], paths=paths, num_paths=max(self.cfg.num_paths, self.bs))
        return jax.tree_util.tree_map(jnp.asarray, b)


def check_labelled_classes(labels: np.ndarray, where: str) -> None:
    """ValueError (prefixed with `where`) unless `labels` [N] (-1 = none) hold labelled nodes of
    at least 2 classes."""
    labels = np.asarray(labels)
    have = np.unique(labels[labels >= 0]).size
    if have < 2:
        raise ValueError(f"{where}: adaptation needs labelled nodes of at least 2 classes, it has "
                         f"{int((labels >= 0).sum())} labelled node(s) of {have} class(es)")


def kshot_splits(labels: np.ndarray, shots: int, *, splits: int, val_fraction: float, seed: int,
                 max_test: int | None = None) -> list[dict[str, np.ndarray]]:
    """[{"train", "valid", "test"}] node-id splits: `shots` per class, val_fraction of the rest
    for validation, the rest for testing (first max_test of a random order when capped)."""
    labels = np.asarray(labels)
    check_labelled_classes(labels, "kshot_splits")
    classes = np.unique(labels[labels >= 0])
    out = []
    for i in range(splits):
        rng = np.random.default_rng([seed, shots, i])
        train = []
        for c in classes:
            ids = rng.permutation(np.flatnonzero(labels == c))
            train.append(ids[: min(shots, max(ids.size - 1, 1))])
        train = np.concatenate(train)
        rest = rng.permutation(np.setdiff1d(np.flatnonzero(labels >= 0), train))
        nv = max(int(round(val_fraction * rest.size)), 1)
        test = rest[nv:]
        if max_test is not None:
            test = test[:max_test]
        out.append({"train": train, "valid": rest[:nv], "test": test})
    return out


# ----------------------------------------------------------------------------- frozen features


def _mean_projection(model: GlueModel) -> tuple[jax.Array, jax.Array]:
    """The frozen target input map: mean of the pretrained per-domain projections."""
    return jnp.mean(model.in_w[...], 0), jnp.mean(model.in_b[...], 0)


@nnx.jit
def _encode(model: GlueModel, batch: GlueBatch, h_w: jax.Array, h_b: jax.Array) -> tuple[jax.Array, jax.Array]:
    out = model.encode(batch, h0=batch.x @ h_w + h_b)
    return out.z, out.V


def embed_frozen(model: GlueModel, domain: Any, *, batch_size: int = 256, seed: int = 0,
                 batcher: _Batcher | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frozen forward pass for every node of ``domain``: (z [N, d], V [N, M, d]) float32.

    Each node is the centre of its (capped) 2-hop ego subgraph; the input projection is
    the mean of the pretrained ones. One compilation (fixed batch shape).
    """
    batcher = batcher or _Batcher(domain, model, batch_size, seed=seed)
    h_w, h_b = _mean_projection(model)
    n = domain.num_nodes
    zs, vs = [], []
    for s in range(0, n, batcher.bs):
        ids = np.arange(s, min(s + batcher.bs, n))
        z, V = _encode(model, batcher(ids, np.random.default_rng([seed, 11, s])), h_w, h_b)
        zs.append(np.asarray(z)[: ids.size])
        vs.append(np.asarray(V)[: ids.size])
    return np.concatenate(zs), np.concatenate(vs)


def _propagation_matrix(edge_index: np.ndarray, n: int) -> sp.csr_matrix:
    return normalized_adjacency(np.asarray(edge_index), n, norm="sym").astype(np.float32)


def _text_inputs(name: str, data_dir: str | None,
                 num_classes: int) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
    """((raw node text embeddings [N, D], class-prompt embeddings [C, D] unit rows), "") for a
    text-attributed dataset with class names, via the foundation model's text encoder
    (embedding cache); (None, why not) when the dataset has no texts or class names, or the
    text encoder is missing."""
    from geofm.align import PromptConfig, class_texts, encode_classes, encode_texts, templates_for
    from geofm.data import load_dataset

    try:
        ds = load_dataset(name, data_dir)
    except (ValueError, FileNotFoundError, KeyError) as err:
        return None, f"dataset {name!r} could not be loaded ({err})"
    if not getattr(ds, "texts", None) or not any(ds.texts):
        return None, f"dataset {name!r} has no node texts"
    if len(ds.class_names) != num_classes:
        return None, f"dataset {name!r} has {len(ds.class_names)} class names for {num_classes} label classes"
    try:
        from geofm.text import TextEncoder

        enc = TextEncoder.load()
    except Exception as err:  # noqa: BLE001 - no packaged text model: no text prior
        return None, f"no text encoder ({type(err).__name__}: {err})"
    temps = templates_for(PromptConfig(), name=ds.name, domain=ds.domain)
    rows, _ = class_texts(ds.class_names, ds.class_descriptions, temps)
    text, _, _ = encode_texts(enc, ds.texts)
    return (text, encode_classes(enc, rows)), ""


def target_features(model: GlueModel, domain: Any, spec: AdapterSpec, *, data_dir: str | None = None,
                    seed: int = 0, batch_size: int = 256, batcher: _Batcher | None = None) -> TargetFeatures:
    """Everything the head reads, computed once per (model, target): see `TargetFeatures`.

    Standardisation constants come from all target nodes WITHOUT labels (transductive,
    unsupervised). Text domains use the raw text embeddings for the skip path (same space
    as the class prompts); others the domain's own inputs and no prompt prior. The decoder
    prior (dec, dec_prior) is built whenever the backbone is on and the node texts are
    loaded (text domain, and spec.text_skip or spec.decoder_prior), so several specs can
    share one call (`restrict`). Raises ValueError when spec.decoder_prior is set but the
    target cannot have one (structural inputs, no texts / class names, no text encoder).
    """
    n = domain.num_nodes
    num_classes = max(int(domain.num_classes), int(domain.labels.max()) + 1)  # classes without a label count
    m = model.cfg.num_generators
    z_raw = None
    if spec.backbone:
        z, V = embed_frozen(model, domain, batch_size=batch_size, seed=seed, batcher=batcher)
        z_raw = z
        mu, sd = z.mean(0), z.std(0) + 1e-6
        z, V = (z - mu) / sd, V / sd
        lg = 2.0 * np.log(np.maximum(np.linalg.norm(V, axis=-1), 1e-6))
        lg_mu, lg_sd = float(lg.mean()), float(lg.std() + 1e-6)
    else:
        z, V, lg_mu, lg_sd = np.zeros((n, model.cfg.dim), np.float32), np.zeros((n, m, model.cfg.dim), np.float32), 0.0, 1.0
    texts, why = None, f"its inputs are {domain.inputs!r}, not text"
    if (spec.text_skip or spec.decoder_prior) and domain.inputs == "text":
        texts, why = _text_inputs(domain.source or domain.name, data_dir, num_classes)
    if spec.decoder_prior and texts is None:
        raise ValueError(f"AdapterSpec.decoder_prior: no decoder prior is possible for target {domain.name!r}: "
                         f"{why} (it needs node texts, class names and the text encoder)")
    adj = _propagation_matrix(domain.edge_index, n)
    if spec.text_skip:
        skip = propagate_with(adj, texts[0] if texts is not None else domain.x, hops=spec.hops)
        prior = texts[1].T if (texts is not None and spec.prompt_prior) else np.zeros((skip.shape[1], num_classes))
    else:
        skip, prior = np.zeros((n, 1), np.float32), np.zeros((1, num_classes))
    dec = dec_prior = None
    if z_raw is not None and texts is not None:
        dec, dec_prior = decoder_features(model, z_raw, texts, domain.projection, adj, hops=spec.hops)
    return TargetFeatures(z=z.astype(np.float32), V=V.astype(np.float32), lg_mu=lg_mu, lg_sd=lg_sd, skip=skip,
                          prior=np.asarray(prior, np.float32), adj=adj, dec=dec, dec_prior=dec_prior)


def _like_inputs(x: np.ndarray, raw: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Rows x [R, F] mapped into the model's input space the way `geofm.features.project_features`
    maps the target's raw inputs raw [N, F]: `zscore_columns` with raw's statistics, then the
    dataset's fixed projection [F, in_dim] -> [R, in_dim]."""
    return zscore_columns(x, raw) @ projection


def decoder_features(model: GlueModel, z_raw: np.ndarray, texts: tuple[np.ndarray, np.ndarray],
                     projection: np.ndarray, adj: Any, *, hops: int) -> tuple[np.ndarray, np.ndarray]:
    """The frozen model's outputs decoded back into its input space (the projected, column
    z-scored in_dim space; the text space itself only when in_dim = F with the identity
    projection), and the class prompts mapped into that space the way the node texts were.

    z_raw [N, d] unstandardised frozen embeddings; texts = (raw node text embeddings [N, F],
    class-prompt embeddings [C, F]); projection [F, in_dim]; adj [N, N] the target's
    propagation matrix S (`TargetFeatures.adj`). Returns (dec [N, in_dim] =
    `geofm.align.propagate_with` of model.decoder(z_raw), i.e.
    unit rows of S^hops (z_raw D); prior [in_dim, C] unit columns), D = the text-alignment
    decoder (trained to make decoded z pick out its own node's input; random for an
    untrained model).
    """
    raw, prompts = texts
    decoded = np.asarray(model.decoder(jnp.asarray(z_raw, jnp.float32)))
    prior = unit_rows(np.asarray(_like_inputs(prompts, raw, projection), np.float32)).T.copy()
    return propagate_with(adj, decoded, hops=hops), prior


# ----------------------------------------------------------------------------- head training


def _rows(f: TargetFeatures, ids: np.ndarray) -> tuple[jax.Array, jax.Array, tuple[jax.Array, jax.Array]]:
    """(z, V, (skip, dec)) rows of the given nodes (dec [B, 1] zeros when the decoder part is off)."""
    return (jnp.asarray(f.z[ids]), jnp.asarray(f.V[ids]),
            (jnp.asarray(f.skip[ids]), jnp.asarray(_dec_parts(f)[0][ids])))


def _head_loss(head: AdapterHead, z, V, skip, y, proto_lg, valid, lg, prior, key, wd, glue_weight, knn,
               use_backbone):
    """skip = (text skip [B, F], decoded backbone [B, F']); prior = their scaled priors."""
    logits, out = head(z, V, skip[0], proto_lg, valid, lg[0], lg[1], use_backbone, dec=skip[1])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    reg = (wd[0] * jnp.sum(head.head.kernel[...] ** 2) + wd[1] * jnp.sum((head.text[...] - prior[0]) ** 2)
           + wd[1] * jnp.sum((head.dec[...] - prior[1]) ** 2))
    b = z.shape[0]
    paths, ok = knn_paths(out.z, jnp.ones((b,), bool), jnp.zeros((b,), jnp.int32), key, knn=knn,
                          num_paths=max(b, 8), cross_domain=False)
    g = glue_loss(out, paths, ok)
    gl = (g["holonomy"] + g["curvature"]) * use_backbone
    return ce + reg + glue_weight * gl, ce


@nnx.jit(static_argnames=("glue_weight", "knn", "use_backbone", "steps"))
def _head_steps(head: AdapterHead, opt: nnx.Optimizer, z, V, skip, y, proto_lg, valid, lg, prior, key, wd, zv, Vv,
                sv, glue_weight: float, knn: int, use_backbone: bool, steps: int) -> jax.Array:
    """``steps`` optimiser steps in ONE compiled loop (fori_loop over split/merged state),
    then the validation logits [Bv, C] (one host round trip per evaluation)."""
    graphdef, state = nnx.split((head, opt))

    def body(i, st):
        h, o = nnx.merge(graphdef, st)
        grads = nnx.grad(_head_loss, has_aux=True)(h, z, V, skip, y, proto_lg, valid, lg, prior,
                                                   jax.random.fold_in(key, i), wd, glue_weight, knn,
                                                   use_backbone)[0]
        o.update(h, grads)
        return nnx.state((h, o))

    state = jax.lax.fori_loop(0, steps, body, state)
    nnx.update((head, opt), state)
    return head(zv, Vv, sv[0], proto_lg, valid, lg[0], lg[1], use_backbone, dec=sv[1])[0]


@nnx.jit(static_argnames=("use_backbone",))
def _head_logits(head: AdapterHead, z, V, skip, proto_lg, valid, lg, use_backbone: bool) -> jax.Array:
    return head(z, V, skip[0], proto_lg, valid, lg[0], lg[1], use_backbone, dec=skip[1])[0]


def _all_logits(head: AdapterHead, f: TargetFeatures, proto, use_backbone: bool, chunk: int = 4096) -> np.ndarray:
    """Logits [N, C] for every target node (chunked, fixed shapes: the last chunk is padded)."""
    n = f.z.shape[0]
    c = min(chunk, n)
    out = []
    lg = jnp.asarray([f.lg_mu, f.lg_sd], jnp.float32)
    for s in range(0, n, c):
        ids = np.arange(s, s + c) % n
        z, V, skip = _rows(f, ids)
        out.append(np.asarray(_head_logits(head, z, V, skip, proto[0], proto[1], lg, use_backbone)))
    return np.concatenate(out)[:n]


def label_propagation(probs: np.ndarray, adj: Any, train: np.ndarray, labels: np.ndarray, *, alpha: float,
                      iters: int = 10) -> np.ndarray:
    """Smooth class probabilities [N, C] over the graph: Y <- (1-alpha) Y0 + alpha S Y, with
    Y0 = probs and the train rows clamped to their one-hot labels. alpha=0 returns Y0."""
    y0 = np.asarray(probs, np.float32).copy()
    y0[train] = np.eye(y0.shape[1], dtype=np.float32)[labels[train]]
    y = y0
    for _ in range(iters if alpha > 0 else 0):
        y = (1.0 - alpha) * y0 + alpha * (adj @ y)
    return y


@functools.lru_cache(maxsize=8)
def _head_tx(lr: float, epochs: int) -> optax.GradientTransformation:
    """Adam with cosine decay over the epochs; ONE object per (lr, epochs): nnx.jit keys its
    compilation cache on it, so a fresh object per head would recompile every fit."""
    return optax.adam(optax.cosine_decay_schedule(lr, max(epochs, 1), alpha=0.01))


def fit_head(glue: GlueModel, f: TargetFeatures, labels: np.ndarray, train: np.ndarray, valid: np.ndarray,
             acfg: Any, spec: AdapterSpec, *, weight_decay: float, seed: int,
             train_labels: np.ndarray | None = None) -> tuple[np.ndarray, float, int]:
    """Train one head (full batch on the train nodes, early stopping on validation accuracy).

    labels [N] (read at the validation nodes, and at the train nodes unless train_labels
    [len(train)] is given, e.g. pseudo-labels). Returns (logits [N, C] of the
    best-validation head, its validation accuracy, epochs run).
    """
    num_classes = f.prior.shape[1]
    _, proto_lg, valid_k = glue.protos.read()
    proto = (jax.lax.stop_gradient(proto_lg), valid_k)
    dec_prior = _dec_parts(f)[1]
    head = AdapterHead(dim=glue.cfg.dim, num_generators=glue.cfg.num_generators, num_domains=proto_lg.shape[0],
                       num_classes=num_classes, prior=f.prior, prior_scale=spec.prior_scale, rngs=nnx.Rngs(seed),
                       dec_prior=dec_prior)
    opt = nnx.Optimizer(head, _head_tx(float(acfg.lr), int(acfg.epochs)), wrt=nnx.Param)
    z, V, skip = _rows(f, train)
    y = jnp.asarray(labels[train] if train_labels is None else train_labels)
    prior = (jnp.asarray(f.prior * spec.prior_scale), jnp.asarray(dec_prior * spec.prior_scale))
    lg = jnp.asarray([f.lg_mu, f.lg_sd], jnp.float32)
    zv, Vv, sv = _rows(f, valid)
    yv = labels[valid]
    key = jax.random.key(seed)

    def val_acc() -> float:
        pred = np.argmax(np.asarray(_head_logits(head, zv, Vv, sv, proto[0], proto[1], lg, spec.backbone)), 1)
        return float(np.mean(pred == yv))

    best, best_state, bad, ep_done = val_acc(), nnx.state(head), 0, 0
    best_state = jax.tree_util.tree_map(lambda a: a, best_state)
    wds = jnp.asarray([weight_decay, spec.text_decay], jnp.float32)
    every = max(int(acfg.eval_every), 1)
    while ep_done < acfg.epochs:
        steps = min(every, acfg.epochs - ep_done)
        logits_v = _head_steps(head, opt, z, V, skip, y, proto[0], proto[1], lg, prior,
                               jax.random.fold_in(key, ep_done), wds, zv, Vv, sv, float(acfg.glue_weight),
                               int(glue.cfg.path_knn), spec.backbone, steps)
        ep_done += steps
        acc = float(np.mean(np.argmax(np.asarray(logits_v), 1) == yv))
        if acc > best + 1e-3:
            best, bad = acc, 0
            best_state = jax.tree_util.tree_map(lambda a: a, nnx.state(head))
        else:
            bad += 1
            if bad >= acfg.patience:
                break
    nnx.update(head, best_state)
    return _all_logits(head, f, proto, spec.backbone), best, ep_done


def pseudo_labels(probs: np.ndarray, exclude: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Self-training picks: per class c, the ``per_class`` nodes outside ``exclude`` with the
    highest probs[:, c] that are also predicted as c -> (node ids [P], labels [P]).
    A node is used once (its argmax class); a class may get fewer when few nodes qualify."""
    n, c = probs.shape
    ok = np.ones(n, bool)
    ok[exclude] = False
    pred = np.argmax(probs, 1)
    ids, labs = [], []
    for k in range(c):
        cand = np.flatnonzero(ok & (pred == k))
        top = cand[np.argsort(-probs[cand, k], kind="stable")[:per_class]]
        ids.append(top)
        labs.append(np.full(top.size, k, np.int32))
    return np.concatenate(ids).astype(np.int64), np.concatenate(labs)


def _best_propagation(probs: np.ndarray, f: TargetFeatures, train: np.ndarray, labels: np.ndarray,
                      valid: np.ndarray, alphas: Sequence[float]) -> tuple[float, float, np.ndarray]:
    """(validation accuracy, alpha, propagated probs) of the best alpha on the validation nodes."""
    best = None
    for a in alphas:
        y = label_propagation(probs, f.adj, train, labels, alpha=a)
        acc = float(np.mean(np.argmax(y[valid], 1) == labels[valid]))
        if best is None or acc > best[0] + 1e-9:
            best = (acc, a, y)
    assert best is not None
    return best


def _candidate_probs(glue: GlueModel, f: TargetFeatures, labels: np.ndarray, train: np.ndarray,
                     valid: np.ndarray, acfg: Any, spec: AdapterSpec, cand: dict[str, Any], *, seed: int,
                     train_labels: np.ndarray | None = None,
                     part: Callable[[str, float], tuple[np.ndarray, int]] | None = None) -> tuple[np.ndarray, int]:
    """Class probabilities [N, C] of one adapter candidate (before label propagation), epochs run.

    cand: {"weight_decay", "backbone": bool} = one head trained on the spec's parts (backbone
    part on/off); with "fusion": beta, two heads trained separately, the backbone-only
    head (weight decay cand["weight_decay"]) and the text-only head, probabilities mixed
    (1 - beta) p_text + beta p_backbone (late fusion). part(name, weight_decay): the
    part-head probabilities (default `_part_probs`; a caller may pass a per-split cache)."""
    if "fusion" not in cand:
        sp_ = spec if cand["backbone"] else _text_part(spec)
        logits, _, ep = fit_head(glue, f, labels, train, valid, acfg, sp_, weight_decay=cand["weight_decay"],
                                 seed=seed, train_labels=train_labels)
        return softmax(logits, axis=1), ep
    if part is None:
        def part(name: str, wd: float) -> tuple[np.ndarray, int]:
            return _part_probs(glue, f, labels, train, valid, acfg, spec, name, wd, seed=seed, train_labels=train_labels)
    p_text, e1 = part("text", spec.weight_decays[0])
    p_bb, e2 = part("backbone", cand["weight_decay"])
    beta = float(cand["fusion"])
    return (1.0 - beta) * p_text + beta * p_bb, max(e1, e2)


def _text_part(spec: AdapterSpec) -> AdapterSpec:
    """The spec's text-only head: backbone off (and with it the decoder prior, a backbone part)."""
    return dataclasses.replace(spec, backbone=False, decoder_prior=False)


def _part_probs(glue: GlueModel, f: TargetFeatures, labels: np.ndarray, train: np.ndarray, valid: np.ndarray,
                acfg: Any, spec: AdapterSpec, part: str, weight_decay: float, *, seed: int,
                train_labels: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Probabilities [N, C] of a head on one part only ("text" or "backbone"), epochs run."""
    sp_ = _text_part(spec) if part == "text" else dataclasses.replace(spec, text_skip=False)
    logits, _, ep = fit_head(glue, restrict(f, sp_), labels, train, valid, acfg, sp_, weight_decay=weight_decay,
                             seed=seed, train_labels=train_labels)
    return softmax(logits, axis=1), ep


def adapt_split(glue: GlueModel, f: TargetFeatures, labels: np.ndarray, split: dict[str, np.ndarray], acfg: Any,
                spec: AdapterSpec, *, seed: int) -> dict[str, Any]:
    """One k-shot split (`fit_select` on its train / valid nodes); reports test accuracy of the
    selected model only."""
    best = fit_select(glue, f, labels, split["train"], split["valid"], acfg, spec, seed=seed)
    probs, test = best.pop("probs"), split["test"]
    best["test_acc"] = float(np.mean(np.argmax(probs[test], 1) == labels[test]))
    return best


def fit_select(glue: GlueModel, f: TargetFeatures, labels: np.ndarray, train: np.ndarray, valid: np.ndarray,
               acfg: Any, spec: AdapterSpec, *, seed: int) -> dict[str, Any]:
    """Fit the adapter on `train` nodes, pick (candidate, label-propagation alpha) on `valid`.

    Candidates: one joint head per weight decay; with ``spec.text_fallback`` also the head
    without the backbone part; with ``spec.fusion`` betas, late fusion of a backbone-only
    head (per weight decay) and the text-only head (`_candidate_probs`). Then one
    self-training round (train + pseudo-labels of the best candidate, validation and train
    nodes never pseudo-labelled), kept only if it raises validation accuracy. Returns the
    selected settings, "valid_acc" and "probs" [N, C] (class probabilities of every node)."""
    wds = spec.weight_decays if spec.backbone else spec.weight_decays[:1]
    cands: list[dict[str, Any]] = [{"weight_decay": wd, "backbone": spec.backbone} for wd in wds]
    both = spec.backbone and spec.text_skip
    if both and spec.text_fallback:
        cands.append({"weight_decay": spec.weight_decays[0], "backbone": False})
    if both:
        cands += [{"weight_decay": wd, "backbone": True, "fusion": beta} for wd in wds for beta in spec.fusion]
    best: dict[str, Any] | None = None
    cache: dict[tuple[str, float], tuple[np.ndarray, int]] = {}

    def part(name: str, wd: float) -> tuple[np.ndarray, int]:  # each part head is trained once per split
        if (name, wd) not in cache:
            cache[(name, wd)] = _part_probs(glue, f, labels, train, valid, acfg, spec, name, wd, seed=seed)
        return cache[(name, wd)]

    for cand in cands:
        probs, ep = _candidate_probs(glue, f, labels, train, valid, acfg, spec, cand, seed=seed, part=part)
        acc, a, y = _best_propagation(probs, f, train, labels, valid, spec.label_prop)
        if best is None or acc > best["valid_acc"] + 1e-9:
            best = {"valid_acc": acc, **cand, "label_prop": a, "epochs": ep, "probs": y, "self_train": False}
    assert best is not None
    if spec.self_train > 0:
        ids, plab = pseudo_labels(best["probs"], np.concatenate([train, valid]), spec.self_train)
        ids2, lab2 = np.concatenate([train, ids]), np.concatenate([labels[train], plab])
        cand = {k: best[k] for k in ("weight_decay", "backbone", "fusion") if k in best}
        probs, ep = _candidate_probs(glue, f, labels, ids2, valid, acfg, spec, cand, seed=seed + 7919,
                                     train_labels=lab2)
        acc, a, y = _best_propagation(probs, f, train, labels, valid, spec.label_prop)
        if acc > best["valid_acc"] + 1e-9:
            best.update(valid_acc=acc, label_prop=a, epochs=ep, probs=y, self_train=True)
    return best


# ----------------------------------------------------------------------------- transferability


@nnx.jit
def _gtm_terms(model: GlueModel, batch: GlueBatch, h0: jax.Array) -> dict[str, jax.Array]:
    return glue_loss(model.encode(batch, h0=h0), batch.paths, batch.path_mask)


def transferability_score(model: GlueModel, domain: Any, *, batches: int = 4, seed: int = 0,
                          batch_size: int = 64, batcher: _Batcher | None = None) -> dict[str, float]:
    """GTM on the target before fine-tuning: mean holonomy + curvature of the frozen model on
    real-graph 2-paths (input projection = mean of the pretrained ones)."""
    from geofm.pretrain import _refine_paths

    batcher = batcher or _Batcher(domain, model, batch_size, seed=seed)
    t = max(batcher.bs // 3, 1)
    h_w, h_b = _mean_projection(model)
    hol, curv = [], []
    for i in range(batches):
        rng = np.random.default_rng([seed, 99, i])
        trip = _refine_paths(domain.sampler, t, rng)
        paths = np.stack([np.arange(t), t + np.arange(t), 2 * t + np.arange(t)], axis=1)
        b = batcher(trip.T.reshape(-1), rng, paths)
        terms = _gtm_terms(model, b, b.x @ h_w + h_b)
        hol.append(float(terms["holonomy"]))
        curv.append(float(terms["curvature"]))
    h, c = float(np.mean(hol)), float(np.mean(curv))
    return {"holonomy": h, "curvature": c, "gtm": h + c}


# ----------------------------------------------------------------------------- protocol


def effective_rank(x: np.ndarray) -> float:
    """exp(entropy of the normalised singular values) of x [N, d] (column-centred): d for
    isotropic features, 1 for a collapsed embedding (feature-collapse check)."""
    sv = np.linalg.svd(np.asarray(x, np.float64) - np.mean(x, 0), compute_uv=False)
    p = sv / max(sv.sum(), 1e-12)
    return float(np.exp(-np.sum(p * np.log(np.maximum(p, 1e-12)))))


def restrict(f: TargetFeatures, spec: AdapterSpec) -> TargetFeatures:
    """The features a spec may use: zero the backbone and/or text parts it switches off
    (so several specs share one `target_features` call)."""
    if not spec.backbone:
        f = f._replace(z=np.zeros_like(f.z[:, :1]).repeat(f.z.shape[1], 1), V=np.zeros_like(f.V), lg_mu=0.0,
                       lg_sd=1.0)
    if not spec.text_skip:
        f = f._replace(skip=np.zeros((f.z.shape[0], 1), np.float32), prior=np.zeros((1, f.prior.shape[1]), np.float32))
    elif not spec.prompt_prior:
        f = f._replace(prior=np.zeros_like(f.prior))
    if not (spec.backbone and spec.decoder_prior and spec.prompt_prior):
        f = f._replace(dec=None, dec_prior=None)
    return f


def run_kshot(model: GlueModel, feats: TargetFeatures, labels: np.ndarray, acfg: Any, spec: AdapterSpec, *,
              seed: int) -> dict[str, Any]:
    """The k-shot protocol on cached features: {k: {"accs", "mean", "std", "splits"}} (percent)."""
    feats = restrict(feats, spec)
    out: dict[str, Any] = {}
    for k in acfg.shots:
        splits = kshot_splits(labels, k, splits=acfg.splits, val_fraction=acfg.val_fraction, seed=seed,
                              max_test=acfg.max_test)
        rows = [adapt_split(model, feats, labels, sp, acfg, spec, seed=seed + i) for i, sp in enumerate(splits)]
        accs = [r["test_acc"] for r in rows]
        out[str(k)] = {"accs": accs, "mean": float(np.mean(accs) * 100), "std": float(np.std(accs) * 100),
                       "splits": rows}
        log.info("%d-shot: %.1f ± %.1f", k, out[str(k)]["mean"], out[str(k)]["std"])
    return out


def adapt_kshot(run_dir: str | Path, acfg: Any, *, random_init: bool = False, spec: AdapterSpec | None = None,
                model: GlueModel | None = None, data_dir: str | None = None) -> dict[str, Any]:
    """k-shot node classification on ``acfg.target`` with the model of a pretraining run.

    random_init=True runs the same protocol with a freshly initialised model of the same
    config (the baseline); spec: the adapter variant (default ``AdapterSpec()``: all parts;
    the named variants of the CLI and the bench are `VARIANTS`); model: use this GlueModel
    instead of loading (e.g. a variant built by the caller); data_dir: where the target is
    looked up instead of the run config's ``data.data_dir``. Raises ValueError when the spec
    asks for a decoder prior the target cannot have (`target_features`).
    Returns {"target", "transferability", "spec", "shots": {k: {"accs", "mean", "std", "splits"}}}.
    """
    spec = spec or AdapterSpec()
    t0 = time.perf_counter()
    model, dom, feats, res, seed = _target_setup(run_dir, acfg, spec, random_init=random_init, model=model,
                                                 data_dir=data_dir)
    res["max_test"] = acfg.max_test
    res["shots"] = run_kshot(model, feats, dom.labels, acfg, spec, seed=seed)
    res["seconds"] = time.perf_counter() - t0
    return res


def predict_split(labels: np.ndarray, *, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """{"train", "valid"} over ALL labelled nodes: val_fraction of each class for validation
    (at least one node in all, while every class keeps at least one training node; ValueError
    when no class has the 2 labelled nodes that needs)."""
    labels = np.asarray(labels)
    check_labelled_classes(labels, "predict_split")
    classes = np.unique(labels[labels >= 0])
    rng = np.random.default_rng([seed, 104729])
    train, valid = [], []
    for c in classes:
        ids = rng.permutation(np.flatnonzero(labels == c))
        nv = min(int(round(val_fraction * ids.size)), ids.size - 1)
        valid.append(ids[:nv])
        train.append(ids[nv:])
    train, valid = np.concatenate(train), np.concatenate(valid)
    if valid.size == 0:  # tiny label sets: one node of the largest class validates
        sizes = [int(np.sum(labels == c)) for c in classes]
        if max(sizes) < 2:
            raise ValueError("adaptation needs a class with 2 labelled nodes (one to fit, one to validate); every "
                             "class here has 1")
        big = int(classes[int(np.argmax(sizes))])
        pick = np.flatnonzero(labels[train] == big)[0]
        valid, train = train[pick: pick + 1], np.delete(train, pick)
    return {"train": np.sort(train), "valid": np.sort(valid)}


def adapt_predict(run_dir: str | Path, acfg: Any, *, spec: AdapterSpec | None = None, data_dir: str | None = None
                  ) -> tuple[dict[str, Any], np.ndarray, tuple[str, ...], np.ndarray]:
    """Fit the adapter on every labelled node of ``acfg.target`` (val_fraction of each class
    held out to select it) and predict every node: (record {"target", "transferability", "spec",
    "train_nodes", "valid_nodes", "valid_acc", "selected", "seconds"}, probs [N, C], class names,
    labelled [N] bool: the nodes that came with a label)."""
    spec = spec or AdapterSpec()
    t0 = time.perf_counter()
    model, dom, feats, res, seed = _target_setup(run_dir, acfg, spec, random_init=False, model=None,
                                                 data_dir=data_dir)
    split = predict_split(dom.labels, val_fraction=acfg.val_fraction, seed=seed)
    best = fit_select(model, restrict(feats, spec), dom.labels, split["train"], split["valid"], acfg, spec, seed=seed)
    probs = best.pop("probs")
    res.update(train_nodes=int(split["train"].size), valid_nodes=int(split["valid"].size),
               valid_acc=float(best.pop("valid_acc")), selected=best, seconds=time.perf_counter() - t0)
    log.info("%s: fitted on %d labelled nodes, validation accuracy %.1f%% on %d", dom.name, res["train_nodes"],
             100 * res["valid_acc"], res["valid_nodes"])
    names = dom.class_names or tuple(str(c) for c in range(probs.shape[1]))
    return res, probs, names, dom.labels >= 0


def _target_setup(run_dir: str | Path, acfg: Any, spec: AdapterSpec, *, random_init: bool, model: GlueModel | None,
                  data_dir: str | None) -> tuple[GlueModel, Any, TargetFeatures, dict[str, Any], int]:
    """Load the run's model (or a random init / the given one) and the target; print its
    transferability; compute the frozen features. (model, domain, features, record, seed)."""
    from geofm.pretrain import check_adapt, load_domain, load_pretrained, make_model, with_data_dir

    loaded, cfg, names = load_pretrained(run_dir)
    data_cfg = with_data_dir(cfg.data, data_dir)
    check_adapt(acfg, data_cfg)
    model = model if model is not None else (make_model(cfg, len(names)) if random_init else loaded)
    seed = cfg.seed
    dom = load_domain(acfg.target, data_cfg, seed=seed, max_nodes=model.cfg.max_nodes)
    check_labelled_classes(dom.labels, f"target {dom.name!r}")  # before any feature is computed
    if {acfg.target.lower(), dom.name.lower()} & {n.lower() for n in names}:
        log.warning("target %s was also a pretraining domain (leakage)", dom.name)
    batcher = _Batcher(dom, model, acfg.eval_batch_size, seed=seed)
    gtm = transferability_score(model, dom, seed=seed, batcher=batcher)
    print(f"transferability on {dom.name}: holonomy {gtm['holonomy']:.4f} + curvature {gtm['curvature']:.4f} "
          f"= GTM {gtm['gtm']:.4f}", file=sys.stderr)
    feats = target_features(model, dom, spec, data_dir=data_cfg.data_dir, seed=seed, batcher=batcher)
    res: dict[str, Any] = {"target": dom.name, "random_init": random_init, "transferability": gtm,
                           "spec": dataclasses.asdict(spec),
                           "prompt_prior_used": bool(np.any(feats.prior)),
                           "decoder_prior_used": restrict(feats, spec).dec is not None,
                           "embedding_effective_rank": effective_rank(feats.z) if spec.backbone else None}
    return model, dom, feats, res, seed


def format_table(*results: dict[str, Any]) -> str:
    """Markdown table: target, init, GTM, then k-shot accuracy mean ± std per k."""
    shots = sorted({k for r in results for k in r["shots"]}, key=int)
    head = "| target | init | GTM | " + " | ".join(f"{k}-shot acc (%)" for k in shots) + " |"
    lines = [head, "|" + "---|" * (3 + len(shots))]
    for r in results:
        cells = [f"{r['shots'][k]['mean']:.1f} ± {r['shots'][k]['std']:.1f}" if k in r["shots"] else "-"
                 for k in shots]
        init = "random" if r.get("random_init") else "pretrained"
        lines.append(f"| {r['target']} | {init} | {r['transferability']['gtm']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- graph- and link-level heads
# Graph classification (each sample is a whole small graph) and link / relation
# classification (a node pair's frozen ego-subgraph features), on the frozen backbone.


def graph_batch(graphs: Sequence[tuple[np.ndarray, np.ndarray]], *, max_nodes: int,
                num_samples: int | None = None) -> GlueBatch:
    """Host: whole graphs as GraphGlue samples (graph-level tasks), one graph per sample.

    graphs: [(x [n, F] float, edge_index [2, e] int)]; each keeps its first ``max_nodes``
    nodes (and the edges among them, symmetrised, loops dropped). num_samples pads the
    sample axis with empty samples (fixed shapes: one compilation).
    """
    if not graphs:
        raise ValueError("graph_batch needs at least one graph")
    nb = len(graphs) if num_samples is None else int(num_samples)
    if nb < len(graphs):
        raise ValueError(f"num_samples={nb} is smaller than the {len(graphs)} graphs")
    f = int(np.shape(graphs[0][0])[1])
    x = np.zeros((nb, max_nodes, f), np.float32)
    mm = np.zeros((nb, max_nodes), bool)
    adj = np.zeros((nb, max_nodes, max_nodes), bool)
    for i, (xi, ei) in enumerate(graphs):
        xi, ei = np.asarray(xi, np.float32), np.asarray(ei, np.int64).reshape(2, -1)
        if xi.ndim != 2 or xi.shape[1] != f:
            raise ValueError(f"graph {i}: node inputs must be [n, {f}], got {xi.shape}")
        if ei.size and (ei.min() < 0 or ei.max() >= xi.shape[0]):
            raise ValueError(f"graph {i}: edge_index holds ids outside [0, {xi.shape[0]})")
        n = min(xi.shape[0], max_nodes)
        x[i, :n], mm[i, :n] = xi[:n], True
        keep = (ei[0] < n) & (ei[1] < n) & (ei[0] != ei[1])
        adj[i, ei[1, keep], ei[0, keep]] = True
        adj[i, ei[0, keep], ei[1, keep]] = True
    sample_mask = mm.any(1)
    return GlueBatch(x=x.reshape(nb * max_nodes, f), members=np.arange(nb * max_nodes, dtype=np.int32).reshape(nb, -1),
                     member_mask=mm, sample_mask=sample_mask, sample_domain=np.zeros(nb, np.int32),
                     label=np.full(nb, -1, np.int32), paths=np.zeros((1, 3), np.int32), path_mask=np.zeros(1, bool),
                     adj=adj)


def embed_graphs(model: GlueModel, graphs: Sequence[tuple[np.ndarray, np.ndarray]], *,
                 batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Frozen forward pass per graph: (z [G, d], V [G, M, d]); inputs [n, in_dim] enter through
    the mean of the pretrained input projections (as `embed_frozen`)."""
    in_dim = model.in_w.shape[1]
    if any(np.shape(x)[1] != in_dim for x, _ in graphs):
        raise ValueError(f"graph node inputs must have the pretrained in_dim={in_dim} columns "
                         f"(project them with geofm.features.project_features)")
    h_w, h_b = _mean_projection(model)
    zs, vs = [], []
    for s in range(0, len(graphs), batch_size):
        part = list(graphs[s:s + batch_size])
        b = jax.tree_util.tree_map(jnp.asarray, graph_batch(part, max_nodes=model.cfg.max_nodes,
                                                            num_samples=batch_size))
        z, V = _encode(model, b, h_w, h_b)
        zs.append(np.asarray(z)[: len(part)])
        vs.append(np.asarray(V)[: len(part)])
    return np.concatenate(zs), np.concatenate(vs)


def _log_metric_stats(V: np.ndarray) -> tuple[float, float]:
    """Mean / std of the frozen log-metrics (unlabelled, all samples): standardisation."""
    lg = np.asarray(frames(jnp.asarray(V))[2])
    return float(lg.mean()), float(lg.std() + 1e-6)


class LinkHead(nnx.Module):
    """Relation classifier on node pairs (u, v) from frozen GraphGlue features.

    u' = z_u W, v' = z_v W (W orthogonally initialised); logits_r = n(u')^T A_r n(v')
    (bilinear on L2-normalised embeddings, as the reference's relation head) + a linear
    map of the standardised frame log-metrics [log g'_u, log g'_v] + b_r.
    """

    def __init__(self, *, dim: int, num_generators: int, num_relations: int, rngs: nnx.Rngs):
        self.W = nnx.Param(jnp.linalg.qr(jax.random.normal(rngs.params(), (dim, dim)))[0])
        self.A = nnx.Param(0.01 * jax.random.normal(rngs.params(), (num_relations, dim, dim)))
        self.metric = nnx.Linear(2 * num_generators, num_relations, rngs=rngs)

    def __call__(self, zu: jax.Array, Vu: jax.Array, zv: jax.Array, Vv: jax.Array, lg_mu: float,
                 lg_sd: float) -> jax.Array:
        """z* [P, d], V* [P, M, d] -> logits [P, R]."""
        w = self.W[...]
        u, v = zu @ w, zv @ w
        nu, nv = u / jnp.linalg.norm(u, axis=-1, keepdims=True), v / jnp.linalg.norm(v, axis=-1, keepdims=True)
        bil = jnp.einsum("pd,rde,pe->pr", nu, self.A[...], nv) * np.sqrt(u.shape[-1])
        lgs = jnp.concatenate([frames(Vu @ w)[2], frames(Vv @ w)[2]], axis=-1)
        return bil + self.metric((lgs - lg_mu) / lg_sd)


def _fit(head: nnx.Module, logits_fn: Any, train: tuple, y: np.ndarray, valid: tuple, yv: np.ndarray, *,
         epochs: int, lr: float, weight_decay: float, eval_every: int, patience: int) -> float:
    """Full-batch Adam on CE + weight_decay ||head||^2, early stopping on validation accuracy
    (the best-validation parameters are restored). Returns the best validation accuracy."""
    opt = nnx.Optimizer(head, optax.adam(lr), wrt=nnx.Param)
    y, wd = jnp.asarray(y), jnp.float32(weight_decay)

    @nnx.jit
    def step(h: nnx.Module, o: nnx.Optimizer, args: tuple, y: jax.Array, wd: jax.Array) -> jax.Array:
        def loss(h):
            ce = optax.softmax_cross_entropy_with_integer_labels(logits_fn(h, *args), y).mean()
            return ce + wd * sum(jnp.sum(p ** 2) for p in jax.tree_util.tree_leaves(nnx.state(h, nnx.Param)))

        val, g = nnx.value_and_grad(loss)(h)
        o.update(h, g)
        return val

    predict = nnx.jit(lambda h, args: jnp.argmax(logits_fn(h, *args), -1))

    def acc() -> float:
        return float(np.mean(np.asarray(predict(head, valid)) == yv))

    best, best_state, bad = acc(), jax.tree_util.tree_map(lambda a: a, nnx.state(head)), 0
    for ep in range(epochs):
        step(head, opt, train, y, wd)
        if (ep + 1) % eval_every == 0 or ep + 1 == epochs:
            a = acc()
            if a > best + 1e-3:
                best, best_state, bad = a, jax.tree_util.tree_map(lambda t: t, nnx.state(head)), 0
            else:
                bad += 1
                if bad >= patience:
                    break
    nnx.update(head, best_state)
    return best


def fit_graph_head(model: GlueModel, graphs: Sequence[tuple[np.ndarray, np.ndarray]], labels: np.ndarray,
                   train: np.ndarray, valid: np.ndarray, *, epochs: int = 200, lr: float = 1e-2,
                   weight_decay: float = 1e-3, eval_every: int = 10, patience: int = 5, seed: int = 0,
                   batch_size: int = 64) -> tuple[np.ndarray, float]:
    """Graph classification with the frozen backbone: an `AdapterHead` (prototype mixture,
    frame metrics; no text part) on each graph's (z, V). Returns (predicted class [G] for
    every graph, best validation accuracy); model selection uses ``valid`` only."""
    labels = np.asarray(labels)
    z, V = embed_graphs(model, graphs, batch_size=batch_size)
    mu, sd = _log_metric_stats(V)
    num_classes = int(labels.max()) + 1
    _, proto_lg, valid_k = model.protos.read()
    head = AdapterHead(dim=model.cfg.dim, num_generators=model.cfg.num_generators, num_domains=proto_lg.shape[0],
                       num_classes=num_classes, prior=np.zeros((1, num_classes), np.float32), prior_scale=0.0,
                       rngs=nnx.Rngs(seed))
    consts = (jax.lax.stop_gradient(proto_lg), valid_k, jnp.float32(mu), jnp.float32(sd))

    def logits_fn(h, zz, vv):
        return h(zz, vv, jnp.zeros((zz.shape[0], 1)), *consts[:2], consts[2], consts[3], True)[0]

    def rows(ids):
        return jnp.asarray(z[ids]), jnp.asarray(V[ids])

    best = _fit(head, logits_fn, rows(train), labels[train], rows(valid), labels[valid], epochs=epochs, lr=lr,
                weight_decay=weight_decay, eval_every=eval_every, patience=patience)
    pred = np.asarray(nnx.jit(lambda h, a: jnp.argmax(logits_fn(h, *a), -1))(head, rows(np.arange(len(graphs)))))
    return pred, best


def fit_link_head(model: GlueModel, domain: Any, pairs: np.ndarray, relations: np.ndarray, train: np.ndarray,
                  valid: np.ndarray, *, epochs: int = 200, lr: float = 1e-2, weight_decay: float = 1e-4,
                  eval_every: int = 10, patience: int = 5, seed: int = 0, batch_size: int = 256,
                  features: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, float]:
    """Link / relation classification: pairs [P, 2] node ids of ``domain`` with relation
    labels [P]; a `LinkHead` on the frozen ego-subgraph features of both ends (computed by
    `embed_frozen` unless ``features`` = (z, V) are given). Returns (predicted relation [P]
    for every pair, best validation accuracy); model selection uses ``valid`` only."""
    pairs, relations = np.asarray(pairs, np.int64), np.asarray(relations)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] != relations.shape[0]:
        raise ValueError(f"pairs must be [P, 2] with one relation per pair, got {pairs.shape} and {relations.shape}")
    if pairs.min() < 0 or pairs.max() >= domain.num_nodes:
        raise ValueError(f"pairs hold node ids outside [0, {domain.num_nodes})")
    z, V = features if features is not None else embed_frozen(model, domain, batch_size=batch_size, seed=seed)
    mu, sd = _log_metric_stats(V)
    head = LinkHead(dim=model.cfg.dim, num_generators=model.cfg.num_generators,
                    num_relations=int(relations.max()) + 1, rngs=nnx.Rngs(seed))

    def logits_fn(h, zu, vu, zv, vv):
        return h(zu, vu, zv, vv, mu, sd)

    def rows(ids):
        u, v = pairs[ids, 0], pairs[ids, 1]
        return jnp.asarray(z[u]), jnp.asarray(V[u]), jnp.asarray(z[v]), jnp.asarray(V[v])

    best = _fit(head, logits_fn, rows(train), relations[train], rows(valid), relations[valid], epochs=epochs, lr=lr,
                weight_decay=weight_decay, eval_every=eval_every, patience=patience)
    pred = np.asarray(nnx.jit(lambda h, a: jnp.argmax(logits_fn(h, *a), -1))(head, rows(np.arange(len(pairs)))))
    return pred, best
__all__ += ["graph_batch", "embed_graphs", "LinkHead", "fit_graph_head", "fit_link_head"]
