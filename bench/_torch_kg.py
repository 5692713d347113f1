"""PyTorch pieces shared by the KG benchmark baselines (bench/kg_eval.py, bench/kg_speed.py).

Bench-only: torch and PyKEEN are never runtime dependencies. Poincaré-ball maps with
curvature c > 0 (ball of radius 1/sqrt(c)), written like the public AttH code, and the
PyKEEN triples factory with geofm's entity/relation ids.
"""

from __future__ import annotations

import torch


def givens(g: torch.Tensor, x: torch.Tensor, reflect: bool) -> torch.Tensor:
    """Givens rotation (or reflection) of x [B, d] by parameters g [B, d]; pairs coordinate i
    with i + d/2, as geofm does."""
    a, b = torch.chunk(g, 2, dim=1)
    n = (a * a + b * b).sqrt()
    c, s = a / n, b / n
    x0, x1 = torch.chunk(x, 2, dim=1)
    if reflect:
        return torch.cat([c * x0 + s * x1, s * x0 - c * x1], 1)
    return torch.cat([c * x0 - s * x1, s * x0 + c * x1], 1)


def expmap0(u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Exponential map at the origin of the ball with curvature -c (c > 0)."""
    sc = c.sqrt()
    n = u.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    return torch.tanh(sc * n) * u / (sc * n)


def mobius_add(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Möbius addition x ⊕_c y on the ball with curvature -c (c > 0)."""
    xy, x2, y2 = (x * y).sum(-1, keepdim=True), (x * x).sum(-1, keepdim=True), (y * y).sum(-1, keepdim=True)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    return num / (1 + 2 * c * xy + c**2 * x2 * y2).clamp_min(1e-15)


def project(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Pull points back inside the ball of radius (1 - 1e-5) / sqrt(c)."""
    n = x.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    maxn = (1 - 1e-5) / c.sqrt()
    return torch.where(n > maxn, x / n * maxn, x)


def atth_query(head: torch.Tensor, diag: torch.Tensor, ctx: torch.Tensor, rel: torch.Tensor,
               c: torch.Tensor) -> torch.Tensor:
    """AttH query point [B, d] on the ball of curvature -c: attention (context ctx [B, d]) over
    the Givens reflection and rotation (diag [B, d]: rotation | reflection halves) of the head
    embedding [B, d], Möbius-translated by the relation vector rel [B, d] (not projected)."""
    rot, ref = torch.chunk(diag, 2, dim=1)
    cands = torch.stack([givens(ref, head, True), givens(rot, head, False)], 1)
    att = torch.softmax((ctx[:, None, :] * cands).sum(-1) / head.shape[1] ** 0.5, dim=1)
    return mobius_add(expmap0((att[..., None] * cands).sum(1), c), expmap0(rel, c), c)


def triples_factory(ds, triples):
    """A PyKEEN TriplesFactory over `triples` [n, 3] (geofm ids) with the dataset's vocabulary."""
    from pykeen.triples import TriplesFactory

    e2id = {e: i for i, e in enumerate(ds.entities)}
    r2id = {r: i for i, r in enumerate(ds.relations)}
    return TriplesFactory(torch.as_tensor(triples, dtype=torch.long), entity_to_id=e2id, relation_to_id=r2id)
