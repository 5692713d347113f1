"""Benchmark: one GraphGlue pretraining step (gcn and gated backbones).

Measures per backbone: samples/s of the jitted train step (host batch building runs in
the prefetch thread, so the number is the device step, like the reference's per-step
figure), samples/s of the whole loop including host sampling, the number of XLA
compilations of the train step over one full three-phase epoch vs the number of
distinct padding buckets seen, and peak host RSS. Domains: arxiv2023 + webkb-cornell +
webkb-texas with text inputs when ../shared/data (or $GEOFM_DATA) has them, else
synthetic graphs (the JSON says which). The PyTorch GraphGlue reference numbers are
the ones measured on this machine and quoted in issue 7 (13.4 subgraphs/s, 12.9 GB).

    nice -n 10 .venv/bin/python bench/pretrain.py [--steps 20] [--out bench/results/pretrain.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

from _common import machine_info  # bench/ is sys.path[0] when run as a script

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from geofm.glue import GlueConfig, batch_shape  # noqa: E402
from geofm.pretrain import (AdaptConfig, DataConfig, PretrainConfig, Streams, TrainConfig, load_domains,  # noqa: E402
                            make_model, make_optimizer, make_train_step, phase_flags, schedule, total_steps)

REFERENCE = {"subgraphs_per_s": 13.4, "peak_rss_gb": 12.9, "source": "issue 7 (PyTorch GraphGlue, this machine)"}


class _CompileCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "XLA compilation" in msg and "jit(step)" in msg:
            self.count += 1


def _data() -> tuple[list[str], str]:
    roots = [os.environ.get("GEOFM_DATA"), str(Path(__file__).resolve().parents[2] / "shared" / "data")]
    for root in filter(None, roots):
        if (Path(root) / "tag" / "arxiv2023").is_dir():
            return ["arxiv2023", "webkb-cornell", "webkb-texas"], "text"
    return ["synthetic-tree", "synthetic-cliques", "synthetic-grid"], "structural"


def config(backbone: str, steps: int) -> PretrainConfig:
    names, inputs = _data()
    bb = {"name": "gcn", "kwargs": {"num_layers": 2}} if backbone == "gcn" else {
        "name": "gated", "kwargs": {"num_layers": 1}}
    return PretrainConfig(
        seed=0,
        model=GlueConfig(dim=128, num_generators=16, knn=5, att_dim=64, max_nodes=32, num_paths=256, backbone=bb),
        data=DataConfig(datasets=names, inputs=inputs, in_dim=384 if inputs == "text" else 64),
        train=TrainConfig(epochs=1, batch_size=128, local_steps=steps, global_steps=max(steps // 4, 1),
                          refine_steps=max(steps // 4, 1), checkpoint_every=10**9),
        adapt=AdaptConfig(),
    )


def run(backbone: str, steps: int, domains) -> dict:
    cfg = config(backbone, steps)
    tc = cfg.train
    counter = _CompileCounter()
    logging.getLogger("jax._src.dispatch").addHandler(counter)
    logging.getLogger("jax._src.dispatch").setLevel(logging.WARNING)
    jax.config.update("jax_log_compiles", True)
    model = make_model(cfg, len(domains))
    opt = make_optimizer(model, tc, total_steps(cfg))
    step = make_train_step(tc)
    streams = Streams(domains, cfg, total_steps(cfg))
    plan = schedule(cfg)
    key = jax.random.key(0)
    host_t, dev_t, buckets, dev_samples = 0.0, [], set(), 0
    t_loop = time.perf_counter()
    for t, (phase, ep) in enumerate(plan):
        h0 = time.perf_counter()
        hb = streams.batch(phase, t, range(tc.parallel))
        host_t += time.perf_counter() - h0
        buckets.add(batch_shape(jax.tree_util.tree_map(lambda a: a[0], hb)))
        b = jax.tree_util.tree_map(np.asarray, hb)
        d0 = time.perf_counter()
        loss, _, _ = step(model, opt, b, jax.random.fold_in(key, t), phase_flags(phase, ep, tc))
        float(loss)
        dt = time.perf_counter() - d0
        if t >= 2:  # skip the compiling steps
            dev_t.append(dt)
            dev_samples += tc.batch_size
    loop_s = time.perf_counter() - t_loop
    jax.config.update("jax_log_compiles", False)
    logging.getLogger("jax._src.dispatch").removeHandler(counter)
    med = float(np.median(dev_t))
    return {
        "backbone": backbone, "batch_size": tc.batch_size, "steps": len(plan),
        "step_seconds_median": med, "samples_per_s_step": tc.batch_size / med,
        "samples_per_s_loop_incl_compile_and_host": len(plan) * tc.batch_size / loop_s,
        "host_batch_seconds_mean": host_t / len(plan),
        "compiles_over_epoch": counter.count, "padding_buckets": len(buckets),
        "final_loss": float(loss),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20, help="locality steps (global/refine get steps/4)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "pretrain.json"))
    args = p.parse_args()
    names, inputs = _data()
    t0 = time.perf_counter()
    domains = load_domains(config("gcn", args.steps))
    load_s = time.perf_counter() - t0
    results = [run(b, args.steps, domains) for b in ("gcn", "gated")]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    for r in results:
        r["speedup_vs_reference"] = r["samples_per_s_step"] / REFERENCE["subgraphs_per_s"]
    out = {
        "machine": machine_info(note="2-core box shared with other jobs"),
        "datasets": names, "inputs": inputs, "data_load_seconds": load_s,
        "results": results, "peak_rss_gb": peak, "reference": REFERENCE,
        "rss_vs_reference": peak / REFERENCE["peak_rss_gb"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
