"""`DummyVectorizer`: deterministic text vectors for tests of KNN and retrieval.

Each text becomes the normalised counts of its character n-grams hashed into
``dimensions`` buckets: texts that share words get close vectors, the same text
always gets the same vector, and nothing is downloaded or called.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any


class DummyVectorizer:
    def __init__(self, dimensions: int = 512, n: int = 3) -> None:
        if dimensions < 1 or n < 1:
            raise ValueError("DummyVectorizer needs dimensions >= 1 and n >= 1")
        self.dimensions = dimensions
        self.n = n

    def __call__(self, texts: Sequence[str]) -> Any:
        import numpy as np

        return np.array([self._vector(str(text)) for text in texts], dtype=np.float32)

    def _vector(self, text: str) -> list[float]:
        counts = [0.0] * self.dimensions
        padded = f" {text.lower()} "
        for start in range(max(len(padded) - self.n + 1, 1)):
            gram = padded[start : start + self.n].encode()
            bucket = int.from_bytes(hashlib.blake2b(gram, digest_size=4).digest(), "big")
            counts[bucket % self.dimensions] += 1.0
        norm = math.sqrt(sum(c * c for c in counts)) or 1.0
        return [c / norm for c in counts]


__all__ = ["DummyVectorizer"]
