"""Reading the runtime: tolerant of missing parts and of the shapes the runtime returns."""

from __future__ import annotations

import asyncio
import enum
import sys
import types
from typing import Any

import pytest
from dash_helpers import event

from dspex import runtime
from dspex.dashboard import sources
from dspex.dashboard.activity import Activity
from dspex.dashboard.sources import RuntimeSources
from dspex.runtime.supervision.dead_letters import DeadLetter, DeadLetterQueue
from dspex.runtime.supervision.events import EVENT_LOG_NAME, Event, EventLog
from dspex.runtime.supervision.tree import TreeNode


def _actors(monkeypatch: pytest.MonkeyPatch, **by_name: Any) -> None:
    """Stands in for the cluster's named actors: plain objects, as the runtime's classes are."""
    monkeypatch.setattr(sources, "named_actor", lambda name: by_name.get(name))
    monkeypatch.setattr(runtime, "_runtime", None)  # nor a runtime some other test left up


def test_without_a_runtime_nothing_is_read_and_the_page_is_told_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "runtime_connected", lambda: False)
    view = RuntimeSources().collect()
    assert (view.connected, view.pools, view.tree, view.dead_letters, view.events) == (False, [], None, [], [])
    assert view.message.startswith("runtime not connected")


def test_a_failed_attach_is_reported_on_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    class Ray(types.ModuleType):
        def is_initialized(self) -> bool:
            return False

        def init(self, **kwargs: Any) -> None:
            raise ConnectionError("no GCS at 10.0.0.9:6379")

    monkeypatch.setitem(sys.modules, "ray", Ray("ray"))
    monkeypatch.setattr(sources, "runtime_connected", lambda: False)
    runtime = RuntimeSources("10.0.0.9:6379")
    runtime.connect()
    assert runtime.collect().message == "could not connect to 10.0.0.9:6379: ConnectionError: no GCS at 10.0.0.9:6379"


def test_events_start_with_recent_history_then_follow_the_cursor(monkeypatch: pytest.MonkeyPatch) -> None:
    log = EventLog(capacity=1000)
    old = [Event("child.started", "root", {"child": f"c{i}"}, float(i)) for i in range(sources.EVENT_BACKLOG + 50)]
    asyncio.run(log.publish(old))
    _actors(monkeypatch, **{EVENT_LOG_NAME: log})

    rows, cursor = sources.events_since(None, timeout=1)
    assert len(rows) == sources.EVENT_BACKLOG  # not the whole log: the latest few
    assert rows[-1]["data"] == {"child": f"c{len(old) - 1}"}
    assert sources.events_since(cursor, timeout=1) == ([], cursor)

    fresh = [
        Event("child.restarted", "providers", {"child": "pool:a", "restarts": 2}, 100.0),
        Event("lm.request", "pool:a", {"note": "sk-abcdefghijklmnopqrstuvwx", "latency": 0.5}, 101.0),
        Event("trial.scored", "run:r", {"score": float("nan"), "number": 3}, 102.0),
    ]
    asyncio.run(log.publish(fresh))
    rows, cursor = sources.events_since(cursor, timeout=1)
    assert [(r["kind"], r["source"], r["time"]) for r in rows] == [
        ("child.restarted", "providers", 100.0), ("lm.request", "pool:a", 101.0), ("trial.scored", "run:r", 102.0),
    ]
    assert "sk-abc" not in str(rows[1]["data"])
    assert rows[2]["data"]["score"] is None  # NaN cannot travel as JSON
    assert cursor == len(old) + len(fresh)


def test_no_event_log_reads_as_no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    _actors(monkeypatch)
    assert sources.events_since(None, timeout=1) == ([], None)


