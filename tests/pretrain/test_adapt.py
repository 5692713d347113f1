"""Few-shot adaptation (geofm.adapt): splits, cached frozen features, head, label propagation,
self-training picks, the prompt prior and the end-to-end protocol on a tiny model."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from geofm import adapt
from geofm.glue import GlueConfig, GlueModel
from geofm.pretrain import AdaptConfig, DataConfig, load_domain

from flax import nnx


def _glue(dim: int = 8, m: int = 2, domains: int = 2) -> GlueModel:
    return GlueModel(GlueConfig(dim=dim, num_generators=m, att_dim=8, max_nodes=8), in_dim=6, num_domains=domains,
                     rngs=nnx.Rngs(0))


def _two_blobs(n_per: int = 40, f_dim: int = 6, seed: int = 0):
    """Two classes, informative skip features, a graph of two disconnected cliques-ish rings."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n_per).astype(np.int32)
    centres = np.eye(f_dim, dtype=np.float32)[:2] * 5.0
    skip = centres[labels] + rng.normal(size=(2 * n_per, f_dim)).astype(np.float32)
    skip /= np.linalg.norm(skip, axis=1, keepdims=True)
    n = 2 * n_per
    ring = np.arange(n)
    nxt = np.where(ring % n_per == n_per - 1, ring - (n_per - 1), ring + 1)  # a ring per class
    adj = sp.csr_matrix((np.ones(n), (ring, nxt)), shape=(n, n))
    adj = adj + adj.T + sp.eye(n)
    d = np.asarray(adj.sum(1)).ravel() ** -0.5
    adj = (sp.diags(d) @ adj @ sp.diags(d)).tocsr().astype(np.float32)
    z = rng.normal(size=(n, 8)).astype(np.float32)
    V = rng.normal(size=(n, 2, 8)).astype(np.float32)
    feats = adapt.TargetFeatures(z=z, V=V, lg_mu=0.0, lg_sd=1.0, skip=skip, prior=np.zeros((f_dim, 2), np.float32),
                                 adj=adj)
    return feats, labels, centres


ACFG = AdaptConfig(shots=[2], splits=2, epochs=60, eval_every=10, patience=3, lr=0.05, glue_weight=0.1)


def test_kshot_splits_disjoint_and_sized():
    labels = np.repeat(np.arange(4), 25).astype(np.int32)
    labels[:3] = -1
    for sp_ in adapt.kshot_splits(labels, 3, splits=3, val_fraction=0.2, seed=1, max_test=40):
        tr, va, te = sp_["train"], sp_["valid"], sp_["test"]
        assert np.bincount(labels[tr], minlength=4).tolist() == [3, 3, 3, 3]
        assert not (set(tr) & set(va)) and not (set(tr) & set(te)) and not (set(va) & set(te))
        assert np.all(labels[np.concatenate([tr, va, te])] >= 0)
        assert va.size == round(0.2 * (97 - 12)) and te.size == 40
    a = adapt.kshot_splits(labels, 1, splits=2, val_fraction=0.1, seed=0)
    b = adapt.kshot_splits(labels, 1, splits=2, val_fraction=0.1, seed=0)
    assert all(np.array_equal(x["test"], y["test"]) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="labelled nodes of at least 2 classes"):
        adapt.kshot_splits(np.zeros(5, np.int32), 1, splits=1, val_fraction=0.1, seed=0)


def test_label_propagation_clamps_and_smooths():
    feats, labels, _ = _two_blobs()
    probs = np.full((labels.size, 2), 0.5, np.float32)
    probs[5] = [0.1, 0.9]  # a wrong, confident node inside class 0's ring
    train = np.array([0, 40])
    y0 = adapt.label_propagation(probs, feats.adj, train, labels, alpha=0.0)
    np.testing.assert_array_equal(y0[train], np.eye(2)[labels[train]])
    np.testing.assert_array_equal(y0[5], probs[5])
    y = adapt.label_propagation(probs, feats.adj, train, labels, alpha=0.9, iters=30)
    assert y[1, 0] > y[1, 1] and y[41, 1] > y[41, 0]  # neighbours of the clamped nodes follow them
    assert y[5, 1] - y[5, 0] < probs[5, 1] - probs[5, 0]  # the outlier is pulled toward its ring


