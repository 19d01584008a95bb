"""The in-process bus's seam for other processes' events (filled by the runtime)."""

from __future__ import annotations

import pytest

from dspex.observability import events
from dspex.observability.events import Event, EventBus


def test_without_a_remote_feed_events_stay_local_and_remote_true_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "_remote_feed", None)
    got: list[Event] = []
    with events.subscribe(got.append, ["x.*"]):  # remote=None: local is fine
        events.emit("x.one", "test", n=1)
    assert [(e.kind, e.data) for e in got] == [("x.one", {"n": 1})]
    with pytest.raises(LookupError, match=r"dspex.init\(\)"):
        events.subscribe(got.append, remote=True)
    assert events.bus.subscriber_count == 0  # the refused subscription was undone


def test_an_installed_feed_is_asked_and_its_refusal_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[EventBus] = []

    def feed(bus: EventBus) -> str | None:
        asked.append(bus)
        return "no event log in this cluster"

    monkeypatch.setattr(events, "_remote_feed", None)
    events.set_remote_feed(feed)
    with events.subscribe(lambda event: None):  # remote=None: a refusal is not an error
        pass
    with pytest.raises(LookupError, match="no event log in this cluster"):
        events.subscribe(lambda event: None, remote=True)
    with events.subscribe(lambda event: None, remote=False):
        pass
    assert asked == [events.bus, events.bus]  # remote=False never asks
