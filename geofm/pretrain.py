"""Multi-domain GraphGlue pretraining: config schema, data streams, the resumable loop.

    from geofm.config import load_config
    from geofm.pretrain import PretrainConfig, pretrain
    cfg = load_config("configs/test/tiny.yaml", PretrainConfig)
    result = pretrain(cfg, "runs/tiny")            # resumes when runs/tiny has checkpoints

One epoch has three phases (papers.md §1.5): ``local`` (locality + prototype loss on
uniform-over-domains mixture batches, then the EMA prototype update), ``global``
(gluing loss on 2-paths of the cross-domain kNN graph of a batch that holds every
domain) and ``refine`` (gluing loss on 2-paths sampled on the real graphs, each path
node an ego subgraph). Every batch is a pure function of (seed, step) (grain random
access), and so is every random key, so ``--resume`` continues bit-exactly.

Data parallel: each step processes ``train.parallel`` sub-batches (stacked on a leading
axis, padded to one bucket) sharded over a 1-D device mesh "data"; parameters are
replicated, gradients averaged by XLA. Multi-host: call `geofm.distributed.initialize`
first; each process builds only its devices' sub-batches.

Run folder: config.yaml (resolved), run.json (version, git commit, seed, data
checksums, devices), metrics.jsonl, projections.npz (the fixed per-dataset input
projections) and checkpoints/ (orbax: model incl. EMA prototypes, optimizer, step,
RNG; every ``checkpoint_every`` steps and at the end).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import geofm
from geofm.checkpoint import CheckpointError, Checkpointer, check_resume, latest_metadata
from geofm.config import check_config, dump_config, to_dict
from geofm.data.cache import atomic_write_bytes, atomic_write_text
from geofm.data.mixture import subgraph_mixture
from geofm.data.sampler import SubgraphSampler, loader
from geofm.features import project_features, projection_seed, structural_features
from geofm.glue import (GlueBatch, GlueConfig, GlueModel, GlueOutput, build_glue_batch, flatten_parallel, glue_loss,
                        knn_paths, locality_loss, prototype_loss, sample_inputs, stack_batches, text_align_loss)

log = logging.getLogger("geofm.pretrain")

__all__ = [
    "DataConfig", "TrainConfig", "AdaptConfig", "PretrainConfig", "Domain", "NonFiniteLossError",
    "load_domains", "Streams", "make_model", "make_optimizer", "pretrain", "load_pretrained", "demo",
]

PHASES = ("local", "global", "refine")
_TERMS = {"local": ("local", "proto", "align"), "global": ("holonomy", "curvature", "align"),
          "refine": ("holonomy", "curvature", "align")}


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class DataConfig:
    """datasets: names (``synthetic-*`` generators or `geofm.data.load_dataset` names/folders);
    inputs: node inputs ("text" = MiniLM embeddings via geofm.text, "structural" = random-walk
    + spectral + descriptors, "auto" = text when the dataset has text and the text model is
    installed); in_dim: shared raw width after the fixed per-dataset projection; fanouts:
    neighbour sampling per hop (-1 = all: ego subgraph); synthetic: kwargs per generator;
    max_domain_nodes: a pretraining dataset with more nodes is cut to a seeded snowball
    subgraph of that many (`geofm.data.tag.snowball_nodes`; only those nodes' texts are
    encoded), None = whole graphs. Adaptation targets are never cut."""

    datasets: list[str] = field(default_factory=lambda: ["synthetic-tree", "synthetic-cliques"])
    data_dir: str | None = None
    inputs: Literal["auto", "text", "structural"] = "auto"
    in_dim: int = 128
    fanouts: list[int] = field(default_factory=lambda: [-1, -1])
    synthetic: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_domain_nodes: int | None = None


@dataclass(frozen=True)
class TrainConfig:
    """Three-phase epochs (steps per phase), optax AdamW with linear warmup + cosine to
    ``min_lr_ratio * lr``, global-norm clipping; loss weights (``glue_weight`` scales both
    gluing terms as the reference's geo_regular_coef; set ``holonomy_weight: 0`` for the
    ablation); ``align_weight`` adds the input-preservation term (`geofm.glue.text_align_loss`:
    decoded z_b must pick out its own sample's input, ``align_target`` "mean" = the ego
    subgraph's mean input or "center" = the centre node's, temperature ``align_tau``) in
    every phase, 0 disables it; ``parallel`` sub-batches per step (data-parallel width). ``pad_nodes`` /
    ``pad_edges`` have no effect since the dense per-sample layout (every batch has one
    shape); they stay so that older configs and checkpoints load."""

    epochs: int = 2
    batch_size: int = 64
    local_steps: int = 20
    global_steps: int = 5
    refine_steps: int = 5
    lr: float = 1e-3
    warmup_steps: int = 10
    min_lr_ratio: float = 0.01
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    dtype: Literal["float32", "bfloat16"] = "float32"
    proto_weight: float = 1.0
    proto_start_epoch: int = 1
    glue_weight: float = 0.1
    holonomy_weight: float = 1.0
    curvature_weight: float = 1.0
    align_weight: float = 0.0
    align_tau: float = 0.1
    align_target: Literal["mean", "center"] = "mean"
    parallel: int = 1
    pad_nodes: int | None = None
    pad_edges: int | None = None
    checkpoint_every: int = 50
    log_every: int = 5
    prefetch: bool = True


@dataclass(frozen=True)
class AdaptConfig:
    """k-shot adaptation of a pretrained model (see `geofm.adapt`)."""

    target: str = "synthetic-mixed"
    shots: list[int] = field(default_factory=lambda: [1, 5])
    splits: int = 5
    val_fraction: float = 0.1
    epochs: int = 100
    eval_every: int = 10
    patience: int = 5
    lr: float = 1e-2
    glue_weight: float = 0.1
    eval_batch_size: int = 256
    max_test: int | None = None


def check_adapt(acfg: AdaptConfig, data: DataConfig) -> None:
    """ValueError naming the `adapt.*` key when k-shot adaptation cannot run: shots and
    splits >= 1, 0 < val_fraction < 1, epochs >= 1, and a target that resolves (a synthetic
    generator name or a dataset `geofm.data.find_dataset` finds)."""
    from geofm.data.registry import find_dataset
    from geofm.data.synthetic import GENERATORS

    check_config(acfg, AdaptConfig, "adapt")
    if not acfg.shots or any(k < 1 for k in acfg.shots):
        raise ValueError(f"adapt.shots must be a non-empty list of k >= 1, got {acfg.shots}")
    if acfg.splits < 1 or acfg.epochs < 1:
        raise ValueError(f"adapt.splits and adapt.epochs must be >= 1, got {acfg.splits} and {acfg.epochs}")
    if not 0.0 < acfg.val_fraction < 1.0:
        raise ValueError(f"adapt.val_fraction must be in (0, 1), got {acfg.val_fraction}")
    if acfg.target.lower() not in GENERATORS:
        try:
            find_dataset(acfg.target, data.data_dir)
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(f"adapt.target: {err}") from None


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 0
    model: GlueConfig = field(default_factory=GlueConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the message names the step and the loss terms (a
    FloatingPointError, like the KG trainer's non-finite loss: commands exit 3 on both)."""


