"""Entity initialisation from entity texts (geofm.kg.init) with a deterministic fake text encoder."""

from __future__ import annotations

import dataclasses
import re
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from geofm.config import ConfigError, load_config
from geofm.data import DataWarning
from geofm.data.kg import load_kg
from geofm.kg.config import EntityInitConfig, KGConfig
from geofm.kg.init import ProjectedEntityTable, apply_entity_init, encode_entity_texts, pca_basis, text_projection
from geofm.kg.models import build_model
from geofm.kg.train import count_params, train_kg
from manifolds import stereographic as st

REPO = Path(__file__).resolve().parents[2]
CLUSTERS, MEMBERS, TEXT_DIM = 6, 10, 16


class FakeEncoder:
    """Deterministic text vectors: texts naming `cluster c` share a direction, plus per-text noise."""

    def __init__(self, dim: int = TEXT_DIM, noise: float = 0.3):
        self.dim, self.noise, self.calls = dim, noise, 0

    def encode(self, texts, batch_size=64, progress=None):
        self.calls += 1
        out = []
        for t in texts:
            m = re.search(r"cluster (\d+)", t)
            base = np.random.default_rng(int(m.group(1)) if m else 999).normal(size=self.dim)
            v = base + self.noise * np.random.default_rng(zlib.crc32(t.encode())).normal(size=self.dim)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32)


def write_text_kg(folder: Path, *, drop_text: tuple[str, ...] = ()) -> Path:
    """A KG whose relations follow the clusters named in the entity texts.

    member m{c}_{i} --in--> hub{c}; train members of one cluster are `near`
    each other. Members 8, 9 of each cluster appear only in test (unseen in
    train), member 7 only in valid.
    """
    folder.mkdir(parents=True, exist_ok=True)
    train, valid, test, texts = [], [], [], {}
    for c in range(CLUSTERS):
        hub = f"hub{c}"
        texts[hub] = f"hub of cluster {c}"
        seen = [f"m{c}_{i}" for i in range(7)]
        for i in range(MEMBERS):
            texts[f"m{c}_{i}"] = f"member {i} of cluster {c}"
        train += [(m, "in", hub) for m in seen] + [(a, "near", b) for a in seen for b in seen if a != b]
        valid.append((f"m{c}_7", "in", hub))
        test += [(f"m{c}_8", "in", hub), (f"m{c}_9", "in", hub)]
    for split, rows in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"{split}.txt").write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in rows))
    (folder / "entity2text.txt").write_text("".join(f"{e}\t{t}\n" for e, t in texts.items() if e not in drop_text))
    return folder


@pytest.fixture(scope="module")
def text_kg(tmp_path_factory: pytest.TempPathFactory):
    return load_kg(write_text_kg(tmp_path_factory.mktemp("kg") / "text_kg"))


def _model(name: str = "atth", n: int = 20, dim: int = 8, **kw):
    return build_model(name, n, 2, seed=0, dim=dim, init_size=0.01, **kw)


def _texts(n: int) -> list[str]:
    return [f"member {i} of cluster {i % 3}" for i in range(n)]


# ---------------------------------------------------------------- host ---


def test_pca_basis_deterministic_orthonormal_and_matches_svd() -> None:
    x = np.random.default_rng(0).normal(size=(50, 12)) * np.linspace(3, 0.1, 12)
    mean, basis, ratio = pca_basis(x, dim=5)
    mean2, basis2, ratio2 = pca_basis(x.copy(), dim=5)
    assert np.array_equal(basis, basis2) and np.array_equal(ratio, ratio2)
    assert basis.shape == (12, 5) and np.allclose(basis.T @ basis, np.eye(5), atol=1e-10)
    assert np.all(np.diff(ratio) <= 0) and 0 < ratio.sum() <= 1
    _, s, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    assert np.allclose(np.abs(basis.T @ vt[:5].T), np.eye(5), atol=1e-8)  # same directions up to sign
    assert np.allclose(ratio, s[:5] ** 2 / np.sum(s**2))
    pivot = np.argmax(np.abs(basis), 0)
    assert np.all(basis[pivot, np.arange(5)] > 0)  # sign convention
    assert pca_basis(x[:4], dim=5)[1].shape == (12, 3)  # at most n - 1 directions
    with pytest.raises(ValueError, match="at least 2 rows"):
        pca_basis(x[:1], dim=2)


