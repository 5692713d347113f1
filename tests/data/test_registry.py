"""Dataset registry: name resolution order, case-insensitivity, format detection, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geofm.data import KGDataset, TAGDataset, detect_format, find_dataset, known_datasets, load_dataset, resolve_data_dir


def make_tag(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "nodes.jsonl").write_text('{"id": 0, "text": "a", "label": 0}\n{"id": 1, "text": "b", "label": 0}\n')
    (root / "edges.tsv").write_text("src\tdst\n0\t1\n")
    (root / "labels.json").write_text(json.dumps([{"id": 0, "name": "only"}]))
    return root


def make_kg(root: Path) -> Path:
    root.mkdir(parents=True)
    for split, tail in (("train", "y"), ("valid", "z"), ("test", "w")):
        (root / f"{split}.txt").write_text(f"x\tr\t{tail}\n")
    return root


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root with tag/MyTag and kg/MyKG; $GEOFM_DATA and the cache point into tmp_path."""
    root = tmp_path / "data"
    make_tag(root / "tag" / "MyTag")
    make_kg(root / "kg" / "MyKG")
    monkeypatch.setenv("GEOFM_DATA", str(root))
    monkeypatch.setenv("GEOFM_CACHE", str(tmp_path / "cache"))
    return root


def test_names_are_case_insensitive(isolated: Path) -> None:
    assert isinstance(load_dataset("mytag"), TAGDataset)
    kg = load_dataset("MYKG")
    assert isinstance(kg, KGDataset) and kg.name == "MyKG"
    assert known_datasets() == ["MyKG", "MyTag"]


def test_explicit_data_dir_beats_env(isolated: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    make_kg(other / "kg" / "MyTag")  # same name, different format
    assert isinstance(load_dataset("mytag", data_dir=other, cache=False), KGDataset)
    assert isinstance(load_dataset("mytag", cache=False), TAGDataset)


def test_flat_root_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOFM_CACHE", str(tmp_path / "cache"))
    flat = tmp_path / "flat"
    folder = make_tag(flat / "users-graph")
    assert find_dataset("USERS-GRAPH", data_dir=flat) == folder
    ds = load_dataset(str(folder), cache=False)  # any folder in the format, not only known names
    assert ds.num_nodes == 2 and ds.name == "users-graph"
    with pytest.raises(FileNotFoundError, match="dataset folder .*no-such/cora does not exist"):
        load_dataset(str(tmp_path / "no-such" / "cora"), cache=False)


def test_unknown_name_lists_known(isolated: Path) -> None:
    with pytest.raises(ValueError) as info:
        load_dataset("cora2")
    msg = str(info.value)
    assert "'cora2'" in msg and "MyKG" in msg and "MyTag" in msg and "WN18RR" in msg


def test_downloadable_name_hints_the_command(isolated: Path) -> None:
    with pytest.raises(ValueError, match="geofm data download FB15k-237"):
        load_dataset("fb15k-237")


def test_not_a_dataset_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert detect_format(tmp_path / "empty") is None
    with pytest.raises(ValueError, match="not a dataset folder"):
        load_dataset(str(tmp_path / "empty"))
    (tmp_path / "empty" / "train.txt").write_text("a\tr\tb\n")
    with pytest.raises(ValueError, match=r"missing valid.txt, test.txt"):  # names what is missing
        load_dataset(str(tmp_path / "empty"))


def test_detect_format(tmp_path: Path) -> None:
    assert detect_format(make_tag(tmp_path / "t")) == "tag"
    assert detect_format(make_kg(tmp_path / "k")) == "kg"
    assert detect_format(tmp_path / "missing") is None


def test_unknown_loader_option(isolated: Path) -> None:
    with pytest.raises(ValueError, match="unknown option.*'entity_txt'"):
        load_dataset("mykg", entity_txt="x.txt")
    assert load_dataset("mykg", on_duplicate="error", cache=False).num_entities == 4


def test_resolve_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOFM_DATA", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir(tmp_path / ".") == tmp_path / "."
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_data_dir(tmp_path / "nope")
    monkeypatch.setenv("GEOFM_DATA", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="GEOFM_DATA"):
        resolve_data_dir()


def test_real_names_resolve(data_dir: Path, tmp_path: Path) -> None:
    names = {n.lower() for n in known_datasets(data_dir, cache_dir=tmp_path)}
    assert {"cora", "arxiv2023", "webkb-cornell", "webkb-texas", "wn18rr", "fb15k-237"} <= names
    ds = load_dataset("WEBKB-TEXAS", data_dir, cache_dir=tmp_path)
    assert ds.num_nodes == 187 and ds.meta["checksums"]["edges.tsv"] == "3159c8c808613439c1a322d03e2012c4"