def test_tree_comes_from_the_root_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    class Root:
        async def tree(self) -> TreeNode:  # async, as Supervisor.tree is
            return TreeNode("dspex.root", "supervisor", "running", strategy="one_for_one", children=(
                TreeNode("event_log"),
                TreeNode("providers", "supervisor", "running", restarts=1, strategy="rest_for_one", children=(
                    TreeNode("pool:a", state="restarting", restarts=4),
                )),
            ))

    _actors(monkeypatch, **{runtime.ROOT_SUPERVISOR: Root()})
    tree = sources.supervision_tree(timeout=1)
    assert tree is not None
    assert (tree["name"], tree["strategy"], tree["status"]) == ("dspex.root", "one_for_one", "running")
    providers = tree["children"][1]
    assert (providers["kind"], providers["restarts"]) == ("supervisor", 1)
    assert providers["children"] == [
        {"name": "pool:a", "kind": "worker", "strategy": None, "status": "restarting", "restarts": 4,
         "labels": {}, "children": []},
    ]


def test_no_root_supervisor_reads_as_no_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    _actors(monkeypatch)
    assert sources.supervision_tree(timeout=1) is None


def test_dead_letters_newest_first_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    queue = DeadLetterQueue()
    for attempt, message in enumerate(["no answer field", "401 for key sk-abcdefghijklmnopqrstuvwx"]):
        try:
            raise ValueError(message)
        except ValueError as exc:
            queue.put(DeadLetter.from_exception("eval:r", {"question": "x" * 1000}, exc, attempts=attempt + 2))
    _actors(monkeypatch, **{sources.DEAD_LETTERS_NAME: queue})

    rows = sources.dead_letters(timeout=1)
    assert [row["attempts"] for row in rows] == [3, 2]
    assert rows[0]["reason"].startswith("ValueError: 401 for key ")
    assert "sk-abc" not in rows[0]["reason"]
    assert rows[1]["reason"] == "ValueError: no answer field"
    assert len(rows[0]["input"]) == sources.MAX_TEXT


def test_pool_stats_are_reduced_to_what_the_page_shows() -> None:
    class Breaker(enum.Enum):
        HALF_OPEN = "half-open"

    row = sources.pool_row(
        "dspex.pool.openai.gpt-4o-mini.0123456789abcdef",
        {"breaker": Breaker.HALF_OPEN, "calls": 7, "cost": None, "requests_per_s": float("inf")},
    )
    assert (row["model"], row["breaker"], row["calls"], row["cost"], row["requests_per_s"]) == (
        "gpt-4o-mini", "half_open", 7, None, None,
    )


def test_one_unreadable_section_does_not_blank_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "runtime_connected", lambda: True)
    monkeypatch.setattr(sources, "provider_pools", lambda timeout: [{"name": "p"}])
    monkeypatch.setattr(sources, "dead_letters", lambda timeout: [])
    monkeypatch.setattr(sources, "events_since", lambda cursor, timeout: ([], cursor))

    def broken(timeout: float) -> None:
        raise TimeoutError("the root supervisor did not answer")

    monkeypatch.setattr(sources, "supervision_tree", broken)
    view = RuntimeSources().collect()
    assert view.connected and view.pools == [{"name": "p"}]
    assert view.tree is None
    assert view.errors == {"tree": "TimeoutError: the root supervisor did not answer"}


def test_activity_folds_evaluations_and_spots_store_changes() -> None:
    activity = Activity(keep=3)
    assert activity.add([event("eval.started", "eval:1", total=10), event("eval.progress", "eval:1", done=4)]) is False
    assert activity.add([event("trial.scored", "run:r", number=1, score=0.5)]) is True
    for _ in range(5):
        activity.add([event("lm.request", "pool", latency=0.1)])
    activity.add([event("eval.finished", "eval:1", score=71.5)])
    snapshot = activity.snapshot()
    evaluation = snapshot["evaluations"][0]
    assert (evaluation["done"], evaluation["total"], evaluation["score"], evaluation["finished"]) == (10, 10, 71.5, True)
    assert [e["kind"] for e in snapshot["events"]] == ["eval.finished", "trial.scored", "eval.started"]
    assert snapshot["lm_requests"] == 5
