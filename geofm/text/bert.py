"""BERT-family encoder in Flax NNX, run on *packed* token rows.

A batch is `[R, T]` rows of `T` tokens; a row holds one or more sentences
back to back (see `geofm.text.packing`). `segment_ids` [R, T] numbers the
sentences within a row (1, 2, ...; 0 = padding) and drives a block-diagonal
attention mask, so a token only attends to tokens of its own sentence;
`position_ids` restart at 0 for every sentence. The result is exactly the
per-sentence BERT forward pass (post-LN, as in Hugging Face `BertModel`),
without computing the dense layers on padding.

Layer weights are stacked on a leading `[num_layers, ...]` axis and the
layers run under `jax.lax.scan`, so XLA compiles one layer body instead of
N copies (compile time matters: every bucket shape compiles once). Q, K and V
are fused into one `[H, 3H]` matmul. Matrices are stored `[in, out]`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

SUPPORTED_MODEL_TYPES = ("bert",)
_MASKED = -1e30  # additive attention bias for other sentences' tokens: exp() underflows to exactly 0

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
}


@dataclass(frozen=True)
class BertConfig:
    """The subset of a Hugging Face BERT `config.json` the encoder needs."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf(cls, cfg: dict, *, source: str = "config.json") -> BertConfig:
        """Validate a parsed HF config dict; ValueError naming `source` and the field otherwise."""
        model_type = cfg.get("model_type")
        archs = cfg.get("architectures") or []
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"{source}: unsupported architecture: model_type={model_type!r}, architectures={archs}; "
                f"supported model_type: {', '.join(SUPPORTED_MODEL_TYPES)} (BERT/MiniLM-style encoders)"
            )
        pos = cfg.get("position_embedding_type", "absolute")
        if pos != "absolute":
            raise ValueError(f"{source}: position_embedding_type={pos!r} is unsupported (only 'absolute')")
        act = cfg.get("hidden_act", "gelu")
        if act not in _ACTIVATIONS:
            raise ValueError(f"{source}: hidden_act={act!r} is unsupported; known: {', '.join(_ACTIVATIONS)}")
        fields = {
            "vocab_size": "vocab_size",
            "hidden_size": "hidden_size",
            "num_layers": "num_hidden_layers",
            "num_heads": "num_attention_heads",
            "intermediate_size": "intermediate_size",
            "max_position_embeddings": "max_position_embeddings",
        }
        values: dict[str, int] = {}
        for name, key in fields.items():
            v = cfg.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{source}: field {key!r} must be a positive integer, got {v!r}")
            values[name] = v
        if values["hidden_size"] % values["num_heads"]:
            raise ValueError(
                f"{source}: hidden_size={values['hidden_size']} is not divisible by "
                f"num_attention_heads={values['num_heads']}"
            )
        return cls(
            **values,
            type_vocab_size=int(cfg.get("type_vocab_size", 2)),
            layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
            hidden_act=act,
        )


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, *, eps: float) -> jax.Array:
    """LayerNorm over the last axis in float32 (two-pass variance, as torch)."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    xc = x - mean
    var = jnp.mean(xc * xc, axis=-1, keepdims=True)
    return xc * jax.lax.rsqrt(var + eps) * scale + bias


def _dense(x: jax.Array, w: jax.Array, b: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """x [..., in] @ w [in, out] + b, multiplied in `dtype`, accumulated in float32."""
    y = jnp.dot(x.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32)
    return y + b


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float = 0.02) -> nnx.Param:
    return nnx.Param(std * jax.random.normal(rngs.params(), shape, jnp.float32))


class BertEmbeddings(nnx.Module):
    """word + position + token-type(0) embeddings, then LayerNorm."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        h = cfg.hidden_size
        self.eps = cfg.layer_norm_eps
        self.word = _normal(rngs, (cfg.vocab_size, h))
        self.position = _normal(rngs, (cfg.max_position_embeddings, h))
        self.token_type = _normal(rngs, (cfg.type_vocab_size, h))
        self.ln_scale = nnx.Param(jnp.ones((h,), jnp.float32))
        self.ln_bias = nnx.Param(jnp.zeros((h,), jnp.float32))

    def __call__(self, input_ids: jax.Array, position_ids: jax.Array) -> jax.Array:
        """input_ids, position_ids [R, T] int32 -> [R, T, H] float32 (token type 0 throughout)."""
        x = self.word[...][input_ids] + self.position[...][position_ids] + self.token_type[...][0]
        return layer_norm(x, self.ln_scale[...], self.ln_bias[...], eps=self.eps)


