"""The text bi-encoder KG model (kg.models.TextKG) and late fusion of runs (geofm.kg.ensemble)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from geofm.config import load_config
from geofm.data.kg import load_kg
from geofm.kg.config import EntityInitConfig, KGConfig
from geofm.kg.ensemble import fit_ensemble, load_ensemble, simplex_grid
from geofm.kg.evaluate import RankingEvaluator
from geofm.kg.init import apply_entity_init
from geofm.kg.models import build_model
from geofm.kg.train import train_kg
from .test_entity_init import CLUSTERS, TEXT_DIM, FakeEncoder, write_text_kg

REPO = Path(__file__).resolve().parents[2]
# float64: fused with a float32 member, the fusion must keep float64
STRUCT_SET = ["train.valid_every=4", "train.epochs=12", "train.dtype=float64",
              "model={name: transe, kwargs: {dim: 8, p: 2, init_size: 0.1}}",
              "loss={name: neg_sampling, num_negatives: 8, double_neg: false}"]
TEXT_MODEL = f"model={{name: text, kwargs: {{dim: 8, hidden: 16, text_dim: {TEXT_DIM}, temperature: 0.1}}}}"


@pytest.fixture(scope="module")
def text_kg(tmp_path_factory: pytest.TempPathFactory):
    return load_kg(write_text_kg(tmp_path_factory.mktemp("kg") / "text_kg"))


def _cfg(*overrides: str) -> KGConfig:
    return load_config(REPO / "configs/kg/tiny.yaml", KGConfig, ["train.valid_every=4", *overrides])


def _text_cfg(epochs: int = 12) -> KGConfig:
    return _cfg(TEXT_MODEL, "init={kind: text}", "loss={name: 1n_ce, label_smoothing: 0.1}", f"train.epochs={epochs}")


def _struct_cfg(epochs: int = 12) -> KGConfig:
    return _cfg("model={name: transe, kwargs: {dim: 8, p: 2, init_size: 0.1}}", f"train.epochs={epochs}",
                "loss={name: neg_sampling, num_negatives: 8, double_neg: false}")


# ------------------------------------------------------------- TextKG ---


def test_text_model_scores_are_consistent_and_need_the_text_table() -> None:
    m = build_model("text", 12, 2, dim=8, hidden=16, text_dim=TEXT_DIM, residual=True)
    texts = [f"member {i} of cluster {i % 3}" for i in range(12)]
    info = apply_entity_init(m, texts, EntityInitConfig(kind="text"), encoder=FakeEncoder())
    assert info["projection"].startswith("none") and info["num_with_text"] == 12
    h, r = jnp.array([0, 5, 7]), jnp.array([0, 3, 1])
    q = m.query(h, r)
    shared = m.score_shared(q, jnp.arange(12))
    rows = m.score_rows(q, jnp.tile(jnp.arange(12), (3, 1)))
    assert shared.shape == (3, 12) and np.allclose(shared, rows, atol=1e-6)
    assert np.all(np.abs(shared) <= 1 / 0.05 + 1e-4)  # cosine / temperature
    with pytest.raises(ValueError, match=r"expected \[12, 384\]"):
        build_model("text", 12, 2).set_text(np.zeros((12, TEXT_DIM)))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        build_model("text", 12, 2, temperature=0.0)


def test_text_model_refuses_to_train_without_entity_texts(text_kg) -> None:
    with pytest.raises(ValueError, match="scores entities by their text embeddings: set init.kind"):
        train_kg(_cfg(TEXT_MODEL), dataset=text_kg, progress=False)


def test_text_model_ranks_entities_unseen_in_training(text_kg) -> None:
    """Members 8, 9 of each cluster never occur in train; only their text says which hub they belong to."""
    res = train_kg(_text_cfg(), dataset=text_kg, progress=False, text_encoder=FakeEncoder())
    rnd = train_kg(_struct_cfg(), dataset=text_kg, progress=False)
    assert res["test"]["num_queries_with_unseen_entity"] == 4 * CLUSTERS
    assert res["test"]["unseen"]["mrr"] > rnd["test"]["unseen"]["mrr"] + 0.2, (res["test"]["unseen"], rnd["test"]["unseen"])


# ----------------------------------------------------------- ensemble ---


def test_simplex_grid() -> None:
    g = simplex_grid(3, 0.25)
    assert g.shape == (15, 3) and np.allclose(g.sum(1), 1) and {tuple(r) for r in g} >= {(1, 0, 0), (0, 0, 1)}
    assert simplex_grid(1, 0.5).tolist() == [[1.0]]
    for bad in (0.3, float("nan"), float("inf"), 0.0, -0.5):  # NaN once slipped through every comparison
        with pytest.raises(ValueError, match="1/n"):
            simplex_grid(2, bad)
    with pytest.raises(ValueError, match="> 2000"):
        simplex_grid(6, 0.02)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("runs")
    folder = write_text_kg(root / "text_kg")
    data = [f"data.name={json.dumps(str(folder))}"]
    struct = load_config(REPO / "configs/kg/tiny.yaml", KGConfig, [*data, *STRUCT_SET])
    text = load_config(REPO / "configs/kg/tiny.yaml", KGConfig, [*data, "train.valid_every=4", "train.epochs=12", TEXT_MODEL,
                       "init={kind: text}", "loss={name: 1n_ce, label_smoothing: 0.1}"])
    a = train_kg(struct, root / "struct", progress=False)
    b = train_kg(text, root / "text", progress=False, text_encoder=FakeEncoder())
    return root, folder, a, b


def test_ensemble_corners_reproduce_each_member_and_fusion_is_the_weighted_sum(two_runs) -> None:
    root, folder, a, b = two_runs
    ens = load_ensemble([root / "struct", root / "text"], text_encoder=FakeEncoder())
    res = fit_ensemble(ens, step=0.25, query_chunk=16, entity_chunk=32)
    # a weight corner is the member alone: its valid/test metrics are the run's own (best checkpoint)
    for member, own in zip(res["members"], (a, b)):
        assert member["valid_mrr"] == pytest.approx(own["valid"]["mrr"], abs=1e-6)
        assert member["test"]["mrr"] == pytest.approx(own["test"]["mrr"], abs=1e-6)
    valid = [g["valid_mrr"] for g in res["grid"]]
    levels = [g["refinement"] for g in res["grid"]]
    assert levels[:5] == [0] * 5 and set(levels[5:]) <= {1, 2} and res["refine"] == 2
    assert res["valid"]["mrr"] >= max(valid) - 1e-9  # each query group keeps its own best point
    assert res["num_valid_queries_unseen_head"] == CLUSTERS  # member 7 of each cluster occurs in valid only
    for g in res["grid"]:
        for key in ("weights", "weights_unseen_head"):
            assert min(g[key]) >= 0 and sum(g[key]) == pytest.approx(1.0)
    # ranking several weight vectors per pass (the default 8: the 5 grid points in one padded pass)
    # finds exactly what one vector per pass finds
    per_point = fit_ensemble(ens, step=0.25, query_chunk=16, entity_chunk=32, batch=1)
    for key in ("weights", "weights_unseen_head"):
        assert per_point[key] == res[key]
    assert [g["valid_mrr"] for g in per_point["grid"]] == pytest.approx(valid, abs=1e-12)
    assert [g["weights"] for g in per_point["grid"]] == [g["weights"] for g in res["grid"]]
    assert per_point["test"]["mrr"] == pytest.approx(res["test"]["mrr"], abs=1e-12)
    with pytest.raises(ValueError, match="batch must be >= 1"):
        fit_ensemble(ens, batch=0)
    one = fit_ensemble(ens, step=0.5, refine=0, split_unseen=False, query_chunk=16, entity_chunk=32, batch=3)
    assert one["weights"] == one["weights_unseen_head"] and one["num_valid_queries_unseen_head"] == 0
    assert one["valid"]["mrr"] == pytest.approx(max(g["valid_mrr"] for g in one["grid"]), abs=1e-9)
    best_unseen = max(res["grid"], key=lambda g: g["valid_mrr_unseen_head"])["valid_mrr_unseen_head"]
    best_seen = max(res["grid"], key=lambda g: g["valid_mrr_seen_head"])["valid_mrr_seen_head"]
    n_valid = res["valid"]["num_queries"]
    assert res["valid"]["mrr"] == pytest.approx((best_unseen * CLUSTERS + best_seen * (n_valid - CLUSTERS)) / n_valid, abs=1e-6)
    assert res["grid"][int(np.argmax(valid))]["weights"] == res["weights"]
    # the fused scorer is sum_i w_i s_i / sigma_i, checked against a direct computation
    ds, (m1, m2) = ens.dataset, ens.members
    w_seen, w_unseen = np.array(res["weights"]), np.array(res["weights_unseen_head"])
    seen = np.zeros(ds.num_entities, bool)
    seen[ds.train[:, [0, 2]].ravel()] = True
    ev = RankingEvaluator(ds.num_entities, ds.num_relations, [ds.train, ds.valid, ds.test], ds.train,
                          query_chunk=16, entity_chunk=32)

    def direct(params, h, r, cand):
        w = jnp.where(jnp.asarray(seen)[h][:, None, None], w_seen, w_unseen)  # [C, 1, 2]
        return (w[..., 0] / m1.scale) * m1.model.score_candidates(h, r, cand) + (w[..., 1] / m2.scale) * m2.model.score_candidates(h, r, cand)

    assert ens.x64 and m1.model.entity[...].dtype == jnp.float64
    with jax.enable_x64(True):
        assert ev.evaluate(direct, None, ds.test).metrics(breakdown=False)["mrr"] == pytest.approx(res["test"]["mrr"], abs=1e-9)


def test_kg_ensemble_cli_config_trains_missing_members_and_reports(two_runs, tmp_path: Path, capsys, monkeypatch) -> None:
    from geofm.commands.kg_ensemble import main

    root, folder, _, _ = two_runs
    shutil.copytree(root / "struct", tmp_path / "struct")
    (tmp_path / "tiny.yaml").write_text((REPO / "configs/kg/tiny.yaml").read_text().replace("base: base.yaml", f"base: {REPO}/configs/kg/base.yaml"))
    emb = tmp_path / "ent.npy"
    ds = load_kg(folder)
    np.save(emb, FakeEncoder().encode([t or "" for t in ds.entity_text]))
    (tmp_path / "ens.yaml").write_text(
        "members:\n"
        f"  - {{config: tiny.yaml, run: {tmp_path / 'struct'}, set: {json.dumps(STRUCT_SET)}}}\n"
        f"  - {{config: tiny.yaml, run: {tmp_path / 'text'}, set: ['{TEXT_MODEL}', 'init={{kind: text, embeddings: {emb}}}',"
        " 'loss={name: 1n_ce}', 'train.epochs=4']}\n"
        "step: 0.5\n"
        f"dataset: {folder}\n"
    )
    code = main(["--config", str(tmp_path / "ens.yaml"), "--out", str(tmp_path / "out"), "--json", "--quiet"])
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert code == 0 and set(json.loads(lines[-1])) == {"mrr", "mr", "hits@1", "hits@3", "hits@10"}
    assert (tmp_path / "text" / "results.json").is_file()  # the missing member was trained
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [g["refinement"] for g in res["grid"]][:3] == [0, 0, 0] and res["split_unseen"] and [m["model"] for m in res["members"]] == ["transe", "text"]
    assert res["test"]["num_queries_with_unseen_entity"] == 4 * CLUSTERS


def test_kg_ensemble_bad_input(two_runs, tmp_path: Path, capsys) -> None:
    from geofm.commands.kg_ensemble import main

    root, *_ = two_runs
    assert main([str(tmp_path)]) == 2 and "no config.yaml" in capsys.readouterr().err
    assert main([str(tmp_path / "typo")]) == 2 and "typo: no such run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    shutil.copy(root / "struct" / "config.yaml", tmp_path / "empty" / "config.yaml")
    assert main([str(root / "struct"), str(tmp_path / "empty")]) == 2 and "no checkpoint" in capsys.readouterr().err
    assert main([]) == 2 and "one of the two" in capsys.readouterr().err
    assert main([str(root / "struct"), "--step", "0.3"]) == 2 and "1/n" in capsys.readouterr().err
    assert main([str(root / "struct"), "--refine", "-1"]) == 2 and "refine must be" in capsys.readouterr().err
    assert main([str(root / "struct"), "--step", "0"]) == 2 and "1/n" in capsys.readouterr().err
    assert main([str(root / "struct"), "--set", "step=0.5"]) == 2 and "--set needs --config" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(root / "struct", other)
    res = json.loads((other / "results.json").read_text())
    res["dataset"]["checksums"] = {"train.txt": "0" * 32}
    (other / "results.json").write_text(json.dumps(res))
    assert main([str(root / "struct"), str(other)]) == 2 and "checksums differ" in capsys.readouterr().err
    (other / "results.json").write_text("{")  # damaged: named, not a bare JSONDecodeError
    assert main([str(root / "struct"), str(other)]) == 2
    assert f"{other / 'results.json'}:1: not valid JSON" in capsys.readouterr().err
    assert main([str(root / "struct"), "--out", str(other / "results.json")]) == 2  # --out refused before any work
    assert "exists and is not a folder" in capsys.readouterr().err


def test_ensemble_config_refuses_a_run_folder_of_another_config(two_runs, tmp_path: Path, capsys) -> None:
    from geofm.commands.kg_ensemble import main

    root, folder, _, _ = two_runs
    (tmp_path / "tiny.yaml").write_text((REPO / "configs/kg/tiny.yaml").read_text().replace("base: base.yaml", f"base: {REPO}/configs/kg/base.yaml"))
    (tmp_path / "ens.yaml").write_text(f"members:\n  - {{config: tiny.yaml, run: {root / 'struct'}, set: ['train.epochs=3']}}\n"
                                       f"dataset: {folder}\n")
    assert main(["--config", str(tmp_path / "ens.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "members[0]: run folder" in err and "model.name: 'transe' -> 'atth'" in err
    assert "continue it" not in err  # another model: no `geofm kg` resume can turn one into the other
    (tmp_path / "ens2.yaml").write_text(f"members:\n  - {{config: {root / 'struct' / 'config.yaml'}, run: {root / 'struct'}, "
                                        f"set: ['train.epochs=13']}}\ndataset: {folder}\n")
    assert main(["--config", str(tmp_path / "ens2.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err  # the exact command that continues this member, its overrides included
    assert f"geofm kg --config {root / 'struct' / 'config.yaml'} --set train.epochs=13 --set 'data.name=" in err
    # a training time budget is not part of what a finished run is: the same run is reused
    from geofm.kg.ensemble import _check_same_config

    cfg = load_config(root / "struct" / "config.yaml", KGConfig, ["train.max_seconds=50", "train.resume=false"])
    _check_same_config(root / "struct", cfg, "members[0]")
    # the dataset named or given by another path: whether the files are the same is the checksums' call
    _check_same_config(root / "struct", load_config(root / "struct" / "config.yaml", KGConfig, ["data.name=text_kg"]), "m")
    with pytest.raises(ValueError, match="train.epochs: 12 -> 13") as err:
        _check_same_config(root / "struct", load_config(root / "struct" / "config.yaml", KGConfig, ["train.epochs=13"]), "m")
    assert "continue it with these settings first: geofm kg --config CONFIG --out" in str(err.value)  # resumable
    with pytest.raises(ValueError, match="optim.lr") as err:
        _check_same_config(root / "struct", load_config(root / "struct" / "config.yaml", KGConfig, ["optim.lr=0.123"]), "m")
    assert "continue it" not in str(err.value) and "point `run:` to a new folder" in str(err.value)


def test_runs_saved_with_index_prefixed_leaf_names_still_load(two_runs, tmp_path: Path) -> None:
    """Checkpoints written before leaves were keyed by path name ("0015_params_entity_value") restore."""
    import orbax.checkpoint as ocp
    from flax import nnx

    from geofm.checkpoint import Checkpointer
    from geofm.kg.ensemble import load_member
    from geofm.kg.train import _leaf_names, _precision, build_run_model, make_optimizer

    root, folder, *_ = two_runs
    src, dst = root / "struct", tmp_path / "legacy"
    dst.mkdir()
    shutil.copy(src / "config.yaml", dst / "config.yaml")
    ds = load_kg(folder)
    cfg = load_config(src / "config.yaml", KGConfig)
    with _precision(cfg.train.dtype) as dtype:
        model, _ = build_run_model(cfg, ds, dtype)
        params = nnx.state(model, nnx.Param)
        names = _leaf_names({"params": params, "opt_state": make_optimizer(cfg.optim, model).init(params)})
    with Checkpointer(src / "checkpoints", metric="valid_mrr") as ck:
        step = ck.best_step()
    with jax.enable_x64(True), Checkpointer(dst / "checkpoints", metric="valid_mrr") as ck:
        state = ocp.StandardCheckpointer().restore((src / "checkpoints" / str(step) / "state").resolve())
        # legacy leaves are matched by name, not by their index (here: reversed order)
        ck.save(step, {f"{len(names) - i:04d}_{k}": np.asarray(state[k]) for i, k in enumerate(names)}, metrics={"valid_mrr": 0.5})
    new, old = load_member(src, ds), load_member(dst, ds)
    h, r, c = jnp.arange(4), jnp.array([0, 1, 0, 1]), jnp.arange(ds.num_entities)
    with jax.enable_x64(True):
        assert np.array_equal(new.model.score_candidates(h, r, c), old.model.score_candidates(h, r, c))


def test_a_text_run_refuses_a_changed_entity_table(two_runs, tmp_path: Path) -> None:
    """The frozen text table is rebuilt when a run loads; a changed encoder must not pass silently."""
    from geofm.kg.ensemble import load_member

    root, folder, *_ = two_runs
    ds = load_kg(folder)
    load_member(root / "text", ds, text_encoder=FakeEncoder())  # same encoder: loads
    with pytest.raises(ValueError, match="entity-text table rebuilt now differs"):
        load_member(root / "text", ds, text_encoder=FakeEncoder(noise=0.9))
    shutil.copytree(root / "text", tmp_path / "text")
    cfg = load_config(tmp_path / "text" / "config.yaml", KGConfig, ["train.epochs=13"])
    with pytest.raises(ValueError, match="differs from the one this run was trained with"):  # resuming, too
        train_kg(cfg, tmp_path / "text", progress=False, text_encoder=FakeEncoder(noise=0.9))


def test_ensemble_refuses_members_ranked_with_different_tie_policies(two_runs, tmp_path: Path) -> None:
    import yaml

    root, folder, *_ = two_runs
    other = tmp_path / "optimistic"
    shutil.copytree(root / "struct", other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["eval"]["tie_policy"] = "optimistic"
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"different eval.tie_policy values \['optimistic', 'realistic'\]"):
        load_ensemble([root / "struct", other], dataset=load_kg(folder))


def test_data_entity_text_picks_the_text_file_for_training_and_for_the_ensemble(two_runs, tmp_path: Path) -> None:
    """data.entity_text reads another entity2text*.txt of the folder (FB15k-237 ships names and
    first sentences); an ensemble member is rebuilt from its own file, not the shared dataset's."""
    from geofm.kg.ensemble import load_member

    root, folder, *_ = two_runs
    data = tmp_path / "kg"
    shutil.copytree(folder, data)
    lines = (data / "entity2text.txt").read_text().splitlines()
    # the alternative file swaps the clusters named by the texts: other embeddings, same ids
    alt = [f"{e}\t{t.replace('cluster 0', 'cluster X').replace('cluster 1', 'cluster 0').replace('cluster X', 'cluster 1')}"
           for e, t in (x.split("\t", 1) for x in lines)]
    (data / "entity2text_alt.txt").write_text("\n".join(alt) + "\n")
    cfg = load_config(REPO / "configs/kg/tiny.yaml", KGConfig, [
        f"data.name={json.dumps(str(data))}", "data.entity_text=entity2text_alt.txt", "train.valid_every=2",
        "train.epochs=2", TEXT_MODEL, "init={kind: text}", "loss={name: 1n_ce}"])
    res = train_kg(cfg, tmp_path / "alt", progress=False, text_encoder=FakeEncoder())
    assert res["dataset"]["entity_text"]["file"] == "entity2text_alt.txt"
    ds = load_kg(data)  # the default texts; the member reads its own file (else its table fingerprint differs)
    assert ds.meta["entity_text"]["file"] == "entity2text.txt"
    load_member(tmp_path / "alt", ds, text_encoder=FakeEncoder())
    bad = load_config(REPO / "configs/kg/tiny.yaml", KGConfig, [f"data.name={json.dumps(str(data))}",
                                                                 "data.entity_text=nope.txt", "train.epochs=1"])
    with pytest.raises(FileNotFoundError, match="entity text file 'nope.txt' not found"):
        train_kg(bad, progress=False)


