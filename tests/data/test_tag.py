"""TAG loader: real-data counts (skip without ../shared/data) and every bad-input path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geofm.data import DataFormatError, DataWarning, load_tag


def write_tag(
    root: Path,
    *,
    nodes: list[dict] | None = None,
    edges: str = "src\tdst\n0\t1\n1\t2\n2\t0\n",
    labels: list | None = None,
    splits: dict | None = None,
    meta: dict | None = None,
    nodes_raw: bytes | None = None,
) -> Path:
    """A tiny TAG folder: 3 nodes, 2 classes, a directed triangle unless overridden."""
    root.mkdir(parents=True, exist_ok=True)
    if nodes is None:
        nodes = [{"id": i, "text": f"node {i} ü", "label": i % 2} for i in range(3)]
    if nodes_raw is None:
        nodes_raw = "".join(json.dumps(n) + "\n" for n in nodes).encode()
    (root / "nodes.jsonl").write_bytes(nodes_raw)
    (root / "edges.tsv").write_text(edges)
    labels = labels if labels is not None else [
        {"id": 0, "name": "even", "description": "even ids"},
        {"id": 1, "name": "odd", "description": "odd ids"},
    ]
    (root / "labels.json").write_text(json.dumps(labels))
    if splits is not None:
        (root / "splits.json").write_text(json.dumps(splits))
    if meta is not None:
        (root / "meta.json").write_text(json.dumps(meta))
    return root


# ---------------------------------------------------------------- real data

REAL = {
    # name: (nodes, directed edge rows, classes, self-loops, undirected unique pairs without loops)
    "cora": (2708, 5429, 7, 0, 5278),
    "arxiv2023": (33868, 305672, 40, 17, 303379),
    "webkb-cornell": (191, 293, 5, 1, 274),
    "webkb-texas": (187, 328, 5, 18, 280),
}


@pytest.mark.filterwarnings("ignore:.*dropped .* self-loop")
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_tag_counts(data_dir: Path, name: str) -> None:
    nodes, rows, classes, loops, pairs = REAL[name]
    ds = load_tag(data_dir / "tag" / name)
    assert ds.num_nodes == nodes == len(ds.texts) == len(ds.labels)
    assert ds.edge_index.shape == (2, rows) and ds.edge_index.dtype == np.int32
    assert ds.num_classes == classes
    assert int((ds.edge_index[0] == ds.edge_index[1]).sum()) == loops
    sym = load_tag(data_dir / "tag" / name, symmetric=True, on_self_loop="drop")
    assert sym.edge_index.shape[1] == 2 * pairs
    readme_counts = json.loads((data_dir / "tag" / name / "meta.json").read_text())["label_counts"]
    counts = np.bincount(ds.labels, minlength=classes)
    assert {str(k): int(v) for k, v in enumerate(counts) if v} == readme_counts
    assert all(isinstance(t, str) and t for t in ds.texts)


def test_real_arxiv_splits(data_dir: Path) -> None:
    ds = load_tag(data_dir / "tag" / "arxiv2023")
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 19461, "valid": 4682, "test": 668}
    assert ds.domain == "citation"


# ---------------------------------------------------------------- valid tiny data


def test_tiny_roundtrip(tmp_path: Path) -> None:
    nodes = [{"id": 0, "text": "a", "label": 1}, {"id": 1, "text": "b", "label": None}, {"id": 2, "text": "", "label": 0}]
    root = write_tag(tmp_path / "mine", nodes=nodes, splits={"train": [0], "test": [2, 1]}, meta={"domain": "toy"})
    ds = load_tag(root)
    assert ds.name == "mine" and ds.domain == "toy"
    assert ds.texts == ["a", "b", ""]
    np.testing.assert_array_equal(ds.labels, [1, -1, 0])
    np.testing.assert_array_equal(ds.edge_index, [[0, 1, 2], [1, 2, 0]])
    assert ds.class_names == ["even", "odd"] and ds.class_descriptions == ["even ids", "odd ids"]
    assert set(ds.splits) == {"train", "test"} and ds.splits["test"].tolist() == [2, 1]


def test_symmetric_and_self_loop_options(tmp_path: Path) -> None:
    root = write_tag(tmp_path / "g", edges="src\tdst\n0\t1\n1\t0\n1\t2\n")
    ds = load_tag(root, symmetric=True, add_self_loops=True)
    got = {tuple(e) for e in ds.edge_index.T.tolist()}
    assert got == {(0, 1), (1, 0), (1, 2), (2, 1), (0, 0), (1, 1), (2, 2)}
    assert ds.edge_index.shape[1] == len(got)


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    ds = load_tag(write_tag(tmp_path / "g", edges="\ufeffsrc\tdst\n0\t1\n"))
    assert ds.edge_index.shape == (2, 1)


def test_empty_edge_file_is_allowed(tmp_path: Path) -> None:
    ds = load_tag(write_tag(tmp_path / "g", edges="src\tdst\n"))
    assert ds.edge_index.shape == (2, 0)


# ---------------------------------------------------------------- bad input


def _raises(root: Path, file: str, line: int | None, match: str, **kw) -> None:
    with pytest.raises(DataFormatError, match=match) as info:
        load_tag(root, **kw)
    assert info.value.path.endswith(file)
    assert info.value.line == line
    assert file in str(info.value)


def test_malformed_json_line(tmp_path: Path) -> None:
    raw = b'{"id": 0, "text": "a", "label": 0}\n{"id": 1, "text": "b", "label": 0\n{"id": 2, "text": "c", "label": 0}\n'
    _raises(write_tag(tmp_path / "g", nodes_raw=raw), "nodes.jsonl", 2, "invalid JSON")


def test_node_ids_out_of_order(tmp_path: Path) -> None:
    nodes = [{"id": 0, "text": "a", "label": 0}, {"id": 2, "text": "b", "label": 0}, {"id": 1, "text": "c", "label": 0}]
    _raises(write_tag(tmp_path / "g", nodes=nodes), "nodes.jsonl", 2, "expected 1")


def test_label_outside_labels_json(tmp_path: Path) -> None:
    nodes = [{"id": 0, "text": "a", "label": 0}, {"id": 1, "text": "b", "label": 0}, {"id": 2, "text": "c", "label": 5}]
    _raises(write_tag(tmp_path / "g", nodes=nodes), "nodes.jsonl", 3, "label 5 outside labels.json")


def test_non_string_text_and_bad_label_type(tmp_path: Path) -> None:
    _raises(write_tag(tmp_path / "a", nodes=[{"id": 0, "text": 3, "label": 0}]), "nodes.jsonl", 1, "'text' must be a string")
    _raises(write_tag(tmp_path / "b", nodes=[{"id": 0, "text": "x", "label": "0"}]), "nodes.jsonl", 1, "'label' must be an integer")


def test_non_utf8_text(tmp_path: Path) -> None:
    raw = b'{"id": 0, "text": "a", "label": 0}\n{"id": 1, "text": "caf\xe9", "label": 0}\n'
    _raises(write_tag(tmp_path / "g", nodes_raw=raw), "nodes.jsonl", 2, "not valid UTF-8")


def test_bad_edge_header(tmp_path: Path) -> None:
    _raises(write_tag(tmp_path / "g", edges="source\ttarget\n0\t1\n"), "edges.tsv", 1, "header")


@pytest.mark.parametrize(
    "edges, line, match",
    [
        ("src\tdst\n0\t1\n1\n", 3, "expected `src<TAB>dst`"),
        ("src\tdst\n0\t1\n1\t2\t0\n", 3, "expected `src<TAB>dst`"),
        ("src\tdst\n0\t1\n1\tx\n", 3, "not a non-negative integer"),
        ("src\tdst\n-1\t1\n", 2, "not a non-negative integer"),
        ("src\tdst\n0 1\n", 2, "expected `src<TAB>dst`"),
    ],
)
def test_malformed_edge_rows(tmp_path: Path, edges: str, line: int, match: str) -> None:
    _raises(write_tag(tmp_path / "g", edges=edges), "edges.tsv", line, match)


def test_trailing_blank_lines_are_ignored_in_edges(tmp_path: Path) -> None:
    a = load_tag(write_tag(tmp_path / "a", edges="src\tdst\n0\t1\n1\t2\n"))
    b = load_tag(write_tag(tmp_path / "b", edges="src\tdst\n0\t1\n1\t2\n\n  \n"))
    np.testing.assert_array_equal(a.edge_index, b.edge_index)


def test_out_of_range_edge_id(tmp_path: Path) -> None:
    _raises(write_tag(tmp_path / "g", edges="src\tdst\n0\t1\n2\t3\n"), "edges.tsv", 3, "out of range")


def test_duplicate_edges_drop_with_count_or_error(tmp_path: Path) -> None:
    root = write_tag(tmp_path / "g", edges="src\tdst\n0\t1\n1\t2\n0\t1\n0\t1\n")
    with pytest.warns(DataWarning, match="dropped 2 duplicate"):
        ds = load_tag(root)
    np.testing.assert_array_equal(ds.edge_index, [[0, 1], [1, 2]])
    assert ds.meta["load"]["duplicates_dropped"] == 2
    _raises(root, "edges.tsv", 4, "duplicate edge 0 -> 1", on_duplicate="error")


def test_self_loops_keep_drop_error(tmp_path: Path) -> None:
    root = write_tag(tmp_path / "g", edges="src\tdst\n0\t1\n2\t2\n")
    assert load_tag(root).edge_index.shape[1] == 2
    with pytest.warns(DataWarning, match="dropped 1 self-loop"):
        ds = load_tag(root, on_self_loop="drop")
    np.testing.assert_array_equal(ds.edge_index, [[0], [1]])
    _raises(root, "edges.tsv", 3, "self-loop 2 -> 2", on_self_loop="error")


def test_bad_option_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_duplicate"):
        load_tag(write_tag(tmp_path / "g"), on_duplicate="ignore")


@pytest.mark.parametrize(
    "splits, match",
    [
        ({"train": [0], "valid": []}, "split 'valid' is empty"),
        ({"train": [0, 7]}, "node id 7 out of range"),
        ({"train": [0, 0]}, "more than once"),
        ({"training": [0]}, "unknown split"),
        ({"train": ["0"]}, "integer node ids"),
    ],
)
def test_bad_splits(tmp_path: Path, splits: dict, match: str) -> None:
    _raises(write_tag(tmp_path / "g", splits=splits), "splits.json", None, match)


def test_overlapping_splits_warn(tmp_path: Path) -> None:
    with pytest.warns(DataWarning, match="1 node"):
        load_tag(write_tag(tmp_path / "g", splits={"train": [0, 1], "test": [1, 2]}))


def test_bad_labels_json(tmp_path: Path) -> None:
    _raises(write_tag(tmp_path / "a", labels=[]), "labels.json", None, "non-empty")
    _raises(write_tag(tmp_path / "b", labels=[{"id": 1, "name": "x"}]), "labels.json", None, "expected 0")
    root = write_tag(tmp_path / "c")
    (root / "labels.json").write_text('[{"id": 0, "name": "x"},\n oops]')
    _raises(root, "labels.json", 2, "invalid JSON")


def test_missing_files(tmp_path: Path) -> None:
    root = write_tag(tmp_path / "g")
    (root / "edges.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="edges.tsv"):
        load_tag(root)


def test_missing_or_null_text_reads_as_empty_with_warning(tmp_path: Path) -> None:
    import warnings

    from geofm.data import DataWarning

    folder = write_tag(tmp_path / "m", nodes=[{"id": 0, "label": 0}, {"id": 1, "text": None, "label": 0}, {"id": 2, "text": "x", "label": 0}])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_tag(folder)
    assert ds.texts == ["", "", "x"]
    assert any(issubclass(w.category, DataWarning) and "2 node(s) have no 'text'" in str(w.message) for w in caught)


# ---------------------------------------------------------------- subgraphs

def test_snowball_nodes_grows_connected_pieces_and_is_seeded() -> None:
    from geofm.data.tag import snowball_nodes

    # two 6-node paths (0..5, 6..11)
    ei = np.array([[0, 1, 2, 3, 4, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]])
    for seed in range(20):
        keep = snowball_nodes(ei, 12, 4, seed=seed)
        assert keep.size == 4 and np.all(np.diff(keep) > 0)
        assert (keep < 6).all() or (keep >= 6).all()  # one path ...
        assert keep.max() - keep.min() == 3  # ... grown breadth-first: a contiguous piece
        np.testing.assert_array_equal(keep, snowball_nodes(ei, 12, 4, seed=seed))
    assert snowball_nodes(ei, 12, 12, seed=0).tolist() == list(range(12))
    parts = (set(range(6)), set(range(6, 12)), {12})  # the two paths and an isolated node 12
    for seed in range(20):  # 9 nodes: whole components, a new root each time one is used up ...
        keep = {int(k) for k in snowball_nodes(ei, 13, 9, seed=seed)}
        assert len(keep) == 9 and sum(0 < len(p & keep) < len(p) for p in parts) <= 1  # ... so at most one is cut
    with pytest.raises(ValueError, match="cap must be >= 1"):
        snowball_nodes(ei, 13, 0, seed=0)


def test_induced_subgraph_renumbers_edges_texts_labels(tmp_path: Path) -> None:
    from geofm.data.tag import induced_subgraph

    nodes = [{"id": i, "text": f"t{i}", "label": i % 2} for i in range(5)]
    ds = load_tag(write_tag(tmp_path / "g", nodes=nodes, edges="src\tdst\n0\t1\n1\t2\n2\t3\n3\t4\n4\t0\n",
                            splits={"train": [0], "valid": [1], "test": [2]}))
    sub = induced_subgraph(ds, np.array([1, 2, 4]))
    assert sub.num_nodes == 3 and sub.texts == ["t1", "t2", "t4"] and sub.labels.tolist() == [1, 0, 0]
    assert sorted(map(tuple, sub.edge_index.T.tolist())) == [(0, 1)]  # 1->2 survives as 0->1; 4->0 and 3->4 do not
    assert sub.splits is None and sub.meta["subgraph"] == {"of_nodes": 5, "nodes": 3}
    assert sub.class_names == ds.class_names and ds.num_nodes == 5  # the original is untouched
