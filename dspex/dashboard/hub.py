"""The dashboard's one poller: it watches the run store and the runtime and wakes the streams.

However many browsers are open, the store is fingerprinted by one task (four
times a second, a few aggregates) and the runtime is read by another (once a
second). Each change bumps `version` and wakes every event stream, which then
asks for a snapshot; snapshots of the store are cached per requested run until
the store changes again, so N open pages cost one set of queries.

Blocking work runs off the event loop: SQLite reads on one dedicated thread
(its connections belong to one thread), runtime reads on daemon threads, one
read at a time. Daemon, because attaching to an unreachable Ray address can
block for minutes and must not keep the process alive after Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from dspex.dashboard.activity import Activity
from dspex.dashboard.sources import RuntimeSources, RuntimeView
from dspex.dashboard.store_view import Fingerprint, StoreView, pick_run

T = TypeVar("T")
MAX_CACHED = 32


class Hub:
    """Polls the store and the runtime; `wait_change` returns when either changed."""

    def __init__(
        self,
        view: StoreView,
        sources: RuntimeSources,
        *,
        poll_interval: float = 0.25,
        runtime_interval: float = 1.0,
    ) -> None:
        self.view = view
        self.sources = sources
        self.poll_interval = poll_interval
        self.runtime_interval = runtime_interval
        self.activity = Activity()
        self.version = 0
        self.stopping = False
        first = RuntimeView(address=sources.address)
        if sources.address is not None:
            first.message = f"connecting to {sources.address}…"
        self.runtime: dict[str, Any] = _runtime_part(first, self.activity)
        self.store_error: str | None = None
        self._fingerprint: Fingerprint | None = None
        self._store_generation = 0
        self._cache: dict[str | None, dict[str, Any]] = {}
        self._changed = asyncio.Event()
        self._poke = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="dspex-dashboard-store")

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        await self._refresh_store()  # the first page load must not wait for a poll
        self._tasks = [
            asyncio.create_task(self._store_loop(), name="dspex-dashboard-store"),
            asyncio.create_task(self._runtime_loop(), name="dspex-dashboard-runtime"),
        ]

    def begin_shutdown(self) -> None:
        """Wake every stream so it ends (called before the server waits for handlers)."""
        self.stopping = True
        self._notify()

    async def stop(self) -> None:
        self.begin_shutdown()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self._in_store(self.view.close)
        self._store_thread.shutdown(wait=True, cancel_futures=True)

    # --- what the streams use -----------------------------------------------------------

    async def wait_change(self, seen_version: int, timeout: float) -> bool:
        """True once `version` moved past ``seen_version`` (or shutdown began); False on timeout."""
        changed = self._changed
        if self.version != seen_version or self.stopping:
            return True
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def snapshot(self, run_id: str | None) -> dict[str, Any]:
        """Everything the page shows, for ``run_id`` (or the run the hub picks)."""
        store = await self._store_part(run_id)
        return {
            **store,
            "store": {"path": self.view.path, "error": self.store_error},
            "runtime": self.runtime,
            "generated": time.time(),
        }

    # --- polling --------------------------------------------------------------------

    async def _store_loop(self) -> None:
        while True:
            # Woken early when an event says a trial or run was just written.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.poll_interval)
            self._poke.clear()
            await self._refresh_store()

    async def _refresh_store(self) -> None:
        try:
            fingerprint = await self._in_store(self.view.fingerprint)
            error = None
        except Exception as exc:  # e.g. the file was deleted: say so, keep polling
            fingerprint, error = None, f"cannot read the run store: {type(exc).__name__}: {exc}"
        if fingerprint != self._fingerprint or error != self.store_error:
            self._fingerprint, self.store_error = fingerprint, error
            self._store_generation += 1
            self._cache.clear()
            self._notify()

    async def _runtime_loop(self) -> None:
        await in_daemon_thread(self.sources.connect)
        while True:
            try:
                view = await in_daemon_thread(self.sources.collect)
            except Exception as exc:  # collect guards each section; this is a bug, shown not fatal
                view = RuntimeView(address=self.sources.address, message=f"reading the runtime failed: {exc!r}")
            if self.activity.add(view.events):
                self._poke.set()
            part = _runtime_part(view, self.activity)
            if part != self.runtime:
                self.runtime = part
                self._notify()
            await asyncio.sleep(self.runtime_interval)  # a poll period, not synchronisation

    async def _store_part(self, run_id: str | None) -> dict[str, Any]:
        cached = self._cache.get(run_id)
        if cached is not None:
            return cached
        generation = self._store_generation
        try:
            part = await self._in_store(self._read_store, run_id)
        except Exception as exc:
            return {"runs": [], "selected": None, "run": None, "read_error": f"{type(exc).__name__}: {exc}"}
        # Cache only what is still current: the store may have changed during the read.
        if generation == self._store_generation:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[run_id] = part
        return part

    def _read_store(self, run_id: str | None) -> dict[str, Any]:
        runs = self.view.runs()
        selected = pick_run(runs, run_id)
        detail = self.view.run_detail(selected) if selected is not None else None
        return {"runs": runs, "selected": selected, "run": detail}

    async def _in_store(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._store_thread, fn, *args)

    def _notify(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


async def in_daemon_thread(fn: Callable[[], T]) -> T:
    """``fn()`` on a new daemon thread; the awaiting task can be cancelled while it runs."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # the awaiting task was cancelled meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        try:
            result, error = fn(), None
        except BaseException as exc:
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed while fn ran
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="dspex-dashboard-runtime", daemon=True).start()
    return await future


def _runtime_part(view: RuntimeView, activity: Activity) -> dict[str, Any]:
    return {
        "connected": view.connected,
        "address": view.address,
        "message": view.message,
        "pools": view.pools,
        "tree": view.tree,
        "dead_letters": view.dead_letters,
        "errors": view.errors,
        **activity.snapshot(),
    }