def test_pseudo_labels_respect_exclusion_and_argmax():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.45, 0.55], [0.99, 0.01]], np.float32)
    ids, labs = adapt.pseudo_labels(probs, exclude=np.array([4]), per_class=1)
    assert ids.tolist() == [0, 2] and labs.tolist() == [0, 1]
    ids, labs = adapt.pseudo_labels(probs, exclude=np.array([], np.int64), per_class=5)
    assert sorted(ids.tolist()) == [0, 1, 2, 3, 4] and np.all(np.argmax(probs[ids], 1) == labs)


def test_adapter_spec_and_restrict():
    with pytest.raises(ValueError, match="backbone / text_skip"):
        adapt.AdapterSpec(backbone=False, text_skip=False)
    with pytest.raises(ValueError, match="label_prop"):
        adapt.AdapterSpec(label_prop=(1.0,))
    feats, _, _ = _two_blobs()
    feats = feats._replace(prior=np.ones_like(feats.prior))
    r = adapt.restrict(feats, adapt.AdapterSpec(backbone=False))
    assert not r.z.any() and not r.V.any() and r.skip is feats.skip
    r = adapt.restrict(feats, adapt.AdapterSpec(text_skip=False))
    assert r.skip.shape == (feats.z.shape[0], 1) and not r.skip.any() and r.z is feats.z
    assert not adapt.restrict(feats, adapt.AdapterSpec(prompt_prior=False)).prior.any()


def test_head_learns_from_whichever_part_is_informative():
    feats, labels, _ = _two_blobs()
    base = adapt.AdapterSpec(weight_decays=(1e-2,), label_prop=(0.0,), self_train=0)
    text = adapt.run_kshot(_glue(), feats, labels, ACFG, dataclasses.replace(base, backbone=False), seed=0)
    assert text["2"]["mean"] > 90.0, text
    # backbone part alone: noise features stay near chance, class-informative ones are learned
    only_bb = dataclasses.replace(base, text_skip=False)
    noise = adapt.run_kshot(_glue(), feats, labels, ACFG, only_bb, seed=0)
    z = feats.z.copy()
    z[:, 0] += np.where(labels == 0, -4.0, 4.0)
    signal = adapt.run_kshot(_glue(), feats._replace(z=z), labels, ACFG, only_bb, seed=0)
    assert noise["2"]["mean"] < 75.0 and signal["2"]["mean"] > 90.0, (noise, signal)


def test_prompt_prior_is_a_zero_shot_classifier():
    """With 0 epochs the head IS the class-prompt prior: accuracy comes from the prior alone."""
    feats, labels, centres = _two_blobs()
    prior = (centres / np.linalg.norm(centres, axis=1, keepdims=True)).T  # [F, C] class directions
    spec = adapt.AdapterSpec(backbone=False, label_prop=(0.0,), self_train=0)
    acfg = dataclasses.replace(ACFG, epochs=0)
    split = adapt.kshot_splits(labels, 1, splits=1, val_fraction=0.2, seed=0)[0]
    with_prior = adapt.adapt_split(_glue(), feats._replace(prior=prior), labels, split, acfg, spec, seed=0)
    without = adapt.adapt_split(_glue(), feats, labels, split, acfg, spec, seed=0)
    assert with_prior["test_acc"] > 0.9 and without["test_acc"] < 0.75


