"""Entity initialisation from the text encoder over entity texts (entity2text.txt).

Each entity's text ("name, gloss" on WN18RR; the name, or "name -- first
sentence", on FB15k-237) is embedded by `geofm.text.TextEncoder` into
T [N, D] (D = 384 for MiniLM, rows L2-normalised), centred on the mean mu of
the entities that have text, and mapped to the model dimension d:

  pca      E0 = c · (T - mu) V          V [D, d]: top principal directions of the
                                         texts (exact eigh on the host, signs fixed),
                                         c chosen so the projected std is `scale`
  learned  E  = (T - mu) W + R          W [D, d] starts at c·V, R [N, d] at 0, both
                                         trained with the model, so an entity never
                                         seen in training still moves with W

At step 0 both give the same table. Entities without text (and, when d > the
number of principal directions, the extra columns) keep the model's random
init; a `DataWarning` gives their count.

Geometry: the entity parameters of every model in geofm.kg.models are
Euclidean vectors; for the hyperbolic family they are tangent vectors at the
origin that the model maps with expmap0(., k=k_r), k_r < 0 its relation's
curvature, so the text vector is used as that tangent vector. MuRP with
`ball_params=True` keeps points on the ball: its rows become
expmap0(E0, k=k) with its fixed curvature k < 0 (pca only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from geofm.data._io import warn
from geofm.kg.config import EntityInitConfig
from manifolds import stereographic as st

__all__ = [
    "TextEmbedder",
    "TextProjection",
    "ProjectedEntityTable",
    "encode_entity_texts",
    "pca_basis",
    "text_projection",
    "apply_entity_init",
    "table_fingerprint",
    "check_table_fingerprint",
]


class TextEmbedder(Protocol):
    """Anything with `encode(texts) -> [n, D]` (geofm.text.TextEncoder, or a fake in tests)."""

    def encode(self, texts: list[str | None], batch_size: int = 64, progress: bool | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class TextProjection:
    """Host-side result of the text -> model-dim map (numpy, float64).

    text: [N, D] centred text embeddings (zero rows where there is no text).
    proj: [D, d] the scaled PCA basis, zero columns beyond `num_components`.
    table: [N, d] the initial entity table (text rows text @ proj, other rows
    and columns from the random init).
    has_text: [N] bool. explained_variance: [num_components] ratios.
    """

    text: np.ndarray
    proj: np.ndarray
    table: np.ndarray
    has_text: np.ndarray
    explained_variance: np.ndarray
    scale: float

    @property
    def num_components(self) -> int:
        return int(self.explained_variance.shape[0])


class ProjectedEntityTable(nnx.Module):
    """Learned text projection: rows(idx) = text[idx] @ proj + residual[idx].

    text [N, D] is a fixed (non-trainable) `nnx.Variable`; proj [D, d] and
    residual [N, d] are `nnx.Param`s in Euclidean/tangent space (plain optax).
    """

    def __init__(self, text: jax.Array, proj: jax.Array, residual: jax.Array) -> None:
        if text.ndim != 2 or proj.ndim != 2 or residual.ndim != 2:
            raise ValueError("text, proj and residual must be 2-D")
        if text.shape[1] != proj.shape[0] or residual.shape != (text.shape[0], proj.shape[1]):
            raise ValueError(f"shape mismatch: text {text.shape}, proj {proj.shape}, residual {residual.shape}")
        self.text = nnx.Variable(text)
        self.proj = nnx.Param(proj)
        self.residual = nnx.Param(residual)

    def rows(self, idx: jax.Array) -> jax.Array:
        """Entity vectors [..., d] for int ids `idx` [...]."""
        return self.text[...][idx] @ self.proj[...] + self.residual[...][idx]

    def table(self) -> jax.Array:
        """The full entity table [N, d]."""
        return self.text[...] @ self.proj[...] + self.residual[...]


# ------------------------------------------------------------ host side ---


def _text_mask(texts: Sequence[str | None]) -> np.ndarray:
    """[N] bool: entities with a non-blank text; the others are counted in one DataWarning."""
    has_text = np.array([t is not None and bool(t.strip()) for t in texts], bool)
    missing = int(has_text.size - has_text.sum())
    if missing:
        warn(f"entity text init: {missing} of {has_text.size} entities have no text; they keep the random init")
    return has_text


def encode_entity_texts(texts: Sequence[str | None], encoder: TextEmbedder, *, batch_size: int = 64,
                        progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embed the entity texts: (emb [N, D] float32, has_text [N] bool).

    None or blank texts are not encoded (zero rows, has_text False) and counted
    in one DataWarning: those entities keep the random init.
    """
    n = len(texts)
    has_text = _text_mask(texts)
    idx = np.flatnonzero(has_text)
    if idx.size == 0:
        raise ValueError("entity text init: no entity has text")
    emb = np.asarray(encoder.encode([texts[i] for i in idx], batch_size=batch_size, progress=progress), np.float32)
    if emb.ndim != 2 or emb.shape[0] != idx.size:
        raise ValueError(f"text encoder returned shape {emb.shape} for {idx.size} texts; expected [{idx.size}, D]")
    if not np.isfinite(emb).all():
        raise ValueError("text encoder returned non-finite embeddings")
    out = np.zeros((n, emb.shape[1]), np.float32)
    out[idx] = emb
    return out, has_text


