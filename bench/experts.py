"""Evidence that the geometry helps, and what it costs: expert encoders, gating, CAT.

  1. distortion: single experts (dim 2) fitted to graph distances of a tree and a cycle.
  2. gates: mixed graph (tree + ring of cliques + grid), 3 experts + structure-only gate,
     competitive distance objective; mean gate weight per region.
  3. cora: node classification, Euclidean / hyperbolic / spherical / gated, same budget,
     5 seeds; seeded split 20 per class train / 500 val / 1000 test; features = hashed
     TF-IDF of the node text (deterministic, text-encoder-free).
  4. speed: fwd+bwd of the gated 3-expert encoder vs ONE Euclidean GCN of the same width
     on a random 100k-node / 1M-edge graph; CAT block vs a plain transformer block.
     Ratios come from the same run (interleaved repeats, medians).

    .venv/bin/python bench/experts.py [--quick] [--only distortion,gates,cora,speed,cat]

Writes bench/results/experts.json (or --out; --quick writes /tmp/experts_quick.json so a
smoke run never overwrites the committed results).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import zlib
from pathlib import Path

from _common import machine_info  # bench/ is sys.path[0] when run as a script

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geofm.data import load_dataset  # noqa: E402
from geofm.data import synthetic as syn  # noqa: E402
from geofm.experts import MixtureEncoder, fit_distances, graph_distances, region_distances  # noqa: E402
from geofm.graph import add_self_loops, build_csr, symmetrize  # noqa: E402
from geofm.nn.cat import CATBlock, count_params  # noqa: E402
from geofm.structure import fit_standardizer, node_descriptors, standardize  # noqa: E402

GEOS = ("hyperbolic", "spherical", "euclidean")


def csr_of(ei: np.ndarray, n: int):
    e2 = add_self_loops(symmetrize(ei, n), n)
    return build_csr(e2[0], e2[1], n)


# ----------------------------------------------------------------------------- 1. distortion


def bench_distortion(quick: bool) -> dict:
    graphs = {
        "tree": syn.balanced_tree(3, 3 if quick else 4),
        "cycle": (syn.cycle(24), 24),
    }
    steps = 200 if quick else 400
    out = {"dim": 2, "steps": steps, "lr": 0.03, "aggregation": "tangent",
           "metric": "mean |d_pred/d_graph - 1| over all pairs (lower is better)"}
    for gname, (ei, n) in graphs.items():
        row = {"num_nodes": n}
        for geo in GEOS:
            kw = dict(num_layers=1, aggregation="tangent")
            if geo == "spherical":
                kw["k"] = 0.1
            model = MixtureEncoder(n, 2, experts=[{"name": geo, "kwargs": kw}], rngs=nnx.Rngs(0))
            res = fit_distances(model, jnp.eye(n), csr_of(ei, n), graph_distances(ei, n), steps=steps, lr=0.03)
            row[geo] = {"distortion": round(res.distortion, 4), "k": round(float(res.output.ks[0]), 4)}
        out[gname] = row
        print("distortion", gname, {g: row[g]["distortion"] for g in GEOS}, flush=True)
    return out


# ----------------------------------------------------------------------------- 2. gates


def bench_gates(quick: bool) -> dict:
    ds = syn.mixed_dataset(branching=3, depth=3, num_cliques=6, clique_size=5, rows=6, cols=6, seed=0)
    n, ei, region = ds.num_nodes, ds.edge_index, ds.meta["region"]
    desc = node_descriptors(ei, n)
    desc = jnp.asarray(standardize(desc, fit_standardizer(desc)))
    steps = 300
    model = MixtureEncoder(n, 2, experts=list(GEOS), descriptor_dim=desc.shape[1], gate_uses_embedding=False,
                           num_layers=1, rngs=nnx.Rngs(0))
    res = fit_distances(model, jnp.eye(n), csr_of(ei, n), region_distances(ei, region), descriptors=desc,
                        steps=steps, lr=0.03, objective="competitive", balance=1.0)
    w = np.asarray(res.output.weights)
    per_region = {}
    for name in ("tree", "cliques", "grid"):
        mw = w[region == syn.REGIONS.index(name)].mean(0)
        per_region[name] = {g: round(float(x), 4) for g, x in zip(GEOS, mw)}
    print("gates", per_region, flush=True)
    return {"graph": "mixed_dataset(branching=3, depth=3, num_cliques=6, clique_size=5, rows=6, cols=6, seed=0)",
            "num_nodes": n, "dim": 2, "steps": steps, "objective": "competitive", "balance": 1.0,
            "gate_inputs": "standardised structure descriptors only",
            "mean_gate_weight_per_region": per_region, "distortion": round(res.distortion, 4),
            "ks": [round(float(k), 4) for k in res.output.ks]}


# ----------------------------------------------------------------------------- 3. cora


def hashed_tfidf(texts: list[str], width: int) -> np.ndarray:
    """Bag of words (lower-case \\w+ tokens, crc32-hashed into `width` buckets) -> TF-IDF,
    rows L2-normalised. [N, width] float32; deterministic."""
    rows, cols = [], []
    for i, t in enumerate(texts):
        toks = re.findall(r"[a-z][a-z0-9]+", t.lower())
        rows += [i] * len(toks)
        cols += [zlib.crc32(tok.encode()) % width for tok in toks]
    tf = np.zeros((len(texts), width), np.float32)
    np.add.at(tf, (np.array(rows, int), np.array(cols, int)), 1.0)
    df = (tf > 0).sum(0)
    x = np.log1p(tf) * np.log(len(texts) / (1.0 + df))[None, :].astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def split(labels: np.ndarray, seed: int, per_class: int = 20, n_val: int = 500, n_test: int = 1000):
    rng = np.random.default_rng(seed)
    train = np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                            for c in range(labels.max() + 1)])
    rest = rng.permutation(np.setdiff1d(np.arange(labels.size), train))
    return np.sort(train), np.sort(rest[:n_val]), np.sort(rest[n_val:n_val + n_test])


class Classifier(nnx.Module):
    def __init__(self, in_dim: int, dim: int, classes: int, experts, descriptor_dim: int, *, rngs: nnx.Rngs):
        self.enc = MixtureEncoder(in_dim, dim, experts=experts, descriptor_dim=descriptor_dim, num_layers=2,
                                  dropout=0.5, input_dropout=0.5, rngs=rngs)
        self.head = nnx.Linear(dim, classes, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x, csr, desc):
        out = self.enc(x, csr, descriptors=desc)
        return self.head(self.drop(out.fused)), out.weights


@nnx.jit
def _cora_step(m, o, x, y, csr, desc, train_idx):
    def loss_fn(m):
        logits, _ = m(x, csr, desc)
        return optax.softmax_cross_entropy_with_integer_labels(logits[train_idx], y[train_idx]).mean()

    loss, g = nnx.value_and_grad(loss_fn)(m)
    o.update(m, g)
    return loss


@nnx.jit
def _cora_predict(m, x, csr, desc):
    logits, w = m(x, csr, desc)
    return jnp.argmax(logits, -1), w


def run_cora(experts, x, y, csr, desc, seed: int, epochs: int) -> dict:
    """One seeded split + init; full-batch training; test accuracy at the best val epoch."""
    tr, va, te = split(np.asarray(y), seed)
    model = Classifier(x.shape[1], 64, int(y.max()) + 1, experts, desc.shape[1], rngs=nnx.Rngs(seed))
    opt = nnx.Optimizer(model, optax.adamw(0.01, weight_decay=5e-4), wrt=nnx.Param)
    tr_j, y_np = jnp.asarray(tr), np.asarray(y)
    best = (-1.0, 0.0, None)
    for _ in range(epochs):
        model.train()
        _cora_step(model, opt, x, y, csr, desc, tr_j)
        model.eval()
        pred, w = _cora_predict(model, x, csr, desc)
        pred = np.asarray(pred)
        acc_va = float((pred[va] == y_np[va]).mean())
        if acc_va > best[0]:
            best = (acc_va, float((pred[te] == y_np[te]).mean()), np.asarray(w).mean(0))
    return {"val": best[0], "test": best[1], "mean_gate": best[2]}


def bench_cora(quick: bool) -> dict:
    ds = load_dataset("cora")
    n = ds.num_nodes
    x = jnp.asarray(hashed_tfidf(ds.texts, 2048))
    y = jnp.asarray(ds.labels)
    csr = csr_of(np.asarray(ds.edge_index), n)
    desc = node_descriptors(np.asarray(ds.edge_index), n)
    desc = jnp.asarray(standardize(desc, fit_standardizer(desc)))
    seeds = [0, 1] if quick else [0, 1, 2, 3, 4]
    epochs = 30 if quick else 100
    variants = {"euclidean": ["euclidean"], "hyperbolic": ["hyperbolic"], "spherical": ["spherical"],
                "gated": list(GEOS)}
    out = {"features": "hashed TF-IDF of title+abstract (2048 buckets, crc32), no text encoder",
           "split": "seeded per run: 20 per class train / 500 val / 1000 test (Cora ships no split)",
           "model": "shared Linear(2048->64) + 2-layer GeoGCN experts (midpoint aggregation, dim 64) "
                    "+ gate (descriptors + embedding) + Linear head; dropout 0.5",
           "budget": {"epochs": epochs, "optimizer": "adamw lr 0.01 wd 5e-4", "selection": "test acc at best val acc"},
           "seeds": seeds, "results": {}}
    for name, ex in variants.items():
        t0 = time.time()
        runs = [run_cora(ex, x, y, csr, desc, s, epochs) for s in seeds]
        acc = np.array([r["test"] for r in runs])
        row = {"test_acc_mean": round(float(acc.mean()), 4), "test_acc_std": round(float(acc.std()), 4),
               "test_acc": [round(float(a), 4) for a in acc], "seconds": round(time.time() - t0, 1)}
        if name == "gated":
            row["mean_gate_weight"] = {g: round(float(np.mean([r["mean_gate"][i] for r in runs])), 4)
                                       for i, g in enumerate(GEOS)}
        out["results"][name] = row
        print("cora", name, row, flush=True)
    return out


# ----------------------------------------------------------------------------- 4. speed


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median seconds per call of each zero-arg fn, alternating between them."""
    times = {k: [] for k in fns}
    for f in fns.values():
        jax.block_until_ready(f())  # compile + warm up
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(f())
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def bench_speed(quick: bool) -> dict:
    n, e = (10_000, 100_000) if quick else (100_000, 1_000_000)
    in_dim, dim = 128, 64
    rng = np.random.default_rng(0)
    ei = rng.integers(0, n, size=(2, e))
    e2 = add_self_loops(ei, n)
    csr = build_csr(e2[0], e2[1], n)
    x = jnp.asarray(rng.standard_normal((n, in_dim), dtype=np.float32))
    desc = jnp.asarray(rng.standard_normal((n, 8), dtype=np.float32))
    base = MixtureEncoder(in_dim, dim, experts=["euclidean"], num_layers=2, aggregation="tangent",
                          rngs=nnx.Rngs(0))
    gated = MixtureEncoder(in_dim, dim, experts=list(GEOS), descriptor_dim=8, num_layers=2, rngs=nnx.Rngs(0))

    @nnx.jit
    def fb(m, csr):
        return nnx.value_and_grad(lambda m: jnp.sum(m(x, csr, descriptors=desc).fused ** 2))(m)

    med = interleaved_medians({"euclidean_gcn": lambda: fb(base, csr), "gated_3_experts": lambda: fb(gated, csr)},
                              repeats=3 if quick else 5)
    res = {"graph": f"random {n} nodes / {e} directed edges + self-loops", "in_dim": in_dim, "dim": dim,
           "layers": 2, "baseline": "one Euclidean GCN (sum aggregation, gcn_norm), same projection and width",
           "candidate": "shared projection + hyperbolic/spherical/euclidean GeoGCN experts (midpoint) + gate",
           "fwd_bwd_seconds": {k: round(v, 4) for k, v in med.items()},
           "ratio": round(med["gated_3_experts"] / med["euclidean_gcn"], 3), "target_ratio": 3.5}
    print("speed", res["fwd_bwd_seconds"], res["ratio"], flush=True)
    return res


