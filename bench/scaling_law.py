"""Geometric scaling law: pretrain on 1, 2, 4, ... domains, then 5-shot on a held-out target.

For each number of pretraining domains n (a prefix of DOMAINS: the real TAG datasets in
../shared/data or $GEOFM_DATA first, then synthetic geometries), pretrain a short
GraphGlue run and report, on the held-out target, the transferability score (GTM =
holonomy + curvature, before fine-tuning) and 5-shot accuracy (mean ± std over
splits) with the default adapter (`geofm.adapt.AdapterSpec()`: joint or late-fusion head,
text skip, label propagation, chosen on validation nodes) and with the backbone-only
GraphGlue head (what the pretrained backbone alone carries). n = 0 is the randomly
initialised baseline. Model design: the session-3 default (shared input map, residual
GCN, input-preservation term). Writes
bench/results/scaling_law.json and scaling_law.png.

    nice -n 10 .venv/bin/python bench/scaling_law.py [--counts 0 1 2 4 6] [--target cora]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_info  # bench/ is sys.path[0] when run as a script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from geofm.adapt import AdapterSpec, adapt_kshot  # noqa: E402
from geofm.glue import GlueConfig  # noqa: E402
from geofm.pretrain import AdaptConfig, DataConfig, PretrainConfig, TrainConfig, pretrain  # noqa: E402

REAL = ["arxiv2023", "webkb-cornell", "webkb-texas", "cora"]
SYNTH = ["synthetic-tree", "synthetic-cliques", "synthetic-grid", "synthetic-ring"]


def _have_real() -> bool:
    roots = [os.environ.get("GEOFM_DATA"), str(Path(__file__).resolve().parents[2] / "shared" / "data")]
    return any(r and (Path(r) / "tag" / "cora").is_dir() for r in roots)


def config(domains: list[str], target: str, args: argparse.Namespace) -> PretrainConfig:
    return PretrainConfig(
        seed=0,
        model=GlueConfig(dim=128, num_generators=16, knn=5, att_dim=64, max_nodes=32, pool="mean_center",
                         input_projection="shared",
                         backbone={"name": "gcn", "kwargs": {"num_layers": 2, "residual": True}}),
        data=DataConfig(datasets=domains, inputs="auto", in_dim=384),
        train=TrainConfig(epochs=1, batch_size=64, local_steps=args.steps, global_steps=args.steps // 4,
                          refine_steps=args.steps // 4, warmup_steps=10, checkpoint_every=10**6, log_every=10,
                          align_weight=3.0, align_target="center"),
        adapt=AdaptConfig(target=target, shots=[5], splits=args.splits, epochs=args.adapt_epochs, eval_every=10,
                          patience=5, max_test=args.max_test),
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--counts", type=int, nargs="+", default=[0, 1, 2, 4, 6])
    p.add_argument("--target", default=None)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--splits", type=int, default=3)
    p.add_argument("--adapt-epochs", type=int, default=100)
    p.add_argument("--max-test", type=int, default=1000)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "scaling_law.json"))
    args = p.parse_args()
    real = _have_real()
    target = args.target or ("cora" if real else "synthetic-mixed")
    pool = [d for d in (REAL if real else []) if d != target] + SYNTH
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.counts:
            doms = pool[: max(n, 1)]
            cfg = config(doms, target, args)
            t0 = time.perf_counter()
            run = Path(tmp) / f"n{n}"
            pretrain(cfg, run, resume=False, progress=False)
            res = adapt_kshot(run, cfg.adapt, random_init=(n == 0))
            head = adapt_kshot(run, cfg.adapt, random_init=(n == 0),
                               spec=AdapterSpec(text_skip=False, label_prop=(0.0,), self_train=0))
            rows.append({"num_domains": n, "domains": doms if n else [], "gtm": res["transferability"]["gtm"],
                         "holonomy": res["transferability"]["holonomy"],
                         "curvature": res["transferability"]["curvature"],
                         "acc5_mean": res["shots"]["5"]["mean"], "acc5_std": res["shots"]["5"]["std"],
                         "graphglue_head_acc5_mean": head["shots"]["5"]["mean"],
                         "graphglue_head_acc5_std": head["shots"]["5"]["std"],
                         "seconds": time.perf_counter() - t0})
            print(json.dumps(rows[-1]), flush=True)
    out = {"machine": machine_info(),
           "target": target, "real_data": real, "settings": vars(args), "rows": rows,
           "note": "num_domains 0 = randomly initialised backbone (baseline); short budget, see settings; "
                   "the adapter is fixed in advance (no selection on target test scores)"}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ns = [r["num_domains"] for r in rows]
    ax[0].errorbar(ns, [r["acc5_mean"] for r in rows], yerr=[r["acc5_std"] for r in rows], marker="o",
                   label="full adapter")
    ax[0].errorbar(ns, [r["graphglue_head_acc5_mean"] for r in rows], yerr=[r["graphglue_head_acc5_std"] for r in rows],
                   marker="s", label="backbone-only head")
    ax[0].legend(fontsize=8)
    ax[0].set_xlabel("pretraining domains (0 = random init)")
    ax[0].set_ylabel(f"5-shot accuracy on {target} (%)")
    ax[1].plot(ns, [r["gtm"] for r in rows], marker="o")
    ax[1].set_xlabel("pretraining domains (0 = random init)")
    ax[1].set_ylabel("transferability GTM (lower = smoother)")
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=110)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
