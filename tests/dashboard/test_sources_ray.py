"""`RuntimeSources` against a real runtime on Ray: supervisor, event log, pool, dead letters."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from dspex import runtime
from dspex.dashboard.sources import DEAD_LETTERS_NAME, RuntimeSources, RuntimeView

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _collect_until(check: Callable[[RuntimeView], bool], timeout: float = 60.0) -> RuntimeView:
    """Reads the runtime until ``check`` holds (events reach the log asynchronously)."""
    runtime_sources = RuntimeSources()
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        view = runtime_sources.collect()
        seen.extend(view.events)
        view.events = seen
        if check(view):
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"the runtime never looked as expected: {view}")
        time.sleep(0.1)  # a polling period, not synchronisation


def test_collect_reads_the_live_runtime(ray_cluster: Any) -> None:
    import ray

    from dspex.runtime.pools.pool_client import pool_name
    from dspex.runtime.pools.provider_pool import PoolConfig, ProviderPool
    from dspex.runtime.supervision import (
        ChildSpec,
        DeadLetter,
        DeadLetterQueue,
        start_supervisor,
        stop_supervisor,
    )
    from dspex.runtime.supervision.events import connect_event_log, emit, flush

    config = PoolConfig(provider="openai", model="openai/dashboard-test", model_name="dashboard-test",
                        api_base="http://127.0.0.1:9/v1")
    pool = pool_name("openai", "dashboard-test", config.api_base)
    root = start_supervisor(
        runtime.ROOT_SUPERVISOR,
        [
            ChildSpec(DEAD_LETTERS_NAME, DeadLetterQueue),
            ChildSpec(pool, ProviderPool, args=(config,), kwargs={"name": pool}, actor_options={"num_cpus": 0}),
        ],
        timeout=120,
    )
    try:
        queue = ray.get_actor(DEAD_LETTERS_NAME, namespace="dspex")
        try:
            raise ValueError("the LM never produced an answer field")
        except ValueError as exc:
            letter = DeadLetter.from_exception("eval:dash", {"question": "2+2"}, exc, attempts=3)
        ray.get(queue.put.remote(letter), timeout=30)
        assert connect_event_log()
        emit("trial.scored", "run:dash", number=1, score=0.5)
        flush()

        view = _collect_until(
            lambda v: bool(v.pools and v.tree and v.dead_letters)
            and any(e["kind"] == "trial.scored" and e["source"] == "run:dash" for e in v.events)
        )
    finally:
        stop_supervisor(root, timeout=60)

    assert view.connected and view.errors == {}
    row = next(p for p in view.pools if p["name"] == pool)
    assert (row["model"], row["breaker"], row["calls"], row["in_flight"]) == ("openai/dashboard-test", "closed", 0, 0)
    assert view.tree is not None
    assert view.tree["name"] == runtime.ROOT_SUPERVISOR
    assert {c["name"] for c in view.tree["children"]} == {DEAD_LETTERS_NAME, pool}
    assert view.dead_letters[0]["reason"] == "ValueError: the LM never produced an answer field"
    assert view.dead_letters[0]["attempts"] == 3
    started = {e["data"].get("child") for e in view.events if e["kind"] == "child.started"}
    assert {DEAD_LETTERS_NAME, pool} <= started
