"""A tiny generated KG in the on-disk folder format, for tests and the tiny config.

Entities form a random tree (relation `_child_of` / `_parent_of`), siblings are
linked by a symmetric `_sibling_of`, so the graph is learnable (hierarchy,
inverse and symmetric patterns). Valid/test hold out random triples; one test
entity is made unseen in train.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_kg_triples(num_entities: int = 60, *, seed: int = 0) -> list[tuple[str, str, str]]:
    """String triples (head, relation, tail) of the tiny KG."""
    if num_entities < 8:
        raise ValueError("tiny KG needs at least 8 entities")
    rng = np.random.default_rng(seed)
    parent = [-1] + [int(rng.integers(0, max(1, i // 2 + 1))) for i in range(1, num_entities)]
    name = lambda i: f"e{i:03d}"  # noqa: E731
    triples = []
    for c in range(1, num_entities):
        triples.append((name(c), "_child_of", name(parent[c])))
        triples.append((name(parent[c]), "_parent_of", name(c)))
    by_parent: dict[int, list[int]] = {}
    for c in range(1, num_entities):
        by_parent.setdefault(parent[c], []).append(c)
    for kids in by_parent.values():
        for a in kids:
            for b in kids:
                if a != b:
                    triples.append((name(a), "_sibling_of", name(b)))
    return triples


def write_tiny_kg(folder: str | Path, num_entities: int = 60, *, seed: int = 0, holdout: float = 0.1) -> Path:
    """Write train/valid/test.txt and entity2text.txt under `folder`; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    triples = tiny_kg_triples(num_entities, seed=seed)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(triples))
    n_hold = max(2, int(holdout * len(triples)))
    valid = [triples[i] for i in order[:n_hold]]
    test = [triples[i] for i in order[n_hold : 2 * n_hold]]
    train = [triples[i] for i in order[2 * n_hold :]]
    last = f"e{num_entities - 1:03d}"  # make one entity unseen in train: move its triples to test
    test += [t for t in train if last in (t[0], t[2])]
    train = [t for t in train if last not in (t[0], t[2])]
    valid = [t for t in valid if last not in (t[0], t[2])]
    for split, rows in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"{split}.txt").write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in rows))
    ents = sorted({e for h, _, t in triples for e in (h, t)})
    (folder / "entity2text.txt").write_text("".join(f"{e}\tentity {e}\n" for e in ents))
    return folder