def _phase_terms(terms: dict[str, Any], phase: str) -> dict[str, float]:
    """The logged loss terms of `phase` as floats."""
    return {k: float(v) for k, v in terms.items() if k in _TERMS[phase]}


def _non_finite(step: int, phase: str, epoch: int, loss: float, terms: dict[str, float], run: Path,
                saved: int | None) -> NonFiniteLossError:
    """saved: the run's latest checkpoint step (`Checkpointer.latest_step`), None when none was written."""
    kept = (f"the last good checkpoint (step {saved}) in {run / 'checkpoints'} is kept" if saved is not None
            else "no checkpoint had been written yet")
    return NonFiniteLossError(f"non-finite loss at step {step} (phase {phase}, epoch {epoch}): loss={loss} "
                              f"terms={terms}; {kept}")


# ----------------------------------------------------------------------------- data


@dataclass
class Domain:
    """One pretraining (or target) domain on the host.

    x: [N, in_dim] float32 projected inputs; labels: [N] int32 (-1 unknown);
    projection: the fixed [F, in_dim] matrix; checksum: sha256 of the graph + raw inputs
    (computed inputs: text embeddings or spectral features, whose rounding may differ between
    machines); source_checksum: sha256 of the dataset folder's file checksums (None for
    generated or in-memory domains); source: the name or folder it was loaded from (what
    `geofm.data.load_dataset` resolves again; None: look ``name`` up); class_names: indexed by label.
    """

    name: str
    num_nodes: int
    edge_index: np.ndarray
    x: np.ndarray
    labels: np.ndarray
    num_classes: int
    projection: np.ndarray
    inputs: str
    checksum: str
    sampler: SubgraphSampler | None = None
    source_checksum: str | None = None
    source: str | None = None
    class_names: tuple[str, ...] = ()


def _load_raw(name: str, cfg: DataConfig, seed: int) -> Any:
    from geofm.data.synthetic import GENERATORS, make_synthetic

    if name.lower() in GENERATORS:
        return make_synthetic(name, seed=seed, **cfg.synthetic.get(name, {}))
    from geofm.data import load_dataset

    return load_dataset(name, cfg.data_dir)


def _text_available() -> bool:
    try:
        from geofm.text.encoder import default_model_path

        default_model_path()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no text model"
        return False


def _inputs(ds: Any, how: str, seed: int) -> tuple[np.ndarray, str]:
    has_text = bool(getattr(ds, "texts", None)) and any(t for t in ds.texts)
    use_text = how == "text" or (how == "auto" and has_text and ds.domain != "synthetic" and _text_available())
    if use_text:
        if not has_text:
            raise ValueError(f"dataset {ds.name!r} has no node texts; use data.inputs: structural")
        from geofm.text import TextEncoder

        return np.asarray(TextEncoder.load().encode(list(ds.texts)), np.float32), "text"
    return structural_features(ds.edge_index, ds.num_nodes, seed=seed), "structural"


