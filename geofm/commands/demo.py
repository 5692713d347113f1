"""`geofm demo` (and `make demo`): the main job on its embedded default.

A short multi-domain GraphGlue pretraining on the text-attributed graphs found
under --data-dir / $GEOFM_DATA / ../shared/data (target cora, pretraining on the
others), falling back to the synthetic generators when no real data is present,
then 5-shot adaptation on the held-out dataset and a printed results table.
`--geometry` prints the quick κ-stereographic benchmark table instead.
"""

from __future__ import annotations

import argparse
import sys

from geofm.commands import guarded, setup_logging


@guarded("geofm demo")
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="geofm demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="dataset root (default: $GEOFM_DATA, then ../shared/data)")
    ap.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    ap.add_argument("--target", default=None, help="held-out target dataset (default cora, or synthetic-mixed)")
    ap.add_argument("--quick", action="store_true", help="a much shorter run (smoke test)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--geometry", action="store_true", help="print the quick geometry benchmark table instead")
    args = ap.parse_args(argv)

    if args.geometry:
        from manifolds import benchmark

        print(benchmark.format_table(benchmark.run(n=100_000, repeats=5)))
        return 0

    setup_logging(args.quiet)
    from geofm.pretrain import demo

    try:
        demo(args.data_dir, out=args.out, target=args.target, quick=args.quick,
             progress=False if args.quiet else None)
    except ValueError as err:
        print(f"geofm demo: {err}", file=sys.stderr)
        return 2
    return 0
