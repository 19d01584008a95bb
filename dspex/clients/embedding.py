"""Embedders: texts -> vectors, for retrievers and KNNFewShot.

    embedder = dspex.Embedder("openai/text-embedding-3-small", api_base=..., batch_size=100)
    embedder(["hello", "world"])          # float32 array, shape (2, dim)
    embedder("hello")                     # one vector, shape (dim,)
    dspex.Embedder(my_function)           # any function list[str] -> array-like

`Embedder` is DSPy's ``dspy.Embedder``: a model name behind an OpenAI-compatible
``POST {api_base}/embeddings`` endpoint, or a function. It sends the texts in
batches of ``batch_size`` and, with ``caching``, embeds each distinct text once:
vectors are kept on the Embedder, and a hosted model's vectors also go into
dspex's LM cache (memory and disk, `dspex.clients.cache`), so a restarted program
or another Ray worker on the node does not pay for them again.

A hosted model's requests go the way an LM's do: the shared aiohttp transport,
typed errors decoded from the provider's answer (`openai_protocol`), and retries
with backoff for the retryable ones (`dspex.clients.retry`). While the runtime is up
(a dispatcher with a ``gate`` is installed, `dspex.clients.dispatch`), each attempt
also waits for a permit of the endpoint's provider pool, so ``rpm=``/``tpm=`` and the
circuit breaker hold across every process and node, as for an LM.

Also a base class: implement `embed` (and `aembed` when the work is I/O).
`HashingEmbedder` (pure numpy, no downloads), `OpenAIEmbedder` and
`CallableEmbedder` are the building blocks.

numpy is imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from dspex.clients.dispatch import current_dispatcher
from dspex.clients.retry import RetryPolicy, call_with_retries
from dspex.errors import ConfigurationError, EmbeddingDimensionError, LMResponseError

if TYPE_CHECKING:
    import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
# Constructor arguments of a hosted model that configure the client, not the request.
_CLIENT_ARGS = frozenset(
    {"api_base", "base_url", "api_key", "timeout", "num_retries", "transport", "max_concurrency", "rpm", "tpm"}
)


class Embedder:
    """Text -> vectors (see the module docstring).

    ``Embedder(model, batch_size=200, caching=True, **kwargs)``: ``model`` is a model
    name (``"openai/<name>"`` or a bare name; ``api_base=``, ``api_key=``, ``timeout=``,
    ``num_retries=``, ``max_concurrency=``, ``rpm=``, ``tpm=`` configure the client, any other kwargs go
    into each request, e.g. ``dimensions=256``) or a function ``texts -> vectors``
    (kwargs are passed to it). A call may override ``batch_size``, ``caching`` and the
    kwargs: ``embedder(texts, batch_size=10, caching=False, dimensions=64)``.
    """

    def __init__(
        self,
        model: str | Callable[..., Any] | None = None,
        batch_size: int = 200,
        caching: bool = True,
        **kwargs: Any,
    ) -> None:
        _check_batch_size(batch_size)
        self.model = model
        self.batch_size = batch_size
        self.caching = caching
        self._vectors: dict[tuple[str, str], Any] = {}
        self._model: Embedder | None
        client = {k: kwargs.pop(k) for k in list(kwargs) if k in _CLIENT_ARGS}
        self.default_kwargs: dict[str, Any] = kwargs
        if model is None:
            self._model = None
        elif isinstance(model, str):
            # DSPy's Embedder returns what the model returns: no normalising here.
            self._model = OpenAIEmbedder(model, batch_size=batch_size, normalize=False, **client)
        elif callable(model):
            if client:
                raise ConfigurationError(
                    f"Embedder(function, {', '.join(sorted(client))}=...): those configure a "
                    "hosted model's client; a function is called as it is"
                )
            self._model = CallableEmbedder(model)
        else:
            raise ConfigurationError(
                f"Embedder(model=...) takes a model name or a function texts -> vectors, got "
                f"{type(model).__name__}"
            )

    # --- the API -------------------------------------------------------------------

    def embed(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        caching: bool | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        model = self._backing_model()
        if isinstance(model, OpenAIEmbedder):
            from dspex.utils.aio import run_sync

            return run_sync(self.aembed(texts, batch_size=batch_size, caching=caching, **kwargs))
        texts = _as_texts(texts)
        params = {**self.default_kwargs, **kwargs}
        use_cache = self.caching if caching is None else caching
        batches = self._batches(texts, params, batch_size, use_cache)
        parts = [model.embed_with(batch, params) for batch in batches]
        return self._assemble(texts, params, batches, parts, use_cache)

    async def aembed(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        caching: bool | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        if getattr(self, "_model", None) is None:
            # A subclass's CPU-bound embed: off the event loop, with the caller's context.
            return await asyncio.to_thread(self.embed, list(texts))
        model = self._backing_model()
        texts = _as_texts(texts)
        params = {**self.default_kwargs, **kwargs}
        use_cache = self.caching if caching is None else caching
        shared = use_cache and isinstance(model, OpenAIEmbedder)
        if shared:
            self._fill_from_shared_cache(model, texts, params)
        batches = self._batches(texts, params, batch_size, use_cache)
        if isinstance(model, OpenAIEmbedder):
            parts = await model.abatches(batches, params)
        else:
            parts = [await model.aembed_with(batch, params) for batch in batches]
        result = self._assemble(texts, params, batches, parts, use_cache)
        if shared:
            _store_shared(model, batches, parts, params)
        return result

    def __call__(
        self,
        texts: str | Sequence[str],
        batch_size: int | None = None,
        caching: bool | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        if isinstance(texts, str):
            return self.embed([texts], batch_size=batch_size, caching=caching, **kwargs)[0]
        return self.embed(texts, batch_size=batch_size, caching=caching, **kwargs)

    async def acall(
        self,
        texts: str | Sequence[str],
        batch_size: int | None = None,
        caching: bool | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        if isinstance(texts, str):
            return (await self.aembed([texts], batch_size=batch_size, caching=caching, **kwargs))[0]
        return await self.aembed(texts, batch_size=batch_size, caching=caching, **kwargs)

    # Building blocks (HashingEmbedder, CallableEmbedder, ...) take request params here.
    def embed_with(self, texts: list[str], params: dict[str, Any]) -> np.ndarray:
        return self.embed(texts, **params)

    async def aembed_with(self, texts: list[str], params: dict[str, Any]) -> np.ndarray:
        return await self.aembed(texts, **params)

    def __repr__(self) -> str:
        model = self.model if isinstance(self.model, str) or self.model is None else _name_of(self.model)
        return f"Embedder({model!r}, batch_size={self.batch_size}, caching={self.caching})"

    # --- batching and the cache ----------------------------------------------------

    def _backing_model(self) -> Embedder:
        model = getattr(self, "_model", None)
        if model is None:
            raise NotImplementedError(
                f"{type(self).__name__} must implement embed(texts), or be built as "
                "Embedder(model_name_or_function)"
            )
        return model

    def _batches(
        self, texts: list[str], params: dict[str, Any], batch_size: int | None, use_cache: bool
    ) -> list[list[str]]:
        """The texts to send, in batches: each distinct one once, and with the cache on,
        only those not embedded before with the same params."""
        size = self.batch_size if batch_size is None else batch_size
        _check_batch_size(size)
        tag = _params_tag(params)
        todo = list(dict.fromkeys(texts))
        if use_cache:
            todo = [t for t in todo if (t, tag) not in self._vectors]
        return [todo[i : i + size] for i in range(0, len(todo), size)]

    def _assemble(
        self,
        texts: list[str],
        params: dict[str, Any],
        batches: list[list[str]],
        parts: list[Any],
        use_cache: bool,
    ) -> np.ndarray:
        import numpy as np

        tag = _params_tag(params)
        fresh: dict[tuple[str, str], Any] = {}
        for batch, part in zip(batches, parts, strict=True):
            matrix = _as_matrix(part, len(batch))
            fresh.update(((text, tag), row) for text, row in zip(batch, matrix, strict=True))
        if use_cache:
            self._vectors.update(fresh)
            lookup = self._vectors
        else:
            lookup = fresh
        if not texts:
            return np.zeros((0, 0), np.float32)
        rows = [lookup[(text, tag)] for text in texts]
        dims = {row.shape[0] for row in rows}
        if len(dims) > 1:
            raise EmbeddingDimensionError(
                f"the embedder returned vectors of different lengths {sorted(dims)} for one call "
                f"({self!r}): one model must embed every text; clear the cache "
                "(caching=False) if the model or its dimensions= changed"
            )
        return np.stack(rows).astype(np.float32, copy=False)

    def _fill_from_shared_cache(
        self, model: OpenAIEmbedder, texts: list[str], params: dict[str, Any]
    ) -> None:
        from dspex.clients.cache import get_cache

        tag = _params_tag(params)
        cache = get_cache()
        for text in dict.fromkeys(texts):
            if (text, tag) in self._vectors:
                continue
            value = cache.get(_shared_key(model, text, params))
            if value is not None:
                self._vectors[(text, tag)] = _decode_vector(value)


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

    def embed(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        import numpy as np

        matrix = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                index, sign = self._bucket(feature)
                matrix[row, index] += sign
        return normalise(matrix)

    async def aembed(self, texts: Sequence[str], **_: Any) -> np.ndarray:
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


class CallableEmbedder(Embedder):
    """Wraps ``fn(texts, **kwargs) -> array`` (or an async function) as an Embedder."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def embed(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        value = self.fn(list(texts), **kwargs)
        if asyncio.iscoroutine(value):
            value.close()
            raise ConfigurationError("this embedder function is async: use aembed()")
        return _as_matrix(value, len(texts))

    async def aembed(self, texts: Sequence[str], **kwargs: Any) -> np.ndarray:
        if asyncio.iscoroutinefunction(self.fn):
            return _as_matrix(await self.fn(list(texts), **kwargs), len(texts))
        return await asyncio.to_thread(self.embed, list(texts), **kwargs)

    def __repr__(self) -> str:
        return f"CallableEmbedder({_name_of(self.fn)})"


