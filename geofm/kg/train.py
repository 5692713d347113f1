"""KG-completion training loop: one jitted `lax.scan` per epoch, early stopping, best+last checkpoints.

`train_kg(cfg, run_dir)` loads the dataset, builds the model by name, trains on
train triples plus their reciprocals (t, r + R, h), validates (filtered MRR)
every `train.valid_every` epochs, keeps best+last orbax checkpoints in
`run_dir/checkpoints` (resumable), restores the best, and evaluates valid and
test with per-relation / per-direction breakdowns. It writes
`run_dir/config.yaml`, `run_dir/metrics.jsonl` and `run_dir/results.json`.

The whole epoch is one compiled function: the permutation, negative sampling
and dropout keys are drawn on device from `fold_in(key(seed), epoch)`; the last
batch is padded with zero-weight rows, so shapes are static (one compilation).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import geofm
from geofm.checkpoint import CheckpointError, Checkpointer, check_resume, latest_metadata
from geofm.config import check_config, dump_config, to_dict
from geofm.data.cache import atomic_write_text
from geofm.data.types import KGDataset
from geofm.kg.config import KGConfig, LossConfig, OptimConfig
from geofm.kg.evaluate import RankingEvaluator
from geofm.kg.models import MODELS, KGModel, build_model, model_class

log = logging.getLogger("geofm.kg")

__all__ = ["train_kg", "build_run_model", "restore_state", "make_optimizer", "make_loss_fn", "reciprocal_triples", "load_kg_dataset", "with_entity_text", "router_by_relation"]


# ----------------------------------------------------------------- pieces ---


def load_kg_dataset(name: str, data_dir: str | None, entity_text: str | None = None) -> KGDataset:
    """Load a KG by name or folder with geofm.data (raises ValueError for non-KG folders);
    entity_text: the entity text file to read (None: the loader's default)."""
    from geofm.data.registry import load_dataset

    ds = load_dataset(name, data_dir, **({} if entity_text is None else {"entity_text": entity_text}))
    if not isinstance(ds, KGDataset):
        raise ValueError(f"dataset {name!r} is not a knowledge graph (got {type(ds).__name__})")
    return ds


def with_entity_text(ds: KGDataset, entity_text: str | None) -> KGDataset:
    """`ds` with its entity texts read from the file `entity_text` of its folder (None: the
    file the loader reads by default); `ds` itself when that file is the one it holds (or
    when it was not loaded from a folder and no file is named). Only the text file is read."""
    from geofm.data.kg import DEFAULT_ENTITY_TEXT, pick_entity_text, read_id_texts

    have = (ds.meta.get("entity_text") or {}).get("file")
    source = ds.meta.get("source")
    if source is None:
        if entity_text is None or entity_text == have:
            return ds
        raise ValueError(f"data.entity_text={entity_text!r}: dataset {ds.name!r} was not loaded from a folder")
    path = pick_entity_text(Path(source), entity_text or DEFAULT_ENTITY_TEXT)
    if path is None or path.name == have:
        return ds
    texts, info = read_id_texts(path, {e: i for i, e in enumerate(ds.entities)}, "entity")
    return dataclasses.replace(ds, entity_text=texts, meta={**ds.meta, "entity_text": info})


def reciprocal_triples(triples: np.ndarray, num_relations: int) -> np.ndarray:
    """[n, 3] -> [2n, 3]: the triples followed by (t, r + R, h)."""
    t = np.asarray(triples, np.int32)
    inv = np.stack([t[:, 2], t[:, 1] + num_relations, t[:, 0]], 1)
    return np.concatenate([t, inv]).astype(np.int32)


def make_optimizer(cfg: OptimConfig, model: KGModel) -> optax.GradientTransformation:
    """The configured optax transform (Riemannian Adam uses the model's `manifold_specs`, if any)."""
    if not cfg.lr > 0 or (cfg.grad_clip is not None and not cfg.grad_clip > 0):
        raise ValueError(f"optim.lr must be > 0 and optim.grad_clip > 0 or null, got {cfg.lr} and {cfg.grad_clip}")
    if cfg.name == "adam":
        tx = optax.adam(cfg.lr)
    elif cfg.name == "adagrad":
        tx = optax.adagrad(cfg.lr, initial_accumulator_value=0.0, eps=1e-10)
    else:
        from manifolds.optim import riemannian_adam

        tx = riemannian_adam(cfg.lr, manifolds=getattr(model, "manifold_specs", lambda: None)())
    if cfg.grad_clip:
        tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
    return tx


def smoothed_nll(logp_true: jax.Array, logp_mean: jax.Array, eps: float) -> jax.Array:
    """Label-smoothed negative log-likelihood [B]: -(1 - eps) log p(true) - eps * mean log p(candidates)."""
    return -(1.0 - eps) * logp_true - eps * logp_mean


def check_loss(cfg: LossConfig, model: str | None = None) -> None:
    """ValueError for loss settings that cannot train; with `model` (a registry name), also for
    an unknown model and for loss.relation_prediction > 0 on a model without `score_relations`."""
    if cfg.name in ("neg_sampling", "sampled_ce") and cfg.num_negatives < 1:
        raise ValueError(f"loss.num_negatives must be >= 1 for {cfg.name}")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ValueError("loss.label_smoothing must be in [0, 1)")
    if not (cfg.relation_prediction >= 0.0 and math.isfinite(cfg.relation_prediction)):
        raise ValueError(f"loss.relation_prediction must be a finite weight >= 0, got {cfg.relation_prediction}")
    cls = model_class(model) if model is not None else None  # an unknown name is refused here too
    if cfg.relation_prediction and cls is not None and cls.score_relations is KGModel.score_relations:
        have = sorted(n for n, c in MODELS.items() if c.score_relations is not KGModel.score_relations)
        raise ValueError(f"loss.relation_prediction needs a model that scores relations; {model!r} does not "
                         f"(models that do: {have})")


def make_loss_fn(cfg: LossConfig, graphdef: Any, num_entities: int) -> Callable:
    """loss(params, rest, batch [B, 3], weights [B], key) -> scalar (weighted mean + regularisers)."""
    check_loss(cfg)

    def loss_fn(params, rest, batch, weights, key):
        model = nnx.merge(graphdef, params, rest)
        h, r, t = batch[:, 0], batch[:, 1], batch[:, 2]
        k_drop, k_neg, k_head, k_drop2 = jax.random.split(key, 4)
        q = model.query(h, r, key=k_drop)
        if cfg.name == "1n_ce":
            logp = jax.nn.log_softmax(model.score_shared(q, jnp.arange(num_entities, dtype=jnp.int32)), -1)
            per = smoothed_nll(jnp.take_along_axis(logp, t[:, None], 1)[:, 0], jnp.mean(logp, -1), cfg.label_smoothing)
        elif cfg.name == "sampled_ce":
            cand = jax.random.randint(k_neg, (cfg.num_negatives,), 0, num_entities, dtype=jnp.int32)
            pos = model.score_rows(q, t[:, None])
            hit = cand[None, :] == t[:, None]  # accidental hits of the true tail are removed
            logits = jnp.concatenate([pos, jnp.where(hit, -jnp.inf, model.score_shared(q, cand))], 1)
            logp = jax.nn.log_softmax(logits, -1)
            valid = jnp.concatenate([jnp.ones_like(pos, bool), ~hit], 1)
            per = smoothed_nll(logp[:, 0], jnp.sum(jnp.where(valid, logp, 0.0), -1) / jnp.sum(valid, -1), cfg.label_smoothing)
        else:
            b, kn = h.shape[0], cfg.num_negatives
            negs = jax.random.randint(k_neg, (b, kn), 0, num_entities, dtype=jnp.int32)
            pos = model.score_rows(q, t[:, None])[:, 0]
            if cfg.double_neg:
                heads = jax.random.randint(k_head, (b * kn,), 0, num_entities, dtype=jnp.int32)
                qn = model.query(heads, jnp.repeat(r, kn), key=k_drop2)
                neg = model.score_rows(qn, negs.reshape(-1, 1)).reshape(b, kn)
            else:
                neg = model.score_rows(q, negs)
            if cfg.adversarial_temperature > 0:
                wn = jax.lax.stop_gradient(jax.nn.softmax(cfg.adversarial_temperature * neg, -1))
            else:
                wn = jnp.full_like(neg, 1.0 / kn)
            neg_term = jnp.sum(wn * jax.nn.log_sigmoid(-neg), -1)
            if cfg.reduction == "mean_all":
                per = -(jax.nn.log_sigmoid(pos) + kn * neg_term) / (kn + 1)
            else:
                per = -(jax.nn.log_sigmoid(pos) + neg_term) / 2
        if cfg.relation_prediction > 0:
            logp_r = jax.nn.log_softmax(model.score_relations(h, t), -1)
            per = per - cfg.relation_prediction * jnp.take_along_axis(logp_r, r[:, None], 1)[:, 0]
        data = jnp.sum(weights * per) / jnp.maximum(jnp.sum(weights), 1.0)
        return data + model.regularizer(h, r, t) + model.aux_loss(q)

    return loss_fn


def make_epoch_fn(loss_fn: Callable, tx: optax.GradientTransformation, batch_size: int) -> Callable:
    """Jitted (params, opt_state, rest, key, train [n, 3]) -> (params, opt_state, mean loss)."""

    @jax.jit
    def epoch(params, opt_state, rest, key, train):
        n = train.shape[0]
        steps = -(-n // batch_size)
        k_perm, k_steps = jax.random.split(key)
        perm = jax.random.permutation(k_perm, n)
        pad = steps * batch_size - n
        idx = jnp.concatenate([perm, perm[:pad]]).reshape(steps, batch_size)
        w = jnp.concatenate([jnp.ones(n, train.dtype), jnp.zeros(pad, train.dtype)]).reshape(steps, batch_size)

        def step(carry, xs):
            p, s = carry
            i, idx_b, w_b = xs
            loss, grads = jax.value_and_grad(loss_fn)(p, rest, train[idx_b], w_b.astype(jnp.float32), jax.random.fold_in(k_steps, i))
            updates, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (jnp.arange(steps), idx, w))
        return params, opt_state, jnp.mean(losses)

    return epoch


def router_by_relation(model: Any, triples: np.ndarray, relation_names: list[str], num_relations: int, chunk: int = 1024) -> dict[str, Any]:
    """Mean CAT router weights per relation and direction on `triples` (both query directions).

    Returns {relation: {"tail": {...}, "head": {...}}} where each entry maps
    branch name -> mean weight of the [MASK] token over blocks ("mean"), "per_block",
    and "score": the mean weights of the geometries in the final score.
    """
    rec = reciprocal_triples(triples, num_relations)
    fn = jax.jit(lambda h, r: model.encode(h, r)[1:])  # (router weights per block, score weights)
    ws, ss = [], []
    for s in range(0, len(rec), chunk):
        part = rec[s : s + chunk]
        n = len(part)
        padded = np.pad(part, ((0, chunk - n), (0, 0)))
        w_blocks, w_score = fn(jnp.asarray(padded[:, 0]), jnp.asarray(padded[:, 1]))
        ws.append(np.asarray(w_blocks)[:n])
        ss.append(np.asarray(w_score)[:n])
    w = np.concatenate(ws)[:, :, 2]  # [Q, blocks, branches] for the [MASK] token
    score = np.concatenate(ss)  # [Q, branches]
    out: dict[str, Any] = {}
    for rel in range(2 * num_relations):
        sel = rec[:, 1] == rel
        if not sel.any():
            continue
        name = relation_names[rel % num_relations]
        direction = "tail" if rel < num_relations else "head"
        mean = w[sel].mean(0)  # [blocks, branches]
        out.setdefault(name, {})[direction] = {
            "mean": {b: float(v) for b, v in zip(model.branches, mean.mean(0))},
            "per_block": mean.tolist(),
            "score": {b: float(v) for b, v in zip(model.branches, score[sel].mean(0))},
            "count": int(sel.sum()),
        }
    return out


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _leaf_names(tree: Any) -> list[str]:
    """Readable path names of the leaves, in flatten order ("params_entity_value", ...)."""
    names = [re.sub(r"[^A-Za-z0-9]+", "_", jax.tree_util.keystr(p)).strip("_")
             for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    if len(set(names)) != len(names):
        raise ValueError("two state leaves map to the same checkpoint name")
    return names


def _flat(tree: Any) -> dict[str, Any]:
    """Pytree -> {path name: leaf} (a plain dict orbax can store; a model change shows up by name
    in the checkpoint mismatch error, not as a shift of every later leaf)."""
    return dict(zip(_leaf_names(tree), jax.tree_util.tree_leaves(tree)))


def _unflat(template: Any, flat: dict[str, Any]) -> Any:
    treedef = jax.tree_util.tree_structure(template)
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(flat[k]) for k in _leaf_names(template)])


