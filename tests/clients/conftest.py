"""Fixtures for LM-client tests: a scriptable fake provider on 127.0.0.1, an isolated cache.

The fake server runs on its own event loop in a thread, so sync tests, async
tests and plain threads can all call it. Replies are scripted per test
(`server.push(...)`); unscripted requests get a well-formed completion that
echoes the last user message. A reply can wait on a gate that the test opens
(`server.open_gate()`); teardown opens every gate so no handler outlives a test.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON; bytes/str sent as is; None -> default completion
    headers: dict[str, str] = field(default_factory=dict)
    gated: bool = False  # wait until the test opens the gate


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeProvider:
    """OpenAI- and Anthropic-shaped endpoints with scripted replies."""

    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.requests: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.default_gated = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._gate: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- test-side API ------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def count(self) -> int:
        return len(self.requests)

    def push(
        self,
        status: int = 200,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        gated: bool = False,
    ) -> None:
        self.script.append(Reply(status, body, headers or {}, gated))

    def open_gate(self) -> None:
        self._loop.call_soon_threadsafe(self._open_gate)

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        self.open_gate()
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._gate = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def _open_gate(self) -> None:
        assert self._gate is not None
        self._gate.set()

    # --- handlers -----------------------------------------------------------

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, _openai_completion)

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, _anthropic_completion)

    async def _handle(
        self, request: web.Request, default: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Seen(request.path, dict(request.headers), body))
        reply = self.script.popleft() if self.script else Reply(gated=self.default_gated)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if reply.gated:
                assert self._gate is not None
                await self._gate.wait()
        finally:
            self.in_flight -= 1
        payload = reply.body if reply.body is not None else default(body)
        if isinstance(payload, dict | list):
            payload = json.dumps(payload)
        return web.Response(
            status=reply.status,
            body=payload.encode() if isinstance(payload, str) else payload,
            headers={"Content-Type": "application/json", **reply.headers},
        )


def _last_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return str(users[-1]["content"]) if users else ""


def _openai_completion(body: dict[str, Any]) -> dict[str, Any]:
    n = body.get("n", 1)
    text = f"echo: {_last_user_text(body)}"
    return {
        "id": "cmpl-test",
        "object": "chat.completion",
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": f"{text} #{i}" if n > 1 else text},
                "finish_reason": "stop",
            }
            for i in range(n)
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5 * n, "total_tokens": 10 + 5 * n},
    }


def _anthropic_completion(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "msg-test",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": f"echo: {_last_user_text(body)}"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 12, "output_tokens": 4},
    }


@pytest.fixture
def server() -> Iterator[FakeProvider]:
    provider = FakeProvider()
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_API_BASE",
        "OPENAI_BASE_URL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_API_BASE",
        "ANTHROPIC_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


async def _wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.005)


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    return _wait_until
