"""Provider pools on real Ray: routing, breaker, cluster-wide rate limit, single-flight, failover,
and evaluations that lose nothing to a flaky provider.

Uses the session's `ray_cluster` (tests/conftest.py). Each test talks to its
own simulated LM subprocess, so each gets its own pool (the pool name derives
from the api_base), and stops that pool at the end.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

import dspex
from dspex.clients import cache as cache_module
from dspex.clients import dispatch
from dspex.clients.cache import LMCache
from dspex.clients.lm import LM
from dspex.clients.retry import RetryPolicy
from dspex.clients.types import LMResponse
from dspex.errors import CircuitOpenError, LMServerError
from dspex.primitives.workload import batch_work
from dspex.runtime.evaluation.eval_worker import EvalWorkerPool
from dspex.runtime.evaluation.ray_runner import RunOptions, run_ray
from dspex.runtime.pools import pool_client
from dspex.runtime.pools.lease_client import flush_leases
from dspex.runtime.pools.pool_client import pool_name, pool_stats, start_pool, stop_pool
from dspex.simlm import spawn_sim_lm
from dspex.simlm.process import SimLMProcess

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RPM = 1200  # 20 requests/s
WINDOW_SECONDS = 8.0


@pytest.fixture
def sim() -> Iterator[SimLMProcess]:
    with spawn_sim_lm(seed=5) as server:
        yield server


@pytest.fixture(params=["lease", "stream"])
def pools(request: pytest.FixtureRequest, ray_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Routing on in this process in each mode, a fresh memory-only cache; restored afterwards.

    "lease": this process makes the HTTP calls under the pool's leases; "stream": the pool
    makes them. Both must hold the same limits and lose nothing."""
    monkeypatch.setattr(dispatch, "_installed", dispatch.current_dispatcher())
    monkeypatch.setattr(pool_client, "_mode", pool_client._mode)
    monkeypatch.setattr(cache_module, "_default", LMCache(enable_disk=False))
    pool_client.enable_pools(mode=request.param)
    yield request.param


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def poll(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def stats_of(lm: LM) -> dict[str, Any]:
    await flush_leases()  # this process's lease reports reach the pool first
    return await asyncio.to_thread(pool_stats, lm)


# --- callers in other processes ------------------------------------------------------


def caller_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class Caller:
        """Calls an LM from its own process, with pool routing on via dspex's setup hook."""

        def __init__(self, mode: str) -> None:
            from dspex.clients.cache import configure_cache
            from dspex.runtime.pools.pool_client import enable_pools
            from dspex.runtime.worker_setup import setup_worker

            configure_cache(enable_disk=False)
            setup_worker()  # what dspex's hook does in a job's workers (one per job only)
            enable_pools(mode=mode)  # type: ignore[arg-type]  # the mode under test
            self._tasks: list[asyncio.Task[None]] = []
            self.count = 0

        async def call(self, lm: LM, text: str) -> LMResponse:
            return await lm.acomplete(ask(text))

        async def start(self, lm: LM, concurrency: int) -> bool:
            async def loop(worker: int) -> None:
                i = 0
                while True:
                    await lm.acomplete(ask(f"{uuid.uuid4()} {worker} {i}"))
                    self.count += 1
                    i += 1

            self._tasks = [asyncio.ensure_future(loop(w)) for w in range(concurrency)]
            return pool_client.pool_routing_enabled()

        async def stop(self) -> int:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            return self.count

    return Caller


def start_caller(mode: str, node_id: str | None = None) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    options: dict[str, Any] = {}
    if node_id is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
    return caller_class().options(**options).remote(mode)


# --- tests ----------------------------------------------------------------------------


async def test_routed_requests_match_in_process_and_cache_stays_in_front(
    pools: str, sim: SimLMProcess
) -> None:
    lm = LM("openai/sim", api_base=sim.url, temperature=0.0)
    prompts = [f"routing question {i}" for i in range(25)]
    try:
        pool_client.disable_pools()
        expected = [(await lm.acomplete(ask(p), cache=False)).outputs for p in prompts]
        pool_client.enable_pools()
        responses = await asyncio.gather(*(lm.acomplete(ask(p)) for p in prompts))
        assert [r.outputs for r in responses] == expected
        assert all(not r.cached and r.usage.calls == 1 for r in responses)
        stats = await stats_of(lm)
        assert stats["requests"] == len(prompts) and stats["calls"] == len(prompts)
        if pools == "stream":
            assert stats["batches"] == 1  # issued in one tick: one actor call
        else:
            assert stats["batches"] == 0  # leases: this process made the calls itself
            assert 1 <= stats["leases"] <= 3  # one lease for all 25, a report, maybe one more

        again = await asyncio.gather(*(lm.acomplete(ask(p)) for p in prompts))
        assert all(r.cached for r in again)
        assert (await stats_of(lm))["requests"] == len(prompts)  # hits never reached the pool
    finally:
        stop_pool(lm)


async def test_breaker_opens_in_an_outage_fails_fast_and_closes_after(
    pools: str, sim: SimLMProcess
) -> None:
    lm = LM("openai/sim", api_base=sim.url, cache=False, num_retries=0)
    await asyncio.to_thread(start_pool, lm, fail_max=3, reset_timeout=1.0)
    try:
        assert (await lm.acomplete(ask("before"))).outputs
        sim.set_faults(outage=True, retry_after=None)
        for i in range(3):
            with pytest.raises(LMServerError):
                await lm.acomplete(ask(f"during {i}"))
        sent = sim.stats()["total"]
        started = time.monotonic()
        with pytest.raises(CircuitOpenError) as info:
            await lm.acomplete(ask("fail fast"))
        assert time.monotonic() - started < 0.5
        assert info.value.retry_after is not None and info.value.retry_after <= 1.0
        assert sim.stats()["total"] == sent  # the provider was not called
        assert (await stats_of(lm))["breaker"] == "open"

        sim.set_faults()  # outage over

        async def recovered() -> bool:
            try:
                await lm.acomplete(ask(f"after {time.monotonic()}"))
            except CircuitOpenError:
                return False
            return True

        await poll(recovered, 10.0, "the breaker to close after the outage")
        assert (await stats_of(lm))["breaker"] == "closed"
    finally:
        stop_pool(lm)


def fast_retries(num_retries: int) -> RetryPolicy:
    # Quick backoff keeps the tests short; the schedule itself is tested in tests/providers.
    return RetryPolicy(num_retries=num_retries, base=0.005, cap=0.05, retry_after_cap=0.05)


async def test_in_an_outage_serving_fails_fast_and_batch_work_waits_for_the_probe(
    pools: str, sim: SimLMProcess
) -> None:
    lm = LM("openai/sim", api_base=sim.url, cache=False, num_retries=0)
    batch_lm = lm.copy()
    batch_lm.retry_policy = fast_retries(5)
    await asyncio.to_thread(start_pool, lm, fail_max=3, reset_timeout=1.0)
    batch: list[asyncio.Future[LMResponse]] = []
    try:
        sim.set_faults(outage=True, retry_after=None)
        for i in range(3):
            with pytest.raises(LMServerError):
                await lm.acomplete(ask(f"during {i}"))
        assert (await stats_of(lm))["breaker"] == "open"  # opened within fail_max calls

        with batch_work():  # tasks copy the context they are created in
            batch = [asyncio.ensure_future(batch_lm.acomplete(ask(f"eval {i}"))) for i in range(8)]
        with pytest.raises(CircuitOpenError):  # serving, meanwhile, fails fast
            await lm.acomplete(ask("serving"))

        async def probed_and_waiting() -> bool:
            stats = await stats_of(lm)
            sent = (await asyncio.to_thread(sim.stats))["total"]
            return sent > 3 and stats["circuit_waiting"] > 0 and not any(t.done() for t in batch)

        # A probe went out and failed, and the batch requests wait on.
        await poll(probed_and_waiting, 20.0, "a failed probe with batch requests waiting")
        sim.set_faults()  # the outage ends
        responses = await asyncio.wait_for(asyncio.gather(*batch), 30.0)
        assert all(r.outputs for r in responses)
        assert (await stats_of(lm))["breaker"] == "closed"
    finally:
        for task in batch:
            task.cancel()
        stop_pool(lm)


def answered(example: Any, prediction: Any) -> bool:
    return prediction.answer == f"Answer for: {example.question}"


@pytest.mark.parametrize("error_rate", [0.2, 0.3])
async def test_an_evaluation_through_the_pool_loses_nothing_to_random_errors(
    pools: str, error_rate: float
) -> None:
    # Random 429s and 500s at 64 requests in flight: the breaker must see a flaky
    # provider, not a down one, and every example must be scored.
    size = 2000
    faults = {"error_500_rate": error_rate / 2, "error_429_rate": error_rate / 2, "retry_after": 0}
    devset = [dspex.Example(question=f"q{i}").with_inputs("question") for i in range(size)]
    workers = EvalWorkerPool(actor_options={})
    with spawn_sim_lm(seed=11, faults=faults) as flaky:
        lm = LM("openai/sim", api_base=flaky.url, cache=False)
        lm.retry_policy = fast_retries(10)
        try:
            # A short reset timeout bounds the test should the circuit ever open.
            await asyncio.to_thread(start_pool, lm, reset_timeout=1.0)
            with dspex.context(lm=lm):
                outcome = await run_ray(
                    dspex.Predict("question -> answer"),
                    answered,
                    devset,
                    RunOptions(num_threads=64, max_errors=None),
                    workers=1,
                    pool=workers,
                )
            served = await asyncio.to_thread(flaky.stats)

            async def all_reported() -> bool:
                # Lease mode: the worker's last report arrives a lease period after it idles.
                return (await stats_of(lm))["requests"] >= size

            await poll(all_reported, 10.0, "every request in the pool's stats")
            stats = await stats_of(lm)
        finally:
            workers.shutdown()
            stop_pool(lm)
    assert not outcome.failures, [f.describe() for f in outcome.failures[:5]]
    assert len(outcome.results) == size and all(row[2] == 1.0 for row in outcome.results)
    assert stats["errors"] == 0 and stats["requests"] == size
    by_status = {str(k): v for k, v in served["by_status"].items()}
    injected = by_status.get("500", 0) + by_status.get("429", 0)
    assert injected > size * error_rate * 0.8  # the faults were there to survive


async def test_rate_limit_holds_cluster_wide_across_processes_and_nodes(
    ray_cluster: Any, pools: str, sim: SimLMProcess
) -> None:
    import ray

    lm = LM("openai/sim", api_base=sim.url, cache=False, rpm=RPM)
    # A second node on the head's address (127.0.0.1): callers on two nodes, one pool.
    worker = ray_cluster.add_node(num_cpus=1, node_ip_address=ray_cluster.head_node.node_ip_address)
    ray_cluster.wait_for_nodes()
    callers: list[Any] = []
    try:
        await asyncio.to_thread(start_pool, lm)
        head = ray.get_runtime_context().get_node_id()
        callers = [start_caller(pools, head), start_caller(pools, head), start_caller(pools, worker.node_id)]
        assert all(await asyncio.gather(*(c.start.remote(lm, 10) for c in callers)))

        async def past_the_burst() -> bool:
            return (await stats_of(lm))["requests"] > RPM / 60 * 2

        await poll(past_the_burst, 30.0, "the callers to get going")
        # Measure the steady rate (the first second's burst is allowed and excluded).
        await asyncio.to_thread(sim.reset_stats)
        started = time.monotonic()
        while time.monotonic() - started < WINDOW_SECONDS:
            await asyncio.sleep(0.2)  # a measurement window, not a synchronisation
        total = (await asyncio.to_thread(sim.stats))["total"]
        elapsed = time.monotonic() - started
        counts = await asyncio.gather(*(c.stop.remote() for c in callers))
        rate = total / elapsed
        assert abs(rate - RPM / 60) <= 0.05 * RPM / 60, (rate, counts)
        assert all(count > 0 for count in counts)  # every process got its share through

        async def drained() -> bool:
            # Cancelled callers' requests still run in the pool (at the limit), then stop.
            stats = await stats_of(lm)
            return stats["queued"] == 0 and stats["in_flight"] == 0

        await poll(drained, 20.0, "the pool to drain its queue")
    finally:
        for caller in callers:
            ray.kill(caller)
        stop_pool(lm)
        ray_cluster.remove_node(worker)


async def test_identical_requests_from_two_processes_share_one_call(pools: str) -> None:
    if pools == "lease":
        pytest.skip("lease mode makes each process's calls itself: sharing is per process")
    import ray

    with spawn_sim_lm(seed=6, latency_ms=1500) as slow:
        lm = LM("openai/sim", api_base=slow.url, rollout_id=str(uuid.uuid4()))
        callers = [start_caller(pools), start_caller(pools)]
        try:
            await asyncio.to_thread(start_pool, lm)
            # Warm both processes (routing on, pool handle resolved) with other prompts.
            await asyncio.gather(*(c.call.remote(lm, f"warm {i}") for i, c in enumerate(callers)))
            await asyncio.to_thread(slow.reset_stats)
            first, second = await asyncio.gather(
                *(c.call.remote(lm, "the same question") for c in callers)
            )
            assert slow.stats()["total"] == 1
            assert first.outputs == second.outputs
            assert sorted([first.cached, second.cached]) == [False, True]
            assert (await stats_of(lm))["shared"] == 1
        finally:
            for caller in callers:
                ray.kill(caller)
            stop_pool(lm)


async def test_a_pool_killed_mid_flight_is_re_resolved_and_requests_complete(
    pools: str,
) -> None:
    import ray

    with spawn_sim_lm(seed=7, latency_ms=800) as slow:
        lm = LM("openai/sim", api_base=slow.url, cache=False)
        name = pool_name("openai", "sim", slow.url)
        try:
            first = await asyncio.to_thread(start_pool, lm)
            calls = [asyncio.ensure_future(lm.acomplete(ask(f"q{i}"))) for i in range(30)]

            async def in_flight() -> bool:
                return (await asyncio.to_thread(slow.stats))["in_flight"] > 0

            await poll(in_flight, 20.0, "requests in flight at the server")
            ray.kill(first, no_restart=True)
            responses = await asyncio.wait_for(asyncio.gather(*calls), 60.0)
            assert all(isinstance(r, LMResponse) and r.outputs for r in responses)
            # Lease mode: the calls were this process's; its next lease comes from a new pool.
            assert (await lm.acomplete(ask("after the kill"))).outputs
            replacement = ray.get_actor(name, namespace=pool_client.NAMESPACE)
            assert replacement._actor_id != first._actor_id
        finally:
            stop_pool(lm)