def test_text_projection_scale_fallback_and_extra_columns() -> None:
    emb = FakeEncoder().encode(_texts(30))
    has = np.ones(30, bool)
    has[[3, 17]] = False
    rand = np.random.default_rng(1).normal(size=(30, 4)) * 0.01
    tp = text_projection(emb, has, rand, scale=0.2)
    assert tp.table.shape == (30, 4) and tp.proj.shape == (TEXT_DIM, 4) and tp.num_components == 4
    assert np.array_equal(tp.table[~has], rand[~has])  # no text -> the random init, untouched
    assert np.isclose(tp.table[has].std(), 0.2)
    assert np.allclose(tp.table[has], tp.text[has] @ tp.proj) and not tp.text[~has].any()
    assert np.isclose(text_projection(emb, has, rand).scale, rand.std())  # default: the random init's scale
    wide = np.random.default_rng(2).normal(size=(30, TEXT_DIM + 4)) * 0.01
    tw = text_projection(emb, has, wide, scale=0.2)
    assert tw.num_components == TEXT_DIM and np.array_equal(tw.table[:, TEXT_DIM:], wide[:, TEXT_DIM:])
    with pytest.raises(ValueError, match="scale"):
        text_projection(emb, has, rand, scale=0.0)


def test_encode_entity_texts_warns_with_missing_count() -> None:
    enc = FakeEncoder()
    texts = _texts(10)
    texts[2], texts[5], texts[7] = None, "  ", None
    with pytest.warns(DataWarning, match="3 of 10 entities have no text"):
        emb, has = encode_entity_texts(texts, enc)
    assert emb.shape == (10, TEXT_DIM) and has.sum() == 7 and not emb[~has].any()
    assert np.allclose(np.linalg.norm(emb[has], axis=1), 1.0)
    with pytest.raises(ValueError, match="no entity has text"), pytest.warns(DataWarning, match="2 of 2"):
        encode_entity_texts([None, ""], enc)


# --------------------------------------------------------------- model ---


def test_random_kind_keeps_the_model_bit_identical() -> None:
    m1, m2 = _model(), _model()
    info = apply_entity_init(m1, _texts(20), EntityInitConfig(kind="random"), encoder=FakeEncoder())
    assert info == {"kind": "random"}
    for a, b in zip(jax.tree.leaves(nnx.state(m1)), jax.tree.leaves(nnx.state(m2))):
        assert np.array_equal(a, b)
    idx = jnp.array([0, 3, 19])
    assert np.array_equal(m1.entity_rows(idx), m1.entity[...][idx])


@pytest.mark.parametrize("name", ["atth", "transe", "complex"])
def test_pca_init_sets_table_and_learned_matches_it_at_step_0(name: str) -> None:
    texts = _texts(20)
    texts[4] = None
    pca, learned, rand = _model(name), _model(name), _model(name)
    with pytest.warns(DataWarning, match="1 of 20"):
        info = apply_entity_init(pca, texts, EntityInitConfig(kind="text", scale=0.1), encoder=FakeEncoder())
    assert info["num_with_text"] == 19 and info["num_random_fallback"] == 1 and info["text_dim"] == TEXT_DIM
    table = np.asarray(pca.entity[...])
    assert isinstance(pca.entity, nnx.Param) and table.shape == (20, 8) and table.dtype == np.float32
    assert np.array_equal(table[4], np.asarray(rand.entity[...])[4])  # fallback row = the random init
    assert np.isclose(np.delete(table, 4, 0).std(), 0.1, rtol=1e-4)
    with pytest.warns(DataWarning):
        info_l = apply_entity_init(learned, texts, EntityInitConfig(kind="text", projection="learned", scale=0.1),
                                   encoder=FakeEncoder())
    # the learned map's text table is frozen (rebuilt at load): it is fingerprinted; the PCA table is a parameter
    assert "table_fingerprint" in info_l and "table_fingerprint" not in info
    assert isinstance(learned.entity, ProjectedEntityTable)
    assert np.allclose(learned.entity.table(), table, atol=1e-6)
    h, r, t = jnp.array([0, 4, 7]), jnp.array([0, 3, 1]), jnp.arange(20)
    assert np.allclose(learned.score_candidates(h, r, t), pca.score_candidates(h, r, t), atol=1e-5)


