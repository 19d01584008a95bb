"""The simulated LM's retrieval endpoints.

- ``POST /v1/embeddings``: OpenAI's embeddings API (``model``, ``input`` as a string
  or a list of strings, optional ``dimensions``), answered with `embeddings` vectors.
- ``GET /search?query=...&k=...`` (and ``POST /search`` with a JSON body of the same
  two fields): a ColBERTv2 server's API over the bundled corpus (`corpus`), answered
  ``{"query": ..., "topk": [{"text", "long_text", "pid", "rank", "score", "prob"}]}``.
  A bad request is answered as ColBERTv2 servers do: ``{"error": true, "message": ...}``.

Both are faulted, delayed, authorised and counted as chat requests are, so the
clients' retries and error handling can be tested against them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from dspex.simlm import corpus
from dspex.simlm.embeddings import DEFAULT_DIM, MAX_DIM, embeddings_payload

if TYPE_CHECKING:
    from dspex.simlm.core import SimCore, SimResponse

EMBEDDINGS = ("POST", "/v1/embeddings")
SEARCH_PATHS = ("/search", "/v1/search")
DEFAULT_K = 10


def handles(route: tuple[str, str]) -> bool:
    return route == EMBEDDINGS or (route[1] in SEARCH_PATHS and route[0] in ("GET", "POST"))


async def serve(
    core: SimCore, route: tuple[str, str], headers: Mapping[str, str], body: bytes, query: str
) -> SimResponse:
    from dspex.simlm.core import _error

    if not core._authorized(headers):
        return _error("openai", 401, "invalid or missing API key")
    key = hashlib.blake2b(route[1].encode() + b"?" + query.encode() + b"|" + body, digest_size=16).digest()
    decision = core.faults.decide(key)
    if decision.kind is not None:
        core.stats.faults[decision.kind] += 1
    await core._delay(key, decision)
    if decision.status is not None:
        message = {429: "rate limit reached (simulated)", 503: "the simulated server is in an outage"}
        return _error("openai", decision.status, message.get(decision.status, "simulated failure"), decision.retry_after)
    if route == EMBEDDINGS:
        return _embeddings(body)
    return _search(route[0], body, query)


def _embeddings(body: bytes) -> SimResponse:
    from dspex.simlm.core import _error, _ok

    try:
        request = json.loads(body)
    except ValueError:
        return _error("openai", 400, "request body is not valid JSON")
    if not isinstance(request, dict):
        return _error("openai", 400, "request body must be a JSON object")
    texts = request.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return _error("openai", 400, "'input' must be a string or a non-empty list of strings")
    dim = request.get("dimensions", DEFAULT_DIM)
    if not isinstance(dim, int) or isinstance(dim, bool) or not 8 <= dim <= MAX_DIM:
        return _error("openai", 400, f"'dimensions' must be an int from 8 to {MAX_DIM}, got {dim!r}")
    model = request.get("model")
    if not isinstance(model, str) or not model:
        return _error("openai", 400, "'model' is required")
    return _ok(embeddings_payload(model, texts, dim))


def _search(method: str, body: bytes, query: str) -> SimResponse:
    from dspex.simlm.core import _ok

    fields: dict[str, Any]
    if method == "GET":
        fields = {name: values[-1] for name, values in parse_qs(query).items()}
    else:
        try:
            fields = json.loads(body or b"{}")
        except ValueError:
            return _search_error(400, "request body is not valid JSON")
        if not isinstance(fields, dict):
            return _search_error(400, "request body must be a JSON object")
    text = fields.get("query")
    if not isinstance(text, str) or not text.strip():
        return _search_error(400, "a non-empty 'query' is required")
    try:
        k = int(fields.get("k", DEFAULT_K))
    except (TypeError, ValueError):
        return _search_error(400, f"'k' must be an integer, got {fields.get('k')!r}")
    if not 1 <= k <= corpus.MAX_K:
        return _search_error(400, f"'k' must be from 1 to {corpus.MAX_K}, got {k}")
    return _ok({"query": text, "topk": corpus.search(text, k), "latency": 0.0})


def _search_error(status: int, message: str) -> SimResponse:
    from dspex.simlm.core import SimResponse
    from dspex.simlm.protocols import json_response

    # ColBERTv2 servers answer errors in a body of their own shape.
    return SimResponse(status, {"Content-Type": "application/json"}, json_response({"error": True, "message": message}))


__all__ = ["EMBEDDINGS", "SEARCH_PATHS", "handles", "serve"]
