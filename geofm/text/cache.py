"""On-disk sentence-embedding cache keyed by (model hash, text hash).

Layout: `<root>/text/<model_key>/<shard>.npz`, each shard holding
`keys` [n, 32] uint8 (sha256 of the UTF-8 text), `emb` [n, dim] float32
and `truncated` [n] bool (the text was cut to the model's max length, kept so
a fully cached call needs no tokenization).
Shards are immutable and written atomically (temp file + rename), so
concurrent writers and crashes never leave a half-written shard; a lookup
reads every shard's keys once and the embeddings only of shards it hits.
The root is `$GEOFM_CACHE` or `~/.cache/geofm` (`geofm.data.cache.cache_root`).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
import zipfile
from pathlib import Path

import numpy as np

from geofm.data.cache import atomic_write_bytes, cache_root

log = logging.getLogger("geofm.text")


def text_digests(texts: list[str]) -> np.ndarray:
    """sha256 of each text's UTF-8 bytes -> [n, 32] uint8."""
    out = np.empty((len(texts), 32), np.uint8)
    for i, t in enumerate(texts):
        out[i] = np.frombuffer(hashlib.sha256(t.encode("utf-8")).digest(), np.uint8)
    return out


class EmbeddingCache:
    """Text-embedding store for one model (`model_key`: a hex digest of weights + settings)."""

    def __init__(self, model_key: str, root: str | Path | None = None):
        if not model_key or not all(c in "0123456789abcdef" for c in model_key):
            raise ValueError(f"model_key must be a lowercase hex digest, got {model_key!r}")
        self.model_key = model_key
        self.dir = cache_root(root) / "text" / model_key[:32]

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("*.npz")) if self.dir.is_dir() else []

    def lookup(self, digests: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """digests [n, 32] uint8 -> (embeddings [n, dim] float32, found [n] bool, truncated [n] bool).

        Rows not found are zero. Unreadable or mismatched shards are skipped
        with a warning (a cache only ever costs recomputation).
        """
        n = digests.shape[0]
        emb = np.zeros((n, dim), np.float32)
        found = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        if n == 0:
            return emb, found, truncated
        want: dict[bytes, list[int]] = {}  # a text may occur several times: every row gets the hit
        for i in range(n):
            want.setdefault(digests[i].tobytes(), []).append(i)
        for shard in self._shards():
            if found.all():
                break
            try:
                with np.load(shard, allow_pickle=False) as z:
                    keys = z["keys"]
                    hits = [(j, i) for j, k in enumerate(keys) for i in want.get(k.tobytes(), ()) if not found[i]]
                    if not hits:
                        continue
                    data, trunc = z["emb"], z["truncated"]
                    if data.ndim != 2 or data.shape[1] != dim or data.shape[0] != keys.shape[0] or \
                            trunc.shape != (keys.shape[0],):
                        log.warning("embedding cache shard %s has shape %s, expected [%d, %d]; ignored",
                                    shard, data.shape, keys.shape[0], dim)
                        continue
                    src, dst = zip(*hits)
                    emb[list(dst)] = data[list(src)]
                    truncated[list(dst)] = trunc[list(src)]
                    found[list(dst)] = True
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
                log.warning("unreadable embedding cache shard %s (%s); ignored", shard, err)
        return emb, found, truncated

    def store(self, digests: np.ndarray, emb: np.ndarray, truncated: np.ndarray) -> Path | None:
        """Write one new shard; returns its path (None when there is nothing to store or on OSError)."""
        if digests.shape[0] == 0:
            return None
        if not emb.shape[0] == truncated.shape[0] == digests.shape[0]:
            raise ValueError(f"store: {digests.shape[0]} digests, {emb.shape[0]} embeddings, "
                             f"{truncated.shape[0]} truncated flags")
        _, first = np.unique(digests.astype(np.uint8), axis=0, return_index=True)  # one row per text
        first = np.sort(first)
        digests, emb, truncated = digests[first], emb[first], truncated[first]
        path = self.dir / f"{uuid.uuid4().hex}.npz"
        try:
            atomic_write_bytes(path, lambda f: np.savez(f, keys=digests.astype(np.uint8),
                                                        emb=emb.astype(np.float32),
                                                        truncated=truncated.astype(bool)))
        except OSError as err:
            log.warning("could not write embedding cache %s: %s", path, err)
            return None
        return path

    def clear(self) -> int:
        """Delete this model's shards; returns how many were removed."""
        shards = self._shards()
        for s in shards:
            s.unlink(missing_ok=True)
        return len(shards)