def test_late_fusion_and_text_fallback_candidates():
    """Text skip = noise, backbone z = signal: the joint/fusion candidates must pick up the
    backbone and beat the text-only head; every selected candidate is reported."""
    feats, labels, _ = _two_blobs()
    rng = np.random.default_rng(3)
    noise = rng.normal(size=feats.skip.shape).astype(np.float32)
    z = feats.z.copy()
    z[:, 0] += np.where(labels == 0, -4.0, 4.0)
    f = feats._replace(z=z, skip=noise / np.linalg.norm(noise, axis=1, keepdims=True))
    base = adapt.AdapterSpec(weight_decays=(1e-2,), label_prop=(0.0,), self_train=0)
    text = adapt.run_kshot(_glue(), f, labels, ACFG, dataclasses.replace(base, backbone=False), seed=0)
    fused = adapt.run_kshot(_glue(), f, labels, ACFG, dataclasses.replace(base, fusion=(0.0, 0.5, 1.0),
                                                                           text_fallback=True), seed=0)
    assert fused["2"]["mean"] > 90.0 > text["2"]["mean"] + 10, (fused, text)
    for r in fused["2"]["splits"]:
        assert r["backbone"] is True and (r.get("fusion", 1.0) > 0.0)
    with pytest.raises(ValueError, match="fusion"):
        adapt.AdapterSpec(fusion=(1.5,))


def test_embed_frozen_shapes_and_determinism():
    cfg = DataConfig(datasets=["synthetic-tree"], inputs="structural", in_dim=6,
                     synthetic={"synthetic-tree": {"branching": 2, "depth": 4}})
    dom = load_domain("synthetic-tree", cfg, seed=0, max_nodes=8)
    model = _glue(domains=1)
    z, V = adapt.embed_frozen(model, dom, batch_size=16)
    assert z.shape == (dom.num_nodes, 8) and V.shape == (dom.num_nodes, 2, 8)
    assert np.all(np.isfinite(z)) and np.all(np.isfinite(V))
    z2, _ = adapt.embed_frozen(model, dom, batch_size=16)
    np.testing.assert_array_equal(z, z2)
    f = adapt.target_features(model, dom, adapt.AdapterSpec())
    assert f.skip.shape[0] == dom.num_nodes and not f.prior.any()  # structural inputs: no prompt prior
    np.testing.assert_allclose(np.linalg.norm(f.skip, axis=1), 1.0, atol=1e-5)
    assert 1.0 <= adapt.effective_rank(f.z) <= 8.0
    assert f.dec is None and f.dec_prior is None  # no texts: no decoder prior


def _path_propagation(n: int) -> np.ndarray:
    """Dense D^-1/2 (A + I) D^-1/2 of the path graph 0-1-...-(n-1), built by hand."""
    a = np.eye(n) + np.eye(n, k=1) + np.eye(n, k=-1)
    d = a.sum(1) ** -0.5
    return d[:, None] * a * d[None, :]


def test_decoder_features_map_prompts_like_the_node_inputs():
    """dec = unit rows of S^hops (z D) with D the model's decoder (S of a path graph, so every
    hop changes the rows' directions); the prompts go through the same column z-score (target
    text statistics) and fixed projection as the node texts (= geofm.features.project_features)."""
    from geofm.features import project_features

    rng = np.random.default_rng(0)
    model = _glue()
    n = 10
    raw = rng.normal(2.0, 3.0, size=(n, 9)).astype(np.float32)
    prompts = rng.normal(size=(3, 9)).astype(np.float32)
    x, proj = project_features(raw, 6, seed=3)  # non-identity projection 9 -> 6 (model in_dim 6)
    np.testing.assert_allclose(adapt._like_inputs(raw, raw, proj), x, atol=1e-5)  # the node inputs' map
    z = rng.normal(size=(n, 8)).astype(np.float32)
    path = np.stack([np.arange(n - 1), np.arange(1, n)])
    dec, prior = adapt.decoder_features(model, z, (raw, prompts), proj, adapt._propagation_matrix(path, n), hops=2)
    d = z @ np.asarray(model.decoder.kernel[...])

    def unit(v):
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    s = _path_propagation(n)
    np.testing.assert_allclose(dec, unit(s @ s @ d), atol=1e-5)
    for wrong in (d, s @ d, s @ s @ s @ d):  # 0, 1 or 3 hops give other directions
        assert np.abs(dec - unit(wrong)).max() > 1e-2
    want = ((prompts - raw.mean(0)) / raw.std(0)) @ proj
    np.testing.assert_allclose(prior, unit(want).T, atol=1e-5)
    assert dec.shape == (n, 6) and prior.shape == (6, 3)


