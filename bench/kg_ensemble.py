"""Late fusion of trained KG runs (`geofm kg-ensemble`), with every sub-ensemble as an ablation.

Loads (training first where a member's run folder has no results.json) the members of an
ensemble config, fits the fusion weights on validation MRR for the full ensemble and for
every subset of two or more members, and reports test metrics overall, on the queries
with an entity unseen in training, and per relation, beside each member alone.

    nice -n 5 python bench/kg_ensemble.py [--config configs/kg/ensemble_wn18rr.yaml] [--data-dir DIR] [--out FILE]
Writes bench/results/kg_ensemble_<dataset>.json (or --out).

--speed: only the full ensemble's weight search, twice in one run: one weight vector per pass
over the entities (batch 1: every member re-scores every chunk for every grid point, as the
search did before `RankingEvaluator.evaluate_many`) and 8 per pass (`fit_ensemble(batch=8)`, the default);
checks that both choose the same weights and metrics, and writes the times and their ratio to
bench/results/kg_ensemble_speed.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

from _common import machine_info  # bench/ is sys.path[0] when run as a script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geofm.kg.ensemble import Ensemble, fit_ensemble, run_ensemble_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KEYS = ("mrr", "hits@1", "hits@3", "hits@10", "mr")
PUBLISHED = {"WN18RR": {"RotH d=500 (Chami et al. 2020)": 0.496, "ConE": 0.496, "GIE": 0.491, "target": 0.50},
             "FB15k-237": {"ComplEx-N3 (Lacroix et al. 2018)": 0.37, "GIE": 0.362, "target": 0.37}}


def brief(m: dict) -> dict:
    out = {k: m[k] for k in KEYS}
    u = m.get("unseen")
    out["unseen"] = {"mrr": u["mrr"], "hits@10": u["hits@10"], "count": u["count"]} if u else None
    out["by_relation_mrr"] = {rel: {d: v[d]["mrr"] for d in ("tail", "head") if d in v} for rel, v in m.get("by_relation", {}).items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "configs/kg/ensemble_wn18rr.yaml"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="results JSON (default bench/results/kg_ensemble_<dataset>.json)")
    p.add_argument("--speed", action="store_true", help="time the weight search with 1 vs 8 weight vectors per pass")
    args = p.parse_args()
    overrides = [f"data_dir={json.dumps(args.data_dir)}"] if args.data_dir else []
    t0 = time.perf_counter()
    ecfg, ens = run_ensemble_config(args.config, overrides)
    if len(ens.members) < 2:
        raise SystemExit(f"{args.config}: an ensemble benchmark needs at least two members")
    if args.speed:
        return speed(args, ecfg, ens)
    names = [f"{m.cfg.model.name}:{m.run.name}" for m in ens.members]
    fits = {}
    for size in range(len(ens.members), 1, -1):
        for subset in itertools.combinations(range(len(ens.members)), size):
            sub = Ensemble([ens.members[i] for i in subset], ens.dataset, ens.x64)
            res = fit_ensemble(sub, step=ecfg.step, refine=ecfg.refine, split_unseen=ecfg.split_unseen, seed=ecfg.seed)
            key = " + ".join(names[i] for i in subset)
            fits[key] = {"weights": res["weights"], "weights_unseen_head": res["weights_unseen_head"], "valid_mrr": res["valid"]["mrr"], "test": brief(res["test"])}
            if size == len(ens.members):
                full = res
            print(f"{key}: weights {res['weights']} / unseen {res['weights_unseen_head']} valid {res['valid']['mrr']:.4f} test {res['test']['mrr']:.4f}", flush=True)
    alone = {names[i]: {"valid_mrr": m["valid_mrr"], "test": brief(m["test"]), "run": m["run"], "results_json": m["results_json"]}
             for i, m in enumerate(full["members"])}
    best_alone = max(alone.values(), key=lambda a: a["valid_mrr"])
    ds = ens.dataset.name
    rel = os.path.relpath(Path(args.config).resolve(), REPO)
    out = {
        "benchmark": "kg_ensemble",
        "command": f"python bench/kg_ensemble.py --config {rel}" + (f" --out {args.out}" if args.out else ""),
        "rerun": f"geofm kg-ensemble --config {rel} --json",
        "dataset": full["dataset"],
        "step": ecfg.step,
        "refine": ecfg.refine,
        "split_unseen": ecfg.split_unseen,
        "members": alone,
        "ensemble": {"members": names, "weights": full["weights"], "weights_unseen_head": full["weights_unseen_head"],
                     "num_valid_queries_unseen_head": full["num_valid_queries_unseen_head"], "scales": full["scales"],
                     "valid": brief(full["valid"]), "test": brief(full["test"])},
        "sub_ensembles": fits,
        "gain_over_best_member_test_mrr": full["test"]["mrr"] - best_alone["test"]["mrr"],
        "published": PUBLISHED.get(ds),
        "target_met": full["test"]["mrr"] >= PUBLISHED.get(ds, {}).get("target", float("inf")),
        "grid": full["grid"],
        "seconds": time.perf_counter() - t0,
        "machine": machine_info(),
    }
    path = Path(args.out) if args.out else REPO / "bench" / "results" / f"kg_ensemble_{ds.lower().replace('-', '')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}: test MRR {full['test']['mrr']:.4f} (best member {best_alone['test']['mrr']:.4f})")


def speed(args: argparse.Namespace, ecfg, ens: Ensemble) -> None:
    """Weight search with batch 1 vs 8 on the same loaded members, same run; same choice required."""
    runs, fits = {}, {}
    for batch in (1, 8):
        t = time.perf_counter()
        fits[batch] = fit_ensemble(ens, step=ecfg.step, refine=ecfg.refine, split_unseen=ecfg.split_unseen,
                                   seed=ecfg.seed, batch=batch)
        runs[batch] = {"seconds": time.perf_counter() - t, "points_tried": len(fits[batch]["grid"]),
                       "weights": fits[batch]["weights"], "weights_unseen_head": fits[batch]["weights_unseen_head"],
                       "valid_mrr": fits[batch]["valid"]["mrr"], "test_mrr": fits[batch]["test"]["mrr"]}
        print(f"batch {batch}: {runs[batch]['seconds']:.1f} s, {runs[batch]['points_tried']} weight vectors", flush=True)
    a, b = fits[1], fits[8]
    diff = max([abs(x["valid_mrr"] - y["valid_mrr"]) for x, y in zip(a["grid"], b["grid"])]
               + [abs(a["test"]["mrr"] - b["test"]["mrr"])])
    same = (a["weights"] == b["weights"] and a["weights_unseen_head"] == b["weights_unseen_head"]
            and len(a["grid"]) == len(b["grid"]) and diff <= 1e-6)
    rel = os.path.relpath(Path(args.config).resolve(), REPO)
    out = {"benchmark": "kg_ensemble --speed", "command": f"python bench/kg_ensemble.py --config {rel} --speed",
           "dataset": a["dataset"]["name"], "members": [f"{m.cfg.model.name}:{m.run.name}" for m in ens.members],
           "step": ecfg.step, "refine": ecfg.refine, "runs": {str(k): v for k, v in runs.items()},
           "speedup_batch8_over_batch1": runs[1]["seconds"] / runs[8]["seconds"],
           "identical_choice_and_metrics": same, "max_abs_mrr_difference": diff, "machine": machine_info()}
    path = Path(args.out) if args.out else REPO / "bench" / "results" / "kg_ensemble_speed.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}: {out['speedup_batch8_over_batch1']:.2f}x, identical: {same}")
    if not same:
        raise SystemExit("batch 1 and batch 8 chose differently: a bug in the batched search")


if __name__ == "__main__":
    main()
