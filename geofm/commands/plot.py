"""`geofm plot RUN_DIR [--out DIR] [--no-embeddings] [--data-dir DIR] [--quiet]`: loss curves, gate weights per domain,
Poincaré-disk view of embeddings coloured by label/domain (PNG files)."""

from __future__ import annotations

import argparse
import sys

from geofm.commands import guarded, setup_logging


@guarded("geofm plot")
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="geofm plot", description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("run_dir", help="a `geofm pretrain` run folder")
    p.add_argument("--out", help="where to write the PNGs (default: the run folder)")
    p.add_argument("--no-embeddings", action="store_true", help="skip the embedding plot (no model forward)")
    p.add_argument("--data-dir", help="where the embedding plot finds the pretraining datasets (default: the "
                   "run config's data.data_dir)")
    p.add_argument("--quiet", action="store_true", help="warnings only")
    args = p.parse_args(argv)
    setup_logging(args.quiet)
    from geofm.plot import plot_run

    try:
        paths = plot_run(args.run_dir, args.out, embeddings=not args.no_embeddings, data_dir=args.data_dir)
    except ValueError as err:  # CheckpointError is one
        print(f"geofm plot: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