def test_decoder_prior_is_a_zero_shot_classifier_on_the_backbone_side():
    """Text skip off, 0 epochs: with the decoder prior the backbone-only head classifies from the
    decoded features alone; restrict() drops the decoder part unless the spec asks for it."""
    feats, labels, centres = _two_blobs()
    rng = np.random.default_rng(5)
    dec = centres[labels] + rng.normal(size=(labels.size, centres.shape[1])).astype(np.float32)
    dec /= np.linalg.norm(dec, axis=1, keepdims=True)
    prior = (centres / np.linalg.norm(centres, axis=1, keepdims=True)).T
    f = feats._replace(dec=dec, dec_prior=prior)
    spec = adapt.AdapterSpec(text_skip=False, label_prop=(0.0,), self_train=0, weight_decays=(1e-2,),
                             decoder_prior=True)
    acfg = dataclasses.replace(ACFG, epochs=0)
    split = adapt.kshot_splits(labels, 1, splits=1, val_fraction=0.2, seed=0)[0]
    off = dataclasses.replace(spec, decoder_prior=False)
    with_prior = adapt.adapt_split(_glue(), adapt.restrict(f, spec), labels, split, acfg, spec, seed=0)
    without = adapt.adapt_split(_glue(), adapt.restrict(f, off), labels, split, acfg, off, seed=0)
    assert with_prior["test_acc"] > 0.9 and without["test_acc"] < 0.75, (with_prior, without)
    assert adapt.restrict(f, spec).dec is dec
    for off in (dataclasses.replace(spec, decoder_prior=False), adapt.AdapterSpec(backbone=False)):
        assert adapt.restrict(f, off).dec is None and adapt.restrict(f, off).dec_prior is None
    for bad in ({"backbone": False}, {"prompt_prior": False}):  # a decoder prior without its parts: refused
        with pytest.raises(ValueError, match="decoder_prior needs backbone=True and prompt_prior=True"):
            adapt.AdapterSpec(decoder_prior=True, **bad)


def test_decoder_prior_refused_on_structural_inputs():
    """No texts, no class prompts: asking for the decoder prior raises, naming the dataset."""
    cfg = DataConfig(datasets=["synthetic-tree"], inputs="structural", in_dim=6,
                     synthetic={"synthetic-tree": {"branching": 2, "depth": 3}})
    dom = load_domain("synthetic-tree", cfg, seed=0, max_nodes=8)
    for name in ("backbone_prompt", "backbone_full"):
        with pytest.raises(ValueError, match=r"'synthetic-tree'.*'structural', not text"):
            adapt.target_features(_glue(domains=1), dom, adapt.VARIANTS[name])


def test_variants_table():
    """One table for the CLI and the bench: the README columns' specs."""
    v = adapt.VARIANTS
    assert set(v) == {"graphglue_head", "full", "text_only", "backbone_prompt", "backbone_full"}
    assert v["full"].weight_decays == (1e-1, 1.0) and v["full"].backbone and v["full"].text_skip
    assert v["backbone_prompt"] == dataclasses.replace(v["graphglue_head"], decoder_prior=True)
    assert v["backbone_full"] == dataclasses.replace(v["backbone_prompt"], label_prop=adapt.AdapterSpec().label_prop,
                                                     self_train=adapt.AdapterSpec().self_train)
    assert not v["text_only"].backbone


# ----------------------------------------------------------------------------- text targets (decoder prior)

TOPICS = {"geometry": ["hyperbolic embeddings of trees", "curvature of negatively curved spaces",
                       "geodesics on the Poincare ball", "tree-like graphs in hyperbolic space"],
          "biology": ["protein folding in living cells", "gene expression in bacteria",
                      "enzymes that catalyse metabolism", "DNA repair during cell division"]}


