"""`python -m finetune.adapt RUN_DIR [--target NAME] [--shots 1 5] [--splits 5] [--variant full] [--baseline] [--json PATH]`

k-shot node classification with a pretrained GraphGlue run (frozen foundation model; see
`geofm.adapt`). Prints the transferability score first, then a results table; with
--baseline the same protocol also runs on a randomly initialised model. --variant picks
the adapter from `geofm.adapt.VARIANTS`, the table bench/pretrain_kshot.py reports (the
README's k-shot columns): full (the default: backbone head + class-prompt text prior, joint
or late fusion, + label propagation + self-training), graphglue_head (the frozen backbone's
features only), text_only, backbone_prompt (graphglue_head + the decoder prior: the
backbone's outputs decoded into the model's input space, i.e. the projected, column-z-scored
in_dim space (the text space itself only when in_dim = 384 with the identity projection),
read through a map initialised at the class prompts mapped into that space) or
backbone_full (backbone_prompt + label propagation + self-training: no raw-text skip).
The decoder-prior variants need a text-attributed target (exit 2 otherwise).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from geofm.adapt import VARIANTS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m finetune.adapt", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a `geofm pretrain` run folder")
    p.add_argument("--target", help="dataset to adapt to (default: the run config's adapt.target)")
    p.add_argument("--shots", type=int, nargs="+", help="k values (default: config)")
    p.add_argument("--splits", type=int, help="random splits (default: config)")
    p.add_argument("--epochs", type=int, help="adaptation epochs (default: config)")
    p.add_argument("--max-test", type=int, help="cap on test nodes per split (default: config)")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="full",
                   help="adapter variant from geofm.adapt.VARIANTS (default: full)")
    p.add_argument("--baseline", action="store_true", help="also run a randomly initialised model")
    p.add_argument("--json", metavar="PATH", help="write the results to this JSON file")
    args = p.parse_args(argv)
    from geofm.commands import setup_logging

    setup_logging(quiet=False)
    from geofm.adapt import adapt_kshot, format_table
    from geofm.checkpoint import CheckpointError
    from geofm.pretrain import load_pretrained

    if args.json and not Path(args.json).resolve().parent.is_dir():
        print(f"finetune.adapt: --json {args.json}: folder {Path(args.json).resolve().parent} does not exist",
              file=sys.stderr)
        return 2
    try:
        _, cfg, _ = load_pretrained(args.run_dir)
    except CheckpointError as err:
        print(f"finetune.adapt: {err}", file=sys.stderr)
        return 2
    changes = {k: v for k, v in {"target": args.target, "shots": args.shots, "splits": args.splits,
                                 "epochs": args.epochs, "max_test": args.max_test}.items() if v is not None}
    acfg = dataclasses.replace(cfg.adapt, **changes)
    try:
        spec = VARIANTS[args.variant]
        results = [adapt_kshot(args.run_dir, acfg, spec=spec)]
        if args.baseline:
            results.append(adapt_kshot(args.run_dir, acfg, random_init=True, spec=spec))
    except ValueError as err:
        print(f"finetune.adapt: {err}", file=sys.stderr)
        return 2
    print(format_table(*results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
