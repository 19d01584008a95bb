"""Hot swap of a served program on real Ray: a rolling update and a rollback under a
bounded load lose no request and every answer comes from a version active while
its request ran; a state-only update keeps the processes; a replica killed during
an update comes back on the new version; the status tree shows the versions.

Uses the session's ``ray_cluster`` (tests/conftest.py) and one runtime for the module.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import ray

from dspex import runtime
from dspex.errors import ServiceUpdateError
from dspex.modules.predict import Predict
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.runtime.names import NAMESPACE
from dspex.runtime.serve import ServiceHandle, serve
from dspex.runtime.supervision.application import SERVICES

pytestmark = [pytest.mark.ray, pytest.mark.slow]


class Versioned(Module):
    """Answers with its ``marker`` (which version of the code ran) and how many demos its
    predictor holds (which learned state ran); never calls an LM."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.tag = Predict("text -> answer")

    async def aforward(self, text: str, delay: float = 0.0) -> Prediction:
        await asyncio.sleep(delay)
        return Prediction(
            answer=text.upper(), marker=self.marker, demos=len(self.tag.demos), pid=os.getpid()
        )


@pytest.fixture(scope="module")
def up(ray_cluster: Any) -> Iterator[None]:
    assert runtime.current() is None, "another test left the runtime up"
    runtime.init()
    try:
        yield
    finally:
        runtime.shutdown(stop_tree=True)


@pytest.fixture
def handle(up: None) -> Iterator[ServiceHandle]:
    served = serve(Versioned("v1"), name=f"ver-{uuid.uuid4().hex[:6]}", replicas=2, use_pools=False)
    try:
        yield served
    finally:
        served.stop()


async def poll(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def children(handle: ServiceHandle) -> dict[str, Any]:
    services = ray.get_actor(SERVICES, namespace=NAMESPACE)
    return {c.name: c for c in await services.which_children.remote() if c.name in handle.replicas}


async def test_update_and_rollback_under_load_lose_nothing(handle: ServiceHandle) -> None:
    # Which markers a request may answer with, by the phase it started in: during a
    # rolling update both versions serve; outside one, only the active version.
    allowed = {"v1": {"v1"}, "updating": {"v1", "v2"}, "v2": {"v2"}, "rolling back": {"v1", "v2"}}
    phase = "v1"
    results: list[tuple[str, str]] = []
    failures: list[BaseException] = []
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int) -> None:
        started_in = phase
        try:
            answer = await handle.acall(text=f"q{i}", delay=0.2)
        except BaseException as exc:  # every failure is counted, none may happen
            failures.append(exc)
            return
        assert answer.answer == f"Q{i}"
        results.append((started_in, answer.marker))

    def burst(count: int) -> None:  # hundreds in flight at once
        tasks.extend(asyncio.ensure_future(one(len(tasks) + k)) for k in range(count))

    async def trickle(stop: asyncio.Event) -> None:  # a steady stream meanwhile
        while not stop.is_set():
            tasks.append(asyncio.ensure_future(one(len(tasks))))
            await asyncio.sleep(0.02)

    def started_in(name: str) -> Callable[[], Awaitable[bool]]:
        async def enough() -> bool:
            return sum(1 for p, _ in results if p == name) >= 40

        return enough

    stop = asyncio.Event()
    feeder = asyncio.ensure_future(trickle(stop))
    burst(150)
    await poll(started_in("v1"), 30, "answers before the update")

    phase = "updating"
    burst(150)
    assert await handle.aupdate(Versioned("v2")) == 2
    phase = "v2"
    burst(100)
    await poll(started_in("v2"), 30, "answers after the update")
    assert set((await handle.aversions()).values()) == {2}

    phase = "rolling back"
    burst(150)
    assert await handle.arollback() == 1
    phase = "v1"
    burst(100)
    await poll(lambda: asyncio.sleep(0, sum(1 for p, _ in results if p == "v1") >= 200), 30, "answers after")
    stop.set()
    await feeder
    await asyncio.gather(*tasks)

    assert not failures, f"{len(failures)} requests failed, first: {failures[0]!r}"
    assert len(results) == len(tasks) >= 650
    wrong = [(p, m) for p, m in results if m not in allowed[p]]
    assert not wrong, f"answers from a version not active when they started: {wrong[:5]}"
    assert {m for p, m in results if p in ("updating", "rolling back")} == {"v1", "v2"}
    assert set((await handle.aversions()).values()) == {1}
    with pytest.raises(ServiceUpdateError, match="no previous version"):
        await handle.arollback()  # one step back is kept, not a history


async def test_state_only_update_keeps_the_processes(handle: ServiceHandle) -> None:
    before = await asyncio.gather(*(handle.acall(text=f"a{i}") for i in range(10)))
    pids = {a.pid for a in before}
    assert len(pids) == 2 and {a.demos for a in before} == {0}

    compiled = Versioned("v1")
    compiled.tag.demos = [{"text": "x", "answer": "X"}, {"text": "y", "answer": "Y"}]
    assert await handle.aupdate(state=compiled.dump_state()) == 2
    after = await asyncio.gather(*(handle.acall(text=f"b{i}") for i in range(10)))
    assert {a.demos for a in after} == {2}
    assert {a.pid for a in after} == pids, "a state-only update restarted a replica"
    assert await handle.aversions() == dict.fromkeys(handle.replicas, 2)

    # A replica restarted later comes back with the new state: it is in the child spec.
    ray.kill(ray.get_actor(handle.replicas[0], namespace=NAMESPACE))
    restarted = handle.replicas[0]

    async def back() -> bool:
        info = (await children(handle))[restarted]
        return info.state == "running" and info.restarts >= 1

    await poll(back, 30, "the killed replica's restart")
    answers: list[Prediction] = []

    async def new_process_answered() -> bool:
        answers.extend(await asyncio.gather(*(handle.acall(text="c") for _ in range(4))))
        return bool({a.pid for a in answers} - pids)

    await poll(new_process_answered, 30, "an answer from the restarted replica")
    assert {a.demos for a in answers} == {2}
    assert await handle.arollback() == 1
    assert {a.demos for a in await asyncio.gather(*(handle.acall(text="d") for _ in range(6)))} == {0}


async def test_a_replica_killed_during_an_update_comes_back_on_the_new_version(
    handle: ServiceHandle,
) -> None:
    first, second = handle.replicas
    update = asyncio.ensure_future(handle.aupdate(Versioned("v2")))

    async def first_updated() -> bool:
        return (await handle.aversions())[first] == 2

    await poll(first_updated, 60, "the first replica to run the new version")
    ray.kill(ray.get_actor(first, namespace=NAMESPACE))  # while the second is being rolled
    calls = [asyncio.ensure_future(handle.acall(text=f"k{i}", delay=0.05)) for i in range(50)]
    assert await asyncio.wait_for(update, 60) == 2

    async def restarted() -> bool:
        info = (await children(handle))[first]
        return info.state == "running" and info.restarts >= 1

    await poll(restarted, 30, "the killed replica's restart")
    assert await handle.aversions() == {first: 2, second: 2}
    await asyncio.gather(*calls)  # none failed
    assert {a.marker for a in await asyncio.gather(*(handle.acall(text="z") for _ in range(10)))} == {"v2"}
    tree = runtime.status()["tree_text"]
    assert f"{first} [worker] running restarts=1 version=2" in tree
    assert f"{second} [worker] running version=2" in tree
    assert handle.version == 2
