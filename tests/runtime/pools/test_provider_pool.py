"""ProviderPool as a plain object (no Ray) against the simulated LM over real HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

import pytest

from dspex.clients import dispatch
from dspex.clients.lm import LM
from dspex.clients.retry import RetryPolicy
from dspex.clients.transport import HTTPResponse
from dspex.clients.types import LMResponse, Usage
from dspex.errors import (
    CircuitOpenError,
    ConfigurationError,
    LMAuthError,
    LMServerError,
    LMTimeoutError,
)
from dspex.primitives.workload import batch_work, interactive_work
from dspex.runtime.pools import pool_client
from dspex.runtime.pools.pool_client import pool_config, pool_name, pool_spec, request_deadline
from dspex.runtime.pools.provider_pool import Outcome, PoolConfig, PoolRequest, ProviderPool
from dspex.simlm import start_sim_lm
from dspex.simlm.server import SimLMServer

SECRET = "sk-test-secret-0123456789"


@pytest.fixture
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm(seed=3) as server:
        yield server


@pytest.fixture
def slow_sim() -> Iterator[SimLMServer]:
    with start_sim_lm(seed=3, latency_ms=300) as server:
        yield server


def config(server: SimLMServer, provider: str = "openai", **overrides: Any) -> PoolConfig:
    return PoolConfig(
        provider=provider,
        model=f"{provider}/sim",
        model_name="sim",
        api_base=server.url,
        **overrides,
    )


def request(text: str, *, key: str | None = None, **kwargs: Any) -> PoolRequest:
    return PoolRequest(messages=[{"role": "user", "content": text}], params={}, key=key, **kwargs)


async def collect(stream: AsyncIterator[list[tuple[int, Outcome]]]) -> list[Outcome]:
    results: dict[int, Outcome] = {}
    async for chunk in stream:
        for index, outcome in chunk:
            assert index not in results
            results[index] = outcome
    return [results[i] for i in sorted(results)]


async def test_batch_gives_the_same_outputs_as_the_lm_in_process(sim: SimLMServer) -> None:
    lm = LM("openai/sim", api_base=sim.url, cache=False)
    prompts = [f"question {i}" for i in range(20)]
    expected = [(await lm.acomplete([{"role": "user", "content": p}])).outputs for p in prompts]
    pool = ProviderPool(config(sim))
    outcomes = await collect(pool.complete_batch([request(p) for p in prompts]))
    assert all(isinstance(o, LMResponse) for o in outcomes)
    assert [o.outputs for o in outcomes] == expected  # type: ignore[union-attr]
    assert [o.outputs for o in await pool.complete_all([request(p) for p in prompts])] == expected  # type: ignore[union-attr]
    stats = await pool.stats()
    assert stats["calls"] == 40 and stats["requests"] == 40 and stats["errors"] == 0
    assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0
    assert stats["in_flight"] == 0 and stats["queued"] == 0
    assert stats["breaker"] == "closed"


async def test_n_is_fanned_out_for_providers_without_it(sim: SimLMServer) -> None:
    pool = ProviderPool(config(sim, provider="anthropic"))
    [outcome] = await pool.complete_all(
        [
            PoolRequest(
                messages=[{"role": "user", "content": "hi"}], params={"n": 3, "max_tokens": 50}
            )
        ]
    )
    assert isinstance(outcome, LMResponse)
    assert len(outcome.outputs) == 3 and outcome.usage.calls == 3
    assert sim.stats()["total"] == 3


async def test_errors_come_back_as_values_and_the_key_goes_nowhere() -> None:
    with start_sim_lm(seed=1, api_key=SECRET) as server:
        pool = ProviderPool(config(server))
        good = await collect(pool.complete_batch([request("a"), request("b")], SECRET))
        assert all(isinstance(o, LMResponse) for o in good)
        bad = await pool.complete_all([request("a"), request("b")], "sk-wrong")
        assert all(isinstance(o, LMAuthError) for o in bad)
        stats = await pool.stats()
        assert stats["errors"] == 2
        assert SECRET not in repr(stats)
        assert SECRET not in repr(vars(pool))  # not kept once the batch is done
        assert all(SECRET not in str(o) for o in bad)


async def test_identical_requests_in_flight_share_one_call(slow_sim: SimLMServer) -> None:
    pool = ProviderPool(config(slow_sim))
    first, second = await asyncio.gather(
        pool.complete_all([request("same", key="k1")], "key-a"),
        pool.complete_all([request("same", key="k1")], "key-a"),
    )
    assert slow_sim.stats()["total"] == 1
    assert first[0].outputs == second[0].outputs  # type: ignore[union-attr]
    # The follower's response is marked shared: it cost nothing.
    assert sorted(o[0].usage.calls for o in (first, second)) == [0, 1]  # type: ignore[union-attr]
    assert (await pool.stats())["shared"] == 1


async def test_requests_with_other_keys_or_no_key_are_not_shared(slow_sim: SimLMServer) -> None:
    pool = ProviderPool(config(slow_sim))
    await asyncio.gather(
        pool.complete_all([request("same", key="k1")], "key-a"),
        pool.complete_all([request("same", key="k1")], "key-b"),  # another credential
        pool.complete_all([request("same")], "key-a"),  # no cache key: never shared
    )
    assert slow_sim.stats()["total"] == 3


async def test_batch_and_interactive_requests_do_not_share_a_call(slow_sim: SimLMServer) -> None:
    # One would inherit the other's choice: a fail-fast error, or a long wait.
    pool = ProviderPool(config(slow_sim))
    await asyncio.gather(
        pool.complete_all([request("same", key="k1")], "key-a"),
        pool.complete_all([request("same", key="k1", wait_for_circuit=True)], "key-a"),
    )
    assert slow_sim.stats()["total"] == 2


def test_a_negative_circuit_wait_is_refused(sim: SimLMServer) -> None:
    with pytest.raises(ConfigurationError, match="max_circuit_wait must be >= 0"):
        config(sim, max_circuit_wait=-1.0)


async def test_breaker_opens_during_an_outage_and_fails_fast(sim: SimLMServer) -> None:
    from dspex.runtime.supervision.events import Event, subscribe

    events: list[Event] = []
    pool = ProviderPool(config(sim, fail_max=3, reset_timeout=60.0), name="pool-under-test")
    subscription = subscribe(events.append, ["breaker.*"], remote=False)
    sim.set_faults(outage=True, retry_after=None)
    outcomes = await pool.complete_all([request(f"q{i}", num_retries=0) for i in range(3)])
    assert all(isinstance(o, LMServerError) for o in outcomes)
    assert (await pool.stats())["breaker"] == "open"
    before = sim.stats()["total"]
    [fast] = await pool.complete_all([request("later", num_retries=2)])
    assert isinstance(fast, CircuitOpenError)
    assert fast.retry_after is not None and 0 < fast.retry_after <= 60.0
    assert sim.stats()["total"] == before  # nothing reached the provider
    subscription.unsubscribe()
    assert [(e.kind, e.source, e.data["old"], e.data["new"]) for e in events] == [
        ("breaker.state", "pool-under-test", "closed", "open")
    ]
    assert events[0].data["model"] == "openai/sim"


FAST_RETRIES = RetryPolicy(num_retries=5, base=0.005, cap=0.05, retry_after_cap=0.05)


async def until_true(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_batch_requests_wait_out_an_outage_while_interactive_ones_fail_fast(
    sim: SimLMServer,
) -> None:
    pool = ProviderPool(config(sim, fail_max=3, reset_timeout=1.0, max_circuit_wait=60.0))
    sim.set_faults(outage=True, retry_after=None)
    tripped = await pool.complete_all([request(f"trip {i}", num_retries=0) for i in range(3)])
    assert all(isinstance(o, LMServerError) for o in tripped)
    assert (await pool.stats())["breaker"] == "open"
    [interactive] = await pool.complete_all([request("serving", num_retries=2)])
    assert isinstance(interactive, CircuitOpenError)

    batch = asyncio.ensure_future(
        pool.complete_all(
            [request(f"eval {i}", retry_policy=FAST_RETRIES, wait_for_circuit=True) for i in range(10)]
        )
    )

    async def probed_and_waiting() -> bool:
        # A probe went out and failed (the outage goes on) and the batch still waits.
        stats = await pool.stats()
        return sim.stats()["total"] > 3 and stats["circuit_waiting"] > 0 and not batch.done()

    await until_true(probed_and_waiting, 20.0, "a failed probe with batch requests waiting")
    sim.set_faults()  # the outage ends
    outcomes = await asyncio.wait_for(batch, 30.0)
    assert all(isinstance(o, LMResponse) for o in outcomes), outcomes
    stats = await pool.stats()
    assert stats["breaker"] == "closed" and stats["circuit_waiting"] == 0


@pytest.mark.parametrize("limit", ["max_circuit_wait", "deadline"])
async def test_a_batch_request_fails_once_it_cannot_wait_for_the_next_probe(
    sim: SimLMServer, limit: str
) -> None:
    wait = {"max_circuit_wait": 0.5} if limit == "max_circuit_wait" else {}
    pool = ProviderPool(config(sim, fail_max=1, reset_timeout=30.0, **wait))
    sim.set_faults(outage=True, retry_after=None)
    await pool.complete_all([request("trip", num_retries=0)])
    deadline = {"deadline": time.time() + 0.5} if limit == "deadline" else {}
    [outcome] = await pool.complete_all([request("eval", wait_for_circuit=True, **deadline)])
    # The next probe is 30 s away and the request may wait 0.5 s: it fails now, not later.
    assert isinstance(outcome, CircuitOpenError)
    assert "gave up waiting" in str(outcome)
    assert outcome.retry_after is not None and outcome.retry_after > 25.0
    assert sim.stats()["total"] == 1


async def test_the_lm_s_backoff_travels_with_its_requests(sim: SimLMServer) -> None:
    lm = LM("openai/sim", api_base=sim.url, cache=False)
    lm.retry_policy = RetryPolicy(num_retries=9, base=0.001, cap=0.002)
    sent: list[PoolRequest] = []

    class Capture:
        async def submit(self, request: PoolRequest, api_key: str | None) -> Any:
            sent.append(request)
            return LMResponse(outputs=["x"], usage=Usage(1, 1, 1), model=lm.model)

    loop = asyncio.get_running_loop()
    name = pool_client.pool_name_of(lm)
    pool_client._batchers[(loop, name)] = Capture()  # type: ignore[assignment]
    try:
        await pool_client.route_through_pool(lm, [{"role": "user", "content": "q"}], {})
        with batch_work():
            await pool_client.route_through_pool(lm, [{"role": "user", "content": "q"}], {})
            with interactive_work():
                await pool_client.route_through_pool(lm, [{"role": "user", "content": "q"}], {})
    finally:
        del pool_client._batchers[(loop, name)]
    assert [r.retry_policy for r in sent] == [lm.retry_policy] * 3
    assert [r.num_retries for r in sent] == [9] * 3
    # Outside batch work a request fails fast; inside it waits; serving inside batch
    # work still fails fast.
    assert [r.wait_for_circuit for r in sent] == [False, True, False]


async def test_a_429_with_retry_after_pauses_the_whole_pool(sim: SimLMServer) -> None:
    pool = ProviderPool(config(sim))
    sim.set_faults(fail_first=1, fail_status=429, retry_after=0.3)
    [outcome] = await pool.complete_all([request("q", num_retries=0)])
    assert getattr(outcome, "status", None) == 429
    assert pool.limiter.paused_for() > 0.1  # every request now waits, not just this one


async def test_a_passed_deadline_is_not_sent(sim: SimLMServer) -> None:
    pool = ProviderPool(config(sim))
    [outcome] = await pool.complete_all([request("q", deadline=1.0)])  # 1970
    assert isinstance(outcome, LMTimeoutError)
    assert sim.stats()["total"] == 0


def test_pool_name_and_spec_hold_no_secret() -> None:
    lm = LM("openai/gpt-4o-mini", api_base="http://127.0.0.1:1/v1", api_key=SECRET, rpm=100)
    spec = pool_spec(lm, reset_timeout=5.0)
    assert spec["name"] == pool_name("openai", "gpt-4o-mini", "http://127.0.0.1:1/v1")
    assert spec["name"].startswith("dspex.pool.openai.gpt-4o-mini.")
    assert spec["options"]["lifetime"] == "detached"
    assert spec["options"]["max_restarts"] == 0
    assert spec["options"]["get_if_exists"] is True
    assert spec["args"][0].rpm == 100 and spec["args"][0].reset_timeout == 5.0
    assert SECRET not in repr(spec)
    # Another api_base is another pool; a copy of the LM (another key) is the same pool.
    other = LM("openai/gpt-4o-mini", api_base="http://127.0.0.1:2/v1")
    assert pool_spec(other)["name"] != spec["name"]
    assert pool_spec(lm.copy(api_key="sk-other"))["name"] == spec["name"]
    assert pool_config(lm).api_base == "http://127.0.0.1:1/v1"


def test_request_deadline_nests_to_the_earliest() -> None:
    assert pool_client._deadline.get() is None
    with request_deadline(60.0):
        outer = pool_client._deadline.get()
        assert outer is not None
        with request_deadline(3600.0):
            assert pool_client._deadline.get() == outer  # an inner block cannot extend it
        with request_deadline(1.0):
            inner = pool_client._deadline.get()
            assert inner is not None and inner < outer
    assert pool_client._deadline.get() is None


def test_routing_is_off_unless_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    # Routing is the installed dispatcher, nothing else: no environment variable, no
    # question whether Ray is up.
    monkeypatch.setattr(dispatch, "_installed", None)
    monkeypatch.setenv("DSPEX_POOLS", "1")
    assert not pool_client.pool_routing_enabled()
    pool_client.enable_pools()
    assert pool_client.pool_routing_enabled()
    pool_client.disable_pools()
    assert not pool_client.pool_routing_enabled()
    with pytest.raises(ValueError):
        pool_client.enable_pools(mode="carrier-pigeon")  # type: ignore[arg-type]


def test_routing_without_ray_fails_instead_of_hanging(sim: SimLMServer) -> None:
    # A fresh interpreter: this session's Ray may already be up, and the path under
    # test is the one where it is not.
    code = f"""
