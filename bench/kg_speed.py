"""Training speed on WN18RR, d=32, batch 500, 50 negatives: geofm vs a PyTorch AttH and PyKEEN RotatE.

All measured in the same run on the same machine, each on `--steps` optimizer
steps (default 100) after a warm-up, then scaled to one epoch:
  geofm AttH   jitted lax.scan epoch (float32), tail negatives / head+tail (double_neg)
  torch AttH   the same model in PyTorch with the public AttH code's training loop
               (Adam, log-sigmoid negative-sampling loss), same two settings
  pykeen       PyKEEN RotatE (sLCWA, 50 negatives per positive), if installed
An epoch is 2 x 86,835 = 173,670 training rows (reciprocal relations) = 348 steps
for geofm and torch, and 86,835 rows = 174 steps for PyKEEN (its default, no reciprocals).

    python bench/kg_speed.py [--steps 100] [--data-dir DIR]
Writes bench/results/kg_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from _common import machine_info  # bench/ is sys.path[0] when run as a script

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geofm.kg.config import LossConfig, OptimConfig  # noqa: E402
from geofm.kg.models import build_model  # noqa: E402
from geofm.kg.train import load_kg_dataset, make_epoch_fn, make_loss_fn, make_optimizer, reciprocal_triples  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "kg_speed.json"
B, K = 500, 50


def geofm_steps(ds, train: np.ndarray, steps: int, double_neg: bool) -> float:
    """Seconds for `steps` AttH optimizer steps (compiled epoch over steps * B rows), warm."""
    m = build_model("atth", ds.num_entities, ds.num_relations, dim=32, init_size=1e-3)
    gd, params, rest = nnx.split(m, nnx.Param, ...)
    tx = make_optimizer(OptimConfig(name="adam", lr=1e-3), m)
    opt = tx.init(params)
    ep = make_epoch_fn(make_loss_fn(LossConfig(num_negatives=K, double_neg=double_neg), gd, ds.num_entities), tx, B)
    data = jnp.asarray(train[: steps * B])
    params, opt, loss = ep(params, opt, rest, jax.random.key(0), data)  # compile + warm-up
    loss.block_until_ready()
    t0 = time.perf_counter()
    params, opt, loss = ep(params, opt, rest, jax.random.key(1), data)
    loss.block_until_ready()
    return time.perf_counter() - t0


def torch_steps(ds, train: np.ndarray, steps: int, double_neg: bool) -> float | None:
    try:
        import torch
        import torch.nn.functional as F
        from _torch_kg import atth_query, expmap0, mobius_add
    except ImportError:
        return None
    torch.manual_seed(0)
    n, r2, d = ds.num_entities, 2 * ds.num_relations, 32
    emb = lambda rows, cols, scale=1e-3: torch.nn.Parameter(scale * torch.randn(rows, cols))  # noqa: E731
    P = torch.nn.ParameterDict({
        "ent": emb(n, d), "rel": emb(r2, d), "diag": torch.nn.Parameter(2 * torch.rand(r2, 2 * d) - 1),
        "ctx": emb(r2, d), "c": torch.nn.Parameter(torch.ones(r2, 1)),
        "bh": torch.nn.Parameter(torch.zeros(n)), "bt": torch.nn.Parameter(torch.zeros(n)),
    })
    opt = torch.optim.Adam(P.parameters(), lr=1e-3)

    def score(h, r, t):
        c = F.softplus(P["c"][r])
        q = atth_query(P["ent"][h], P["diag"][r], P["ctx"][r], P["rel"][r], c)
        y = expmap0(P["ent"][t], c)
        sc = c.sqrt()
        u = (mobius_add(-q, y, c).norm(dim=-1, keepdim=True) * sc).clamp(max=1 - 1e-7)
        dist = 2 * torch.atanh(u) / sc
        return (-(dist**2)).squeeze(-1) + P["bh"][h] + P["bt"][t]

    data = torch.tensor(train[: steps * B], dtype=torch.long)

    def run(nsteps):
        for i in range(nsteps):
            batch = data[i * B : (i + 1) * B]
            neg = batch.repeat(K, 1)
            neg[:, 2] = torch.randint(n, (B * K,))
            if double_neg:
                neg[:, 0] = torch.randint(n, (B * K,))
            pos = F.logsigmoid(score(batch[:, 0], batch[:, 1], batch[:, 2]))
            negs = F.logsigmoid(-score(neg[:, 0], neg[:, 1], neg[:, 2]))
            loss = -torch.cat([pos, negs]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    run(3)
    t0 = time.perf_counter()
    run(steps)
    return time.perf_counter() - t0


def pykeen_steps(ds, steps: int) -> dict | None:
    try:
        from _torch_kg import triples_factory
        from pykeen.models import RotatE
        from pykeen.training import SLCWATrainingLoop
    except ImportError:
        return None
    import pykeen

    tf = triples_factory(ds, ds.train[: steps * B])
    model = RotatE(triples_factory=tf, embedding_dim=16, random_seed=0)  # 16 complex = 32 real
    loop = SLCWATrainingLoop(model=model, triples_factory=tf, optimizer="Adam", optimizer_kwargs={"lr": 1e-3},
                             negative_sampler_kwargs={"num_negs_per_pos": K})
    loop.train(triples_factory=tf, num_epochs=1, batch_size=B, use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    loop.train(triples_factory=tf, num_epochs=2, batch_size=B, use_tqdm=False, continue_training=True)  # 1 more epoch
    return {"pykeen": pykeen.get_version(), "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--data-dir")
    args = ap.parse_args()
    ds = load_kg_dataset("WN18RR", args.data_dir)
    train = reciprocal_triples(ds.train, ds.num_relations)
    train = train[np.random.default_rng(0).permutation(len(train))]
    steps_per_epoch = -(-len(train) // B)
    out: dict = {
        "machine": machine_info(),
        "setting": {"dataset": "WN18RR", "dim": 32, "batch_size": B, "negatives": K, "dtype": "float32",
                    "steps_measured": args.steps, "steps_per_epoch": steps_per_epoch},
    }
    for dn in (False, True):
        tag = "double_neg" if dn else "tail_neg"
        g = geofm_steps(ds, train, args.steps, dn)
        out[f"geofm_atth_{tag}"] = {"seconds": g, "epoch_seconds_est": g * steps_per_epoch / args.steps}
        print(tag, "geofm", out[f"geofm_atth_{tag}"], flush=True)
        try:
            import torch
        except ImportError:
            continue
        per_threads = {}
        for threads in (1, 2):  # oversubscribed OpenMP threads can be far slower on a busy machine
            torch.set_num_threads(threads)
            per_threads[threads] = torch_steps(ds, train, args.steps, dn)
        best_threads = min(per_threads, key=per_threads.get)
        t = per_threads[best_threads]
        if t is not None:
            out[f"torch_atth_{tag}"] = {"seconds": t, "epoch_seconds_est": t * steps_per_epoch / args.steps,
                                        "torch": torch.__version__, "threads": best_threads,
                                        "seconds_by_threads": per_threads}
            out[f"speedup_vs_torch_{tag}"] = t / g
            print(tag, "torch", out[f"torch_atth_{tag}"], flush=True)
    try:
        import torch

        torch.set_num_threads(1)  # see above; PyKEEN measured with one thread too
    except ImportError:
        pass
    pk = pykeen_steps(ds, args.steps)
    if pk is not None:
        pk["epoch_seconds_est"] = pk["seconds"] * (-(-len(ds.train) // B)) / args.steps
        out["pykeen_rotate"] = pk
        out["speedup_vs_pykeen_per_step"] = pk["seconds"] / out["geofm_atth_tail_neg"]["seconds"]
        print("pykeen", pk, flush=True)
    out["machine"]["load_avg_1m_at_end"] = os.getloadavg()[0]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
