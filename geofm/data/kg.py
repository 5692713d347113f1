"""Knowledge-graph loader for the folder format of shared/data/kg/README.md.

Folder contents:
  train.txt, valid.txt, test.txt   `head<TAB>relation<TAB>tail` per line (each may be `.txt.gz`)
  entity2text*.txt                 optional `entity_id<TAB>text`
  relation2text.txt                optional `relation_id<TAB>text`

Ids are kept as strings (WN18RR's leading zeros matter). The vocabulary lists
train entities/relations in order of first appearance, then those first seen
in valid, then in test: unseen valid/test entities are appended, never dropped.
"""

from __future__ import annotations

from pathlib import Path
import numpy as np

from geofm.data._io import DataFormatError, read_text, read_tsv_pairs, split_body, warn
from geofm.data.tag import OnDuplicate, OnSelfLoop, _check_choice
from geofm.data.types import KGDataset

KG_SPLITS = ("train", "valid", "test")
DEFAULT_ENTITY_TEXT = "entity2text.txt"
DEFAULT_RELATION_TEXT = "relation2text.txt"


def find_split_file(root: Path, split: str) -> Path | None:
    """`<split>.txt` or `<split>.txt.gz` under root (plain text preferred), else None."""
    for name in (f"{split}.txt", f"{split}.txt.gz"):
        if (root / name).is_file():
            return root / name
    return None


def _triple_line_error(path: Path, lines: list[str]) -> DataFormatError:
    """Locate the first malformed triple line (slow path after the fast parse failed)."""
    for i, line in enumerate(lines, start=1):
        parts = line.split("\t")
        if len(parts) != 3:
            return DataFormatError(path, i, f"expected `head<TAB>relation<TAB>tail` (3 fields), got {len(parts)}: {line[:80]!r}")
        if not all(p.strip() for p in parts):
            return DataFormatError(path, i, f"empty field in {line[:80]!r}")
    return DataFormatError(path, None, "could not parse triples")


def read_triples(path: Path) -> list[str]:
    """Triple file -> flat list [h0, r0, t0, h1, ...] of string ids; validates every line."""
    text = read_text(path)
    lines, body = split_body(text)
    if not lines:
        raise DataFormatError(path, None, "empty split: no triples")
    if body.count("\t") != 2 * len(lines):
        raise _triple_line_error(path, lines)
    cells = body.replace("\n", "\t").split("\t")
    cells.pop()  # the empty string after the final newline
    if len(cells) != 3 * len(lines) or "" in cells:
        raise _triple_line_error(path, lines)
    return cells


def _index(cells: list[str], ent: dict[str, int], rel: dict[str, int]) -> np.ndarray:
    """Map flat (h, r, t) string cells to int32 [n, 3], extending the vocabularies in first-seen order."""
    heads, rels, tails = cells[0::3], cells[1::3], cells[2::3]
    h = [ent.setdefault(e, len(ent)) for e in heads]
    r = [rel.setdefault(x, len(rel)) for x in rels]
    t = [ent.setdefault(e, len(ent)) for e in tails]
    return np.stack([np.asarray(h, np.int32), np.asarray(r, np.int32), np.asarray(t, np.int32)], axis=1)


def pick_entity_text(root: Path, entity_text: str | None) -> Path | None:
    """The entity text file to use: the named one, else the only entity2text*.txt present."""
    if entity_text is None:
        return None
    if (root / entity_text).is_file():
        return root / entity_text
    if entity_text != DEFAULT_ENTITY_TEXT:
        raise FileNotFoundError(f"{root}: entity text file {entity_text!r} not found")
    others = sorted(root.glob("entity2text*.txt"))
    return others[0] if len(others) == 1 else None


def read_id_texts(path: Path | None, vocab: dict[str, int], what: str) -> tuple[list[str | None] | None, dict]:
    """Per-id texts from an `id<TAB>text` file; ids not in `vocab` are ignored and counted."""
    if path is None:
        return None, {}
    out: list[str | None] = [None] * len(vocab)
    extra = 0
    for key, value in read_tsv_pairs(path, what=f"{what}_id<TAB>text"):
        idx = vocab.get(key)
        if idx is None:
            extra += 1
        else:
            out[idx] = value
    missing = sum(v is None for v in out)
    if missing:
        warn(f"{path}: {missing} of {len(vocab)} {what} ids have no text")
    return out, {"file": path.name, "ignored_unknown_ids": extra, "missing": missing}


