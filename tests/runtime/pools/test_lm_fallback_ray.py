"""Provider fallback through the provider pools (lease mode): each LM its own pool and breaker.

Uses the session's `ray_cluster` (tests/conftest.py). The primary's endpoint is a
closed port (connection refused) or a simulated LM in an outage; the fallback is
another simulated LM. Each test stops the pools it started.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import dspex
from dspex.clients import cache as cache_module
from dspex.clients import dispatch
from dspex.clients.cache import LMCache
from dspex.clients.lm import LM
from dspex.clients.retry import RetryPolicy
from dspex.runtime.evaluation.eval_worker import EvalWorkerPool
from dspex.runtime.evaluation.ray_runner import RunOptions, run_ray
from dspex.runtime.pools import pool_client
from dspex.runtime.pools.lease_client import flush_leases
from dspex.runtime.pools.pool_client import pool_stats, start_pool, stop_pool
from dspex.simlm import spawn_sim_lm

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def route(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """Routing through the pools in this process (restored after the test), a fresh
    memory-only cache."""
    monkeypatch.setattr(dispatch, "_installed", dispatch.current_dispatcher())
    monkeypatch.setattr(pool_client, "_mode", pool_client._mode)
    monkeypatch.setattr(cache_module, "_default", LMCache(enable_disk=False))
    pool_client.enable_pools(mode=mode)  # type: ignore[arg-type]


@pytest.fixture
def leased(ray_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lease mode (the default): this process sends, its pools hold the shared state."""
    route(monkeypatch, "lease")


@pytest.fixture(params=["lease", "stream"])
def pools(request: pytest.FixtureRequest, ray_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each mode: "stream" sends the request to the pool, which makes the call."""
    route(monkeypatch, request.param)
    return str(request.param)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fast_retries(num_retries: int) -> RetryPolicy:
    return RetryPolicy(num_retries=num_retries, base=0.005, cap=0.05, retry_after_cap=0.05)


async def stats_of(lm: LM) -> dict[str, Any]:
    await flush_leases()
    return await asyncio.to_thread(pool_stats, lm)


async def poll(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def answered(example: Any, prediction: Any) -> bool:
    return prediction.answer == f"Answer for: {example.question}"


# Without failing fast, batch work would wait for the primary's open circuit (up to the
# pool's max_circuit_wait, 120 s) on every example: the timeout catches that.
@pytest.mark.timeout(120)
async def test_an_evaluation_on_eval_workers_with_a_dead_primary_answers_from_the_fallback(
    leased: None,
) -> None:
    size = 40
    devset = [dspex.Example(question=f"q{i}").with_inputs("question") for i in range(size)]
    workers = EvalWorkerPool(actor_options={})
    with spawn_sim_lm(seed=21) as backup_server:
        backup = LM("anthropic/claude-sim", api_base=backup_server.url, cache=False)
        backup.retry_policy = fast_retries(2)
        lm = LM(
            "openai/primary",
            api_base=f"http://127.0.0.1:{closed_port()}/v1",
            cache=False,
            fallbacks=[backup],
        )
        lm.retry_policy = fast_retries(1)
        try:
            await asyncio.to_thread(start_pool, lm, fail_max=3, reset_timeout=30.0)
            await asyncio.to_thread(start_pool, backup)
            with dspex.context(lm=lm):
                outcome = await run_ray(
                    dspex.Predict("question -> answer"),
                    answered,
                    devset,
                    RunOptions(num_threads=8, max_errors=None),
                    workers=1,
                    pool=workers,
                )

            async def all_reported() -> bool:
                return (await stats_of(backup))["requests"] >= size

            await poll(all_reported, 10.0, "every request in the fallback pool's stats")
            primary_stats, backup_stats = await stats_of(lm), await stats_of(backup)
        finally:
            workers.shutdown()
            stop_pool(lm)
            stop_pool(backup)
    assert not outcome.failures, [f.describe() for f in outcome.failures[:5]]
    assert len(outcome.results) == size and all(row[2] == 1.0 for row in outcome.results)
    assert backup_stats["requests"] == size and backup_stats["errors"] == 0
    # The primary's own pool and breaker: opened by the refused connections, then
    # failing fast so that the rest went straight to the fallback.
    assert primary_stats["breaker"] == "open"
    assert primary_stats["calls"] < size


async def test_through_the_pools_the_primary_gets_traffic_back_after_its_probe(
    pools: str,
) -> None:
    with spawn_sim_lm(seed=22) as primary_server, spawn_sim_lm(seed=23) as backup_server:
        backup = LM("anthropic/claude-sim", api_base=backup_server.url, cache=False)
        lm = LM(
            "openai/primary", api_base=primary_server.url, cache=False, num_retries=0,
            fallbacks=[backup],
        )
        try:
            await asyncio.to_thread(start_pool, lm, fail_max=2, reset_timeout=0.5)
            primary_server.set_faults(outage=True, retry_after=None)  # every request: 503
            for i in range(3):
                await lm.acall(f"during {i}")
                assert lm.history[-1]["model"] == "anthropic/claude-sim"
            assert (await stats_of(lm))["breaker"] == "open"
            assert lm.history[-1]["fallback_from"][0]["error"] == "CircuitOpenError"

            primary_server.set_faults()  # the outage is over
            n = 0

            async def back_on_primary() -> bool:
                nonlocal n
                n += 1
                await lm.acall(f"after {n}")
                return lm.history[-1]["model"] == "openai/primary"

            await poll(back_on_primary, 15.0, "the primary to answer after its probe")
            assert (await stats_of(lm))["breaker"] == "closed"
        finally:
            stop_pool(lm)
            stop_pool(backup)