class BertLayers(nnx.Module):
    """`num_layers` post-LN transformer layers with weights stacked on axis 0."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        n, h, i = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
        self.cfg = cfg
        self.wqkv = _normal(rngs, (n, h, 3 * h))
        self.bqkv = nnx.Param(jnp.zeros((n, 3 * h), jnp.float32))
        self.wo = _normal(rngs, (n, h, h))
        self.bo = nnx.Param(jnp.zeros((n, h), jnp.float32))
        self.ln1_scale = nnx.Param(jnp.ones((n, h), jnp.float32))
        self.ln1_bias = nnx.Param(jnp.zeros((n, h), jnp.float32))
        self.w_in = _normal(rngs, (n, h, i))
        self.b_in = nnx.Param(jnp.zeros((n, i), jnp.float32))
        self.w_out = _normal(rngs, (n, i, h))
        self.b_out = nnx.Param(jnp.zeros((n, h), jnp.float32))
        self.ln2_scale = nnx.Param(jnp.ones((n, h), jnp.float32))
        self.ln2_bias = nnx.Param(jnp.zeros((n, h), jnp.float32))

    def stacked(self) -> dict[str, jax.Array]:
        """The per-layer weights as a dict of `[num_layers, ...]` arrays."""
        names = ("wqkv", "bqkv", "wo", "bo", "ln1_scale", "ln1_bias", "w_in", "b_in", "w_out", "b_out",
                 "ln2_scale", "ln2_bias")
        return {k: getattr(self, k)[...] for k in names}

    def __call__(self, x: jax.Array, bias: jax.Array, *, dtype: jnp.dtype = jnp.float32) -> jax.Array:
        """x [R, T, H], bias [R, 1, T, T] float32 (0 = may attend, -1e30 = masked) -> [R, T, H]."""
        cfg = self.cfg
        act = _ACTIVATIONS[cfg.hidden_act]
        r, t, h = x.shape
        nh, dh = cfg.num_heads, cfg.head_dim
        scale = 1.0 / float(np.sqrt(dh))

        def layer(x: jax.Array, p: dict[str, jax.Array]) -> tuple[jax.Array, None]:
            qkv = _dense(x, p["wqkv"], p["bqkv"], dtype).reshape(r, t, 3, nh, dh).transpose(2, 0, 3, 1, 4)
            q, k, v = (qkv[0] * scale).astype(dtype), qkv[1].astype(dtype), qkv[2].astype(dtype)  # [R, nh, T, dh]
            s = jnp.einsum("rhqd,rhkd->rhqk", q, k, preferred_element_type=jnp.float32) + bias
            e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
            # softmax(s) @ v with the normalisation applied to the [.., T, dh] output, not the [.., T, T] weights
            ctx = jnp.einsum("rhqk,rhkd->rhqd", e.astype(dtype), v, preferred_element_type=jnp.float32)
            ctx = (ctx / jnp.sum(e, axis=-1, keepdims=True)).transpose(0, 2, 1, 3).reshape(r, t, h)
            x = layer_norm(x + _dense(ctx, p["wo"], p["bo"], dtype), p["ln1_scale"], p["ln1_bias"],
                           eps=cfg.layer_norm_eps)
            ff = _dense(act(_dense(x, p["w_in"], p["b_in"], dtype)), p["w_out"], p["b_out"], dtype)
            x = layer_norm(x + ff, p["ln2_scale"], p["ln2_bias"], eps=cfg.layer_norm_eps)
            return x, None

        x, _ = jax.lax.scan(layer, x, self.stacked())
        return x


class BertEncoder(nnx.Module):
    """BERT token encoder: embeddings + stacked layers (no pooler head)."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embeddings = BertEmbeddings(cfg, rngs=rngs)
        self.layers = BertLayers(cfg, rngs=rngs)

    def __call__(self, input_ids: jax.Array, position_ids: jax.Array, segment_ids: jax.Array,
                 *, dtype: jnp.dtype = jnp.float32) -> jax.Array:
        """Packed rows [R, T] (see module doc) -> token states [R, T, H] float32.

        `dtype` is the matmul input dtype (float32 or bfloat16); LayerNorm,
        softmax and accumulation stay float32.
        """
        x = self.embeddings(input_ids, position_ids)
        same = segment_ids[:, :, None] == segment_ids[:, None, :]
        bias = jnp.where(same, 0.0, _MASKED)[:, None].astype(jnp.float32)
        return self.layers(x, bias, dtype=dtype)


# --- Hugging Face weights -------------------------------------------------------------------------

def _hf_layer_keys(i: int) -> dict[str, str]:
    pre = f"encoder.layer.{i}."
    return {
        "q_w": pre + "attention.self.query.weight", "q_b": pre + "attention.self.query.bias",
        "k_w": pre + "attention.self.key.weight", "k_b": pre + "attention.self.key.bias",
        "v_w": pre + "attention.self.value.weight", "v_b": pre + "attention.self.value.bias",
        "o_w": pre + "attention.output.dense.weight", "o_b": pre + "attention.output.dense.bias",
        "ln1_w": pre + "attention.output.LayerNorm.weight", "ln1_b": pre + "attention.output.LayerNorm.bias",
        "in_w": pre + "intermediate.dense.weight", "in_b": pre + "intermediate.dense.bias",
        "out_w": pre + "output.dense.weight", "out_b": pre + "output.dense.bias",
        "ln2_w": pre + "output.LayerNorm.weight", "ln2_b": pre + "output.LayerNorm.bias",
    }


