"""``handle.stream(**inputs)`` on real Ray: a served program streams its fields from the
simulated LM (over HTTP) through a Ray streaming generator; stopping early cancels the
replica's LM stream; a replica killed mid-stream is an error to the consumer and a dead letter.

One service of one replica for the module, on the session's ``ray_cluster``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import ray

import dspex
from dspex import runtime
from dspex.errors import ReplicaDiedError
from dspex.runtime.names import NAMESPACE
from dspex.runtime.serve import ServiceHandle, serve
from dspex.runtime.supervision.application import dead_letters
from dspex.simlm import start_sim_lm
from dspex.simlm.server import SimLMServer
from dspex.streaming import StreamListener, StreamResponse

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm(seed=9) as server:
        yield server


@pytest.fixture(scope="module")
def handle(ray_cluster: Any, sim: SimLMServer) -> Iterator[ServiceHandle]:
    assert runtime.current() is None, "another test left the runtime up"
    runtime.init()
    try:
        with dspex.context(lm=dspex.LM("openai/sim", api_base=sim.url, cache=False)):
            yield serve(dspex.ChainOfThought("question -> answer"), name=f"qa-{uuid.uuid4().hex[:6]}", replicas=1)
    finally:
        runtime.shutdown(stop_tree=True)


@pytest.fixture(autouse=True)
def _plain_streams(sim: SimLMServer) -> None:
    sim.set_stream()
    sim.set_faults()


async def poll(predicate: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if await result if asyncio.iscoroutine(result) else result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_served_program_streams_its_fields(handle: ServiceHandle) -> None:
    items = [
        item
        async for item in handle.stream(
            stream_listeners=[StreamListener("answer"), StreamListener("reasoning")], question="What is the capital of Peru?"
        )
    ]
    prediction = items[-1]
    assert isinstance(prediction, dspex.Prediction)
    answer = [i for i in items if isinstance(i, StreamResponse) and i.signature_field_name == "answer"]
    assert len(answer) > 2 and "".join(c.chunk for c in answer) == prediction.answer
    assert answer[-1].is_last_chunk and answer[0].predict_name == "predict"
    # the same request, not streamed, answers the same
    assert (await handle.acall(question="What is the capital of Peru?")).answer == prediction.answer


async def test_a_consumer_that_stops_early_cancels_the_replicas_stream(handle: ServiceHandle, sim: SimLMServer) -> None:
    sim.set_stream(chunk_chars=1, chunk_delay_ms=20)
    gone = sim.stream_stats()["client_gone"]
    stream = handle.stream(stream_listeners=[StreamListener("reasoning")], question="Why do leaves change color?")
    first = await anext(stream)
    assert isinstance(first, StreamResponse)
    await stream.aclose()
    await poll(lambda: sim.stream_stats()["client_gone"] > gone, 20, "the replica to drop its LM stream")
    actor = ray.get_actor(handle.replicas[0], namespace=NAMESPACE)

    async def idle() -> bool:
        return (await actor.stats.remote())["in_flight"] == 0

    await poll(idle, 20, "the replica to finish the cancelled request")


async def test_a_replica_killed_mid_stream_is_an_error_and_a_dead_letter(handle: ServiceHandle, sim: SimLMServer) -> None:
    sim.set_stream(chunk_chars=1, chunk_delay_ms=20)
    marker = f"Where is {uuid.uuid4().hex[:8]}?"
    stream = handle.stream(stream_listeners=[StreamListener("reasoning")], question=marker)
    seen = [await anext(stream)]
    ray.kill(ray.get_actor(handle.replicas[0], namespace=NAMESPACE))
    with pytest.raises(ReplicaDiedError) as caught:
        async for item in stream:
            seen.append(item)
    assert not any(isinstance(i, dspex.Prediction) for i in seen)
    assert caught.value.service == handle.name and caught.value.attempts == 1
    letters = [d for d in dead_letters() if d.input.get("question") == marker]
    assert len(letters) == 1 and letters[0].error_type.endswith("ReplicaDiedError")
    # the supervisor restarts the replica; the service streams again
    sim.set_stream()

    async def answers() -> bool:
        try:
            return isinstance((await handle.acall(question="ok?")), dspex.Prediction)
        except Exception:
            return False

    await poll(answers, 60, "the restarted replica to answer")


async def test_a_slow_consumer_holds_the_replica_back_within_bounds(handle: ServiceHandle, sim: SimLMServer) -> None:
    from dspex.runtime.serve import STREAM_BACKPRESSURE
    from dspex.streaming.streamify import DEFAULT_BUFFER_SIZE

    sim.set_stream(chunk_chars=1)  # the LM writes fast, in many chunks
    actor = ray.get_actor(handle.replicas[0], namespace=NAMESPACE)
    received, ahead = 0, []
    question = "How do the tides work on the coasts of the northern seas in winter?"
    async for _item in handle.stream(stream_listeners=[StreamListener("reasoning")], question=question):
        received += 1
        await asyncio.sleep(0.02)  # the consumer is slow: that is its behaviour under test
        if received % 10 == 0:
            ahead.append((await actor.stats.remote())["last_stream"]["items"] - received)
    last = (await actor.stats.remote())["last_stream"]
    assert received > 60 and last["items"] == received - 1
    assert last["max_queued"] <= last["bound"] and last["producer_waits"] > 0
    # the replica never runs further ahead than Ray's window plus the program's queue
    assert max(ahead) <= STREAM_BACKPRESSURE + DEFAULT_BUFFER_SIZE + 2, ahead
