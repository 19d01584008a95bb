"""The HTTP transport interface LM clients speak through.

A transport posts a JSON body and returns status, headers and body. It raises
`LMTimeoutError` when no answer came in time and `LMTransportError` when the
request never got an HTTP answer; it never interprets status codes (that is the
protocol layer's job). The default is `AiohttpTransport`; the simulated LM also
provides an in-process transport for fast unit tests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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