def load_kg(
    path: str | Path,
    *,
    entity_text: str | None = DEFAULT_ENTITY_TEXT,
    relation_text: str | None = DEFAULT_RELATION_TEXT,
    on_duplicate: OnDuplicate = "drop",
    on_self_loop: OnSelfLoop = "keep",
    name: str | None = None,
) -> KGDataset:
    """Load a KG folder into a KGDataset with int32 [n, 3] (head, relation, tail) splits.

    entity_text: file name of the entity texts (default `entity2text.txt`; when
        that is absent and exactly one `entity2text*.txt` exists it is used;
        None skips texts; another name that is missing is a FileNotFoundError).
        relation_text: file name of the relation texts (default `relation2text.txt`, used
        when present; None or "" skips them; another name that is missing is a
        FileNotFoundError).
    on_duplicate: a triple repeated within a split is dropped with a warning
        ("drop") or raises ("error"). on_self_loop: triples with head == tail are
        kept, dropped with a warning, or rejected.
    meta["num_unseen_entities"] = {"valid": n, "test": m}: entities of that split
    absent from train (appended to the vocabulary, never dropped).
    """
    _check_choice("on_duplicate", on_duplicate, ("drop", "error"))
    _check_choice("on_self_loop", on_self_loop, ("keep", "drop", "error"))
    root = Path(path)
    files = {s: find_split_file(root, s) for s in KG_SPLITS}
    missing = [f"{s}.txt" for s, f in files.items() if f is None]
    if missing:
        raise FileNotFoundError(f"{root}: not a KG dataset folder, missing {', '.join(missing)} (or .txt.gz)")
    ent: dict[str, int] = {}
    rel: dict[str, int] = {}
    splits: dict[str, np.ndarray] = {}
    unseen_ent: dict[str, int] = {}
    unseen_rel: dict[str, int] = {}
    dropped: dict[str, dict[str, int]] = {}
    train_ent = train_rel = 0
    for split in KG_SPLITS:
        triples = _index(read_triples(files[split]), ent, rel)
        if split == "train":
            train_ent, train_rel = len(ent), len(rel)
        else:
            unseen_ent[split] = int(len(np.unique(triples[:, [0, 2]][triples[:, [0, 2]] >= train_ent])))
            unseen_rel[split] = int((np.unique(triples[:, 1]) >= train_rel).sum())
            if unseen_rel[split]:
                warn(f"{files[split]}: {unseen_rel[split]} relation(s) never occur in {files['train'].name}; their "
                     "triples are kept and ranked with untrained relation parameters")
        triples, dropped[split] = clean_triples(triples, files[split], on_duplicate=on_duplicate, on_self_loop=on_self_loop)
        if len(triples) == 0:
            raise DataFormatError(files[split], None, "empty split after dropping duplicates/self-loops")
        splits[split] = np.ascontiguousarray(triples)
    _warn_leakage(splits, files)
    ent_text, ent_info = read_id_texts(pick_entity_text(root, entity_text), ent, "entity")
    rel_file = root / relation_text if relation_text and (root / relation_text).is_file() else None
    if relation_text and rel_file is None and relation_text != DEFAULT_RELATION_TEXT:
        raise FileNotFoundError(f"{root}: relation text file {relation_text!r} not found")
    rel_text, rel_info = read_id_texts(rel_file, rel, "relation")
    meta = {
        "format": "kg",
        "files": {s: f.name for s, f in files.items()},
        "num_train_entities": train_ent,
        "num_unseen_entities": unseen_ent,
        "num_unseen_relations": unseen_rel,
        "dropped": dropped,
        "on_duplicate": on_duplicate,
        "on_self_loop": on_self_loop,
        "entity_text": ent_info,
        "relation_text": rel_info,
        "source": str(root.resolve()),
    }
    return KGDataset(
        name=name or root.resolve().name,  # "." has no name of its own
        entities=list(ent),
        relations=list(rel),
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        entity_text=ent_text,
        relation_text=rel_text,
        meta=meta,
    )


def clean_triples(
    triples: np.ndarray, path: Path, *, on_duplicate: OnDuplicate, on_self_loop: OnSelfLoop
) -> tuple[np.ndarray, dict[str, int]]:
    """Drop or reject repeated triples and head == tail triples of an int32 [n, 3] split.

    The first occurrence of a repeated triple is kept; errors name the file line
    (row i is line i + 1). Returns the kept triples and the dropped counts.
    """
    key = _triple_keys(triples)
    _, first = np.unique(key, return_index=True)
    dup = np.ones(len(triples), dtype=bool)
    dup[first] = False
    loops = triples[:, 0] == triples[:, 2]
    if dup.any() and on_duplicate == "error":
        i = int(np.argmax(dup))
        raise DataFormatError(path, i + 1, "duplicate triple (on_duplicate='error')")
    if loops.any() and on_self_loop == "error":
        i = int(np.argmax(loops))
        raise DataFormatError(path, i + 1, "self-loop triple, head == tail (on_self_loop='error')")
    drop_loops = loops if on_self_loop == "drop" else np.zeros_like(loops)
    if dup.any():
        warn(f"{path}: dropped {int(dup.sum())} duplicate triple(s)")
    if drop_loops.any():
        warn(f"{path}: dropped {int(drop_loops.sum())} self-loop triple(s)")
    keep = ~dup & ~drop_loops
    stats = {"duplicates_dropped": int(dup.sum()), "self_loops_dropped": int((drop_loops & ~dup).sum())}
    return triples[keep], stats


def _triple_keys(t: np.ndarray, num_entities: int | None = None, num_relations: int | None = None) -> np.ndarray:
    """One int64 per (h, r, t) row, equal iff the triples are (ids must be below the given counts)."""
    ne = int(t[:, [0, 2]].max()) + 1 if num_entities is None else num_entities
    nr = int(t[:, 1].max()) + 1 if num_relations is None else num_relations
    if ne * ne * nr >= 2**63:
        raise ValueError(f"too many entities/relations ({ne}, {nr}) for int64 triple keys")
    return (t[:, 0].astype(np.int64) * nr + t[:, 1]) * ne + t[:, 2]


def _warn_leakage(splits: dict[str, np.ndarray], files: dict[str, Path]) -> None:
    """Warn (with counts) when a triple appears in more than one split."""
    ne = int(max(t[:, [0, 2]].max() for t in splits.values())) + 1
    nr = int(max(t[:, 1].max() for t in splits.values())) + 1
    k = {s: _triple_keys(t, ne, nr) for s, t in splits.items()}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        n = len(np.intersect1d(k[a], k[b]))
        if n:
            warn(f"{files[b]}: {n} triple(s) also appear in {files[a].name}")