def _write_text_graph(root: Path, n_per: int = 12) -> Path:
    """A tiny text-attributed graph (TAG format): two topics, a ring of papers per topic."""
    root.mkdir(parents=True, exist_ok=True)
    nodes, edges = [], []
    for c, (name, texts) in enumerate(TOPICS.items()):
        for i in range(n_per):
            nodes.append({"id": len(nodes), "text": f"A paper on {texts[i % len(texts)]}, part {i}.", "label": c})
            edges.append((c * n_per + i, c * n_per + (i + 1) % n_per))
    (root / "nodes.jsonl").write_text("".join(json.dumps(x) + "\n" for x in nodes))
    (root / "edges.tsv").write_text("src\tdst\n" + "".join(f"{a}\t{b}\n" for a, b in edges))
    (root / "labels.json").write_text(json.dumps([{"id": c, "name": name, "description": f"papers about {name}"}
                                                  for c, name in enumerate(TOPICS)]))
    return root


@pytest.fixture(scope="module")
def text_data(tmp_path_factory, default_text_model) -> Path:
    """A data folder with two tiny TAGs (tag_a, tag_b); the embedding cache goes to a temp folder.
    The decoder prior needs the packaged text encoder."""
    root = tmp_path_factory.mktemp("tags")
    for name in ("tag_a", "tag_b"):
        _write_text_graph(root / name)
    mp = pytest.MonkeyPatch()
    mp.setenv("GEOFM_CACHE", str(root / "cache"))
    yield root
    mp.undo()


def test_decoder_prior_without_text_skip_loads_the_texts(text_data: Path):
    """AdapterSpec(text_skip=False, decoder_prior=True) on a text target: the texts are loaded for
    the decoder prior alone (the backbone_prompt / backbone_full variants are not inert)."""
    cfg = DataConfig(datasets=["tag_b"], data_dir=str(text_data), inputs="text", in_dim=6)
    dom = load_domain("tag_b", cfg, seed=0, max_nodes=8)
    model = _glue()
    f = adapt.target_features(model, dom, adapt.AdapterSpec(text_skip=False, decoder_prior=True),
                              data_dir=str(text_data))
    assert f.dec is not None and f.dec.shape == (dom.num_nodes, 6) and f.dec_prior.shape == (6, 2)
    assert not f.skip.any() and f.skip.shape == (dom.num_nodes, 1)  # still no text skip
    np.testing.assert_allclose(np.linalg.norm(f.dec_prior, axis=0), 1.0, atol=1e-5)
    full = adapt.target_features(model, dom, adapt.AdapterSpec(), data_dir=str(text_data))
    np.testing.assert_array_equal(f.dec, full.dec)  # the same decoder features as the bench's shared call
    np.testing.assert_array_equal(f.dec_prior, full.dec_prior)
    assert adapt.target_features(model, dom, adapt.AdapterSpec(text_skip=False), data_dir=str(text_data)).dec is None


