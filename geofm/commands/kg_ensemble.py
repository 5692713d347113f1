"""`geofm kg-ensemble`: late fusion of trained KG runs, weights chosen on validation MRR.

    geofm kg-ensemble RUN [RUN ...] [--step 0.05] [--refine 2] [--dataset NAME] [--data-dir DIR] [--out DIR] [--json]
    geofm kg-ensemble --config configs/kg/ensemble_wn18rr.yaml [--set key=value ...] [--json]

RUNs are `geofm kg` run folders (their best checkpoints are used). With --config, the
members listed there are trained first where their run folder has no results.json
(resumed from their checkpoints if interrupted). Writes OUT/results.json
(default runs/kg/ensemble_<dataset>_<time>); --json prints the final test metrics.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from geofm.commands import guarded, setup_logging
from geofm.commands.kg import JSON_KEYS, add_output_flags
from geofm.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geofm kg-ensemble", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("runs", nargs="*", help="`geofm kg` run folders (their best checkpoints)")
    p.add_argument("--config", help="ensemble YAML (members to train and fuse), e.g. configs/kg/ensemble_wn18rr.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="with --config: override an ensemble config key, e.g. --set step=0.1; repeatable")
    p.add_argument("--step", type=float, help="weight-grid spacing, 1/n (default: the config's, else 0.05)")
    p.add_argument("--refine", type=int, help="rounds of halved weight moves around the best grid point "
                                              "(default: the config's, else 2)")
    p.add_argument("--no-split-unseen", action="store_true",
                   help="one set of weights for all queries (default: queries about entities unseen in training get their own)")
    p.add_argument("--dataset", help="dataset name or folder (default: the config's, else the first run's)")
    p.add_argument("--data-dir", help="folder holding datasets")
    p.add_argument("--out", help="output folder for results.json (default: the config's `out`, else "
                                 "runs/kg/ensemble_<dataset>_<time>)")
    add_output_flags(p)
    return p


def _fmt_w(w: list[float]) -> str:
    """[0.2875, 0.7125] for a log line (the JSON keeps the full values)."""
    return "[" + ", ".join(f"{x:.4g}" for x in w) + "]"


@guarded("geofm kg-ensemble")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    log = logging.getLogger("geofm.kg")
    from geofm.kg.ensemble import fit_ensemble, load_ensemble, run_ensemble_config

    if bool(args.runs) == bool(args.config):
        print("geofm kg-ensemble: give run folders or --config (one of the two)", file=sys.stderr)
        return 2
    if args.overrides and not args.config:
        print("geofm kg-ensemble: --set needs --config (with run folders, use --step / --refine / --dataset)", file=sys.stderr)
        return 2
    overrides = list(args.overrides)
    if args.dataset:
        overrides.append(f"dataset={json.dumps(args.dataset)}")
    if args.data_dir:
        overrides.append(f"data_dir={json.dumps(args.data_dir)}")
    if args.out:
        from geofm.data.cache import check_out_folder

        check_out_folder(args.out)  # before members train
    step, refine, out, seed, split = args.step, args.refine, args.out, 0, not args.no_split_unseen
    try:
        if args.config:
            ecfg, ens = run_ensemble_config(args.config, overrides, progress=not args.quiet and sys.stderr.isatty())
            step = ecfg.step if step is None else step
            refine = ecfg.refine if refine is None else refine
            out, seed, split = out or ecfg.out, ecfg.seed, split and ecfg.split_unseen
        else:
            ens = load_ensemble(args.runs, name=args.dataset, data_dir=args.data_dir)
        step = 0.05 if step is None else step

        def report(w, mrr):
            log.info("weights %s  valid MRR %.4f", " ".join(f"{x:.2f}" for x in w), mrr)

        results = fit_ensemble(ens, step=step, refine=2 if refine is None else refine, split_unseen=split, seed=seed,
                               progress=None if args.quiet else report)
    except (ConfigError, ValueError, FileNotFoundError) as err:  # FloatingPointError: `guarded`, exit 3
        print(f"geofm kg-ensemble: {err}", file=sys.stderr)
        return 2
    out_dir = Path(out) if out else Path("runs") / "kg" / f"ensemble_{Path(ens.dataset.name).name}_{time.strftime('%Y%m%d-%H%M%S')}"
    results["command"] = "geofm kg-ensemble " + " ".join(argv if argv is not None else sys.argv[1:])
    from geofm.kg.train import _json_default

    from geofm.data.cache import atomic_write_text

    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=1, default=_json_default))
    test = results["test"]
    log.info("ensemble weights %s (unseen-entity queries %s) -> test (%s ranks): MRR %.4f  H@1 %.4f  H@10 %.4f  -> %s", _fmt_w(results["weights"]), _fmt_w(results["weights_unseen_head"]),
             test["tie_policy"], test["mrr"], test["hits@1"], test["hits@10"], out_dir / "results.json")
    if args.json:
        print(json.dumps({k: test[k] for k in JSON_KEYS}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

