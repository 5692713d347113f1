"""Processed-dataset cache: hit path, invalidation by checksum/options, atomic object-free npz."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofm.data import load_dataset, source_checksums
from geofm.data.cache import decode_strings, encode_strings, load_dataset_npz

pytestmark = pytest.mark.filterwarnings("ignore::geofm.data.DataWarning")  # "1 of 4 entity ids have no text"


def make_tag(root: Path) -> Path:
    root.mkdir(parents=True)
    nodes = [{"id": 0, "text": "zero\nline two", "label": 1}, {"id": 1, "text": "ünï", "label": None}, {"id": 2, "text": "", "label": 0}]
    (root / "nodes.jsonl").write_text("".join(json.dumps(n) + "\n" for n in nodes))
    (root / "edges.tsv").write_text("src\tdst\n0\t1\n1\t2\n")
    (root / "labels.json").write_text(json.dumps([{"id": 0, "name": "a", "description": "A"}, {"id": 1, "name": "b"}]))
    (root / "splits.json").write_text(json.dumps({"train": [0], "test": [1, 2]}))
    (root / "meta.json").write_text(json.dumps({"domain": "toy", "nested": {"x": [1, 2]}}))
    return root


def make_kg(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "train.txt").write_text("a\tr\tb\nb\ts\tc\n")
    (root / "valid.txt").write_text("c\tr\td\n")
    (root / "test.txt").write_text("d\ts\ta\n")
    (root / "entity2text.txt").write_text("a\tAlpha\nb\tBeta\nc\t\n")  # d has no text
    return root


def _same(x, y) -> None:
    assert type(x) is type(y)
    for f in x.__dataclass_fields__:
        a, b = getattr(x, f), getattr(y, f)
        if f == "meta":
            a, b = {k: v for k, v in a.items() if k != "cache"}, {k: v for k, v in b.items() if k != "cache"}
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), f
        elif isinstance(a, dict) and a and isinstance(next(iter(a.values())), np.ndarray):
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), f
        else:
            assert a == b, f


@pytest.mark.parametrize("make", [make_tag, make_kg])
def test_second_load_hits_and_matches(tmp_path: Path, make) -> None:
    folder = make(tmp_path / "ds")
    first = load_dataset(folder, cache_dir=tmp_path / "c")
    second = load_dataset(folder, cache_dir=tmp_path / "c")
    assert first.meta["cache"]["hit"] is False and second.meta["cache"]["hit"] is True
    assert first.meta["cache"]["path"] == second.meta["cache"]["path"]
    _same(first, second)
    uncached = load_dataset(folder, cache=False, cache_dir=tmp_path / "untouched")
    _same(first, uncached)
    assert not (tmp_path / "untouched").exists()
    if make is make_kg:
        assert second.entity_text == ["Alpha", "Beta", "", None]


def test_changed_source_or_options_miss(tmp_path: Path) -> None:
    folder = make_tag(tmp_path / "ds")
    c = tmp_path / "c"
    load_dataset(folder, cache_dir=c)
    assert load_dataset(folder, cache_dir=c, on_self_loop="drop").meta["cache"]["hit"] is False
    with open(folder / "edges.tsv", "a") as f:
        f.write("2\t0\n")
    ds = load_dataset(folder, cache_dir=c)
    assert ds.meta["cache"]["hit"] is False and ds.edge_index.shape[1] == 3
    assert load_dataset(folder, cache_dir=c).meta["cache"]["hit"] is True


def test_checksum_memo_tracks_rewrites(tmp_path: Path) -> None:
    folder = make_kg(tmp_path / "ds")
    before = source_checksums(folder, tmp_path / "c")
    (folder / "test.txt").write_text("d\ts\tb\n")  # same size, new content
    st_ = (folder / "test.txt").stat()
    os.utime(folder / "test.txt", ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    after = source_checksums(folder, tmp_path / "c")
    assert before["test.txt"] != after["test.txt"] and before["train.txt"] == after["train.txt"]


def test_corrupt_cache_entry_is_a_miss(tmp_path: Path) -> None:
    folder = make_kg(tmp_path / "ds")
    path = Path(load_dataset(folder, cache_dir=tmp_path / "c").meta["cache"]["path"])
    path.write_bytes(path.read_bytes()[:100])
    ds = load_dataset(folder, cache_dir=tmp_path / "c")
    assert ds.meta["cache"]["hit"] is False and ds.num_entities == 4
    assert load_dataset(folder, cache_dir=tmp_path / "c").meta["cache"]["hit"] is True


def test_npz_is_object_free_and_no_temp_left(tmp_path: Path) -> None:
    folder = make_tag(tmp_path / "ds")
    path = Path(load_dataset(folder, cache_dir=tmp_path / "c").meta["cache"]["path"])
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    assert load_dataset_npz(path).texts == ["zero\nline two", "ünï", ""]
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text()), max_size=20))
def test_string_codec_roundtrip(items: list[str | None]) -> None:
    assert decode_strings(*encode_strings(items)) == items


def test_cache_speedup_on_arxiv(data_dir: Path, tmp_path: Path) -> None:
    """The hit path is taken on the second load (the >= 10x timing is in bench/results/data_cache.json)."""
    first = load_dataset("arxiv2023", data_dir, cache_dir=tmp_path)
    second = load_dataset("arxiv2023", data_dir, cache_dir=tmp_path)
    assert not first.meta["cache"]["hit"] and second.meta["cache"]["hit"]
    assert second.num_nodes == 33868 and second.edge_index.shape == (2, 305672)
    assert second.texts[:100] == first.texts[:100] and np.array_equal(second.labels, first.labels)


def test_cache_hit_replays_loader_warnings(tmp_path):
    """Dropped-duplicate warnings are not lost when the second load comes from the cache."""
    import warnings

    from geofm.data import DataWarning, load_dataset

    folder = tmp_path / "dupkg"
    folder.mkdir()
    (folder / "train.txt").write_text("a\tr\tb\na\tr\tb\nb\tr\tc\n")
    (folder / "valid.txt").write_text("a\tr\tc\n")
    (folder / "test.txt").write_text("c\tr\ta\n")
    seen = []
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = load_dataset(folder, cache_dir=tmp_path / "cache")
        seen.append([str(w.message) for w in caught if issubclass(w.category, DataWarning)])
    assert ds.meta["cache"]["hit"] is True
    assert seen[0] and seen[1] == seen[0]


def test_atomic_writes_get_ordinary_file_permissions(tmp_path: Path) -> None:
    """A result written atomically is readable like one written with open() (mkstemp's temp
    files are owner-only: results, plots and records were 0600)."""
    from geofm.data.cache import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == (tmp_path / "plain.json").stat().st_mode & 0o777 == 0o644