@pytest.mark.slow
def test_cli_decoder_prior_variants(text_data: Path, tmp_path: Path, capsys):
    """`geofm adapt RUN --variant backbone_prompt --json`: the decoder prior is used on a text
    target (by name, or by folder under another --data-dir), the result is saved in the run
    folder; refused (exit 2, dataset named, nothing written) on a structural one."""
    from geofm.cli import main as cli
    from geofm.commands.adapt import main
    from geofm.config import load_config
    from geofm.pretrain import PretrainConfig, pretrain

    tiny = Path(__file__).resolve().parents[2] / "configs" / "test" / "tiny.yaml"
    common = ["train.epochs=1", "train.local_steps=2", "train.global_steps=1", "train.refine_steps=1",
              "train.checkpoint_every=2"]
    text_cfg = load_config(tiny, PretrainConfig, common + [
        "data.datasets=[tag_a]", f"data.data_dir={text_data}", "data.inputs=text", "data.in_dim=8",
        "adapt.target=tag_b"])
    pretrain(text_cfg, tmp_path / "text", progress=False)
    argv = ["--variant", "backbone_prompt", "--shots", "1", "--splits", "1", "--epochs", "5", "--json"]
    capsys.readouterr()
    assert cli(["adapt", str(tmp_path / "text")] + argv) == 0
    out = json.loads(capsys.readouterr().out)  # stdout is the JSON object only
    saved = tmp_path / "text" / "adapt" / "tag_b-backbone_prompt.json"
    assert json.loads(saved.read_text()) == out
    assert out["target"] == "tag_b" and out["variant"] == "backbone_prompt" and out["random_init"] is None
    res = out["pretrained"]
    assert res["target"] == "tag_b" and res["spec"]["decoder_prior"] and res["decoder_prior_used"]
    assert res["spec"] == json.loads(json.dumps(dataclasses.asdict(adapt.VARIANTS["backbone_prompt"])))
    # the target as a folder outside every data folder (its texts are read from there too):
    # the same splits, the same accuracy
    moved = tmp_path / "elsewhere"
    shutil.copytree(text_data / "tag_b", moved / "tag_b")
    no_data = ["--data-dir", str(tmp_path / "text")]  # holds no dataset
    assert main([str(tmp_path / "text"), "--target", str(moved / "tag_b")] + no_data + argv) == 0
    assert json.loads(capsys.readouterr().out)["pretrained"]["shots"] == res["shots"]
    assert main([str(tmp_path / "text"), "--data-dir", str(moved)] + argv) == 0  # tag_b looked up there
    assert json.loads(capsys.readouterr().out)["pretrained"]["shots"] == res["shots"]
    assert main([str(tmp_path / "text")] + no_data + argv) == 2
    assert "adapt.target: unknown dataset 'tag_b'" in capsys.readouterr().err
    pretrain(load_config(tiny, PretrainConfig, common), tmp_path / "structural", progress=False)
    capsys.readouterr()
    assert main([str(tmp_path / "structural")] + argv) == 2
    assert "'synthetic-mixed'" in capsys.readouterr().err and not (tmp_path / "structural" / "adapt").exists()
    # bad runs and settings: exit 2 with the reason, before any adaptation, nothing created
    assert main([str(tmp_path / "nothing_here")]) == 2
    assert "no checkpoints/" in capsys.readouterr().err and not (tmp_path / "nothing_here").exists()
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    assert main([str(tmp_path / "empty")]) == 2 and "no checkpoint" in capsys.readouterr().err
    from geofm.checkpoint import Checkpointer

    with Checkpointer(tmp_path / "kg_like" / "checkpoints", metadata={"config": {"loss": {"name": "bce"}}}) as ck:
        ck.save(1, {"x": np.zeros(2, np.float32)}, metrics={"valid_mrr": 0.1})
    assert main([str(tmp_path / "kg_like")]) == 2
    assert "is not a `geofm pretrain` run" in capsys.readouterr().err
    assert main([str(tmp_path / "text"), "--splits", "0"]) == 2
    assert "adapt.splits" in capsys.readouterr().err
    assert main([str(tmp_path / "text"), "--target", "no-such-target"]) == 2
    assert "adapt.target: unknown dataset 'no-such-target'" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "text" / "adapt").iterdir()) == ["tag_b-backbone_prompt.json"]


def _short_structural_run(tmp_path: Path):
    """(data folder, config): 2 steps of pretraining into tmp_path/run on tag_a (structural inputs)."""
    from geofm.config import load_config
    from geofm.pretrain import PretrainConfig, pretrain

    data = tmp_path / "data"
    _write_text_graph(data / "tag_a")
    tiny = Path(__file__).resolve().parents[2] / "configs" / "test" / "tiny.yaml"
    cfg = load_config(tiny, PretrainConfig, ["train.epochs=1", "train.local_steps=2", "train.global_steps=1",
                                             "train.refine_steps=1", "data.datasets=[tag_a]", f"data.data_dir={data}",
                                             "data.inputs=structural"])
    pretrain(cfg, tmp_path / "run", progress=False, stop_after=2)
    return data, cfg


