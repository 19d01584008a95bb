"""The dashboard's web server: one page, a JSON snapshot, and a server-sent event stream.

``GET /`` serves the page (static files shipped in the package, nothing from
outside), ``GET /api/snapshot`` everything the page shows as JSON, and
``GET /api/events`` a ``text/event-stream`` that pushes a new snapshot whenever
the store or the runtime changed (see hub.py), with a comment line as a
heartbeat while nothing does. Both take ``?run=<run_id>`` to choose the run
whose trials are included; without it the newest running run is shown.

The dashboard has no login, so by default it serves only 127.0.0.1 and answers
only requests addressed to a loopback name (a web page elsewhere cannot reach
it through DNS rebinding). Serving other hosts needs ``allow_remote=True``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from dspex.dashboard.hub import Hub
from dspex.dashboard.sources import RuntimeSources
from dspex.dashboard.store_view import StoreView
from dspex.errors import DashboardError
from dspex.optimizers.run_store import RunStore

DEFAULT_PORT = 8377  # Ray's own dashboard has 8265
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}

# Nothing on the page comes from anywhere but this server; the policy makes that a rule.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

HUB = web.AppKey("hub", Hub)
HEARTBEAT = web.AppKey("heartbeat", float)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    store: RunStore | None = None,
    *,
    sources: RuntimeSources | None = None,
    loopback_only: bool = True,
    poll_interval: float = 0.25,
    runtime_interval: float = 1.0,
    heartbeat: float = 10.0,
) -> web.Application:
    """The dashboard app for ``store`` (default: the store at $DSPEX_RUNS_DB or the user data dir)."""
    hub = Hub(
        StoreView(store if store is not None else RunStore()),
        sources if sources is not None else RuntimeSources(),
        poll_interval=poll_interval,
        runtime_interval=runtime_interval,
    )
    app = web.Application(middlewares=[_loopback_host_only] if loopback_only else [])
    app.on_response_prepare.append(_security_headers)
    app[HUB] = hub
    app[HEARTBEAT] = heartbeat
    app.cleanup_ctx.append(_run_hub)
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/", _index)
    app.router.add_get("/static/{name}", _static)
    app.router.add_get("/api/snapshot", _snapshot)
    app.router.add_get("/api/events", _events)
    return app


# --- lifecycle --------------------------------------------------------------------


async def _run_hub(app: web.Application) -> AsyncIterator[None]:
    await app[HUB].start()
    yield
    await app[HUB].stop()


async def _end_streams(app: web.Application) -> None:
    # Runs before the server waits for open handlers: streams return instead of timing out.
    app[HUB].begin_shutdown()


# --- middlewares ------------------------------------------------------------------


@web.middleware
async def _loopback_host_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not is_loopback(urlsplit(f"//{request.host}").hostname or ""):
        raise web.HTTPForbidden(text="this dashboard answers only requests to localhost / 127.0.0.1\n")
    return await handler(request)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    # A response_prepare hook, so error pages and the event stream get the headers too.
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- routes ----------------------------------------------------------------------


def _static_dir() -> Any:
    return resources.files("dspex.dashboard") / "static"


async def _index(request: web.Request) -> web.Response:
    return _static_file("index.html")


async def _static(request: web.Request) -> web.Response:
    return _static_file(request.match_info["name"])


def _static_file(name: str) -> web.Response:
    suffix = Path(name).suffix
    # Only plain file names of known types: no paths, so nothing outside static/ is reachable.
    if suffix not in STATIC_TYPES or "/" in name or "\\" in name or name.startswith("."):
        raise web.HTTPNotFound()
    target = _static_dir() / name
    if not target.is_file():
        raise web.HTTPNotFound()
    return web.Response(body=target.read_bytes(), content_type=STATIC_TYPES[suffix], charset="utf-8")


async def _snapshot(request: web.Request) -> web.Response:
    snapshot = await request.app[HUB].snapshot(request.query.get("run") or None)
    return web.Response(text=json.dumps(snapshot), content_type="application/json")


async def _events(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a proxy in front must not hold events back
        }
    )
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):  # the browser went away
        await _stream(request, response)
    return response


async def _stream(request: web.Request, response: web.StreamResponse) -> None:
    hub, heartbeat = request.app[HUB], request.app[HEARTBEAT]
    run_id = request.query.get("run") or None
    await response.write(b"retry: 2000\n\n")  # how soon EventSource reconnects after a drop
    sent = ""
    while not hub.stopping and not _closed(request):
        seen = hub.version
        snapshot = await hub.snapshot(run_id)
        snapshot.pop("generated")  # not worth a push on its own
        payload = json.dumps(snapshot, separators=(",", ":"))
        if payload != sent:
            await response.write(f"event: snapshot\nid: {seen}\ndata: {payload}\n\n".encode())
            sent = payload
        if not await hub.wait_change(seen, heartbeat):
            await response.write(b": heartbeat\n\n")  # keeps proxies and the browser from timing out


def _closed(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


# --- serving ----------------------------------------------------------------------


async def start(
    app: web.Application, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, allow_remote: bool = False
) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on host:port (0: a free port); returns the runner and the page's URL."""
    if not is_loopback(host) and not allow_remote:
        raise DashboardError(
            f"refusing to serve on {host}: the dashboard has no login, so it serves 127.0.0.1 "
            "unless a host is given explicitly"
        )
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise DashboardError(
            f"cannot serve on {host}:{port}: {exc.strerror or exc}; pass --port 0 for a free port"
        ) from exc
    bound = runner.addresses[0][1]  # the real port when 0 asked for a free one
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound}/"


def serve_forever(
    store: RunStore,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    address: str | None = None,
    allow_remote: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard until Ctrl-C or SIGTERM (blocking)."""
    app = create_app(store, sources=RuntimeSources(address), loopback_only=is_loopback(host))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(app, host, port, allow_remote, on_ready))


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    allow_remote: bool,
    on_ready: Callable[[str], None] | None,
) -> None:
    runner, url = await start(app, host, port, allow_remote=allow_remote)
    try:
        if on_ready is not None:
            on_ready(url)
        await _until_stopped()
    finally:
        await runner.cleanup()


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if sys.platform != "win32":
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