def bench_cat(quick: bool) -> dict:
    b, t, dim, heads = (8, 64, 64, 4) if quick else (16, 128, 128, 4)
    x = jax.random.normal(jax.random.PRNGKey(0), (b, t, dim))
    mask = jnp.arange(t)[None] < jnp.array([t] * (b // 2) + [t // 2] * (b - b // 2))[:, None]
    cat = CATBlock(dim, heads, rngs=nnx.Rngs(0))
    plain = CATBlock(dim, heads, branches=("euclidean",), rngs=nnx.Rngs(0))

    @nnx.jit
    def fb(m):
        return nnx.value_and_grad(lambda m: jnp.sum(m(x, mask).out ** 2))(m)

    med = interleaved_medians({"plain": lambda: fb(plain), "cat": lambda: fb(cat)}, repeats=5 if quick else 10)
    p_cat, p_plain = count_params(cat), count_params(plain)
    res = {"shape": {"batch": b, "tokens": t, "dim": dim, "heads": heads},
           "fwd_bwd_seconds": {k: round(v, 5) for k, v in med.items()},
           "ratio": round(med["cat"] / med["plain"], 3), "target_ratio": 3.5,
           "params": {"cat": p_cat, "plain": p_plain, "overhead": round(p_cat / p_plain - 1, 5),
                      "target_overhead": 0.10}}
    print("cat", res, flush=True)
    return res


SECTIONS = {"distortion": bench_distortion, "gates": bench_gates, "cora": bench_cora, "speed": bench_speed,
            "cat": bench_cat}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, 2 seeds (a smoke run)")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    ap.add_argument("--out", default=None,
                    help="JSON path (default bench/results/experts.json; --quick: /tmp/experts_quick.json)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = "/tmp/experts_quick.json" if args.quick else str(Path(__file__).parent / "results" / "experts.json")
    names = [s for s in args.only.split(",") if s]
    unknown = set(names) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; known: {list(SECTIONS)}")
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.exists() else {}
    result.update({"machine": machine_info(), "quick": args.quick})
    for name in names:
        t0 = time.time()
        result[name] = SECTIONS[name](args.quick)
        result[name]["wall_seconds"] = round(time.time() - t0, 1)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
