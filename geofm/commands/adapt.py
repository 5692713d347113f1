"""`geofm adapt`: k-shot node classification on a new dataset with a pretrained GraphGlue run.

    geofm adapt RUN [--target NAME|FOLDER] [--data-dir DIR] [--shots 1 5] [--splits 5]
                [--epochs N] [--max-test N] [--variant full] [--baseline] [--json] [--quiet]
    geofm adapt RUN --target NAME|FOLDER --predict [--data-dir DIR] [--epochs N] [--variant full]

The pretrained model stays frozen (see `geofm.adapt`). Prints the target's transferability
score first (stderr), then a table of k-shot accuracy (mean ± std over the random splits);
--baseline runs the same protocol on a randomly initialised model of the same config.
Writes RUN/adapt/<target>-<variant>.json ({"target", "variant", "pretrained",
"random_init"}); --json prints that object on stdout instead of the table. --variant picks
the adapter from `geofm.adapt.VARIANTS` (the README's k-shot columns): full (the default:
backbone head + class-prompt text prior, + label propagation + self-training),
graphglue_head (the frozen backbone's features only), text_only, backbone_prompt (the head
reading the backbone's outputs decoded into input space, started at the class prompts) or
backbone_full (backbone_prompt + label propagation + self-training, no raw-text skip); the
decoder-prior variants need a text-attributed target.

--predict is for a graph of your own: the adapter is fitted on every labelled node of the
target (nodes with label null are the ones to classify; adapt.val_fraction of each class is
held out to select the adapter, its accuracy reported) and every node's class goes to
RUN/adapt/<target>-<variant>.predictions.tsv (id, class, class_name, probability, labelled),
the record to RUN/adapt/<target>-<variant>.predict.json. Exit codes: 0 ok, 2 bad run,
target or settings (nothing written).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

from geofm.commands import guarded, setup_logging


def build_parser(prog: str = "geofm adapt") -> argparse.ArgumentParser:
    from geofm.adapt import VARIANTS

    p = argparse.ArgumentParser(prog=prog, description="k-shot node classification with a pretrained "
                                "GraphGlue run (frozen backbone).")
    p.add_argument("run_dir", help="a `geofm pretrain` run folder")
    p.add_argument("--target", help="dataset name or folder in the TAG format (default: the run config's "
                   "adapt.target)")
    p.add_argument("--data-dir", help="folder where dataset names are looked up (default: the run "
                   "config's data.data_dir, then $GEOFM_DATA, then ../shared/data)")
    p.add_argument("--shots", type=int, nargs="+", help="k values (default: config)")
    p.add_argument("--splits", type=int, help="random splits (default: config)")
    p.add_argument("--epochs", type=int, help="adaptation epochs (default: config)")
    p.add_argument("--max-test", type=int, help="cap on test nodes per split (default: config)")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="full",
                   help="adapter variant from geofm.adapt.VARIANTS (default: full)")
    p.add_argument("--baseline", action="store_true", help="also run a randomly initialised model")
    p.add_argument("--predict", action="store_true", help="fit on all labelled nodes of the target and write "
                   "every node's predicted class (no k-shot protocol)")
    p.add_argument("--json", nargs="?", const=True, metavar="PATH",
                   help="print the result as one JSON object on stdout (instead of the table); with PATH, "
                        "also write it there and print the table")
    p.add_argument("--quiet", action="store_true", help="warnings only")
    return p


def result_stem(run_dir: str | Path, target: str, variant: str) -> Path:
    """RUN/adapt/<target>-<variant> (the target reduced to a safe file name), without suffix."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", target).strip("._") or "target"
    return Path(run_dir) / "adapt" / f"{stem}-{variant}"


def save_result(run_dir: str | Path, variant: str, pretrained: dict, random_init: dict | None = None) -> tuple[Path, dict]:
    """Write {"target", "variant", "pretrained", "random_init"} atomically to
    RUN/adapt/<target>-<variant>.json; (path, record)."""
    from geofm.data.cache import atomic_write_text

    record = {"target": pretrained["target"], "variant": variant, "pretrained": pretrained, "random_init": random_init}
    path = Path(f"{result_stem(run_dir, record['target'], variant)}.json")
    atomic_write_text(path, json.dumps(record, indent=1))
    return path, record


@guarded("geofm adapt")
def main(argv: list[str] | None = None, *, prog: str = "geofm adapt") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.quiet)
    from geofm.adapt import VARIANTS, adapt_kshot, format_table
    from geofm.pretrain import load_pretrained

    _, cfg, _ = load_pretrained(args.run_dir)  # a bad run folder: CheckpointError, exit 2 through `guarded`
    changes = {k: v for k, v in {"target": args.target, "shots": args.shots, "splits": args.splits,
                                 "epochs": args.epochs, "max_test": args.max_test}.items() if v is not None}
    acfg = dataclasses.replace(cfg.adapt, **changes)
    spec = VARIANTS[args.variant]
    if args.predict:
        protocol = [f for f, v in (("--shots", args.shots), ("--splits", args.splits), ("--max-test", args.max_test),
                                   ("--baseline", args.baseline)) if v]
        if protocol:
            print(f"{prog}: {', '.join(protocol)} belong to the k-shot protocol; --predict fits on every labelled "
                  "node", file=sys.stderr)
            return 2
        return _predict(args, acfg, spec, prog)
    try:
        pre = adapt_kshot(args.run_dir, acfg, spec=spec, data_dir=args.data_dir)
        rand = adapt_kshot(args.run_dir, acfg, random_init=True, spec=spec, data_dir=args.data_dir) \
            if args.baseline else None
    except (ValueError, FileNotFoundError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    path, res = save_result(args.run_dir, args.variant, pre, rand)
    return _emit(args.json, res, lambda: format_table(*(r for r in (pre, rand) if r is not None)), path)


def _emit(json_arg: bool | str | None, record: dict, table, saved: Path | str) -> int:
    """--json: the record on stdout; --json PATH: also written to PATH, the table printed;
    neither: the table. The saved file's path goes to stderr."""
    if isinstance(json_arg, str):
        from geofm.data.cache import atomic_write_text

        atomic_write_text(json_arg, json.dumps(record, indent=1))
    if json_arg is True:
        print(json.dumps(record))
    else:
        print(table())
        print(f"results: {saved}", file=sys.stderr)
    return 0


def _predict(args: argparse.Namespace, acfg, spec, prog: str) -> int:
    from geofm.adapt import adapt_predict
    from geofm.data.cache import atomic_write_text
    from geofm.metrics import write_predictions

    try:
        rec, probs, names, labelled = adapt_predict(args.run_dir, acfg, spec=spec, data_dir=args.data_dir)
    except ValueError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    stem = result_stem(args.run_dir, rec["target"], args.variant)
    rec["variant"] = args.variant
    path, rec["predicted_counts"] = write_predictions(f"{stem}.predictions.tsv", probs, names, score="probability",
                                                      labelled=labelled)
    rec["predictions"] = str(path)
    atomic_write_text(f"{stem}.predict.json", json.dumps(rec, indent=1))
    return _emit(args.json, rec, lambda: (
        f"{rec['target']}: adapter fitted on {rec['train_nodes']} labelled nodes, validation accuracy "
        f"{100 * rec['valid_acc']:.1f}% on {rec['valid_nodes']}; predicted classes: "
        + ", ".join(f"{n} {c}" for n, c in rec["predicted_counts"].items())), path)


if __name__ == "__main__":
    raise SystemExit(main())
