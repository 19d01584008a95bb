"""`SimTransport`: the simulated LM without sockets, for fast unit tests.

It implements dspex's `Transport` protocol by calling the same request handler
the HTTP server uses, so replies, faults and stats are identical; only the
network is missing. A client's timeout is honoured for real: a request hung by
a timeout fault longer than `timeout` raises `LMTimeoutError`. Streamed requests
(``post_stream``) get the same events as over HTTP, paced and cut the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from dspex.clients.transport import HTTPResponse, HTTPStream
from dspex.errors import LMTimeoutError
from dspex.simlm.core import SimCore
from dspex.simlm.faults import FaultConfig
from dspex.simlm.oracle import OracleConfig
from dspex.simlm.streaming import lines_of

#: A base URL to give LM clients that use a SimTransport (any URL works; only its path is read).
SIM_URL = "http://sim-lm.invalid/v1"


class SimTransport:
    """In-process transport to a simulated LM (see `start_sim_lm` for the HTTP one)."""

    url = SIM_URL

    def __init__(
        self,
        *,
        seed: int = 0,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        faults: FaultConfig | Mapping[str, Any] | None = None,
        api_key: str | None = None,
        oracle_config: OracleConfig | None = None,
    ) -> None:
        self.core = SimCore(
            seed=seed,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            faults=faults,
            api_key=api_key,
            oracle_config=oracle_config,
        )

    async def post(
        self, url: str, *, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> HTTPResponse:
        return await self.request("POST", url, headers=headers, body=body, timeout=timeout)

    async def get(
        self, url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 30.0
    ) -> HTTPResponse:
        return await self.request("GET", url, headers=headers or {}, body=b"", timeout=timeout)

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> HTTPResponse:
        path = urlsplit(url).path or "/"
        try:
            answer = await asyncio.wait_for(self.core.handle(method, path, headers, body), timeout)
        except asyncio.TimeoutError:
            raise LMTimeoutError(
                f"simulated LM did not answer {method} {path} within {timeout} s"
            ) from None
        return HTTPResponse(answer.status, answer.headers, answer.body)

    @asynccontextmanager
    async def post_stream(
        self, url: str, *, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> AsyncIterator[HTTPStream]:
        """A streamed request (`StreamingTransport`): the answer's events as lines."""
        path = urlsplit(url).path or "/"
        try:
            answer = await asyncio.wait_for(self.core.handle("POST", path, headers, body), timeout)
        except asyncio.TimeoutError:
            raise LMTimeoutError(f"simulated LM did not answer POST {path} within {timeout} s") from None
        plan = answer.stream

        def lines() -> AsyncIterator[bytes]:
            return lines_of(plan) if plan is not None else _body_lines(answer.body)

        async def read() -> bytes:
            return answer.body

        yield HTTPStream(answer.status, answer.headers, lines, read)

    async def aclose(self) -> None:
        """Nothing to release; present to satisfy the Transport protocol."""

    def set_faults(
        self, faults: FaultConfig | Mapping[str, Any] | None = None, **fields: Any
    ) -> FaultConfig:
        return self.core.set_faults(fields if faults is None and fields else faults)

    def stats(self) -> dict[str, Any]:
        return self.core.stats_snapshot()

    def reset_stats(self) -> None:
        self.core.reset_stats()


async def _body_lines(body: bytes) -> AsyncIterator[bytes]:
    for line in body.split(b"\n"):
        yield line
