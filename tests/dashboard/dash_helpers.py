"""Shared pieces of the dashboard tests: seeding a store, a fake runtime, reading SSE."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from dspex.dashboard.sources import RuntimeSources, RuntimeView
from dspex.optimizers.run_store import RunStore

# The `dashboard` fixture: starts a dashboard app on the test store, returns its client.
ClientFactory = Callable[..., Awaitable[TestClient]]


def seed_run(
    store: RunStore,
    run_id: str,
    scores: list[float | None],
    *,
    optimizer: str = "MIPROv2",
    config: dict[str, Any] | None = None,
    first: int = 0,
) -> None:
    """A run with one trial per score; None scores are failed trials."""
    if not store.has_run(run_id):
        store.create_run(run_id, optimizer, config or {})
    add_trials(store, run_id, scores, first=first)


def add_trials(store: RunStore, run_id: str, scores: list[float | None], *, first: int = 0) -> None:
    for offset, score in enumerate(scores):
        failed = score is None
        store.record_trial(
            run_id,
            first + offset,
            {"instruction": f"candidate {first + offset}", "demos": offset % 3},
            score=score,
            status="failed" if failed else "scored",
            error="TimeoutError: the LM did not answer" if failed else None,
        )


class FakeSources(RuntimeSources):
    """A runtime that says what the test sets on it."""

    def __init__(self, view: RuntimeView | None = None) -> None:
        super().__init__(address="fake:6379")
        self.view = view or RuntimeView(connected=True, address="fake:6379", message="connected")
        self.pending_events: list[dict[str, Any]] = []

    def connect(self) -> None:
        pass  # nothing to attach to

    def collect(self) -> RuntimeView:
        view = copy.deepcopy(self.view)
        view.events, self.pending_events = self.pending_events, []  # each event is read once
        return view


class NoRuntime(RuntimeSources):
    """No runtime, even when this test process is attached to the session's Ray cluster."""

    def connect(self) -> None:
        pass

    def collect(self) -> RuntimeView:
        return RuntimeView()


def busy_runtime() -> RuntimeView:
    """A runtime with a bit of everything, as the page would see a real one."""
    now = time.time()
    return RuntimeView(
        connected=True,
        address="127.0.0.1:6379",
        message="connected",
        pools=[
            {
                "name": "dspex.pool.openai.sim-arith.0123456789abcdef", "model": "sim-arith",
                "breaker": "closed", "in_flight": 12, "queued": 3, "calls": 4210, "errors": 7,
                "retries": 9, "requests_per_s": 38.5, "rate_limit_paused_for": 0.0,
                "prompt_tokens": 812000, "completion_tokens": 96000, "cost": 0.4821,
            },
            {
                "name": "dspex.pool.openai.flaky.fedcba9876543210", "model": "flaky-model",
                "breaker": "open", "in_flight": 0, "queued": 0, "calls": 120, "errors": 41,
                "retries": 60, "requests_per_s": 0.0, "rate_limit_paused_for": 2.5,
                "prompt_tokens": 20000, "completion_tokens": 1500, "cost": None,
            },
        ],
        tree={
            "name": "root", "kind": "supervisor", "status": "running", "restarts": 0,
            "children": [
                {"name": "event_log", "kind": "worker", "status": "running", "restarts": 0, "children": []},
                {"name": "providers", "kind": "supervisor", "status": "running", "restarts": 1, "children": [
                    {"name": "pool:sim-arith", "kind": "worker", "status": "running", "restarts": 2, "children": []},
                ]},
                {"name": "eval_workers", "kind": "supervisor", "status": "running", "restarts": 0, "children": []},
            ],
        },
        dead_letters=[
            {"time": now - 30, "source": "eval:demo-run", "reason": "AdapterParseError: no [[ ## answer ## ]] field",
             "attempts": 3, "input": "question='What is 17 * 23?'"},
        ],
    )


def event(kind: str, source: str, **data: Any) -> dict[str, Any]:
    return {"kind": kind, "source": source, "time": time.time(), "data": data}


@dataclass
class SSEReader:
    """Reads server-sent events from an aiohttp response, keeping the comment lines seen."""

    response: ClientResponse
    comments: list[str] = field(default_factory=list)

    async def next_event(self, timeout: float = 10.0) -> tuple[str, str]:
        """The next complete event as (name, data)."""
        deadline = asyncio.get_running_loop().time() + timeout
        name, data = "message", []
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            line = await asyncio.wait_for(self.response.content.readline(), max(remaining, 0.001))
            if not line:
                raise EOFError("the event stream ended")
            text = line.decode().rstrip("\r\n")
            if not text:
                if data:
                    return name, "\n".join(data)
                continue
            if text.startswith(":"):
                self.comments.append(text[1:].strip())
                continue
            key, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)

    async def snapshot_where(self, check: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The first snapshot pushed for which ``check(snapshot)`` holds (fails at the deadline)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError("no snapshot satisfied the check before the deadline")
            name, data = await self.next_event(remaining)
            if name == "snapshot":
                snapshot = json.loads(data)
                if check(snapshot):
                    return snapshot