def test_every_shipped_kg_config_loads() -> None:
    """configs/kg: run configs load as KGConfig, ensemble configs as EnsembleConfig whose members load."""
    from geofm.kg.ensemble import EnsembleConfig

    paths = sorted((REPO / "configs/kg").glob("*.yaml"))
    ensembles = [p for p in paths if p.name.startswith("ensemble_")]
    assert len(ensembles) >= 2
    for path in paths:
        if path in ensembles:
            ens = load_config(path, EnsembleConfig)
            assert len(ens.members) >= 2, path
            for m in ens.members:
                load_config(path.parent / m.config, KGConfig, list(m.set))
        else:
            load_config(path, KGConfig)


def test_table_fingerprint_tolerates_float_noise_and_catches_changes() -> None:
    from geofm.kg.init import check_table_fingerprint, table_fingerprint

    emb = np.random.default_rng(0).normal(size=(100, 12)).astype(np.float32)
    fp = table_fingerprint(emb)
    check_table_fingerprint(fp, table_fingerprint(emb.astype(np.float16).astype(np.float32)), where="f16 copy")
    check_table_fingerprint(None, fp, where="a run from before fingerprints")
    check_table_fingerprint(fp, None, where="a model without a frozen table")
    with pytest.raises(ValueError, match=r"shape \[100, 11\] vs \[100, 12\]"):
        check_table_fingerprint(fp, table_fingerprint(emb[:, :11]), where="x")
    with pytest.raises(ValueError, match="max difference"):
        check_table_fingerprint(fp, table_fingerprint(emb + 0.01), where="x")
    with pytest.raises(ValueError, match="samples other rows"):
        check_table_fingerprint(fp, table_fingerprint(emb, rows=20), where="x")
    bad = emb.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="max difference nan"):
        check_table_fingerprint(fp, table_fingerprint(bad), where="x")


