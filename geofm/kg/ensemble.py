"""Late fusion of trained KG runs (e.g. a structure model and the text bi-encoder).

score(h, r, t) = sum_i w_i * s_i(h, r, t) / sigma_i, with w on the simplex. sigma_i is
the std of member i's scores over (validation query, random entity) pairs, so the
weights compare like with like; w is the point of a simplex grid (spacing `step`,
then a few rounds of finer moves around the best) with the best filtered validation MRR.
Queries whose entity h is absent from the training triples get their own w (chosen on the
validation queries of that kind), since structure models know nothing about such entities. Test triples are never looked at for the
choice. Members keep their own geometry and precision (the fusion runs in float64
when any member trained in float64); each is restored from its
run folder's best checkpoint (`geofm kg` runs, resumable, any registered model).

    ens = load_ensemble(["runs/kg/roth_wn18rr", "runs/kg/text_wn18rr"])
    results = fit_ensemble(ens, step=0.05)          # results["weights"], ["valid"], ["test"]
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import shlex
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from geofm.checkpoint import Checkpointer, config_changes
from geofm.data.cache import check_out_folder
from geofm.config import load_config, to_dict
from geofm.data.types import KGDataset
from geofm.kg.config import KGConfig
from geofm.kg.evaluate import RankingEvaluator

log = logging.getLogger("geofm.kg")

__all__ = ["MemberConfig", "EnsembleConfig", "Member", "Ensemble", "simplex_grid", "load_member", "load_ensemble",
           "member_scale", "fit_ensemble", "run_ensemble_config"]


@dataclasses.dataclass(frozen=True)
class MemberConfig:
    """One member: its `geofm kg` config (path relative to the ensemble file), the run folder
    it is trained in (relative to the working directory, like `geofm kg --out`; trained or
    resumed there when run/results.json is missing, and refused when it holds a run of
    another config), and `--set`-style overrides for its config."""

    config: str
    run: str
    set: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """`geofm kg-ensemble --config FILE`: members, weight-grid spacing and refinement rounds, whether
    queries about entities unseen in training get their own weights (split_unseen), run folder,
    optional dataset / data_dir overrides applied to every member (their data.name / data.data_dir),
    and the seed of the (validation query, entity) sample that sets each member's score scale."""

    members: tuple[MemberConfig, ...] = ()
    step: float = 0.05
    refine: int = 2
    split_unseen: bool = True
    out: str | None = None
    dataset: str | None = None
    data_dir: str | None = None
    seed: int = 0


@dataclasses.dataclass
class Member:
    """A trained run: its folder, resolved config, model (best checkpoint) and its score scale."""

    run: Path
    cfg: KGConfig
    model: Any
    scale: float = 1.0


@dataclasses.dataclass
class Ensemble:
    """Loaded members on one dataset; x64: some member trained in float64 (fusion then runs in float64)."""

    members: list[Member]
    dataset: KGDataset
    x64: bool


def simplex_grid(num: int, step: float) -> np.ndarray:
    """All weight vectors [G, num] with entries in {0, step, 2 step, ...} summing to 1.

    1/step must be an integer; raises ValueError when the grid would exceed 2,000 points.
    """
    if num < 1:
        raise ValueError("an ensemble needs at least one member")
    ok = 0 < step <= 1  # False for NaN as well
    parts = round(1.0 / step) if ok else 0
    if not ok or abs(parts * step - 1.0) > 1e-9:
        raise ValueError(f"step must be 1/n for an integer n >= 1, got {step}")
    from math import comb

    if comb(parts + num - 1, num - 1) > 2000:
        raise ValueError(f"a weight grid of step {step} over {num} members has {comb(parts + num - 1, num - 1)} points "
                         "(> 2000); use a larger step")
    # stars and bars: num - 1 bar positions among parts + num - 1 slots give the part sizes
    combos = list(itertools.combinations(range(parts + num - 1), num - 1))
    bars = np.array(combos, np.int64).reshape(len(combos), num - 1)
    edges = np.concatenate([np.full((len(bars), 1), -1), bars, np.full((len(bars), 1), parts + num - 1)], 1)
    return (np.diff(edges, axis=1) - 1).astype(np.float64) / parts


