"""Benchmark: κ-stereographic geometry vs Euclidean equivalents (d=64, 1M points, jit).

Writes bench/results/manifolds.json (machine info, config, per-op medians and
ratios measured in the same run) and prints a table. `--quick`: 100k points,
3 repeats, prints only (unless --out is given).

    python bench/manifolds.py [--quick] [--n N] [--repeats R] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a script, this file's folder is sys.path[0] and its name would shadow the
# `manifolds` package: drop the folder, make the repository root importable.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from manifolds import benchmark  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100k points, 3 repeats, no JSON unless --out")
    ap.add_argument("--n", type=int, default=1_000_000, help="number of points (default 1M)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/manifolds.json)")
    args = ap.parse_args(argv)
    report = benchmark.run(n=args.n, d=args.dim, repeats=args.repeats, quick=args.quick)
    print(benchmark.format_table(report))
    out = args.out if args.out is not None else (None if args.quick else HERE / "results" / "manifolds.json")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
