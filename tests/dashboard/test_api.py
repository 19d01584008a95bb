"""The dashboard's HTTP API: the snapshot, the event stream, and what the server refuses."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from dash_helpers import (
    ClientFactory,
    FakeSources,
    NoRuntime,
    SSEReader,
    add_trials,
    busy_runtime,
    event,
    seed_run,
)

from dspex.dashboard.server import DashboardError, create_app, start
from dspex.optimizers.run_store import RunStore

STATIC = Path(__file__).resolve().parents[2] / "dspex" / "dashboard" / "static"


async def _snapshot(client, **query: str) -> dict:
    response = await client.get("/api/snapshot", params=query)
    assert response.status == 200
    return await response.json()


# --- the snapshot ---------------------------------------------------------------------


async def test_snapshot_lists_runs_with_their_totals(dashboard: ClientFactory, store: RunStore) -> None:
    seed_run(store, "old", [0.2, 0.4], optimizer="BootstrapFewShot")
    store.update_run("old", status="finished", best_score=0.4)
    seed_run(store, "live", [0.5, None, 0.7], config={"num_trials": 10})
    store.add_usage("live", "openai/gpt-4o-mini", calls=30, prompt_tokens=9000, completion_tokens=800, cost=0.012)
    store.add_usage("live", "openai/gpt-4o", calls=5, prompt_tokens=1500, completion_tokens=200, cost=0.03)

    snapshot = await _snapshot(await dashboard())

    runs = {run["run_id"]: run for run in snapshot["runs"]}
    assert set(runs) == {"old", "live"}
    assert runs["old"] | {"updated": None, "created": None} == {
        "run_id": "old", "optimizer": "BootstrapFewShot", "status": "finished", "best_score": 0.4,
        "trials": 2, "failed_trials": 0, "lm_calls": 0, "cost": 0.0,
        "created": None, "updated": None, "error": None,
    }
    assert (runs["live"]["trials"], runs["live"]["failed_trials"], runs["live"]["lm_calls"]) == (3, 1, 35)
    assert runs["live"]["cost"] == pytest.approx(0.042)
    # Recording a trial does not touch runs.updated; the row still shows when the run last moved.
    last_trial = max(t.created for t in store.trials("live"))
    assert runs["live"]["updated"] >= last_trial

    # Without a choice, the running run is the one shown in detail.
    assert snapshot["selected"] == "live"
    detail = snapshot["run"]
    assert [(t["number"], t["score"], t["status"]) for t in detail["trials"]] == [
        (0, 0.5, "scored"), (1, None, "failed"), (2, 0.7, "scored"),
    ]
    assert detail["trials"][1]["error"] == "TimeoutError: the LM did not answer"
    assert json.loads(detail["trials"][0]["params"]) == {"demos": 0, "instruction": "candidate 0"}
    assert detail["planned_trials"] == 10
    assert [u["model"] for u in detail["usage"]] == ["openai/gpt-4o-mini", "openai/gpt-4o"]
    assert detail["usage"][0] == {
        "model": "openai/gpt-4o-mini", "calls": 30, "prompt_tokens": 9000, "completion_tokens": 800, "cost": 0.012,
    }


async def test_snapshot_shows_the_run_asked_for(dashboard: ClientFactory, store: RunStore) -> None:
    seed_run(store, "a", [0.1])
    seed_run(store, "b", [0.2, 0.3])
    client = await dashboard()

    assert (await _snapshot(client, run="a"))["run"]["run_id"] == "a"
    fallback = await _snapshot(client, run="no-such-run")
    assert fallback["selected"] in {"a", "b"}
    assert fallback["run"]["run_id"] == fallback["selected"]


async def test_empty_store_says_so(dashboard: ClientFactory, store: RunStore) -> None:
    snapshot = await _snapshot(await dashboard())
    assert (snapshot["runs"], snapshot["selected"], snapshot["run"]) == ([], None, None)
    assert snapshot["store"] == {"path": str(store.path), "error": None}
    runtime = snapshot["runtime"]
    assert runtime["connected"] is False
    assert "--address" in runtime["message"]
    assert (runtime["pools"], runtime["tree"], runtime["dead_letters"]) == ([], None, [])


async def test_snapshot_is_strict_json_even_with_nan_scores(dashboard: ClientFactory, store: RunStore) -> None:
    store.create_run("r", "MIPROv2", {})
    store.record_trial("r", 0, {}, score=float("nan"), status="scored")
    store.update_run("r", best_score=float("inf"))
    response = await (await dashboard()).get("/api/snapshot")

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON a browser can parse")

    snapshot = json.loads(await response.text(), parse_constant=refuse)
    assert snapshot["run"]["trials"][0]["score"] is None
    assert snapshot["runs"][0]["best_score"] is None


async def test_secrets_are_masked(dashboard: ClientFactory, store: RunStore) -> None:
    store.create_run("r", "MIPROv2", {"api_key": "plain-looking", "model": "gpt-4o-mini"})
    store.record_trial(
        "r", 0, {}, score=None, status="failed", error="AuthError: bad key sk-abcdefghijklmnopqrstuvwx"
    )
    text = await (await (await dashboard()).get("/api/snapshot")).text()
    assert "plain-looking" not in text
    assert "sk-abcdefghijklmnopqrstuvwx" not in text
    snapshot = json.loads(text)
    assert snapshot["run"]["config"] == {"api_key": "[REDACTED]", "model": "gpt-4o-mini"}


async def test_runtime_sections_come_from_the_sources(dashboard: ClientFactory) -> None:
    sources = FakeSources(busy_runtime())
    sources.pending_events = [
        event("eval.started", "eval:abc", total=50),
        event("eval.progress", "eval:abc", done=20, total=50, errors=1),
        event("breaker.state", "dspex.pool.openai.flaky", old="closed", new="open"),
        event("lm.request", "dspex.pool.openai.sim", latency=0.05),
    ]
    client = await dashboard(sources=sources)

    async with client.get("/api/events") as response:
        runtime = (await SSEReader(response).snapshot_where(lambda s: s["runtime"]["events"]))["runtime"]

    assert runtime["connected"] and runtime["address"] == "127.0.0.1:6379"
    assert [p["breaker"] for p in runtime["pools"]] == ["closed", "open"]
    assert runtime["tree"]["children"][1]["children"][0]["restarts"] == 2
    assert runtime["dead_letters"][0]["source"] == "eval:demo-run"
    assert runtime["evaluations"] == [
        {"source": "eval:abc", "done": 20, "total": 50, "errors": 1, "score": None, "finished": False,
         "updated": runtime["evaluations"][0]["updated"]},
    ]
    # Per-request and progress events are counted or folded, not listed one by one.
    assert [e["kind"] for e in runtime["events"]] == ["breaker.state", "eval.started"]
    assert runtime["lm_requests"] == 1


# --- the event stream -------------------------------------------------------------------


async def test_stream_pushes_a_new_trial_while_connected(
    dashboard: ClientFactory, store: RunStore, writer: RunStore
) -> None:
    seed_run(store, "live", [0.3, 0.4, 0.5])
    client = await dashboard()

    async with client.get("/api/events", params={"run": "live"}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        reader = SSEReader(response)
        first = await reader.snapshot_where(lambda s: True)
        assert len(first["run"]["trials"]) == 3

        add_trials(writer, "live", [0.9], first=3)  # another connection, as an optimizer process

        pushed = await reader.snapshot_where(lambda s: len(s["run"]["trials"]) == 4)
        assert pushed["run"]["trials"][-1]["score"] == 0.9
        assert pushed["runs"][0]["trials"] == 4


async def test_stream_follows_a_run_started_later(
    dashboard: ClientFactory, writer: RunStore
) -> None:
    client = await dashboard()
    async with client.get("/api/events") as response:
        reader = SSEReader(response)
        assert (await reader.snapshot_where(lambda s: True))["runs"] == []
        seed_run(writer, "new-run", [0.6])
        pushed = await reader.snapshot_where(lambda s: s["selected"] == "new-run")
        assert pushed["run"]["trials"][0]["score"] == 0.6


async def test_stream_pushes_runtime_changes(dashboard: ClientFactory) -> None:
    sources = FakeSources()
    client = await dashboard(sources=sources)
    async with client.get("/api/events") as response:
        reader = SSEReader(response)
        assert (await reader.snapshot_where(lambda s: True))["runtime"]["pools"] == []
        sources.view = busy_runtime()
        pushed = await reader.snapshot_where(lambda s: s["runtime"]["pools"])
        assert pushed["runtime"]["pools"][1]["breaker"] == "open"


async def test_stream_sends_heartbeats_when_nothing_changes(dashboard: ClientFactory, store: RunStore) -> None:
    seed_run(store, "quiet", [0.1])
    client = await dashboard(heartbeat=0.05)
    async with client.get("/api/events") as response:
        reader = SSEReader(response)
        await reader.snapshot_where(lambda s: True)
        with pytest.raises(asyncio.TimeoutError):
            await reader.next_event(timeout=0.5)  # no new snapshot for an unchanged store...
        assert "heartbeat" in reader.comments  # ...but the connection is kept alive


async def test_shutdown_ends_open_streams(store: RunStore) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    seed_run(store, "r", [0.5])
    app = create_app(store, sources=NoRuntime(), poll_interval=0.05)
    client = TestClient(TestServer(app, shutdown_timeout=60.0))
    await client.start_server()
    try:
        response = await client.get("/api/events")
        reader = SSEReader(response)
        await reader.snapshot_where(lambda s: True)
        # Without the shutdown hook the server would wait its full 60 s for this handler.
        await asyncio.wait_for(client.server.close(), timeout=15)
        with pytest.raises(EOFError):
            await reader.next_event(timeout=5)
    finally:
        await client.close()


# --- what the server refuses or hardens ---------------------------------------------------


async def test_requests_for_other_hosts_are_refused(dashboard: ClientFactory) -> None:
    client = await dashboard()
    # A page on another site that rebinds its DNS name to 127.0.0.1 still sends its own Host.
    refused = await client.get("/api/snapshot", headers={"Host": "attacker.example:8377"})
    assert refused.status == 403
    for host in ("localhost:8377", "127.0.0.1", "[::1]:8377"):
        assert (await client.get("/api/snapshot", headers={"Host": host})).status == 200

    open_client = await dashboard(loopback_only=False)
    assert (await open_client.get("/api/snapshot", headers={"Host": "dash.internal:80"})).status == 200


async def test_page_and_assets_are_served_with_a_strict_policy(dashboard: ClientFactory) -> None:
    client = await dashboard()
    page = await client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    html = await page.text()
    for name in ("app.js", "style.css"):
        asset = await client.get(f"/static/{name}")
        assert asset.status == 200, name
    assert (await client.get("/static/app.js")).content_type == "text/javascript"
    for path in ("/static/..%2fserver.py", "/static/server.py", "/static/.hidden.js", "/static/nope.js"):
        assert (await client.get(path)).status == 404, path
    # The page is self-contained: every reference is to this server.
    for reference in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert reference.startswith(("/static/", "data:")), reference


def test_assets_reference_nothing_outside() -> None:
    css = (STATIC / "style.css").read_text()
    js = (STATIC / "app.js").read_text()
    assert "url(" not in css and "@import" not in css
    # The only absolute URL in the script is the SVG namespace, which is a name, not a fetch.
    assert re.findall(r"https?://[^\"' )]+", js) == ["http://www.w3.org/2000/svg"]


async def test_start_refuses_other_interfaces_unless_allowed(store: RunStore) -> None:
    with pytest.raises(DashboardError, match="no login"):
        await start(create_app(store, sources=NoRuntime()), host="0.0.0.0", port=0)
    runner, url = await start(create_app(store, sources=NoRuntime()), host="127.0.0.1", port=0)
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url) and not url.endswith(":0/")
    finally:
        await runner.cleanup()