@contextlib.contextmanager
def _precision(dtype: str) -> Iterator[Any]:
    """Enable float64 for the run when asked, through JAX's scoped config context
    (`jax.enable_x64`, part of every jit cache key) rather than flipping the
    process-global flag, which would leak into compiled caches of other code."""
    if dtype == "float64":
        with jax.enable_x64(True):
            yield jnp.float64
    else:
        yield jnp.float32


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="epoch", dynamic_ncols=True, file=sys.stderr)


def count_params(model: nnx.Module) -> int:
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


# ------------------------------------------------------------------- main ---


def train_kg(
    cfg: KGConfig,
    run_dir: str | Path | None = None,
    *,
    dataset: KGDataset | None = None,
    progress: bool | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    text_encoder: Any = None,
) -> dict[str, Any]:
    """Train and evaluate; returns the results dict (also written to run_dir/results.json).

    text_encoder: for `init.kind: text`, an object with `encode(texts) -> [n, D]`
    (None = geofm.text.TextEncoder named by `init.encoder`); see geofm.kg.init.
    """
    check_config(cfg, KGConfig, "train_kg")
    if dataset is not None and not isinstance(dataset, KGDataset):
        raise TypeError(f"train_kg: dataset must be a KGDataset (geofm.data.load_dataset of a KG folder), got "
                        f"{type(dataset).__name__}")
    for key, low in (("epochs", 0), ("batch_size", 1), ("valid_every", 1), ("patience", 1)):
        if getattr(cfg.train, key) < low:
            raise ValueError(f"train.{key} must be >= {low}, got {getattr(cfg.train, key)}")
    if cfg.train.max_seconds is not None and cfg.train.max_seconds <= 0:
        raise ValueError(f"train.max_seconds must be > 0 (or null), got {cfg.train.max_seconds}")
    check_loss(cfg.loss, cfg.model.name)  # before any data is loaded or a folder is made
    progress = sys.stderr.isatty() if progress is None else progress
    ds = dataset if dataset is not None else load_kg_dataset(cfg.data.name, cfg.data.data_dir, cfg.data.entity_text)
    ds = with_entity_text(ds, cfg.data.entity_text)
    run = Path(run_dir) if run_dir is not None else None
    if run is not None:
        run.mkdir(parents=True, exist_ok=True)
    with _precision(cfg.train.dtype) as dtype:
        return _train(cfg, ds, run, dtype, progress, on_epoch, text_encoder)


