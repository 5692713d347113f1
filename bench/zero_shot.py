"""Cross-dataset zero-shot node classification benchmark -> bench/results/zero_shot.json (+ PNGs).

For every target in TARGETS, an aligner is trained on the other datasets (the target is
never seen) and evaluated on the target beside the two baselines on the same encoder and
prompts: text only, and text + parameter-free SGC propagation. Variants: gated
hyperbolic/spherical/Euclidean experts (configs/zero_shot/default.yaml) and the
Euclidean-only ablation (configs/zero_shot/euclidean.yaml); seeds 0..S-1 -> mean ± std.

    nice -n 10 .venv/bin/python bench/zero_shot.py [--seeds 3] [--targets cora,...] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import machine_info  # bench/ is sys.path[0] when run as a script

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geofm.align import AlignConfig, build_aligner, train_aligner  # noqa: E402
from geofm.config import load_config  # noqa: E402
from geofm.zero_shot import evaluate_target, few_shot_eval, load_text_encoder, plot_target, prepare_named  # noqa: E402

TARGETS = ("cora", "arxiv2023", "webkb-cornell", "webkb-texas")
VARIANTS = {"gated": "configs/zero_shot/default.yaml", "euclidean": "configs/zero_shot/euclidean.yaml"}
OUT = ROOT / "bench" / "results"


def mean_std(rows: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for k in ("accuracy", "macro_f1"):
        v = np.array([r[k] for r in rows])
        out[k], out[f"{k}_std"] = float(v.mean()), float(v.std())
    out["runs"] = len(rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default=str(OUT / "zero_shot.json"))
    args = ap.parse_args()

    targets = args.targets.split(",")
    variants = args.variants.split(",")
    cfgs = {v: load_config(ROOT / VARIANTS[v], AlignConfig, args.overrides) for v in variants}
    base = cfgs[variants[0]]
    enc = load_text_encoder(base.text_model)
    t0 = time.perf_counter()
    names = list(dict.fromkeys(list(base.sources) + targets))
    doms = {n: prepare_named(n, base, enc) for n in names}
    prep_s = time.perf_counter() - t0
    result = {
        "machine": machine_info(),
        "protocol": "cross-dataset: the aligner is trained on every source except the target; all labelled "
                    "target nodes are evaluated; baselines use the same text encoder and class prompts",
        "text_model": base.text_model or "all-MiniLM-L6-v2 (packaged)",
        "configs": {v: VARIANTS[v] for v in variants},
        "overrides": args.overrides,
        "seeds": args.seeds,
        "prepare_seconds": round(prep_s, 1),
        "datasets": {n: {"nodes": d.num_nodes, "classes": int(d.class_emb.shape[0]), "empty_texts": d.n_empty,
                         "truncated_texts": d.n_truncated, "classes_without_description": d.n_missing_descriptions}
                     for n, d in doms.items()},
        "targets": {},
    }
    for target in targets:
        sources = [doms[s] for s in base.sources if s != target]
        entry: dict = {"sources": [d.name for d in sources]}
        for v in variants:
            rows, fs_rows, times, gates, ks = [], {}, [], [], []
            for seed in range(args.seeds):
                from dataclasses import replace

                cfg = replace(cfgs[v], seed=seed)
                model = build_aligner(cfg, text_dim=sources[0].text.shape[1])
                t = time.perf_counter()
                tr = train_aligner(model, sources, cfg)
                times.append(time.perf_counter() - t)
                res = evaluate_target(model, doms[target], baseline_hops=cfg.eval.hops, seed=seed)
                arr = res.pop("_arrays")
                rows.append({"accuracy": res["accuracy"], "macro_f1": res["macro_f1"]})
                gates.append(res["gate_mean"])
                ks.append(res["curvatures"])
                entry["baselines"] = res["baselines"]
                if v == "gated":
                    for k in cfg.eval.few_shot_k:
                        fs = few_shot_eval(arr["embedding"], arr["labels"], res["num_classes"], k=k,
                                           trials=cfg.eval.few_shot_trials, seed=seed)
                        for meth, m in fs.items():
                            fs_rows.setdefault(f"{k}-shot {meth}", []).append(m)
                    if seed == 0:
                        png = OUT / "zero_shot" / f"{target}.png"
                        plot_target(png, title=f"{target} (gated aligner, seed 0; trained on "
                                    f"{', '.join(d.name for d in sources)}): acc {res['accuracy']:.3f}",
                                    labels=arr["labels"], pred=arr["pred"], embedding=arr["embedding"],
                                    class_names=doms[target].class_names)
                        entry["png"] = str(png.relative_to(ROOT))
                print(f"{target:14s} {v:9s} seed {seed}: acc {res['accuracy']:.4f} F1 {res['macro_f1']:.4f} "
                      f"(text {res['baselines']['text_only']['accuracy']:.4f}, prop "
                      f"{res['baselines']['text_propagation']['accuracy']:.4f}) train {times[-1]:.0f}s "
                      f"loss {np.mean(tr.losses[-20:]):.3f}", flush=True)
            entry[v] = {**mean_std(rows), "per_seed": rows, "train_seconds_mean": round(float(np.mean(times)), 1),
                        "gate_mean": np.mean(gates, axis=0).round(4).tolist(),
                        "curvatures_mean": np.mean(ks, axis=0).round(4).tolist()}
            if fs_rows:
                entry[v]["few_shot"] = {
                    name: {key: float(np.mean([r[key] for r in rs])) for key in ("accuracy", "macro_f1")}
                    for name, rs in fs_rows.items()}
        # text+propagation few-shot for comparison (deterministic embedding; same support draws)
        if "gated" in variants:
            entry["baselines"]["text_propagation_few_shot"] = {}
            for k in base.eval.few_shot_k:
                acc = {}
                for seed in range(args.seeds):
                    fs = few_shot_eval(doms[target].prop, doms[target].labels, doms[target].class_emb.shape[0], k=k,
                                       trials=base.eval.few_shot_trials, seed=seed)
                    for meth, m in fs.items():
                        acc.setdefault(f"{k}-shot {meth}", []).append(m)
                entry["baselines"]["text_propagation_few_shot"].update(
                    {n: {key: float(np.mean([r[key] for r in rs])) for key in ("accuracy", "macro_f1")}
                     for n, rs in acc.items()})
        best_base = {m: max(entry["baselines"][b][m] for b in ("text_only", "text_propagation"))
                     for m in ("accuracy", "macro_f1")}
        for v in variants:
            entry[v]["beats_both_baselines"] = {m: bool(entry[v][m] > best_base[m]) for m in best_base}
            entry[v]["gap_vs_best_baseline"] = {m: round(entry[v][m] - best_base[m], 4) for m in best_base}
        result["targets"][target] = entry
        result["total_seconds"] = round(time.perf_counter() - t0, 1)
        Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(json.dumps({t: {v: (e[v]["accuracy"], e[v]["macro_f1"]) for v in variants} | {
        "text_only": (e["baselines"]["text_only"]["accuracy"], e["baselines"]["text_only"]["macro_f1"]),
        "text_propagation": (e["baselines"]["text_propagation"]["accuracy"],
                             e["baselines"]["text_propagation"]["macro_f1"])}
        for t, e in result["targets"].items()}, indent=1))


if __name__ == "__main__":
    main()
