"""`geofm encode`: embed a dataset's node (or KG entity) texts into the embedding cache.

    geofm encode --dataset cora [--data-dir DIR] [--text-model PATH] [--batch-size N]

Prints counts (texts, empty, truncated, cached, computed) and throughput; a
second run on the same dataset and model is served from the cache. `--out
FILE.npy` also saves the [n, dim] float32 matrix; `--json` prints one JSON
object instead of text.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from geofm.commands import guarded, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geofm encode", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="dataset name (see `geofm data`) or folder")
    p.add_argument("--data-dir", default=None, help="data root (default $GEOFM_DATA or ../shared/data)")
    p.add_argument("--text-model", default=None,
                   help="local Hugging Face BERT-style model folder (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--batch-size", type=int, default=64, help="texts of max length per step (default 64)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="matmul dtype (float32 matches sentence-transformers to 1e-5)")
    p.add_argument("--cache-dir", default=None, help="cache root (default $GEOFM_CACHE or ~/.cache/geofm)")
    p.add_argument("--no-cache", action="store_true", help="recompute everything and write nothing to the cache")
    p.add_argument("--entity-text", default=None,
                   help="KG datasets: the entity text file of the folder (default entity2text.txt), "
                        "e.g. entity2text_firstsentence.txt")
    p.add_argument("--out", default=None, help="also save the embeddings to this .npy file")
    p.add_argument("--json", action="store_true", help="print one JSON object with the counts")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def dataset_texts(ds: object) -> tuple[list[str | None], str]:
    """(texts, what) for a TAGDataset (node texts) or KGDataset (entity texts; None where missing)."""
    from geofm.data.types import KGDataset, TAGDataset

    if isinstance(ds, TAGDataset):
        return list(ds.texts), "node texts"
    if isinstance(ds, KGDataset):
        if ds.entity_text is None:
            raise ValueError(f"KG dataset {ds.name!r} has no entity texts (entity2text.txt) to encode")
        return list(ds.entity_text), "entity texts"
    raise ValueError(f"cannot encode texts of a {type(ds).__name__}")


@guarded("geofm encode")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=True)
    if args.batch_size < 1:
        print(f"geofm encode: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 2
    from geofm.data import load_dataset
    from geofm.data.registry import detect_format, find_dataset
    from geofm.text import EmbeddingCache, TextEncoder

    try:
        opts, dataset = {}, args.dataset
        if args.entity_text is not None:  # resolved once here, then loaded from that folder
            opts, dataset = {"entity_text": args.entity_text}, find_dataset(args.dataset, args.data_dir, args.cache_dir)
            if detect_format(dataset) != "kg":
                raise ValueError(f"--entity-text applies to KG datasets only; {args.dataset!r} is not one")
        ds = load_dataset(dataset, args.data_dir, cache_dir=args.cache_dir, **opts)
        texts, what = dataset_texts(ds)
        enc = TextEncoder.load(args.text_model, dtype=args.dtype)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"geofm encode: {err}", file=sys.stderr)
        return 2
    cache: bool | EmbeddingCache = False if args.no_cache else EmbeddingCache(enc.model_key, args.cache_dir)
    emb, stats = enc.encode_with_stats(texts, batch_size=args.batch_size,
                                       progress=False if args.quiet else None, cache=cache)
    n_missing = sum(1 for t in texts if t is None)
    report = {
        "dataset": getattr(ds, "name", str(args.dataset)),
        "what": what,
        "model": enc.name,
        "dim": int(emb.shape[1]),
        "n_texts": stats.n_texts,
        "n_empty": stats.n_empty,
        "n_missing": n_missing,
        "n_truncated": stats.n_truncated,
        "max_seq_length": enc.max_seq_length,
        "n_cached": stats.n_cached,
        "n_computed": stats.n_computed,
        "seconds": round(stats.seconds, 3),
        "sentences_per_second": round(stats.sentences_per_second, 2),
        "compiled_shapes": [list(s) for s in stats.shapes],
        "cache_dir": None if args.no_cache else str(cache.dir),  # type: ignore[union-attr]
    }
    if args.out:
        out = Path(args.out)
        out = out if out.suffix == ".npy" else out.with_name(out.name + ".npy")  # what np.save writes
        from geofm.data.cache import atomic_write_bytes

        atomic_write_bytes(out, lambda f: np.save(f, emb))
        report["out"] = str(out)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['dataset']}: {stats.n_texts} {what} -> [{stats.n_texts}, {report['dim']}] with {enc.name} "
              f"({args.dtype})")
        print(f"  empty (embedded as \"\"): {stats.n_empty}" + (f" (missing: {n_missing})" if n_missing else ""))
        print(f"  truncated to {enc.max_seq_length} tokens: {stats.n_truncated}")
        print(f"  from cache: {stats.n_cached}, computed: {stats.n_computed}")
        print(f"  {stats.seconds:.2f} s, {stats.sentences_per_second:.1f} texts/s")
        if report["cache_dir"]:
            print(f"  cache: {report['cache_dir']}")
        if args.out:
            print(f"  saved: {report['out']}")
    return 0
