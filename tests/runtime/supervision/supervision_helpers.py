"""Children and polling helpers for the Ray supervision tests.

Test modules import this as ``supervision_helpers``; the shared conftest ships
it to Ray workers by value.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import ray

from dspex.runtime.names import NAMESPACE
from dspex.runtime.supervision import ChildInfo, Event, Supervised
from dspex.runtime.supervision.events import start_event_log

T = TypeVar("T")

# Keep supervisors on the head node: the node-loss test removes the other node.
ON_HEAD = {"resources": {"node:__internal_head__": 0.001}}


class Worker:
    """A plain class (no mixin): the supervisor wraps it."""

    def __init__(self, fail: bool = False, fail_if_exists: str | None = None) -> None:
        if fail or (fail_if_exists and Path(fail_if_exists).exists()):
            raise RuntimeError("this worker refuses to start")
        self.calls = 0

    async def incr(self) -> int:
        self.calls += 1
        return self.calls

    async def get(self) -> int:
        return self.calls

    async def crash_exit(self) -> None:
        os._exit(1)

    async def segfault(self) -> None:
        os.kill(os.getpid(), signal.SIGSEGV)

    async def hang(self, seconds: float) -> None:
        time.sleep(seconds)  # blocks the event loop: pings go unanswered

    async def fail(self) -> None:
        raise ValueError("a method error does not kill an actor")


class Exiter(Supervised):
    """A child that ends itself with ``exit(reason)``."""

    async def finish(self, reason: str) -> None:
        self.exit(reason)


class Graceful:
    """Writes the reason of its ``terminate`` call to ``marker`` after ``delay`` s."""

    def __init__(self, marker: str, delay: float = 0.0) -> None:
        self.marker = marker
        self.delay = delay

    async def terminate(self, reason: str) -> None:
        await asyncio.sleep(self.delay)
        Path(self.marker).write_text(reason)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def wait_until(
    predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition"
) -> T:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def children(supervisor: Any) -> dict[str, ChildInfo]:
    return {info.name: info for info in ray.get(supervisor.which_children.remote())}


def actor_ids(supervisor: Any) -> dict[str, str | None]:
    return {name: info.actor_id for name, info in children(supervisor).items()}


def restarted(supervisor: Any, name: str, old_actor_id: str | None) -> ChildInfo | None:
    """The child's info once it runs as a new actor, else None."""
    info = children(supervisor).get(name)
    if info and info.state == "running" and info.actor_id not in (None, old_actor_id):
        return info
    return None


def actor(name: str) -> Any:
    return ray.get_actor(name, namespace=NAMESPACE)


def name_is_free(name: str) -> bool:
    try:
        actor(name)
    except ValueError:
        return True
    return False


class EventTail:
    """Reads the cluster's event log from the moment it was created."""

    def __init__(self) -> None:
        self.log = start_event_log()
        self.cursor: int = ray.get(self.log.head.remote())
        self.seen: list[Event] = []

    def poll(self) -> list[Event]:
        events, self.cursor = ray.get(self.log.wait_since.remote(self.cursor, 0.2))
        self.seen.extend(events)
        return self.seen

    def matching(self, kinds: Iterable[str] | None = None, **data: Any) -> list[Event]:
        wanted = set(kinds) if kinds is not None else None
        return [
            e
            for e in self.seen
            if (wanted is None or e.kind in wanted)
            and all(e.data.get(k) == v for k, v in data.items())
        ]

    def wait_for(self, kind: str, timeout: float = 30.0, **data: Any) -> Event:
        def found() -> Event | None:
            self.poll()
            hits = self.matching([kind], **data)
            return hits[0] if hits else None

        return wait_until(found, timeout, f"event {kind} {data}")
