"""Benchmark: subgraph sampler and structure descriptors vs plain-Python baselines.

Writes bench/results/sampler.json (or --out): medians, the baselines measured in the
same run, ratios, machine info. Data: arxiv2023 from $GEOFM_DATA / ../shared/data
when present, else a large synthetic mixed graph (the JSON says which).

    .venv/bin/python bench/sampler.py [--batches 10] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geofm import structure  # noqa: E402
from geofm.data import synthetic  # noqa: E402
from geofm.data.sampler import SubgraphSampler, loader  # noqa: E402


def load_graph() -> tuple[str, np.ndarray, int]:
    roots = [os.environ.get("GEOFM_DATA"), str(Path(__file__).resolve().parents[2] / "shared" / "data")]
    for root in filter(None, roots):
        path = Path(root) / "tag" / "arxiv2023" / "edges.tsv"
        if path.exists():
            return "arxiv2023", np.loadtxt(path, skiprows=1, dtype=np.int64).T, 33868
    ds = synthetic.mixed_dataset(branching=4, depth=7, num_cliques=2000, clique_size=8, rows=100, cols=100)
    return "synthetic-mixed-large", ds.edge_index.astype(np.int64), ds.num_nodes


def naive_sample(adj: list[list[int]], centers: list[int], fanouts: list[int], rng: random.Random):
    """Straightforward per-centre Python sampler producing the same outputs (ids, induced edges)."""
    node_ids, senders, receivers, n_node = [], [], [], []
    for c in centers:
        nodes, pos, frontier = [c], {c: 0}, [c]
        for f in fanouts:
            nxt = []
            for x in frontier:
                nb = adj[x]
                for y in (nb if f < 0 or len(nb) <= f else rng.sample(nb, f)):
                    if y not in pos:
                        pos[y] = len(nodes)
                        nodes.append(y)
                        nxt.append(y)
            frontier = nxt
        off = len(node_ids)
        for i, x in enumerate(nodes):
            for y in adj[x]:
                j = pos.get(y)
                if j is not None:
                    senders.append(off + j)
                    receivers.append(off + i)
        node_ids += nodes
        n_node.append(len(nodes))
    return np.array(node_ids), np.array(senders), np.array(receivers), np.array(n_node)


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sampler.json"))
    args = ap.parse_args()

    name, ei, n = load_graph()
    t0 = time.perf_counter()
    sampler = SubgraphSampler(ei, n, fanouts=[10, 10])
    build_s = time.perf_counter() - t0
    adj = [sampler.indices[a:b].tolist() for a, b in zip(sampler.indptr[:-1], sampler.indptr[1:])]
    rng = np.random.default_rng(0)
    centers = [rng.integers(0, n, args.batch_size) for _ in range(args.batches)]
    results: dict = {"load_avg_at_start": list(os.getloadavg()), "dataset": name, "num_nodes": n, "num_edges_input": int(ei.shape[1]),
                     "batch_size": args.batch_size, "sampler_build_s": build_s}

    for label, fanouts, cap in (("fanout_10_10", [10, 10], None), ("ego_2hop_max128", [-1, -1], 128)):
        s = SubgraphSampler(ei, n, fanouts=fanouts, max_nodes=cap)
        s.sample(centers[0], np.random.default_rng(1))  # warmup
        ours = statistics.median(
            timed(lambda c=c: s.sample(c, np.random.default_rng(1)), 1) for c in centers)
        py_rng = random.Random(0)
        if cap is None:
            base = statistics.median(
                timed(lambda c=c: naive_sample(adj, c.tolist(), fanouts, py_rng), 1) for c in centers[:3])
        else:
            base = None  # the naive sampler has no node cap; no like-for-like baseline
        out = s.sample(centers[0], np.random.default_rng(1))
        results[label] = {
            "ours_ms_per_batch": ours * 1e3,
            "naive_python_ms_per_batch": None if base is None else base * 1e3,
            "speedup_vs_naive": None if base is None else base / ours,
            "real_nodes": int(out.graph.n_node[:-1].sum()), "real_edges": int(out.graph.n_edge[:-1].sum()),
            "padded_nodes": int(out.node_ids.size), "padded_edges": int(out.graph.senders.size),
        }
        print(label, json.dumps({k: (round(v, 2) if isinstance(v, float) else v)
                                 for k, v in results[label].items()}), flush=True)

    ds = loader(sampler, batch_size=args.batch_size, seed=0, num_epochs=None)
    for threads in (0, 2):
        import grain

        it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)))
        next(it)
        t0 = time.perf_counter()
        for _ in range(args.batches):
            next(it)
        results[f"loader_threads{threads}_batches_per_s"] = args.batches / (time.perf_counter() - t0)
    print("loader", {k: round(v, 2) for k, v in results.items() if k.startswith("loader")}, flush=True)

    t0 = time.perf_counter()
    x = structure.node_descriptors(ei, n)
    results["node_descriptors_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    structure.graph_curvature_summary(ei, n)
    results["curvature_summary_s"] = time.perf_counter() - t0
    results["descriptor_shape"] = list(x.shape)
    print("descriptors", round(results["node_descriptors_s"], 2), "s", flush=True)

    results["machine"] = {"numpy_version": np.__version__, "cpu_count": os.cpu_count(),
                          "platform": platform.platform(), "python": platform.python_version(),
                          "load_avg_at_end": list(os.getloadavg())}
    try:
        import jax

        results["machine"]["jax_version"] = jax.__version__
    except ImportError:
        pass
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