def _run_config(run: Path) -> Path:
    """run/config.yaml of a `geofm kg` run folder; FileNotFoundError naming what is missing."""
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run folder")
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run}: not a `geofm kg` run folder (no config.yaml)")
    return run / "config.yaml"


def load_member(run_dir: str | Path, dataset: KGDataset, *, text_encoder: Any = None) -> Member:
    """Rebuild a `geofm kg` run's model from run_dir/config.yaml and restore its best checkpoint."""
    from geofm.kg.train import _precision, build_run_model, make_optimizer, restore_state, with_entity_text

    run = Path(run_dir)
    cfg = load_config(_run_config(run), KGConfig)
    ckpt = Checkpointer(run / "checkpoints", metric="valid_mrr")
    try:
        if ckpt.best_step() is None:
            raise FileNotFoundError(f"{run}: no checkpoint to restore (train it with `geofm kg --out {run}`)")
        with _precision(cfg.train.dtype) as dtype:
            model, init_info = build_run_model(cfg, with_entity_text(dataset, cfg.data.entity_text), dtype,
                                               text_encoder=text_encoder)
            graphdef, params, rest = nnx.split(model, nnx.Param, ...)
            template = {"params": params, "opt_state": make_optimizer(cfg.optim, model).init(params)}
            params = restore_state(ckpt, template, which="best", entity_init=init_info)[0]["params"]
    finally:
        ckpt.close()
    return Member(run, cfg, nnx.merge(graphdef, params, rest))


def _saved_dataset(run: Path) -> dict:
    """The "dataset" record (name, checksums) of a finished run's results.json, {} without one."""
    path = run / "results.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text()).get("dataset", {})
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); rerun that member") from None


def _check_same_data(run: Path, dataset: KGDataset) -> None:
    """Refuse a run trained on other data: its results.json dataset checksums must be the dataset's."""
    saved = _saved_dataset(run)  # {} for an interrupted run: the model shapes are still checked on restore
    mine = dataset.meta.get("checksums")
    if saved.get("checksums") and mine and saved["checksums"] != mine:
        raise ValueError(f"{run}: trained on {saved.get('name')!r} with other files (checksums differ from "
                         f"{dataset.name!r}); ensemble members must share one dataset")


def load_ensemble(run_dirs: Sequence[str | Path], *, dataset: KGDataset | None = None, name: str | None = None,
                  data_dir: str | None = None, text_encoder: Any = None) -> Ensemble:
    """Load every member run on one dataset: `dataset`, else the first member's data.name /
    data.data_dir with `name` / `data_dir` overriding them when given."""
    from geofm.kg.train import load_kg_dataset

    if not run_dirs:
        raise ValueError("an ensemble needs at least one run folder")
    if dataset is None:
        data = load_config(_run_config(Path(run_dirs[0])), KGConfig).data
        dataset = load_kg_dataset(name or data.name, data_dir or data.data_dir)
    for r in run_dirs:
        _check_same_data(Path(r), dataset)
    members = [load_member(r, dataset, text_encoder=text_encoder) for r in run_dirs]
    policies = {m.cfg.eval.tie_policy for m in members}
    if len(policies) > 1:
        raise ValueError(f"members use different eval.tie_policy values {sorted(policies)}; rerun them with one")
    return Ensemble(members, dataset, any(m.cfg.train.dtype == "float64" for m in members))


def member_scale(model: Any, triples: np.ndarray, num_relations: int, *, seed: int = 0, queries: int = 256,
                 entities: int = 4096) -> float:
    """Spread of a model's scores within a query: the std, over `queries` triples' tail and head
    queries x `entities` random entities, of each score minus its query's mean (per-query
    offsets such as a head bias do not change rankings, so they are left out)."""
    from geofm.kg.evaluate import make_queries

    rng = np.random.default_rng(seed)
    sample = np.asarray(triples)[rng.choice(len(triples), min(queries, len(triples)), replace=False)]
    h, r, _, _ = make_queries(sample, num_relations)
    cand = rng.choice(model.num_entities, min(entities, model.num_entities), replace=False)
    s = np.asarray(model.score_candidates(jnp.asarray(h, jnp.int32), jnp.asarray(r, jnp.int32), jnp.asarray(cand, jnp.int32)), np.float64)
    if not np.isfinite(s).all():
        raise FloatingPointError(f"model {type(model).__name__} gives non-finite scores")
    std = float((s - s.mean(1, keepdims=True)).std())
    return std if std > 0 else 1.0


