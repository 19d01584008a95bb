"""The cluster relay of the event bus: the ``EventLog`` actor and the glue that plugs it
into the in-process bus (`dspex.observability.events`).

The log is a bounded ring buffer run as a Ray actor named ``dspex.events`` in
the ``dspex`` namespace. A process that called ``connect_event_log()`` forwards
its events there in batches (a sink on the bus); ``subscribe`` in a process
connected to Ray long-polls the log in a background thread and delivers other
processes' events to local callbacks (the bus's remote feed, installed when
this module is imported). The Ray calls live in ``_event_remote.py``, imported
only once Ray is in use.

The bus names (``Event``, ``EventBus``, ``emit``, ``subscribe``...) are
re-exported from here for code written against this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any

from dspex.observability.events import (
    ORIGIN,
    Callback,
    Event,
    EventBus,
    Sink,
    Subscription,
    bus,
    emit,
    set_remote_feed,
    subscribe,
)
from dspex.runtime.names import EVENT_LOG_NAME


def _ray_connected() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _remote_feed(target: EventBus) -> str | None:
    """The bus's remote feed: poll the cluster's log for other processes' events."""
    if not _ray_connected():
        return "remote events need a Ray connection: call dspex.init() (or ray.init()) first"
    from dspex.runtime.supervision import _event_remote

    if _event_remote.start_polling(target):
        return None
    return f"no {EVENT_LOG_NAME!r} actor in the cluster; start one with start_event_log()"


# Any process that loads the runtime's supervision can receive the cluster's events.
set_remote_feed(_remote_feed)


# --- the cluster-wide log ------------------------------------------------


class EventLog:
    """Bounded ring buffer of events with cursors (run as a Ray actor).

    A cursor is the sequence number of the next event a reader wants. A reader
    that falls more than ``capacity`` events behind skips the oldest ones;
    ``stats()`` counts them as dropped.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        self.capacity = capacity
        self._events: deque[Event] = deque(maxlen=capacity)
        self._next = 0  # sequence number of the next event published
        self._arrived: asyncio.Event | None = None

    async def publish(self, events: Sequence[Event]) -> int:
        """Append ``events``; returns the cursor after them."""
        self._events.extend(events)
        self._next += len(events)
        if events and self._arrived is not None:
            self._arrived.set()
            self._arrived = None  # waiters hold the old one; the next wait makes a new one
        return self._next

    async def since(self, cursor: int = 0, limit: int = 1000) -> tuple[list[Event], int]:
        """Events from ``cursor`` on (at most ``limit``) and the cursor after them."""
        first = self._next - len(self._events)
        start = max(cursor, first)
        if start >= self._next:
            return [], self._next  # caught up (or a cursor from an older log: start over here)
        chunk = [self._events[i - first] for i in range(start, min(self._next, start + limit))]
        return chunk, start + len(chunk)

    async def wait_since(
        self, cursor: int, timeout: float = 10.0, limit: int = 1000
    ) -> tuple[list[Event], int]:
        """Like ``since``, but waits up to ``timeout`` s for an event when none is there."""
        if cursor >= self._next:
            if self._arrived is None:
                self._arrived = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
        return await self.since(cursor, limit)

    async def head(self) -> int:
        """The cursor of the next event to be published (subscribe from now on)."""
        return self._next

    async def stats(self) -> dict[str, int]:
        return {
            "published": self._next,
            "retained": len(self._events),
            "dropped": self._next - len(self._events),
            "capacity": self.capacity,
        }


def start_event_log(capacity: int = 10_000) -> Any:
    """Create (or find) the cluster's ``EventLog`` actor and forward this
    process's events to it. Needs ``ray.init()``; returns the actor handle."""
    from dspex.runtime.supervision import _event_remote

    return _event_remote.start_event_log(bus, capacity)


def connect_event_log() -> bool:
    """Forward this process's events to the cluster's log if it exists."""
    if not _ray_connected():
        return False
    from dspex.runtime.supervision import _event_remote

    return _event_remote.connect(bus)


def flush(timeout: float = 5.0) -> None:
    """Send buffered events to the cluster's log and wait until it has them."""
    if _ray_connected():
        from dspex.runtime.supervision import _event_remote

        _event_remote.flush(timeout)


__all__ = [
    "EVENT_LOG_NAME",
    "ORIGIN",
    "Callback",
    "Event",
    "EventBus",
    "EventLog",
    "Sink",
    "Subscription",
    "bus",
    "connect_event_log",
    "emit",
    "flush",
    "start_event_log",
    "subscribe",
]