_EMBED_KEYS = {
    "word": "embeddings.word_embeddings.weight",
    "position": "embeddings.position_embeddings.weight",
    "token_type": "embeddings.token_type_embeddings.weight",
    "ln_w": "embeddings.LayerNorm.weight",
    "ln_b": "embeddings.LayerNorm.bias",
}


def _strip_prefix(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop a leading `bert.` / `model.` (BertFor* checkpoints) and map old gamma/beta names."""
    out = {}
    for k, v in tensors.items():
        for pre in ("bert.", "model."):
            if k.startswith(pre) and not k.startswith(("embeddings.", "encoder.")):
                k = k[len(pre):]
                break
        if k.endswith(".gamma"):
            k = k[: -len(".gamma")] + ".weight"
        elif k.endswith(".beta"):
            k = k[: -len(".beta")] + ".bias"
        out[k] = v
    return out


def bert_arrays_from_hf(tensors: dict[str, np.ndarray], cfg: BertConfig, *, source: str) -> dict[str, np.ndarray]:
    """HF BertModel tensors (torch `[out, in]` Linear layout) -> our stacked float32 arrays.

    Returns keys of `BertEmbeddings` and `BertLayers` (prefixed `embeddings.` /
    `layers.`). ValueError naming `source` and listing missing tensors or wrong shapes.
    """
    t = _strip_prefix(tensors)
    needed = list(_EMBED_KEYS.values()) + [k for i in range(cfg.num_layers) for k in _hf_layer_keys(i).values()]
    missing = [k for k in needed if k not in t]
    if missing:
        found = sorted(t)[:8]
        raise ValueError(
            f"{source}: missing {len(missing)} BERT tensors, e.g. {missing[:4]}; "
            f"found {len(t)} tensors, e.g. {found}"
        )

    def get(key: str, shape: tuple[int, ...]) -> np.ndarray:
        a = np.asarray(t[key], dtype=np.float32)
        if a.shape != shape:
            raise ValueError(f"{source}: tensor {key!r} has shape {a.shape}, expected {shape} from config.json")
        return a

    h, i, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    out = {
        "embeddings.word": get(_EMBED_KEYS["word"], (cfg.vocab_size, h)),
        "embeddings.position": get(_EMBED_KEYS["position"], (cfg.max_position_embeddings, h)),
        "embeddings.token_type": get(_EMBED_KEYS["token_type"], (cfg.type_vocab_size, h)),
        "embeddings.ln_scale": get(_EMBED_KEYS["ln_w"], (h,)),
        "embeddings.ln_bias": get(_EMBED_KEYS["ln_b"], (h,)),
    }
    per_layer: dict[str, list[np.ndarray]] = {}
    for li in range(n):
        k = _hf_layer_keys(li)
        lay = {
            "wqkv": np.concatenate([get(k["q_w"], (h, h)).T, get(k["k_w"], (h, h)).T, get(k["v_w"], (h, h)).T], 1),
            "bqkv": np.concatenate([get(k["q_b"], (h,)), get(k["k_b"], (h,)), get(k["v_b"], (h,))]),
            "wo": get(k["o_w"], (h, h)).T, "bo": get(k["o_b"], (h,)),
            "ln1_scale": get(k["ln1_w"], (h,)), "ln1_bias": get(k["ln1_b"], (h,)),
            "w_in": get(k["in_w"], (i, h)).T, "b_in": get(k["in_b"], (i,)),
            "w_out": get(k["out_w"], (h, i)).T, "b_out": get(k["out_b"], (h,)),
            "ln2_scale": get(k["ln2_w"], (h,)), "ln2_bias": get(k["ln2_b"], (h,)),
        }
        for name, a in lay.items():
            per_layer.setdefault(name, []).append(a)
    for name, arrs in per_layer.items():
        out["layers." + name] = np.ascontiguousarray(np.stack(arrs))
    return out


def build_bert(cfg: BertConfig, arrays: dict[str, np.ndarray] | None = None, *, seed: int = 0) -> BertEncoder:
    """A `BertEncoder` holding `arrays` (from `bert_arrays_from_hf`), or random-initialised from `seed`.

    With arrays, the module is built abstractly (`nnx.eval_shape`) and filled,
    so loading runs no random-init computations; every parameter must be given.
    """
    if arrays is None:
        return BertEncoder(cfg, rngs=nnx.Rngs(seed))
    model = nnx.eval_shape(lambda: BertEncoder(cfg, rngs=nnx.Rngs(seed)))
    given = set(arrays)
    for path, param in nnx.iter_graph(model):
        if isinstance(param, nnx.Param):
            key = ".".join(str(p) for p in path)
            if key not in given:
                raise ValueError(f"build_bert: no array for parameter {key!r}")
            want = param.get_value().shape
            if tuple(arrays[key].shape) != tuple(want):
                raise ValueError(f"build_bert: {key!r} has shape {arrays[key].shape}, expected {want}")
            param.set_value(jnp.asarray(arrays[key], jnp.float32))
            given.discard(key)
    if given:
        raise ValueError(f"build_bert: unknown parameters {sorted(given)}")
    return model
