"""Processed-dataset cache speed-up: first load (parse + hash + write npz) vs cached load.

For each dataset, `repeats` rounds each use a fresh cache folder: the first
`load_dataset` call is a miss (hashes the source files, parses them, writes
the npz), the next is a hit. The baseline `parse only` (cache=False: hash +
parse, no npz; its own fresh cache folder) is measured in the same run. Writes bench/results/data_cache.json.
Needs ../shared/data (or $GEOFM_DATA); exits 0 with a note when absent.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_info  # bench/ is sys.path[0] when run as a script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geofm.data import load_dataset, resolve_data_dir  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "data_cache.json"


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench(name: str, data_dir: Path, repeats: int) -> dict:
    parse, miss, hit = [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            t, ds = timed(lambda: load_dataset(name, data_dir, cache_dir=cache))
            assert not ds.meta["cache"]["hit"]
            miss.append(t)
            t, ds = timed(lambda: load_dataset(name, data_dir, cache_dir=cache))
            assert ds.meta["cache"]["hit"]
            hit.append(t)
        with tempfile.TemporaryDirectory() as cache:
            t, _ = timed(lambda: load_dataset(name, data_dir, cache=False, cache_dir=cache))
            parse.append(t)
    med = {k: statistics.median(v) for k, v in (("parse_only_s", parse), ("first_load_s", miss), ("cached_load_s", hit))}
    return {
        **med,
        "speedup_first_over_cached": med["first_load_s"] / med["cached_load_s"],
        "speedup_parse_over_cached": med["parse_only_s"] / med["cached_load_s"],
        "repeats": repeats,
    }


def main() -> int:
    data_dir = resolve_data_dir()
    if data_dir is None:
        print("data_cache: no ../shared/data or $GEOFM_DATA; skipped")
        return 0

    results = {}
    for name in ("arxiv2023", "cora", "WN18RR", "FB15k-237"):
        results[name] = bench(name, data_dir, repeats=5)
        r = results[name]
        print(f"{name:<10} parse {r['parse_only_s'] * 1e3:7.1f} ms  first {r['first_load_s'] * 1e3:7.1f} ms  "
              f"cached {r['cached_load_s'] * 1e3:6.1f} ms  first/cached {r['speedup_first_over_cached']:.1f}x")
    payload = {
        "benchmark": "processed dataset cache: first load vs cached load (median of repeats, fresh cache each)",
        "baseline": "first_load_s (parse + md5 + npz write) and parse_only_s (cache=False), same run",
        "machine": machine_info(),
        "results": results,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
