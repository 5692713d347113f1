"""KG models: registry, scoring consistency, geometry kernels, CAT branches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import geofm.kg  # noqa: F401  (registers all models)
from geofm.kg.cat import mix_tangent
from geofm.kg.models import MODELS, build_model, load_builtin_models
from geofm.kg.scoring import (
    givens_reflection,
    givens_rotation,
    gram_sqdist_hyperbolic,
    gram_sqdist_k,
    sqdist_to_tangent_shared,
)
from manifolds import stereographic as st

N, R = 30, 3
KWARGS = {
    "transe": [{"p": 1}, {"p": 2}],
    "rotate": [{}],
    "complex": [{"n3": 0.1}],
    "murp": [{}, {"ball_params": True}],
    "atth": [{}],
    "roth": [{}],
    "refh": [{}],
    "cat": [{"heads": 2, "blocks": 1}, {"heads": 2, "blocks": 1, "branches": ["S"]},
            {"heads": 2, "blocks": 1, "score_router": "query", "branch_queries": True}],
    "text": [{"text_dim": 6}, {"text_dim": 6, "residual": True}],
}


def test_registry_complete_and_errors() -> None:
    assert set(KWARGS) == set(load_builtin_models()) == set(MODELS)
    with pytest.raises(ValueError, match="unknown KG model 'nope'; known: .*atth"):
        build_model("nope", N, R)
    with pytest.raises(ValueError, match="bad kwargs for KG model 'atth'"):
        build_model("atth", N, R, bogus=1)


@pytest.mark.parametrize(
    "name,kw",
    [pytest.param(n, k, marks=[pytest.mark.slow] if n == "cat" else []) for n, ks in KWARGS.items() for k in ks],
)
def test_shared_and_rows_scores_agree_and_grads_finite(name, kw) -> None:
    m = build_model(name, N, R, seed=1, dim=8, init_size=0.3, **kw)
    if hasattr(m, "set_text"):  # frozen-embedding models get their entity texts from init.kind: text
        m.set_text(jax.random.normal(jax.random.key(4), (N, kw["text_dim"])))
    h, r = jnp.array([0, 5, 7, 29]), jnp.array([0, 1, 4, 5])

    def loss(model):
        qq = model.query(h, r, key=jax.random.key(0))
        return -jnp.sum(model.score_rows(qq, h[:, None])) + model.regularizer(h, r, h) + model.aux_loss(qq)

    @nnx.jit
    def run(model):
        q = model.query(h, r)
        shared = model.score_shared(q, jnp.arange(N))
        rows = model.score_rows(q, jnp.tile(jnp.arange(N), (4, 1)))
        return shared, rows, nnx.grad(loss)(model)

    shared, rows, grads = run(m)
    assert shared.shape == (4, N) and bool(jnp.isfinite(shared).all())
    np.testing.assert_allclose(shared, rows, rtol=2e-4, atol=2e-4)
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.isfinite(g).all()) for g in leaves)
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves)


@pytest.mark.parametrize("name,kw", [("transe", {"p": 2}), ("murp", {}), ("murp", {"ball_params": True}), ("atth", {}),
                                     ("roth", {}), ("refh", {}), ("cat", {"heads": 2, "blocks": 1, "branches": ["S"]}),
                                     ("cat", {"heads": 2, "blocks": 1, "branches": ["H"]})])
def test_distance_scores_use_full_float32_matmuls(name, kw, dot_precisions) -> None:
    """Models scored by a distance get it from Gram terms (one matmul against all entities); every
    such matmul asks for HIGHEST precision (TF32, JAX's GPU default, would cancel badly)."""
    m = build_model(name, N, R, seed=1, dim=8, init_size=0.3, **kw)
    q = m.query(jnp.array([0, 5]), jnp.array([0, 1]))
    graphdef, state = nnx.split(m)
    precisions = []  # (TransE's per-row scores are elementwise: no matmul there)
    for fn in (lambda st, q: nnx.merge(graphdef, st).score_shared(q, jnp.arange(N)),
               lambda st, q: nnx.merge(graphdef, st).score_rows(q, jnp.tile(jnp.arange(N), (2, 1)))):
        precisions += dot_precisions(jax.make_jaxpr(fn)(state, q).jaxpr)
    assert precisions and all(p == (jax.lax.Precision.HIGHEST,) * 2 for p in precisions), precisions


def test_givens_are_orthogonal() -> None:
    key = jax.random.key(0)
    p, x = jax.random.normal(key, (5, 8)), jax.random.normal(jax.random.key(1), (5, 8))
    for fn in (givens_rotation, givens_reflection):
        y = fn(p, x)
        np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(givens_reflection(p, givens_reflection(p, x)), x, atol=1e-5)  # involution


@pytest.mark.parametrize("k", [-1.3, -1e-4, 0.0, 0.7])
def test_gram_distance_matches_stereographic(k: float) -> None:
    x = jax.jit(lambda u: st.expmap0(u, k=k))(0.4 * jax.random.normal(jax.random.key(2), (6, 5)))
    v = 0.5 * jax.random.normal(jax.random.key(3), (9, 5))
    kk = jnp.full((6, 1), k)
    ref = jax.jit(lambda x, y: st.dist(x[:, None, :], st.expmap0(y, k=k)[None, :, :], k=k) ** 2)(x, v)
    fn = jax.jit(sqdist_to_tangent_shared, static_argnames="hyperbolic")
    np.testing.assert_allclose(fn(x, v, k=kk), ref, rtol=1e-4, atol=1e-5)
    if k < 0:
        np.testing.assert_allclose(fn(x, v, k=kk, hyperbolic=True), ref, rtol=1e-4, atol=1e-5)
        xy, x2, y2 = jnp.float32(0.1), jnp.float32(0.2), jnp.float32(0.3)
        np.testing.assert_allclose(gram_sqdist_hyperbolic(xy, x2, y2, k=jnp.float32(k)), gram_sqdist_k(xy, x2, y2, k=jnp.float32(k)), rtol=1e-4)


def test_mix_tangent() -> None:
    w = jnp.array([[0.2, 0.8]])
    np.testing.assert_allclose(mix_tangent([jnp.ones((1, 3)), jnp.zeros((1, 3))], w), 0.2 * jnp.ones((1, 3)))


@pytest.mark.slow
def test_cat_fixed_variant_parameter_overhead() -> None:
    full = build_model("cat", 1000, 10, dim=32, heads=4, blocks=2)
    fixed = build_model("cat", 1000, 10, dim=32, heads=4, blocks=2, branches=["H"])
    count = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))  # noqa: E731
    assert 0 < count(full) - count(fixed) <= 0.10 * count(fixed)
    w = nnx.jit(lambda m, h, r: m.router_weights(h, r))(full, jnp.array([0, 1]), jnp.array([2, 3]))
    assert w.shape == (2, 2, 3, 3)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    # the defaults keep the original parameters (old checkpoints restore): one [d, d] output map, no query router
    assert full.proj.kernel.shape == (32, 32) and not hasattr(full, "qrouter1")
    # the default score weights are the [MASK] token's last-block router weights
    np.testing.assert_allclose(full.score_weights(jnp.array([0, 1]), jnp.array([2, 3])), w[:, -1, 2], rtol=1e-6)
    # query routing + one query per geometry: still within the 10 % budget, weights depend on the query
    qr = build_model("cat", 1000, 10, dim=32, heads=4, blocks=2, score_router="query", branch_queries=True)
    assert 0 < count(qr) - count(fixed) <= 0.10 * count(fixed)
    sw = qr.score_weights(jnp.array([0, 1]), jnp.array([2, 3]))
    assert sw.shape == (2, 3) and not np.allclose(sw[0], sw[1])
    np.testing.assert_allclose(sw.sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="score_router must be 'mask' or 'query'"):
        build_model("cat", 1000, 10, dim=32, heads=4, blocks=2, score_router="token")


