"""Benchmark: one GraphGlue pretraining step (gcn and gated backbones) vs PyTorch + PyG.

Measures per backbone: samples/s of the jitted train step (median over the steps after
the compiling one; the batch is already built on the host, as in the loop, where a
prefetch thread builds it), samples/s of the whole loop including host sampling and
compilation, the number of XLA compilations of the train step over one full three-phase
epoch vs the number of distinct batch shapes seen, and peak host RSS. Domains:
arxiv2023 + webkb-cornell + webkb-texas with text inputs when ../shared/data (or
$GEOFM_DATA) has them, else synthetic graphs (the JSON says which).

PyG comparison (when torch and torch_geometric import): the same GCN-backbone step in
PyTorch + PyG (bench/_pyg_glue.py: real nodes only, GCNConv, torch QR, same losses,
AdamW, EMA) on the SAME batches, timed in lockstep with ours (JAX step t, then torch step
t) so load changes on a shared machine hit both (torch runs with the faster of 1 or 2
intra-op threads, probed on steps 1-2); its step-0 loss on copied weights is
checked against ours. The PyTorch GraphGlue reference numbers (13.4 subgraphs/s,
12.9 GB) are the ones measured on this machine and quoted in issue 7.

    nice -n 5 .venv/bin/python bench/pretrain.py [--steps 20] [--out bench/results/pretrain.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from _common import machine_info  # bench/ is sys.path[0] when run as a script

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
from flax import nnx  # noqa: E402

from geofm.glue import GlueConfig, batch_shape  # noqa: E402
from geofm.pretrain import (AdaptConfig, DataConfig, PretrainConfig, Streams, TrainConfig, load_domains,  # noqa: E402
                            lr_schedule, make_model, make_optimizer, make_train_step, phase_flags, schedule,
                            total_steps)

REFERENCE = {"subgraphs_per_s": 13.4, "peak_rss_gb": 12.9, "source": "issue 7 (PyTorch GraphGlue, this machine)"}


class _CompileCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "XLA compilation" in msg and "jit(step)" in msg:
            self.count += 1


def _data() -> tuple[list[str], str, str | None]:
    """(domain names, input kind, data folder): the three text domains from the first of
    $GEOFM_DATA, ../shared/data that has them, else the synthetic generators."""
    roots = [os.environ.get("GEOFM_DATA"), str(Path(__file__).resolve().parents[2] / "shared" / "data")]
    for root in filter(None, roots):
        if (Path(root) / "tag" / "arxiv2023").is_dir():
            return ["arxiv2023", "webkb-cornell", "webkb-texas"], "text", root
    return ["synthetic-tree", "synthetic-cliques", "synthetic-grid"], "structural", None


def config(backbone: str, steps: int) -> PretrainConfig:
    """The timed setting; backbone "gcn", "gated", or "gcn_session3" (the shipped default design:
    shared input map, residual GCN, text-alignment term with weight 3)."""
    if backbone == "gcn_session3":
        cfg = config("gcn", steps)
        return dataclasses.replace(
            cfg,
            model=dataclasses.replace(cfg.model, input_projection="shared",
                                      backbone={"name": "gcn", "kwargs": {"num_layers": 2, "residual": True}}),
            train=dataclasses.replace(cfg.train, align_weight=3.0, align_target="center"))
    names, inputs, root = _data()
    bb = {"name": "gcn", "kwargs": {"num_layers": 2}} if backbone == "gcn" else {
        "name": "gated", "kwargs": {"num_layers": 1}}
    return PretrainConfig(
        seed=0,
        model=GlueConfig(dim=128, num_generators=16, knn=5, att_dim=64, max_nodes=32, num_paths=256, backbone=bb),
        data=DataConfig(datasets=names, inputs=inputs, in_dim=384 if inputs == "text" else 64, data_dir=root),
        train=TrainConfig(epochs=1, batch_size=128, local_steps=steps, global_steps=max(steps // 4, 1),
                          refine_steps=max(steps // 4, 1), checkpoint_every=10**9),
        adapt=AdaptConfig(),
    )


def _torch_side(cfg: PretrainConfig, num_domains: int, model) -> tuple[Any, Any, Any] | None:
    """(torch module, step fn, to_pyg) for the gcn backbone, initialised from ``model``; None without PyG."""
    try:
        import _pyg_glue as pg
    except ImportError as e:  # torch / torch_geometric are optional bench extras
        logging.warning("PyG comparison skipped: %s", e)
        return None
    import torch

    torch.manual_seed(0)
    mc = cfg.model
    tm = pg.TorchGlue(in_dim=cfg.data.in_dim, dim=mc.dim, num_generators=mc.num_generators, att_dim=mc.att_dim,
                      knn=mc.knn, num_layers=mc.backbone["kwargs"]["num_layers"], num_domains=num_domains,
                      tau=mc.tau, ema=mc.ema)
    pg.load_from_jax(tm, nnx.state(model).to_pure_dict())
    sched = lr_schedule(cfg.train, total_steps(cfg))
    lrs = [float(sched(t)) for t in range(total_steps(cfg))]
    return tm, pg.make_step(tm, cfg.train, lrs), pg.to_pyg


def run(backbone: str, steps: int, domains, *, with_torch: bool) -> dict:
    cfg = config(backbone, steps)
    tc = cfg.train
    counter = _CompileCounter()
    logging.getLogger("jax._src.dispatch").addHandler(counter)
    logging.getLogger("jax._src.dispatch").setLevel(logging.WARNING)
    jax.config.update("jax_log_compiles", True)
    model = make_model(cfg, len(domains))
    opt = make_optimizer(model, tc, total_steps(cfg))
    make_train_step.cache_clear()  # count this run's compilations (the step is cached per config)
    step = make_train_step(tc)
    streams = Streams(domains, cfg, total_steps(cfg))
    plan = schedule(cfg)
    key = jax.random.key(0)
    side = _torch_side(cfg, len(domains), model) if with_torch else None
    host_t, dev_t, torch_t, buckets = 0.0, [], [], set()
    probe, probe_t = {1: 1, 2: 2}, {}
    first_jax = first_torch = None
    jax_total = 0.0
    for t, (phase, ep) in enumerate(plan):
        h0 = time.perf_counter()
        hb = streams.batch(phase, t, range(tc.parallel))
        host_t += time.perf_counter() - h0
        buckets.add(batch_shape(jax.tree_util.tree_map(lambda a: a[0], hb)))
        b = jax.tree_util.tree_map(np.asarray, hb)
        flags = phase_flags(phase, ep, tc)
        d0 = time.perf_counter()
        loss, _, _ = step(model, opt, b, jax.random.fold_in(key, t), flags)
        lv = float(loss)
        dt = time.perf_counter() - d0
        jax_total += dt
        first_jax = lv if first_jax is None else first_jax
        if t >= 1:  # step 0 compiles
            dev_t.append(dt)
        if side is not None:
            import torch

            tm, tstep, to_pyg = side
            pb = to_pyg(jax.tree_util.tree_map(lambda a: a[0], hb))
            if t in probe:  # steps 1, 2: 1 vs 2 intra-op threads; the faster count runs the rest
                torch.set_num_threads(probe[t])
            d0 = time.perf_counter()
            tl = tstep(pb, phase, ep, t)
            dt = time.perf_counter() - d0
            if t in probe:
                probe_t[probe[t]] = dt
                if t == max(probe):
                    torch.set_num_threads(min(probe_t, key=probe_t.get))
            elif t >= 1:
                torch_t.append(dt)
            first_torch = tl if first_torch is None else first_torch
    jax.config.update("jax_log_compiles", False)
    logging.getLogger("jax._src.dispatch").removeHandler(counter)
    med = float(np.median(dev_t))
    bs = tc.batch_size * tc.parallel
    out = {
        "backbone": backbone, "batch_size": bs, "steps": len(plan),
        "step_seconds_median": med, "step_seconds_min": float(np.min(dev_t)), "samples_per_s_step": bs / med,
        "samples_per_s_loop_incl_compile_and_host": len(plan) * bs / (jax_total + host_t),
        "host_batch_seconds_mean": host_t / len(plan),
        "compiles_over_epoch": counter.count, "batch_shapes": len(buckets),
        "final_loss": lv,
    }
    if side is not None:
        import torch

        tmed = float(np.median(torch_t))
        out["pyg"] = {
            "torch": torch.__version__, "torch_geometric": _pyg_version(), "threads": torch.get_num_threads(),
            "thread_probe_step_seconds": probe_t,
            "step_seconds_median": tmed, "step_seconds_min": float(np.min(torch_t)), "samples_per_s_step": bs / tmed,
            "step0_loss": first_torch, "step0_loss_ours": first_jax,
            "step0_loss_rel_diff": abs(first_torch - first_jax) / max(abs(first_jax), 1e-12),
            "final_loss": tl,
        }
        out["speedup_vs_pyg_same_run"] = tmed / med
        out["speedup_vs_pyg_same_run_fastest_steps"] = float(np.min(torch_t)) / float(np.min(dev_t))
    return out


def _pyg_version() -> str:
    import torch_geometric

    return torch_geometric.__version__


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20, help="locality steps (global/refine get steps/4)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "pretrain.json"))
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch + PyG comparison")
    args = p.parse_args()
    names, inputs, _ = _data()
    info = machine_info(note="2-core box shared with other jobs: compare ratios measured in the same run")
    t0 = time.perf_counter()
    domains = load_domains(config("gcn", args.steps))
    load_s = time.perf_counter() - t0
    results = [run(b, args.steps, domains, with_torch=False) for b in ("gcn", "gated", "gcn_session3")]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # before torch allocates anything
    if not args.no_torch:
        cmp_run = run("gcn", args.steps, domains, with_torch=True)
        if "pyg" in cmp_run:
            results.append({"backbone": "gcn (lockstep with PyG)", **cmp_run})
    for r in results:
        r["speedup_vs_reference"] = r["samples_per_s_step"] / REFERENCE["subgraphs_per_s"]
    out = {
        "machine": {**info, "load_avg_1m_at_end": os.getloadavg()[0]},
        "datasets": names, "inputs": inputs, "data_load_seconds": load_s,
        "config": {"dim": 128, "num_generators": 16, "knn": 5, "att_dim": 64, "max_nodes": 32, "batch_size": 128,
                   "gcn_layers": 2, "gated_layers": 1},
        "results": results, "peak_rss_gb": peak, "reference": REFERENCE,
        "rss_vs_reference": peak / REFERENCE["peak_rss_gb"],
    }
    path = Path(args.out)
    if path.is_file():  # keep blocks other scripts own (e.g. "kshot_cora")
        old = json.loads(path.read_text())
        out = {**{k: v for k, v in old.items() if k not in out}, **out}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "kshot_cora"}, indent=2))


if __name__ == "__main__":
    main()
