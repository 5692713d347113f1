"""JAX-native sentence encoder (BERT family, sentence-transformers compatible) + embedding cache.

    from geofm.text import TextEncoder
    enc = TextEncoder.load()              # packaged all-MiniLM-L6-v2
    emb = enc.encode(["a paper about graphs"])   # [1, 384] float32, L2-normalised
"""

from geofm.text.bert import BertConfig, BertEncoder
from geofm.text.cache import EmbeddingCache
from geofm.text.encoder import EncodeStats, TextEncoder, default_model_path

__all__ = ["BertConfig", "BertEncoder", "EmbeddingCache", "EncodeStats", "TextEncoder", "default_model_path"]
