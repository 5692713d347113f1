"""The GraphGlue pretraining step with the plain-GCN backbone in PyTorch + PyG (bench only).

The same step as `geofm.pretrain.make_train_step` for ``backbone: gcn``, written the way
a PyG user would: real nodes only (no padding), the augmented graph as an ``edge_index``
(real edges + generator <-> node edges), ``gcn_norm`` with self loops, ``GCNConv``
layers, ``global_mean_pool``, Householder QR (``torch.linalg.qr``) for the frames, the
same losses (locality, prototype, gluing on kNN or host 2-paths, phase weights), gradient
clipping, AdamW and the EMA prototype update. One difference: ``GCNConv`` adds its bias
after aggregation (ours before); the biases start at zero, so step-0 losses agree.

Used by bench/pretrain.py; torch and torch_geometric are optional bench extras.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch_geometric.nn import GCNConv, global_mean_pool
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import to_dense_batch

EPS = 1e-6


class TorchGlue(nn.Module):
    """GlueModel (gcn backbone) in torch: per-domain projection, generators, GCN, frames."""

    def __init__(self, *, in_dim: int, dim: int, num_generators: int, att_dim: int, knn: int, num_layers: int,
                 num_domains: int, tau: float, ema: float):
        super().__init__()
        self.dim, self.m, self.knn, self.tau, self.ema, self.att_dim = dim, num_generators, knn, tau, ema, att_dim
        self.in_w = nn.Parameter(torch.randn(num_domains, in_dim, dim) / math.sqrt(in_dim))
        self.in_b = nn.Parameter(torch.zeros(num_domains, dim))
        self.generators = nn.Parameter(torch.linalg.qr(torch.randn(dim, num_generators))[0].T.contiguous())
        self.gen_cond = nn.Linear(dim, dim)
        self.att_g = nn.Linear(dim, att_dim)
        self.att_x = nn.Linear(dim, att_dim)
        self.convs = nn.ModuleList([GCNConv(dim, dim, normalize=False) for _ in range(num_layers)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim, eps=1e-6) for _ in range(num_layers)])
        self.register_buffer("proto_point", torch.zeros(num_domains, dim))
        self.register_buffer("proto_lg", torch.zeros(num_domains, num_generators))
        self.register_buffer("proto_count", torch.zeros(num_domains))

    def encode(self, x: torch.Tensor, node_dom: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor,
               num_samples: int, max_nodes: int) -> tuple[torch.Tensor, ...]:
        n, b, m = x.shape[0], num_samples, self.m
        h0 = torch.empty(n, self.dim)
        for k in torch.unique(node_dom).tolist():  # per-domain projection
            idx = node_dom == k
            h0[idx] = x[idx] @ self.in_w[k] + self.in_b[k]
        hm, mask = to_dense_batch(h0, batch, batch_size=b, max_num_nodes=max_nodes)  # [B, S, d]
        cnt = mask.sum(1, keepdim=True).clamp_min(1)
        g = self.generators[None] + self.gen_cond((hm * mask[..., None]).sum(1) / cnt)[:, None]  # [B, M, d]
        w = torch.sigmoid(torch.einsum("bma,bsa->bms", self.att_g(g), self.att_x(hm)) / math.sqrt(self.att_dim))
        masked = torch.where(mask[:, None], w, torch.full_like(w, -1.0))
        thr = torch.topk(masked, min(self.knn, masked.shape[-1]), dim=-1).values[..., -1:]
        bi, mi, si = torch.nonzero((masked >= thr) & mask[:, None], as_tuple=True)
        ptr = torch.cumsum(torch.bincount(batch, minlength=b), 0) - torch.bincount(batch, minlength=b)
        node, gen = ptr[bi] + si, n + bi * m + mi
        wg = w[bi, mi, si]
        ei = torch.cat([edge_index, torch.stack([gen, node]), torch.stack([node, gen])], dim=1)
        ew = torch.cat([torch.ones(edge_index.shape[1]), wg, wg])
        ei, ew = gcn_norm(ei, ew, num_nodes=n + b * m, add_self_loops=True)
        h = torch.cat([h0, g.reshape(b * m, -1)])
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = conv(h, ei, ew)
            if i < len(self.convs) - 1:
                h = torch.relu(h)
            h = norm(h)
        z = global_mean_pool(h[:n], batch, size=b)
        V = h[n:].reshape(b, m, -1) - z[:, None]
        q, r = torch.linalg.qr(V.transpose(1, 2))
        q = q * torch.where(torch.diagonal(r, dim1=-2, dim2=-1) < 0, -1.0, 1.0)[:, None, :]
        s = V.norm(dim=-1).clamp_min(EPS)
        return z, q, s, 2.0 * torch.log(s)


def _l2n(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)


def _mmean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mk = mask.to(x.dtype)
    return (x * mk).sum() / mk.sum().clamp_min(1.0)


def losses(model: TorchGlue, z, q, s, lg, smask, sdom, paths, pmask, key: int, use_knn: bool) -> dict:
    """locality, proto, holonomy, curvature (masked means), as geofm.glue."""
    tau = model.tau
    e = q.transpose(1, 2) * s[..., None]
    nz = _l2n(z)
    pos = torch.exp(-((_l2n(z[:, None] + e) - nz[:, None]) ** 2).sum(-1) / tau)
    d2 = ((nz[:, None] - nz[None]) ** 2).sum(-1)
    pair = smask[:, None] & smask[None] & ~torch.eye(len(smask), dtype=torch.bool)
    neg = torch.where(pair, torch.exp(-d2 / tau), torch.zeros(())).sum(1)
    local = _mmean(-torch.log(pos / (neg[:, None] + pos + EPS) + EPS), smask[:, None].expand_as(pos))
    corr = 1.0 - model.ema ** model.proto_count
    valid = model.proto_count > 0
    protos = model.proto_point / torch.where(corr > 0, corr, torch.ones(()))[:, None]
    logits = torch.where(valid[None], z @ protos.T / tau, torch.full((), -1e9))
    nll = -torch.log_softmax(logits, -1).gather(1, sdom[:, None])[:, 0]
    proto = _mmean(nll, smask & valid[sdom])
    if use_knn:  # 2-paths on the cross-domain kNN graph of z
        zd = z.detach()
        bsz = zd.shape[0]
        ok = smask[:, None] & smask[None] & ~torch.eye(bsz, dtype=torch.bool) & (sdom[:, None] != sdom[None])
        dd = torch.where(ok, -((zd[:, None] - zd[None]) ** 2).sum(-1), torch.full((), -math.inf))
        kk = max(min(5, bsz - 1), 2)
        neg_d, nbr = torch.topk(dd, kk, dim=-1)
        gen = torch.Generator().manual_seed(key)
        t = paths.shape[0]
        p = smask.float()
        j = torch.multinomial(p / p.sum().clamp_min(1), t, replacement=True, generator=gen)
        a = torch.randint(0, kk, (t,), generator=gen)
        c = (a + torch.randint(1, kk, (t,), generator=gen)) % kk
        paths = torch.stack([nbr[j, a], j, nbr[j, c]], 1)
        pmask = torch.isfinite(neg_d[j, a]) & torch.isfinite(neg_d[j, c]) & (a != c)
    i, j, k = paths[:, 0], paths[:, 1], paths[:, 2]
    sc = s.clamp_min(1e-3)

    def tr(a, b):
        return torch.einsum("tdm,tdn->tmn", q[b], q[a]) * sc[a][:, None, :] / sc[b][:, :, None]

    hol = ((tr(j, k) @ tr(i, j) - tr(i, k)) ** 2).sum((-2, -1)) / q.shape[-1]
    curv = ((lg[i] - 2 * lg[j] + lg[k]) ** 2).mean(-1)
    return {"local": local, "proto": proto, "holonomy": _mmean(hol, pmask), "curvature": _mmean(curv, pmask)}


def to_pyg(b: Any) -> dict[str, Any]:
    """Host GlueBatch (dense slots, one sub-batch) -> PyG tensors over the real nodes only."""
    mm = np.asarray(b.member_mask)
    nb, s_cap = mm.shape
    flat = mm.reshape(-1)
    node_of = np.cumsum(flat) - 1  # slot -> real-node index
    bi, ii, jj = np.nonzero(np.asarray(b.adj))
    edge_index = np.stack([node_of[bi * s_cap + jj], node_of[bi * s_cap + ii]])
    batch = np.repeat(np.arange(nb), s_cap)[flat]
    sd = np.asarray(b.sample_domain)
    return {
        "x": torch.from_numpy(np.asarray(b.x)[flat]), "node_dom": torch.from_numpy(sd[batch].astype(np.int64)),
        "edge_index": torch.from_numpy(edge_index.astype(np.int64)), "batch": torch.from_numpy(batch.astype(np.int64)),
        "num_samples": nb, "max_nodes": s_cap, "smask": torch.from_numpy(np.asarray(b.sample_mask)),
        "sdom": torch.from_numpy(sd.astype(np.int64)), "paths": torch.from_numpy(np.asarray(b.paths).astype(np.int64)),
        "pmask": torch.from_numpy(np.asarray(b.path_mask)),
    }


def make_step(model: TorchGlue, tc: Any, lrs: Sequence[float]):
    """step(batch dict, phase, epoch, key) -> loss float: forward, backward, clip, AdamW, EMA.

    lrs: the learning rate of every step (ours: optax warmup + cosine, evaluated on the host).
    """
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: lrs[min(t, len(lrs) - 1)] / tc.lr)

    def step(pb: dict, phase: str, epoch: int, key: int) -> float:
        z, q, s, lg = model.encode(pb["x"], pb["node_dom"], pb["edge_index"], pb["batch"], pb["num_samples"],
                                   pb["max_nodes"])
        t = losses(model, z, q, s, lg, pb["smask"], pb["sdom"], pb["paths"], pb["pmask"], key, phase == "global")
        loc = 1.0 if phase == "local" else 0.0
        pw = tc.proto_weight if epoch >= tc.proto_start_epoch else 0.0
        glue_term = tc.glue_weight * (tc.holonomy_weight * t["holonomy"] + tc.curvature_weight * t["curvature"])
        loss = loc * (t["local"] + pw * t["proto"]) + (1.0 - loc) * glue_term
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        sched.step()
        if phase == "local":  # EMA prototypes (log-Euclidean for the metric)
            with torch.no_grad():
                oh = torch.nn.functional.one_hot(pb["sdom"], model.proto_count.shape[0]).float()
                oh = oh * pb["smask"][:, None]
                n = oh.sum(0)
                present = n > 0
                mz = oh.T @ z / n.clamp_min(1)[:, None]
                ml = oh.T @ lg / n.clamp_min(1)[:, None]
                a = model.ema
                model.proto_point[present] = a * model.proto_point[present] + (1 - a) * mz[present]
                model.proto_lg[present] = a * model.proto_lg[present] + (1 - a) * ml[present]
                model.proto_count += present.float()
        return float(loss.detach())

    return step


def load_from_jax(model: TorchGlue, state: dict) -> None:
    """Copy a geofm GlueModel's (gcn backbone) pure-dict state into the torch model."""
    def t(a):
        return torch.from_numpy(np.array(a, np.float32))

    with torch.no_grad():
        model.in_w.copy_(t(state["in_w"]))
        model.in_b.copy_(t(state["in_b"]))
        model.generators.copy_(t(state["generators"]))
        for name in ("gen_cond", "att_g", "att_x"):
            getattr(model, name).weight.copy_(t(state[name]["kernel"]).T)
            getattr(model, name).bias.copy_(t(state[name]["bias"]))
        bb = state["backbone"]
        for i, (conv, norm) in enumerate(zip(model.convs, model.norms)):
            conv.lin.weight.copy_(t(bb["linears"][i]["kernel"]).T)
            conv.bias.copy_(t(bb["linears"][i]["bias"]))
            norm.weight.copy_(t(bb["norms"][i]["scale"]))
            norm.bias.copy_(t(bb["norms"][i]["bias"]))