def test_learned_projection_gradients_reach_the_map_and_unseen_entities() -> None:
    model = _model()
    apply_entity_init(model, _texts(20), EntityInitConfig(kind="text", projection="learned", scale=0.1), encoder=FakeEncoder())
    h, r, t = jnp.array([0, 1, 2]), jnp.array([0, 1, 2]), jnp.array([[5], [6], [7]])

    def loss(m):
        return -jnp.sum(m.score_rows(m.query(h, r), t))

    grads = nnx.grad(loss)(model)
    g_proj, g_res = np.asarray(grads["entity"]["proj"][...]), np.asarray(grads["entity"]["residual"][...])
    assert np.abs(g_proj).sum() > 0 and np.isfinite(g_proj).all()
    used = np.zeros(20, bool)
    used[[0, 1, 2, 5, 6, 7]] = True
    assert np.abs(g_res[used]).sum() > 0 and not g_res[~used].any()
    # one SGD step on the map moves entity 19, which no triple touched
    before = np.asarray(model.entity.rows(jnp.array([19])))
    model.entity.proj[...] = model.entity.proj[...] - 0.1 * grads["entity"]["proj"][...]
    assert not np.allclose(model.entity.rows(jnp.array([19])), before)
    assert "text" not in nnx.state(model, nnx.Param)["entity"]  # the text features are not trained


def test_murp_ball_params_gets_points_on_the_ball() -> None:
    model = _model("murp", k=-1.0, ball_params=True)
    rand = np.asarray(st.logmap0(model.entity[...], k=-1.0))
    texts = _texts(20)
    texts[0] = None
    with pytest.warns(DataWarning):
        apply_entity_init(model, texts, EntityInitConfig(kind="text", scale=0.3), encoder=FakeEncoder())
    pts = np.asarray(model.entity[...])
    assert np.all(np.linalg.norm(pts, axis=1) < 1.0)
    tangent = np.asarray(st.logmap0(jnp.asarray(pts), k=-1.0))
    assert np.isclose(tangent[1:].std(), 0.3, rtol=1e-3) and np.allclose(tangent[0], rand[0], atol=1e-6)


def test_bad_inputs_raise_clear_errors() -> None:
    enc = FakeEncoder()
    with pytest.raises(ValueError, match="entity2text"):
        apply_entity_init(_model(), None, EntityInitConfig(kind="text"), encoder=enc)
    with pytest.raises(ValueError, match="19 entity texts"):
        apply_entity_init(_model(), _texts(19), EntityInitConfig(kind="text"), encoder=enc)
    with pytest.raises(ValueError, match="ball"):
        apply_entity_init(_model("murp", ball_params=True), _texts(20), EntityInitConfig(kind="text", projection="learned"), encoder=enc)


