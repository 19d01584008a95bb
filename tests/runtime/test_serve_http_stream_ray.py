"""A served ChainOfThought over HTTP against the simulated LM: the JSON answer carries
the LM usage, and ``?stream=answer`` streams the field's chunks as server-sent events
before the prediction.

One service of one replica for the module, on the session's ``ray_cluster``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

import dspex
from dspex import runtime
from dspex.runtime.serve import ServiceHandle, serve
from dspex.simlm import start_sim_lm
from dspex.simlm.server import SimLMServer

pytestmark = [pytest.mark.ray, pytest.mark.slow]

QUESTION = "What is the capital of Peru?"


@pytest.fixture(scope="module")
def handle(ray_cluster: Any) -> Iterator[ServiceHandle]:
    assert runtime.current() is None, "another test left the runtime up"
    with start_sim_lm(seed=9) as sim:
        runtime.init()
        try:
            yield _serve(sim)
        finally:
            runtime.shutdown(stop_tree=True)


def _serve(sim: SimLMServer) -> ServiceHandle:
    with dspex.context(lm=dspex.LM("openai/sim", api_base=sim.url, cache=False)):
        return serve(dspex.ChainOfThought("question -> answer"), name=f"qa-{uuid.uuid4().hex[:6]}", http=True)


def events_of(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


async def test_answers_carry_usage_and_stream_as_events(handle: ServiceHandle) -> None:
    url = handle.url
    assert url is not None
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"question": QUESTION}) as response:
            assert response.status == 200
            body = await response.json()
        assert body["outputs"]["answer"] and body["outputs"]["reasoning"]
        assert body["usage"]["openai/sim"]["total_tokens"] > 0

        async with session.post(url, json={}) as response:
            assert response.status == 422
            assert (await response.json())["fields"] == [{"field": "question", "problem": "missing"}]

        async with session.post(f"{url}?stream=answer", json={"question": QUESTION}) as response:
            assert response.status == 200
            events = events_of(await response.text())
    chunks = [data for kind, data in events if kind == "chunk"]
    assert len(chunks) > 2 and {c["field"] for c in chunks} == {"answer"} and chunks[-1]["last"]
    kind, final = events[-1]
    assert kind == "prediction"
    assert "".join(c["chunk"] for c in chunks) == final["outputs"]["answer"] == body["outputs"]["answer"]