def files_checksum(files: dict[str, str]) -> str:
    """A domain's `source_checksum`: sha256 over its folder's {file: md5} (`geofm.data.source_checksums`)."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def with_data_dir(data: DataConfig, data_dir: str | None) -> DataConfig:
    """`data` looking datasets up in `data_dir` instead (unchanged when None)."""
    return data if data_dir is None else dataclasses.replace(data, data_dir=str(data_dir))


def load_domain(name: str, cfg: DataConfig, *, seed: int, max_nodes: int, node_cap: int | None = None) -> Domain:
    """Load one dataset and build its inputs, fixed projection and sampler; node_cap: cut a
    larger graph to a seeded snowball subgraph of that many nodes first (pretraining domains)."""
    ds = _load_raw(name, cfg, seed)
    if not hasattr(ds, "edge_index"):
        raise ValueError(f"dataset {name!r} is not a text-attributed graph (KG pretraining is not supported)")
    if node_cap is not None and ds.num_nodes > node_cap:
        from geofm.data.tag import induced_subgraph, snowball_nodes

        keep = snowball_nodes(ds.edge_index, ds.num_nodes, node_cap, seed=projection_seed(ds.name, seed))
        log.info("%s: pretraining on a %d-node snowball subgraph of its %d nodes (data.max_domain_nodes)",
                 ds.name, keep.size, ds.num_nodes)
        ds = induced_subgraph(ds, keep)
    raw, kind = _inputs(ds, cfg.inputs, seed)
    dom = make_domain(ds.name, np.asarray(ds.edge_index), raw, kind, cfg, seed=seed, max_nodes=max_nodes,
                      labels=np.asarray(ds.labels, np.int32), num_classes=int(ds.num_classes))
    dom.source, dom.class_names = name, tuple(getattr(ds, "class_names", ()) or ())
    files = getattr(ds, "meta", {}).get("checksums")  # {file: md5} of a dataset read from a folder
    if files:
        dom.source_checksum = files_checksum(files)
    return dom


def make_domain(name: str, edge_index: np.ndarray, raw: np.ndarray, kind: str, cfg: DataConfig, *, seed: int,
                max_nodes: int, labels: np.ndarray | None = None, num_classes: int = 0) -> Domain:
    """A Domain from arrays: edge_index [2, E], raw inputs [N, F] (projected to cfg.in_dim with the
    dataset's fixed seeded projection), optional labels [N] (-1 = unknown)."""
    n = raw.shape[0]
    x, mat = project_features(raw, cfg.in_dim, seed=projection_seed(name, seed))
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(edge_index).tobytes())
    h.update(np.ascontiguousarray(raw).tobytes())
    labels = np.full(n, -1, np.int32) if labels is None else labels
    sampler = SubgraphSampler(edge_index, n, fanouts=cfg.fanouts, max_nodes=max_nodes, features=x, bucket_minimum=64)
    return Domain(name, n, edge_index, x, labels, num_classes, mat, kind, h.hexdigest(), sampler)


def load_domains(cfg: PretrainConfig) -> list[Domain]:
    """All pretraining domains, in config order."""
    names = list(cfg.data.datasets)
    if not names:
        raise ValueError("config key 'data.datasets' must name at least one dataset")
    if len({n.lower() for n in names}) != len(names):
        raise ValueError(f"config key 'data.datasets' lists a dataset twice: {names}")
    cap = cfg.data.max_domain_nodes
    if cap is not None and cap < 2:
        raise ValueError(f"config key 'data.max_domain_nodes' must be >= 2 (or null), got {cap}")
    domains = [load_domain(n, cfg.data, seed=cfg.seed, max_nodes=cfg.model.max_nodes, node_cap=cap) for n in names]
    seen: dict[str, str] = {}
    for n, d in zip(names, domains):  # domains are keyed by name (batches, checksums, projections)
        if d.name.lower() in seen:
            raise ValueError(f"config key 'data.datasets': {seen[d.name.lower()]!r} and {n!r} are both datasets "
                             f"named {d.name!r} (the same one twice, or two folders with one name: a domain is "
                             "known by its name, so give one a different folder name or meta.json name)")
        seen[d.name.lower()] = n
    return domains


def _refine_paths(sampler: SubgraphSampler, count: int, rng: np.random.Generator) -> np.ndarray:
    """[count, 3] node ids (i, j, k): j uniform among nodes of degree >= 2, i != k neighbours."""
    cand = np.flatnonzero(sampler.deg >= 2)
    if cand.size == 0:
        raise ValueError("refine phase: the graph has no node of degree >= 2")
    j = cand[rng.integers(0, cand.size, count)]
    d = sampler.deg[j]
    a = rng.integers(0, d)
    b = (a + rng.integers(1, d)) % d
    base = sampler.indptr[j]
    return np.stack([sampler.indices[base + a], j, sampler.indices[base + b]], axis=1)