def test_pretrain_resume_refuses_changed_dataset_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The dataset files are compared by checksum on resume (the computed inputs here, structural
    features of an unchanged graph, hash the same: only the file check can tell)."""
    from geofm.checkpoint import CheckpointError
    from geofm.pretrain import pretrain

    monkeypatch.setenv("GEOFM_CACHE", str(tmp_path / "cache"))
    data, cfg = _short_structural_run(tmp_path)
    nodes = data / "tag_a" / "nodes.jsonl"
    nodes.write_text(nodes.read_text().replace("part 0.", "part zero."))
    with pytest.raises(CheckpointError, match=r"cannot resume .*: the data differ \(checksums \{tag_a: "):
        pretrain(cfg, tmp_path / "run", progress=False)


def test_pretraining_refuses_two_datasets_with_one_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Domains are keyed by name: two folders named alike, or a dataset listed by name and by
    path, are refused before any training (they used to share one domain's batches)."""
    from geofm.config import load_config
    from geofm.pretrain import PretrainConfig, load_domains

    monkeypatch.setenv("GEOFM_CACHE", str(tmp_path / "cache"))
    a = _write_text_graph(tmp_path / "one" / "tag_a")
    b = _write_text_graph(tmp_path / "two" / "tag_a", n_per=10)
    tiny = Path(__file__).resolve().parents[2] / "configs" / "test" / "tiny.yaml"
    for datasets in ([str(a), str(b)], ["tag_a", str(a)]):
        cfg = load_config(tiny, PretrainConfig, [f"data.datasets={json.dumps(datasets)}",
                                                 f"data.data_dir={tmp_path / 'one'}", "data.inputs=structural"])
        with pytest.raises(ValueError, match="are both datasets named 'tag_a'"):
            load_domains(cfg)


def test_plot_reloads_the_runs_own_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    """`geofm plot RUN --data-dir DIR`: the embedding view finds moved data; a dataset whose files
    differ from those recorded in run.json is refused (it used to be plotted silently)."""
    from geofm.cli import main

    monkeypatch.setenv("GEOFM_CACHE", str(tmp_path / "cache"))
    data, _ = _short_structural_run(tmp_path)
    shutil.move(str(data), tmp_path / "moved")
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "p"), "--quiet"]) == 2
    assert "data dir" in capsys.readouterr().err  # the recorded folder is gone: one line, no traceback
    assert main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "p"), "--data-dir", str(tmp_path / "moved"),
                 "--quiet"]) == 0
    assert (tmp_path / "p" / "embeddings.png").read_bytes()[:4] == b"\x89PNG"
    nodes = tmp_path / "moved" / "tag_a" / "nodes.jsonl"
    nodes.write_text(nodes.read_text().replace("part 0.", "part zero."))
    assert main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "q"), "--data-dir", str(tmp_path / "moved"),
                 "--quiet"]) == 2
    assert "has other files than the run was pretrained on" in capsys.readouterr().err


