"""Helpers the coordinator tests share: polling with a deadline (no sleeping as
synchronisation) and finding a run's coordinator actor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from dspex.runtime.coordinator import coordinator_name

T = TypeVar("T")


async def poll(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = 60.0) -> T:
    """The first truthy value of ``check()``, tried until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def coordinator(run_id: str) -> Any | None:
    """The live coordinator actor of ``run_id``, if any."""
    import ray

    try:
        return ray.get_actor(coordinator_name(run_id), namespace="dspex")
    except ValueError:
        return None


async def restarted_progress(run_id: str, victim: Any, what: str, timeout: float = 60.0) -> Any:
    """The progress report of ``run_id``'s coordinator once its supervisor has replaced
    ``victim`` (a killed actor) with a new one that answers."""
    import ray

    async def answered() -> Any:
        handle = coordinator(run_id)
        if handle is None or handle._actor_id == victim._actor_id:
            return None
        try:
            return await handle.progress.remote()
        except ray.exceptions.RayActorError:
            return None

    return await poll(answered, what, timeout)