def _score_fn(graphdefs: Sequence[Any], dtype: Any) -> Callable:
    """score(params, h, r, cand) -> [G, C, E] in `dtype`: G weightings of the same member scores
    (each member scores the chunk once, whatever G is).

    params = (coef [G, 2, M]: weights / scales for queries whose entity h was seen in training
    (row 0) or not (row 1), seen [N] bool, member states).
    """

    def score(params, h, r, cand):
        coef, seen, states = params
        c = coef[:, jnp.where(seen[h], 0, 1)]  # [G, C, M]
        total = None
        for i, (gd, st) in enumerate(zip(graphdefs, states)):
            s = c[:, :, i : i + 1] * nnx.merge(gd, *st).score_candidates(h, r, cand).astype(dtype)[None]
            total = s if total is None else total + s
        return total

    return score


def _group_mrr(res: Any, group: np.ndarray) -> list[float | None]:
    """MRR of the queries in group 0 and group 1 (None for an empty group)."""
    rr = 1.0 / res.ranks()
    return [float(rr[group == g].mean()) if np.any(group == g) else None for g in (0, 1)]


def fit_ensemble(ens: Ensemble, *, step: float = 0.05, refine: int = 2, split_unseen: bool = True, seed: int = 0,
                 query_chunk: int = 512, entity_chunk: int = 4096, batch: int = 8,
                 progress: Callable[[np.ndarray, float], None] | None = None) -> dict[str, Any]:
    """Choose the weights on validation MRR over `simplex_grid(M, step)`, then `refine` rounds of
    moving step/2, step/4, ... between two members from the best point; evaluate valid and test.

    split_unseen: queries whose entity h never occurs in the training triples get their own
    weights (a structure model knows nothing about such an entity; a text model does), chosen
    on the validation queries of that kind; the grouping uses the training triples only.
    batch: weight vectors ranked per pass over the entities (each member scores a chunk once per
    pass; memory ~ batch x query_chunk x entity_chunk floats).
    Returns a JSON-able dict: weights (seen-entity queries), weights_unseen_head, scales, every
    evaluated point's validation MRR (overall and per group), each member alone on valid/test,
    and the ensemble's valid/test metrics (tie-aware, filtered).
    """
    from geofm.kg.evaluate import make_queries
    from geofm.kg.train import _precision

    ds, members = ens.dataset, ens.members
    if refine < 0:
        raise ValueError(f"refine must be >= 0, got {refine}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    grid = simplex_grid(len(members), step)
    ev = RankingEvaluator(ds.num_entities, ds.num_relations, [ds.train, ds.valid, ds.test], ds.train,
                          query_chunk=query_chunk, entity_chunk=entity_chunk, policy=members[0].cfg.eval.tie_policy)
    seen = np.asarray(ev.seen, bool) if split_unseen else np.ones(ds.num_entities, bool)
    group = (~seen[make_queries(ds.valid, ds.num_relations)[0]]).astype(np.int64)  # 1: query entity unseen

    with _precision("float64" if ens.x64 else "float32") as dtype:
        for m in members:
            m.scale = member_scale(m.model, ds.valid, ds.num_relations, seed=seed)
        splits = [nnx.split(m.model) for m in members]
        graphdefs = [s[0] for s in splits]
        states = [tuple(s[1:]) for s in splits]
        fn = _score_fn(graphdefs, dtype)
        scales = np.array([m.scale for m in members])

        seen_dev = jnp.asarray(seen)

        def evaluate_pairs(pairs: Sequence[tuple[np.ndarray, np.ndarray]], triples: np.ndarray) -> Iterator[Any]:
            """EvalResults of (w, w_unseen) pairs, lazily, `batch` at a time; a smaller last batch is
            padded (with its first pair) to the next power of two, so there are few compiled shapes
            and little wasted ranking (one pair is ranked alone, not padded to `batch`)."""
            for s in range(0, len(pairs), batch):
                part = list(pairs[s : s + batch])
                size = min(batch, 1 << (len(part) - 1).bit_length())
                coef = np.stack([np.stack(p) for p in part + [part[0]] * (size - len(part))]) / scales
                yield from ev.evaluate_many(fn, (jnp.asarray(coef, dtype), seen_dev, states), triples)[: len(part)]

        tried: list[dict[str, Any]] = []

        def try_pairs(pairs: Sequence[tuple[np.ndarray, np.ndarray]], level: int) -> list[list[float | None]]:
            by_groups = []
            for (w, w_unseen), res in zip(pairs, evaluate_pairs(pairs, ds.valid)):  # lazy: `progress` moves per batch
                mrr, by_group = res.metrics(breakdown=False)["mrr"], _group_mrr(res, group)
                tried.append({"weights": w.tolist(), "weights_unseen_head": w_unseen.tolist(), "valid_mrr": float(mrr),
                              "valid_mrr_seen_head": by_group[0], "valid_mrr_unseen_head": by_group[1],
                              "refinement": level})
                if progress is not None:
                    progress(w, mrr)
                by_groups.append(by_group)
            return by_groups

        scores = np.array([[-1.0 if x is None else x for x in got] for got in try_pairs([(w, w) for w in grid], 0)])
        best = [grid[int(np.argmax(scores[:, g]))] for g in (0, 1)]  # scores: [grid points, 2 groups]
        best_mrr = [float(scores[:, g].max()) for g in (0, 1)]
        delta = step
        for level in range(1, refine + 1):  # move weight between two members in halved steps, both groups at once
            delta /= 2
            cand = [_neighbours(best[g], delta) for g in (0, 1)]
            pairs = [tuple(cand[g][k] if k < len(cand[g]) else best[g] for g in (0, 1))
                     for k in range(max(len(cand[0]), len(cand[1])))]
            # per group, the best strict improvement over the level's start wins (ties: the earliest); a
            # group with fewer moves than the other is evaluated at its level-start best in the rest
            for pair, got in zip(pairs, try_pairs(pairs, level)):
                for g in (0, 1):
                    if got[g] is not None and got[g] > best_mrr[g]:
                        best[g], best_mrr[g] = pair[g], got[g]
        if not np.any(group == 1):
            best[1] = best[0]  # no validation query of that kind: nothing to choose on
        res_valid = next(evaluate_pairs([(best[0], best[1])], ds.valid))
        corners = [(w, w) for w in np.eye(len(members))]
        res_test, *alone_test = evaluate_pairs([(best[0], best[1])] + corners, ds.test)
        alone = []
        for i, m in enumerate(members):
            alone.append({
                "run": str(m.run),
                "model": m.cfg.model.name,
                "config": to_dict(m.cfg),
                "scale": m.scale,
                "valid_mrr": tried[_grid_index(grid, corners[i][0])]["valid_mrr"],
                "test": alone_test[i].metrics(ds.relations),
                "results_json": _read_results_summary(m.run),
            })
    import geofm
    from geofm.kg.train import _git_commit

    return {
        "geofm_version": geofm.__version__,
        "git_commit": _git_commit(),
        "jax_version": jax.__version__,
        "seed": seed,
        "dataset": {"name": ds.name, "num_entities": ds.num_entities, "num_relations": ds.num_relations,
                    "checksums": ds.meta.get("checksums")},
        "step": step,
        "refine": refine,
        "split_unseen": split_unseen,
        "num_valid_queries_unseen_head": int(group.sum()),
        "weights": best[0].tolist(),
        "weights_unseen_head": best[1].tolist(),
        "scales": scales.tolist(),
        "grid": tried,
        "members": alone,
        "valid": res_valid.metrics(ds.relations),
        "test": res_test.metrics(ds.relations),
    }


def _neighbours(w: np.ndarray, delta: float) -> list[np.ndarray]:
    """Weight vectors that move `delta` from member i to member j (i != j), staying on the simplex."""
    out = []
    for i, j in itertools.permutations(range(len(w)), 2):
        if w[i] >= delta - 1e-12:
            v = w.copy()
            v[i] -= delta
            v[j] += delta
            out.append(np.clip(v, 0.0, 1.0))
    return out


def _grid_index(grid: np.ndarray, w: np.ndarray) -> int:
    return int(np.argmin(np.abs(grid - w).sum(1)))


def _read_results_summary(run: Path) -> dict[str, Any] | None:
    path = run / "results.json"
    if not path.is_file():
        return None
    res = json.loads(path.read_text())
    keep = ("git_commit", "best_epoch", "epochs_run", "num_params", "entity_init")
    return {k: res.get(k) for k in keep}


def _check_same_config(run: Path, cfg: KGConfig, where: str, command: str = "geofm kg --config CONFIG") -> None:
    """A member's existing run folder must hold the run its config describes (else it would be reused stale)."""
    # where the data lives, and whether it is named or given by path, is checked by its checksums
    # (`_check_same_data`, and `geofm kg`'s resume check); a training time budget does not change
    # what a finished run is (its results.json records how many epochs it ran)
    from geofm.kg.train import RESUMABLE_KEYS

    saved, wanted = to_dict(load_config(run / "config.yaml", KGConfig)), to_dict(cfg)
    allowed = ("train.resume", "data.data_dir", "train.max_seconds")
    if _saved_dataset(run).get("checksums"):  # the files can be compared: the name may differ
        allowed += ("data.name",)
    diff = config_changes(saved, wanted, allowed=allowed)
    if diff:
        hint = ("; point `run:` to a new folder to train this one, or add the run's values to the member's "
                "`set:` to fuse it as it is")
        if not config_changes(saved, wanted, allowed=RESUMABLE_KEYS):  # what a `geofm kg` resume may change
            hint += f", or continue it with these settings first: {command} --out {run}"
        raise ValueError(f"{where}: run folder {run} was trained with another config (run -> config: "
                         f"{'; '.join(diff[:4])}){hint}")


def run_ensemble_config(path: str | Path, overrides: Sequence[str] = (), *, progress: bool = False,
                        text_encoder: Any = None) -> tuple[EnsembleConfig, Ensemble]:
    """Train (or resume) every member of an ensemble config whose run has no results.json, then load them."""
    from geofm.kg.train import train_kg

    path = Path(path)
    ecfg = load_config(path, EnsembleConfig, list(overrides))
    if not ecfg.members:
        raise ValueError(f"{path}: `members` is empty")
    if ecfg.out:
        check_out_folder(ecfg.out)  # before members train
    runs = []
    for i, mc in enumerate(ecfg.members):
        member_overrides = list(mc.set)
        if ecfg.dataset is not None:
            member_overrides.append(f"data.name={json.dumps(ecfg.dataset)}")
        if ecfg.data_dir is not None:
            member_overrides.append(f"data.data_dir={json.dumps(ecfg.data_dir)}")
        cfg_file = (path.parent / mc.config) if not Path(mc.config).is_absolute() else Path(mc.config)
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{path}: members[{i}].config: no file {cfg_file}")
        run = Path(mc.run)
        cfg = load_config(cfg_file, KGConfig, member_overrides)
        if (run / "config.yaml").is_file():
            command = " ".join([f"geofm kg --config {cfg_file}"] + [f"--set {shlex.quote(o)}" for o in member_overrides])
            _check_same_config(run, cfg, f"{path}: members[{i}]", command)
        if not (run / "results.json").is_file():
            log.info("training ensemble member %d (%s) in %s", i, cfg_file, run)
            train_kg(cfg, run, progress=progress, text_encoder=text_encoder)
        runs.append(run)
    return ecfg, load_ensemble(runs, name=ecfg.dataset, data_dir=ecfg.data_dir, text_encoder=text_encoder)
