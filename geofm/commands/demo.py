"""`geofm demo`: the main job on its embedded default.

For now (until the pretraining loop lands) this runs the quick geometry
benchmark of `manifolds.benchmark` (100k points, d=64) and prints its table:
κ-stereographic expmap0/logmap0/dist/mobius_matvec vs their Euclidean
equivalents, forward and forward+backward, as ratios measured in the same run.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="geofm demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="number of points (default 100k)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per op (median reported)")
    args = ap.parse_args(argv)
    if args.n < 1 or args.repeats < 1:
        ap.error("--n and --repeats must be positive")

    from manifolds import benchmark

    report = benchmark.run(n=args.n, repeats=args.repeats)
    print(benchmark.format_table(report))
    return 0