import asyncio
from dspex.runtime.pools import pool_client
from dspex.errors import ConfigurationError
from dspex.primitives.workload import batch_work, interactive_work
from dspex.clients.lm import LM
from dspex.clients.retry import RetryPolicy

pool_client.enable_pools()
lm = LM("openai/sim", api_base={sim.url!r}, cache=False)
try:
    asyncio.run(asyncio.wait_for(lm.acomplete([{{"role": "user", "content": "x"}}]), 30.0))
except ConfigurationError as exc:
    print("refused:", exc)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "refused:" in done.stdout and "Ray is not initialized" in done.stdout, done.stdout + done.stderr
    assert sim.stats()["total"] == 0


class GatedTransport:
    """Answers at once, except requests mentioning "slow", which wait for `release`."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def post(
        self, url: str, *, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> HTTPResponse:
        if b"slow" in body:
            await self.release.wait()
        reply = {
            "choices": [{"message": {"content": "done"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        }
        return HTTPResponse(200, {}, json.dumps(reply).encode())

    async def aclose(self) -> None:
        pass


async def test_streamed_results_do_not_wait_for_the_slowest_request() -> None:
    transport = GatedTransport()
    pool = ProviderPool(
        PoolConfig("openai", "openai/m", "m", "http://127.0.0.1:9/v1", transport=transport)
    )
    stream = pool.complete_batch([request("slow one"), request("fast one"), request("fast two")])
    first = await asyncio.wait_for(stream.__anext__(), 5.0)
    assert sorted(index for index, _ in first) == [1, 2]  # while request 0 is still running
    transport.release.set()
    rest = [chunk async for chunk in stream]
    assert [index for chunk in rest for index, _ in chunk] == [0]
