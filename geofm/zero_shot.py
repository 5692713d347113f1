"""Zero-shot / few-shot node classification with class-text prompts, baselines and visuals.

A node embedding z_i and class-prompt embeddings c_j (all unit rows in the text space)
give scores s_ij = <z_i, c_j>; the zero-shot prediction is argmax_j s_ij. Three node
embeddings are compared on one target, with the same text encoder and the same class
prompts:

  text_only          t_i: the node's own text embedding;
  text_propagation   S^k t (SGC-style k-hop propagation, parameter-free);
  aligned            z_i from a frozen `geofm.align.GraphTextAligner` trained on other
                     datasets (the target never seen).

Few-shot: k labelled nodes per class (seeded draws), then a prototype classifier (cosine
to the class-mean embedding) or a linear probe (L2-regularised softmax regression) on the
remaining labelled nodes.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from geofm.config import check_sequence
from geofm.data.cache import atomic_write_text
from geofm.metrics import accuracy, finite_or_none, macro_f1, write_predictions
from geofm.plot import save_png

log = logging.getLogger("geofm.zero_shot")

__all__ = [
    "class_scores",
    "zero_shot_predict",
    "classification_metrics",
    "few_shot_support",
    "prototype_predict",
    "linear_probe_predict",
    "few_shot_eval",
    "evaluate_embeddings",
    "evaluate_aligned",
    "evaluate_target",
    "confusion_matrix",
    "pca_2d",
    "plot_target",
    "score_baselines",
    "baseline_metrics",
    "validation_gain",
    "setting_key",
    "correction_scale_for",
    "select_on_sources",
]


def class_scores(node_emb: np.ndarray, class_emb: np.ndarray) -> np.ndarray:
    """Cosine scores [N, C] of unit rows node_emb [N, D] against class_emb [C, D]."""
    node_emb, class_emb = np.asarray(node_emb, np.float32), np.asarray(class_emb, np.float32)
    if node_emb.ndim != 2 or class_emb.ndim != 2 or node_emb.shape[1] != class_emb.shape[1]:
        raise ValueError(f"class_scores: need [N, D] and [C, D], got {node_emb.shape} and {class_emb.shape}")
    for what, a in (("node", node_emb), ("class", class_emb)):
        if not np.all(np.isfinite(a)):
            bad = int(np.sum(~np.all(np.isfinite(a), axis=1)))
            raise ValueError(f"class_scores: {bad} {what} embedding row(s) hold NaN/inf (argmax would pick class 0)")
    return node_emb @ class_emb.T


def zero_shot_predict(node_emb: np.ndarray, class_emb: np.ndarray) -> np.ndarray:
    """argmax_j <z_i, c_j> -> [N] int32."""
    return np.argmax(class_scores(node_emb, class_emb), axis=1).astype(np.int32)


def classification_metrics(pred: np.ndarray, labels: np.ndarray, num_classes: int,
                           mask: np.ndarray | None = None) -> dict[str, float]:
    """{"accuracy", "macro_f1"} over labelled nodes (label >= 0), optionally within mask [N]."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    if mask is not None:
        pred, labels = pred[mask], labels[mask]
    return {"accuracy": accuracy(pred, labels), "macro_f1": macro_f1(pred, labels, num_classes)}


# ----------------------------------------------------------------------------- few-shot


