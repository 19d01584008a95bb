"""AiohttpTransport: timeouts, refused connections, pooled sessions per loop."""

from __future__ import annotations

import asyncio
import pickle
import socket
import threading
import time
from typing import Any

import pytest

from dspex.clients import LM
from dspex.clients.aiohttp_transport import AiohttpTransport, _safe_url
from dspex.clients.transport import Transport
from dspex.errors import LMTimeoutError, LMTransportError

BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
HEADERS = {"Content-Type": "application/json"}


def closed_port() -> int:
    # Bind then close: nothing listens there afterwards, so connecting is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_is_a_transport() -> None:
    assert isinstance(AiohttpTransport(), Transport)


async def test_post_returns_status_headers_body(server: Any) -> None:
    transport = AiohttpTransport()
    try:
        resp = await transport.post(
            server.base_url + "/chat/completions", headers=HEADERS, body=BODY, timeout=5
        )
    finally:
        await transport.aclose()
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("application/json")  # case-insensitive
    assert resp.json()["choices"][0]["message"]["content"] == "echo: hi"


async def test_timeout_on_a_hanging_server(server: Any) -> None:
    server.push(gated=True)  # never answered until teardown
    transport = AiohttpTransport()
    started = time.monotonic()
    with pytest.raises(LMTimeoutError, match=r"within 0\.2s"):
        await transport.post(
            server.base_url + "/chat/completions", headers=HEADERS, body=BODY, timeout=0.2
        )
    assert time.monotonic() - started < 3.0
    await transport.aclose()


async def test_connection_refused_is_a_transport_error() -> None:
    transport = AiohttpTransport()
    url = f"http://127.0.0.1:{closed_port()}/v1/chat/completions"
    with pytest.raises(LMTransportError, match="could not reach") as info:
        await transport.post(url, headers=HEADERS, body=BODY, timeout=5)
    assert info.value.retryable
    await transport.aclose()


async def test_lm_timeout_and_refused_surface_typed_errors(
    server: Any, isolated_cache: Any
) -> None:
    server.push(gated=True)
    lm = LM("openai/m", api_base=server.base_url, timeout=0.2, num_retries=0, cache=False)
    with pytest.raises(LMTimeoutError) as info:
        await lm.acall("hi")
    assert info.value.model == "openai/m"
    dead = LM(
        "openai/m", api_base=f"http://127.0.0.1:{closed_port()}/v1", num_retries=0, cache=False
    )
    with pytest.raises(LMTransportError):
        await dead.acall("hi")


async def test_one_session_per_loop_reused_across_calls(server: Any) -> None:
    transport = AiohttpTransport()
    url = server.base_url + "/chat/completions"
    await transport.post(url, headers=HEADERS, body=BODY, timeout=5)
    loop = asyncio.get_running_loop()
    first = transport._sessions[loop]
    await asyncio.gather(
        *(transport.post(url, headers=HEADERS, body=BODY, timeout=5) for _ in range(20))
    )
    assert transport._sessions[loop] is first
    assert len(transport._sessions) == 1
    await transport.aclose()
    assert first.closed and loop not in transport._sessions


def test_session_is_closed_when_its_loop_shuts_down(server: Any) -> None:
    transport = AiohttpTransport()
    sessions: list[Any] = []

    async def use() -> None:
        await transport.post(
            server.base_url + "/chat/completions", headers=HEADERS, body=BODY, timeout=5
        )
        sessions.append(transport._sessions[asyncio.get_running_loop()])

    asyncio.run(use())
    assert sessions[0].closed
    assert transport._sessions == {}


def test_separate_loops_in_threads_get_separate_sessions(server: Any) -> None:
    transport = AiohttpTransport()
    seen: list[Any] = []
    barrier = threading.Barrier(2)

    async def use() -> None:
        await transport.post(
            server.base_url + "/chat/completions", headers=HEADERS, body=BODY, timeout=5
        )
        seen.append(transport._sessions[asyncio.get_running_loop()])
        await asyncio.to_thread(barrier.wait, 5)  # both loops alive at once

    threads = [threading.Thread(target=asyncio.run, args=(use(),)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(seen) == 2 and seen[0] is not seen[1]
    assert all(s.closed for s in seen)


def test_transport_pickles_as_settings_only() -> None:
    transport = AiohttpTransport(limit=7, trust_env=True)
    clone = pickle.loads(pickle.dumps(transport))
    assert clone._limit == 7 and clone._trust_env and clone._sessions == {}


def test_safe_url_drops_credentials_and_query() -> None:
    assert _safe_url("https://user:pw@host:8443/v1/x?key=abc") == "https://host:8443/v1/x"
