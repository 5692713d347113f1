"""The chunked evaluator against a naive numpy reference, including ties."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geofm.kg.evaluate import FilterIndex, RankingEvaluator, make_queries, naive_ranks
from geofm.metrics import combine_ranks, ranking_metrics

N, R = 37, 3


def _graph(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    allt = np.unique(np.stack([rng.integers(0, N, 400), rng.integers(0, R, 400), rng.integers(0, N, 400)], 1), axis=0)
    allt = allt[rng.permutation(len(allt))]
    return allt[:250], allt[250:280], allt[280:]


def _emb(seed: int, levels: int | None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(N, 4)).astype(np.float32)
    w = rng.normal(size=(2 * R, 4)).astype(np.float32)
    if levels is not None:  # small integers: many exact ties
        e, w = np.round(e * levels / 3), np.round(w)
    return e, w


def dot_score(params, h, r, cand):
    e, w = params
    return (e[h] * w[r]) @ e[cand].T


def dist_score(params, h, r, cand):
    e, w = params
    q = e[h] + w[r]
    return -jnp.sum((q[:, None, :] - e[cand][None, :, :]) ** 2, -1)


def const_score(params, h, r, cand):
    return jnp.zeros((h.shape[0], cand.shape[0]), jnp.float32)


@pytest.mark.parametrize("score_fn", [dot_score, dist_score])
@pytest.mark.parametrize("levels", [None, 1])
def test_matches_naive_reference(score_fn, levels) -> None:
    train, valid, test = _graph(0)
    e, w = _emb(1, levels)
    params = (jnp.asarray(e), jnp.asarray(w))
    ev = RankingEvaluator(N, R, [train, valid, test], train, query_chunk=7, entity_chunk=13)
    res = ev.evaluate(score_fn, params, test)

    def full(h, r):
        return np.asarray(score_fn(params, jnp.array([h]), jnp.array([r]), jnp.arange(N)))[0]

    opt, pes = naive_ranks(full, test, np.concatenate([train, valid, test]), R)
    np.testing.assert_array_equal(res.optimistic, opt)
    np.testing.assert_array_equal(res.pessimistic, pes)
    if levels is not None:
        assert np.any(opt != pes), "test graph should contain ties"


def test_evaluate_many_equals_one_scorer_at_a_time() -> None:
    """G scorers in one pass (ties included): each result is `evaluate` of that scorer alone; no
    triples gives G empty results; a scorer of the wrong rank is refused."""
    train, valid, test = _graph(0)
    e, w = _emb(1, 1)
    params = (jnp.asarray(e), jnp.asarray(w))
    scorers = (dot_score, dist_score, const_score)

    def many(params, h, r, cand):  # [3, C, E]
        return jnp.stack([f(params, h, r, cand) for f in scorers])

    ev = RankingEvaluator(N, R, [train, valid, test], train, query_chunk=7, entity_chunk=13)
    res = ev.evaluate_many(many, params, test)
    assert len(res) == 3
    for f, got in zip(scorers, res):
        one = ev.evaluate(f, params, test)
        np.testing.assert_array_equal(got.optimistic, one.optimistic)
        np.testing.assert_array_equal(got.pessimistic, one.pessimistic)
    assert [len(r.optimistic) for r in ev.evaluate_many(many, params, test[:0])] == [0, 0, 0]
    with pytest.raises(ValueError, match="evaluate_many"):
        ev.evaluate(many, params, test)
    with pytest.raises(ValueError, match="evaluate_many"):
        ev.evaluate_many(dot_score, params, test)


def test_constant_scorer_gets_realistic_mean_rank() -> None:
    train, valid, test = _graph(2)
    known = np.concatenate([train, valid, test])
    ev = RankingEvaluator(N, R, [train, valid, test], train, query_chunk=16, entity_chunk=N)
    res = ev.evaluate(const_score, None, test)
    q_h, q_r, q_t, _ = make_queries(test, R)
    rows, _ = FilterIndex.build([known], R).pairs(q_h, q_r, q_t)
    n_filtered = np.bincount(rows, minlength=len(q_h))
    candidates = N - n_filtered  # target + unfiltered others
    np.testing.assert_array_equal(res.optimistic, 1)
    np.testing.assert_array_equal(res.pessimistic, candidates)
    np.testing.assert_allclose(res.ranks(), (candidates + 1) / 2)
    m = res.metrics()
    assert m["tie_policy"] == "realistic" and m["mr"] > N / 3 and m["mrr_optimistic"] == 1.0


def test_nan_scores_never_rank_first() -> None:
    """NaN compares false with everything: unchecked, a NaN model would get MRR 1. A NaN
    target raises; a NaN candidate counts as above the target (it can only hurt the rank)."""
    train, valid, test = _graph(3)
    ev = RankingEvaluator(N, R, [train, valid, test], train, query_chunk=16, entity_chunk=13)

    def nan_score(params, h, r, cand):
        return jnp.full((h.shape[0], cand.shape[0]), jnp.nan, jnp.float32)

    with pytest.raises(FloatingPointError, match=f"NaN or \\+inf target score for {2 * len(test)} of {2 * len(test)} q"):
        ev.evaluate(nan_score, None, test)

    def inf_score(params, h, r, cand):  # +inf everywhere would otherwise tie at optimistic rank 1
        return jnp.full((h.shape[0], cand.shape[0]), jnp.inf, jnp.float32)

    with pytest.raises(FloatingPointError, match="target score"):
        ev.evaluate(inf_score, None, test)

    def ramp(params, h, r, cand):  # distinct finite scores: no ties
        return jnp.broadcast_to(cand.astype(jnp.float32)[None, :], (h.shape[0], cand.shape[0]))

    bad = 0  # entity 0's score turns NaN; it is never the best-scored finite candidate

    def ramp_nan(params, h, r, cand):
        s = ramp(params, h, r, cand)
        return jnp.where((cand == bad)[None, :], jnp.nan, s)

    keep = (test[:, 0] != bad) & (test[:, 2] != bad)  # no NaN target
    ref, res = ev.evaluate(ramp, None, test[keep]), ev.evaluate(ramp_nan, None, test[keep])
    q_h, q_r, q_t, _ = make_queries(test[keep], R)
    rows, cols = FilterIndex.build([np.concatenate([train, valid, test])], R).pairs(q_h, q_r, q_t)
    filtered_bad = np.zeros(len(q_h), bool)
    filtered_bad[rows[cols == bad]] = True
    # entity 0 scored lowest before: now above every target unless filtered out for that query
    np.testing.assert_array_equal(res.optimistic, ref.optimistic + ~filtered_bad)
    np.testing.assert_array_equal(res.pessimistic, ref.pessimistic + ~filtered_bad)


def test_bad_triples_and_policy_are_refused() -> None:
    train, valid, test = _graph(4)
    ev = RankingEvaluator(N, R, [train, valid, test], train)
    with pytest.raises(ValueError, match=r"entities and \[0, 3\) for relations; got entities -1"):
        ev.evaluate(const_score, None, np.array([[-1, 0, 1]]))
    with pytest.raises(ValueError, match="got entities 0..37"):
        ev.evaluate(const_score, None, np.array([[0, 0, N]]))
    with pytest.raises(ValueError, match=r"int array \[n, 3\].*shape \(3, 4\)"):
        ev.evaluate(const_score, None, test[:4].T)
    with pytest.raises(ValueError, match="dtype float"):
        ev.evaluate(const_score, None, test[:4].astype(float))
    assert ev.evaluate(const_score, None, np.zeros((0, 3), np.int64)).optimistic.size == 0
    with pytest.raises(ValueError, match="policy must be one of"):
        RankingEvaluator(N, R, [train], train, policy="mean")


def test_breakdowns_unseen_and_compile_once() -> None:
    train, valid, test = _graph(3)
    test = np.concatenate([test, [[N - 1, 0, 0]]])
    train = train[(train[:, 0] != N - 1) & (train[:, 2] != N - 1)]  # make entity N-1 unseen
    e, w = _emb(4, None)
    params = (jnp.asarray(e), jnp.asarray(w))
    ev = RankingEvaluator(N, R, [train, valid, test], train, query_chunk=8, entity_chunk=10)
    calls = []

    def counting(params, h, r, cand):
        calls.append(h.shape)  # runs only while tracing
        return dot_score(params, h, r, cand)

    res = ev.evaluate(counting, params, test)
    traces = len(calls)
    ev.evaluate(counting, params, test)
    assert len(calls) == traces, "second evaluation must not retrace"
    m = res.metrics(relation_names=["a", "b", "c"])
    assert m["num_queries"] == 2 * len(test)
    assert m["by_direction"]["tail"]["count"] + m["by_direction"]["head"]["count"] == 2 * len(test)
    assert sum(v["all"]["count"] for v in m["by_relation"].values()) == 2 * len(test)
    assert m["num_queries_with_unseen_entity"] >= 2 and m["unseen"]["count"] == m["num_queries_with_unseen_entity"]


def test_ranking_metrics_values() -> None:
    m = ranking_metrics(np.array([1, 2, 4, 20.5]))
    assert m["mrr"] == pytest.approx((1 + 0.5 + 0.25 + 1 / 20.5) / 4)
    assert m["mr"] == pytest.approx(27.5 / 4) and m["hits@1"] == 0.25 and m["hits@3"] == 0.5 and m["hits@10"] == 0.75
    np.testing.assert_allclose(combine_ranks(np.array([1, 2]), np.array([3, 2])), [2, 2])
    with pytest.raises(ValueError):
        combine_ranks(np.array([1]), np.array([1]), "mean")  # type: ignore[arg-type]
