"""Retrievers: search a corpus for the passages a query needs (DSPy's ``dspy.retrievers``).

- `Embeddings` / `EmbeddingsWithScores`: nearest passages by embedding similarity,
  over a corpus embedded once (numpy, or FAISS for large corpora).
- `ColBERTv2`: a client for a ColBERTv2 search server.

`dspex.Retrieve(k)` searches whichever retriever ``dspex.configure(rm=...)`` set.
Imported lazily: numpy and FAISS load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "Embeddings": "dspex.retrievers.embeddings",
    "EmbeddingsWithScores": "dspex.retrievers.embeddings",
    "ColBERTv2": "dspex.retrievers.colbertv2",
    "PassageRecord": "dspex.retrievers.colbertv2",
}

__all__ = ["ColBERTv2", "Embeddings", "EmbeddingsWithScores", "PassageRecord"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dspex.retrievers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from dspex.retrievers.colbertv2 import ColBERTv2, PassageRecord
    from dspex.retrievers.embeddings import Embeddings, EmbeddingsWithScores
