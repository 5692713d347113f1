"""Few-shot adaptation of a pretrained GraphGlue model (frozen backbone).

Adapter (papers.md §1.7, with our fixes): a new input projection for the target domain
(initialised at the mean of the pretrained per-domain projections), an orthogonally
initialised map W on the frozen AOF outputs (z' = z W, V' = V W, re-orthonormalised),
a Riemannian mixture over the domain prototypes (w = softmax(MLP(z')), mixed LOG-metric
w @ log G_proto: the log-Euclidean mean), and a linear node-classification head on
[z', log g', mixed log-metric]. Loss = cross-entropy + ``glue_weight`` * (holonomy +
curvature) on 2-paths of the batch's kNN graph (the adaptation gluing loss).

Only parameters under ``adapter`` are trained (`nnx.DiffState` filter); the GraphGlue
model (generators, backbone, prototypes) is frozen.

k-shot protocol: per split, k labelled nodes per class for training, ``val_fraction``
of the remaining labelled nodes for validation (early stopping on accuracy), the rest
for testing (optionally capped at ``max_test``, noted in the result); mean ± std over
splits. The transferability score GTM = holonomy + curvature of the frozen model on
real-graph 2-paths of the target is computed before any fine-tuning.

Graph- and link-level heads are not implemented yet (no graph-level or relation
few-shot data is wired in); `adapt_kshot` handles node classification.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from geofm.glue import GlueBatch, GlueModel, GlueOutput, build_glue_batch, frames, glue_loss, knn_paths
from geofm.graph import next_bucket

log = logging.getLogger("geofm.adapt")

__all__ = ["AdapterHead", "AdaptModel", "kshot_splits", "adapt_kshot", "transferability_score", "format_table"]


class AdapterHead(nnx.Module):
    """Trainable adaptation parameters: input projection, W, prototype router, classifier."""

    def __init__(self, glue: GlueModel, *, in_dim: int, num_classes: int, rngs: nnx.Rngs):
        d, m = glue.cfg.dim, glue.cfg.num_generators
        k = glue.protos.count.shape[0]
        w_in = glue.in_w[...]
        if w_in.shape[1] != in_dim:
            raise ValueError(f"target inputs have width {in_dim}, the pretrained model expects {w_in.shape[1]}")
        self.in_w = nnx.Param(jnp.mean(w_in, axis=0))
        self.in_b = nnx.Param(jnp.mean(glue.in_b[...], axis=0))
        self.W = nnx.Param(jnp.linalg.qr(jax.random.normal(rngs.params(), (d, d)))[0])
        self.router1 = nnx.Linear(d, 32, rngs=rngs)
        self.router2 = nnx.Linear(32, k, rngs=rngs)
        self.head = nnx.Linear(d + 2 * m, num_classes, rngs=rngs)


class AdaptModel(nnx.Module):
    """Frozen GraphGlue model + trainable `AdapterHead` (node classification)."""

    def __init__(self, glue: GlueModel, *, in_dim: int, num_classes: int, rngs: nnx.Rngs):
        self.glue = glue
        self.adapter = AdapterHead(glue, in_dim=in_dim, num_classes=num_classes, rngs=rngs)

    def __call__(self, batch: GlueBatch) -> tuple[jax.Array, GlueOutput]:
        """logits [B, C] and the adapted frames (z' [B, d], Q', s', log g')."""
        a = self.adapter
        h0 = batch.x @ a.in_w[...] + a.in_b[...]
        out = self.glue.encode(batch, h0=h0)
        z = out.z @ a.W[...]
        V = out.V @ a.W[...]
        Q, s, log_g = frames(V)
        _, proto_lg, valid = self.glue.protos.read()
        r = a.router2(jax.nn.gelu(a.router1(z)))
        r = jnp.where(valid[None], r, -1e9)
        mix = jax.nn.softmax(r, axis=-1) @ jax.lax.stop_gradient(proto_lg)
        logits = a.head(jnp.concatenate([z, log_g, mix], axis=-1))
        return logits, GlueOutput(z=z, V=V, Q=Q, s=s, log_g=log_g, gate=out.gate)


TRAINABLE = nnx.All(nnx.Param, nnx.PathContains("adapter"))


def _loss(model: AdaptModel, batch: GlueBatch, key: jax.Array, glue_weight: float, knn: int):
    logits, out = model(batch)
    ok = batch.sample_mask & (batch.label >= 0)
    lab = jnp.maximum(batch.label, 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, lab)
    ce = jnp.sum(ce * ok) / jnp.maximum(ok.sum(), 1)
    paths, valid = knn_paths(out.z, batch.sample_mask, batch.sample_domain, key, knn=knn,
                             num_paths=batch.paths.shape[0], cross_domain=False)
    g = glue_loss(out, paths, valid)
    return ce + glue_weight * (g["holonomy"] + g["curvature"]), ce


@nnx.jit(static_argnames=("glue_weight", "knn"))
def _train_step(model: AdaptModel, opt: nnx.Optimizer, batch: GlueBatch, key: jax.Array, glue_weight: float,
                knn: int):
    grad_fn = nnx.value_and_grad(_loss, argnums=nnx.DiffState(0, TRAINABLE), has_aux=True)
    (loss, ce), grads = grad_fn(model, batch, key, glue_weight, knn)
    opt.update(model, grads)
    return loss, ce


@nnx.jit
def _predict(model: AdaptModel, batch: GlueBatch) -> jax.Array:
    return jnp.argmax(model(batch)[0], axis=-1)


@nnx.jit
def _gtm_terms(model: GlueModel, batch: GlueBatch, h0: jax.Array) -> dict[str, jax.Array]:
    return glue_loss(model.encode(batch, h0=h0), batch.paths, batch.path_mask)


# ----------------------------------------------------------------------------- batches


class _Batcher:
    """Fixed-shape GlueBatches of ego subgraphs around given centres (target domain)."""

    def __init__(self, domain: Any, model: GlueModel, batch_size: int, *, seed: int = 0):
        self.d, self.cfg, self.bs = domain, model.cfg, batch_size
        self.n_pad = next_bucket(batch_size * self.cfg.max_nodes + 1, minimum=64)
        # edge padding from a few host-only probe batches (grows later only if exceeded)
        rng = np.random.default_rng([seed, 5])
        most = 1
        for _ in range(4):
            c = rng.choice(domain.num_nodes, size=min(batch_size, domain.num_nodes), replace=False)
            most = max(most, int(np.asarray(domain.sampler.sample(c, rng).graph.n_edge[:-1]).sum()))
        self.e_pad = next_bucket(int(most * 1.25), minimum=64)

    def __call__(self, centers: np.ndarray, rng: np.random.Generator, paths: np.ndarray | None = None) -> GlueBatch:
        sub = self.d.sampler.sample(np.asarray(centers), rng, batch_size=self.bs)
        e = int(np.asarray(sub.graph.n_edge[:-1]).sum())
        while self.e_pad < e:
            self.e_pad *= 2
        b = build_glue_batch([(sub, 0)], num_generators=self.cfg.num_generators, max_nodes=self.cfg.max_nodes,
                             labels=[self.d.labels], paths=paths, num_paths=max(self.cfg.num_paths, self.bs),
                             n_pad=self.n_pad, e_pad=self.e_pad)
        return jax.tree_util.tree_map(jnp.asarray, b)


def kshot_splits(labels: np.ndarray, shots: int, *, splits: int, val_fraction: float, seed: int,
                 max_test: int | None = None) -> list[dict[str, np.ndarray]]:
    """[{"train", "valid", "test"}] node-id splits: `shots` per class, val_fraction of the rest
    for validation, the rest for testing (first max_test of a random order when capped)."""
    labels = np.asarray(labels)
    classes = np.unique(labels[labels >= 0])
    if classes.size < 2:
        raise ValueError("k-shot adaptation needs at least 2 labelled classes")
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


def transferability_score(model: GlueModel, domain: Any, *, batches: int = 4, seed: int = 0,
                          batch_size: int = 64, batcher: _Batcher | None = None) -> dict[str, float]:
    """GTM on the target before fine-tuning: mean holonomy + curvature of the frozen model on
    real-graph 2-paths (input projection = mean of the pretrained ones)."""
    from geofm.pretrain import _refine_paths

    batcher = batcher or _Batcher(domain, model, batch_size, seed=seed)
    t = max(batcher.bs // 3, 1)
    h_w, h_b = jnp.mean(model.in_w[...], 0), jnp.mean(model.in_b[...], 0)
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


def _accuracy(model: AdaptModel, batcher: _Batcher, ids: np.ndarray, labels: np.ndarray, seed: int) -> float:
    correct = 0
    for s in range(0, ids.size, batcher.bs):
        chunk = ids[s: s + batcher.bs]
        b = batcher(chunk, np.random.default_rng([seed, 7, s]))
        pred = np.asarray(_predict(model, b))[: chunk.size]
        correct += int(np.sum(pred == labels[chunk]))
    return correct / max(ids.size, 1)


def make_adapt_tx(acfg: Any) -> optax.GradientTransformation:
    """Adam with cosine decay over the adaptation epochs."""
    return optax.adam(optax.cosine_decay_schedule(acfg.lr, max(acfg.epochs, 1), alpha=0.01))


def adapt_split(glue: GlueModel, domain: Any, split: dict[str, np.ndarray], acfg: Any, *, seed: int,
                batcher: _Batcher, tx: optax.GradientTransformation | None = None) -> dict:
    """Train an adapter on one split; returns {"test_acc", "valid_acc", "epochs"}.

    batcher: fixed-shape batches (its batch size must hold the whole training set), shared
    by training and evaluation so every split and shot count reuses one compilation;
    tx: the optimizer (share one object across splits: nnx.jit keys its cache on it)."""
    num_classes = int(domain.labels.max()) + 1
    model = AdaptModel(glue, in_dim=domain.x.shape[1], num_classes=num_classes, rngs=nnx.Rngs(seed))
    opt = nnx.Optimizer(model, tx or make_adapt_tx(acfg), wrt=TRAINABLE)
    train = split["train"]
    if train.size > batcher.bs:
        raise ValueError(f"{train.size} training nodes do not fit the batch size {batcher.bs}")
    tb = eb = batcher
    best, best_state, bad, ep_done = -1.0, nnx.state(model.adapter), 0, 0
    key = jax.random.key(seed)
    for ep in range(acfg.epochs):
        b = tb(train, np.random.default_rng([seed, 1, ep]))
        _train_step(model, opt, b, jax.random.fold_in(key, ep), float(acfg.glue_weight), int(glue.cfg.path_knn))
        ep_done = ep + 1
        if (ep + 1) % acfg.eval_every == 0 or ep + 1 == acfg.epochs:
            acc = _accuracy(model, eb, split["valid"], domain.labels, seed)
            if acc > best + 1e-3:
                best, bad = acc, 0
                best_state = jax.tree_util.tree_map(lambda a: a, nnx.state(model.adapter))
            else:
                bad += 1
                if bad >= acfg.patience:
                    break
    nnx.update(model.adapter, best_state)
    test = _accuracy(model, eb, split["test"], domain.labels, seed)
    return {"test_acc": test, "valid_acc": best, "epochs": ep_done}


def adapt_kshot(run_dir: str | Path, acfg: Any, *, random_init: bool = False) -> dict[str, Any]:
    """k-shot node classification on ``acfg.target`` with the model of a pretraining run.

    random_init=True runs the same protocol with a freshly initialised model of the same
    config (the baseline). Returns {"target", "transferability", "shots": {k: {...}}}.
    """
    from geofm.pretrain import load_domain, load_pretrained, make_model

    model, cfg, names = load_pretrained(run_dir)
    if random_init:
        model = make_model(cfg, len(names))  # same config, fresh weights, empty prototypes
    data_cfg, seed = cfg.data, cfg.seed
    if acfg.target.lower() in [n.lower() for n in names]:
        log.warning("target %s was also a pretraining domain (leakage)", acfg.target)
    t0 = time.perf_counter()
    dom = load_domain(acfg.target, data_cfg, seed=seed, max_nodes=model.cfg.max_nodes)
    n_cls = int(np.unique(dom.labels[dom.labels >= 0]).size)
    batcher = _Batcher(dom, model, max(acfg.eval_batch_size, max(acfg.shots) * n_cls), seed=seed)
    gtm = transferability_score(model, dom, seed=seed, batcher=batcher)
    tx = make_adapt_tx(acfg)
    print(f"transferability on {dom.name}: holonomy {gtm['holonomy']:.4f} + curvature {gtm['curvature']:.4f} "
          f"= GTM {gtm['gtm']:.4f}", file=sys.stderr)
    res: dict[str, Any] = {"target": dom.name, "random_init": random_init, "transferability": gtm, "shots": {},
                           "max_test": acfg.max_test}
    for k in acfg.shots:
        splits = kshot_splits(dom.labels, k, splits=acfg.splits, val_fraction=acfg.val_fraction, seed=seed,
                              max_test=acfg.max_test)
        accs = [adapt_split(model, dom, sp, acfg, seed=seed + i, batcher=batcher, tx=tx)["test_acc"] for i, sp in enumerate(splits)]
        res["shots"][str(k)] = {"accs": accs, "mean": float(np.mean(accs) * 100), "std": float(np.std(accs) * 100)}
        log.info("%s %d-shot: %.1f ± %.1f", dom.name, k, res["shots"][str(k)]["mean"], res["shots"][str(k)]["std"])
    res["seconds"] = time.perf_counter() - t0
    return res


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

