"""The KG-completion config schema (frozen dataclasses; load with `geofm.config.load_config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from geofm.config import Spec
from geofm.metrics import TiePolicy

__all__ = ["DataConfig", "LossConfig", "OptimConfig", "TrainConfig", "EvalConfig", "EntityInitConfig", "KGConfig"]


@dataclass(frozen=True)
class DataConfig:
    """name: dataset name or folder (see geofm.data.load_dataset); data_dir: where names are looked up;
    entity_text: file name of the entity texts inside the dataset folder (null: entity2text.txt, or
    the only entity2text*.txt), e.g. entity2text_firstsentence.txt for FB15k-237's descriptions."""

    name: str = "WN18RR"
    data_dir: str | None = None
    entity_text: str | None = None


@dataclass(frozen=True)
class LossConfig:
    """1-N cross entropy (`1n_ce`), sampled cross entropy (`sampled_ce`) or negative sampling (`neg_sampling`).

    sampled_ce: softmax over the true tail and `num_negatives` uniform entities
    shared by the batch (accidental hits removed), with label smoothing; a
    cheap stand-in for 1-N when scoring all entities is expensive (CAT's H/S
    geometries on CPU).

    neg_sampling: `num_negatives` uniform tail corruptions per positive
    (`double_neg`: the head is corrupted too, as in the public AttH code);
    `adversarial_temperature` > 0 weights negatives by softmax(T * score)
    (self-adversarial, Sun et al. 2019). reduction "mean_all" averages
    log-sigmoid terms over positives and negatives together (Chami et al.'s
    code); "balanced" averages the positive term and the weighted negative term.

    relation_prediction: weight of an auxiliary term added to any of the
    above (Chen et al. 2021): cross entropy of the true relation among all
    2R relations (reciprocals included) given (head, tail). Needs a model with
    `score_relations` (complex); 0 turns it off.
    """

    name: Literal["1n_ce", "sampled_ce", "neg_sampling"] = "neg_sampling"
    label_smoothing: float = 0.0
    num_negatives: int = 50
    double_neg: bool = False
    adversarial_temperature: float = 0.0
    reduction: Literal["mean_all", "balanced"] = "mean_all"
    relation_prediction: float = 0.0


@dataclass(frozen=True)
class OptimConfig:
    """adam / adagrad (accumulator starts at 0, like torch) / riemannian_adam (manifolds.optim)."""

    name: Literal["adam", "adagrad", "riemannian_adam"] = "adam"
    lr: float = 1e-3
    grad_clip: float | None = None


@dataclass(frozen=True)
class TrainConfig:
    """epochs; validation every `valid_every` epochs; stop after `patience` validations without improvement.

    max_seconds: wall-clock budget for the training epochs of this invocation
    (None = no budget). When exceeded, the current epoch is validated (if it
    was not), training stops, and the best checkpoint is evaluated as usual;
    results.json records `stopped_by_time`. A resumed run gets a fresh budget.
    """

    epochs: int = 100
    batch_size: int = 500
    valid_every: int = 5
    patience: int = 10
    dtype: Literal["float32", "float64"] = "float32"
    resume: bool = True
    max_seconds: float | None = None


@dataclass(frozen=True)
class EvalConfig:
    """Evaluator chunking; `valid_max_triples` caps the validation triples used for early stopping."""

    query_chunk: int = 512
    entity_chunk: int = 8192
    tie_policy: TiePolicy = "realistic"
    valid_max_triples: int | None = None


@dataclass(frozen=True)
class EntityInitConfig:
    """How entity embeddings start (geofm.kg.init); `kind: random` keeps the model's own init.

    kind "text": each entity's text (entity2text.txt) is embedded by the text
    encoder (`encoder`: a sentence-transformers folder, None = the packaged
    MiniLM) and mapped to the model dimension. projection "pca": a fixed PCA
    basis computed on the host; "learned": entity = W·text + residual with W
    (initialised to the PCA basis) and the residual trained with the model, so
    entities unseen in training move with W. scale: per-coordinate std of the
    projected text vectors (None = the std of the model's random entity init).
    Entities without text keep the random init (warning with their count).
    embeddings: a precomputed [num_entities, D] .npy of the entity-text
    embeddings in entity-id order (e.g. `geofm encode --dataset NAME --out
    FILE.npy`, possibly on another machine or with another encoder); when set,
    no encoder is loaded. Rows of entities without text are ignored.
    kind "graph": the same text embeddings go through a pretrained GraphGlue
    backbone (`checkpoint`: a `geofm pretrain` run folder) over the entity graph
    (training triples as undirected edges), and its frozen node embeddings are
    what gets projected; entities unseen in training still get one (from their
    own text, alone in their ego subgraph).
    """

    kind: Literal["random", "text", "graph"] = "random"
    projection: Literal["pca", "learned"] = "pca"
    scale: float | None = None
    encoder: str | None = None
    embeddings: str | None = None
    checkpoint: str | None = None
    batch_size: int = 64


@dataclass(frozen=True)
class KGConfig:
    """A full KG-completion run. model: {"name": registry name, "kwargs": {...}}."""

    seed: int = 0
    model: Spec = Spec("atth", {"dim": 32})
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    init: EntityInitConfig = field(default_factory=EntityInitConfig)
