"""In-memory dataset containers shared by loaders, generators and models.

Node ids and entity/relation ids are dense 0-based int32 indices; the
original string ids are kept in `entities` / `relations` for KGs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TAGDataset:
    """A text-attributed graph (node classification).

    edge_index: [2, E] int32 (src, dst), directed as stored on disk; use
        `geofm.graph` helpers to symmetrise / add self-loops.
    labels: [N] int32 class index per node, -1 where unknown.
    splits: optional {"train"|"valid"|"test": int32 node ids}.
    """

    name: str
    num_nodes: int
    edge_index: np.ndarray
    texts: list[str]
    labels: np.ndarray
    class_names: list[str]
    class_descriptions: list[str]
    splits: dict[str, np.ndarray] | None = None
    meta: dict = field(default_factory=dict)
    domain: str = "unknown"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class KGDataset:
    """A knowledge graph: triples as int32 [n, 3] arrays of (head, relation, tail).

    Entities/relations appearing only in valid/test are kept (never dropped) and
    get ids after the train vocabulary; `num_unseen` counts them per split.
    entity_text / relation_text: per id, None where the text file had no line.
    """

    name: str
    entities: list[str]
    relations: list[str]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    entity_text: list[str | None] | None = None
    relation_text: list[str | None] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)
