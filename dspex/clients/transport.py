"""The HTTP transport interface LM clients speak through.

A transport posts a JSON body and returns status, headers and body. It raises
`LMTimeoutError` when no answer came in time and `LMTransportError` when the
request never got an HTTP answer; it never interprets status codes (that is the
protocol layer's job). The default is `AiohttpTransport`; the simulated LM also
provides an in-process transport for fast unit tests.

A transport that can also stream (`StreamingTransport`, the aiohttp one does)
opens a request whose answer arrives as lines (server-sent events): status and
headers first, then the body line by line as the provider writes it. A
transport without ``post_stream`` still serves streamed calls: the answer is
fetched whole and handed on as one chunk (`dspex.clients.streaming`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@runtime_checkable
class Transport(Protocol):
    async def post(
        self, url: str, *, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> HTTPResponse: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class HTTPStream:
    """An answer being streamed: status and headers, then ``lines()`` as they arrive.

    ``lines()`` yields each line without its line break. It ends when the server
    closes the body; a connection that breaks midway raises `LMStreamInterruptedError`
    (the transport cannot tell a cut from an end: the protocol's decoder, which knows
    the final event, decides). ``read()`` returns the whole body (for an error status).
    """

    status: int
    headers: Mapping[str, str]
    lines: Callable[[], AsyncIterator[bytes]]
    read: Callable[[], Awaitable[bytes]]


@runtime_checkable
class StreamingTransport(Transport, Protocol):
    def post_stream(
        self, url: str, *, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> AbstractAsyncContextManager[HTTPStream]:
        """Open a streamed request; leaving the context closes the connection.
        ``timeout`` bounds the wait for the answer to start and each gap between lines,
        not the whole stream (a long answer may stream for longer)."""
        ...
