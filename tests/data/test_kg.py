"""KG loader: WN18RR / FB15k-237 counts (skip without ../shared/data), vocabulary order, bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from geofm.data import DataFormatError, DataWarning, load_kg


def write_kg(root: Path, files: dict[str, str | bytes]) -> Path:
    """Write a KG folder; names ending in .gz are gzipped; bytes are written verbatim."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (root / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return root


TINY = {
    "train.txt": "007\tr1\tb\nb\tr2\tc\n",
    "valid.txt": "c\tr1\tnew1\n",
    "test.txt": "new2\tr3\t007\nnew1\tr1\tb\n",
}


# ---------------------------------------------------------------- real data


def test_real_wn18rr(data_dir: Path) -> None:
    ds = load_kg(data_dir / "kg" / "WN18RR")
    assert (ds.num_entities, ds.num_relations) == (40943, 11)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (86835, 3034, 3134)
    assert ds.meta["num_unseen_entities"] == {"valid": 198, "test": 209}
    assert ds.entities[0] == "00260881"  # string ids: leading zeros kept
    assert ds.train.dtype == np.int32 and ds.train.shape[1] == 3
    # train entities come first in the vocabulary
    assert int(np.concatenate([ds.train[:, 0], ds.train[:, 2]]).max()) + 1 == ds.meta["num_train_entities"]
    assert ds.meta["num_train_entities"] == 40943 - len(
        set(ds.entities) - {ds.entities[i] for i in np.unique(ds.train[:, [0, 2]])}
    )
    assert all(t is not None for t in ds.entity_text) and ds.relation_text[ds.relations.index("_has_part")] == "has part"


def test_real_fb15k237(data_dir: Path) -> None:
    ds = load_kg(data_dir / "kg" / "FB15k-237", entity_text="entity2text_firstsentence.txt")
    assert (ds.num_entities, ds.num_relations) == (14541, 237)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (272115, 17535, 20466)
    assert ds.meta["num_unseen_entities"] == {"valid": 8, "test": 29}
    assert ds.meta["files"]["train"] == "train.txt.gz"
    assert ds.meta["entity_text"]["ignored_unknown_ids"] == 410
    assert ds.entity_text[ds.entities.index("/m/016ywr")] == "Jeremy Irons -- Jeremy John Irons is an English actor."


# ---------------------------------------------------------------- tiny data


def test_vocab_order_and_unseen_entities_kept(tmp_path: Path) -> None:
    with pytest.warns(DataWarning, match=r"test.txt: 1 relation\(s\) never occur in train.txt"):
        ds = load_kg(write_kg(tmp_path / "k", TINY))
    assert ds.entities == ["007", "b", "c", "new1", "new2"]
    assert ds.relations == ["r1", "r2", "r3"]
    np.testing.assert_array_equal(ds.valid, [[2, 0, 3]])
    np.testing.assert_array_equal(ds.test, [[4, 2, 0], [3, 0, 1]])
    assert ds.meta["num_unseen_entities"] == {"valid": 1, "test": 2}
    assert ds.meta["num_unseen_relations"] == {"valid": 0, "test": 1}
    assert ds.entity_text is None and ds.relation_text is None


def test_gzip_and_texts(tmp_path: Path) -> None:
    files = {**TINY, "train.txt.gz": TINY["train.txt"], "entity2text.txt": "007\tbond\nc\t\nzzz\textra\n"}
    del files["train.txt"]
    with pytest.warns(DataWarning, match="3 of 5 entity ids have no text"):
        ds = load_kg(write_kg(tmp_path / "k", files))
    assert ds.entity_text == ["bond", None, "", None, None]
    assert ds.meta["entity_text"] == {"file": "entity2text.txt", "ignored_unknown_ids": 1, "missing": 3}


def test_single_alternative_entity_text_is_picked(tmp_path: Path) -> None:
    root = write_kg(tmp_path / "k", {**TINY, "entity2text_long.txt": "007\ta\nb\tb\nc\tc\nnew1\td\nnew2\te\n"})
    assert load_kg(root).entity_text == ["a", "b", "c", "d", "e"]
    assert load_kg(root, entity_text=None).entity_text is None
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_kg(root, entity_text="nope.txt")
    with pytest.raises(FileNotFoundError, match="relation text file 'relation2txt.txt' not found"):
        load_kg(root, relation_text="relation2txt.txt")
    assert load_kg(root).relation_text is None  # the default name may be absent


def test_crlf_lines_accepted(tmp_path: Path) -> None:
    files = {k: v.replace("\n", "\r\n") for k, v in TINY.items()}
    assert load_kg(write_kg(tmp_path / "k", files)).entities == ["007", "b", "c", "new1", "new2"]


# ---------------------------------------------------------------- bad input


