"""Text-attributed graph (TAG) loader for the folder format of shared/data/tag/README.md.

Folder contents:
  nodes.jsonl   one JSON object per line in id order: {"id": int, "text": str|null, "label": int|null, ...}
                (a missing/null text is read as "" with a counted DataWarning)
  edges.tsv     header `src<TAB>dst`, then one directed edge per row, 0-based node ids
  labels.json   list indexed by label id: {"id", "name", "description", ...}
  splits.json   optional {"train": [...], "valid": [...], "test": [...]} node ids
  meta.json     optional provenance; `domain` is copied to TAGDataset.domain
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import numpy as np

from geofm.data._io import DataFormatError, read_text, split_body, split_lines, warn
from geofm.data.types import TAGDataset

OnDuplicate = Literal["drop", "error"]
OnSelfLoop = Literal["keep", "drop", "error"]

TAG_REQUIRED = ("nodes.jsonl", "edges.tsv", "labels.json")
SPLIT_NAMES = ("train", "valid", "test")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def read_labels(path: Path) -> tuple[list[str], list[str]]:
    """labels.json -> (class names, class descriptions), both indexed by label id."""
    try:
        raw = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataFormatError(path, err.lineno, f"invalid JSON ({err.msg})") from None
    if not isinstance(raw, list) or not raw:
        raise DataFormatError(path, None, "expected a non-empty JSON list of {id, name, description}")
    names, descriptions = [], []
    for i, entry in enumerate(raw):
        if isinstance(entry, str):  # a bare list of class names is accepted too
            entry = {"id": i, "name": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise DataFormatError(path, None, f"entry {i}: expected an object with a string 'name'")
        if entry.get("id", i) != i:
            raise DataFormatError(path, None, f"entry {i}: 'id' is {entry['id']!r}, expected {i} (list is indexed by id)")
        desc = entry.get("description") or ""
        if not isinstance(desc, str):
            raise DataFormatError(path, None, f"entry {i}: 'description' must be a string")
        names.append(entry["name"])
        descriptions.append(desc)
    return names, descriptions


def read_nodes(path: Path, num_classes: int) -> tuple[list[str], np.ndarray]:
    """nodes.jsonl -> (texts [N], labels int32 [N], -1 for null/missing label).

    Node ids must equal the 0-based line index (file in id order); labels must
    index labels.json.
    """
    texts: list[str] = []
    labels: list[int] = []
    missing = 0
    lines = split_lines(read_text(path))
    for i, line in enumerate(lines):
        lineno = i + 1
        if not line.strip():
            raise DataFormatError(path, lineno, "empty line (one JSON object per line expected)")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(path, lineno, f"invalid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise DataFormatError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        node_id = obj.get("id", i)
        if type(node_id) is not int or node_id != i:
            raise DataFormatError(path, lineno, f"'id' is {node_id!r}, expected {i} (nodes must be listed in id order)")
        text = obj.get("text")
        if text is None:  # missing or null text: embedded as "" downstream, counted below
            text = ""
            missing += 1
        elif not isinstance(text, str):
            raise DataFormatError(path, lineno, f"'text' must be a string or null, got {type(text).__name__}")
        label = obj.get("label")
        if label is None:
            label = -1
        elif type(label) is not int:
            raise DataFormatError(path, lineno, f"'label' must be an integer or null, got {label!r}")
        elif not 0 <= label < num_classes:
            raise DataFormatError(path, lineno, f"label {label} outside labels.json (which has {num_classes} classes: 0..{num_classes - 1})")
        texts.append(text)
        labels.append(label)
    if not texts:
        raise DataFormatError(path, None, "no nodes")
    if missing:
        warn(f"{path}: {missing} node(s) have no 'text' (missing or null); they are read as the empty string")
    return texts, np.asarray(labels, dtype=np.int32)


def _edge_line_error(path: Path, lines: list[str]) -> DataFormatError:
    """Find the first malformed edge row (slow path, only after the fast parse failed)."""
    for i, line in enumerate(lines):
        parts = line.split("\t")
        if len(parts) != 2:
            return DataFormatError(path, i + 2, f"expected `src<TAB>dst`, got {line[:60]!r}")
        for p in parts:
            if not p.strip().isdigit():
                return DataFormatError(path, i + 2, f"node id {p!r} is not a non-negative integer")
    return DataFormatError(path, None, "could not parse edges")


def read_edges(path: Path) -> np.ndarray:
    """edges.tsv -> int64 [E, 2] rows (src, dst) in file order; checks the header and every row."""
    text = read_text(path)
    header, _, body = text.partition("\n")
    if header.strip().split("\t") != ["src", "dst"]:
        raise DataFormatError(path, 1, f"expected header `src<TAB>dst`, got {header[:60]!r}")
    lines, body = split_body(body)
    tokens = body.split()
    ok = len(tokens) == 2 * len(lines) and body.count("\t") == len(lines)
    if ok:
        try:
            rows = np.array(tokens, dtype=np.int64).reshape(-1, 2)
        except (ValueError, OverflowError):
            ok = False
    if not ok or (len(lines) and (rows < 0).any()):
        raise _edge_line_error(path, lines)
    return rows if len(lines) else np.zeros((0, 2), np.int64)


def clean_edges(
    rows: np.ndarray, path: Path, *, on_duplicate: OnDuplicate, on_self_loop: OnSelfLoop, line_offset: int = 2
) -> tuple[np.ndarray, dict[str, int]]:
    """Drop or reject duplicate rows and self-loops of an [E, 2] edge list (first occurrence kept).

    `line_offset` maps row index to file line (2 for a file with one header line).
    Returns the kept rows and {"duplicates_dropped", "self_loops_dropped", "self_loops"}.
    """
    keep = np.ones(len(rows), dtype=bool)
    loops = rows[:, 0] == rows[:, 1]
    stats = {"duplicates_dropped": 0, "self_loops_dropped": 0, "self_loops": int(loops.sum())}
    if loops.any() and on_self_loop == "error":
        i = int(np.argmax(loops))
        raise DataFormatError(path, i + line_offset, f"self-loop {rows[i, 0]} -> {rows[i, 1]} (on_self_loop='error')")
    if loops.any() and on_self_loop == "drop":
        keep &= ~loops
        stats["self_loops_dropped"] = int(loops.sum())
        stats["self_loops"] = 0
        warn(f"{path}: dropped {int(loops.sum())} self-loop edge(s)")
    if len(rows):
        key = rows[:, 0] * (int(rows.max()) + 1) + rows[:, 1]
        _, first = np.unique(key, return_index=True)
        dup = np.ones(len(rows), dtype=bool)
        dup[first] = False
        if dup.any():
            i = int(np.argmax(dup))
            if on_duplicate == "error":
                raise DataFormatError(path, i + line_offset, f"duplicate edge {rows[i, 0]} -> {rows[i, 1]} (on_duplicate='error')")
            n_dup = int((dup & keep).sum())
            if n_dup:
                warn(f"{path}: dropped {n_dup} duplicate edge row(s)")
            stats["duplicates_dropped"] = n_dup
            keep &= ~dup
    return rows[keep], stats


def read_splits(path: Path, num_nodes: int) -> dict[str, np.ndarray]:
    """splits.json -> {"train"|"valid"|"test": int32 node ids}; every listed split must be non-empty."""
    try:
        raw = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataFormatError(path, err.lineno, f"invalid JSON ({err.msg})") from None
    if not isinstance(raw, dict) or not raw:
        raise DataFormatError(path, None, f"expected an object with keys among {SPLIT_NAMES}")
    splits: dict[str, np.ndarray] = {}
    for key, ids in raw.items():
        if key not in SPLIT_NAMES:
            raise DataFormatError(path, None, f"unknown split {key!r}; expected keys among {SPLIT_NAMES}")
        if not isinstance(ids, list) or not all(type(x) is int for x in ids):
            raise DataFormatError(path, None, f"split {key!r} must be a list of integer node ids")
        if not ids:
            raise DataFormatError(path, None, f"split {key!r} is empty")
        arr = np.asarray(ids, dtype=np.int64)
        bad = (arr < 0) | (arr >= num_nodes)
        if bad.any():
            raise DataFormatError(path, None, f"split {key!r}: node id {int(arr[np.argmax(bad)])} out of range [0, {num_nodes})")
        if len(np.unique(arr)) != len(arr):
            raise DataFormatError(path, None, f"split {key!r} lists a node id more than once")
        splits[key] = arr.astype(np.int32)
    names = list(splits)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            n = len(np.intersect1d(splits[names[a]], splits[names[b]]))
            if n:
                warn(f"{path}: {n} node(s) are in both {names[a]!r} and {names[b]!r}")
    return splits


def read_meta(path: Path) -> dict:
    """meta.json -> dict ({} when the file is absent)."""
    if not path.exists():
        return {}
    try:
        meta = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataFormatError(path, err.lineno, f"invalid JSON ({err.msg})") from None
    if not isinstance(meta, dict):
        raise DataFormatError(path, None, "expected a JSON object")
    return meta


def load_tag(
    path: str | Path,
    *,
    on_duplicate: OnDuplicate = "drop",
    on_self_loop: OnSelfLoop = "keep",
    symmetric: bool = False,
    add_self_loops: bool = False,
    name: str | None = None,
) -> TAGDataset:
    """Load a TAG folder into a TAGDataset.

    edge_index is int32 [2, E] (row 0 = src, row 1 = dst) as directed on disk,
    after removing duplicate rows (`on_duplicate="drop"` warns with the count,
    "error" raises) and handling self-loops (`on_self_loop`: keep | drop | error).
    `symmetric=True` adds every missing reverse edge (`geofm.graph.symmetrize`:
    edges then sorted by (src, dst)); `add_self_loops=True` appends (i, i) for
    nodes without one (`geofm.graph.add_self_loops`). Both default off so edge
    counts match the files.
    meta gets the file's meta.json plus a `load` record of what was dropped.
    """
    _check_choice("on_duplicate", on_duplicate, ("drop", "error"))
    _check_choice("on_self_loop", on_self_loop, ("keep", "drop", "error"))
    root = Path(path)
    missing = [f for f in TAG_REQUIRED if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: not a TAG dataset folder, missing {', '.join(missing)}")
    class_names, class_desc = read_labels(root / "labels.json")
    texts, labels = read_nodes(root / "nodes.jsonl", len(class_names))
    num_nodes = len(texts)
    rows = read_edges(root / "edges.tsv")
    too_big = rows >= num_nodes
    if too_big.any():
        i = int(np.argmax(too_big.any(axis=1)))
        raise DataFormatError(
            root / "edges.tsv", i + 2, f"node id {int(rows[i].max())} out of range: nodes.jsonl has {num_nodes} nodes (ids 0..{num_nodes - 1})"
        )
    rows, edge_stats = clean_edges(rows, root / "edges.tsv", on_duplicate=on_duplicate, on_self_loop=on_self_loop)
    edge_index = np.ascontiguousarray(rows.T.astype(np.int32))
    if symmetric or add_self_loops:
        from geofm import graph  # lazy: pulls in jax

        if symmetric:
            edge_index = graph.symmetrize(edge_index, num_nodes)
        if add_self_loops:
            edge_index = graph.add_self_loops(edge_index, num_nodes)
    splits = read_splits(root / "splits.json", num_nodes) if (root / "splits.json").exists() else None
    meta = read_meta(root / "meta.json")
    meta = {**meta, "load": {"format": "tag", "on_duplicate": on_duplicate, "on_self_loop": on_self_loop,
                           "symmetric": symmetric, "add_self_loops": add_self_loops, **edge_stats}}
    return TAGDataset(
        name=name or root.resolve().name,  # "." has no name of its own
        num_nodes=num_nodes,
        edge_index=np.ascontiguousarray(edge_index, dtype=np.int32),
        texts=texts,
        labels=labels,
        class_names=class_names,
        class_descriptions=class_desc,
        splits=splits,
        meta=meta,
        domain=str(meta.get("domain", "unknown")),
    )


def snowball_nodes(edge_index: np.ndarray, num_nodes: int, cap: int, *, seed: int) -> np.ndarray:
    """Sorted ids of at most `cap` nodes grown breadth-first (edges read both ways) from seeded
    random roots, a new root whenever a component is used up: a connected-as-possible sample
    that keeps local structure, unlike a uniform node sample. All nodes when num_nodes <= cap."""
    if cap < 1:
        raise ValueError(f"snowball_nodes: cap must be >= 1, got {cap}")
    if num_nodes <= cap:
        return np.arange(num_nodes)
    import scipy.sparse as sp

    src, dst = np.asarray(edge_index)
    adj = sp.csr_matrix((np.ones(2 * src.size, bool), (np.r_[src, dst], np.r_[dst, src])), shape=(num_nodes,) * 2)
    rng = np.random.default_rng(seed)
    taken = np.zeros(num_nodes, bool)
    order = rng.permutation(num_nodes)  # the roots, in turn
    count, r = 0, 0
    while count < cap:
        while taken[order[r]]:
            r += 1
        frontier = np.array([order[r]])
        while frontier.size and count < cap:
            frontier = rng.permutation(frontier[~taken[frontier]])[: cap - count]  # a cut layer: random, not low ids
            taken[frontier] = True
            count += frontier.size
            nxt = adj[frontier].indices
            frontier = np.unique(nxt[~taken[nxt]])
    return np.flatnonzero(taken)


def induced_subgraph(ds: TAGDataset, keep: np.ndarray) -> TAGDataset:
    """The dataset restricted to node ids `keep` (sorted, unique), renumbered 0..len(keep)-1 in
    that order: edges between kept nodes, their texts and labels; splits dropped; meta records
    the original node count and ids' provenance under "subgraph"."""
    keep = np.asarray(keep, np.int64)
    new_id = np.full(ds.num_nodes, -1, np.int64)
    new_id[keep] = np.arange(keep.size)
    src, dst = new_id[np.asarray(ds.edge_index)]
    both = (src >= 0) & (dst >= 0)
    return dataclasses.replace(
        ds, num_nodes=int(keep.size), edge_index=np.ascontiguousarray(np.stack([src[both], dst[both]]), np.int32),
        texts=[ds.texts[i] for i in keep], labels=np.asarray(ds.labels)[keep], splits=None,
        meta={**ds.meta, "subgraph": {"of_nodes": int(ds.num_nodes), "nodes": int(keep.size)}})