class Streams:
    """Deterministic host batch streams: ``batch(phase, t, r)`` is a pure function of
    (seed, phase, step t, sub-batch r) built from grain random-access datasets."""

    def __init__(self, domains: list[Domain], cfg: PretrainConfig, total_steps: int):
        self.domains, self.cfg = domains, cfg
        tc, mc = cfg.train, cfg.model
        k = len(domains)
        n_sub = max(total_steps, 1) * tc.parallel
        self.local = subgraph_mixture({d.name: (d.sampler, None) for d in domains}, batch_size=tc.batch_size,
                                      num_batches=n_sub, seed=cfg.seed, strategy="uniform")
        per = max(tc.batch_size // k, 1)
        self.glob = [loader(d.sampler, batch_size=per, seed=cfg.seed * 7919 + 17 + i, num_epochs=None)
                     for i, d in enumerate(domains)]
        self.paths_per_batch = max(tc.batch_size // 3, 1)
        self.num_paths = max(mc.num_paths, self.paths_per_batch)

    def parts(self, phase: str, t: int, r: int) -> tuple[list, np.ndarray | None]:
        tc = self.cfg.train
        idx = t * tc.parallel + r
        if phase == "local":
            db = self.local[idx]
            return [(db.batch, db.domain)], None
        if phase == "global":
            return [(ds[idx], i) for i, ds in enumerate(self.glob)], None
        rng = np.random.default_rng([self.cfg.seed, 3, idx])
        d = int(rng.integers(0, len(self.domains)))
        smp = self.domains[d].sampler
        trip = _refine_paths(smp, self.paths_per_batch, rng)
        sub = smp.sample(trip.T.reshape(-1), rng)
        tt = self.paths_per_batch
        paths = np.stack([np.arange(tt), tt + np.arange(tt), 2 * tt + np.arange(tt)], axis=1)
        return [(sub, d)], paths

    def batch(self, phase: str, t: int, rows: range) -> GlueBatch:
        """Stacked [len(rows), ...] GlueBatch of step t (rows = this process's sub-batches).

        Every batch has the same shapes (dense per-sample layout), so multi-host processes
        stack identical shapes without agreeing on a bucket."""
        return stack_batches([self._build(self.parts(phase, t, r)) for r in rows])

    def _build(self, pp: tuple[list, np.ndarray | None]) -> GlueBatch:
        parts, paths = pp
        mc = self.cfg.model
        return build_glue_batch(parts, num_generators=mc.num_generators, max_nodes=mc.max_nodes,
                                labels=[self.domains[d].labels for _, d in parts], paths=paths,
                                num_paths=self.num_paths, num_samples=self.cfg.train.batch_size)


# ----------------------------------------------------------------------------- model/optim


def make_model(cfg: PretrainConfig, num_domains: int) -> GlueModel:
    mc = cfg.model
    if cfg.train.dtype == "bfloat16":
        if mc.backbone.get("name") != "gcn":
            raise ValueError("train.dtype bfloat16 is supported for the 'gcn' backbone only")
        mc = dataclasses.replace(mc, backbone={"name": "gcn", "kwargs": {**mc.backbone.get("kwargs", {}),
                                                                       "dtype": "bfloat16"}})
    return GlueModel(mc, in_dim=cfg.data.in_dim, num_domains=num_domains, rngs=nnx.Rngs(cfg.seed))


def total_steps(cfg: PretrainConfig) -> int:
    tc = cfg.train
    return tc.epochs * (tc.local_steps + tc.global_steps + tc.refine_steps)


def lr_schedule(cfg: TrainConfig, steps: int) -> optax.Schedule:
    """Linear warmup from 0 over ``warmup_steps`` then cosine decay to ``min_lr_ratio * lr``."""
    warm = min(cfg.warmup_steps, max(steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(0.0 if warm else cfg.lr, cfg.lr, warm, max(steps, warm + 1),
                                              end_value=cfg.lr * cfg.min_lr_ratio)


@functools.lru_cache(maxsize=16)
def _transform(cfg: TrainConfig, steps: int) -> optax.GradientTransformation:
    """One optax transform per (config, steps): the transform is static in the optimizer's
    graph definition, so reusing it lets a resumed run in the same process reuse the
    compiled train step."""
    sched = lr_schedule(cfg, steps)
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), optax.adamw(sched, weight_decay=cfg.weight_decay))


def make_optimizer(model: nnx.Module, cfg: TrainConfig, steps: int) -> nnx.Optimizer:
    """Global-norm clipping then AdamW on the `lr_schedule` (nnx.Param leaves only)."""
    return nnx.Optimizer(model, _transform(cfg, steps), wrt=nnx.Param)


def schedule(cfg: PretrainConfig) -> list[tuple[str, int]]:
    """[(phase, epoch)] for every global step."""
    tc = cfg.train
    out = []
    for ep in range(tc.epochs):
        out += [("local", ep)] * tc.local_steps + [("global", ep)] * tc.global_steps
        out += [("refine", ep)] * tc.refine_steps
    return out


# ----------------------------------------------------------------------------- step


def phase_flags(phase: str, epoch: int, tc: TrainConfig) -> dict[str, jax.Array]:
    """Traced per-step switches, so ONE compiled step serves all three phases:
    local (1 in the locality phase), knn (1: 2-paths from the cross-domain kNN graph,
    0: the host's real-graph paths), proto (prototype-loss weight)."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; known: {PHASES}")
    pw = tc.proto_weight if epoch >= tc.proto_start_epoch else 0.0
    return {"local": jnp.asarray(phase == "local", jnp.float32), "knn": jnp.asarray(phase == "global"),
            "proto": jnp.asarray(pw, jnp.float32)}


def phase_loss(model: GlueModel, batch: GlueBatch, key: jax.Array, flags: dict[str, jax.Array],
               tc: TrainConfig) -> tuple[jax.Array, dict[str, Any]]:
    """Loss of one stacked batch [P, ...]; returns (loss, aux with terms, z, log g, gate sums).

    The forward pass runs once over all P*B samples (samples are independent; batched
    matmuls with a single batch axis, which XLA:CPU runs far faster than the vmapped
    two-batch-axis form); the losses, which couple the samples of a sub-batch, are
    vmapped over P. All terms are computed every step (they share the forward pass,
    which dominates); ``flags`` (see `phase_flags`) weight them, so the phase is not a
    compile-time constant.
    """
    mc = model.cfg
    p = batch.sample_mask.shape[0]
    keys = jax.random.split(key, p)
    num_domains = model.protos.count.shape[0]
    flat = model.encode(flatten_parallel(batch))
    outs = jax.tree_util.tree_map(lambda a: a.reshape((p, -1) + a.shape[1:]), flat)
    protos = model.protos

    def one(out: GlueOutput, b: GlueBatch, k: jax.Array):
        terms = {"local": locality_loss(out, b.sample_mask, tau=mc.tau),
                 "proto": prototype_loss(out, b.sample_domain, b.sample_mask, protos, tau=mc.tau),
                 "align": text_align_loss(model.decoder(out.z), sample_inputs(b.x, b.member_mask, how=tc.align_target),
                                          b.sample_mask, tau=tc.align_tau)}
        kp, kv = knn_paths(out.z, b.sample_mask, b.sample_domain, k, knn=mc.path_knn,
                           num_paths=b.paths.shape[0], cross_domain=True)
        paths = jnp.where(flags["knn"], kp, b.paths)
        valid = jnp.where(flags["knn"], kv, b.path_mask)
        terms.update(glue_loss(out, paths, valid))
        return terms

    terms = jax.vmap(one)(outs, batch, keys)
    terms = {k: jnp.mean(v) for k, v in terms.items()}
    loc = flags["local"]
    glue_term = tc.glue_weight * (tc.holonomy_weight * terms["holonomy"] + tc.curvature_weight * terms["curvature"])
    loss = loc * (terms["local"] + flags["proto"] * terms["proto"]) + (1.0 - loc) * glue_term
    if tc.align_weight:
        loss = loss + tc.align_weight * terms["align"]
    aux = {"terms": terms, "z": outs.z, "log_g": outs.log_g}
    if flat.gate is not None:  # per-domain sums of the real nodes' gate weights, node counts
        fb = flatten_parallel(batch)
        oh = jax.nn.one_hot(fb.sample_domain, num_domains)  # [P*B, K]
        mm = fb.member_mask.astype(flat.gate.dtype)
        aux["gate"] = (jnp.einsum("bk,bs,bse->ke", oh, mm, flat.gate), oh.T @ mm.sum(1))
    return loss, aux


@functools.lru_cache(maxsize=16)
def make_train_step(tc: TrainConfig) -> Callable:
    """nnx.jit train step(model, optimizer, batch, key, flags) -> (loss, terms, gate sums | None).

    One compilation per run (one batch shape; phases are traced flags), shared by later
    runs with the same config in the process (cached: e.g. a resume); the EMA prototype update
    runs only when flags["local"] is 1 (masked update).
    """

    @nnx.jit
    def step(model: GlueModel, optimizer: nnx.Optimizer, batch: GlueBatch, key: jax.Array,
             flags: dict[str, jax.Array]):
        def loss_fn(m):
            return phase_loss(m, batch, key, flags, tc)

        (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        mask = batch.sample_mask.reshape(-1) & (flags["local"] > 0)
        model.protos.update(aux["z"].reshape(-1, aux["z"].shape[-1]), aux["log_g"].reshape(-1, aux["log_g"].shape[-1]),
                            batch.sample_domain.reshape(-1), mask)
        return loss, aux["terms"], aux.get("gate")

    return step


# ----------------------------------------------------------------------------- run records


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_record(cfg: PretrainConfig, domains: list[Domain], mesh_devices: int | None = None) -> dict[str, Any]:
    """run.json: versions, commit, seed, devices (all / in the data mesh), processes, domains, config."""
    return {
        "geofm_version": geofm.__version__, "git_commit": _git_commit(), "jax_version": jax.__version__,
        "seed": cfg.seed, "devices": jax.device_count(), "mesh_devices": mesh_devices,
        "processes": jax.process_count(),
        "domains": [{"name": d.name, "num_nodes": d.num_nodes, "inputs": d.inputs, "checksum": d.checksum,
                     "source_checksum": d.source_checksum}
                    for d in domains],
        "config": to_dict(cfg),
    }


def model_state(model: nnx.Module) -> dict:
    return nnx.state(model).to_pure_dict()


def _ckpt_tree(model: nnx.Module, optimizer: nnx.Optimizer, key: jax.Array, step: int) -> dict:
    return {"model": model_state(model), "opt": nnx.state(optimizer, nnx.optimizer.OptState).to_pure_dict(),
            "rng": np.asarray(jax.random.key_data(key)), "step": np.asarray(step, np.int64)}


def _restore_into(model: nnx.Module, optimizer: nnx.Optimizer, tree: dict) -> None:
    st = nnx.state(model)
    st.replace_by_pure_dict(tree["model"])
    nnx.update(model, st)
    ost = nnx.state(optimizer, nnx.optimizer.OptState)
    ost.replace_by_pure_dict(tree["opt"])
    nnx.update(optimizer, ost)


# ----------------------------------------------------------------------------- loop


def _replicate(tree: Any, sharding: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: jax.device_put(a, sharding), tree)


def _put_batch(batch: GlueBatch, sharding: Any, global_rows: int) -> GlueBatch:
    """Host stacked batch (this process's rows) -> global array sharded on axis 0."""
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(lambda a: jax.device_put(np.asarray(a), sharding), batch)
    return jax.tree_util.tree_map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a),
                                                         (global_rows,) + np.shape(a)[1:]), batch)


