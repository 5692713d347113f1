"""Classification and ranking metrics (host-side numpy, plus one jnp kernel).

Ranking is tie-aware. For a query with true answer t and candidate scores s
(higher = better), after removing filtered candidates:
  optimistic rank  = 1 + #{j : s_j >  s_t}
  pessimistic rank = 1 + #{j != t : s_j >= s_t}
  realistic rank   = (optimistic + pessimistic) / 2   (expected rank under random tie-breaking)
A constant scorer therefore gets realistic rank (N + 1) / 2, not 1.
"""

from __future__ import annotations

import math
import typing
from pathlib import Path
from typing import Any, Literal, Sequence

import jax.numpy as jnp
import numpy as np

TiePolicy = Literal["optimistic", "pessimistic", "realistic"]

__all__ = [
    "TiePolicy",
    "accuracy",
    "macro_f1",
    "tie_ranks",
    "check_tie_policy",
    "combine_ranks",
    "ranking_metrics",
    "finite_or_none",
    "write_predictions",
]


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of `pred == labels` over entries with label >= 0. pred, labels: [n] int."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    if pred.shape != labels.shape:
        raise ValueError(f"accuracy: pred shape {pred.shape} != labels shape {labels.shape}")
    keep = labels >= 0
    return float(np.mean(pred[keep] == labels[keep])) if keep.any() else float("nan")


def macro_f1(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over classes present in labels or pred (label -1 ignored)."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    if pred.shape != labels.shape:
        raise ValueError(f"macro_f1: pred shape {pred.shape} != labels shape {labels.shape}")
    keep = labels >= 0
    pred, labels = pred[keep], labels[keep]
    tp = np.bincount(labels[pred == labels], minlength=num_classes).astype(np.float64)
    n_pred = np.bincount(pred, minlength=num_classes).astype(np.float64)
    n_true = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = (n_pred + n_true) > 0
    denom = n_pred + n_true
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return float(f1[present].mean()) if present.any() else float("nan")


def tie_ranks(
    scores: jnp.ndarray, target_scores: jnp.ndarray, keep: jnp.ndarray, is_target: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Partial tie-aware counts for one block of candidates.

    scores: [..., Q, E]; target_scores: [..., Q]; keep: [Q, E] bool (candidate counts:
    not filtered, not padding); is_target: [Q, E] bool (both broadcast over the leading
    axes, e.g. several scorers ranked at once). Returns (n_greater, n_greater_or_equal)
    as int32 [..., Q], the target itself never counted. Sum over blocks and add 1 for
    optimistic / pessimistic ranks.
    """
    keep = keep & ~is_target
    st = target_scores[..., None]
    gt = jnp.sum(keep & (scores > st), axis=-1, dtype=jnp.int32)
    ge = jnp.sum(keep & (scores >= st), axis=-1, dtype=jnp.int32)
    return gt, ge


def check_tie_policy(policy: str) -> None:
    """ValueError unless ``policy`` is one of `TiePolicy`."""
    if policy not in typing.get_args(TiePolicy):
        raise ValueError(f"tie policy must be one of {typing.get_args(TiePolicy)}, got {policy!r}")


def combine_ranks(optimistic: np.ndarray, pessimistic: np.ndarray, policy: TiePolicy = "realistic") -> np.ndarray:
    """Ranks [n] float64 under a tie policy from optimistic/pessimistic int ranks."""
    check_tie_policy(policy)
    o, p = np.asarray(optimistic, np.float64), np.asarray(pessimistic, np.float64)
    return o if policy == "optimistic" else p if policy == "pessimistic" else 0.5 * (o + p)


def ranking_metrics(ranks: np.ndarray, ks: Sequence[int] = (1, 3, 10)) -> dict[str, float]:
    """MRR, MR and Hits@k from ranks [n] (1-based, may be fractional)."""
    ranks = np.asarray(ranks, np.float64)
    if ranks.size == 0:
        return {"mrr": float("nan"), "mr": float("nan"), **{f"hits@{k}": float("nan") for k in ks}, "count": 0}
    if np.any(ranks < 1):
        raise ValueError("ranking_metrics: ranks must be >= 1")
    out = {"mrr": float(np.mean(1.0 / ranks)), "mr": float(np.mean(ranks))}
    out.update({f"hits@{k}": float(np.mean(ranks <= k)) for k in ks})
    out["count"] = int(ranks.size)
    return out


def finite_or_none(x: Any) -> Any:
    """`x` (nested dicts / lists of numbers) with every non-finite float as None: a metric of
    nothing (no labelled node, a graph without edges) is JSON null, so `json.dumps` writes
    strict JSON instead of NaN / Infinity."""
    if isinstance(x, dict):
        return {k: finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_none(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


def write_predictions(path: str | Path, scores: np.ndarray, class_names: Sequence[str], *, score: str = "score",
                      labelled: np.ndarray | None = None) -> tuple[Path, dict[str, int]]:
    """TSV, one row per node in id order: id, class (argmax of `scores` [N, C]), class_name, its
    `score` column, and with `labelled` [N] bool a 0/1 column saying whether the node came with a
    label. Written atomically; returns (path, {class name: predicted count})."""
    from geofm.data.cache import atomic_write_text  # lazy: `import geofm.metrics` stays light

    scores = np.asarray(scores)
    pred = np.argmax(scores, axis=1)
    top = scores[np.arange(len(pred)), pred]
    names = [" ".join(str(n).split()) for n in class_names]  # no TAB / newline inside a field
    head = ["id", "class", "class_name", score] + (["labelled"] if labelled is not None else [])
    rows = [f"{i}\t{c}\t{names[c]}\t{s:.6f}" + (f"\t{int(labelled[i])}" if labelled is not None else "") + "\n"
            for i, (c, s) in enumerate(zip(pred, top))]
    atomic_write_text(Path(path), "\t".join(head) + "\n" + "".join(rows))
    return Path(path), dict(zip(names, np.bincount(pred, minlength=len(names)).tolist()))
