"""The simulated LM's embedding model: deterministic vectors where similar texts are near.

A text becomes a bag of features (its lowercased words, and the character trigrams of
each word with its edges marked), each hashed to a signed bucket of a ``dim``-long
vector, then scaled to unit length. Two texts that share most words, or words that
differ by a typo, share most features, so their cosine similarity is high; unrelated
texts land near zero. Pure Python and numpy, the same in every process (crc32, not
Python's salted ``hash``), so an index built once is valid everywhere.
"""

from __future__ import annotations

import re
import zlib
from functools import lru_cache

import numpy as np

DEFAULT_DIM = 256
MAX_DIM = 4096
_WORD = re.compile(r"\w+", re.UNICODE)
# Whole words carry more meaning than their pieces.
_WORD_WEIGHT = 1.0
_TRIGRAM_WEIGHT = 0.4


@lru_cache(maxsize=65536)
def _word_features(word: str, dim: int) -> tuple[tuple[int, float], ...]:
    """(bucket, signed weight) of one word and its trigrams; words repeat a lot, so cached."""
    out = [_bucket("w:" + word, dim, _WORD_WEIGHT)]
    marked = f"<{word}>"
    out.extend(_bucket("c:" + marked[i : i + 3], dim, _TRIGRAM_WEIGHT) for i in range(len(marked) - 2))
    return tuple(out)


def _bucket(feature: str, dim: int, weight: float) -> tuple[int, float]:
    value = zlib.crc32(feature.encode())
    # One bit of the hash picks the sign, so collisions cancel out on average.
    return value % dim, weight if value & 0x80000000 else -weight


def embed_texts(texts: list[str], dim: int = DEFAULT_DIM) -> np.ndarray:
    """The unit-length vectors of ``texts``, shape ``(len(texts), dim)``."""
    matrix = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        vector = matrix[row]
        for word in _WORD.findall(text.lower()):
            for index, weight in _word_features(word, dim):
                vector[index] += weight
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def embeddings_payload(model: str, texts: list[str], dim: int) -> dict[str, object]:
    """An OpenAI ``/v1/embeddings`` response body for ``texts``."""
    vectors = embed_texts(texts, dim)
    tokens = sum((len(t) + 3) // 4 for t in texts)
    return {
        "object": "list",
        "model": model,
        "data": [
            {"object": "embedding", "index": i, "embedding": [round(float(x), 6) for x in row]}
            for i, row in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


__all__ = ["DEFAULT_DIM", "MAX_DIM", "embed_texts", "embeddings_payload"]