def test_restore_needs_the_init_summary_when_a_table_was_recorded(two_runs) -> None:
    from flax import nnx

    from geofm.checkpoint import Checkpointer
    from geofm.kg.train import _precision, build_run_model, make_optimizer, restore_state

    root, folder, *_ = two_runs
    cfg = load_config(root / "text" / "config.yaml", KGConfig)
    with _precision(cfg.train.dtype) as dtype, Checkpointer(root / "text" / "checkpoints", metric="valid_mrr") as ck:
        model, info = build_run_model(cfg, load_kg(folder), dtype, text_encoder=FakeEncoder())
        params = nnx.state(model, nnx.Param)
        template = {"params": params, "opt_state": make_optimizer(cfg.optim, model).init(params)}
        with pytest.raises(ValueError, match="pass the init summary"):
            restore_state(ck, template, which="best")
        restore_state(ck, template, which="best", entity_init=info)


def test_with_entity_text_returns_to_the_default_file(two_runs, tmp_path: Path) -> None:
    from geofm.kg.train import with_entity_text

    _, folder, *_ = two_runs
    data = tmp_path / "kg"
    shutil.copytree(folder, data)
    (data / "entity2text_other.txt").write_text((data / "entity2text.txt").read_text().replace("cluster", "group"))
    other = load_kg(data, entity_text="entity2text_other.txt")
    assert with_entity_text(other, "entity2text_other.txt") is other
    back = with_entity_text(other, None)  # a config naming no file gets the loader's default texts
    assert back.meta["entity_text"]["file"] == "entity2text.txt" and back.entity_text == load_kg(data).entity_text
    assert np.array_equal(back.train, other.train)