def few_shot_support(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k labelled node ids per class (all of a class's nodes when it has <= k), sorted [S]."""
    if k < 1:
        raise ValueError(f"few-shot k must be >= 1, got {k}")
    labels = np.asarray(labels)
    picked = []
    for c in np.unique(labels[labels >= 0]):
        ids = np.flatnonzero(labels == c)
        picked.append(rng.choice(ids, size=min(k, ids.size), replace=False))
    return np.sort(np.concatenate(picked)).astype(np.int64) if picked else np.zeros(0, np.int64)


def prototype_predict(emb: np.ndarray, labels: np.ndarray, support: np.ndarray, num_classes: int) -> np.ndarray:
    """Cosine to class prototypes (normalised mean of the support embeddings) -> [N] int32.
    Classes without support nodes are never predicted."""
    emb = np.asarray(emb, np.float32)
    protos = np.zeros((num_classes, emb.shape[1]), np.float32)
    np.add.at(protos, labels[support], emb[support])
    norm = np.linalg.norm(protos, axis=1, keepdims=True)
    scores = emb @ (protos / np.maximum(norm, 1e-12)).T
    scores[:, norm[:, 0] == 0] = -np.inf
    return np.argmax(scores, axis=1).astype(np.int32)


def linear_probe_predict(emb: np.ndarray, labels: np.ndarray, support: np.ndarray, num_classes: int, *,
                         steps: int = 200, lr: float = 0.1, l2: float = 1e-3, scale: float = 10.0) -> np.ndarray:
    """L2-regularised softmax regression on the support nodes (full-batch Adam, `steps`),
    initialised at the prototype classifier -> predictions [N] int32."""
    x = jnp.asarray(np.asarray(emb, np.float32) * scale)
    xs, ys = x[support], jnp.asarray(labels[support])
    protos = np.zeros((num_classes, emb.shape[1]), np.float32)
    np.add.at(protos, labels[support], np.asarray(emb, np.float32)[support])
    protos /= np.maximum(np.linalg.norm(protos, axis=1, keepdims=True), 1e-12)
    params = {"w": jnp.asarray(protos.T), "b": jnp.zeros(num_classes)}
    present = jnp.asarray(np.bincount(labels[support], minlength=num_classes) > 0)
    p = _fit_probe(params, xs, ys, present, jnp.float32(lr), jnp.float32(l2), steps=steps)
    logits = jnp.where(present, x @ p["w"] + p["b"], -jnp.inf)
    return np.asarray(jnp.argmax(logits, axis=1), np.int32)


@functools.partial(jax.jit, static_argnames=("steps",))
def _fit_probe(params: dict[str, jax.Array], xs: jax.Array, ys: jax.Array, present: jax.Array, lr: jax.Array,
               l2: jax.Array, *, steps: int) -> dict[str, jax.Array]:
    """Full-batch Adam on the L2-regularised softmax regression (module-level: compiled once per shape)."""
    tx = optax.adam(lr)

    def loss(p):
        logits = jnp.where(present, xs @ p["w"] + p["b"], -1e9)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, ys).mean()
        return ce + l2 * jnp.sum(p["w"] ** 2)

    def body(carry, _):
        p, s = carry
        g = jax.grad(loss)(p)
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (p, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
    return p


def few_shot_eval(emb: np.ndarray, labels: np.ndarray, num_classes: int, *, k: int, trials: int,
                  seed: int = 0) -> dict[str, dict[str, float]]:
    """Mean ± std over `trials` seeded support draws of prototype and linear-probe
    accuracy / macro-F1 on the labelled non-support nodes."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    rows: dict[str, list[dict[str, float]]] = {"prototype": [], "linear_probe": []}
    for _ in range(trials):
        sup = few_shot_support(labels, k, rng)
        query = labels >= 0
        query[sup] = False
        if not query.any():
            continue
        rows["prototype"].append(classification_metrics(prototype_predict(emb, labels, sup, num_classes),
                                                        labels, num_classes, query))
        rows["linear_probe"].append(classification_metrics(linear_probe_predict(emb, labels, sup, num_classes),
                                                           labels, num_classes, query))
    return {name: _mean_std(r) for name, r in rows.items() if r}


def _mean_std(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    out = {}
    for key in rows[0]:
        v = np.array([r[key] for r in rows], np.float64)
        out[key] = float(v.mean())
        out[f"{key}_std"] = float(v.std())
    return out


# ----------------------------------------------------------------------------- one target


def evaluate_embeddings(emb: np.ndarray, class_emb: np.ndarray, labels: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """Zero-shot metrics of one embedding -> ({"accuracy", "macro_f1"}, predictions [N])."""
    pred = zero_shot_predict(emb, class_emb)
    return classification_metrics(pred, labels, class_emb.shape[0]), pred


def score_baselines(domain: Any, *, hops: int) -> dict[str, dict[str, Any]]:
    """Both parameter-free baselines on a prepared domain (`geofm.align.DomainInputs`), with
    the target's own encoder and class prompts: {"text_only", "text_propagation"}, each
    {"metrics": {accuracy, macro_f1}, "pred": [N], "embedding": [N, D]}. text_propagation
    propagates `hops` hops (the domain's stored prop when the depth matches)."""
    from geofm.align import propagate_text

    prop = domain.prop if hops == domain.hops else propagate_text(domain.text, domain.edge_index, hops=hops)
    out = {}
    for name, emb in (("text_only", domain.text), ("text_propagation", prop)):
        metrics, pred = evaluate_embeddings(emb, domain.class_emb, domain.labels)
        out[name] = {"metrics": metrics, "pred": pred, "embedding": emb}
    return out


def baseline_metrics(domain: Any, *, hops: int) -> dict[str, dict[str, float]]:
    """{"text_only", "text_propagation"} -> {accuracy, macro_f1} (see `score_baselines`)."""
    return {name: b["metrics"] for name, b in score_baselines(domain, hops=hops).items()}


def evaluate_aligned(model: Any, domain: Any, *, correction_scale: float = 1.0, scope: str = "all"
                     ) -> dict[str, Any]:
    """Zero-shot metrics of a frozen aligner on one prepared target, no baselines:
    {"metrics": {accuracy, macro_f1}, "pred": [N], "embedding": [N, D], "gate_mean": [E],
    "curvatures": [E]}. correction_scale / scope: see `geofm.align.compose`."""
    from geofm.align import embed_nodes

    out = embed_nodes(model, domain, correction_scale=correction_scale, scope=scope)
    metrics, pred = evaluate_embeddings(out.embedding, domain.class_emb, domain.labels)
    return {"metrics": metrics, "pred": pred, "embedding": out.embedding,
            "gate_mean": np.asarray(out.gate).mean(axis=0).round(4).tolist(),
            "curvatures": np.asarray(out.ks).round(4).tolist()}


def evaluate_target(model: Any, domain: Any, *, baseline_hops: int = 2, few_shot_k: Sequence[int] = (),
                    few_shot_trials: int = 5, seed: int = 0, correction_scale: float = 1.0,
                    scope: str = "all", baselines: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Zero-shot (and few-shot) evaluation of a frozen aligner on one prepared target
    (`geofm.align.DomainInputs`) beside both baselines (`score_baselines`, computed here
    unless passed in). correction_scale / scope: see `geofm.align.compose`
    (`correction_scale_for` computes the scale).

    Returns a JSON-able dict: accuracy, macro_f1, baselines{text_only, text_propagation},
    few_shot{k: {method: {...}}} for aligned and text_propagation, counts, and under "_arrays"
    (not JSON) the predictions and embeddings for `plot_target`. A target without labelled
    nodes gets predictions only: every metric None, no few-shot.
    """
    labels, cls = domain.labels, domain.class_emb
    if not (labels >= 0).any():
        log.warning("%s has no labelled node: zero-shot predictions only, no accuracy", domain.name)
        few_shot_k = ()
    base = baselines if baselines is not None else score_baselines(domain, hops=baseline_hops)
    al = evaluate_aligned(model, domain, correction_scale=correction_scale, scope=scope)
    z = al["embedding"]
    result: dict[str, Any] = {
        "dataset": domain.name,
        **al["metrics"],
        "baselines": {name: b["metrics"] for name, b in base.items()},
        "num_nodes": domain.num_nodes,
        "num_labelled": int((labels >= 0).sum()),
        "num_classes": int(cls.shape[0]),
        "empty_texts": domain.n_empty,
        "truncated_texts": domain.n_truncated,
        "classes_without_description": domain.n_missing_descriptions,
        "gate_mean": al["gate_mean"],
        "curvatures": al["curvatures"],
        "correction_scale": float(correction_scale),
        "overlap_scope": scope,
    }
    if check_sequence(few_shot_k, "evaluate_target few_shot_k", int):
        prop = base["text_propagation"]["embedding"]
        result["few_shot"] = {
            str(k): {
                "aligned": few_shot_eval(z, labels, cls.shape[0], k=k, trials=few_shot_trials, seed=seed),
                "text_propagation": few_shot_eval(prop, labels, cls.shape[0], k=k, trials=few_shot_trials, seed=seed),
            }
            for k in few_shot_k
        }
    result = finite_or_none(result)
    result["_arrays"] = {"pred": al["pred"], "pred_text_only": base["text_only"]["pred"],
                         "pred_text_propagation": base["text_propagation"]["pred"], "embedding": z, "labels": labels}
    return result


# ----------------------------------------------------------------------------- selection


def correction_scale_for(class_emb: np.ndarray, source_class_emb: np.ndarray | None, *, power: float) -> float:
    """label_overlap(target classes, source classes) ** power (1.0 when power == 0 or the
    source classes are unknown, e.g. a run saved before they were stored)."""
    from geofm.align import label_overlap

    if power < 0:
        raise ValueError(f"eval.overlap_power must be >= 0, got {power}")
    if power == 0 or source_class_emb is None:
        return 1.0
    return float(label_overlap(class_emb, source_class_emb) ** power)


def validation_gain(metrics: dict[str, float], baselines: dict[str, dict[str, float]]) -> float:
    """The selection criterion: min over {accuracy, macro_f1} of (metric - the better
    baseline's metric). Positive iff both metrics beat both baselines."""
    return min(metrics[m] - max(b[m] for b in baselines.values()) for m in ("accuracy", "macro_f1"))


def setting_key(steps: int, power: float, scope: str) -> str:
    """The key of one (steps, overlap power, overlap scope) setting in selection scores."""
    return f"steps={steps},power={power:g},scope={scope}"


def select_on_sources(candidates: dict[str, Any], sources: Sequence[Any], *, checkpoints: Sequence[int],
                      overlap_powers: Sequence[float] = (0.0,), overlap_scopes: Sequence[str] = ("all",),
                      seeds: Sequence[int] = (0,), log_fn: Any = None) -> dict[str, Any]:
    """Leave-one-source-out model selection that never touches the target.

    For every held-out source v, candidate config (`geofm.align.AlignConfig`) and seed in
    `seeds`, train on the other sources for max(checkpoints) steps and score v zero-shot
    after each checkpoint step, once per (overlap power, overlap scope): one forward per
    checkpoint, the parts rescaled on the host (`geofm.align.compose`; the scale is
    `correction_scale_for(v's classes, the fold's training classes, power)`). Criterion
    per fold and seed: `validation_gain` against v's own baselines; a (candidate, steps,
    power, scope) setting is ranked by its mean gain over folds and seeds (ties: higher
    mean of accuracy and macro-F1). Returns {"chosen": {"candidate", "steps",
    "overlap_power", "overlap_scope"}, "criterion", "seeds", "scores": {name:
    {setting_key: {"mean_gain", "mean_score", "folds": {v: {accuracy, macro_f1, gain,
    scale}}}}}, "baselines": {v: ...}}; fold entries are means over seeds."""
    from dataclasses import replace

    from geofm.align import OVERLAP_SCOPES, build_aligner, compose, embed_nodes, train_aligner

    if len(sources) < 2:
        raise ValueError(f"leave-one-source-out selection needs >= 2 sources, got {len(sources)}")
    if not candidates or not checkpoints or not seeds:
        raise ValueError("select_on_sources needs at least one candidate, checkpoint and seed")
    bad = [sc for sc in overlap_scopes if sc not in OVERLAP_SCOPES]
    if bad:
        raise ValueError(f"unknown overlap scope(s) {bad}; known: {list(OVERLAP_SCOPES)}")
    steps_list = sorted(int(s) for s in checkpoints)
    settings = [(s, float(p), sc) for s in steps_list for p in overlap_powers for sc in overlap_scopes]
    scores: dict[str, dict[str, Any]] = {}
    hops = {c.eval.hops for c in candidates.values()}
    if len(hops) != 1:
        raise ValueError(f"candidates must share eval.hops (the baselines they are compared with), got {sorted(hops)}")
    (base_hops,) = hops
    bases = {v.name: baseline_metrics(v, hops=base_hops) for v in sources}
    for name, cfg in candidates.items():
        # per[setting][fold] -> one row per seed
        per: dict[tuple, dict[str, list[dict[str, float]]]] = {st: {} for st in settings}
        for v in sources:
            train = [d for d in sources if d is not v]
            base = bases[v.name]
            seen_classes = np.concatenate([d.class_emb for d in train])
            scale_of = {p: correction_scale_for(v.class_emb, seen_classes, power=p) for _, p, _ in settings}

            def score(step: int, m: Any, v=v, base=base, scale_of=scale_of) -> None:
                out = embed_nodes(m, v)
                for s, p, sc in settings:
                    if s != step:
                        continue
                    z = compose(out, scale=np.float32(scale_of[p]), scope=sc)
                    met = evaluate_embeddings(z, v.class_emb, v.labels)[0]
                    row = {**met, "gain": validation_gain(met, base), "scale": scale_of[p]}
                    per[(s, p, sc)].setdefault(v.name, []).append(row)
                    if log_fn is not None:
                        log_fn(f"select {name:10s} held-out {v.name:14s} step {step:4d} power {p:g} {sc:8s} "
                               f"(scale {scale_of[p]:.3f}): acc {met['accuracy']:.4f} F1 {met['macro_f1']:.4f} "
                               f"gain {row['gain']:+.4f}")

            for seed in seeds:
                run_cfg = replace(cfg, seed=int(seed), train=replace(cfg.train, steps=steps_list[-1]))
                model = build_aligner(run_cfg, text_dim=int(v.text.shape[1]))
                train_aligner(model, train, run_cfg, callback=score, callback_steps=steps_list)
        scores[name] = {}
        for (s, p, sc), folds in per.items():
            fold_mean = {v: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} for v, rows in folds.items()}
            scores[name][setting_key(s, p, sc)] = {
                "steps": s, "overlap_power": p, "overlap_scope": sc,
                "mean_gain": float(np.mean([f["gain"] for f in fold_mean.values()])),
                "mean_score": float(np.mean([(f["accuracy"] + f["macro_f1"]) / 2 for f in fold_mean.values()])),
                "folds": fold_mean}
    best = max(((n, k) for n in scores for k in scores[n]),
               key=lambda nk: (scores[nk[0]][nk[1]]["mean_gain"], scores[nk[0]][nk[1]]["mean_score"]))
    top = scores[best[0]][best[1]]
    return {"chosen": {"candidate": best[0], "steps": int(top["steps"]), "overlap_power": top["overlap_power"],
                       "overlap_scope": top["overlap_scope"]},
            "criterion": "mean over held-out sources (and seeds) of min(accuracy gain, macro-F1 gain) against that "
                         "source's better parameter-free baseline; ties by mean (accuracy + macro-F1)/2",
            "seeds": [int(x) for x in seeds], "scores": scores, "baselines": bases}


# ----------------------------------------------------------------------------- visuals


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [C, C] (row = true class, column = predicted) over labelled nodes."""
    keep = np.asarray(labels) >= 0
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels)[keep], np.asarray(pred)[keep]), 1)
    return cm


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Top-2 principal components of x [N, D] -> [N, 2] float32 (deterministic sign, zero
    columns when x has fewer than 3 rows or 2 dimensions; `geofm.kg.init.pca_basis`)."""
    from geofm.kg.init import pca_basis

    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"pca_2d needs a 2-D array [N, D], got shape {x.shape}")
    out = np.zeros((x.shape[0], 2), np.float32)
    if x.shape[0] >= 2:
        mean, basis, _ = pca_basis(x, dim=2)
        out[:, : basis.shape[1]] = (x - mean) @ basis
    return out


def plot_target(path: str | Path, *, title: str, labels: np.ndarray, pred: np.ndarray, embedding: np.ndarray,
                class_names: Sequence[str], max_points: int = 5000, seed: int = 0) -> Path:
    """PNG with the row-normalised confusion matrix (left) and a PCA view of the node
    embeddings coloured by true class (right; at most `max_points` random nodes). A target
    without labelled nodes: predicted-class counts (left), points coloured by prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = len(class_names)
    labelled = bool((np.asarray(labels) >= 0).any())
    colour_by = np.asarray(labels) if labelled else np.asarray(pred)
    keep = np.flatnonzero(colour_by >= 0)
    if keep.size > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(keep, size=max_points, replace=False))
    xy = pca_2d(np.asarray(embedding)[keep])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5.8))
    short = [n if len(n) <= 18 else n[:17] + "…" for n in class_names]
    ticks = np.arange(c)
    fs = 7 if c <= 12 else 4
    if labelled:
        cm = confusion_matrix(pred, labels, c).astype(np.float64)
        im = a1.imshow(cm / np.maximum(cm.sum(axis=1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        a1.set_xticks(ticks, short, rotation=90, fontsize=fs)
        a1.set_yticks(ticks, short, fontsize=fs)
        a1.set_xlabel("predicted")
        a1.set_ylabel("true")
        a1.set_title("confusion (row-normalised)")
        fig.colorbar(im, ax=a1, fraction=0.046)
    else:
        a1.barh(ticks, np.bincount(np.asarray(pred), minlength=c))
        a1.set_yticks(ticks, short, fontsize=fs)
        a1.invert_yaxis()
        a1.set_xlabel("nodes")
        a1.set_title("predicted class (no labelled nodes)")
    cmap = plt.get_cmap("tab20" if c > 10 else "tab10")
    y = colour_by[keep]
    for j in range(c):
        m = y == j
        if m.any():
            a2.scatter(xy[m, 0], xy[m, 1], s=4, color=cmap(j % cmap.N), label=short[j] if c <= 20 else None)
    if c <= 20:
        a2.legend(fontsize=6, markerscale=3, loc="best")
    a2.set_title(f"node embeddings (PCA), coloured by {'true' if labelled else 'predicted'} class")
    a2.set_xticks([])
    a2.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


# ----------------------------------------------------------------------------- runs


def load_text_encoder(path: str | None = None) -> Any:
    """The text encoder of a run (`geofm.text.TextEncoder.load(path)`; None = packaged model)."""
    from geofm.text import TextEncoder

    return TextEncoder.load(path)


def prepare_named(name: str, cfg: Any, encoder: Any, *, data_dir: str | None = None, hops: int | None = None) -> Any:
    """Load a TAG by name or folder and prepare it (`geofm.align.prepare_domain`).
    ValueError when the dataset is not a text-attributed graph."""
    from geofm.align import prepare_domain
    from geofm.data import TAGDataset, load_dataset

    ds = load_dataset(name, data_dir if data_dir is not None else cfg.data_dir)
    if not isinstance(ds, TAGDataset):
        raise ValueError(f"dataset {name!r} is a {type(ds).__name__}, not a text-attributed graph "
                         f"(nodes.jsonl + edges.tsv + labels.json)")
    return prepare_domain(ds, encoder, cfg.prompts, hops=cfg.model.hops if hops is None else hops,
                          batch_size=cfg.text_batch_size, mix_hops=cfg.model.mix_hops if cfg.model.depth_mix else 0)


def train_run(cfg: Any, out: str | Path, *, exclude: Sequence[str] = (), encoder: Any = None,
              domains: dict[str, Any] | None = None, progress: bool = False) -> Path:
    """Train an aligner on cfg.sources minus `exclude` (the cross-dataset target) and save
    it to `out`. `domains` optionally maps source names to prepared `DomainInputs`."""
    import time

    from geofm.align import AlignConfig, build_aligner, save_aligner, train_aligner
    from geofm.config import check_config

    check_config(cfg, AlignConfig, "train_run")
    if Path(out).exists() and not (Path(out).is_dir() and not any(Path(out).iterdir())):
        raise ValueError(f"run folder {out} exists and is not an empty folder: choose another --out (an aligner "
                         "is saved once, into a new folder)")
    skip = {_key(x): _folder(x, cfg.data_dir) for x in exclude}
    for s in (s for s in cfg.sources if _key(s) in skip):
        mine, theirs = _folder(s, cfg.data_dir), skip[_key(s)]
        if None not in (mine, theirs) and mine != theirs:
            raise ValueError(f"target {theirs} and source {mine} are different datasets "
                             f"with one name ({_key(s)!r}); datasets are told apart by name here (the excluded "
                             "target, the seen-target check, result files), so rename one")
    sources = [s for s in cfg.sources if _key(s) not in skip]
    if not sources:
        raise ValueError(f"no source datasets left to train on (sources {list(cfg.sources)}, excluded {list(exclude)})")
    encoder = encoder if encoder is not None else load_text_encoder(cfg.text_model)
    prepared = [(domains or {}).get(s) or prepare_named(s, cfg, encoder) for s in sources]
    model = build_aligner(cfg, text_dim=int(prepared[0].text.shape[1]))
    t0 = time.perf_counter()
    result = train_aligner(model, prepared, cfg, progress=progress)
    info = {"trained_on": [d.name for d in prepared], "excluded": list(exclude), "steps": len(result.losses),
            "final_loss": float(np.mean(result.losses[-20:])) if result.losses else float("nan"),
            "train_seconds": round(time.perf_counter() - t0, 2)}
    from dataclasses import replace

    cfg = replace(cfg, sources=sources)
    return save_aligner(out, model, cfg, text_dim=int(prepared[0].text.shape[1]), info=info,
                        source_class_emb=np.concatenate([d.class_emb for d in prepared]))


def _key(name: str) -> str:
    """A dataset's name from a name or a path (`.` and `..` named after their folders), lowercase;
    text only (no symlink followed, nothing read from disk)."""
    return Path(os.path.abspath(str(name))).name.lower()


def _folder(name: str, data_dir: str | None) -> str | None:
    """The resolved folder of a dataset name or path, None when it does not resolve (its
    loading reports that)."""
    from geofm.data.registry import find_dataset

    try:
        return str(find_dataset(name, data_dir).resolve())
    except (ValueError, FileNotFoundError):
        return None


def evaluate_run(run: str | Path, dataset: str, *, data_dir: str | None = None, plot: bool = True,
                 few_shot: bool = True, encoder: Any = None, allow_seen: bool = False) -> dict[str, Any]:
    """Zero-shot evaluation of a saved run on one target; writes RUN/zero_shot/<target>.json
    (+ .png) and the aligned model's prediction for every node, RUN/zero_shot/<target>.predictions.tsv
    (`write_predictions`; score = cosine to that class prompt). A target without labels gets
    the predictions, its metrics are None. ValueError when the target was a training source
    (cross-dataset protocol) unless allow_seen."""
    import json

    from geofm.align import load_aligner

    model, cfg, meta = load_aligner(run)
    seen = {_key(s) for s in meta.get("trained_on", cfg.sources)}
    if _key(dataset) in seen and not allow_seen:
        raise ValueError(f"target {dataset!r} was a training source of {run} (trained on "
                         f"{sorted(seen)}); the zero-shot protocol needs an unseen target")
    encoder = encoder if encoder is not None else load_text_encoder(cfg.text_model)
    dom = prepare_named(dataset, cfg, encoder, data_dir=data_dir)
    scale = correction_scale_for(dom.class_emb, meta.get("source_class_emb"), power=cfg.eval.overlap_power)
    res = evaluate_target(model, dom, baseline_hops=cfg.eval.hops,
                          few_shot_k=cfg.eval.few_shot_k if few_shot else (),
                          few_shot_trials=cfg.eval.few_shot_trials, seed=cfg.seed, correction_scale=scale,
                          scope=cfg.eval.overlap_scope)
    arrays = res.pop("_arrays")
    res["trained_on"] = meta.get("trained_on", list(cfg.sources))
    folder = Path(run) / "zero_shot"
    folder.mkdir(parents=True, exist_ok=True)
    stem = _key(dataset).replace(" ", "_")
    path, res["predicted_counts"] = write_predictions(folder / f"{stem}.predictions.tsv",
                                                      class_scores(arrays["embedding"], dom.class_emb), dom.class_names)
    res["predictions"] = str(path)
    atomic_write_text(folder / f"{stem}.json", json.dumps(res, indent=1))
    if plot:
        acc = "predictions (no labels)" if res["accuracy"] is None else f"acc {res['accuracy']:.3f}"
        plot_target(folder / f"{stem}.png", title=f"{dom.name}: zero-shot {acc}",
                    labels=arrays["labels"], pred=arrays["pred"], embedding=arrays["embedding"],
                    class_names=dom.class_names)
    return res