def test_murp_ball_params_with_riemannian_adam_stay_on_ball() -> None:
    from geofm.kg.config import LossConfig, OptimConfig
    from geofm.kg.train import make_epoch_fn, make_loss_fn, make_optimizer

    m = build_model("murp", N, R, dim=4, init_size=0.3, ball_params=True)
    gd, params, rest = nnx.split(m, nnx.Param, ...)
    specs = m.manifold_specs()
    leaves = jax.tree.leaves(specs)  # None leaves (plain Adam) vanish: only entity and rel are on the ball
    assert len(leaves) == 2 and all(type(x).__name__ == "Stereographic" for x in leaves)
    tx = make_optimizer(OptimConfig(name="riemannian_adam", lr=0.5), m)
    epoch = make_epoch_fn(make_loss_fn(LossConfig(num_negatives=4), gd, N), tx, 8)
    rng = np.random.default_rng(0)
    train = jnp.asarray(np.stack([rng.integers(0, N, 40), rng.integers(0, 2 * R, 40), rng.integers(0, N, 40)], 1), jnp.int32)
    p2, _, loss = epoch(params, tx.init(params), rest, jax.random.key(0), train)
    assert bool(jnp.isfinite(loss))
    norms = jnp.linalg.norm(p2["entity"][...], axis=-1)
    assert float(norms.max()) < 1.0  # k = -1: the unit ball
    assert float(jnp.abs(p2["entity"][...] - params["entity"][...]).max()) > 1e-3  # it moved


