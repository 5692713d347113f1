"""Filtered, tie-aware link-prediction evaluation, chunked over queries and entities.

Queries use reciprocal relations: a triple (h, r, t) gives a tail query
(h, r, ?) with answer t and a head query (t, r + R, ?) with answer h, where R
is the number of relations. Each query is ranked against all N entities;
other known true answers (train + valid + test) are filtered out.

A scorer is a pure function `score_fn(params, h, r, cand) -> [C, E]` with
h, r: int32 [C] (r in [0, 2R)), cand: int32 [E] entity ids; higher = better.
`evaluate_many` takes a scorer returning [G, C, E]: G scorers (e.g. G fusion weight
vectors over the same member scores) ranked in one pass over the entities.
The per-chunk kernel is jit-compiled once per (query chunk, filter bucket)
shape; the last query chunk is padded. Memory is O(query_chunk * entity_chunk).

Filtering: a host-side CSR (query key h * 2R + r -> sorted known answers) is
turned into padded (row, col) pairs per query chunk and scattered into a
[C, E] mask per entity block on device.

The target's score is computed by the same `score_fn` with the targets as a
[C]-candidate block (diagonal), and the target's own column is excluded
explicitly, so the target never ties with itself. NaN compares false with
everything, so unchecked it would rank the target first: a NaN (or +inf) target
score makes `evaluate` raise FloatingPointError, and a NaN candidate score counts as
above the (finite) target (it can only worsen the rank; no extra pass over the scores).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from geofm.metrics import TiePolicy, check_tie_policy, combine_ranks, ranking_metrics, tie_ranks

ScoreFn = Callable[[Any, jnp.ndarray, jnp.ndarray, jnp.ndarray], jnp.ndarray]

__all__ = ["ScoreFn", "FilterIndex", "EvalResult", "RankingEvaluator", "make_queries", "naive_ranks"]


def make_queries(triples: np.ndarray, num_relations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Both directions of `triples` [n, 3] -> (h [2n], r [2n], t [2n], is_head_query [2n]).

    The first n are tail queries (h, r, t), the next n head queries (t, r + R, h).
    """
    triples = np.asarray(triples, np.int64).reshape(-1, 3)
    h, r, t = triples.T
    q_h = np.concatenate([h, t])
    q_r = np.concatenate([r, r + num_relations])
    q_t = np.concatenate([t, h])
    head = np.concatenate([np.zeros(len(h), bool), np.ones(len(h), bool)])
    return q_h, q_r, q_t, head


