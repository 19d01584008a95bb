"""LMCache tiers, cache keys, cache bypass, single-flight."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dspex.clients import LM, LMCache, configure_cache, get_cache
from dspex.clients import cache as cache_module
from dspex.clients.cache import CACHE_FILE, cache_key, default_cache_dir
from dspex.errors import LMServerError

MSGS = [{"role": "user", "content": "hi"}]


def key(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "messages": MSGS,
        "params": {"temperature": 0.0, "n": 1},
        "rollout_id": None,
    }
    args.update(overrides)
    return cache_key(**args)


# --- keys --------------------------------------------------------------------------


def test_key_is_stable_and_order_independent() -> None:
    assert key() == key(params={"n": 1, "temperature": 0.0})
    assert len(key()) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"provider": "anthropic"},
        {"model": "gpt-4o"},
        {"messages": [{"role": "user", "content": "hi!"}]},
        {"params": {"temperature": 0.7, "n": 1}},
        {"params": {"temperature": 0.0, "n": 2}},
        {"params": {"temperature": 0.0, "n": 1, "seed": 3}},
        {"rollout_id": 1},
    ],
)
def test_key_includes_request_identity(change: dict[str, Any]) -> None:
    assert key(**change) != key()


async def test_lm_cache_key_excludes_api_key_and_base(server: Any, isolated_cache: LMCache) -> None:
    a = LM("openai/m", api_base=server.base_url, api_key="sk-AAAA")
    b = LM("openai/m", api_base=server.base_url + "/", api_key="sk-BBBB")
    first = await a.acomplete(MSGS)
    second = await b.acomplete(MSGS)
    assert not first.cached and second.cached
    assert server.count == 1
    isolated_cache.flush()
    raw = isolated_cache.disk_path.read_bytes()  # type: ignore[union-attr]
    wal = isolated_cache.disk_path.with_name(CACHE_FILE + "-wal").read_bytes()  # type: ignore[union-attr]
    for secret in (b"sk-AAAA", b"sk-BBBB", server.base_url.encode()):
        assert secret not in raw and secret not in wal


# --- tiers -------------------------------------------------------------------------


def test_memory_and_disk_tiers(tmp_path: Path) -> None:
    cache = LMCache(disk_dir=tmp_path)
    value = {"outputs": ["x"], "finish_reasons": ["stop"], "model": "m", "usage": {}}
    cache.put("k1", value)
    assert cache.get("k1") == value
    cache.close()

    fresh = LMCache(disk_dir=tmp_path)
    assert fresh.memory_size() == 0
    assert fresh.get("k1") == value  # from disk
    assert fresh.memory_size() == 1  # promoted to memory
    assert fresh.get("missing") is None
    fresh.close()


def test_disk_only_reads_its_own_pending_writes(tmp_path: Path) -> None:
    cache = LMCache(disk_dir=tmp_path, enable_memory=False)
    cache.put("k", {"outputs": ["y"]})
    assert cache.get("k") == {"outputs": ["y"]}  # visible before or after the commit
    cache.flush()
    assert cache.get("k") == {"outputs": ["y"]}
    cache.close()


def test_memory_only_writes_no_file(tmp_path: Path) -> None:
    cache = LMCache(disk_dir=tmp_path / "c", enable_disk=False)
    cache.put("k", {"outputs": []})
    assert cache.get("k") == {"outputs": []}
    assert cache.disk_path is None and not (tmp_path / "c").exists()


def test_memory_tier_is_lru_bounded(tmp_path: Path) -> None:
    cache = LMCache(enable_disk=False, memory_max_entries=2)
    for k in "abc":
        cache.put(k, {"outputs": [k]})
    assert cache.memory_size() == 2 and cache.get("a") is None and cache.get("c") is not None


def test_disk_uses_wal(tmp_path: Path) -> None:
    cache = LMCache(disk_dir=tmp_path)
    with sqlite3.connect(tmp_path / CACHE_FILE) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cache.close()


def _write_many(disk_dir: str, prefix: str, count: int) -> None:
    cache = LMCache(disk_dir=disk_dir, enable_memory=False)
    for i in range(count):
        cache.put(f"{prefix}{i}", {"outputs": [f"{prefix}{i}"]})
        cache.put("shared", {"outputs": [prefix]})
    cache.close()


def test_concurrent_writes_from_two_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), p, 300)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    cache = LMCache(disk_dir=tmp_path, enable_memory=False)
    for prefix in ("a", "b"):
        for i in range(300):
            assert cache.get(f"{prefix}{i}") == {"outputs": [f"{prefix}{i}"]}
    assert cache.get("shared") in ({"outputs": ["a"]}, {"outputs": ["b"]})
    cache.close()


def test_default_dir_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPEX_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("DSPEX_CACHE_DIR")
    assert "dspex" in str(default_cache_dir())


def test_configure_cache_replaces_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "_default", None)
    first = configure_cache(disk_dir=tmp_path / "one", memory_max_entries=5)
    assert get_cache() is first and first.disk_path == tmp_path / "one" / CACHE_FILE
    second = configure_cache(enable_disk=False)
    assert get_cache() is second and second.disk_path is None
    second.close()


# --- through the LM ------------------------------------------------------------------


async def test_cache_hit_makes_no_request_and_costs_nothing(
    server: Any, isolated_cache: LMCache
) -> None:
    lm = LM("openai/m", api_base=server.base_url)
    first = await lm.acomplete(MSGS)
    hit = await lm.acomplete(MSGS)
    assert server.count == 1
    assert hit.cached and hit.outputs == first.outputs
    assert (hit.usage.calls, hit.usage.cost, hit.usage.total_tokens) == (0, 0.0, 0)
    hit.outputs.append("mutated")
    assert (await lm.acomplete(MSGS)).outputs == first.outputs


async def test_disk_hit_from_a_new_cache_instance(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "_default", LMCache(disk_dir=tmp_path))
    lm = LM("openai/m", api_base=server.base_url)
    await lm.acomplete(MSGS)
    get_cache().close()
    monkeypatch.setattr(cache_module, "_default", LMCache(disk_dir=tmp_path))
    again = await lm.acomplete(MSGS)
    assert again.cached and server.count == 1
    get_cache().close()


async def test_cache_false_bypasses_at_lm_and_call_level(
    server: Any, isolated_cache: LMCache
) -> None:
    lm = LM("openai/m", api_base=server.base_url)
    await lm.acomplete(MSGS)
    assert not (await lm.acomplete(MSGS, cache=False)).cached
    no_cache = lm.copy(cache=False)
    assert not (await no_cache.acomplete(MSGS)).cached
    assert server.count == 3


async def test_params_and_rollout_id_make_distinct_entries(
    server: Any, isolated_cache: LMCache
) -> None:
    lm = LM("openai/m", api_base=server.base_url, temperature=0.0)
    await lm.acomplete(MSGS)
    await lm.acomplete(MSGS, temperature=1.0)
    await lm.acomplete(MSGS, rollout_id=1)
    await lm.copy(rollout_id=2).acomplete(MSGS)
    assert server.count == 4
    assert (await lm.acomplete(MSGS, rollout_id=1)).cached
    assert "rollout_id" not in server.requests[-1].body


async def test_errors_are_not_cached(server: Any, isolated_cache: LMCache) -> None:
    server.push(500, {"error": {"message": "x"}})
    lm = LM("openai/m", api_base=server.base_url, num_retries=0)
    with pytest.raises(LMServerError):
        await lm.acomplete(MSGS)
    assert not (await lm.acomplete(MSGS)).cached


# --- single-flight -----------------------------------------------------------------


async def test_single_flight_shares_one_call(
    server: Any, isolated_cache: LMCache, wait_until: Any
) -> None:
    server.default_gated = True
    lm = LM("openai/m", api_base=server.base_url)
    tasks = [asyncio.create_task(lm.acomplete(MSGS)) for _ in range(10)]
    await wait_until(lambda: server.count >= 1)
    server.open_gate()
    responses = await asyncio.gather(*tasks)
    assert server.count == 1
    assert len({tuple(r.outputs) for r in responses}) == 1
    assert sum(not r.cached for r in responses) == 1
    assert sum(r.usage.calls for r in responses) == 1


async def test_single_flight_does_not_merge_different_requests(
    server: Any, isolated_cache: LMCache, wait_until: Any
) -> None:
    server.default_gated = True
    lm = LM("openai/m", api_base=server.base_url)
    tasks = [
        asyncio.create_task(lm.acomplete([{"role": "user", "content": str(i)}])) for i in range(5)
    ]
    await wait_until(lambda: server.count >= 5)
    server.open_gate()
    await asyncio.gather(*tasks)
    assert server.count == 5


async def test_single_flight_waiters_share_the_error(
    server: Any, isolated_cache: LMCache, wait_until: Any
) -> None:
    server.push(400, {"error": {"message": "bad"}}, gated=True)
    lm = LM("openai/m", api_base=server.base_url)
    tasks = [asyncio.create_task(lm.acomplete(MSGS)) for _ in range(3)]
    await wait_until(lambda: server.count >= 1)
    server.open_gate()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(type(r).__name__ == "LMBadRequestError" for r in results)
    assert server.count == 1


async def test_single_flight_survives_a_cancelled_leader(
    server: Any, isolated_cache: LMCache, wait_until: Any
) -> None:
    server.push(gated=True)  # the leader's request hangs
    lm = LM("openai/m", api_base=server.base_url)
    leader = asyncio.create_task(lm.acomplete(MSGS))
    await wait_until(lambda: server.count >= 1)
    waiter = asyncio.create_task(lm.acomplete(MSGS))
    await asyncio.sleep(0)  # let the waiter reach the in-flight entry (ordering, not timing)
    leader.cancel()
    response = await asyncio.wait_for(waiter, 5)  # the waiter made its own call
    assert response.outputs == ["echo: hi"] and server.count == 2
    with pytest.raises(asyncio.CancelledError):
        await leader


def test_the_disk_tier_evicts_its_oldest_entries_past_its_size_limit(tmp_path: Path) -> None:
    limit = 256 * 1024
    cache = LMCache(enable_memory=False, disk_dir=tmp_path, disk_size_limit_bytes=limit)
    body = "x" * 2000
    for i in range(400):  # about 800 kB written: three times the limit
        cache.put(f"key-{i:04d}", {"outputs": [body], "n": i})
    cache.flush()
    store = cache._disk
    assert store is not None
    assert store.used_bytes() <= limit  # bounded, though three times as much was written
    assert cache.get("key-0000") is None  # the oldest went first
    assert cache.get("key-0399") == {"outputs": [body], "n": 399}  # the newest stayed
    cache.close()


def test_configure_cache_takes_dspys_spellings_and_dspex_cache_follows_it(tmp_path: Path) -> None:
    import dspex
    from dspex.clients.cache import configure_cache, get_cache
    from dspex.errors import ConfigurationError

    previous = get_cache()
    try:
        cache = configure_cache(enable_disk_cache=False, enable_memory_cache=True, disk_cache_dir=str(tmp_path))
        assert cache.enable_disk is False and cache.disk_dir == tmp_path and dspex.cache is cache
        with pytest.raises(ConfigurationError, match="give one"):
            configure_cache(enable_disk=True, enable_disk_cache=False)
    finally:
        configure_cache(
            enable_memory=previous.enable_memory,
            enable_disk=previous.enable_disk,
            disk_dir=previous.disk_dir,
        )
