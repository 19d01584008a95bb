"""`asyncify` and `syncify`: a program called the other way round.

- ``asyncify(program)``: an async function that runs the (sync) program in a worker
  thread, with the caller's settings (the context is copied at each call), so a
  blocking program can run alongside other async work. Threads are capped by the
  ``async_max_workers`` setting (default 8), like DSPy.
- ``syncify(program)``: a program with only ``aforward`` gets a sync ``forward`` that
  runs it on dspex's event loop (`dspex.utils.aio.run_sync`), usable from plain code
  and from inside a running loop alike. ``in_place=False`` wraps it in a new module
  instead of adding the method.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Awaitable, Callable
from types import MethodType
from typing import Any

from dspex.utils.aio import run_sync

DEFAULT_MAX_WORKERS = 8
_limiters: dict[tuple[asyncio.AbstractEventLoop, int], asyncio.Semaphore] = {}
_lock = threading.Lock()


def _max_workers() -> int:
    # Read through the settings object when the primitives layer is loaded (it always is
    # once a program exists); this layer must not import it.
    import sys

    settings_module = sys.modules.get("dspex.primitives.settings")
    if settings_module is None:
        return DEFAULT_MAX_WORKERS
    try:
        value = settings_module.settings.get("async_max_workers")
    except Exception:
        return DEFAULT_MAX_WORKERS
    return value if isinstance(value, int) and value > 0 else DEFAULT_MAX_WORKERS


def _limiter() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    size = _max_workers()
    with _lock:
        for stale in [key for key in _limiters if key[0].is_closed()]:
            del _limiters[stale]
        limiter = _limiters.get((loop, size))
        if limiter is None:
            limiter = _limiters[(loop, size)] = asyncio.Semaphore(size)
    return limiter


def asyncify(program: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """An async version of ``program``: each call runs it in a worker thread with the
    caller's settings and returns its result."""

    @functools.wraps(program)
    async def async_program(*args: Any, **kwargs: Any) -> Any:
        context = contextvars.copy_context()  # settings as they are at this call
        async with _limiter():
            return await asyncio.to_thread(context.run, functools.partial(program, *args, **kwargs))

    return async_program


def syncify(program: Any, in_place: bool = True) -> Any:
    """Give an async-only program (``aforward``) a sync ``forward``.

    ``in_place=True`` sets ``forward`` on ``program`` itself and returns it;
    ``in_place=False`` returns a new module holding it, leaving it unchanged.
    """
    if in_place:

        def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
            return run_sync(self.aforward(*args, **kwargs))

        program.forward = MethodType(forward, program)
        return program
    # The wrapper is a Module like the program (found in its classes: this low layer
    # does not import the primitives layer).
    module_class = next(
        (c for c in type(program).__mro__ if c.__name__ == "Module" and c.__module__ == "dspex.primitives.module"),
        object,
    )

    class SyncWrapper(module_class):  # type: ignore[misc,valid-type]
        def __init__(self, wrapped: Any) -> None:
            if module_class is not object:
                super().__init__()
            self.program = wrapped

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return run_sync(self.program.aforward(*args, **kwargs))

    return SyncWrapper(program)


__all__ = ["asyncify", "syncify"]