def pretrain(
    cfg: PretrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool | None = None,
    stop_after: int | None = None,
    domains: list[Domain] | None = None,
) -> dict[str, Any]:
    """Pretrain (or resume) into ``run_dir``; returns {"step", "loss", "terms", "seconds", ...}.

    stop_after: stop (after checkpointing) once this many global steps are done (tests).
    Raises NonFiniteLossError (the last good checkpoint stays on disk) on NaN/inf loss.
    """
    from geofm.distributed import data_mesh

    check_config(cfg, PretrainConfig, "pretrain")
    run = Path(run_dir)
    hint = f"Use another run folder, or the recorded config ({run / 'config.yaml'})"
    if (latest := latest_metadata(run / "checkpoints")) is not None:  # refusals come before any data is loaded
        if not resume:
            raise CheckpointError(f"{run} already holds checkpoints (up to step {latest[0]}): use another run folder, "
                                  "or resume them")
        check_resume(latest[1], config=cfg, checksums=None, allowed=RESUMABLE_KEYS, where=str(run), hint=hint)
    tc = cfg.train
    domains = domains if domains is not None else load_domains(cfg)
    steps = total_steps(cfg)
    if steps < 1:
        raise ValueError("config: train.epochs * (local_steps + global_steps + refine_steps) must be >= 1")
    mesh, rep, dat = data_mesh(tc.parallel)
    model = make_model(cfg, len(domains))
    optimizer = make_optimizer(model, tc, steps)
    run.mkdir(parents=True, exist_ok=True)  # once the config has built a model
    record = run_record(cfg, domains, mesh.size)
    is_main = jax.process_index() == 0
    metadata = {"config": to_dict(cfg), "domains": [d.name for d in domains],
                "checksums": {d.name: d.checksum for d in domains},
                "source_checksums": {d.name: d.source_checksum for d in domains}}
    with Checkpointer(run / "checkpoints", metric="loss", mode="min", keep_last=2, keep_best=1,
                      metadata=metadata) as ckpt:  # closed on every exit
        base_key = jax.random.key(cfg.seed)
        start = 0
        if latest is not None:  # resume is on and the config matches (checked above)
            saved = latest[1]
            if saved.get("domains") not in (None, metadata["domains"]):
                raise CheckpointError(f"cannot resume {run}: its checkpoints were trained on {saved['domains']}, "
                                      f"this config uses {metadata['domains']}")
            # the dataset files must be the same; the inputs computed from them (text embeddings,
            # spectral features) may be rounded differently on another machine: reported, not refused
            check_resume(saved, config=None, checksums=metadata["source_checksums"], checksums_key="source_checksums",
                         allowed=RESUMABLE_KEYS, where=str(run), hint=hint)  # the config was checked above
            if saved.get("checksums") not in (None, metadata["checksums"]):
                log.warning("resuming %s although the inputs computed from its data hash differently (text "
                            "embeddings or structural features recomputed with other rounding)", run)
            tree, meta = ckpt.restore(_ckpt_tree(model, optimizer, base_key, 0))
            _restore_into(model, optimizer, tree)
            start = int(np.asarray(tree["step"]))
            log.info("resumed from %s at step %d", run / "checkpoints", start)
        kept: list[dict[str, Any]] = []
        if is_main:  # written only once the run folder is known to fit this config
            atomic_write_text(run / "config.yaml", dump_config(cfg))
            atomic_write_text(run / "run.json", json.dumps(record, indent=2))
            atomic_write_bytes(run / "projections.npz", lambda f: np.savez(f, **{d.name: d.projection for d in domains}))
            kept = _metric_rows(run / "metrics.jsonl", upto=start)
            atomic_write_text(run / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in kept))
        # replicate the model / optimizer on the mesh
        nnx.update(model, _replicate(nnx.state(model), rep))
        nnx.update(optimizer, _replicate(nnx.state(optimizer), rep))
        streams = Streams(domains, cfg, steps)
        plan = schedule(cfg)
        step_fn = make_train_step(tc)
        rows = _local_rows(tc.parallel)
        ex = ThreadPoolExecutor(max_workers=1) if tc.prefetch else None

        def host_batch(t: int) -> GlueBatch:
            return streams.batch(plan[t][0], t, rows)

        end = steps if stop_after is None else min(steps, stop_after)
        metrics_f = open(run / "metrics.jsonl", "a") if is_main else None
        bar = _bar(end - start, progress)
        t0, last_t, last_step = time.perf_counter(), time.perf_counter(), start
        loss_v, terms_v = math.nan, {}
        last = kept[-1] if kept else {}
        if last.get("step") == start and start > 0:  # a resumed run: report its last logged loss until a new one
            loss_v = float(last["loss"])
            terms_v = {k: float(last[k]) for k in _TERMS.get(last.get("phase"), ()) if k in last}
        gate_acc: dict[str, np.ndarray] = {}
        pending = ex.submit(host_batch, start) if (ex and start < end) else None
        try:
            for t in range(start, end):
                phase, epoch = plan[t]
                hb = pending.result() if pending is not None else host_batch(t)
                pending = ex.submit(host_batch, t + 1) if (ex and t + 1 < end) else None
                batch = _put_batch(hb, dat, tc.parallel)
                key = jax.random.fold_in(base_key, t)
                loss, terms, gate = step_fn(model, optimizer, batch, key, phase_flags(phase, epoch, tc))
                log_now = (t + 1) % tc.log_every == 0 or t + 1 == end or (t + 1) % tc.checkpoint_every == 0
                loss_now = float(loss)  # one scalar sync per step: never checkpoint a NaN state
                if not math.isfinite(loss_now):
                    raise _non_finite(t + 1, phase, epoch, loss_now, _phase_terms(terms, phase), run,
                                      ckpt.latest_step())
                if gate is not None:
                    gs, gc = np.asarray(gate[0]), np.asarray(gate[1])
                    for i, d in enumerate(domains):
                        if gc[i] > 0:
                            gate_acc[d.name] = gs[i] / gc[i]
                if log_now:
                    loss_v = loss_now
                    terms_v = _phase_terms(terms, phase)
                    if not all(math.isfinite(v) for v in terms_v.values()):  # the loss itself was checked above
                        raise _non_finite(t + 1, phase, epoch, loss_v, terms_v, run, ckpt.latest_step())
                    now = time.perf_counter()
                    rate = (t + 1 - last_step) / max(now - last_t, 1e-9)
                    row = {"step": t + 1, "epoch": epoch, "phase": phase, "loss": loss_v, **terms_v,
                           "steps_per_s": rate, "samples_per_s": rate * tc.batch_size * tc.parallel,
                           "time": now - t0}
                    if gate_acc:
                        row["gate"] = {k: v.tolist() for k, v in gate_acc.items()}
                    last_t, last_step = now, t + 1
                    if metrics_f:
                        metrics_f.write(json.dumps(row) + "\n")
                        metrics_f.flush()
                    if bar is not None:
                        bar.set_postfix({"phase": phase, "loss": f"{loss_v:.3f}", "it/s": f"{rate:.1f}"})
                if bar is not None:
                    bar.update(1)
                if (t + 1) % tc.checkpoint_every == 0 or t + 1 == end:
                    if not log_now:
                        loss_v = loss_now
                    ckpt.save(t + 1, _ckpt_tree(model, optimizer, base_key, t + 1), metrics={"loss": loss_v},
                              extra={"phase": phase, "epoch": epoch, "sampler": {"next_index": t + 1}})
        finally:
            if pending is not None:
                pending.cancel()
            if ex is not None:
                ex.shutdown(wait=True)
            if metrics_f:
                metrics_f.close()
            if bar is not None:
                bar.close()
    del mesh
    return {"step": end, "loss": loss_v, "terms": terms_v, "seconds": time.perf_counter() - t0,
            "run_dir": str(run), "gate": {k: v.tolist() for k, v in gate_acc.items()}}


