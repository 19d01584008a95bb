"""The simulated LM as a real HTTP server (aiohttp.web).

Two ways to run it: `SimLMServer` on a background thread with its own event
loop (in-process, for tests), or `serve_forever` as the main loop of a process
(`python -m dspex.simlm`, `dspex sim-lm serve`).

Tuned for thousands of concurrent connections on a small machine: a single
catch-all route (no router matching per request), no access log, a deep
listen backlog and long keep-alive so clients reuse connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from dspex.simlm import streaming
from dspex.simlm.core import SimCore
from dspex.simlm.faults import FaultConfig

BACKLOG = 4096
KEEPALIVE_SECONDS = 75.0
# Hung requests (timeout faults) must not hold up a stop for their whole hang.
SHUTDOWN_SECONDS = 0.25
MAX_BODY_BYTES = 64 * 1024 * 1024


def check_loopback(host: str) -> str:
    """`host` if it is a loopback address, else ValueError: the simulator is a
    test double and must never be reachable from other machines."""
    if host == "localhost":
        return host
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(
        f"refusing to listen on {host!r}: the simulated LM only binds loopback "
        "addresses (127.0.0.1, ::1 or localhost)"
    )


def build_app(core: SimCore) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        answer = await core.handle(request.method, request.path_qs, request.headers, body)
        if answer.stream is not None:
            return await streaming.write(request, answer.stream)
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def start_site(core: SimCore, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start listening; returns the runner (to clean up) and the bound port."""
    check_loopback(host)
    runner = web.AppRunner(
        build_app(core),
        access_log=None,
        handle_signals=False,
        keepalive_timeout=KEEPALIVE_SECONDS,
        shutdown_timeout=SHUTDOWN_SECONDS,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=BACKLOG, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return runner, int(bound)


class SimLMServer:
    """A simulated LM serving HTTP from a background thread.

    Use `start_sim_lm(...)` to create one; `url` is the OpenAI-style base URL
    (``http://127.0.0.1:PORT/v1``). Control methods run on the server's loop
    and return once applied, so a test can set faults and send at once.
    """

    def __init__(self, core: SimCore, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.core = core
        self.host = check_loopback(host)
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/v1"

    @property
    def base_url(self) -> str:
        """Without the /v1 suffix (for `/stats` and `/admin/*`)."""
        return f"http://{_url_host(self.host)}:{self.port}"

    def start(self, timeout: float = 10.0) -> SimLMServer:
        self._thread = threading.Thread(target=self._run, name=f"sim-lm-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"simulated LM did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (in-flight requests are cut off)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10.0)
        self._loop = self._thread = None

    def set_faults(
        self, faults: FaultConfig | Mapping[str, Any] | None = None, **fields: Any
    ) -> FaultConfig:
        """Replace the fault config (`set_faults()` clears all faults)."""
        config = fields if faults is None and fields else faults
        return self._call(lambda: self.core.set_faults(config))

    def stats(self) -> dict[str, Any]:
        return self._call(self.core.stats_snapshot)

    def set_stream(self, *, chunk_chars: int = 0, chunk_delay_ms: float = 0.0) -> None:
        """How streamed answers are chunked (0: before each word) and paced."""
        settings = streaming.StreamSettings(chunk_chars=chunk_chars, chunk_delay_ms=chunk_delay_ms)

        def apply() -> None:
            self.core.stream_settings = settings

        self._call(apply)

    def stream_stats(self) -> dict[str, int]:
        """Streamed answers started, content chunks written, cut by a fault, left by the client."""
        return self._call(self.core.stream_counters.snapshot)

    def reset_stats(self) -> None:
        self._call(self.core.reset_stats)

    def __enter__(self) -> SimLMServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _call(self, fn: Any) -> Any:
        """Run `fn` on the server loop and wait for its result."""
        loop = self._loop
        if loop is None:
            return fn()

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=10.0)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._runner, self.port = loop.run_until_complete(
                start_site(self.core, self.host, self.port)
            )
        except BaseException as exc:
            self._error = exc
            self._loop = None
            loop.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await _cancel_other_tasks()


async def _cancel_other_tasks() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve_forever(
    core: SimCore,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    port_file: str | None = None,
    on_ready: Any = None,
) -> None:
    """Serve until SIGINT/SIGTERM. Writes the bound port to `port_file` (atomically)
    and calls `on_ready(port)` once listening."""
    # asyncio.run(loop_factory=...) needs 3.12; build the loop by hand for 3.10.
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve_main(core, host, port, port_file, on_ready))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def _serve_main(
    core: SimCore, host: str, port: int, port_file: str | None, on_ready: Any
) -> None:
    runner, bound = await start_site(core, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if port_file:
            _write_atomically(Path(port_file), str(bound))
        if on_ready is not None:
            on_ready(bound)
        await stop.wait()
    finally:
        await runner.cleanup()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed (faster sockets), else the default."""
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
