"""CAT-KG vs its fixed-geometry variants at an equal epoch budget on CPU, plus the init pilot.

Each part runs the configs in configs/kg/ (`cat_<dataset>.yaml` and
`cat_{e,h,s}_<dataset>.yaml`), same seed, optimiser and epochs:

  --part pilot    the initial score scale of the curved scorers, chosen on VALIDATION
                  MRR after `--pilot-epochs` epochs of the H-only and S-only variants
                  (a grid of score_scale), plus one arm per variant with the session-3
                  attention init (|k| = 1, beta ~ 1.19) at the default score scale of the
                  commit it ran at (each row records its commit and resolved model
                  kwargs): compare it with the grid row at the same score_scale.
  --part compare  CAT (E+H+S) and the E-only / H-only / S-only variants for `--epochs`
                  epochs each; validation every 5 epochs, the best-validation checkpoint
                  is tested. The best fixed variant is the one with the best VALIDATION
                  MRR; reports CAT's relative test MRR over it and CAT's parameter overhead
                  over it (router + the other branches' per-head curvatures and attention
                  scales + their score scales).
  --part mix      how much any mixing of the geometries could buy (the ceiling of the
                  +10 % target): the CAT, E, H, S configs trained with checkpoints into
                  --runs (existing run folders are reused, missing ones trained), then
                  (a) per-relation routing: each relation scored by the fixed variant with
                  the best VALIDATION MRR on it (and the test-picked oracle as a ceiling),
                  (b) per-query score fusion of the E, H, S runs by `geofm.kg.ensemble`
                  (weights on validation; 2-3x the parameters, so above what CAT may spend),
                  beside the control: the best variant fused with itself trained from
                  another seed (fusion with no difference in geometry).
  --part routing  (a) only, from the accelerator runs' results (bench/results/kg_cat_{e,h,s}_<dataset>.json;
                  a variant whose run has no test metrics, e.g. one that diverged, is left out).
  --part summary  recompute that comparison from the JSON.

Epoch budgets rather than wall-clock budgets: the 2-core machine is shared, so
seconds are noisy; epochs are not. Seconds per epoch are recorded beside them.

    nice -n 5 python bench/kg_cat.py --dataset WN18RR --part pilot
    nice -n 5 python bench/kg_cat.py --dataset WN18RR --part pilot --variants h --scales 1,2 --no-old-attention  # widen
    nice -n 5 python bench/kg_cat.py --dataset WN18RR --part compare --epochs 30
Writes bench/results/kg_cat_<dataset>_cpu.json or --out FILE (rewritten after every arm;
parts merge) and the CAT arm's router weights per relation to
bench/results/kg_cat_router_<dataset>.png (beside --out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from _common import machine_info  # bench/ is sys.path[0] when run as a script
from kg_text_init import run_arm, summary

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geofm.kg.plots import plot_router_weights  # noqa: E402
from geofm.kg.train import load_kg_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SLUG = {"WN18RR": "wn18rr", "FB15k-237": "fb15k237"}
OLD_ATTN = ["model.kwargs.attn_curvature=[-1.0,1.0]", "model.kwargs.attn_beta=1.19"]


def _save(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)


def pilot(args: argparse.Namespace, ds, result: dict, out: Path) -> None:
    """Validation MRR of H-only / S-only after a short run per initial score scale and attention init."""
    slug = SLUG[args.dataset]
    common = [f"data.data_dir={args.data_dir}", f"train.epochs={args.pilot_epochs}", "train.resume=false",
              f"train.valid_every={args.pilot_epochs}"]
    rows = result.setdefault("pilot", {"epochs": args.pilot_epochs, "rows": []})["rows"]
    arms = [(b, f"score_scale={s}", [f"model.kwargs.score_scale=[{s}]"]) for b in args.variants for s in args.scales]
    if not args.no_old_attention:
        arms += [(b, "attention init |k|=1, beta=1.19 (session 3)", OLD_ATTN) for b in args.variants]
    for branch, label, extra in arms:
        res, secs = run_arm(REPO / f"configs/kg/cat_{branch}_{slug}.yaml", ds, common + extra)
        rows.append({"variant": branch.upper(), "setting": label, "overrides": extra,
                     "model_kwargs": res["config"]["model"]["kwargs"], "git_commit": res["git_commit"],
                     "valid_mrr": res["valid"]["mrr"], "seconds": secs})
        print(rows[-1], flush=True)
        _save(out, result)
    best = {}
    for b in sorted({r["variant"] for r in rows}):
        cands = [r for r in rows if r["variant"] == b and r["setting"].startswith("score_scale")]
        if cands:
            best[b] = max(cands, key=lambda r: r["valid_mrr"])["setting"]
    result["pilot"]["selected_by_valid_mrr"] = best
    _save(out, result)


def compare(args: argparse.Namespace, ds, result: dict, out: Path) -> None:
    """CAT and its fixed variants at the same epoch budget; test at the best validation epoch."""
    slug = SLUG[args.dataset]
    common = [f"data.data_dir={args.data_dir}", f"train.epochs={args.epochs}", "train.resume=false",
              "train.valid_every=5"]
    arms = result.setdefault("compare", {"epochs": args.epochs, "arms": {}})
    result["compare"]["epochs"] = args.epochs
    for name, cfg in (("CAT", f"cat_{slug}"), ("E", f"cat_e_{slug}"), ("H", f"cat_h_{slug}"), ("S", f"cat_s_{slug}")):
        if name not in args.arms:
            continue
        res, secs = run_arm(REPO / f"configs/kg/{cfg}.yaml", ds, common)
        arms["arms"][name] = summary(res) | {"config": f"configs/kg/{cfg}.yaml", "seconds": secs}
        if "router_by_relation" in res:
            arms["arms"][name]["router_by_relation"] = res["router_by_relation"]
        print(name, {k: arms["arms"][name][k] for k in ("test", "best_epoch", "epoch_seconds_mean")}, flush=True)
        _save(out, result)
    summarize(result, out.parent)
    _save(out, result)


def _per_relation_routing(runs: dict[str, dict], base: float) -> dict:
    """Test MRR when every relation is scored by one fixed variant: the one best on that
    relation's validation queries, and (ceiling) the one best on its test queries; each
    also relative to `base` (the best variant's test MRR)."""
    fixed = [k for k in runs if k != "CAT"]
    rels = runs[fixed[0]]["test"]["by_relation"]
    total = {"valid_picked": 0.0, "test_oracle": 0.0}
    picks = {}
    n = 0
    for rel, m in rels.items():
        count = m["all"]["count"]
        valid = {k: runs[k]["valid"]["by_relation"].get(rel, {}).get("all", {}).get("mrr", -1.0) for k in fixed}
        test = {k: runs[k]["test"]["by_relation"][rel]["all"]["mrr"] for k in fixed}
        pick = max(valid, key=valid.get)
        picks[rel] = pick
        total["valid_picked"] += count * test[pick]
        total["test_oracle"] += count * max(test.values())
        n += count
    out = {k: v / n for k, v in total.items()}
    return out | {"relative": out["valid_picked"] / base - 1.0, "oracle_relative": out["test_oracle"] / base - 1.0,
                  "valid_pick_by_relation": picks}


def mix(args: argparse.Namespace, ds, result: dict, out: Path) -> None:
    """Ceilings of geometry mixing from separately trained fixed-geometry runs (see the docstring)."""
    from geofm.kg.config import KGConfig
    from geofm.config import load_config
    from geofm.kg.ensemble import _check_same_config, fit_ensemble, load_ensemble
    from geofm.kg.train import train_kg

    slug = SLUG[args.dataset]
    root = Path(args.runs)

    def trained(folder: str, cfg_name: str, seed: int, extra: Sequence[str] = ()) -> dict:
        """The run's results, training it first unless its folder already holds this config's run."""
        run = root / folder
        cfg = load_config(REPO / f"configs/kg/{cfg_name}.yaml", KGConfig,
                          [f"data.data_dir={json.dumps(args.data_dir)}", f"train.epochs={args.epochs}",
                           "train.valid_every=5", f"seed={seed}", *extra])
        if (run / "config.yaml").is_file():
            _check_same_config(run, cfg, f"--part mix: {folder}")  # never mix runs of other settings
        if not (run / "results.json").is_file():
            train_kg(cfg, run, dataset=ds, progress=False)
        return json.loads((run / "results.json").read_text())

    cfgs = {"CAT": f"cat_{slug}", "E": f"cat_e_{slug}", "H": f"cat_h_{slug}", "S": f"cat_s_{slug}"}
    runs = {name: trained(name.lower(), cfg, 0) for name, cfg in cfgs.items()}
    arms = {name: [x for x in sets.split(";") if x]  # CAT with other model kwargs: NAME=key=value;key=value
            for name, _, sets in (a.partition("=") for a in args.cat_arm)}
    for name, sets in arms.items():
        runs[name] = trained(name, cfgs["CAT"], 0, sets)
    variants = {k: r for k, r in runs.items() if k in ("E", "H", "S")}
    best_valid = max(variants, key=lambda k: variants[k]["valid"]["mrr"])
    base = runs[best_valid]["test"]["mrr"]
    control = f"{best_valid}_seed1"  # the best variant again with another seed: fusion without a geometry difference
    runs[control] = trained(control.lower(), cfgs[best_valid], 1)
    fusions = {}
    for members in (["E", "H", "S"], ["E", "H"], ["E", "S"], ["H", "S"], [best_valid, control]):
        label = "+".join(members)
        fused = fit_ensemble(load_ensemble([root / m.lower() for m in members], dataset=ds), step=0.1, refine=2,
                             split_unseen=False)
        fusions[label] = {"weights": fused["weights"], "valid_mrr": fused["valid"]["mrr"], "test_mrr": fused["test"]["mrr"],
                          "relative": fused["test"]["mrr"] / base - 1.0,
                          "param_ratio_vs_best": sum(runs[m]["num_params"] for m in members) / runs[best_valid]["num_params"]}
        print(label, fusions[label], flush=True)
    result["mix"] = {
        "runs": str(root),
        "epochs": {k: r["epochs_run"] for k, r in runs.items()},
        "valid_mrr": {k: r["valid"]["mrr"] for k, r in runs.items()},
        "test_mrr": {k: r["test"]["mrr"] for k, r in runs.items()},
        "num_params": {k: r["num_params"] for k, r in runs.items()},
        "best_fixed_variant": best_valid,
        "cat_relative": runs["CAT"]["test"]["mrr"] / base - 1.0,
        "cat_arms": {name: {"set": sets, "relative": runs[name]["test"]["mrr"] / base - 1.0} for name, sets in arms.items()},
        "per_relation_routing": _per_relation_routing(variants, base),
        "score_fusion": fusions,
        "control": f"{best_valid}+{control}",
    }
    print(json.dumps({k: v for k, v in result["mix"].items() if k != "per_relation_routing"}, indent=1), flush=True)
    _save(out, result)


def routing(args: argparse.Namespace, ds, result: dict, out: Path) -> None:
    """Per-relation routing ceiling from the accelerator runs of the fixed variants."""
    slug = SLUG[args.dataset]
    runs = {}
    for name in ("E", "H", "S"):
        path = REPO / f"bench/results/kg_cat_{name.lower()}_{slug}.json"
        res = json.loads(path.read_text()) if path.is_file() else {}
        if "test" in res and "by_relation" in res["test"]:
            runs[name] = res
    if not runs:
        raise SystemExit(f"--part routing: no bench/results/kg_cat_{{e,h,s}}_{slug}.json with test metrics")
    best = max(runs, key=lambda k: runs[k]["valid"]["mrr"])
    base = runs[best]["test"]["mrr"]
    result["routing_accelerator_runs"] = {
        "variants": sorted(runs), "best_fixed_variant": best, "best_test_mrr": base,
        "epochs": {k: v["epochs_run"] for k, v in runs.items()}, **_per_relation_routing(runs, base),
    }
    print(json.dumps({k: v for k, v in result["routing_accelerator_runs"].items() if k != "valid_pick_by_relation"}), flush=True)
    _save(out, result)


def summarize(result: dict, png_dir: Path) -> None:
    """Best fixed variant by validation MRR; CAT's relative test MRR and parameter overhead over it;
    the CAT arm's router weights per relation to png_dir/kg_cat_router_<dataset>.png."""
    cmp = result.get("compare", {})
    a = cmp.get("arms", {})
    if "router_by_relation" in a.get("CAT", {}):
        plot_router_weights(a["CAT"]["router_by_relation"], png_dir / f"kg_cat_router_{SLUG[result['dataset']]}.png",
                            title=f"CAT-KG router, {result['dataset']} ({cmp['epochs']} epochs, valid)")
    fixed = {k: v["valid"]["mrr"] for k, v in a.items() if k != "CAT"}
    if "CAT" in a and fixed:
        best = max(fixed, key=fixed.get)
        cmp["best_variant"] = best
        cmp["best_variant_selected_on"] = "validation MRR"
        cmp["cat_vs_best_relative"] = a["CAT"]["test"]["mrr"] / a[best]["test"]["mrr"] - 1.0
        cmp["cat_vs_best_relative_valid"] = a["CAT"]["valid"]["mrr"] / a[best]["valid"]["mrr"] - 1.0
        cmp["param_overhead_vs_best_variant"] = a["CAT"]["num_params"] / a[best]["num_params"] - 1.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="WN18RR", choices=sorted(SLUG))
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--part", choices=("pilot", "compare", "mix", "routing", "summary"), default="compare")
    ap.add_argument("--runs", default=str(REPO / "runs/kg/catmix"), help="mix: run folders cat/, e/, h/, s/")
    ap.add_argument("--cat-arm", action="append", default=[],
                    help="mix: an extra CAT arm NAME=key=value;key=value (run folder --runs/NAME)")
    ap.add_argument("--pilot-epochs", type=int, default=5)
    ap.add_argument("--scales", type=lambda s: [float(x) for x in s.split(",")], default=[0.01, 0.03, 0.125, 0.5])
    ap.add_argument("--variants", type=lambda s: s.lower().split(","), default=["h", "s"], help="pilot variants")
    ap.add_argument("--no-old-attention", action="store_true", help="pilot: skip the session-3 attention arms")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--arms", type=lambda s: s.split(","), default=["CAT", "E", "H", "S"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = Path(args.out or REPO / f"bench/results/kg_cat_{SLUG[args.dataset]}_cpu.json")
    result = json.loads(out.read_text()) if out.exists() else {}
    if args.part == "summary":
        summarize(result, out.parent)
        _save(out, result)
        return 0
    result.setdefault("machine", machine_info())  # of the first part run; each part's own below
    result.setdefault("machine_by_part", {})[args.part] = machine_info()
    result["dataset"] = args.dataset
    result["protocol"] = __doc__
    ds = load_kg_dataset(args.dataset, args.data_dir)
    {"pilot": pilot, "compare": compare, "mix": mix, "routing": routing}[args.part](args, ds, result, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
