"""Embedding requests with the runtime up go through their endpoint's provider pool: the
driver's and the EvalWorkers' batches are made under the pool's leases (its counters see
every one), so its limits and breaker hold for them as for LM calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.clients import cache as cache_module
from dspex.clients.cache import LMCache
from dspex.errors import CircuitOpenError, LMServerError
from dspex.runtime.pools.lease_client import flush_leases
from dspex.runtime.pools.pool_client import pool_routing_enabled, pool_stats
from dspex.simlm import SimLMServer, start_sim_lm

pytestmark = pytest.mark.ray

PASSAGES = [f"Passage {i} about the river number {i % 23}." for i in range(2200)]


@pytest.fixture
def sim() -> Iterator[SimLMServer]:
    server = start_sim_lm(seed=9)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def memory_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "_default", LMCache(enable_disk=False))


async def _stats(lm: Any) -> dict[str, Any]:
    await flush_leases()
    return await asyncio.to_thread(pool_stats, lm)


async def test_driver_embeddings_are_made_under_the_pools_leases(tree: Any, sim: SimLMServer, memory_cache: None) -> None:
    assert pool_routing_enabled()
    embedder = dspex.Embedder("openai/sim-embed-driver", api_base=sim.url, batch_size=10, caching=False)
    vectors = await embedder.acall([f"text {i}" for i in range(45)])
    assert vectors.shape == (45, 256)
    stats = await _stats(embedder._model.endpoint_lm())  # type: ignore[union-attr]
    assert stats["requests"] == 5 and stats["errors"] == 0
    assert stats["leases"] >= 1 and stats["batches"] == 0  # this process made the calls


async def test_worker_batches_count_at_the_same_pool(tree: Any, sim: SimLMServer, memory_cache: None) -> None:
    embedder = dspex.Embedder("openai/sim-embed-workers", api_base=sim.url, batch_size=100, caching=False)
    index = await asyncio.to_thread(dspex.retrievers.Embeddings, corpus=PASSAGES, embedder=embedder, k=1)
    assert index.corpus_embeddings.shape == (len(PASSAGES), 256)
    lm = embedder._model.endpoint_lm()  # type: ignore[union-attr]
    deadline = asyncio.get_running_loop().time() + 20
    # Workers deliver their last lease report a lease period after they go quiet.
    while (stats := await _stats(lm))["requests"] < 22:
        assert asyncio.get_running_loop().time() < deadline, stats
        await asyncio.sleep(0.1)
    assert stats["requests"] == 22 == sim.stats()["by_path"]["/v1/embeddings"]


async def test_the_pools_breaker_opens_for_a_failing_embeddings_endpoint(
    tree: Any, sim: SimLMServer, memory_cache: None
) -> None:
    sim.set_faults(outage=True, retry_after=0)
    embedder = dspex.Embedder("openai/sim-embed-outage", api_base=sim.url, caching=False, num_retries=0)
    failures = 0
    with pytest.raises(CircuitOpenError):
        for i in range(50):
            try:
                await embedder.acall([f"text {i}"])
            except LMServerError:
                failures += 1
    assert failures >= 1
    sent = sim.stats()["by_path"]["/v1/embeddings"]
    with pytest.raises(CircuitOpenError):
        await embedder.acall(["one more"])
    assert sim.stats()["by_path"]["/v1/embeddings"] == sent  # failed fast: nothing sent
