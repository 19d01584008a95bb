"""Framework overhead of one Predict call, against a raw aiohttp call to the same server.

The simulated LM runs in a subprocess at 0 ms latency, so this process's CPU
time (time.process_time) is the client's alone. Measured in one run:

- raw aiohttp: POST the same chat-completion bodies dspex would send;
- dspex Predict.acall (ChatAdapter, LM client, parsing), cache off;
- cache hits: a warm LM.acomplete and a warm Predict call.

Usage: python benchmarks/overhead.py [--calls 3000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import dspex
from dspex.simlm import datasets, spawn_sim_lm


def questions(count: int) -> list[str]:
    rows = datasets.load("arithmetic", "train") + datasets.load("arithmetic", "dev")
    return [rows[i % len(rows)]["question"] for i in range(count)]


async def bounded(count: int, concurrency: int, call) -> float:
    """Run call(i) for i < count with at most `concurrency` in flight; return CPU seconds."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with semaphore:
            await call(i)

    cpu = time.process_time()
    await asyncio.gather(*(one(i) for i in range(count)))
    return time.process_time() - cpu


async def raw_aiohttp(url: str, bodies: list[bytes], concurrency: int) -> tuple[float, float]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        headers = {"Content-Type": "application/json", "Authorization": "Bearer x"}

        async def call(i: int) -> None:
            async with session.post(f"{url}/chat/completions", data=bodies[i], headers=headers) as response:
                payload = await response.json()
                payload["choices"][0]["message"]["content"]

        wall = time.perf_counter()
        cpu = await bounded(len(bodies), concurrency, call)
        return cpu, time.perf_counter() - wall


async def dspex_predict(url: str, qs: list[str], concurrency: int) -> tuple[float, float, int]:
    lm = dspex.LM("openai/sim-1", api_base=url, api_key="x", cache=False)
    predict = dspex.Predict("question -> answer: int")
    parsed = 0

    async def call(i: int) -> None:
        nonlocal parsed
        prediction = await predict.acall(question=qs[i], lm=lm)
        parsed += isinstance(prediction.answer, int)

    await predict.acall(question=qs[0], lm=lm)  # warm the session and caches
    wall = time.perf_counter()
    cpu = await bounded(len(qs), concurrency, call)
    return cpu, time.perf_counter() - wall, parsed


def request_bodies(qs: list[str]) -> list[bytes]:
    adapter = dspex.ChatAdapter()
    signature = dspex.Signature("question -> answer: int")
    return [
        json.dumps({"model": "sim-1", "messages": adapter.format(signature, [], {"question": q})}).encode()
        for q in qs
    ]


async def cache_hits(url: str, repeats: int, tmp_dir: str) -> tuple[float, float]:
    dspex.configure_cache(enable_disk=True, disk_dir=tmp_dir)
    lm = dspex.LM("openai/sim-1", api_base=url, api_key="x", cache=True)
    predict = dspex.Predict("question -> answer: int")
    messages = [{"role": "user", "content": "What is 1 + 1?"}]
    await lm.acomplete(messages)
    await predict.acall(question="What is 2 + 2?", lm=lm)
    start = time.perf_counter()
    for _ in range(repeats):
        await lm.acomplete(messages)
    lm_hit = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats):
        await predict.acall(question="What is 2 + 2?", lm=lm)
    predict_hit = (time.perf_counter() - start) / repeats
    return lm_hit, predict_hit


async def main(calls: int, concurrency: int) -> None:
    import tempfile

    qs = questions(calls)
    with spawn_sim_lm(seed=0, latency_ms=0) as server:
        raw_cpu, raw_wall = await raw_aiohttp(server.url, request_bodies(qs), concurrency)
        ours_cpu, ours_wall, parsed = await dspex_predict(server.url, qs, concurrency)
        with tempfile.TemporaryDirectory() as tmp:
            lm_hit, predict_hit = await cache_hits(server.url, 2000, tmp)
    raw_ms = raw_cpu / calls * 1000
    ours_ms = ours_cpu / calls * 1000
    print(f"calls={calls} concurrency={concurrency} (server in a subprocess, 0 ms latency)")
    print(f"raw aiohttp        client CPU {raw_ms:.3f} ms/call   {calls / raw_wall:,.0f} calls/s")
    print(f"dspex Predict      client CPU {ours_ms:.3f} ms/call   {calls / ours_wall:,.0f} calls/s"
          f"   ({parsed}/{calls} replies parsed)")
    print(f"ratio dspex/raw    {ours_ms / raw_ms:.2f}x CPU per call")
    print(f"cache hit          LM.acomplete {lm_hit * 1e6:.1f} us   Predict.acall {predict_hit * 1e6:.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.concurrency))
