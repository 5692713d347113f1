"""Zero-shot / few-shot classifiers, visuals and the `geofm zero-shot` CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geofm.data.synthetic import make_synthetic
from geofm.zero_shot import (
    class_scores,
    classification_metrics,
    confusion_matrix,
    few_shot_eval,
    few_shot_support,
    linear_probe_predict,
    pca_2d,
    plot_target,
    prototype_predict,
    setting_key,
    validation_gain,
    zero_shot_predict,
)

ROOT = Path(__file__).resolve().parents[1]


def write_tag(ds, folder: Path, *, descriptions: bool = True) -> Path:
    """Write a TAGDataset in the documented folder format (nodes.jsonl, edges.tsv, labels.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "nodes.jsonl", "w", encoding="utf-8") as f:
        for i, (t, y) in enumerate(zip(ds.texts, ds.labels.tolist())):
            f.write(json.dumps({"id": i, "text": t, "label": y}) + "\n")
    rows = "\n".join(f"{s}\t{d}" for s, d in ds.edge_index.T.tolist())
    (folder / "edges.tsv").write_text("src\tdst\n" + rows + "\n", encoding="utf-8")
    labels = [{"id": i, "name": n, **({"description": d} if descriptions else {})}
              for i, (n, d) in enumerate(zip(ds.class_names, ds.class_descriptions))]
    (folder / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    (folder / "meta.json").write_text(json.dumps({"domain": "synthetic"}), encoding="utf-8")
    return folder


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_zero_shot_predicts_nearest_class_text():
    cls = _unit(np.eye(3, 4, dtype=np.float32))
    nodes = _unit(np.array([[0.9, 0.1, 0, 0], [0, 0.2, 1, 0], [0.1, 1, 0, 0.3]], np.float32))
    assert zero_shot_predict(nodes, cls).tolist() == [0, 2, 1]
    assert class_scores(nodes, cls).shape == (3, 3)
    with pytest.raises(ValueError, match="class_scores"):
        class_scores(nodes, cls[:, :3])
    with pytest.raises(ValueError, match=r"1 node embedding row\(s\) hold NaN/inf"):
        zero_shot_predict(np.where(np.arange(3)[:, None] == 1, np.nan, nodes), cls)


def test_metrics_ignore_unlabelled_and_match_hand_counts():
    m = classification_metrics(np.array([0, 1, 1, 0]), np.array([0, 1, 0, -1]), 2)
    assert m["accuracy"] == pytest.approx(2 / 3)
    # class 0: tp 1, pred 1, true 2 -> F1 2/3; class 1: tp 1, pred 2, true 1 -> 2/3
    assert m["macro_f1"] == pytest.approx(2 / 3)
    from geofm.metrics import macro_f1

    with pytest.raises(ValueError, match=r"macro_f1: pred shape \(3,\) != labels shape \(2,\)"):
        macro_f1(np.array([0, 1, 2]), np.array([0, 1]), 3)


def test_few_shot_support_takes_k_per_class():
    labels = np.array([0] * 10 + [1] * 2 + [-1] * 3)
    sup = few_shot_support(labels, 3, np.random.default_rng(0))
    assert np.bincount(labels[sup]).tolist() == [3, 2]
    with pytest.raises(ValueError):
        few_shot_support(labels, 0, np.random.default_rng(0))


def test_prototype_and_probe_separate_clusters():
    rng = np.random.default_rng(0)
    centres = _unit(rng.normal(size=(3, 16)).astype(np.float32))
    labels = np.repeat(np.arange(3), 30)
    emb = _unit(centres[labels] + 0.2 * rng.normal(size=(90, 16)).astype(np.float32))
    sup = few_shot_support(labels, 2, rng)
    assert classification_metrics(prototype_predict(emb, labels, sup, 3), labels, 3)["accuracy"] > 0.9
    assert classification_metrics(linear_probe_predict(emb, labels, sup, 3), labels, 3)["accuracy"] > 0.9
    res = few_shot_eval(emb, labels, 3, k=1, trials=2)
    assert set(res) == {"prototype", "linear_probe"} and res["prototype"]["accuracy"] > 0.8


def test_confusion_pca_and_plot(tmp_path):
    cm = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, -1]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0]]
    x = np.random.default_rng(0).normal(size=(20, 5))
    xy = pca_2d(x)
    assert xy.shape == (20, 2) and np.var(xy[:, 0]) >= np.var(xy[:, 1])
    # the top component of points on a line is the line itself (up to sign, fixed positive here)
    line = np.outer(np.arange(5.0), [3.0, 4.0])
    np.testing.assert_allclose(pca_2d(line)[:, 0], (np.arange(5.0) - 2) * 5, atol=1e-6)
    np.testing.assert_allclose(pca_2d(line)[:, 1], 0.0, atol=1e-6)
    assert pca_2d(x[:1]).tolist() == [[0.0, 0.0]]
    png = plot_target(tmp_path / "p.png", title="t", labels=np.array([0, 1, 1, 0] * 5), pred=np.zeros(20, int),
                      embedding=x, class_names=["a", "b"])
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, capsys, default_text_model):
    from geofm.cli import main

    data = tmp_path / "data"
    kw = dict(text_noise=0.4, depth=3, num_cliques=4, rows=5, cols=5)
    write_tag(make_synthetic("synthetic-mixed", seed=0, **kw), data / "synthetic-a")
    write_tag(make_synthetic("synthetic-mixed", seed=1, **kw), data / "synthetic-b")
    write_tag(make_synthetic("synthetic-mixed", seed=2, **kw), data / "target", descriptions=False)
    run = tmp_path / "run"
    cfg = str(ROOT / "configs" / "zero_shot" / "tiny.yaml")
    assert main(["zero-shot", "--config", cfg, "--data-dir", str(data), "--out", str(run), "--quiet"]) == 0
    assert (run / "config.yaml").is_file() and (run / "checkpoints").is_dir()
    capsys.readouterr()
    assert main(["zero-shot", "--checkpoint", str(run), "--dataset", "target", "--data-dir", str(data),
                 "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"accuracy", "macro_f1", "baselines"}
    assert set(out["baselines"]) == {"text_only", "text_propagation"}
    for block in (out, *out["baselines"].values()):
        assert 0.0 <= block["accuracy"] <= 1.0 and 0.0 <= block["macro_f1"] <= 1.0
    saved = json.loads((run / "zero_shot" / "target.json").read_text())
    assert saved["accuracy"] == out["accuracy"]
    assert saved["classes_without_description"] == 3
    assert saved["trained_on"] == ["synthetic-a", "synthetic-b"]
    assert (run / "zero_shot" / "target.png").is_file()
    # every node's prediction, in id order; on the labelled nodes they give the reported accuracy
    rows = [r.split("\t") for r in (run / "zero_shot" / "target.predictions.tsv").read_text().splitlines()]
    assert rows[0] == ["id", "class", "class_name", "score"] and saved["predictions"].endswith("target.predictions.tsv")
    labels = np.array([json.loads(l)["label"] for l in (data / "target" / "nodes.jsonl").read_text().splitlines()])
    pred = np.array([int(r[1]) for r in rows[1:]])
    assert [int(r[0]) for r in rows[1:]] == list(range(len(labels)))
    assert np.mean(pred == labels) == pytest.approx(out["accuracy"])
    assert sum(saved["predicted_counts"].values()) == len(labels)
    # a target without any label (label: null): predictions only, metrics null, strict JSON
    unl = data / "unlabelled"
    unl.mkdir()
    for f in ("edges.tsv", "labels.json"):
        (unl / f).write_text((data / "target" / f).read_text())
    (unl / "nodes.jsonl").write_text("".join(json.dumps({**json.loads(l), "label": None}) + "\n"
                                             for l in (data / "target" / "nodes.jsonl").read_text().splitlines()))
    assert main(["zero-shot", "--checkpoint", str(run), "--dataset", "unlabelled", "--data-dir", str(data),
                 "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out) == {"accuracy": None, "macro_f1": None, "baselines": {
        "text_only": {"accuracy": None, "macro_f1": None}, "text_propagation": {"accuracy": None, "macro_f1": None}}}
    unl_rows = (run / "zero_shot" / "unlabelled.predictions.tsv").read_text().splitlines()[1:]
    assert [r.split("\t")[1] for r in unl_rows] == [r[1] for r in rows[1:]]  # same graph and texts, same predictions
    assert (run / "zero_shot" / "unlabelled.png").is_file()
    # the cross-dataset protocol refuses a training source as target
    assert main(["zero-shot", "--checkpoint", str(run), "--dataset", "synthetic-a", "--data-dir", str(data),
                 "--quiet"]) == 2
    assert "training source" in capsys.readouterr().err
    # human-readable output
    assert main(["zero-shot", "--checkpoint", str(run), "--dataset", "target", "--data-dir", str(data),
                 "--quiet", "--no-plot", "--no-few-shot"]) == 0
    text = capsys.readouterr().out
    assert "text + propagation" in text and "classes without description 3" in text
    # a trained run folder is never trained into again (refused before training, folder untouched)
    before = (run / "aligner.json").read_bytes()
    assert main(["zero-shot", "--config", cfg, "--data-dir", str(data), "--out", str(run), "--quiet"]) == 2
    assert "is not an empty folder" in capsys.readouterr().err and (run / "aligner.json").read_bytes() == before


def test_cli_argument_errors(capsys, tmp_path):
    from geofm.cli import main

    assert main(["zero-shot", "--dataset", "cora"]) == 2
    assert main(["zero-shot", "--checkpoint", str(tmp_path)]) == 2
    assert main(["zero-shot", "--checkpoint", str(tmp_path), "--dataset", "cora", "--quiet"]) == 2
    assert "missing config.yaml" in capsys.readouterr().err
    assert main(["zero-shot", "--checkpoint", str(tmp_path), "--dataset", "cora", "--set", "eval.hops=3"]) == 2
    assert "--set and --out apply to training" in capsys.readouterr().err
    cfg = str(ROOT / "configs" / "zero_shot" / "tiny.yaml")  # bad eval settings fail at load, before training
    assert main(["zero-shot", "--config", cfg, "--out", str(tmp_path / "r"), "--set", "eval.overlap_scope=foo"]) == 2
    assert "expected one of ['all', 'semantic']" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_validation_gain_is_the_worse_metric_margin():
    base = {"text_only": {"accuracy": 0.5, "macro_f1": 0.4}, "text_propagation": {"accuracy": 0.6, "macro_f1": 0.3}}
    assert validation_gain({"accuracy": 0.7, "macro_f1": 0.45}, base) == pytest.approx(0.05)
    assert validation_gain({"accuracy": 0.55, "macro_f1": 0.9}, base) == pytest.approx(-0.05)


def test_select_on_sources_never_sees_a_target_and_scores_every_fold(default_text_model):
    from dataclasses import replace

    from geofm.align import config_from_dict, prepare_domain
    from geofm.text import TextEncoder
    from geofm.zero_shot import select_on_sources

    tiny = {"model": {"dim": 8, "experts": ["euclidean"], "num_layers": 1, "gate_hidden": 8, "depth_mix": True,
                      "mix_hops": 2}, "train": {"steps": 4, "batch_nodes": 16}}
    cands = {"mix": config_from_dict({**tiny, "model": {**tiny["model"], "adapter": False, "head": False}}),
             "lowrank": config_from_dict({**tiny, "model": {**tiny["model"], "adapter_rank": 4}})}
    enc = TextEncoder.load()
    doms = [prepare_domain(make_synthetic("synthetic-ring", num_nodes=24, seed=s), enc, cands["mix"].prompts,
                           hops=2, mix_hops=2) for s in range(3)]
    doms = [replace(d, name=f"s{i}") for i, d in enumerate(doms)]
    res = select_on_sources(cands, doms, checkpoints=[2, 4], overlap_powers=[0, 2],
                            overlap_scopes=["all", "semantic"])
    ch = res["chosen"]
    assert ch["candidate"] in cands and ch["steps"] in (2, 4) and ch["overlap_power"] in (0, 2)
    assert ch["overlap_scope"] in ("all", "semantic")
    assert set(res["scores"]) == set(cands)
    assert set(res["scores"]["mix"]) == {setting_key(s, p, sc) for s in (2, 4) for p in (0, 2)
                                         for sc in ("all", "semantic")}
    folds = res["scores"]["mix"][setting_key(4, 2, "all")]["folds"]
    assert set(folds) == {"s0", "s1", "s2"} == set(res["baselines"])
    assert all(0.0 <= f["scale"] <= 1.0 for f in folds.values())
    # power 0 means scale 1: both scopes score the same; the depth-mixing-only candidate has
    # no semantic part, so its "semantic" scope never shrinks anything
    mix = res["scores"]["mix"]

    def metrics(key):
        return {v: (f["accuracy"], f["macro_f1"]) for v, f in mix[key]["folds"].items()}

    for s in (2, 4):
        assert metrics(setting_key(s, 0, "all")) == metrics(setting_key(s, 0, "semantic"))
        assert metrics(setting_key(s, 2, "semantic")) == metrics(setting_key(s, 0, "all"))
    best = res["scores"][ch["candidate"]][setting_key(ch["steps"], ch["overlap_power"], ch["overlap_scope"])]
    assert best["mean_gain"] == max(v["mean_gain"] for c in res["scores"].values() for v in c.values())
    with pytest.raises(ValueError, match=">= 2 sources"):
        select_on_sources(cands, doms[:1], checkpoints=[2])
    with pytest.raises(ValueError, match="overlap scope"):
        select_on_sources(cands, doms, checkpoints=[2], overlap_scopes=["labels"])


def test_target_sharing_a_sources_name_is_refused_not_silently_dropped(capsys, tmp_path):
    """The target is excluded from the sources by name; a different folder that only shares a
    source's name used to drop that source silently. Now: exit 2 naming both, before training."""
    from geofm.cli import main

    data = tmp_path / "data"
    kw = dict(text_noise=0.4, depth=2, num_cliques=2, rows=3, cols=3)
    write_tag(make_synthetic("synthetic-mixed", seed=0, **kw), data / "synthetic-a")
    write_tag(make_synthetic("synthetic-mixed", seed=1, **kw), data / "synthetic-b")
    other = write_tag(make_synthetic("synthetic-mixed", seed=2, **kw), tmp_path / "elsewhere" / "synthetic-a")
    cfg = str(ROOT / "configs" / "zero_shot" / "tiny.yaml")
    assert main(["zero-shot", "--config", cfg, "--data-dir", str(data), "--out", str(tmp_path / "r"),
                 "--dataset", str(other), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "different datasets with one name ('synthetic-a')" in err and str(other.resolve()) in err
    assert not (tmp_path / "r").exists()


def test_dataset_key_names_dot_after_its_folder(tmp_path, monkeypatch):
    from geofm.zero_shot import _key

    (tmp_path / "My_Graph").mkdir()
    monkeypatch.chdir(tmp_path / "My_Graph")
    assert _key(".") == "my_graph" and _key("cora") == "cora" and _key(str(tmp_path / "X" / "webkb")) == "webkb"


def test_dataset_key_does_not_follow_links(tmp_path, monkeypatch):
    from geofm.zero_shot import _key

    (tmp_path / "webkb-texas").mkdir()
    (tmp_path / "cora").symlink_to(tmp_path / "webkb-texas")
    monkeypatch.chdir(tmp_path)
    assert _key("cora") == "cora"  # a name is its text, whatever lies in the current folder