@dataclasses.dataclass(frozen=True)
class FilterIndex:
    """CSR of known answers: keys (sorted unique h * 2R + r) -> answers[offsets[i]:offsets[i+1]]."""

    num_relations: int
    keys: np.ndarray
    offsets: np.ndarray
    answers: np.ndarray

    @classmethod
    def build(cls, triple_sets: Sequence[np.ndarray], num_relations: int) -> "FilterIndex":
        """From all known triples (e.g. train, valid, test), both directions."""
        allt = np.concatenate([np.asarray(t, np.int64).reshape(-1, 3) for t in triple_sets])
        h, r, t, _ = make_queries(allt, num_relations)
        key = h * (2 * num_relations) + r
        order = np.lexsort((t, key))
        key, t = key[order], t[order]
        uniq = np.ones(len(key), bool)
        uniq[1:] = (key[1:] != key[:-1]) | (t[1:] != t[:-1])  # drop duplicates
        key, t = key[uniq], t[uniq]
        keys, starts = np.unique(key, return_index=True)
        offsets = np.append(starts, len(key)).astype(np.int64)
        return cls(num_relations, keys, offsets, t.astype(np.int32))

    def pairs(self, h: np.ndarray, r: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) of known answers for queries (h, r) other than their own target t."""
        key = np.asarray(h, np.int64) * (2 * self.num_relations) + np.asarray(r, np.int64)
        pos = np.searchsorted(self.keys, key)
        pos_c = np.minimum(pos, len(self.keys) - 1)
        found = (pos < len(self.keys)) & (self.keys[pos_c] == key)
        start = np.where(found, self.offsets[pos_c], 0)
        count = np.where(found, self.offsets[pos_c + 1] - self.offsets[pos_c], 0)
        rows = np.repeat(np.arange(len(key)), count)
        base = np.repeat(start - np.cumsum(count) + count, count)
        cols = self.answers[base + np.arange(len(rows))] if len(rows) else np.zeros(0, np.int32)
        keep = cols != np.asarray(t)[rows]
        return rows[keep].astype(np.int32), cols[keep].astype(np.int32)


@dataclasses.dataclass
class EvalResult:
    """Per-query ranks and aggregated metrics."""

    optimistic: np.ndarray  # [Q] int
    pessimistic: np.ndarray  # [Q] int
    query_relation: np.ndarray  # [Q] original relation id (0..R-1)
    is_head_query: np.ndarray  # [Q] bool
    has_unseen: np.ndarray  # [Q] bool: triple has an entity not seen in training
    policy: TiePolicy
    seconds: float

    def ranks(self, policy: TiePolicy | None = None) -> np.ndarray:
        return combine_ranks(self.optimistic, self.pessimistic, policy or self.policy)

    def metrics(self, relation_names: Sequence[str] | None = None, breakdown: bool = True) -> dict[str, Any]:
        """Overall metrics (tie policy `self.policy`), tie bounds, and breakdowns."""
        ranks = self.ranks()
        out: dict[str, Any] = ranking_metrics(ranks)
        out["tie_policy"] = self.policy
        out["mrr_optimistic"] = ranking_metrics(self.ranks("optimistic"))["mrr"]
        out["mrr_pessimistic"] = ranking_metrics(self.ranks("pessimistic"))["mrr"]
        out["num_queries"] = int(len(ranks))
        out["num_queries_with_unseen_entity"] = int(self.has_unseen.sum())
        out["seconds"] = self.seconds
        if breakdown:
            out["by_direction"] = {
                "tail": ranking_metrics(ranks[~self.is_head_query]),
                "head": ranking_metrics(ranks[self.is_head_query]),
            }
            out["unseen"] = ranking_metrics(ranks[self.has_unseen])
            by_rel = {}
            for rel in np.unique(self.query_relation):
                name = relation_names[rel] if relation_names is not None else str(int(rel))
                sel = self.query_relation == rel
                by_rel[name] = {
                    "tail": ranking_metrics(ranks[sel & ~self.is_head_query]),
                    "head": ranking_metrics(ranks[sel & self.is_head_query]),
                    "all": ranking_metrics(ranks[sel]),
                }
            out["by_relation"] = by_rel
        return out


def _bucket(n: int, minimum: int = 1024) -> int:
    """Next power of two >= max(n, minimum): few distinct filter-pair shapes."""
    return max(minimum, 1 << int(max(n - 1, 0)).bit_length())


def _chunk_ranks(
    score_fn: ScoreFn,
    num_entities: int,
    entity_chunk: int,
    params: Any,
    h: jnp.ndarray,
    r: jnp.ndarray,
    t: jnp.ndarray,
    f_row: jnp.ndarray,
    f_col: jnp.ndarray,
    f_valid: jnp.ndarray,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Optimistic/pessimistic ranks [..., C] for one padded query chunk, and per query whether
    its target scored NaN or +inf (bool [..., C]); NaN candidates count as above the target.
    The leading axes are the scorer's own ([G] for `evaluate_many`, none for `evaluate`)."""
    c = h.shape[0]
    target_scores = jnp.diagonal(score_fn(params, h, r, t), axis1=-2, axis2=-1)
    n_blocks = -(-num_entities // entity_chunk)

    def block(carry, b):
        gt, ge = carry
        start = b * entity_chunk
        cand = start + jnp.arange(entity_chunk, dtype=jnp.int32)
        in_range = cand < num_entities
        scores = score_fn(params, h, r, jnp.where(in_range, cand, 0))
        scores = jnp.where(jnp.isnan(scores), jnp.inf, scores)  # a NaN candidate beats the target
        local = f_col - start
        hit = f_valid & (local >= 0) & (local < entity_chunk)
        filtered = jnp.zeros((c, entity_chunk), bool).at[f_row, jnp.where(hit, local, entity_chunk)].set(
            True, mode="drop"
        )
        keep = in_range[None, :] & ~filtered
        g, e = tie_ranks(scores, target_scores, keep, cand[None, :] == t[:, None])
        return (gt + g, ge + e), None

    zeros = jnp.zeros(target_scores.shape, jnp.int32)
    (gt, ge), _ = jax.lax.scan(block, (zeros, zeros), jnp.arange(n_blocks, dtype=jnp.int32))
    return gt + 1, ge + 1, jnp.isnan(target_scores) | (target_scores == jnp.inf)


class RankingEvaluator:
    """Filtered tie-aware evaluator for one KG (filter built from all known triples).

    num_entities / num_relations: vocabulary sizes (R original relations; the
    scorer sees 2R). known: all true triples used for filtering. train: the
    training triples (to count queries with unseen entities). query_chunk /
    entity_chunk: chunk sizes (memory ~ query_chunk * entity_chunk floats).
    """

    def __init__(
        self,
        num_entities: int,
        num_relations: int,
        known: Sequence[np.ndarray],
        train: np.ndarray,
        *,
        query_chunk: int = 512,
        entity_chunk: int = 8192,
        policy: TiePolicy = "realistic",
    ) -> None:
        if query_chunk < 1 or entity_chunk < 1:
            raise ValueError("query_chunk and entity_chunk must be >= 1")
        check_tie_policy(policy)
        self.num_entities, self.num_relations = int(num_entities), int(num_relations)
        self.filter = FilterIndex.build(known, num_relations)
        self.query_chunk = int(query_chunk)
        self.entity_chunk = int(min(entity_chunk, num_entities))
        self.policy = policy
        seen = np.zeros(self.num_entities, bool)
        train = np.asarray(train).reshape(-1, 3)
        seen[train[:, 0]] = True
        seen[train[:, 2]] = True
        self.seen = seen
        self._jitted: dict[ScoreFn, Callable] = {}

    def _kernel(self, score_fn: ScoreFn) -> Callable:
        if score_fn not in self._jitted:
            fn = functools.partial(_chunk_ranks, score_fn, self.num_entities, self.entity_chunk)
            self._jitted[score_fn] = jax.jit(fn)
        return self._jitted[score_fn]

    def evaluate(self, score_fn: ScoreFn, params: Any, triples: np.ndarray) -> EvalResult:
        """Rank both directions of `triples` [n, 3] (int ids); no triple is dropped.
        Raises ValueError on a wrong shape or ids outside [0, num_entities) / [0,
        num_relations), FloatingPointError when score_fn returns NaN or +inf for a target."""
        return self._evaluate(score_fn, params, triples, batched=False)[0]

    def evaluate_many(self, score_fn: ScoreFn, params: Any, triples: np.ndarray) -> list[EvalResult]:
        """`evaluate` for a scorer returning [G, C, E] (G scorers on the same queries, one pass
        over the entities and one compile per G): a list of G results, each equal to what
        `evaluate` gives for that scorer alone (their `seconds` is the whole pass's)."""
        return self._evaluate(score_fn, params, triples, batched=True)

    def _evaluate(self, score_fn: ScoreFn, params: Any, triples: np.ndarray, *, batched: bool) -> list[EvalResult]:
        triples = np.asarray(triples)
        if triples.ndim != 2 or triples.shape[1] != 3 or not np.issubdtype(triples.dtype, np.integer):
            if not (triples.size == 0 and triples.ndim <= 2):
                raise ValueError(f"evaluate: triples must be an int array [n, 3] of (head, relation, tail) ids, got "
                                 f"shape {triples.shape} dtype {triples.dtype}")
        triples = triples.reshape(-1, 3).astype(np.int64)
        if len(triples) and (triples.min() < 0 or triples[:, [0, 2]].max() >= self.num_entities
                             or triples[:, 1].max() >= self.num_relations):
            raise ValueError(f"evaluate: triple ids must lie in [0, {self.num_entities}) for entities and "
                             f"[0, {self.num_relations}) for relations; got entities "
                             f"{triples[:, [0, 2]].min()}..{triples[:, [0, 2]].max()}, relations "
                             f"{triples[:, 1].min()}..{triples[:, 1].max()}")
        t0 = time.perf_counter()
        q_h, q_r, q_t, head = make_queries(triples, self.num_relations)
        rows, cols = self.filter.pairs(q_h, q_r, q_t)
        row_start = np.searchsorted(rows, np.arange(0, len(q_h) + self.query_chunk, self.query_chunk))
        kernel = self._kernel(score_fn)
        c = self.query_chunk
        outs = []
        for i, s in enumerate(range(0, len(q_h), c)):
            n = min(c, len(q_h) - s)
            pad = lambda a: np.pad(a[s : s + n], (0, c - n)).astype(np.int32)  # noqa: E731
            a, b = row_start[i], row_start[i + 1]
            size = _bucket(b - a)
            f_row = np.zeros(size, np.int32)
            f_col = np.zeros(size, np.int32)
            f_valid = np.zeros(size, bool)
            f_row[: b - a], f_col[: b - a], f_valid[: b - a] = rows[a:b] - s, cols[a:b], True
            gt, ge, nan = kernel(params, pad(q_h), pad(q_r), pad(q_t), f_row, f_col, f_valid)
            if gt.ndim != 1 + batched:
                raise ValueError(f"score_fn returned scores of rank {gt.ndim + 1}: `evaluate` takes a scorer "
                                 "returning [C, E], `evaluate_many` one returning [G, C, E]")
            outs.append(tuple(np.asarray(x).reshape(-1, c)[:, :n] for x in (gt, ge, nan)))  # [G, n]
        if outs:
            opt, pes, nan = (np.concatenate([o[j] for o in outs], axis=1) for j in range(3))
        else:  # no triples: G empty results (G from the scorer's output shape, nothing computed)
            one = jnp.zeros(1, jnp.int32)
            g = jax.eval_shape(score_fn, params, one, one, one).shape[0] if batched else 1
            opt, pes, nan = np.zeros((g, 0), np.int32), np.zeros((g, 0), np.int32), np.zeros((g, 0), bool)
        if nan.any():
            g, i = (int(x[0]) for x in np.nonzero(nan))
            which = f"scorer {g}: " if batched else ""
            raise FloatingPointError(
                f"evaluate: {which}score_fn returned a NaN or +inf target score for {int(nan[g].sum())} of "
                f"{nan.shape[1]} queries (first: head {int(q_h[i])}, relation {int(q_r[i])} of "
                f"2R={2 * self.num_relations}, target {int(q_t[i])}); NaN ranks nothing, so these metrics "
                "would be meaningless")
        unseen = ~(self.seen[q_h] & self.seen[q_t])
        seconds = time.perf_counter() - t0
        return [EvalResult(optimistic=opt[g], pessimistic=pes[g], query_relation=q_r % self.num_relations,
                           is_head_query=head, has_unseen=unseen, policy=self.policy, seconds=seconds)
                for g in range(opt.shape[0])]


def naive_ranks(
    scores_fn: Callable[[int, int], np.ndarray], triples: np.ndarray, known: np.ndarray, num_relations: int
) -> tuple[np.ndarray, np.ndarray]:
    """Reference: per query, all-entity scores from `scores_fn(h, r) -> [N]`, python-loop filtering.

    Returns (optimistic, pessimistic) ranks for make_queries order. For tests only.
    """
    q_h, q_r, q_t, _ = make_queries(triples, num_relations)
    kh, kr, kt, _ = make_queries(known, num_relations)
    truth: dict[tuple[int, int], set[int]] = {}
    for a, b, c in zip(kh, kr, kt):
        truth.setdefault((int(a), int(b)), set()).add(int(c))
    opt, pes = [], []
    for a, b, c in zip(q_h, q_r, q_t):
        s = np.asarray(scores_fn(int(a), int(b)))
        others = [j for j in range(len(s)) if j != c and j not in truth.get((int(a), int(b)), set())]
        o = s[others]
        opt.append(1 + int(np.sum(o > s[c])))
        pes.append(1 + int(np.sum(o >= s[c])))
    return np.array(opt), np.array(pes)
