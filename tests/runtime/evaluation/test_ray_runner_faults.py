"""The Ray runner under worker loss: killed workers, removed nodes, a worker-killing example.

Each example is scored or recorded exactly once. The programs make the loss
deterministic: examples running on the doomed worker (or node) never finish,
so that worker is guaranteed to hold chunks when it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import dspex
from dspex.clients.types import Usage
from dspex.runtime.evaluation.ray_runner import DispatchStats, EvalWorkerPool, RunOptions, run_ray

pytestmark = pytest.mark.ray


def devset(n: int) -> list[dspex.Example]:
    return [dspex.Example(question=str(i), answer=str(i)).with_inputs("question") for i in range(n)]


def exact(example: Any, pred: Any) -> bool:
    return example.answer == pred.answer


class Counter:
    """Counts program calls per example index, across worker processes, and
    which examples are being held on a doomed worker."""

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}
        self.holding: list[int] = []

    def hit(self, index: int) -> None:
        self.calls[index] = self.calls.get(index, 0) + 1

    def hold(self, index: int) -> None:
        self.holding.append(index)

    def counts(self) -> dict[int, int]:
        return dict(self.calls)

    def held(self) -> list[int]:
        return list(self.holding)


class Doomed(dspex.Module):
    """Echoes, except that on the doomed actor or node it never returns."""

    def __init__(self, counter: Any, *, actor: str = "", node: str = "") -> None:
        self.counter = counter
        self.actor = actor
        self.node = node

    async def aforward(self, question: str) -> dspex.Prediction:
        await self.counter.hit.remote(int(question))
        context = ray.get_runtime_context()
        if context.get_actor_id() == self.actor or context.get_node_id() == self.node:
            await self.counter.hold.remote(int(question))
            await asyncio.Event().wait()  # held until the worker dies
        return dspex.Prediction(answer=question)


class OnProgress:
    """A Progress that calls `hook` once, after `after` examples are done."""

    def __init__(self, after: int, hook: Callable[[], None]) -> None:
        self.after = after
        self.hook = hook
        self.done = 0

    def start(self, total: int | None) -> None:
        pass

    def advance(self, score: float, usage: Usage | None, error: bool) -> None:
        self.done += 1
        if self.done == self.after:
            self.hook()

    def close(self) -> None:
        pass


@pytest.fixture
def counter(ray_cluster: Any) -> Iterator[Any]:
    handle = ray.remote(Counter).options(num_cpus=0).remote()
    yield handle
    ray.kill(handle)


@pytest.fixture
def pool(ray_cluster: Any) -> Iterator[EvalWorkerPool]:
    pool = EvalWorkerPool()
    yield pool
    pool.shutdown()


def assert_each_scored_once(outcome: Any, data: list[dspex.Example]) -> None:
    assert [row[0] for row in outcome.results] == data
    assert all(row[2] == 1.0 for row in outcome.results)
    assert not outcome.failures


async def test_a_killed_worker_s_chunks_are_redispatched_and_counted_once(
    pool: EvalWorkerPool, counter: Any
) -> None:
    data = devset(200)
    doomed, healthy = pool.ensure(2)
    await asyncio.gather(doomed.ping.remote(), healthy.ping.remote())
    some_done = asyncio.Event()
    progress, stats = OnProgress(30, some_done.set), DispatchStats()

    async def kill_once_it_holds_examples() -> None:
        await some_done.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not await counter.held.remote():
            assert loop.time() < deadline, "the doomed worker never started an example"
            await asyncio.sleep(0.02)  # poll interval
        ray.kill(doomed)

    killer = asyncio.ensure_future(kill_once_it_holds_examples())
    try:
        outcome = await run_ray(
            Doomed(counter, actor=doomed._actor_id.hex()),
            exact,
            data,
            RunOptions(num_threads=16, max_errors=0),
            progress,
            workers=2,
            pool=pool,
            stats=stats,
        )
    finally:
        killer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await killer

    assert_each_scored_once(outcome, data)
    assert progress.done == 200
    calls = await counter.counts.remote()
    held = set(await counter.held.remote())
    assert set(calls) == set(range(200))
    # What the killed worker held ran again elsewhere, yet was counted once.
    assert held and {i for i, n in calls.items() if n == 2} == held
    assert set(calls.values()) == {1, 2}
    assert stats.chunks_lost >= 1 and stats.workers_replaced == 1
    assert doomed not in pool.workers


async def test_a_removed_node_s_chunks_are_redispatched(
    ray_cluster: Any, pool: EvalWorkerPool, counter: Any
) -> None:
    node = ray_cluster.add_node(
        num_cpus=1, resources={"evaluate_doomed": 1}, node_ip_address="127.0.0.1"
    )
    ray_cluster.wait_for_nodes()
    head = ray.get_runtime_context().get_node_id()
    on_doomed = pool.add(resources={"evaluate_doomed": 1})
    pool.add(scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False))
    doomed_node = await on_doomed.ping.remote()
    assert doomed_node != head
    data = devset(240)
    half_done = asyncio.Event()
    progress, stats = OnProgress(40, half_done.set), DispatchStats()

    async def remove_node_when_half_done() -> None:
        await half_done.wait()
        await asyncio.to_thread(ray_cluster.remove_node, node)

    remover = asyncio.ensure_future(remove_node_when_half_done())
    try:
        outcome = await run_ray(
            Doomed(counter, node=doomed_node),
            exact,
            data,
            RunOptions(num_threads=16, max_errors=0),
            progress,
            workers=2,
            pool=pool,
            stats=stats,
        )
    finally:
        if not half_done.is_set():  # the run failed early: leave no node behind
            remover.cancel()
            ray_cluster.remove_node(node)
        with contextlib.suppress(asyncio.CancelledError):
            await remover

    assert_each_scored_once(outcome, data)
    assert stats.chunks_lost >= 1 and stats.workers_replaced >= 1
    calls = await counter.counts.remote()
    assert set(calls) == set(range(240))


async def test_an_example_that_kills_its_worker_is_recorded_and_spares_the_rest(
    pool: EvalWorkerPool,
) -> None:
    class Poison(dspex.Module):
        async def aforward(self, question: str) -> dspex.Prediction:
            if question == "13":
                os._exit(1)  # a crash no exception handler sees
            await asyncio.sleep(0.005)  # keeps other chunks in flight beside it
            return dspex.Prediction(answer=question)

    data = devset(60)
    stats = DispatchStats()

    outcome = await run_ray(
        Poison(),
        exact,
        data,
        RunOptions(num_threads=8, max_errors=None),
        workers=2,
        pool=pool,
        stats=stats,
        max_attempts=3,
    )

    assert [row[0] for row in outcome.results] == data
    [failure] = outcome.failures
    assert failure.index == 13 and failure.error_type == "WorkerLostError"
    assert "died 3 times" in failure.message
    assert all(row[2] == 1.0 for i, row in enumerate(outcome.results) if i != 13)
    assert stats.workers_replaced == 3