def load_entity_embeddings(path: str | Path, texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Precomputed entity-text embeddings from a .npy [N, D] -> (emb [N, D] float32, has_text [N]).

    Rows of entities without text (None/blank in `texts`) are zeroed and counted
    in one DataWarning, as in `encode_entity_texts`.
    """
    path = Path(path)
    try:
        emb = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"init.embeddings: cannot read {path}: {err}") from None
    n = len(texts)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"init.embeddings: {path} has shape {emb.shape}; expected [{n}, D] (one row per entity id)")
    has_text = _text_mask(texts)
    emb = np.where(has_text[:, None], np.asarray(emb, np.float32), 0.0).astype(np.float32)
    if not np.isfinite(emb).all():
        raise ValueError(f"init.embeddings: {path} holds non-finite values")
    return emb, has_text


def pca_basis(x: np.ndarray, *, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal directions of rows x [n, D]: (mean [D], basis [D, m], explained variance ratio [m]).

    m = min(dim, D, n - 1). Exact eigendecomposition of the covariance in
    float64; each direction's sign is fixed so its largest-|.| entry is positive,
    so the result is deterministic.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"pca_basis needs at least 2 rows of a 2-D array, got shape {x.shape}")
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / (x.shape[0] - 1)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    m = min(dim, x.shape[1], x.shape[0] - 1)
    vals, vecs = np.clip(vals[order], 0.0, None), vecs[:, order[:m]]
    pivot = np.argmax(np.abs(vecs), axis=0)
    vecs = vecs * np.sign(vecs[pivot, np.arange(m)])
    total = vals.sum()
    ratio = vals[:m] / total if total > 0 else np.zeros(m)
    return mean, vecs, ratio


def text_projection(emb: np.ndarray, has_text: np.ndarray, random_table: np.ndarray, *,
                    scale: float | None = None) -> TextProjection:
    """Map text embeddings emb [N, D] to the initial entity table [N, d] by a scaled PCA.

    random_table [N, d]: the model's random init, kept for rows without text
    and for columns beyond the number of principal directions. scale: target
    std of the projected text vectors (None = std of random_table).
    """
    emb, has_text = np.asarray(emb, np.float64), np.asarray(has_text, bool)
    rand = np.asarray(random_table, np.float64)
    n, d = rand.shape
    if emb.shape[0] != n or has_text.shape != (n,):
        raise ValueError(f"emb {emb.shape} / has_text {has_text.shape} do not match {n} entities")
    scale = float(rand.std()) if scale is None else float(scale)
    if not scale > 0:
        raise ValueError(f"init.scale must be > 0, got {scale}")
    mean, basis, ratio = pca_basis(emb[has_text], dim=d)
    text = np.where(has_text[:, None], emb - mean, 0.0)
    m = basis.shape[1]
    z = text[has_text] @ basis
    spread = float(z.std())
    factor = scale / spread if spread > 0 else 0.0
    proj = np.zeros((emb.shape[1], d))
    proj[:, :m] = basis * factor
    table = rand.copy()
    table[has_text, :m] = z * factor
    return TextProjection(text=text, proj=proj, table=table, has_text=has_text, explained_variance=ratio, scale=scale)


# ---------------------------------------------------------- model side ---


def graph_entity_embeddings(run_dir: str | Path, triples: np.ndarray, text_emb: np.ndarray, *, name: str,
                            batch_size: int = 256) -> np.ndarray:
    """Frozen GraphGlue embeddings of KG entities: [N, d] float32.

    The pretrained backbone of `run_dir` (a `geofm pretrain` run) runs over the
    entity graph (triples [n, 3] as undirected head-tail edges, relations
    ignored); each entity is the centre of its ego subgraph, with its text
    embedding text_emb [N, D] as input through the run's own input pipeline
    (standardise + fixed projection, the pretrained input map).
    """
    from geofm.adapt import embed_frozen
    from geofm.pretrain import load_pretrained, make_domain

    model, pcfg, _ = load_pretrained(run_dir)
    edge_index = np.asarray(triples, np.int64)[:, [0, 2]].T
    domain = make_domain(name, edge_index, np.asarray(text_emb, np.float32), "text", pcfg.data, seed=pcfg.seed,
                         max_nodes=pcfg.model.max_nodes)
    z, _ = embed_frozen(model, domain, batch_size=batch_size)
    return np.asarray(z, np.float32)


def apply_entity_init(model: Any, texts: Sequence[str | None] | None, cfg: EntityInitConfig, *,
                      encoder: TextEmbedder | None = None, progress: bool | None = None,
                      triples: np.ndarray | None = None, name: str = "kg") -> dict[str, Any]:
    """Initialise `model`'s entity table in place as `cfg` says; returns a JSON-able summary.

    Models with `set_text` (frozen-embedding models such as kg.models.TextKG) get the
    text (or graph) embeddings themselves as their fixed input table; `projection` is unused.

    texts: per entity id (KGDataset.entity_text); encoder: None loads the
    TextEncoder named by cfg.encoder (packaged MiniLM by default, embeddings
    cached under ~/.cache/geofm). kind "random" leaves the model untouched.
    """
    if cfg.kind == "random":
        return {"kind": "random"}
    if cfg.kind not in ("text", "graph"):
        raise ValueError(f"init.kind must be 'random', 'text' or 'graph', got {cfg.kind!r}")
    if cfg.kind == "graph" and (cfg.checkpoint is None or triples is None):
        raise ValueError("init.kind: graph needs init.checkpoint (a `geofm pretrain` run folder) and the training triples")
    if cfg.projection not in ("pca", "learned"):
        raise ValueError(f"init.projection must be 'pca' or 'learned', got {cfg.projection!r}")
    if texts is None:
        raise ValueError("init.kind: text needs entity texts, but the dataset has no entity2text.txt")
    if len(texts) != model.num_entities:
        raise ValueError(f"{len(texts)} entity texts for a model with {model.num_entities} entities")
    if hasattr(model, "set_text"):  # a model that reads frozen entity embeddings (kg.models.TextKG)
        return _install_text(model, texts, cfg, encoder, progress, triples, name)
    if not isinstance(getattr(model, "entity", None), nnx.Param):
        raise ValueError(f"model {type(model).__name__} has no `entity` parameter table to initialise")
    ball = bool(getattr(model, "ball_params", False))
    if cfg.projection == "learned":
        if not getattr(type(model), "entity_rows_only", False):
            raise ValueError(f"init.projection: learned is not supported by model {type(model).__name__} "
                             "(it reads its entity table directly instead of through KGModel.entity_rows); use pca")
        if ball:
            raise ValueError("init.projection: learned needs tangent-space entities; MuRP with ball_params=True "
                             "keeps them on the ball (use pca)")
    emb, has_text, text_dim = _entity_inputs(texts, cfg, encoder, progress, triples, name)
    random_table = np.asarray(model.entity[...], np.float64)
    if ball:  # ball points -> tangent vectors at 0, so the fallback rows stay as they were
        random_table = np.asarray(st.logmap0(jnp.asarray(random_table), k=model.k_fixed), np.float64)
    tp = text_projection(emb, has_text, random_table, scale=cfg.scale)
    dtype = model.entity[...].dtype
    if cfg.projection == "pca":
        table = jnp.asarray(tp.table, dtype)
        model.entity = nnx.Param(st.expmap0(table, k=model.k_fixed) if ball else table)
    else:
        residual = tp.table - tp.text @ tp.proj  # 0 on text rows/components, random init elsewhere
        model.entity = ProjectedEntityTable(jnp.asarray(tp.text, dtype), jnp.asarray(tp.proj, dtype),
                                            jnp.asarray(residual, dtype))
    summary = {
        **_inputs_summary(cfg, emb, has_text, text_dim),
        "projection": cfg.projection,
        "num_random_fallback": int((~has_text).sum()),
        "num_components": tp.num_components,
        "explained_variance": float(tp.explained_variance.sum()),
        "scale": tp.scale,
    }
    if cfg.projection == "learned":  # its text table is frozen and rebuilt at load, like TextKG's
        summary["table_fingerprint"] = table_fingerprint(tp.text)
    return summary


def _entity_inputs(texts: Sequence[str | None], cfg: EntityInitConfig, encoder: TextEmbedder | None,
                   progress: bool | None, triples: np.ndarray | None, name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(emb [N, D'] float32, has_text [N], text width D): the entity texts embedded by the
    encoder (or read from `cfg.embeddings`), then, for kind "graph", passed through the
    pretrained backbone (D' = its width)."""
    if cfg.embeddings is not None:
        emb, has_text = load_entity_embeddings(cfg.embeddings, texts)
    else:
        if encoder is None:
            from geofm.text import TextEncoder

            encoder = TextEncoder.load(cfg.encoder)
        emb, has_text = encode_entity_texts(texts, encoder, batch_size=cfg.batch_size, progress=progress)
    text_dim = int(emb.shape[1])
    if cfg.kind == "graph":
        emb = graph_entity_embeddings(cfg.checkpoint, triples, emb, name=name)
    return emb, has_text, text_dim


def _inputs_summary(cfg: EntityInitConfig, emb: np.ndarray, has_text: np.ndarray, text_dim: int) -> dict[str, Any]:
    return {
        "kind": cfg.kind,
        "checkpoint": cfg.checkpoint if cfg.kind == "graph" else None,
        "graph_dim": int(emb.shape[1]) if cfg.kind == "graph" else None,
        "encoder": (f"precomputed: {cfg.embeddings}" if cfg.embeddings is not None
                    else cfg.encoder or "all-MiniLM-L6-v2 (packaged)"),
        "text_dim": text_dim,
        "num_with_text": int(has_text.sum()),
    }


def _install_text(model: Any, texts: Sequence[str | None], cfg: EntityInitConfig, encoder: TextEmbedder | None,
                  progress: bool | None, triples: np.ndarray | None, name: str) -> dict[str, Any]:
    """Frozen-embedding models: the (text or graph) entity embeddings become the model's
    fixed input table as they are (no projection; for kind text, entities without text get
    zero rows; for kind graph, they still get the backbone's output from their neighbours)."""
    emb, has_text, text_dim = _entity_inputs(texts, cfg, encoder, progress, triples, name)
    model.set_text(emb)
    return {**_inputs_summary(cfg, emb, has_text, text_dim), "projection": "none (frozen model input)",
            "num_without_text": int((~has_text).sum()), "table_fingerprint": table_fingerprint(emb)}


def table_fingerprint(emb: np.ndarray, *, rows: int = 16, cols: int = 8) -> dict[str, Any]:
    """A small fingerprint of a frozen entity table emb [N, D]: its shape and the first
    `cols` values of `rows` evenly spaced rows (rounded to 1e-4), so a run can tell that
    the table rebuilt when it is loaded is the one it was trained with. It catches another
    encoder, texts or embeddings file, not an edit of a few entities' texts."""
    emb = np.asarray(emb, np.float64)
    idx = np.unique(np.linspace(0, len(emb) - 1, min(rows, len(emb))).astype(np.int64)) if len(emb) else np.zeros(0, np.int64)
    return {"shape": list(emb.shape), "rows": idx.tolist(), "values": np.round(emb[idx, :cols], 4).tolist()}


def check_table_fingerprint(saved: dict[str, Any] | None, now: dict[str, Any] | None, *, where: str,
                            atol: float = 2e-3) -> None:
    """Raise ValueError when a frozen entity table rebuilt now differs from the one a run
    recorded (`table_fingerprint`); `atol` absorbs float noise across machines. Runs
    without a recorded fingerprint (or models without a frozen table) pass."""
    if not saved or not now:
        return
    if saved["shape"] != now["shape"]:
        diff = np.inf
    elif saved["rows"] != now["rows"]:
        raise ValueError(f"{where}: the run's entity-table fingerprint samples other rows than this version of geofm "
                         "does, so the rebuilt table cannot be checked against it; retrain the run")
    else:
        diff = float(np.max(np.abs(np.asarray(saved["values"]) - np.asarray(now["values"])), initial=0.0))
    if not diff <= atol:  # NaN counts as a difference
        raise ValueError(
            f"{where}: the frozen entity-text table rebuilt now differs from the one this run was trained with "
            f"(shape {now['shape']} vs {saved['shape']}, max difference {diff:.3g} on sampled rows): the entity "
            "texts, the text encoder, init.embeddings or the graph checkpoint changed since training. Rebuild "
            "the table from the same inputs, or retrain the run.")
