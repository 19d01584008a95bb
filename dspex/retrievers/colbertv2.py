"""`ColBERTv2`: a client for a ColBERTv2 search server's HTTP API (DSPy's ``dspy.ColBERTv2``).

    search = dspex.ColBERTv2(url="http://127.0.0.1:8893/search")
    search("Who rules Ulmemoor?", k=3)       # [{"long_text": ..., "pid": ..., "score": ...}, ...]
    search("Who rules Ulmemoor?", k=3)[0].long_text
    search("...", k=3, simplify=True)       # just the texts
    dspex.configure(rm=search)              # what dspex.Retrieve searches

A search is ``GET {url}?query=...&k=...`` (``post_requests=True``: a POST with a JSON
body of the same fields). The answer's ``topk`` records come back as `PassageRecord`s,
dicts that also read as attributes, each with ``long_text`` (the passage), ``pid`` and
``score``. Searches go the way LM requests do: the shared aiohttp transport, typed
errors (an unreachable server is `LMTransportError`), retries with backoff for the
retryable ones, and dspex's cache (keyed by URL, query and k; ``cache=False`` to skip).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode, urlsplit

from dspex.clients.retry import RetryPolicy, call_with_retries
from dspex.clients.transport import HTTPResponse
from dspex.errors import ConfigurationError, LMResponseError, RetrievalServerError


class PassageRecord(dict[str, Any]):
    """A search result: a dict whose keys also read (and write) as attributes."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"this passage has no {name!r} (it has {', '.join(self)})") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]

    def __reduce__(self) -> Any:
        return (PassageRecord, (dict(self),))


class ColBERTv2:
    """A ColBERTv2 server at ``url`` (``port`` is appended when given, as in DSPy)."""

    def __init__(
        self,
        url: str = "http://0.0.0.0",
        port: str | int | None = None,
        post_requests: bool = False,
        *,
        timeout: float = 10.0,
        num_retries: int = 3,
        cache: bool = True,
        transport: Any = None,
    ) -> None:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise ConfigurationError(f"ColBERTv2(url=...) must be an http(s) URL, got {url!r}")
        self.url = f"{url}:{port}" if port else url
        self.post_requests = post_requests
        self.timeout = timeout
        self.num_retries = num_retries
        self.cache = cache
        self.transport = transport

    def __call__(self, query: str, k: int = 10, simplify: bool = False) -> list[Any]:
        from dspex.utils.aio import run_sync

        return run_sync(self.acall(query, k=k, simplify=simplify))

    async def acall(self, query: str, k: int = 10, simplify: bool = False) -> list[Any]:
        if not isinstance(query, str) or not query.strip():
            raise ConfigurationError(f"ColBERTv2 searches a non-empty query string, got {query!r}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigurationError(f"ColBERTv2(...)(k=...) must be an int >= 1, got {k!r}")
        topk = await self._topk(query, k)
        if simplify:
            return [record["long_text"] for record in topk]
        return [PassageRecord(record) for record in topk]

    async def _topk(self, query: str, k: int) -> list[dict[str, Any]]:
        if not self.cache:
            return await self._search(query, k)
        from dspex.clients.cache import cache_key, get_cache

        cache = get_cache()
        key = cache_key(
            provider="colbertv2",
            model=_safe_url(self.url),
            messages=[],
            params={"query": query, "k": k, "post": self.post_requests},
        )
        hit = cache.get(key)
        if hit is not None:
            return [dict(record) for record in hit["topk"]]
        topk = await self._search(query, k)
        cache.put(key, {"topk": topk})
        return topk

    async def _search(self, query: str, k: int) -> list[dict[str, Any]]:
        from dspex.clients.pipeline import default_transport

        transport = self.transport or default_transport()
        fields = {"query": query, "k": k}

        async def attempt() -> list[dict[str, Any]]:
            if self.post_requests:
                headers = {"Content-Type": "application/json; charset=utf-8"}
                body = json.dumps(fields).encode()
                http = await transport.post(self.url, headers=headers, body=body, timeout=self.timeout)
            else:
                separator = "&" if "?" in self.url else "?"
                url = f"{self.url}{separator}{urlencode(fields)}"
                http = await transport.get(url, headers={}, timeout=self.timeout)
            return _topk_of(http, self.url, k)

        return await call_with_retries(attempt, RetryPolicy(num_retries=self.num_retries))

    def __repr__(self) -> str:
        return f"ColBERTv2(url={_safe_url(self.url)!r})"


def colbertv2_get_request_v2(url: str, query: str, k: int) -> list[dict[str, Any]]:
    """DSPy's request function: the top ``k`` records for ``query`` from
    ``GET url?query=...&k=...``, as plain dicts (cached, retried)."""
    return [dict(record) for record in ColBERTv2(url=url)(query, k=k)]


def colbertv2_post_request_v2(url: str, query: str, k: int) -> list[dict[str, Any]]:
    """DSPy's request function: the same by a POST of ``{"query", "k"}`` to ``url``."""
    return [dict(record) for record in ColBERTv2(url=url, post_requests=True)(query, k=k)]


def _topk_of(http: HTTPResponse, url: str, k: int) -> list[dict[str, Any]]:
    """The records of a search answer, each with ``long_text``, or the typed error."""
    from dspex.clients.openai_protocol import error_from_response

    where = _safe_url(url)
    try:
        payload = json.loads(http.body)
    except ValueError:
        payload = None
    server_error = isinstance(payload, dict) and payload.get("error")
    if http.status != 200:
        if server_error and http.status < 500 and http.status != 429:
            raise RetrievalServerError(
                f"{where}: HTTP {http.status}: the search server says: {payload.get('message', payload)}",
                model=where,
                status=http.status,
            )
        raise error_from_response(http, model=where, key_env="(none)")
    if payload is None or not isinstance(payload, dict):
        raise LMResponseError(f"{where}: the search server answered 200 with a body that is not a JSON object", model=where)
    if server_error:
        raise RetrievalServerError(
            f"{where}: the search server says: {payload.get('message', 'unknown error')}", model=where, status=200
        )
    topk = payload.get("topk")
    if not isinstance(topk, list) or not all(isinstance(r, dict) for r in topk):
        raise RetrievalServerError(
            f"{where}: the search answer has no 'topk' list of records: {str(payload)[:200]}", model=where, status=200
        )
    records = []
    for record in topk[:k]:
        text = record.get("long_text", record.get("text"))
        if not isinstance(text, str):
            raise RetrievalServerError(f"{where}: a search record has no text: {str(record)[:200]}", model=where, status=200)
        records.append({**record, "long_text": text})
    return records


def _safe_url(url: str) -> str:
    # Credentials in a URL (user:pass@host, ?key=...) stay out of messages and cache keys.
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


__all__ = ["ColBERTv2", "PassageRecord", "colbertv2_get_request_v2", "colbertv2_post_request_v2"]