class OpenAIEmbedder(Embedder):
    """Embeddings from an OpenAI-compatible ``POST {api_base}/embeddings`` endpoint.

    The API key (``api_key=`` or ``$OPENAI_API_KEY``) is sent as a bearer token and
    never shown in ``repr`` or pickles. Batches of ``batch_size`` texts, at most
    ``max_concurrency`` requests in flight per call; retryable failures (429, 5xx,
    timeouts, dropped connections) are retried ``num_retries`` times with backoff.
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        api_base: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        batch_size: int = 128,
        timeout: float = 60.0,
        num_retries: int = 3,
        max_concurrency: int = 8,
        normalize: bool = True,
        transport: Any = None,
        rpm: float | None = None,
        tpm: float | None = None,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError(f"OpenAIEmbedder(model=...) must be a model name, got {model!r}")
        _check_batch_size(batch_size)
        self.model = model.removeprefix("openai/")
        base = api_base or base_url or os.environ.get("OPENAI_API_BASE") or "https://api.openai.com/v1"
        self.api_base = base.rstrip("/")
        self._api_key = api_key
        self.batch_size = batch_size
        self.timeout = timeout
        self.retry_policy = RetryPolicy(num_retries=num_retries)
        self.max_concurrency = max(1, max_concurrency)
        self.normalize = normalize
        self.transport = transport
        self.rpm, self.tpm = rpm, tpm
        self._endpoint_lm: Any = None

    def embed(self, texts: Sequence[str], **params: Any) -> np.ndarray:
        from dspex.utils.aio import run_sync

        return run_sync(self.aembed(texts, **params))

    async def aembed(self, texts: Sequence[str], **params: Any) -> np.ndarray:
        import numpy as np

        texts = _as_texts(texts)
        batches = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        parts = await self.abatches(batches, params)
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(parts, axis=0)

    async def abatches(self, batches: list[list[str]], params: dict[str, Any]) -> list[np.ndarray]:
        """One request per batch, at most ``max_concurrency`` at once, results in order."""
        slots = asyncio.Semaphore(self.max_concurrency)

        async def one(batch: list[str]) -> np.ndarray:
            async with slots:
                return await self._request(batch, params)

        return list(await asyncio.gather(*(one(batch) for batch in batches)))

    async def _request(self, batch: list[str], params: dict[str, Any]) -> np.ndarray:
        from dspex.clients.openai_protocol import decode_json, error_from_response
        from dspex.clients.pipeline import default_transport

        url = f"{self.api_base}/embeddings"
        headers = {"Content-Type": "application/json"}
        key = self._api_key or os.environ.get("OPENAI_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = json.dumps({**params, "model": self.model, "input": batch}).encode()
        transport = self.transport or default_transport()

        async def attempt() -> np.ndarray:
            http = await transport.post(url, headers=headers, body=body, timeout=self.timeout)
            if http.status != 200:
                raise error_from_response(http, model=self.model, key_env="OPENAI_API_KEY")
            return parse_embeddings(decode_json(http, model=self.model), len(batch), self.model)

        gate = getattr(current_dispatcher(), "gate", None)
        if gate is None:
            matrix = await call_with_retries(attempt, self.retry_policy)
        else:  # the runtime's provider pools: the endpoint's limits hold cluster-wide
            tokens = sum(len(text) // 4 + 1 for text in batch)
            matrix = await gate(self.endpoint_lm(), attempt, tokens=tokens, policy=self.retry_policy)
        return normalise(matrix) if self.normalize else matrix

    def endpoint_lm(self) -> Any:
        """An `LM` naming this endpoint and its limits, for the provider pool (no key)."""
        if getattr(self, "_endpoint_lm", None) is None:  # (absent in older pickles)
            from dspex.clients.lm import LM

            self._endpoint_lm = LM(
                f"openai/{self.model}",
                api_base=self.api_base,
                rpm=self.rpm,
                tpm=self.tpm,
                max_concurrency=self.max_concurrency,
                timeout=self.timeout,
            )
        return self._endpoint_lm

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_api_key"] = None  # a worker reads $OPENAI_API_KEY instead
        state["_endpoint_lm"] = None
        return state

    def __repr__(self) -> str:
        return f"OpenAIEmbedder({self.model!r}, api_base={self.api_base!r})"


def parse_embeddings(payload: Any, expected: int, model: str) -> np.ndarray:
    """The rows of an OpenAI embeddings response, in input order, checked."""
    import numpy as np

    try:
        rows = sorted(payload["data"], key=lambda item: item.get("index", 0))
        vectors = [row["embedding"] for row in rows]
    except (KeyError, TypeError, AttributeError) as exc:
        raise LMResponseError(
            f"{model}: the embeddings response is not in the OpenAI format ({exc!r})", model=model
        ) from exc
    lengths = {len(v) if isinstance(v, list) else -1 for v in vectors}
    if len(lengths) > 1:
        raise EmbeddingDimensionError(
            f"{model}: one embeddings response holds vectors of different lengths "
            f"{sorted(lengths)}: the server is broken or mixes models"
        )
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise LMResponseError(f"{model}: the embeddings are not lists of numbers ({exc})", model=model) from exc
    if matrix.ndim != 2 or matrix.shape[0] != expected:
        raise LMResponseError(
            f"{model}: asked for {expected} embeddings, got an array of shape {matrix.shape}",
            model=model,
        )
    return matrix


# --- the shared (LM) cache for hosted models --------------------------------------------


def _shared_key(model: OpenAIEmbedder, text: str, params: dict[str, Any]) -> str:
    from dspex.clients.cache import cache_key

    # The API base and key are never part of a key (as for LMs).
    return cache_key(provider="openai-embeddings", model=model.model, messages=[], params={**params, "input": text})


def _store_shared(
    model: OpenAIEmbedder, batches: list[list[str]], parts: list[Any], params: dict[str, Any]
) -> None:
    from dspex.clients.cache import get_cache

    cache = get_cache()
    for batch, part in zip(batches, parts, strict=True):
        for text, row in zip(batch, part, strict=True):
            cache.put(_shared_key(model, text, params), _encode_vector(row))


def _encode_vector(row: np.ndarray) -> dict[str, Any]:
    import numpy as np

    data = np.ascontiguousarray(row, dtype=np.float32).tobytes()
    return {"embedding_f32": base64.b64encode(data).decode("ascii")}


def _decode_vector(value: dict[str, Any]) -> np.ndarray:
    import numpy as np

    return np.frombuffer(base64.b64decode(value["embedding_f32"]), dtype=np.float32).copy()


# --- helpers -----------------------------------------------------------------------------


def to_embedder(value: Any) -> Embedder:
    """An Embedder from an Embedder, a model name, or a ``texts -> array`` function."""
    if isinstance(value, Embedder):
        return value
    if isinstance(value, str) or callable(value):
        return Embedder(value)
    raise ConfigurationError(
        f"an embedder must be a dspex.Embedder, a model name or a function texts -> vectors, "
        f"got {type(value).__name__}"
    )


def _as_texts(texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise ConfigurationError(f"an embedder embeds strings; got a {type(bad).__name__}: {bad!r:.80}")
    return texts


def _check_batch_size(batch_size: Any) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigurationError(f"Embedder(batch_size=...) must be an int >= 1, got {batch_size!r}")


def _params_tag(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=repr) if params else ""


def _name_of(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _as_matrix(value: Any, rows: int) -> np.ndarray:
    import numpy as np

    try:
        matrix = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbeddingDimensionError(
            f"the embedder's vectors for {rows} texts are not one array of numbers ({exc}): "
            "every vector must have the same length"
        ) from exc
    if matrix.ndim == 1 and rows == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[0] != rows:
        raise ConfigurationError(f"the embedder returned shape {matrix.shape} for {rows} texts; expected ({rows}, dim)")
    return matrix


def normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (an all-zero row, e.g. an empty text, stays zero)."""
    import numpy as np

    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1.0, norms)).astype(np.float32)


__all__ = [
    "CallableEmbedder",
    "Embedder",
    "HashingEmbedder",
    "OpenAIEmbedder",
    "normalise",
    "parse_embeddings",
    "to_embedder",
]
