"""The event bus: structured events that progress bars, the run store and
tracing subscribe to (the seeds' :telemetry / PubSub). In-process, no Ray.

``emit(kind, source, **data)`` and ``subscribe(callback, kinds)`` on the
process-wide `bus`. ``emit`` costs one attribute check when nobody listens.

Across the cluster the runtime plugs in (``dspex.runtime.supervision.events``):
it adds a sink that forwards this process's events to the cluster's
``EventLog`` actor, and installs a *remote feed* (`set_remote_feed`) that
``subscribe`` asks to deliver other processes' events to this bus. Without the
runtime, events stay in the process.

Events never carry secrets: values under keys that look like credentials are
replaced before anyone sees them (`dspex.observability.redact`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from dspex.observability.redact import redact_data

logger = logging.getLogger(__name__)

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


RemoteFeed = Callable[[EventBus], str | None]
"""Starts delivering other processes' events to a bus; returns None when it does, else
why it cannot (no Ray connection, no event log). Installed by the runtime."""

_remote_feed: RemoteFeed | None = None


def set_remote_feed(feed: RemoteFeed | None) -> None:
    """Install (or, with None, remove) the feed `subscribe` uses for other processes' events."""
    global _remote_feed
    _remote_feed = feed


def subscribe(
    callback: Callback,
    kinds: Collection[str] | None = None,
    *,
    remote: bool | None = None,
) -> Subscription:
    """Subscribe on the process-wide bus.

    ``remote=None`` also receives events from other processes when the runtime's
    feed can deliver them (Ray connected, the cluster's ``EventLog`` running);
    ``True`` requires that (raises ``LookupError`` saying why not); ``False``
    stays local.
    """
    sub = bus.subscribe(callback, kinds)
    if remote is False:
        return sub
    feed = _remote_feed
    problem = (
        "remote events need the dspex runtime: call dspex.init() (or ray.init() and "
        "dspex.runtime.supervision.events.start_event_log()) first"
        if feed is None
        else feed(bus)
    )
    if problem is not None and remote:
        sub.unsubscribe()
        raise LookupError(problem)
    return sub


__all__ = [
    "ORIGIN",
    "Callback",
    "Event",
    "EventBus",
    "RemoteFeed",
    "Sink",
    "Subscription",
    "bus",
    "emit",
    "set_remote_feed",
    "subscribe",
]