# Config keys a resumed run may change: logging, checkpoint cadence, host-side prefetching, where
# the data live (the domain names and checksums are compared instead: data.datasets may name the
# same folders by other paths) and the adaptation settings. Not train.parallel: it sets the global
# batch and which samples each step draws.
RESUMABLE_KEYS = ("train.checkpoint_every", "train.log_every", "train.prefetch", "data.data_dir", "data.datasets",
                  "adapt")


def _metric_rows(path: Path, *, upto: int) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl with step <= upto, one per step (the last one logged: a run
    resumed before this was in place may have logged a step twice), in step order. Lines that
    are not JSON objects (a torn line from a kill mid-write) are dropped; [] when missing."""
    rows: dict[int, dict[str, Any]] = {}
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            for ln in f:
                try:
                    row = json.loads(ln)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= upto:
                    rows[row["step"]] = row
    return [rows[k] for k in sorted(rows)]


def _local_rows(parallel: int) -> range:
    p, n = jax.process_index(), jax.process_count()
    if parallel % n:
        raise ValueError(f"train.parallel={parallel} must be a multiple of the process count {n}")
    per = parallel // n
    return range(p * per, (p + 1) * per)


def _bar(total: int, progress: bool | None):
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="pretrain", unit="step")


def load_pretrained(run_dir: str | Path, *, which: str = "latest") -> tuple[GlueModel, PretrainConfig, list[str]]:
    """(model with EMA prototypes, its config, domain names) from a pretraining run folder."""
    from geofm.config import ConfigError, from_dict

    if not (Path(run_dir) / "checkpoints").is_dir():
        raise CheckpointError(f"{run_dir} is not a pretraining run folder: no checkpoints/ in it "
                              "(`geofm pretrain --config C --out RUN` writes one)")
    ckpt = Checkpointer(Path(run_dir) / "checkpoints", metric="loss", mode="min")
    try:
        step = ckpt.step_for(which)  # type: ignore[arg-type]
        if step is None:
            raise CheckpointError(f"no checkpoint in {Path(run_dir) / 'checkpoints'}")
        meta = ckpt.read_meta(step).get("metadata", {})
        try:
            cfg = from_dict(PretrainConfig, meta["config"])
            names = list(meta["domains"])
        except (KeyError, TypeError, ConfigError) as err:
            raise CheckpointError(f"{run_dir} is not a `geofm pretrain` run (its checkpoint metadata has no "
                                  f"pretraining config: {err})") from None
        model = make_model(cfg, len(names))
        opt = make_optimizer(model, cfg.train, total_steps(cfg))
        tree, _ = ckpt.restore(_ckpt_tree(model, opt, jax.random.key(cfg.seed), 0), step=step)
        _restore_into(model, opt, tree)
    finally:
        ckpt.close()
    return model, cfg, names


DEMO_OUT, DEMO_MARKER, DEMO_DOMAIN_NODES = "runs/demo", ".geofm-demo", 3000


def demo(data_dir: str | None = None, *, out: str | Path = DEMO_OUT, target: str | None = None,
         quick: bool = False, progress: bool | None = None) -> dict[str, Any]:
    """`make demo`: short multi-domain pretraining then 5-shot adaptation on a held-out dataset.

    Uses the TAG datasets under data_dir / $GEOFM_DATA / ../shared/data (target: cora,
    pretraining on the others, each cut to DEMO_DOMAIN_NODES nodes), else synthetic generators
    (FileNotFoundError when data_dir or $GEOFM_DATA names no folder). Prints and returns the
    table. A rerun into the same `out` replaces the previous demo's run; a run folder the demo
    did not write is refused.
    """
    from geofm.adapt import adapt_kshot, format_table
    from geofm.data.registry import known_datasets

    names = known_datasets(data_dir)  # [] when nothing is given and ../shared/data is absent
    tags = [n for n in ("cora", "arxiv2023", "webkb-cornell", "webkb-texas") if n in names]
    if len(tags) >= 2:
        tgt = target or ("cora" if "cora" in tags else tags[0])
        sources = [n for n in tags if n != tgt]
        inputs = "auto"
    else:
        tgt = target or "synthetic-mixed"
        sources = ["synthetic-tree", "synthetic-cliques", "synthetic-grid", "synthetic-ring"]
        inputs = "structural"
    cfg = PretrainConfig(
        seed=0,
        model=GlueConfig(dim=64, num_generators=8, knn=5, att_dim=32, max_nodes=24, pool="mean_center",
                         input_projection="shared",
                         backbone={"name": "gcn", "kwargs": {"num_layers": 2, "residual": True}}),
        # a capped arxiv2023: on a fresh cache its 33k texts alone would take ~25 min to encode
        data=DataConfig(datasets=sources, data_dir=data_dir, inputs=inputs, in_dim=128,
                        max_domain_nodes=1000 if quick else DEMO_DOMAIN_NODES),
        train=TrainConfig(epochs=1, batch_size=64, local_steps=10 if quick else 60,
                          global_steps=3 if quick else 15, refine_steps=3 if quick else 15, checkpoint_every=50,
                          align_weight=3.0, align_target="center"),
        adapt=AdaptConfig(target=tgt, shots=[5], splits=2 if quick else 5, epochs=30 if quick else 80,
                          max_test=300 if quick else 1000),
    )
    check_adapt(cfg.adapt, cfg.data)
    run, marker = Path(out) / "pretrain", Path(out) / DEMO_MARKER
    legacy = Path(out) == Path(DEMO_OUT) and (run / "run.json").is_file()  # written before the marker existed
    if run.exists():
        if not (marker.is_file() or legacy):
            raise ValueError(f"{run} exists but was not written by `geofm demo` (no {marker} beside it): "
                             "choose another --out or remove that folder")
        import shutil

        shutil.rmtree(run)  # a previous demo run: start afresh
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by `geofm demo`: its next run replaces pretrain/ here\n")
    result = pretrain(cfg, run, resume=False, progress=progress)
    res = adapt_kshot(Path(out) / "pretrain", cfg.adapt)
    table = format_table(res)
    print(table)
    return {"pretrain": result, "adapt": res, "table": table}
