"""`geofm kg`: knowledge-graph completion training + filtered evaluation.

    geofm kg --config configs/kg/atth_wn18rr.yaml [--dataset NAME] [--data-dir DIR]
             [--set key=value ...] [--out RUN_DIR] [--no-resume] [--json] [--quiet]

Writes RUN_DIR/{config.yaml, metrics.jsonl, results.json, checkpoints/}; an
existing RUN_DIR with checkpoints is resumed when its recorded config and data
checksums match (budgets such as train.epochs may change), and refused, with the
differing keys and the folder untouched, otherwise or with --no-resume (train.resume=false).
With --json the final test metrics are printed as one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from geofm.commands import guarded, setup_logging
from geofm.config import load_config

JSON_KEYS = ("mrr", "mr", "hits@1", "hits@3", "hits@10")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geofm kg", description="Knowledge-graph completion (train + filtered evaluation).")
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/kg/atth_wn18rr.yaml")
    p.add_argument("--dataset", help="dataset name or folder (overrides data.name)")
    p.add_argument("--data-dir", help="folder holding datasets (overrides data.data_dir)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (YAML-typed value), e.g. --set train.epochs=5; repeatable")
    p.add_argument("--out", help="run folder (default runs/kg/<model>_<dataset>_<time>)")
    p.add_argument("--no-resume", action="store_true", help="refuse a run folder that holds checkpoints "
                   "(= --set train.resume=false)")
    add_output_flags(p)
    return p


def add_output_flags(p: argparse.ArgumentParser) -> None:
    """--json (final test metrics as one JSON object) and --quiet, shared by the KG commands."""
    p.add_argument("--json", action="store_true", help="print final test metrics as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress output, warnings only")


@guarded("geofm kg")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    from geofm.kg.config import KGConfig

    overrides = list(args.overrides)
    if args.dataset:
        overrides.append(f"data.name={json.dumps(args.dataset)}")
    if args.data_dir:
        overrides.append(f"data.data_dir={json.dumps(args.data_dir)}")
    if args.no_resume:
        overrides.append("train.resume=false")
    cfg = load_config(args.config, KGConfig, overrides)  # ConfigError: exit 2 through `guarded`
    from geofm.kg.train import train_kg

    out = Path(args.out) if args.out else Path("runs") / "kg" / f"{cfg.model.name}_{Path(cfg.data.name).name}_{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        results = train_kg(cfg, out, progress=None if not args.quiet else False)
    except (ValueError, FileNotFoundError) as err:  # CheckpointError is one; FloatingPointError: `guarded`, exit 3
        print(f"geofm kg: {err}", file=sys.stderr)
        return 2
    test = results["test"]
    logging.getLogger("geofm.kg").info(
        "test (%s ranks): MRR %.4f  MR %.1f  H@1 %.4f  H@3 %.4f  H@10 %.4f  -> %s",
        test["tie_policy"], test["mrr"], test["mr"], test["hits@1"], test["hits@3"], test["hits@10"], out / "results.json",
    )
    if args.json:
        print(json.dumps({k: test[k] for k in JSON_KEYS}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
