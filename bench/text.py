"""Text-encoder throughput: geofm.text (JAX) vs sentence-transformers (torch CPU) on Cora.

Same texts, same batch size (64), same thread count (all cores) in the same
process; passes are interleaved (JAX, torch, JAX, torch, ...) so load from
other processes on a shared machine hits both alike, and the reported ratio is
the median of the per-round ratios. Also reports process CPU time per text
(less sensitive to time slicing), the first JAX pass including XLA compiles,
bfloat16, the cache-hit pass, and the embedding agreement with torch.

    python bench/text.py [--n N] [--rounds 3] [--batch-size 64] [--out bench/results/text.json]

Without torch + sentence-transformers only the JAX numbers are written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def cora_texts() -> tuple[list[str], str]:
    """Cora node texts via geofm.data.load_dataset, else straight from nodes.jsonl."""
    try:
        from geofm.data import load_dataset

        return list(load_dataset("cora").texts), "geofm.data.load_dataset('cora')"
    except (ImportError, ValueError, FileNotFoundError):
        path = REPO.parent / "shared" / "data" / "tag" / "cora" / "nodes.jsonl"
        with open(path, encoding="utf-8") as f:
            return [json.loads(line)["text"] for line in f], str(path)


def timed(fn) -> tuple[object, float, float]:  # noqa: ANN001
    """(result, wall seconds, process CPU seconds)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=0, help="texts (0 = all; else a fixed-seed random sample)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "text.json"))
    args = ap.parse_args(argv)

    import jax

    from geofm.text import TextEncoder

    texts, source = cora_texts()
    if args.n and args.n < len(texts):
        idx = np.random.default_rng(0).choice(len(texts), args.n, replace=False)
        texts = [texts[i] for i in sorted(idx)]
    n = len(texts)
    threads = os.cpu_count() or 1
    load_before = os.getloadavg()
    print(f"{n} Cora texts, batch {args.batch_size}, {threads} threads, load {load_before[0]:.1f}", flush=True)

    enc, load_s, _ = timed(TextEncoder.load)
    ids, truncated = enc.tokenize(texts)
    lengths = np.array([len(t) for t in ids])
    (jax_emb, cold_stats), cold_w, cold_c = timed(
        lambda: enc.encode_with_stats(texts, batch_size=args.batch_size, progress=False, cache=False))
    print(f"jax cold (incl. {enc.compile_count()} compiles): {n / cold_w:.1f} texts/s", flush=True)

    st_model = None
    try:
        import sentence_transformers
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        st_model = SentenceTransformer(str(enc_path()), device="cpu")
        st_model.encode(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up
        versions = {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
                    "torch_threads": torch.get_num_threads()}
    except ImportError as err:
        print(f"torch baseline skipped: {err.name} not installed")
        versions = {}

    rounds = []
    torch_emb = None
    for r in range(args.rounds):
        _, jw, jc = timed(lambda: enc.encode(texts, batch_size=args.batch_size, progress=False, cache=False))
        row = {"jax_texts_per_s": n / jw, "jax_texts_per_cpu_s": n / jc}
        if st_model is not None:
            torch_emb, tw, tc = timed(lambda: st_model.encode(texts, batch_size=args.batch_size,
                                                               normalize_embeddings=True, convert_to_numpy=True))
            row.update(torch_texts_per_s=n / tw, torch_texts_per_cpu_s=n / tc, ratio=tw / jw, cpu_ratio=tc / jc)
        row["load"] = os.getloadavg()[0]
        rounds.append(row)
        print(f"round {r}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)

    result: dict = {
        "benchmark": "sentence embedding throughput, Cora node texts (title + abstract)",
        "data": source,
        "n_texts": n,
        "batch_size": args.batch_size,
        "max_seq_length": enc.max_seq_length,
        "tokens": {"mean": float(lengths.mean()), "median": float(np.median(lengths)),
                   "truncated": int(truncated.sum())},
        "model": enc.name,
        "jax": {
            "load_seconds": load_s,
            "cold_texts_per_s": n / cold_w,
            "cold_compiles": len(cold_stats.shapes),
            "step_shapes": [list(s) for s in cold_stats.shapes],
            "texts_per_s_median": statistics.median(r["jax_texts_per_s"] for r in rounds),
            "texts_per_cpu_s_median": statistics.median(r["jax_texts_per_cpu_s"] for r in rounds),
            "micro_tokens": enc.micro_tokens,
            "buckets": list(enc.buckets),
        },
        "rounds": rounds,
    }
    if st_model is not None and torch_emb is not None:
        result["torch"] = {
            "texts_per_s_median": statistics.median(r["torch_texts_per_s"] for r in rounds),
            "texts_per_cpu_s_median": statistics.median(r["torch_texts_per_cpu_s"] for r in rounds),
        }
        result["speedup_vs_torch_median"] = statistics.median(r["ratio"] for r in rounds)
        result["cpu_time_speedup_vs_torch_median"] = statistics.median(r["cpu_ratio"] for r in rounds)
        result["max_abs_diff_vs_torch"] = float(np.abs(jax_emb - torch_emb).max())
    if not args.no_bf16:
        bf = TextEncoder.load(dtype="bfloat16")
        bf_emb, bw, _ = timed(lambda: bf.encode(texts, batch_size=args.batch_size, progress=False, cache=False))
        _, bw2, bc2 = timed(lambda: bf.encode(texts, batch_size=args.batch_size, progress=False, cache=False))
        result["jax_bfloat16"] = {
            "cold_texts_per_s": n / bw, "texts_per_s": n / bw2, "texts_per_cpu_s": n / bc2,
            "min_cosine_vs_float32": float(np.min(np.sum(bf_emb * jax_emb, axis=1))),
            "max_abs_diff_vs_float32": float(np.abs(bf_emb - jax_emb).max()),
        }
        print(f"jax bf16: {n / bw2:.1f} texts/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        enc.encode(texts, batch_size=args.batch_size, progress=False, cache=tmp)
        _, hw, _ = timed(lambda: enc.encode(texts, batch_size=args.batch_size, progress=False, cache=tmp))
        result["cache_hit_texts_per_s"] = n / hw
    result["machine"] = {
        "jax": jax.__version__, "jax_backend": jax.default_backend(), "cpu_count": threads, "cpu": cpu_model(),
        "python": platform.python_version(), "platform": platform.platform(),
        "load_avg_before": load_before[0], "load_avg_after": os.getloadavg()[0],
        "note": "shared machine: other processes ran alongside; compare the same-run ratios, not absolute rates",
        **versions,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: result[k] for k in ("speedup_vs_torch_median", "cpu_time_speedup_vs_torch_median",
                                      "max_abs_diff_vs_torch") if k in result}
    print(json.dumps(summary), f"-> {out}")
    return 0


def enc_path() -> Path:
    from geofm.text import default_model_path

    return default_model_path()


if __name__ == "__main__":
    sys.exit(main())
