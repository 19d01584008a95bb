"""Ray glue for the event bus: forward local events to the cluster's
``EventLog`` in batches, and long-poll it for other processes' events.

Imported only by ``events.py`` (and the supervisor) once Ray is initialised.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from dspex.observability.events import ORIGIN, Event, EventBus
from dspex.runtime.names import EVENT_LOG_NAME, NAMESPACE
from dspex.runtime.supervision.events import EventLog

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.05  # seconds between batches: one actor call per batch, not per event
POLL_TIMEOUT = 1.0  # long-poll length; also how fast a stopped poller notices

_lock = threading.Lock()
_forwarder: _Forwarder | None = None
_poller: _Poller | None = None


def find_log() -> Any | None:
    try:
        return ray.get_actor(EVENT_LOG_NAME, namespace=NAMESPACE)
    except ValueError:
        return None


def start_event_log(bus: EventBus, capacity: int) -> Any:
    log = (
        ray.remote(EventLog)
        .options(
            name=EVENT_LOG_NAME,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_restarts=-1,  # infrastructure outside the tree: Ray revives it empty
        )
        .remote(capacity)
    )
    ray.get(log.head.remote())
    connect(bus)
    return log


def connect(bus: EventBus) -> bool:
    """Add a sink forwarding this process's events to the log; False if there is no log."""
    global _forwarder
    with _lock:
        if _forwarder is not None and _forwarder.alive:
            return True
        log = find_log()
        if log is None:
            return False
        if _forwarder is not None:  # left over from an earlier Ray session
            bus.remove_sink(_forwarder)
        _forwarder = _Forwarder(log)
        bus.add_sink(_forwarder)
        return True


def flush_ref() -> Any | None:
    """Send buffered events now; the ObjectRef to await for them to be stored."""
    forwarder = _forwarder
    return forwarder.send() if forwarder is not None else None


def flush(timeout: float) -> None:
    ref = flush_ref()
    if ref is not None:
        ray.get(ref, timeout=timeout)


def start_polling(bus: EventBus) -> bool:
    """Deliver other processes' events to ``bus``; False if there is no log."""
    global _poller
    with _lock:
        if _poller is not None and _poller.is_alive() and not _poller.stopping:
            return True
        log = find_log()
        if log is None:
            return False
        _poller = _Poller(bus, log)
        bus._on_change = _stop_when_unused
        _poller.start()
        return True


def _stop_when_unused(bus: EventBus) -> None:
    poller = _poller
    if poller is not None and bus.subscriber_count == 0:
        poller.stopping = True


class _Forwarder:
    """A bus sink that batches events and publishes them from a daemon thread."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._buffer: list[Event] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_ref: Any | None = None

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._buffer.append(event)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="dspex-events-forward", daemon=True
                )
                self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def send(self) -> Any | None:
        # Submit under the lock: batches sent from two threads (the timer and a
        # flush) must reach the log in the order they were taken.
        with self._lock:
            batch, self._buffer = self._buffer, []
            # After ray.shutdown() a .remote() call would start a new Ray
            # (auto-init) from this thread: drop the batch instead.
            if batch and ray.is_initialized():
                self._last_ref = self._log.publish.remote(batch)
            return self._last_ref

    def _run(self) -> None:
        while ray.is_initialized():
            self._wake.wait(FLUSH_INTERVAL)
            try:
                self.send()
            except Exception:
                # The log is gone or Ray is shutting down: events stay local.
                logger.warning("cannot forward events to %s", EVENT_LOG_NAME, exc_info=True)


class _Poller(threading.Thread):
    def __init__(self, bus: EventBus, log: Any) -> None:
        super().__init__(name="dspex-events-poll", daemon=True)
        self._bus = bus
        self._log = log
        self.stopping = False
        # Start at the log's end: subscribers see events from now on.
        self._cursor: int = ray.get(log.head.remote(), timeout=30)

    def run(self) -> None:
        while not self.stopping and ray.is_initialized():
            try:
                events, self._cursor = ray.get(
                    self._log.wait_since.remote(self._cursor, POLL_TIMEOUT),
                    timeout=POLL_TIMEOUT + 30,
                )
            except GetTimeoutError:
                continue
            except RayActorError:
                logger.warning("%s died; remote events stop", EVENT_LOG_NAME)
                return
            except Exception:
                if self.stopping or not ray.is_initialized():
                    return
                raise
            for event in events:
                if event.origin != ORIGIN and not self.stopping:
                    self._bus.deliver(event)
