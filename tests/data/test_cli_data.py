"""`geofm data stats|download|list` through the console dispatcher."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from geofm.cli import main as geofm_main
from geofm.commands.data import degree_quantiles

HAVE_STRUCTURE = importlib.util.find_spec("geofm.structure") is not None


def make_tag(root: Path) -> Path:
    """A 5-node star (centre 0) plus one self-loop and a reciprocal edge; 2 classes."""
    root.mkdir(parents=True)
    (root / "nodes.jsonl").write_text("".join(json.dumps({"id": i, "text": f"t{i}", "label": i % 2}) + "\n" for i in range(5)))
    (root / "edges.tsv").write_text("src\tdst\n0\t1\n0\t2\n0\t3\n0\t4\n1\t0\n4\t4\n")
    (root / "labels.json").write_text(json.dumps([{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]))
    return root


def make_kg(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "train.txt").write_text("a\tr\tb\nb\tr\tc\nc\ts\ta\n")
    (root / "valid.txt").write_text("a\ts\tc\n")
    (root / "test.txt").write_text("d\tr\ta\nb\ts\ta\n")
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = geofm_main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_degree_quantiles_star() -> None:
    # star 0-{1,2,3,4}, with a duplicate reverse edge and a loop that must not count
    ei = np.array([[0, 0, 0, 0, 1, 4], [1, 2, 3, 4, 0, 4]])
    q = degree_quantiles(ei, 6)  # node 5 isolated
    assert q["degree_q100"] == 4 and q["degree_q0"] == 0 and q["degree_q50"] == 1
    assert q["degree_mean"] == pytest.approx(8 / 6)


def test_stats_tag_json(capsys, tmp_path: Path) -> None:
    folder = make_tag(tmp_path / "star")
    rc, out, _ = run(capsys, "data", "stats", str(folder), "--json", "--cache-dir", str(tmp_path / "c"))
    assert rc == 0
    stats = json.loads(out)
    assert (stats["num_nodes"], stats["num_edges"], stats["num_classes"]) == (5, 6, 2)
    assert stats["num_self_loops"] == 1 and stats["label_counts"] == [3, 2]
    assert stats["degree_q100"] == 4
    if HAVE_STRUCTURE:
        assert stats["curvature"]["num_undirected_edges"] == 4
        assert stats["curvature"]["forman_mean"] < 0  # a star is tree-like


def test_stats_kg_text_and_json(capsys, tmp_path: Path) -> None:
    folder = make_kg(tmp_path / "kg")
    rc, out, _ = run(capsys, "data", "stats", str(folder), "--json", "--no-cache", "--no-curvature")
    stats = json.loads(out)
    assert rc == 0 and stats["curvature"] is None
    assert {k: stats[k] for k in ("num_entities", "num_relations", "num_train", "num_valid", "num_test")} == {
        "num_entities": 4, "num_relations": 2, "num_train": 3, "num_valid": 1, "num_test": 2,
    }
    assert stats["num_unseen_entities"] == {"valid": 0, "test": 1}
    rc, out, _ = run(capsys, "data", "stats", str(folder), "--no-cache")
    assert rc == 0 and "num_entities" in out and "degree quantiles" in out


def test_stats_unknown_name(capsys, tmp_path: Path) -> None:
    make_tag(tmp_path / "data" / "tag" / "star")
    rc, _, err = run(capsys, "data", "stats", "nope", "--data-dir", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "c"))
    assert rc == 2 and "unknown dataset 'nope'" in err and "star" in err


def test_stats_bad_file_names_line(capsys, tmp_path: Path) -> None:
    folder = make_tag(tmp_path / "star")
    (folder / "edges.tsv").write_text("src\tdst\n0\t1\n0\t9\n")
    rc, _, err = run(capsys, "data", "stats", str(folder), "--no-cache")
    assert rc == 2 and "edges.tsv:3" in err and "out of range" in err


def test_stats_real(capsys, data_dir: Path, tmp_path: Path) -> None:
    rc, out, _ = run(capsys, "data", "stats", "CORA", "--data-dir", str(data_dir), "--json", "--cache-dir", str(tmp_path))
    stats = json.loads(out)
    assert rc == 0 and (stats["num_nodes"], stats["num_edges"], stats["num_classes"]) == (2708, 5429, 7)
    rc, out, _ = run(capsys, "data", "stats", "wn18rr", "--data-dir", str(data_dir), "--json", "--no-curvature", "--cache-dir", str(tmp_path))
    stats = json.loads(out)
    assert (stats["num_entities"], stats["num_relations"]) == (40943, 11)
    assert (stats["num_train"], stats["num_valid"], stats["num_test"]) == (86835, 3034, 3134)


def test_download_with_mirror_and_list(capsys, data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    rc, out, _ = run(capsys, "data", "download", "wn18rr", "--cache-dir", str(tmp_path), "--mirror", str(data_dir / "kg" / "WN18RR"))
    assert rc == 0 and Path(out.strip()) == tmp_path / "datasets" / "kg" / "WN18RR"
    assert (Path(out.strip()) / "train.txt").is_file()
    monkeypatch.setenv("GEOFM_CACHE", str(tmp_path))
    rc, out, _ = run(capsys, "data", "list")
    assert rc == 0 and "WN18RR" in out and "downloadable: WN18RR, FB15k-237" in out
    rc, _, err = run(capsys, "data", "download", "nope", "--cache-dir", str(tmp_path))
    assert rc == 2 and "no download source" in err


def test_bare_name_prefers_the_data_dir_over_the_current_folder(capsys, tmp_path: Path, monkeypatch) -> None:
    """A bare name is looked up in --data-dir first; a dataset folder of that name in the current
    directory is used only when no root has one; `.` is a path (and named after its folder)."""
    make_tag(tmp_path / "roots" / "star")
    here = tmp_path / "here"
    local = make_tag(here / "star")
    (local / "edges.tsv").write_text("src\tdst\n0\t1\n")  # a different graph under the same name
    monkeypatch.chdir(here)
    cache = ["--cache-dir", str(tmp_path / "c")]
    rc, out, _ = run(capsys, "data", "stats", "star", "--data-dir", str(tmp_path / "roots"), "--json", *cache)
    assert rc == 0 and json.loads(out)["num_edges"] == 6  # the data dir's, not ./star's 1 edge
    rc, out, _ = run(capsys, "data", "stats", "star", "--data-dir", str(tmp_path / "empty_root"), "--json", *cache)
    assert rc == 2  # an explicit data dir that does not exist is an error, not a fallback
    (tmp_path / "empty_root").mkdir()
    rc, out, _ = run(capsys, "data", "stats", "star", "--data-dir", str(tmp_path / "empty_root"), "--json", *cache)
    assert rc == 0 and json.loads(out)["num_edges"] == 1  # no root has it: ./star
    monkeypatch.chdir(local)
    rc, out, _ = run(capsys, "data", "stats", ".", "--json", *cache)
    assert rc == 0 and json.loads(out)["name"] == "star"


def test_stats_json_is_strict_json_for_a_graph_without_edges(capsys, tmp_path: Path) -> None:
    folder = make_tag(tmp_path / "loose")
    (folder / "edges.tsv").write_text("src\tdst\n")
    rc, out, _ = run(capsys, "data", "stats", str(folder), "--json", "--no-cache")
    assert rc == 0
    json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c} in {out}"))
