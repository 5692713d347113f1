"""`geofm pretrain`: multi-domain GraphGlue pretraining (resumable), optional k-shot adaptation.

    geofm pretrain --config configs/pretrain/<name>.yaml [--out RUN_DIR] [--data-dir DIR]
                   [--set key=value ...] [--no-resume] [--adapt] [--json] [--quiet]
                   [--coordinator-address HOST:PORT --num-processes N --process-id I]

An existing RUN_DIR with checkpoints is resumed when its recorded config and data match,
refused otherwise (and with --no-resume). --adapt runs the config's k-shot adaptation (`adapt:` section) afterwards,
prints the results table and saves it as `geofm adapt` does (RUN/adapt/<target>-default.json: the
default `AdapterSpec()`, i.e. the `full` variant with weight decay 1e-2 also in its grid). Exit codes: 0 ok, 2 bad config/data, 3 non-finite loss.
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
from geofm.distributed import add_distributed_args, initialize


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geofm pretrain", description="Multi-domain GraphGlue pretraining.")
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/pretrain/quick_cora.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (YAML-typed value), e.g. --set train.epochs=5; repeatable")
    p.add_argument("--out", help="run folder (default runs/pretrain/<config>_<time>)")
    p.add_argument("--data-dir", help="folder holding the datasets (overrides data.data_dir)")
    p.add_argument("--resume", dest="resume", action="store_true", default=True,
                   help="continue from the run folder's latest checkpoint (default)")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="refuse to reuse checkpoints")
    p.add_argument("--adapt", action="store_true", help="run k-shot adaptation (config `adapt:`) afterwards")
    p.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the final result as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    add_distributed_args(p)
    return p


@guarded("geofm pretrain")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    try:
        initialize(args.coordinator_address, args.num_processes, args.process_id)
    except ValueError as err:
        print(f"geofm pretrain: {err}", file=sys.stderr)
        return 2
    from geofm.pretrain import PretrainConfig, pretrain

    overrides = list(args.overrides) + ([f"data.data_dir={json.dumps(args.data_dir)}"] if args.data_dir else [])
    cfg = load_config(args.config, PretrainConfig, overrides)  # ConfigError: exit 2 through `guarded`
    out = Path(args.out) if args.out else Path("runs") / "pretrain" / f"{Path(args.config).stem}_{time.strftime('%Y%m%d-%H%M%S')}"
    if args.adapt:  # before pretraining, not after it
        from geofm.pretrain import check_adapt

        try:
            check_adapt(cfg.adapt, cfg.data)
        except ValueError as err:
            print(f"geofm pretrain: {err}", file=sys.stderr)
            return 2
    try:
        result = pretrain(cfg, out, resume=args.resume, progress=False if args.quiet else None,
                          stop_after=args.stop_after)
    except (ValueError, FileNotFoundError) as err:  # NonFiniteLossError: exit 3 through `guarded`
        print(f"geofm pretrain: {err}", file=sys.stderr)
        return 2
    logging.getLogger("geofm.pretrain").info("done: step %d loss %.4f in %.1fs -> %s", result["step"],
                                             result["loss"], result["seconds"], out)
    if args.adapt:
        from geofm.adapt import adapt_kshot, format_table

        from geofm.commands.adapt import save_result

        try:
            res = adapt_kshot(out, cfg.adapt)
        except (ValueError, FileNotFoundError) as err:  # the pretraining run itself is saved
            print(f"geofm pretrain: adaptation: {err} (the pretrained run is in {out}: `geofm adapt {out}`)",
                  file=sys.stderr)
            return 2
        path, _ = save_result(out, "default", res)  # AdapterSpec(): `full` plus weight decay 1e-2 in the grid
        print(format_table(res), file=sys.stderr if args.json else sys.stdout)  # --json: stdout is JSON only
        print(f"adaptation results: {path}", file=sys.stderr)
        result["adapt"] = res
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