def test_adapt_predict_classifies_the_unlabelled_nodes_of_a_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys):
    """`geofm adapt RUN --target FOLDER --predict`: fitted on every labelled node (a share held
    out for selection), every node's class written; protocol flags and label-free targets refused."""
    from geofm.cli import main

    monkeypatch.setenv("GEOFM_CACHE", str(tmp_path / "cache"))
    data, _ = _short_structural_run(tmp_path)
    mine = tmp_path / "mine"
    shutil.copytree(data / "tag_a", mine)
    rows = [json.loads(l) for l in (mine / "nodes.jsonl").read_text().splitlines()]
    hidden = {r["id"] for r in rows if r["id"] % 3 == 0}
    (mine / "nodes.jsonl").write_text("".join(json.dumps({**r, "label": None if r["id"] in hidden else r["label"]})
                                              + "\n" for r in rows))
    run = str(tmp_path / "run")
    capsys.readouterr()
    fast = ["--epochs", "10", "--variant", "graphglue_head"]  # the default `full` adapter compiles ~4x more heads
    assert main(["adapt", run, "--target", str(mine), "--predict", *fast, "--json", "--quiet"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["target"] == "mine" and rec["train_nodes"] + rec["valid_nodes"] == len(rows) - len(hidden)
    assert 0.0 <= rec["valid_acc"] <= 1.0 and sum(rec["predicted_counts"].values()) == len(rows)
    tsv = [r.split("\t") for r in Path(rec["predictions"]).read_text().splitlines()]
    assert tsv[0] == ["id", "class", "class_name", "probability", "labelled"] and len(tsv) == len(rows) + 1
    assert {int(r[0]) for r in tsv[1:] if r[4] == "0"} == hidden
    names = json.loads((mine / "labels.json").read_text())
    assert all(r[2] == names[int(r[1])]["name"] and 0.0 <= float(r[3]) <= 1.0 for r in tsv[1:])
    saved = json.loads((tmp_path / "run" / "adapt" / "mine-graphglue_head.predict.json").read_text())
    assert saved["valid_acc"] == rec["valid_acc"]
    # --json PATH (the form `python -m finetune.adapt` took before): written there, the summary printed
    assert main(["adapt", run, "--target", str(mine), "--predict", *fast, "--json", str(tmp_path / "p.json")]) == 0
    assert "validation accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "p.json").read_text())["predicted_counts"] == rec["predicted_counts"]
    assert main(["adapt", run, "--target", str(mine), "--predict", "--shots", "1"]) == 2
    assert "--shots belong to the k-shot protocol" in capsys.readouterr().err
    (mine / "nodes.jsonl").write_text("".join(json.dumps({**r, "label": None}) + "\n" for r in rows))
    assert main(["adapt", run, "--target", str(mine), "--predict", "--epochs", "5", "--quiet"]) == 2
    assert "labelled nodes of at least 2 classes" in capsys.readouterr().err


def test_max_domain_nodes_cuts_pretraining_domains_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from geofm.config import load_config
    from geofm.pretrain import PretrainConfig, load_domains

    monkeypatch.setenv("GEOFM_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    _write_text_graph(data / "tag_a")  # 24 nodes
    tiny = Path(__file__).resolve().parents[2] / "configs" / "test" / "tiny.yaml"
    base = ["data.datasets=[tag_a]", f"data.data_dir={data}", "data.inputs=structural"]
    cfg = load_config(tiny, PretrainConfig, base + ["data.max_domain_nodes=10"])
    (dom,) = load_domains(cfg)
    assert dom.num_nodes == 10 and dom.x.shape[0] == 10 and dom.labels.shape == (10,)
    assert dom.edge_index.max() < 10 and (dom.labels >= 0).all()
    (again,) = load_domains(cfg)
    assert again.checksum == dom.checksum  # seeded: the same subgraph every time
    target = load_domain("tag_a", cfg.data, seed=cfg.seed, max_nodes=cfg.model.max_nodes)
    assert target.num_nodes == 24  # an adaptation target is never cut
    with pytest.raises(ValueError, match="max_domain_nodes' must be >= 2"):
        load_domains(load_config(tiny, PretrainConfig, base + ["data.max_domain_nodes=1"]))


def test_predict_split_holds_out_a_share_of_each_class_and_never_a_classes_last_node():
    labels = np.array([0] * 10 + [1] * 10 + [2] + [-1] * 5)
    sp = adapt.predict_split(labels, val_fraction=0.2, seed=0)
    assert np.bincount(labels[sp["valid"]], minlength=3).tolist() == [2, 2, 0]
    assert np.bincount(labels[sp["train"]], minlength=3).tolist() == [8, 8, 1]  # class 2's one node trains
    tiny = adapt.predict_split(np.array([0, 1, 1]), val_fraction=0.1, seed=0)  # 10 % rounds to none: one anyway
    assert labels_of(tiny, np.array([0, 1, 1])) == ([0, 1], [1])
    with pytest.raises(ValueError, match="every class here has 1"):
        adapt.predict_split(np.array([0, 1, -1]), val_fraction=0.1, seed=0)


def labels_of(split, labels):
    return sorted(labels[split["train"]].tolist()), sorted(labels[split["valid"]].tolist())
