"""The event bus: structured events that progress bars, the run store and
tracing subscribe to (the seeds' :telemetry / PubSub).

In one process: ``emit(kind, source, **data)`` and ``subscribe(callback,
kinds)``. ``emit`` costs one attribute check when nobody listens.

Across the cluster: an ``EventLog`` actor (a bounded ring buffer) named
``dspex.events`` in the ``dspex`` namespace. A process that called
``connect_event_log()`` forwards its events there in batches; ``subscribe``
in a process connected to Ray long-polls the log in a background thread and
delivers other processes' events to local callbacks. The Ray glue lives in
``_event_remote.py`` and is imported only when Ray is already in use.

Events never carry secrets: values under keys that look like credentials are
replaced before anyone sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from dspex.observability.redact import redact_data

logger = logging.getLogger(__name__)

EVENT_LOG_NAME = "dspex.events"
#: identifies this process, so an event read back from the log is not delivered twice
ORIGIN = uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Event:
    """``kind`` like ``child.exited``; ``source`` names the emitter (a supervisor,
    a provider pool); ``time`` is wall-clock seconds (comparable across processes)."""

    kind: str
    source: str
    data: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0
    origin: str = ""


Callback = Callable[[Event], None]
Sink = Callable[[Event], None]


class Subscription:
    """Handle returned by ``subscribe``: call ``unsubscribe()`` (or use ``with``)."""

    def __init__(self, bus: EventBus, callback: Callback, kinds: frozenset[str] | None) -> None:
        self._bus = bus
        self.callback = callback
        self.kinds = kinds
        self._exact = kinds and frozenset(k for k in kinds if not k.endswith("*"))
        self._prefixes = tuple(k[:-1] for k in kinds or () if k.endswith("*"))

    def wants(self, kind: str) -> bool:
        if self.kinds is None:
            return True
        return bool(self._exact and kind in self._exact) or kind.startswith(self._prefixes)

    def unsubscribe(self) -> None:
        self._bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unsubscribe()


class EventBus:
    """Fan-out of events to callbacks in this process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: tuple[Subscription, ...] = ()  # copy-on-write: emit reads without the lock
        self._sinks: tuple[Sink, ...] = ()
        self._on_change: Callable[[EventBus], None] | None = None

    @property
    def active(self) -> bool:
        return bool(self._subs or self._sinks)

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def emit(self, kind: str, source: str, **data: Any) -> Event | None:
        """Publish an event to local subscribers and to the cluster log (if connected)."""
        if not (self._subs or self._sinks):
            return None
        event = Event(kind, source, redact_data(data), time.time(), ORIGIN)
        self.deliver(event)
        for sink in self._sinks:
            _call(sink, event)
        return event

    def deliver(self, event: Event) -> None:
        """Hand an event to local subscribers only (used for events read from the log)."""
        for sub in self._subs:
            if sub.wants(event.kind):
                _call(sub.callback, event)

    def subscribe(self, callback: Callback, kinds: Collection[str] | None = None) -> Subscription:
        """Call ``callback(event)`` for every event whose kind is in ``kinds``
        (``None``: all; ``"child.*"`` matches a prefix)."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        if isinstance(kinds, str):
            kinds = (kinds,)
        sub = Subscription(self, callback, None if kinds is None else frozenset(kinds))
        with self._lock:
            self._subs = (*self._subs, sub)
        return sub

    def add_sink(self, sink: Sink) -> None:
        with self._lock:
            self._sinks = (*self._sinks, sink)

    def remove_sink(self, sink: Sink) -> None:
        with self._lock:
            self._sinks = tuple(s for s in self._sinks if s is not sink)

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)
        hook = self._on_change
        if hook is not None:
            hook(self)


def _call(callback: Callable[[Event], None], event: Event) -> None:
    try:
        callback(event)
    except Exception:
        # One broken subscriber must not break the emitter (a supervisor's restart path).
        logger.exception("event subscriber %r failed on %s", callback, event.kind)


# --- the process-wide bus ------------------------------------------------

bus = EventBus()


def emit(kind: str, source: str, **data: Any) -> Event | None:
    """Emit on the process-wide bus."""
    return bus.emit(kind, source, **data)


def subscribe(
    callback: Callback,
    kinds: Collection[str] | None = None,
    *,
    remote: bool | None = None,
) -> Subscription:
    """Subscribe on the process-wide bus.

    ``remote=None`` also receives events from other processes when this process
    is connected to Ray and the ``EventLog`` actor exists; ``True`` requires that
    (raises ``LookupError`` otherwise); ``False`` stays local.
    """
    sub = bus.subscribe(callback, kinds)
    if remote is not False and _ray_connected():
        from dspex.runtime.supervision import _event_remote

        if not _event_remote.start_polling(bus) and remote:
            sub.unsubscribe()
            raise LookupError(
                f"no {EVENT_LOG_NAME!r} actor in the cluster; start one with start_event_log()"
            )
    elif remote:
        sub.unsubscribe()
        raise LookupError("remote events need a Ray connection: call ray.init() first")
    return sub


def _ray_connected() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


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