def build_run_model(cfg: KGConfig, ds: KGDataset, dtype: Any, *, text_encoder: Any = None,
                    progress: bool | None = False) -> tuple[KGModel, dict[str, Any]]:
    """The model of a run before training: built by name with the config's seed, entity
    init applied; returns (model, init summary). Call inside the run's precision context."""
    model = build_model(cfg.model.name, ds.num_entities, ds.num_relations, seed=cfg.seed, dtype=dtype, **cfg.model.kwargs)
    init_info: dict[str, Any] = {"kind": "random"}
    if cfg.init.kind != "random":
        from geofm.kg.init import apply_entity_init

        init_info = apply_entity_init(model, ds.entity_text, cfg.init, encoder=text_encoder, progress=progress,
                                      triples=ds.train, name=ds.name)
    elif hasattr(model, "set_text"):  # frozen-embedding models (kg.models.TextKG)
        raise ValueError(f"model {cfg.model.name!r} scores entities by their text embeddings: set init.kind: text "
                         "(entity2text.txt through the text encoder, or init.embeddings: FILE.npy) or init.kind: graph")
    return model, init_info


def restore_state(ckpt: Checkpointer, template: Any, *, which: str = "latest", step: int | None = None,
                  entity_init: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Restore {"params", "opt_state"} (structure of `template`) from a run's checkpoints.

    step (when known) wins over which. Checkpoints written before leaves were keyed by path name (leaf names carried
    a 4-digit flatten-index prefix, "0015_params_entity_value") are read too.
    entity_init: the init summary of the model being restored (`build_run_model`); a
    frozen entity table (text model, learned text projection) must match the one recorded
    at training time, so it is required when the checkpoint recorded one.
    """
    from geofm.kg.init import check_table_fingerprint

    flat = _flat(template)
    step = ckpt.step_for(which) if step is None else step  # type: ignore[arg-type]
    meta = ckpt.read_meta(step) if step is not None else {}
    recorded = meta.get("metadata", {}).get("entity_init", {}).get("table_fingerprint")
    if recorded and entity_init is None:
        raise ValueError(f"{ckpt.directory} step {step} recorded a frozen entity table: pass the init summary of the "
                         "model being restored (entity_init=, from build_run_model) so the table can be checked")
    check_table_fingerprint(recorded, (entity_init or {}).get("table_fingerprint"), where=f"{ckpt.directory} step {step}")
    saved = meta.get("fingerprint", {})
    if saved and all(re.match(r"\d{4}_", k) for k in saved):  # legacy: match each saved leaf by its name
        by_name = {k[5:]: k for k in saved}
        missing, extra = sorted(set(flat) - set(by_name)), sorted(set(by_name) - set(flat))
        if missing or extra:
            raise CheckpointError(f"checkpoint {ckpt.directory} step {step} does not match the model/optimizer being "
                                  f"restored: missing {missing[:5]}, unexpected {extra[:5]}")
        state, info = ckpt.restore({by_name[k]: v for k, v in flat.items()}, step=step)
        return _unflat(template, {k[5:]: v for k, v in state.items()}), info
    state, info = ckpt.restore(flat, step=step)
    return _unflat(template, state), info


# Config keys a resumed run may change: budgets, stopping, evaluation, where the data live (the
# data themselves are compared by checksum) and where the entity init is read from (the restored
# parameters replace the init; a frozen entity table is compared by its fingerprint in
# `restore_state`), e.g. an init.embeddings file at another path on another machine.
RESUMABLE_KEYS = ("train.epochs", "train.max_seconds", "train.resume", "train.patience", "train.valid_every",
                  "eval", "data.data_dir", "init.embeddings", "init.encoder", "init.checkpoint", "init.batch_size")


def _check_run_folder(run: Path | None, cfg: KGConfig, ds: KGDataset) -> None:
    """Before anything is built or written: ValueError when `run` holds checkpoints and
    train.resume is off, CheckpointError when they were trained with another config (outside
    RESUMABLE_KEYS) or on other data."""
    latest = latest_metadata(run / "checkpoints") if run is not None else None
    if latest is None:
        return
    step, saved = latest
    if not cfg.train.resume:
        raise ValueError(f"{run} already holds checkpoints (up to epoch {step}): use another run folder, or "
                         "set train.resume=true to continue them")
    checksums = ds.meta.get("checksums")
    # data.name may differ (a folder path vs a registry name) when the checksums say the files are the same
    allowed = RESUMABLE_KEYS + (("data.name",) if saved.get("checksums") and checksums else ())
    check_resume(saved, config=cfg, checksums=checksums, allowed=allowed, where=str(run),
                 hint=f"Use another run folder, or the recorded config ({run / 'config.yaml'})")


def _train(cfg: KGConfig, ds: KGDataset, run: Path | None, dtype: Any, progress: bool, on_epoch,
           text_encoder: Any = None) -> dict[str, Any]:
    n_ent, n_rel = ds.num_entities, ds.num_relations
    _check_run_folder(run, cfg, ds)  # before the model (and a text init's encoding) is built
    model, init_info = build_run_model(cfg, ds, dtype, text_encoder=text_encoder, progress=progress)
    n_params = count_params(model)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = make_optimizer(cfg.optim, model)
    opt_state = tx.init(params)
    loss_fn = make_loss_fn(cfg.loss, graphdef, n_ent)
    epoch_fn = make_epoch_fn(loss_fn, tx, cfg.train.batch_size)
    train = jnp.asarray(reciprocal_triples(ds.train, n_rel))
    evaluator = RankingEvaluator(
        n_ent, n_rel, [ds.train, ds.valid, ds.test], ds.train,
        query_chunk=cfg.eval.query_chunk, entity_chunk=cfg.eval.entity_chunk, policy=cfg.eval.tie_policy,
    )

    def score_fn(state, h, r, cand):
        return nnx.merge(graphdef, state[0], state[1]).score_candidates(h, r, cand)

    valid = ds.valid if cfg.eval.valid_max_triples is None else ds.valid[: cfg.eval.valid_max_triples]
    base_key = jax.random.key(cfg.seed)
    meta = {"config": to_dict(cfg), "model": cfg.model.name, "dataset": ds.name, "entity_init": init_info,
            "checksums": ds.meta.get("checksums")}
    ckpt = Checkpointer(run / "checkpoints", metric="valid_mrr", metadata=meta) if run is not None else None
    try:  # the checkpoint folder is closed on every exit (errors, NaN loss included)
        start_epoch, best, bad, history = 1, -math.inf, 0, []
        template = {"params": params, "opt_state": opt_state}
        if ckpt is not None and ckpt.latest_step() is not None:  # a run folder `_check_run_folder` let through
            restored, info = restore_state(ckpt, template, entity_init=init_info)
            params, opt_state = restored["params"], restored["opt_state"]
            extra = info.get("extra", {})
            start_epoch, best, bad, history = extra["epoch"] + 1, extra["best"], extra["bad"], extra["history"]
            log.info("resumed from %s at epoch %d", ckpt.directory, extra["epoch"])
        if run is not None:  # written only once the run folder is known to fit this config
            atomic_write_text(run / "config.yaml", dump_config(cfg))
            atomic_write_text(run / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))

        bar = _progress(cfg.train.epochs, progress)
        if bar is not None:
            bar.update(start_epoch - 1)
        epoch_times: list[float] = []
        eval_times: list[float] = []
        best_params, best_epoch = params, start_epoch - 1
        stopped_early = stopped_by_time = False
        t_start = time.perf_counter()
        for epoch in range(start_epoch, cfg.train.epochs + 1):
            t0 = time.perf_counter()
            params, opt_state, loss = epoch_fn(params, opt_state, rest, jax.random.fold_in(base_key, epoch), train)
            loss = float(loss)
            epoch_times.append(time.perf_counter() - t0)
            if not math.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss} at epoch {epoch}; lower optim.lr or use train.dtype=float64")
            row: dict[str, Any] = {"epoch": epoch, "loss": loss, "epoch_seconds": epoch_times[-1]}
            budget = cfg.train.max_seconds
            stopped_by_time = budget is not None and time.perf_counter() - t_start >= budget and epoch < cfg.train.epochs
            if epoch % cfg.train.valid_every == 0 or epoch == cfg.train.epochs or stopped_by_time:
                res = evaluator.evaluate(score_fn, (params, rest), valid)
                eval_times.append(res.seconds)
                m = res.metrics(breakdown=False)
                row.update({"valid_mrr": m["mrr"], "valid_hits@10": m["hits@10"], "eval_seconds": res.seconds})
                improved = m["mrr"] > best
                best, bad = (m["mrr"], 0) if improved else (best, bad + 1)
                if improved:
                    best_params, best_epoch = params, epoch  # kept in memory too (runs without run_dir)
                history.append(row)
                if ckpt is not None:
                    ckpt.save(epoch, _flat({"params": params, "opt_state": opt_state}), metrics={"valid_mrr": m["mrr"]},
                              extra={"epoch": epoch, "best": best, "bad": bad, "history": history})
                if bad >= cfg.train.patience:
                    stopped_early = True
            else:
                history.append(row)
            if run is not None:
                with open(run / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
            if on_epoch is not None:
                on_epoch(row)
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.4f}", valid_mrr=f"{best:.4f}" if math.isfinite(best) else "-")
                bar.update(1)
            if stopped_early:
                log.info("early stop at epoch %d (best valid MRR %.4f)", epoch, best)
                break
            if stopped_by_time:
                log.info("time budget of %.0f s reached at epoch %d (best valid MRR %.4f)", budget, epoch, best)
                break
        if bar is not None:
            bar.close()

        best_step = ckpt.best_step() if ckpt is not None else None
        if best_step is not None:
            restored, info = restore_state(ckpt, template, step=best_step, entity_init=init_info)
            params, best_epoch = restored["params"], info["step"]
        else:
            params = best_params
    finally:
        if ckpt is not None:
            ckpt.close()
    final_model = nnx.merge(graphdef, params, rest)
    res_valid = evaluator.evaluate(score_fn, (params, rest), ds.valid)
    res_test = evaluator.evaluate(score_fn, (params, rest), ds.test)
    results: dict[str, Any] = {
        "config": to_dict(cfg),
        "seed": cfg.seed,
        "geofm_version": geofm.__version__,
        "git_commit": _git_commit(),
        "jax_version": jax.__version__,
        "dataset": {
            "name": ds.name,
            "num_entities": n_ent,
            "num_relations": n_rel,
            "num_triples": {"train": len(ds.train), "valid": len(ds.valid), "test": len(ds.test)},
            "num_unseen_entities": ds.meta.get("num_unseen_entities"),
            "dropped": ds.meta.get("dropped"),
            "checksums": ds.meta.get("checksums"),
            "entity_text": ds.meta.get("entity_text"),
        },
        "num_params": n_params,
        "entity_init": init_info,
        "best_epoch": best_epoch,
        "stopped_early": stopped_early,
        "stopped_by_time": stopped_by_time,
        "epochs_run": history[-1]["epoch"] if history else 0,
        "timing": {
            "epoch_seconds_mean": float(np.mean(epoch_times[1:] or epoch_times)) if epoch_times else None,
            "first_epoch_seconds": epoch_times[0] if epoch_times else None,
            "test_eval_seconds": res_test.seconds,
        },
        "history": history,
        "valid": res_valid.metrics(ds.relations),
        "test": res_test.metrics(ds.relations),
    }
    if hasattr(final_model, "router_weights") and len(getattr(final_model, "branches", ())) > 1:
        results["router_by_relation"] = router_by_relation(final_model, ds.valid, ds.relations, n_rel)
        if run is not None:
            from geofm.kg.plots import plot_router_weights

            plot_router_weights(results["router_by_relation"], run / "router_weights.png", title=f"CAT router weights, {ds.name}")
            plot_router_weights(results["router_by_relation"], run / "score_weights.png", which="score",
                                title=f"CAT geometry weights in the score, {ds.name}")
    if run is not None:
        # atomic: `geofm kg-ensemble --config` takes an existing results.json as "member finished"
        atomic_write_text(run / "results.json", json.dumps(results, indent=1, default=_json_default))
    return results


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if dataclasses.is_dataclass(x):
        return to_dict(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
