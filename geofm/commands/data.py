"""`geofm data stats NAME` and `geofm data download NAME`.

stats prints counts (nodes/edges/classes for TAGs; entities/relations/triples
per split for KGs), degree quantiles of the undirected simple graph (KG: the
entity graph of the train triples) and edge-curvature estimates from
`geofm.structure.graph_curvature_summary`. `--json` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

import numpy as np

from geofm.commands import guarded
from geofm.data._io import DataFormatError
from geofm.graph import sorted_unique

QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def degree_quantiles(edge_index: np.ndarray, num_nodes: int) -> dict[str, float]:
    """Degree quantiles of the undirected simple graph of `edge_index` [2, E] (loops/duplicates removed).

    Keys: degree_mean, degree_q0, degree_q25, ..., degree_q100; isolated nodes count as degree 0.
    """
    src, dst = np.asarray(edge_index[0], np.int64), np.asarray(edge_index[1], np.int64)
    keep = src != dst
    lo, hi = np.minimum(src[keep], dst[keep]), np.maximum(src[keep], dst[keep])
    pairs = sorted_unique(lo * max(num_nodes, 1) + hi)
    deg = np.bincount(pairs // max(num_nodes, 1), minlength=num_nodes) + np.bincount(pairs % max(num_nodes, 1), minlength=num_nodes)
    if num_nodes == 0:
        return {"degree_mean": 0.0}
    out = {"degree_mean": float(deg.mean())}
    for q, v in zip(QUANTILES, np.quantile(deg, QUANTILES)):
        out[f"degree_q{round(q * 100)}"] = float(v)
    return out


def curvature(edge_index: np.ndarray, num_nodes: int) -> dict[str, Any] | None:
    """Curvature summary from geofm.structure (None when that module is not available)."""
    try:
        from geofm.structure import graph_curvature_summary
    except ImportError as err:
        logging.getLogger("geofm.data").warning("curvature unavailable: %s", err)
        return None
    return graph_curvature_summary(np.asarray(edge_index), num_nodes)


def dataset_stats(ds: Any, *, with_curvature: bool = True) -> dict[str, Any]:
    """A JSON-ready statistics dict for a TAGDataset or KGDataset."""
    from geofm.data.types import KGDataset, TAGDataset

    if isinstance(ds, TAGDataset):
        labels = ds.labels[ds.labels >= 0]
        out: dict[str, Any] = {
            "name": ds.name,
            "format": "tag",
            "domain": ds.domain,
            "num_nodes": ds.num_nodes,
            "num_edges": int(ds.edge_index.shape[1]),
            "num_classes": ds.num_classes,
            "num_self_loops": int((ds.edge_index[0] == ds.edge_index[1]).sum()),
            "num_unlabeled": int((ds.labels < 0).sum()),
            "label_counts": np.bincount(labels, minlength=ds.num_classes).tolist(),
            "splits": {k: len(v) for k, v in ds.splits.items()} if ds.splits else None,
        }
        edge_index, n = ds.edge_index, ds.num_nodes
    elif isinstance(ds, KGDataset):
        out = {
            "name": ds.name,
            "format": "kg",
            "num_entities": ds.num_entities,
            "num_relations": ds.num_relations,
            "num_train": len(ds.train),
            "num_valid": len(ds.valid),
            "num_test": len(ds.test),
            "num_unseen_entities": ds.meta.get("num_unseen_entities"),
        }
        edge_index, n = ds.train[:, [0, 2]].T, ds.num_entities
        out["graph"] = "train triples as an undirected entity graph"
    else:
        raise TypeError(f"not a dataset: {type(ds).__name__}")
    out.update(degree_quantiles(edge_index, n))
    out["curvature"] = curvature(edge_index, n) if with_curvature else None
    return out


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def format_stats(stats: dict[str, Any]) -> str:
    """Human-readable multi-line rendering of `dataset_stats` output."""
    lines = []
    for key, value in stats.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines += [f"  {k:<28} {_fmt(v)}" for k, v in value.items()]
        elif key.startswith("degree_q"):
            continue
        else:
            lines.append(f"{key:<30} {_fmt(value)}")
    qs = [k for k in stats if k.startswith("degree_q")]
    if qs:
        lines.append("degree quantiles               " + "  ".join(f"{k.removeprefix('degree_')}={_fmt(stats[k])}" for k in qs))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geofm data", description="dataset statistics and downloads")
    sub = p.add_subparsers(dest="action", required=True)
    st = sub.add_parser("stats", help="counts, degree quantiles and curvature of a dataset")
    st.add_argument("name", help="dataset name (case-insensitive) or folder")
    st.add_argument("--data-dir", default=None, help="data root (default: $GEOFM_DATA, else ../shared/data)")
    st.add_argument("--cache-dir", default=None, help="cache root (default: $GEOFM_CACHE, else ~/.cache/geofm)")
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.add_argument("--no-curvature", action="store_true", help="skip the curvature estimate")
    st.add_argument("--no-cache", action="store_true", help="parse the source files, bypassing the processed cache")
    dl = sub.add_parser("download", help="download a public dataset into the cache, verifying md5s")
    dl.add_argument("name", help="one of the download registry's names")
    dl.add_argument("--cache-dir", default=None, help="cache root (default: $GEOFM_CACHE, else ~/.cache/geofm)")
    dl.add_argument("--mirror", default=None, help="local folder or base URL holding the final files (offline use)")
    dl.add_argument("--force", action="store_true", help="fetch again even when a verified copy exists")
    ls = sub.add_parser("list", help="datasets found locally and downloadable ones")
    ls.add_argument("--data-dir", default=None, help="data root (default: $GEOFM_DATA, else ../shared/data)")
    ls.add_argument("--cache-dir", default=None, help="cache root (default: $GEOFM_CACHE, else ~/.cache/geofm)")
    return p


@guarded("geofm data")
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from geofm.data import SOURCES, fetch_dataset, known_datasets, load_dataset
    from geofm.metrics import finite_or_none

    try:
        if args.action == "stats":
            ds = load_dataset(args.name, args.data_dir, cache=not args.no_cache, cache_dir=args.cache_dir)
            stats = dataset_stats(ds, with_curvature=not args.no_curvature)
            print(json.dumps(finite_or_none(stats)) if args.json else format_stats(stats))
        elif args.action == "download":
            path = fetch_dataset(args.name, cache_dir=args.cache_dir, mirror=args.mirror, force=args.force)
            print(path)
        else:
            print("local:        " + ", ".join(known_datasets(args.data_dir, args.cache_dir)))
            print("downloadable: " + ", ".join(s.name for s in SOURCES.values()))
    except (ValueError, FileNotFoundError, DataFormatError, OSError) as err:
        print(f"geofm data {args.action}: {err}", file=sys.stderr)
        return 2
    return 0
