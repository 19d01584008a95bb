"""``dspex.serve`` on real Ray: replicas answer, a killed replica's request is
retried on the other and the replica restarted, a poison request lands in the
dead letters, the program's own errors reach the caller, ``stop()`` removes
the replicas.

Uses the session's ``ray_cluster`` (tests/conftest.py) and one service of two
replicas for the whole module.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import ray

from dspex import runtime
from dspex.errors import ConfigurationError
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.runtime.names import NAMESPACE
from dspex.runtime.serve import (
    RemoteProgramError,
    ReplicaDiedError,
    ServiceHandle,
    get_service,
    serve,
)
from dspex.runtime.supervision.application import SERVICES, dead_letters

pytestmark = [pytest.mark.ray, pytest.mark.slow]


class KeywordOnlyError(Exception):
    def __init__(self, *, detail: str) -> None:
        super().__init__(f"failed: {detail}")


class Echo(Module):
    """Upper-cases ``text``; ``delay`` keeps a request in flight, ``crash`` kills
    the replica's process, ``fail`` raises."""

    async def aforward(
        self, text: str, delay: float = 0.0, crash: bool = False, fail: str = "", api_key: str = ""
    ) -> Prediction:
        del api_key  # only there to show that the dead letters redact it
        if crash:
            os._exit(1)
        if fail == "value":
            raise ValueError(f"bad text {text!r}")
        if fail == "keyword":
            raise KeywordOnlyError(detail=text)
        await asyncio.sleep(delay)
        return Prediction(answer=text.upper(), pid=os.getpid())


@pytest.fixture(scope="module")
def handle(ray_cluster: Any) -> Iterator[ServiceHandle]:
    assert runtime.current() is None, "another test left the runtime up"
    runtime.init()
    try:
        yield serve(Echo(), name=f"echo-{uuid.uuid4().hex[:6]}", replicas=2)
    finally:
        runtime.shutdown(stop_tree=True)


async def poll(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def replicas_info(handle: ServiceHandle) -> dict[str, Any]:
    services = ray.get_actor(SERVICES, namespace=NAMESPACE)
    children = await services.which_children.remote()
    return {c.name: c for c in children if c.name in handle.replicas}


async def wait_restarted(handle: ServiceHandle, expected: dict[str, int]) -> None:
    """Until every replica in ``expected`` runs again with that many restarts."""

    async def done() -> bool:
        info = await replicas_info(handle)
        return all(
            info[name].state == "running" and info[name].restarts >= count
            for name, count in expected.items()
        )

    await poll(done, 30, f"restarts {expected}")


def replica_actor(name: str) -> Any:
    return ray.get_actor(name, namespace=NAMESPACE)


async def test_replicas_answer_sync_and_async_calls(handle: ServiceHandle) -> None:
    answers = await asyncio.gather(*(handle.acall(text=f"q{i}") for i in range(20)))
    assert [a.answer for a in answers] == [f"Q{i}" for i in range(20)]
    assert len({a.pid for a in answers}) == 2, "requests did not spread over both replicas"
    assert (await asyncio.to_thread(handle, text="sync")).answer == "SYNC"
    copy = pickle.loads(pickle.dumps(handle))  # re-resolves the replicas by name
    assert (await copy.acall(text="copy")).answer == "COPY"
    assert get_service(handle.name).replicas == handle.replicas
    info = await replicas_info(handle)
    assert all(c.state == "running" and c.restart == "permanent" for c in info.values())


async def test_a_killed_replicas_request_is_retried_and_the_replica_restarted(
    handle: ServiceHandle,
) -> None:
    before = {name: c.restarts for name, c in (await replicas_info(handle)).items()}
    call = asyncio.ensure_future(handle.acall(text="slow", delay=1.0))
    await poll(lambda: asyncio.sleep(0, any(handle.in_flight().values())), 10, "the request to leave")
    victim = next(name for name, count in handle.in_flight().items() if count)
    actor = replica_actor(victim)

    async def running_there() -> bool:
        return (await actor.stats.remote())["in_flight"] == 1

    await poll(running_there, 10, "the request to run on its replica")
    victim_pid = (await actor.stats.remote())["pid"]
    ray.kill(actor)

    result = await asyncio.wait_for(call, 30)
    assert result.answer == "SLOW" and result.pid != victim_pid
    await wait_restarted(handle, {victim: before[victim] + 1})
    assert (await handle.acall(text="after")).answer == "AFTER"


async def test_a_request_that_kills_every_replica_becomes_a_dead_letter(
    handle: ServiceHandle,
) -> None:
    before = {name: c.restarts for name, c in (await replicas_info(handle)).items()}
    marker = uuid.uuid4().hex
    with pytest.raises(ReplicaDiedError) as info:
        await handle.acall(text=marker, crash=True, api_key="sk-not-for-the-queue")
    assert info.value.attempts == 2 and info.value.service == handle.name

    letters = [d for d in dead_letters() if d.input.get("text") == marker]
    assert len(letters) == 1
    letter = letters[0]
    assert letter.source == f"dspex.serve.{handle.name}" and letter.attempts == 2
    assert letter.error_type.endswith("ReplicaDiedError")
    assert letter.input["api_key"] == "[REDACTED]" and letter.input["crash"] is True
    assert runtime.status()["dead_letters"]["count"] >= 1

    # Both replicas died (one per attempt) and both come back.
    await wait_restarted(handle, {name: count + 1 for name, count in before.items()})
    assert (await handle.acall(text="alive")).answer == "ALIVE"
    assert "restarts=" in runtime.status()["tree_text"]


async def test_program_errors_reach_the_caller_unretried(handle: ServiceHandle) -> None:
    before = {name: c.restarts for name, c in (await replicas_info(handle)).items()}
    with pytest.raises(ValueError, match="bad text 'x'"):
        await handle.acall(text="x", fail="value")
    with pytest.raises(RemoteProgramError, match="KeywordOnlyError: failed: y"):
        await handle.acall(text="y", fail="keyword")
    assert {n: c.restarts for n, c in (await replicas_info(handle)).items()} == before
    assert not [d for d in dead_letters() if d.input.get("text") in ("x", "y")]


async def test_serving_a_taken_name_fails_and_stop_removes_the_replicas(
    handle: ServiceHandle,
) -> None:
    with pytest.raises(ConfigurationError, match="already served"):
        serve(Echo(), name=handle.name, replicas=1)
    extra = serve(Echo(), name=f"extra-{uuid.uuid4().hex[:6]}", replicas=1, retry_on_replica_death=False)
    assert extra.retries == 0
    assert (await extra.acall(text="one")).answer == "ONE"
    extra.stop()
    assert not await replicas_info(extra)
    assert (await handle.acall(text="still")).answer == "STILL"  # the other service is untouched
