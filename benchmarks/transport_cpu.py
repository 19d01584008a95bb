"""Client CPU per LM call: raw aiohttp vs AiohttpTransport vs the full LM path.

A local aiohttp server in a subprocess answers every POST with a fixed Chat
Completions body, so only the client's CPU is measured here
(``time.process_time`` over N calls with C in flight). Also measures the LM's
cache-hit path (memory tier) and the disk tier.

    python benchmarks/transport_cpu.py [--calls 4000] [--concurrency 10,100,500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

SERVER = r"""
import asyncio, json, sys
from aiohttp import web
BODY = json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok"},
        "finish_reason": "stop"}], "usage": {"prompt_tokens": 10, "completion_tokens": 2}}).encode()
async def handle(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
async def main():
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

MESSAGES = [{"role": "user", "content": "hello"}]
BODY = json.dumps({"model": "m", "messages": MESSAGES}).encode()
HEADERS = {"Content-Type": "application/json"}


async def cpu_per_call(
    call: Callable[[int], Awaitable[object]], calls: int, concurrency: int
) -> float:
    """Microseconds of process CPU per call, with `concurrency` calls in flight."""
    per_worker = calls // concurrency

    async def worker(w: int) -> None:
        for i in range(per_worker):
            await call(w * per_worker + i)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))  # warm up connections
    start = time.process_time()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return (time.process_time() - start) / (per_worker * concurrency) * 1e6


async def transport_figures(url: str, calls: int, levels: list[int]) -> None:
    import aiohttp

    from dspex.clients import LM, configure_cache
    from dspex.clients.aiohttp_transport import AiohttpTransport

    configure_cache(enable_disk=False)
    connector = aiohttp.TCPConnector(limit=0)
    session = aiohttp.ClientSession(connector=connector)
    transport = AiohttpTransport()
    lm = LM("openai/m", api_base=url.rsplit("/chat/completions", 1)[0], cache=False)

    async def raw(_: int) -> object:
        async with session.post(url, data=BODY, headers=HEADERS) as resp:
            return await resp.read()

    async def wrapped(_: int) -> object:
        return await transport.post(url, headers=HEADERS, body=BODY, timeout=60)

    async def full(i: int) -> object:
        return await lm.acomplete(MESSAGES)

    print(f"client CPU per call, µs ({calls} calls per cell)")
    print(
        f"{'in flight':>10} {'raw aiohttp':>12} {'Transport':>12} {'LM.acomplete':>13} {'T/raw':>7} {'LM/raw':>7}"
    )
    for c in levels:
        r = await cpu_per_call(raw, calls, c)
        t = await cpu_per_call(wrapped, calls, c)
        f = await cpu_per_call(full, calls, c)
        print(f"{c:>10} {r:>12.0f} {t:>12.0f} {f:>13.0f} {t / r:>7.2f} {f / r:>7.2f}")
    await session.close()
    await transport.aclose()


async def cache_figures(n: int = 20000) -> None:
    from dspex.clients import LM, LMCache, configure_cache

    print(f"\ncache hit CPU, µs per hit ({n} hits)")
    cache = configure_cache(enable_disk=False)
    lm = LM("openai/m", api_base="http://127.0.0.1:9/v1")
    key_value = {"outputs": ["ok"], "finish_reasons": ["stop"], "model": "openai/m", "usage": {}}
    from dspex.clients.cache import cache_key

    key = cache_key(provider="openai", model="m", messages=MESSAGES, params={}, rollout_id=None)
    cache.put(key, key_value)  # pre-seeded: the server address above is never contacted
    await lm.acomplete(MESSAGES)
    start = time.process_time()
    for _ in range(n):
        await lm.acomplete(MESSAGES)
    print(
        f"  LM.acomplete, memory-tier hit (key + lookup + history + usage): "
        f"{(time.process_time() - start) / n * 1e6:.1f}"
    )

    start = time.process_time()
    for _ in range(n):
        cache.get(key)
    print(
        f"  LMCache.get, memory tier:                                   "
        f"{(time.process_time() - start) / n * 1e6:.2f}"
    )

    start = time.process_time()
    for _ in range(n):
        cache_key(provider="openai", model="m", messages=MESSAGES, params={}, rollout_id=None)
    print(
        f"  cache_key (sha256 of canonical JSON):                       "
        f"{(time.process_time() - start) / n * 1e6:.2f}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        disk = LMCache(disk_dir=tmp, enable_memory=False)
        keys = [f"k{i}" for i in range(n)]
        start = time.perf_counter()
        for k in keys:
            disk.put(k, key_value)
        put_wall = (time.perf_counter() - start) / n * 1e6
        start = time.perf_counter()
        disk.flush()
        flush_wall = time.perf_counter() - start
        start = time.process_time()
        for k in keys:
            disk.get(k)
        get_cpu = (time.process_time() - start) / n * 1e6
        disk.close()
    print(f"  disk tier put (caller's wall time, write is off-thread):     {put_wall:.1f}")
    print(f"  disk tier flush of {n} batched writes, s:                  {flush_wall:.2f}")
    print(f"  disk tier get (SQLite point read + JSON decode):            {get_cpu:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--concurrency", default="10,100,500")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        asyncio.run(transport_figures(url, args.calls, levels))
        asyncio.run(cache_figures())
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
