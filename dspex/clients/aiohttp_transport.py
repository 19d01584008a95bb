"""The default HTTP transport: aiohttp, one pooled session per event loop.

Why aiohttp: at hundreds of requests in flight its client CPU per call stays
well under a millisecond, where httpx's pool scans dominate (DESIGN.md). The
session's connection pool only works for the loop that created it, so each
transport keeps one session per running loop, created on first use. A session
is closed when its loop shuts down (``asyncio.run``/``Runner.close`` finalise
async generators, and a tiny generator parked on each loop closes its session
then), when ``aclose()`` is called from that loop, or best-effort at exit for
loops still running in other threads (dspex's background loop).

aiohttp is imported here only, and this module is imported lazily by the LM
client, so ``import dspex`` stays fast.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from dspex.clients.transport import HTTPResponse, HTTPStream
from dspex.errors import LMStreamInterruptedError, LMTimeoutError, LMTransportError

# Imported for its side effect on exit order: atexit runs handlers last-in first-out,
# so ours (registered below) closes sessions before the background loop is stopped.
from dspex.utils import aio as _aio  # noqa: F401

logger = logging.getLogger(__name__)

_transports: weakref.WeakSet[AiohttpTransport] = weakref.WeakSet()


class AiohttpTransport:
    """`Transport` over pooled aiohttp sessions (one per event loop).

    ``limit`` is the connection-pool size per session (0 = unbounded: concurrency
    is limited above the transport, by the LM's semaphore or the provider pool).
    ``trust_env`` makes aiohttp honour HTTP(S)_PROXY and ~/.netrc; it is off by
    default because it costs an environment/netrc lookup per request.
    """

    def __init__(
        self,
        *,
        limit: int = 0,
        keepalive_timeout: float = 60.0,
        trust_env: bool = False,
    ) -> None:
        self._limit = limit
        self._keepalive_timeout = keepalive_timeout
        self._trust_env = trust_env
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._closers: dict[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._lock = threading.Lock()
        _transports.add(self)

    def __getstate__(self) -> dict[str, Any]:
        # Sessions belong to this process's loops: ship only the settings.
        return {
            "limit": self._limit,
            "keepalive_timeout": self._keepalive_timeout,
            "trust_env": self._trust_env,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    async def post(
        self, url: str, *, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> HTTPResponse:
        session = await self._session()
        try:
            async with session.post(
                url, data=body, headers=headers, timeout=self._timeout(timeout)
            ) as resp:
                data = await resp.read()
                return HTTPResponse(resp.status, resp.headers, data)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise LMTimeoutError(
                f"no answer from {_safe_url(url)} within {timeout:g}s; "
                "raise the LM's timeout= if the model is slow, or check the server"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise LMTransportError(
                f"could not reach {_safe_url(url)}: {type(exc).__name__}: {exc}; "
                "check api_base and that the server is up"
            ) from exc

    @asynccontextmanager
    async def post_stream(
        self, url: str, *, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> AsyncIterator[HTTPStream]:
        """A streamed request (`StreamingTransport`): ``timeout`` bounds the connect and
        each read, not the whole answer, which may stream for longer."""
        session = await self._session()
        where = _safe_url(url)
        limits = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        try:
            response = await session.post(url, data=body, headers=headers, timeout=limits)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise LMTimeoutError(f"no answer from {where} within {timeout:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise LMTransportError(
                f"could not reach {where}: {type(exc).__name__}: {exc}; "
                "check api_base and that the server is up"
            ) from exc

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for line in response.content:
                    yield line.rstrip(b"\r\n")
            except (asyncio.TimeoutError, TimeoutError) as exc:
                raise LMTimeoutError(
                    f"{where} stopped streaming for more than {timeout:g}s mid-answer"
                ) from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise LMStreamInterruptedError(
                    f"the stream from {where} broke off mid-answer: {type(exc).__name__}: {exc}"
                ) from exc

        async def read() -> bytes:
            try:
                return await response.read()
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError, TimeoutError) as exc:
                raise LMTransportError(f"the answer from {where} broke off: {exc}") from exc

        try:
            yield HTTPStream(response.status, response.headers, lines, read)
        finally:
            # Closing (not releasing) a half-read answer drops its connection: a consumer
            # that stopped early stops the provider's generation too.
            response.close()

    async def get(
        self, url: str, *, headers: Mapping[str, str], timeout: float
    ) -> HTTPResponse:
        """A GET (search APIs such as ColBERTv2's take their query in the URL)."""
        session = await self._session()
        try:
            async with session.get(url, headers=headers, timeout=self._timeout(timeout)) as resp:
                data = await resp.read()
                return HTTPResponse(resp.status, resp.headers, data)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise LMTimeoutError(
                f"no answer from {_safe_url(url)} within {timeout:g}s; raise timeout= or check the server"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise LMTransportError(
                f"could not reach {_safe_url(url)}: {type(exc).__name__}: {exc}; "
                "check the URL and that the server is up"
            ) from exc

    async def aclose(self) -> None:
        """Close this transport's session for the running loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            session = self._sessions.pop(loop, None)
            self._closers.pop(loop, None)
        if session is not None:
            await session.close()

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        # ClientTimeout objects are immutable; reuse them instead of building one per call.
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        return timeout

    async def _session(self) -> aiohttp.ClientSession:
        """This event loop's session (a session belongs to the loop that made it)."""
        session = self._sessions.get(asyncio.get_running_loop())
        if session is None or session.closed:
            session = await self._new_session()
        return session

    async def _new_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(
            limit=self._limit,
            limit_per_host=0,
            keepalive_timeout=self._keepalive_timeout,
            ttl_dns_cache=300,
        )
        session = aiohttp.ClientSession(connector=connector, trust_env=self._trust_env)
        closer = _close_on_loop_shutdown(self, loop, session)
        await closer.__anext__()  # parks the generator; the loop finalises it at shutdown
        with self._lock:
            self._forget_closed_loops()
            self._sessions[loop] = session
            self._closers[loop] = closer
        return session

    def _forget_closed_loops(self) -> None:
        # Loops closed without finalising async generators leave entries behind.
        for loop in [loop for loop in self._sessions if loop.is_closed()]:
            del self._sessions[loop]
            self._closers.pop(loop, None)

    def _drop(self, loop: asyncio.AbstractEventLoop, session: aiohttp.ClientSession) -> None:
        with self._lock:
            if self._sessions.get(loop) is session:
                del self._sessions[loop]
                self._closers.pop(loop, None)

    def _open_sessions(self) -> list[tuple[asyncio.AbstractEventLoop, Any]]:
        with self._lock:
            return [(loop, s) for loop, s in self._sessions.items() if not loop.is_closed()]


async def _close_on_loop_shutdown(
    transport: AiohttpTransport, loop: asyncio.AbstractEventLoop, session: aiohttp.ClientSession
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        transport._drop(loop, session)
        await session.close()


def _safe_url(url: str) -> str:
    # URLs may carry credentials (user:pass@host, ?key=...): show scheme, host and path only.
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


_default: AiohttpTransport | None = None


def default_transport() -> AiohttpTransport:
    """The process-wide transport LMs use unless given one."""
    global _default
    if _default is None:
        _default = AiohttpTransport()
    return _default


def _close_sessions_at_exit() -> None:
    # Best effort: sessions on loops still running in other threads (dspex's
    # background loop) or left open but idle get closed before the interpreter goes.
    for transport in list(_transports):
        for loop, session in transport._open_sessions():
            try:
                if loop.is_running():
                    asyncio.run_coroutine_threadsafe(session.close(), loop).result(1.0)
                else:
                    loop.run_until_complete(session.close())
            except Exception:
                logger.debug("dspex: could not close an aiohttp session at exit", exc_info=True)


atexit.register(_close_sessions_at_exit)
