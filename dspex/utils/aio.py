"""Sync-at-the-edge: run dspex's async core from synchronous code.

dspex is async inside. A synchronous call (``program(...)``, ``lm(...)``) runs
its coroutine on one background event loop per process, so every sync caller,
from any thread, shares that loop's pooled HTTP connections. The caller's
``contextvars`` (dspex settings, traces) travel with the coroutine.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The process's shared background event loop, started on first use."""
    global _loop, _thread
    loop = _loop
    if loop is not None and not loop.is_closed():
        return loop
    with _lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            _thread = threading.Thread(
                target=_loop.run_forever, name="dspex-io", daemon=True
            )
            _thread.start()
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code and return its result.

    Works from plain threads and from inside a running event loop (the calling
    thread blocks, the coroutine runs on the background loop). Must not be
    called from the background loop itself.
    """
    loop = background_loop()
    if _running_loop() is loop:
        coro.close()
        raise RuntimeError(
            "dspex: a synchronous call was made from inside dspex's own event loop; "
            "use the async form (`await module.acall(...)`, `await lm.acall(...)`) there"
        )
    context = contextvars.copy_context()
    future = asyncio.run_coroutine_threadsafe(_in_context(coro, context), loop)
    return future.result()


async def _in_context(coro: Coroutine[Any, Any, T], context: contextvars.Context) -> T:
    # A task takes a copy of the current context when created; creating it under
    # context.run makes that copy the caller's context, not the loop thread's.
    task = context.run(asyncio.ensure_future, coro)
    return await task


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _stop_background_loop() -> None:
    loop = _loop
    if loop is not None and not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)


atexit.register(_stop_background_loop)