def test_cat_reads_the_learned_table() -> None:
    """CAT-KG reads entities through entity_rows, so the learned text map drives its scores."""
    cat = build_model("cat", 20, 2, seed=0, dim=8)
    h, r = jnp.arange(4), jnp.zeros(4, jnp.int32)
    before = np.asarray(cat.score_candidates(h, r, jnp.arange(20)))
    apply_entity_init(cat, _texts(20), EntityInitConfig(kind="text", projection="learned"), encoder=FakeEncoder())
    after = np.asarray(cat.score_candidates(h, r, jnp.arange(20)))
    assert after.shape == (4, 20) and np.all(np.isfinite(after))
    assert not np.allclose(before, after)


def test_config_block_and_text_configs_load() -> None:
    cfg = load_config(REPO / "configs/kg/tiny.yaml", KGConfig, ["init={kind: text, projection: learned, scale: 0.05}"])
    assert cfg.init == EntityInitConfig(kind="text", projection="learned", scale=0.05)
    assert load_config(REPO / "configs/kg/tiny.yaml", KGConfig).init.kind == "random"  # default: unchanged
    with pytest.raises(ConfigError, match="init.projecton"):
        load_config(REPO / "configs/kg/tiny.yaml", KGConfig, ["init.projecton=pca"])
    with pytest.raises(ConfigError, match="init.kind"):
        load_config(REPO / "configs/kg/tiny.yaml", KGConfig, ["init.kind=spectral"])
    shipped = sorted((REPO / "configs/kg").glob("*text*.yaml"))
    assert shipped
    for path in shipped:
        init = load_config(path, KGConfig).init
        assert init.kind == "text" or (init.kind == "graph" and init.checkpoint), path


# ------------------------------------------------------------ training ---


def _train(ds, kind: str, projection: str = "pca", epochs: int = 12):
    cfg = load_config(REPO / "configs/kg/tiny.yaml", KGConfig, [
        "model={name: atth, kwargs: {dim: 8, init_size: 0.01}}", f"train.epochs={epochs}", "train.valid_every=4",
        "loss={name: neg_sampling, num_negatives: 8, double_neg: false}",
        f"init={{kind: {kind}, projection: {projection}, scale: 0.1}}",
    ])
    return train_kg(cfg, dataset=ds, progress=False, text_encoder=FakeEncoder())


@pytest.mark.slow
def test_text_init_helps_entities_unseen_in_training(text_kg) -> None:
    assert text_kg.meta["num_unseen_entities"]["test"] == 2 * CLUSTERS
    rand = _train(text_kg, "random")
    pca = _train(text_kg, "text", "pca")
    learned = _train(text_kg, "text", "learned")
    assert rand["entity_init"] == {"kind": "random"} and learned["entity_init"]["projection"] == "learned"
    r, p, lrn = (res["test"]["unseen"]["mrr"] for res in (rand, pca, learned))
    assert rand["test"]["num_queries_with_unseen_entity"] == 4 * CLUSTERS
    assert p > r + 0.1 and lrn > r + 0.1, (r, p, lrn)


@pytest.mark.slow
def test_text_init_run_is_deterministic_and_falls_back_for_missing_ids(tmp_path: Path) -> None:
    folder = write_text_kg(tmp_path / "kg", drop_text=("m0_8", "hub3"))
    with pytest.warns(DataWarning, match="2 of"):
        ds = load_kg(folder)
    with pytest.warns(DataWarning, match="entity text init: 2 of"):
        a = _train(ds, "text", "learned", epochs=1)
    with pytest.warns(DataWarning):
        b = _train(ds, "text", "learned", epochs=1)
    assert a["test"]["mrr"] == b["test"]["mrr"] and a["entity_init"]["num_random_fallback"] == 2
    plain = count_params(build_model("atth", ds.num_entities, ds.num_relations, dim=8, init_size=0.01))
    assert a["num_params"] == plain + TEXT_DIM * 8  # the map W; the residual replaces the entity table