def _raises(root: Path, file: str, line: int | None, match: str, **kw) -> None:
    with pytest.raises(DataFormatError, match=match) as info:
        load_kg(root, **kw)
    assert Path(info.value.path).name == file and info.value.line == line


@pytest.mark.parametrize(
    "content, line, match",
    [
        ("a\tr\tb\nb\tr\n", 2, "3 fields"),
        ("a\tr\tb\nb\tr\tc\td\n", 2, "3 fields"),
        ("a\tr\tb\n\nb\tr\tc\n", 2, "3 fields"),
        ("a\tr\tb\nb\t\tc\n", 2, "empty field"),
        ("a r b\n", 1, "3 fields"),
    ],
)
def test_malformed_triples(tmp_path: Path, content: str, line: int, match: str) -> None:
    _raises(write_kg(tmp_path / "k", {**TINY, "valid.txt": content}), "valid.txt", line, match)


def test_trailing_blank_lines_are_ignored(tmp_path: Path) -> None:
    """An editor's extra newlines at the end of a split carry no triple (a blank line inside is an error)."""
    plain = load_kg(write_kg(tmp_path / "a", TINY))
    ds = load_kg(write_kg(tmp_path / "b", {**TINY, "valid.txt": TINY["valid.txt"] + "\n \n\r\n"}))
    np.testing.assert_array_equal(ds.valid, plain.valid)
    _raises(write_kg(tmp_path / "c", {**TINY, "valid.txt": "\n" + TINY["valid.txt"]}), "valid.txt", 1, "3 fields")
    _raises(write_kg(tmp_path / "d", {**TINY, "test.txt": "\n\n"}), "test.txt", None, "empty split")
    # a bad row before the blank tail keeps its line number; a row of TABs is a row (empty fields)
    _raises(write_kg(tmp_path / "e", {**TINY, "valid.txt": "a\tr1\tb\nb\tr1\n\n \n"}), "valid.txt", 2, "3 fields")
    _raises(write_kg(tmp_path / "f", {**TINY, "valid.txt": TINY["valid.txt"] + "\t\t\n"}), "valid.txt", 2, "empty field")


def test_empty_split(tmp_path: Path) -> None:
    _raises(write_kg(tmp_path / "k", {**TINY, "test.txt": ""}), "test.txt", None, "empty split")


def test_non_utf8(tmp_path: Path) -> None:
    _raises(write_kg(tmp_path / "k", {**TINY, "train.txt": b"a\tr\tb\nb\tr\tc\xff\n"}), "train.txt", 2, "not valid UTF-8")
    root = write_kg(tmp_path / "t", {**TINY, "entity2text.txt": b"007\tok\nb\t\xc3(\n"})
    _raises(root, "entity2text.txt", 2, "not valid UTF-8")


def test_text_line_without_tab(tmp_path: Path) -> None:
    _raises(write_kg(tmp_path / "k", {**TINY, "relation2text.txt": "r1\tone\nr2 two\n"}), "relation2text.txt", 2, "id<TAB>text")


def test_corrupt_gzip(tmp_path: Path) -> None:
    root = write_kg(tmp_path / "k", {"valid.txt": TINY["valid.txt"], "test.txt": TINY["test.txt"]})
    (root / "train.txt.gz").write_bytes(gzip.compress(TINY["train.txt"].encode() * 50)[:-20])
    _raises(root, "train.txt.gz", None, "gzip")


def test_duplicates_and_self_loops(tmp_path: Path) -> None:
    root = write_kg(tmp_path / "k", {**TINY, "train.txt": "a\tr\tb\nb\tr\tb\na\tr\tb\nb\tr\tc\n"})
    with pytest.warns(DataWarning, match="dropped 1 duplicate"):
        ds = load_kg(root)
    assert len(ds.train) == 3 and ds.meta["dropped"]["train"]["duplicates_dropped"] == 1
    _raises(root, "train.txt", 3, "duplicate triple", on_duplicate="error")
    _raises(root, "train.txt", 2, "self-loop", on_self_loop="error", on_duplicate="drop")
    with pytest.warns(DataWarning) as record:
        ds = load_kg(root, on_self_loop="drop")
    assert any("dropped 1 self-loop" in str(w.message) for w in record)
    assert len(ds.train) == 2


def test_cross_split_leakage_warns(tmp_path: Path) -> None:
    with pytest.warns(DataWarning, match="1 triple"):
        load_kg(write_kg(tmp_path / "k", {**TINY, "test.txt": "007\tr1\tb\n"}))


def test_missing_split_file(tmp_path: Path) -> None:
    root = write_kg(tmp_path / "k", {"train.txt": TINY["train.txt"], "test.txt": TINY["test.txt"]})
    with pytest.raises(FileNotFoundError, match="valid.txt"):
        load_kg(root)
