"""Random vs text-encoder entity initialisation for the same KG model and budget.

Arms (same model, seed, optimiser and epoch budget; configs/kg/atth_text_wn18rr.yaml
with `--set` overrides):
  random        the model's own init (N(0, init_size))
  text_pca      MiniLM(entity2text) -> fixed PCA to d, scaled (geofm.kg.init)
  text_learned  entity = W·text + residual, W starts at the PCA map, trained
  graph_learned with --graph-checkpoint RUN: the same, on the frozen embeddings of a
                pretrained GraphGlue backbone run over the entity graph (init.kind=graph)

The text scale is chosen on VALIDATION MRR: a short pilot (`--pilot-epochs`) of the
text_pca arm per candidate scale; the best scale is used by both text arms. Test
numbers are reported for the final arms only and are never used for selection.
Reports valid/test MRR and Hits@10 overall and on the queries whose triple has an
entity unseen in training (the evaluator's `unseen` block).

    nice -n 5 python bench/kg_text_init.py [--dataset WN18RR] [--epochs 15] [--pilot-epochs 2] [--scales 0.001,0.01,0.1]
    nice -n 5 python bench/kg_text_init.py --pilot-only --scales 0.3,1.0   # widen the grid, arms kept
Writes bench/results/kg_text_init.json (rewritten after every arm, so a cut run keeps what it has).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import machine_info  # bench/ is sys.path[0] when run as a script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geofm.config import load_config  # noqa: E402
from geofm.kg.config import KGConfig  # noqa: E402
from geofm.kg.train import load_kg_dataset, train_kg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "kg_text_init.json"
KEYS = ("mrr", "hits@1", "hits@10", "mr")


def summary(res: dict) -> dict:
    """Overall and unseen-entity metrics of one train_kg result, plus timing."""
    out: dict = {}
    for split in ("valid", "test"):
        m = res[split]
        out[split] = {k: m[k] for k in KEYS} | {"count": m["num_queries"]}
        u = m.get("unseen")
        out[split + "_unseen"] = ({k: u[k] for k in KEYS} | {"count": u["count"]}) if u else None
    out["best_epoch"] = res["best_epoch"]
    out["epoch_seconds_mean"] = res["timing"]["epoch_seconds_mean"]
    out["num_params"] = res["num_params"]
    out["entity_init"] = res["entity_init"]
    out["valid_history"] = [{"epoch": h["epoch"], "loss": h["loss"], "valid_mrr": h["valid_mrr"]}
                            for h in res["history"] if "valid_mrr" in h]
    return out


def run_arm(config: Path, ds, overrides: list[str]) -> tuple[dict, float]:
    cfg = load_config(config, KGConfig, overrides)
    t0 = time.perf_counter()
    res = train_kg(cfg, dataset=ds, progress=False)
    return res, time.perf_counter() - t0


def pilot_entry(config: Path, ds, common: list[str], epochs: int, scale: float) -> dict:
    """Validation MRR of the text_pca arm after a short run at one text scale."""
    res, secs = run_arm(config, ds, common + [f"train.epochs={epochs}", "init.kind=text", "init.projection=pca",
                                              f"init.scale={scale}"])
    return {"scale": scale, "valid_mrr": res["valid"]["mrr"], "valid_unseen_mrr": res["valid"]["unseen"]["mrr"],
            "seconds": secs}


def extend_pilot(args: argparse.Namespace) -> int:
    """Run the pilot for more scales and record them (and what they would select) in the existing JSON."""
    out = Path(args.out)
    result = json.loads(out.read_text())
    sel = result["selection"]
    common = result["common_overrides"]
    ds = load_kg_dataset(args.dataset or load_config(args.config, KGConfig).data.name, None)
    extra = [pilot_entry(Path(args.config), ds, common, result["budget"]["pilot_epochs"], float(s))
             for s in args.scales.split(",")]
    sel["extended_pilot"] = {"machine": machine_info(), "pilot": extra}
    every = sel["pilot"] + extra
    sel["extended_pilot"]["best_scale_over_all"] = max(every, key=lambda p: p["valid_mrr"])["scale"]
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(sel["extended_pilot"], indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs/kg/atth_text_wn18rr.yaml"))
    ap.add_argument("--dataset", default=None, help="dataset name/folder (default: the config's)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--pilot-epochs", type=int, default=2)
    ap.add_argument("--scales", default="0.001,0.01,0.1", help="candidate text scales (per-coordinate std)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--graph-checkpoint", default=None,
                    help="a `geofm pretrain` run folder: adds the graph_learned arm (init.kind=graph)")
    ap.add_argument("--pilot-only", action="store_true",
                    help="only run the pilot for --scales and add it to the existing --out JSON's selection "
                         "(checks whether the grid edge hid a better scale; the arms are not rerun)")
    args = ap.parse_args(argv)
    if args.pilot_only:
        return extend_pilot(args)

    common = [f"train.dtype={args.dtype}", "train.valid_every=5", "train.patience=100"]
    base_cfg = load_config(args.config, KGConfig, common)
    ds = load_kg_dataset(args.dataset or base_cfg.data.name, base_cfg.data.data_dir)
    result: dict = {
        "benchmark": "entity init: random vs text encoder (entity2text) for the same model and budget",
        "machine": machine_info(),
        "dataset": {"name": ds.name, "num_entities": ds.num_entities, "entity_text": ds.meta.get("entity_text"),
                    "num_unseen_entities": ds.meta.get("num_unseen_entities")},
        "config": str(Path(args.config).resolve().relative_to(REPO)),
        "common_overrides": common,
        "budget": {"epochs": args.epochs, "pilot_epochs": args.pilot_epochs,
                   "note": f"budgeted run: {args.epochs} epochs per arm (the reproduction configs run up to 200 "
                           f"with early stopping), {args.dtype}; best epoch by validation MRR (validation every 5 epochs)"},
        "model": {"name": base_cfg.model.name, "kwargs": base_cfg.model.kwargs},
    }
    out = Path(args.out)

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))

    # text encoding once (fills the embedding cache; later arms read it)
    from geofm.text import TextEncoder

    t0 = time.perf_counter()
    _, stats = TextEncoder.load().encode_with_stats([t for t in ds.entity_text or [] if t is not None], progress=False)
    result["text_encoding"] = {"n_texts": stats.n_texts, "n_cached": stats.n_cached, "n_computed": stats.n_computed,
                               "n_truncated": stats.n_truncated, "seconds": time.perf_counter() - t0}
    save()

    # scale selection on validation MRR (text_pca arm, short pilot)
    pilot = []
    for scale in [float(s) for s in args.scales.split(",")]:
        pilot.append(pilot_entry(Path(args.config), ds, common, args.pilot_epochs, scale))
        print(json.dumps(pilot[-1]), flush=True)
    best = max(pilot, key=lambda p: p["valid_mrr"])["scale"]
    result["selection"] = {"procedure": f"text_pca arm trained {args.pilot_epochs} epochs per candidate scale; "
                                        "scale with the highest overall validation MRR is used by both text arms",
                           "pilot": pilot, "selected_scale": best}
    save()

    arms = {
        "random": ["init.kind=random"],
        "text_learned": ["init.kind=text", "init.projection=learned", f"init.scale={best}"],
        "text_pca": ["init.kind=text", "init.projection=pca", f"init.scale={best}"],
    }
    if args.graph_checkpoint:
        arms["graph_learned"] = ["init.kind=graph", "init.projection=learned", f"init.scale={best}",
                                 f"init.checkpoint={args.graph_checkpoint}"]
    result["arms"] = {}
    for name, extra in arms.items():
        res, secs = run_arm(Path(args.config), ds, common + [f"train.epochs={args.epochs}", *extra])
        result["arms"][name] = summary(res) | {"overrides": extra, "wall_seconds": secs}
        print(name, json.dumps({k: result["arms"][name][k] for k in ("valid", "test", "test_unseen")}), flush=True)
        save()
    base = result["arms"]["random"]
    result["ratios_vs_random"] = {
        name: {"test_mrr": a["test"]["mrr"] / base["test"]["mrr"],
               "test_unseen_mrr": a["test_unseen"]["mrr"] / base["test_unseen"]["mrr"],
               "epoch_seconds": a["epoch_seconds_mean"] / base["epoch_seconds_mean"]}
        for name, a in result["arms"].items() if name != "random"
    }
    save()
    print(json.dumps(result["ratios_vs_random"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