@pytest.mark.parametrize("branch", ["H", "S"])
def test_cat_default_curved_attention_reads_its_tokens(branch, monkeypatch) -> None:
    """The k and beta a CAT-KG block hands to its curved attention at the default init
    (|k| = 1/d_head, beta = 1/(8 sqrt(d_head))) put query tokens at geodesic radius ~2 with
    attention spread over keys. The session-3 init (|k| = 1, beta ~ 1.19) put them at ~8:
    past the antipode on the sphere (tokens wrap around; S-only valid MRR 0.02), nearly
    one-hot attention on the ball."""
    import geofm.kg.cat as kgcat
    from geofm.nn.cat import branch_attention, hyperbolic_scores, spherical_scores

    seen: dict = {}

    def spy(q, key, v, mask, **kw):
        seen.update(q=q, key=key, **kw)
        return branch_attention(q, key, v, mask, **kw)

    monkeypatch.setattr(kgcat, "branch_attention", spy)
    x = jax.random.normal(jax.random.key(0), (64, 3, 64))

    def stats(**kw) -> tuple[float, float]:
        kgcat.CATBlock(64, 4, [branch], rngs=nnx.Rngs(0), dtype=jnp.float32, **kw)(x)
        q, k, kk, beta = seen["q"], seen["key"], seen["k"], seen["beta"]
        fn = hyperbolic_scores if branch == "H" else spherical_scores
        top = jnp.max(jax.nn.softmax(fn(q, k, k=kk, beta=beta), -1), -1)
        radius = 2.0 * jnp.sqrt(jnp.abs(kk[..., 0])) * jnp.linalg.norm(q, axis=-1)
        return float(jnp.mean(top)), float(jnp.median(radius))

    top, radius = stats()
    np.testing.assert_allclose(np.abs(np.asarray(seen["k"])).ravel(), 1 / 16, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(seen["beta"]).ravel(), 1 / 32, rtol=1e-5)
    assert top < 0.8 and radius < 2.5
    top, radius = stats(curvature=(-1.0, 1.0), beta=1.19)
    assert (top > 0.9) if branch == "H" else (radius > np.pi)


def test_cat_model_hands_init_to_blocks_and_checks_it() -> None:
    from geofm.nn.curvature import raw_to_curvature

    m = build_model("cat", N, R, dim=16, heads=2, blocks=2, attn_beta=0.3, attn_curvature=[-0.5, 0.25])
    for blk in m.blocks:
        np.testing.assert_allclose(jax.nn.softplus(blk.beta_h[...]), 0.3, rtol=1e-5)
        np.testing.assert_allclose(raw_to_curvature(blk.k_s[...], geometry="spherical"), 0.25, rtol=1e-5)
    np.testing.assert_allclose(raw_to_curvature(m.k_out[...][0], geometry="hyperbolic"), -1 / 16, rtol=1e-5)
    for bad, msg in ((dict(attn_curvature=[0.5, 1.0]), "attn_curvature must be"), (dict(attn_curvature=[]), "attn_curvature must be"),
                     (dict(score_curvature=[-1.0, -1.0]), "score_curvature must be"), (dict(attn_beta=0.0), "attn_beta must be > 0")):
        with pytest.raises(ValueError, match=msg):
            build_model("cat", N, R, dim=16, heads=2, blocks=1, **bad)


def test_cat_score_scale_defaults_and_errors() -> None:
    from geofm.kg.cat import default_score_scale

    m = build_model("cat", N, R, dim=16, heads=2, blocks=1)
    np.testing.assert_allclose(np.exp(m.log_score_scale[...]), [1.0, 1.0, 0.0625], rtol=1e-6)
    assert default_score_scale("S", 64) == 0.03125
    with pytest.raises(ValueError, match="score_scale needs one positive value per branch"):
        build_model("cat", N, R, dim=16, heads=2, blocks=1, score_scale=[1.0, 2.0])


def test_router_plot_keeps_the_most_distinctive_rows(tmp_path) -> None:
    from geofm.kg.plots import most_distinctive, plot_router_weights

    rows = [(f"r{i}", {"E": 1 / 3, "H": 1 / 3, "S": 1 / 3}) for i in range(50)]
    rows[7] = ("odd", {"E": 0.9, "H": 0.05, "S": 0.05})
    rows[30] = ("odder", {"E": 0.0, "H": 0.0, "S": 1.0})
    kept = most_distinctive(rows, 5)
    assert len(kept) == 5 and [n for n, _ in kept].index("odd") < [n for n, _ in kept].index("odder")
    assert most_distinctive(rows[:4], 5) == rows[:4]
    router = {name: {"tail": {"mean": m}} for name, m in rows}
    assert plot_router_weights(router, tmp_path / "r.png", max_rows=5).stat().st_size > 1000
    with pytest.raises(ValueError, match="no router weights"):  # a run from before score weights were logged
        plot_router_weights(router, tmp_path / "s.png", which="score")
    with pytest.raises(ValueError, match="which must be"):
        plot_router_weights(router, tmp_path / "s.png", which="blocks")


def test_complex_relation_scores_equal_triple_scores() -> None:
    """score_relations(h, t)[:, r] is the triple score of (h, r, t) for every r, reciprocals included."""
    m = build_model("complex", N, R, seed=2, dim=8, init_size=0.5)
    h, t = jnp.array([0, 3, 9, 29]), jnp.array([1, 3, 4, 17])
    got = m.score_relations(h, t)
    assert got.shape == (4, 2 * R)
    for r in range(2 * R):
        want = m.score_rows(m.query(h, jnp.full_like(h, r)), t[:, None])[:, 0]
        np.testing.assert_allclose(got[:, r], want, rtol=1e-5, atol=1e-6)
    with pytest.raises(NotImplementedError, match="'atth' has no relation scores"):
        build_model("atth", N, R, dim=8).score_relations(h, t)
