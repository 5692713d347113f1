"""CAT-KG vs its fixed-geometry variants at an equal epoch budget on CPU, plus the init pilot.

Two parts, each run with the configs in configs/kg/ (`cat_<dataset>.yaml` and
`cat_{e,h,s}_<dataset>.yaml`), same seed, optimiser and epochs:

  --part pilot    the initial score scale of the curved scorers and the attention
                  initialisation, chosen on VALIDATION MRR after `--pilot-epochs`
                  epochs of the H-only and S-only variants: score_scale in a grid,
                  and the session-3 attention init (|k| = 1, beta ~ 1.19) against the
                  current one (|k| = 1/d_head, beta = 1/(8 sqrt(d_head))).
  --part compare  CAT (E+H+S) and the E-only / H-only / S-only variants for `--epochs`
                  epochs each; validation every 5 epochs, the best-validation checkpoint
                  is tested. Reports relative MRR of CAT over its best variant and the
                  router's parameter overhead.

Epoch budgets rather than wall-clock budgets: the 2-core machine is shared, so
seconds are noisy; epochs are not. Seconds per epoch are recorded beside them.

    nice -n 5 python bench/kg_cat.py --dataset WN18RR --part pilot
    nice -n 5 python bench/kg_cat.py --dataset WN18RR --part pilot --variants h --scales 1,2 --no-old-attention  # widen
    nice -n 5 python bench/kg_cat.py --dataset WN18RR --part compare --epochs 30
Writes bench/results/kg_cat_<dataset>_cpu.json (rewritten after every arm; parts merge).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import machine_info  # bench/ is sys.path[0] when run as a script
from kg_text_init import run_arm, summary

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
                     "valid_mrr": res["valid"]["mrr"], "seconds": secs})
        print(rows[-1], flush=True)
        _save(out, result)
    best = {}
    for b in ("H", "S"):
        cands = [r for r in rows if r["variant"] == b and r["setting"].startswith("score_scale")]
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
        print(name, {k: arms["arms"][name][k] for k in ("test", "best_epoch", "epoch_seconds_mean")}, flush=True)
        _save(out, result)
    a = arms["arms"]
    fixed = {k: v["test"]["mrr"] for k, v in a.items() if k != "CAT"}
    if "CAT" in a and fixed:
        best = max(fixed, key=fixed.get)
        arms["best_variant"] = best
        arms["cat_vs_best_relative"] = a["CAT"]["test"]["mrr"] / fixed[best] - 1.0
        arms["router_param_overhead"] = a["CAT"]["num_params"] / a[best]["num_params"] - 1.0
    _save(out, result)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="WN18RR", choices=sorted(SLUG))
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--part", choices=("pilot", "compare"), required=True)
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
    result["machine"] = machine_info()
    result["dataset"] = args.dataset
    result["protocol"] = __doc__
    ds = load_kg_dataset(args.dataset, args.data_dir)
    (pilot if args.part == "pilot" else compare)(args, ds, result, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