def test_precomputed_embeddings_file_equals_encoder_path(tmp_path) -> None:
    texts = _texts(20)
    texts[4] = None
    with pytest.warns(DataWarning, match="1 of 20"):
        emb, _ = encode_entity_texts(texts, FakeEncoder())
    path = tmp_path / "ent.npy"
    np.save(path, np.where(np.arange(20)[:, None] == 4, 7.0, emb).astype(np.float16))  # a junk row for the text-less entity
    from_encoder, from_file = _model(), _model()
    with pytest.warns(DataWarning, match="1 of 20"):
        apply_entity_init(from_encoder, texts, EntityInitConfig(kind="text", scale=0.1), encoder=FakeEncoder())
    with pytest.warns(DataWarning, match="1 of 20"):
        info = apply_entity_init(from_file, texts, EntityInitConfig(kind="text", scale=0.1, embeddings=str(path)), encoder=None)
    assert info["encoder"].startswith("precomputed") and info["num_random_fallback"] == 1
    assert np.allclose(from_file.entity[...], from_encoder.entity[...], atol=2e-3)  # float16 file
    np.save(path, emb[:19])
    with pytest.raises(ValueError, match=r"ent.npy has shape \(19, "):
        apply_entity_init(_model(), texts, EntityInitConfig(kind="text", embeddings=str(path)))
    (tmp_path / "bad.npy").write_text("not numpy")
    with pytest.raises(ValueError, match="cannot read .*bad.npy"):
        apply_entity_init(_model(), texts, EntityInitConfig(kind="text", embeddings=str(tmp_path / "bad.npy")))


def test_graph_init_from_a_pretrained_graphglue_run(tmp_path) -> None:
    """init.kind: graph runs the frozen pretrained backbone over the entity graph: the table is
    finite, scaled, responds to the graph (not only the texts), and bad use is refused."""
    from geofm.pretrain import PretrainConfig, pretrain

    run = tmp_path / "pre"
    pretrain(load_config(REPO / "configs" / "test" / "tiny.yaml", PretrainConfig, ["train.epochs=1"]), run, progress=False)
    texts = _texts(20)
    ring = np.array([[i, 0, (i + 1) % 15] for i in range(15)])  # entities 15..19: unseen in training
    star = np.array([[0, 1, i] for i in range(1, 15)])
    cfg = EntityInitConfig(kind="graph", projection="learned", scale=0.1, checkpoint=str(run))
    a, b = _model(), _model()
    info = apply_entity_init(a, texts, cfg, encoder=FakeEncoder(), triples=ring, name="toy")
    apply_entity_init(b, texts, cfg, encoder=FakeEncoder(), triples=star, name="toy")
    assert info["kind"] == "graph" and info["graph_dim"] == 16 and info["text_dim"] == TEXT_DIM
    ta, tb = np.asarray(a.entity.table()), np.asarray(b.entity.table())
    assert np.isfinite(ta).all() and np.isclose(ta.std(), 0.1, rtol=0.2)
    assert not np.allclose(ta[:15], tb[:15], atol=1e-4)  # same texts, different graph -> different init
    with pytest.raises(ValueError, match="init.checkpoint"):
        apply_entity_init(_model(), texts, dataclasses.replace(cfg, checkpoint=None), encoder=FakeEncoder(), triples=ring)
    # a frozen-embedding model (kg.models.TextKG) takes the backbone outputs themselves as its input table
    from geofm.kg.init import graph_entity_embeddings

    text_model = build_model("text", 20, 2, dim=8, hidden=8, text_dim=16)
    info = apply_entity_init(text_model, texts, cfg, encoder=FakeEncoder(), triples=ring, name="toy")
    emb, _ = encode_entity_texts(texts, FakeEncoder())
    want = graph_entity_embeddings(run, ring, emb, name="toy")
    assert info["kind"] == "graph" and info["graph_dim"] == 16 and info["projection"].startswith("none")
    np.testing.assert_allclose(np.asarray(text_model.text[...]), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="width of the text encoder, or of the pretrained backbone"):
        apply_entity_init(build_model("text", 20, 2, dim=8), texts, cfg, encoder=FakeEncoder(), triples=ring)  # text_dim 384
