"""The in-process event bus and the EventLog ring buffer (no Ray)."""

from __future__ import annotations

import asyncio
import time

import pytest

from dspex.observability.redact import REDACTED
from dspex.runtime.supervision.events import Event, EventBus, EventLog


def test_emit_without_subscribers_builds_nothing() -> None:
    bus = EventBus()
    assert bus.emit("child.started", "root", child="a") is None


def test_subscribers_get_events_of_their_kinds() -> None:
    bus = EventBus()
    got_all: list[Event] = []
    got_exits: list[Event] = []
    got_children: list[Event] = []
    bus.subscribe(got_all.append)
    bus.subscribe(got_exits.append, kinds=["child.exited"])
    bus.subscribe(got_children.append, kinds="child.*")
    bus.emit("child.started", "root", child="a")
    bus.emit("child.exited", "root", child="a", reason="killed")
    bus.emit("supervisor.escalated", "root")
    assert [e.kind for e in got_all] == ["child.started", "child.exited", "supervisor.escalated"]
    assert [e.data for e in got_exits] == [{"child": "a", "reason": "killed"}]
    assert [e.kind for e in got_children] == ["child.started", "child.exited"]
    assert got_all[0].source == "root" and abs(got_all[0].time - time.time()) < 60


def test_unsubscribe_stops_delivery_and_works_as_context_manager() -> None:
    bus = EventBus()
    got: list[Event] = []
    with bus.subscribe(got.append):
        bus.emit("a", "s")
    bus.emit("b", "s")
    assert [e.kind for e in got] == ["a"]
    assert not bus.active


def test_a_failing_subscriber_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    got: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(broken)
    bus.subscribe(got.append)
    bus.emit("a", "s")
    assert len(got) == 1
    assert "subscriber bug" in caplog.text


def test_secrets_are_redacted_before_anyone_sees_them() -> None:
    bus = EventBus()
    got: list[Event] = []
    bus.subscribe(got.append)
    bus.emit("lm.request", "pool", model="m", api_key="sk-1", headers={"Authorization": "Bearer x"})
    assert got[0].data == {"model": "m", "api_key": REDACTED, "headers": {"Authorization": REDACTED}}


def test_sinks_see_emitted_events_but_not_delivered_ones() -> None:
    bus = EventBus()
    forwarded: list[Event] = []
    bus.add_sink(forwarded.append)
    bus.emit("a", "s")
    bus.deliver(Event("b", "elsewhere"))
    assert [e.kind for e in forwarded] == ["a"]


def batch(n: int, start: int = 0) -> list[Event]:
    return [Event("k", "s", {"i": i}, float(i)) for i in range(start, start + n)]


async def test_event_log_cursors() -> None:
    log = EventLog(capacity=100)
    assert await log.head() == 0
    assert await log.publish(batch(3)) == 3
    events, cursor = await log.since(0)
    assert [e.data["i"] for e in events] == [0, 1, 2] and cursor == 3
    assert await log.since(cursor) == ([], 3)
    await log.publish(batch(2, 3))
    events, cursor = await log.since(3, limit=1)
    assert [e.data["i"] for e in events] == [3] and cursor == 4


async def test_event_log_is_a_bounded_ring() -> None:
    log = EventLog(capacity=5)
    await log.publish(batch(8))
    events, cursor = await log.since(0)
    assert [e.data["i"] for e in events] == [3, 4, 5, 6, 7] and cursor == 8
    assert await log.stats() == {"published": 8, "retained": 5, "dropped": 3, "capacity": 5}


async def test_wait_since_returns_as_soon_as_an_event_arrives() -> None:
    log = EventLog()
    waiter = asyncio.ensure_future(log.wait_since(0, timeout=30))
    await asyncio.sleep(0)  # let the waiter block
    assert not waiter.done()
    await log.publish(batch(1))
    events, cursor = await asyncio.wait_for(waiter, 5)
    assert len(events) == 1 and cursor == 1


async def test_wait_since_times_out_empty() -> None:
    log = EventLog()
    assert await log.wait_since(0, timeout=0.01) == ([], 0)


def test_event_log_rejects_bad_capacity() -> None:
    with pytest.raises(ValueError):
        EventLog(capacity=0)
