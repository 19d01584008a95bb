"""A served program over real HTTP (aiohttp client against the ingress actor): JSON in
and out, 4xx naming the field, oversized bodies, a 503 with the dead-letter id,
concurrent requests through a replica kill and through an update, server-sent
events, and an ingress that restarts at the same address.

Uses the session's ``ray_cluster`` (tests/conftest.py) and one service of two
replicas for the module.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import ray

from dspex import runtime
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.runtime.names import NAMESPACE
from dspex.runtime.serve import ServiceHandle, get_service, serve
from dspex.runtime.supervision.application import SERVICES, dead_letters

pytestmark = [pytest.mark.ray, pytest.mark.slow]


class Shout(Module):
    """Upper-cases ``text`` ``times`` times, says which version ran (``marker``);
    ``delay`` keeps a request in flight, ``crash`` kills the replica's process."""

    def __init__(self, marker: str = "v1") -> None:
        super().__init__()
        self.marker = marker

    async def aforward(self, text: str, times: int = 1, delay: float = 0.0, crash: bool = False) -> Prediction:
        if crash:
            os._exit(1)
        await asyncio.sleep(delay)
        return Prediction(answer=text.upper() * times, marker=self.marker, pid=os.getpid())


@pytest.fixture(scope="module")
def handle(ray_cluster: Any) -> Iterator[ServiceHandle]:
    assert runtime.current() is None, "another test left the runtime up"
    runtime.init()
    try:
        served = serve(Shout(), name=f"shout-{uuid.uuid4().hex[:6]}", replicas=2, http=True, use_pools=False)
        yield served
        served.stop()
    finally:
        runtime.shutdown(stop_tree=True)


async def poll(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with session.post(url, json=body) as response:
        return response.status, await response.json()


async def test_json_in_json_out(handle: ServiceHandle) -> None:
    url = handle.url
    assert url is not None and url.startswith("http://127.0.0.1:") and url.endswith(f"/{handle.name}")
    assert get_service(handle.name).url == url
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, url, {"text": "hi", "times": 2})
        assert status == 200
        assert body["outputs"]["answer"] == "HIHI" and body["outputs"]["marker"] == "v1"
        assert body["usage"] == {}
        async with session.get(url) as response:
            described = await response.json()
        assert described["inputs"]["text"] == {"required": True, "type": "str"}


async def test_bad_requests_get_4xx_naming_the_field(handle: ServiceHandle) -> None:
    url = handle.url
    assert url is not None
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, url, {"times": "many"})
        assert status == 422
        assert {p["field"] for p in body["fields"]} == {"text", "times"}
        assert [p["problem"] for p in body["fields"] if p["field"] == "text"] == ["missing"]

        status, body = await post(session, url, {"text": "a", "colour": "red"})
        assert status == 422 and body["fields"] == [
            {"field": "colour", "problem": "not an input of this program"}
        ]
        status, body = await post(session, url, ["text"])
        assert status == 400 and "JSON object" in body["error"]
        async with session.post(url, data=b"{not json") as response:
            assert response.status == 400 and "not JSON" in (await response.json())["error"]
        async with session.post(url, data=b"x" * (1 << 20 + 1)) as response:
            assert response.status == 413 and (await response.json())["limit"] == 1 << 20


async def test_a_request_that_kills_every_replica_gets_503_with_its_dead_letter(handle: ServiceHandle) -> None:
    url = handle.url
    assert url is not None
    marker = uuid.uuid4().hex
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, url, {"text": marker, "crash": True})
        assert status == 503 and body["dead_letter_id"]
        letters = [d for d in dead_letters() if d.input.get("text") == marker]
        assert [d.id for d in letters] == [body["dead_letter_id"]]

        async def answers() -> bool:
            status, _ = await post(session, url, {"text": "back"})
            return status == 200

        await poll(answers, 30, "the replicas to come back")


async def test_concurrent_requests_through_a_replica_kill_and_an_update(handle: ServiceHandle) -> None:
    url = handle.url
    assert url is not None
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        # A replica killed under 150 requests in flight: its requests are retried.
        calls = [asyncio.ensure_future(post(session, url, {"text": f"k{i}", "delay": 0.5})) for i in range(150)]
        victim = ray.get_actor(handle.replicas[0], namespace=NAMESPACE)

        async def busy() -> bool:
            return (await victim.stats.remote())["in_flight"] > 0

        await poll(busy, 30, "requests on the first replica")
        ray.kill(victim)
        results = await asyncio.gather(*calls)
        assert [status for status, _ in results] == [200] * 150
        assert [body["outputs"]["answer"] for _, body in results] == [f"K{i}" for i in range(150)]

        # An update under load: nothing fails, answers come from either version.
        calls = [asyncio.ensure_future(post(session, url, {"text": f"u{i}", "delay": 0.2})) for i in range(150)]
        assert await handle.aupdate(Shout("v2")) == 2
        after = [asyncio.ensure_future(post(session, url, {"text": f"a{i}"})) for i in range(50)]
        during = await asyncio.gather(*calls)
        assert [status for status, _ in during] == [200] * 150
        assert {body["outputs"]["marker"] for _, body in during} <= {"v1", "v2"}
        assert {body["outputs"]["marker"] for _, body in await asyncio.gather(*after)} == {"v2"}


async def test_server_sent_events(handle: ServiceHandle) -> None:
    url = handle.url
    assert url is not None
    async with aiohttp.ClientSession() as session:
        headers = {"Accept": "text/event-stream"}
        async with session.post(url, json={"text": "sse"}, headers=headers) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            text = await response.text()
    events = [block for block in text.split("\n\n") if block.strip()]
    last = events[-1].splitlines()
    assert last[0] == "event: prediction"
    assert json.loads(last[1].removeprefix("data: "))["outputs"]["answer"] == "SSE"


async def test_a_killed_ingress_restarts_at_the_same_address(handle: ServiceHandle) -> None:
    url = handle.url
    assert url is not None and handle.ingress is not None
    ray.kill(ray.get_actor(handle.ingress, namespace=NAMESPACE))
    services = ray.get_actor(SERVICES, namespace=NAMESPACE)

    async def restarted() -> bool:
        info = {c.name: c for c in await services.which_children.remote()}[handle.ingress]
        return info.state == "running" and info.restarts >= 1

    await poll(restarted, 30, "the ingress's restart")
    assert handle.url == url
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, url, {"text": "again"})
    assert status == 200 and body["outputs"]["answer"] == "AGAIN"
