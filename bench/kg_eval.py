"""Full filtered WN18RR test evaluation (both directions, 6,268 queries x 40,943 entities), d=32 AttH.

Compares, in the same run and on the same AttH parameters:
  geofm      RankingEvaluator (jit, chunked, tie-aware), cold (with compile) and warm;
  torch      a PyTorch AttH scorer with the public AttH code's evaluation loop
             (per-query Python filtering, pessimistic rank), if torch is importable;
  pykeen     PyKEEN's RankBasedEvaluator (filtered) on a PyKEEN TransE d=32 with
             the same vocabulary, on the first `--pykeen-triples` test triples
             (its full-set time is extrapolated linearly and labelled so), if installed.
Also checks that geofm's pessimistic ranks equal the torch loop's ranks.

    python bench/kg_eval.py [--data-dir DIR] [--repeats 3] [--pykeen-triples 500]
Writes bench/results/kg_eval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _common import machine_info  # bench/ is sys.path[0] when run as a script

import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geofm.kg.evaluate import RankingEvaluator  # noqa: E402
from geofm.kg.models import build_model  # noqa: E402
from geofm.kg.train import load_kg_dataset  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "kg_eval.json"


def machine() -> dict:
    return machine_info()


def geofm_eval(ds, model, repeats: int) -> tuple[dict, np.ndarray]:
    graphdef, state = nnx.split(model)

    def score_fn(s, h, r, cand):
        return nnx.merge(graphdef, s).score_candidates(h, r, cand)

    ev = RankingEvaluator(ds.num_entities, ds.num_relations, [ds.train, ds.valid, ds.test], ds.train)
    t0 = time.perf_counter()
    res = ev.evaluate(score_fn, state, ds.test)
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = ev.evaluate(score_fn, state, ds.test)
        warm.append(time.perf_counter() - t0)
    m = res.metrics(breakdown=False)
    return {
        "cold_seconds": cold,
        "warm_seconds": warm,
        "warm_median_seconds": float(np.median(warm)),
        "num_queries": m["num_queries"],
        "num_queries_with_unseen_entity": m["num_queries_with_unseen_entity"],
        "mrr_realistic": m["mrr"],
        "query_chunk": ev.query_chunk,
        "entity_chunk": ev.entity_chunk,
    }, res.pessimistic


def torch_atth_eval(ds, model) -> tuple[dict, np.ndarray] | None:
    """Public-AttH-style evaluation in PyTorch with our parameters (float32)."""
    try:
        import torch
        from _torch_kg import atth_query, project
    except ImportError:
        return None
    p = {k: torch.tensor(np.asarray(v[...])) for k, v in nnx.state(model, nnx.Param).items()}
    ent, rel, diag, ctx, kraw, bh, bt = (p[n] for n in ("entity", "rel", "rel_diag", "context", "k_raw", "bh", "bt"))

    def query(h, r):
        c = torch.nn.functional.softplus(kraw[r])
        return project(atth_query(ent[h], diag[r], ctx[r], rel[r], c), c), c

    def score_all(x, c):
        sc = c.sqrt()
        vn = ent.norm(dim=-1, keepdim=True).T.clamp_min(1e-15)
        xv = x @ ent.T / vn
        gamma = torch.tanh(sc * vn) / sc
        x2 = (x * x).sum(-1, keepdim=True)
        c1 = 1 - 2 * c * gamma * xv + c * gamma**2
        c2 = 1 - c * x2
        num = torch.sqrt(((c1**2) * x2 + (c2**2) * gamma**2 - 2 * c1 * c2 * gamma * xv).clamp_min(0))
        den = (1 - 2 * c * gamma * xv + c**2 * gamma**2 * x2).clamp_min(1e-15)
        dist = 2 * torch.atanh((sc * num / den).clamp(max=1 - 1e-7)) / sc
        return -(dist**2)

    n_rel = ds.num_relations
    allt = np.concatenate([ds.train, ds.valid, ds.test])
    filters: dict[tuple[int, int], list[int]] = {}
    for h, r, t in allt:
        filters.setdefault((int(h), int(r)), []).append(int(t))
        filters.setdefault((int(t), int(r) + n_rel), []).append(int(h))
    test = ds.test.astype(np.int64)
    queries = np.concatenate([test, np.stack([test[:, 2], test[:, 1] + n_rel, test[:, 0]], 1)])
    q_t = torch.tensor(queries)
    ranks = torch.ones(len(queries))
    t0 = time.perf_counter()
    with torch.no_grad():
        for b in range(0, len(queries), 500):
            qb = q_t[b : b + 500]
            x, c = query(qb[:, 0], qb[:, 1])
            scores = score_all(x, c) + bh[qb[:, 0]][:, None] + bt[None, :]
            targets = scores.gather(1, qb[:, 2:3])
            for i, row in enumerate(qb.tolist()):
                scores[i, torch.LongTensor(filters[(row[0], row[1])] + [row[2]])] = -1e6
            ranks[b : b + 500] += (scores >= targets).float().sum(1)
    secs = time.perf_counter() - t0
    return {"seconds": secs, "torch": torch.__version__, "threads": torch.get_num_threads(), "tie_policy": "pessimistic"}, ranks.numpy()


def pykeen_eval(ds, n_triples: int) -> dict | None:
    try:
        import torch
        from pykeen.evaluation import RankBasedEvaluator
        from pykeen.models import TransE
        from _torch_kg import triples_factory
    except ImportError:
        return None
    tf = triples_factory(ds, ds.train)
    model = TransE(triples_factory=tf, embedding_dim=32, random_seed=0)
    sub = torch.tensor(ds.test[:n_triples], dtype=torch.long)
    ev = RankBasedEvaluator(filtered=True)
    t0 = time.perf_counter()
    ev.evaluate(model, sub, additional_filter_triples=[torch.tensor(ds.train, dtype=torch.long), torch.tensor(ds.valid, dtype=torch.long), torch.tensor(ds.test, dtype=torch.long)],
                batch_size=256, use_tqdm=False)
    secs = time.perf_counter() - t0
    import pykeen

    return {
        "pykeen": pykeen.get_version(),
        "model": "TransE d=32 (PyKEEN has no AttH; scorer cost is similar)",
        "test_triples_evaluated": int(len(sub)),
        "seconds": secs,
        "extrapolated_full_test_seconds": secs * len(ds.test) / len(sub),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pykeen-triples", type=int, default=500)
    args = ap.parse_args()
    ds = load_kg_dataset("WN18RR", args.data_dir)
    model = build_model("atth", ds.num_entities, ds.num_relations, seed=0, dim=32, init_size=0.1)
    out: dict = {"machine": machine(), "dataset": "WN18RR", "model": "AttH d=32 (random init, scale 0.1)"}
    out["geofm"], ranks = geofm_eval(ds, model, args.repeats)
    print("geofm", json.dumps(out["geofm"]))
    try:
        import torch

        torch.set_num_threads(1)  # 2 OpenMP threads on a busy 2-core machine are often far slower
    except ImportError:
        pass
    tres = torch_atth_eval(ds, model)
    if tres is not None:
        out["torch_kgemb_loop"], t_ranks = tres
        diff = np.abs(np.asarray(ranks, np.float64) - t_ranks)
        out["torch_kgemb_loop"]["pessimistic_rank_mismatches"] = int((diff > 0).sum())
        out["torch_kgemb_loop"]["pessimistic_rank_max_abs_diff"] = float(diff.max())
        out["speedup_vs_torch_loop_warm"] = out["torch_kgemb_loop"]["seconds"] / out["geofm"]["warm_median_seconds"]
        print("torch", json.dumps(out["torch_kgemb_loop"]))
    pk = pykeen_eval(ds, args.pykeen_triples)
    if pk is not None:
        out["pykeen"] = pk
        out["speedup_vs_pykeen_warm"] = pk["extrapolated_full_test_seconds"] / out["geofm"]["warm_median_seconds"]
        print("pykeen", json.dumps(pk))
    out["machine"]["load_avg_1m_at_end"] = os.getloadavg()[0]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
