"""`geofm zero-shot`: train a graph–text aligner and/or evaluate it zero-shot on an unseen TAG.

    geofm zero-shot --checkpoint RUN --dataset NAME [--data-dir DIR] [--json]
    geofm zero-shot --config configs/zero_shot/default.yaml --out RUN [--dataset NAME] [--set k=v ...]

With --config the aligner is trained on the config's sources (minus --dataset, the
target: cross-dataset protocol) and saved to RUN; with --dataset it is then evaluated.
Evaluation prints accuracy and macro-F1 of the aligned model beside the text-only and
text+propagation baselines (same encoder, same prompts) and writes
RUN/zero_shot/<dataset>.json (+ .png) and every node's predicted class,
RUN/zero_shot/<dataset>.predictions.tsv (id, class, class_name, score); a target
without labels (label null) gets the predictions only. --json prints one JSON object with
keys accuracy, macro_f1, baselines{text_only, text_propagation} (null without labels).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from geofm.commands import guarded, setup_logging

JSON_KEYS = ("accuracy", "macro_f1", "baselines")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geofm zero-shot", description="Zero-shot node classification with a "
                                "graph–text aligner trained on other datasets.")
    p.add_argument("--checkpoint", help="run folder of a trained aligner (evaluate it)")
    p.add_argument("--config", help="YAML config: train an aligner first (configs/zero_shot/*.yaml)")
    p.add_argument("--dataset", help="target dataset name or folder in the TAG format")
    p.add_argument("--data-dir", help="folder holding datasets (where names are looked up)")
    p.add_argument("--out", help="run folder for --config (default runs/zero_shot/<time>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key with --config, e.g. --set train.steps=50; repeatable")
    p.add_argument("--no-plot", action="store_true", help="skip the confusion/embedding PNG")
    p.add_argument("--no-few-shot", action="store_true", help="skip the few-shot evaluation")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--quiet", action="store_true", help="warnings only, no progress bar")
    return p


def _fail(msg: str) -> int:
    print(f"geofm zero-shot: {msg}", file=sys.stderr)
    return 2


@guarded("geofm zero-shot")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    if bool(args.checkpoint) == bool(args.config):
        return _fail("give exactly one of --checkpoint RUN (evaluate) or --config FILE (train)")
    if args.checkpoint and not args.dataset:
        return _fail("--checkpoint needs --dataset NAME (the target to evaluate on)")
    if args.checkpoint and (args.overrides or args.out):
        return _fail("--set and --out apply to training (--config); an evaluation with --checkpoint uses the run's "
                     "saved config and writes into RUN/zero_shot/")
    from geofm.config import load_config

    from geofm.align import AlignConfig
    from geofm.zero_shot import evaluate_run, train_run

    run = Path(args.checkpoint) if args.checkpoint else None
    try:
        if args.config:
            overrides = list(args.overrides)
            if args.data_dir:
                overrides.append(f"data_dir={json.dumps(args.data_dir)}")
            cfg = load_config(args.config, AlignConfig, overrides)
            run = Path(args.out) if args.out else Path("runs") / "zero_shot" / time.strftime("%Y%m%d-%H%M%S")
            train_run(cfg, run, exclude=[args.dataset] if args.dataset else [], progress=not args.quiet and sys.stderr.isatty())
            logging.getLogger("geofm.zero_shot").info("aligner saved to %s", run)
            if not args.dataset:
                return 0
        res = evaluate_run(run, args.dataset, data_dir=args.data_dir, plot=not args.no_plot,
                           few_shot=not args.no_few_shot)
    except (ValueError, FileNotFoundError) as err:  # ConfigError is a ValueError
        return _fail(str(err))
    if args.json:
        print(json.dumps({k: res[k] for k in JSON_KEYS}))
    else:
        b = res["baselines"]
        if res["accuracy"] is None:
            counts = ", ".join(f"{name} {n}" for name, n in res["predicted_counts"].items())
            print(f"{res['dataset']}: no labelled nodes, so no accuracy; predicted classes: {counts}")
        else:
            print(f"{res['dataset']}: zero-shot accuracy {res['accuracy']:.4f}  macro-F1 {res['macro_f1']:.4f}")
            print(f"  text only:          accuracy {b['text_only']['accuracy']:.4f}  "
                  f"macro-F1 {b['text_only']['macro_f1']:.4f}")
            print(f"  text + propagation: accuracy {b['text_propagation']['accuracy']:.4f}  "
                  f"macro-F1 {b['text_propagation']['macro_f1']:.4f}")
        if res.get("empty_texts") or res.get("truncated_texts") or res.get("classes_without_description"):
            print(f"  empty texts {res['empty_texts']}, truncated texts {res['truncated_texts']}, "
                  f"classes without description {res['classes_without_description']}")
        if res.get("correction_scale", 1.0) != 1.0:
            part = "whole learned correction" if res.get("overlap_scope", "all") == "all" else "label-space terms"
            print(f"  {part} scaled by {res['correction_scale']:.3f} (label overlap with the sources "
                  f"** eval.overlap_power)")
        print(f"  -> {run / 'zero_shot'} (per-node predictions: {Path(res['predictions']).name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
