"""A served program over HTTP vs the same service called from Python.

Starts a local Ray (``--cpus``), serves a program that calls no LM (so what is
measured is the serving path: the HTTP ingress actor, its JSON checking and the
hop to a replica) on ``--replicas`` replicas with ``http=True``, then in one run:

- latency: ``--sequential`` requests one at a time, through ``handle.acall`` and
  through ``POST`` with an aiohttp client; the median and p90 of each, and the
  latency HTTP adds (median HTTP minus median handle);
- throughput: ``--requests`` requests with ``--concurrency`` in flight, both ways;
  requests per second.

``--ray-serve`` (needs ``ray[serve]``, not a dspex dependency) adds two Ray Serve
paths for comparison: ``serve_front``, Ray Serve's HTTP proxy and a one-replica
deployment that calls the same supervised replicas through the handle, and
``serve_replicas``, the program itself deployed as ``--replicas`` Ray Serve replicas
(no dspex supervision, retries or dead letters).

Every phase stops at ``--max-seconds`` even if its count is not reached (the
report says how many ran). The client runs in this process, as a user's would.

    python benchmarks/serve_http.py [--requests 2000] [--concurrency 64] [--sequential 300] [--ray-serve]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import aiohttp

import dspex
from dspex import runtime
from dspex.runtime.serve import serve


class Echo(dspex.Module):
    async def aforward(self, text: str) -> dspex.Prediction:
        return dspex.Prediction(answer=text.upper())


async def sequential(call: Callable[[int], Awaitable[Any]], count: int, deadline: float) -> list[float]:
    times = []
    for i in range(count):
        if time.monotonic() > deadline:
            break
        start = time.perf_counter()
        await call(i)
        times.append(time.perf_counter() - start)
    return times


async def concurrent(
    call: Callable[[int], Awaitable[Any]], count: int, concurrency: int, deadline: float
) -> tuple[int, float]:
    next_index = 0
    done = 0

    async def worker() -> None:
        nonlocal next_index, done
        while next_index < count and time.monotonic() < deadline:
            i = next_index
            next_index += 1
            await call(i)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - start


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_ray_serve(handle: Any, replicas: int) -> dict[str, str]:
    """Ray Serve on a free loopback port: the two comparison paths; their URLs."""
    import socket

    from ray import serve as ray_serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray_serve.start(http_options={"host": "127.0.0.1", "port": port})

    @ray_serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
    class Front:
        def __init__(self, service: Any) -> None:
            self.service = service

        async def __call__(self, request: Any) -> dict[str, Any]:
            answer = await self.service.acall(**(await request.json()))
            return {"outputs": answer.toDict()}

    @ray_serve.deployment(num_replicas=replicas, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
    class Program:
        def __init__(self) -> None:
            self.program = Echo()

        async def __call__(self, request: Any) -> dict[str, Any]:
            answer = await self.program.acall(**(await request.json()))
            return {"outputs": answer.toDict()}

    ray_serve.run(Front.bind(handle), name="front", route_prefix="/front")
    ray_serve.run(Program.bind(), name="replicas", route_prefix="/replicas")
    base = f"http://127.0.0.1:{port}"
    return {"serve_front": f"{base}/front", "serve_replicas": f"{base}/replicas"}


async def run(args: argparse.Namespace, handle: Any, extra_urls: dict[str, str]) -> dict[str, Any]:
    url = handle.url

    async def via_handle(i: int) -> None:
        answer = await handle.acall(text=f"q{i}")
        assert answer.answer == f"Q{i}"

    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        def poster(target: str) -> Callable[[int], Awaitable[None]]:
            async def via_http(i: int) -> None:
                async with session.post(target, json={"text": f"q{i}"}) as response:
                    body = await response.json()
                assert response.status == 200 and body["outputs"]["answer"] == f"Q{i}", body

            return via_http

        paths = [("handle", via_handle), ("http", poster(url))]
        paths += [(label, poster(target)) for label, target in extra_urls.items()]
        for _, call in paths:  # warm up every path
            await concurrent(call, 50, 10, time.monotonic() + 30)
        report: dict[str, Any] = {}
        for label, call in paths:
            times = await sequential(call, args.sequential, time.monotonic() + args.max_seconds)
            done, elapsed = await concurrent(
                call, args.requests, args.concurrency, time.monotonic() + args.max_seconds
            )
            report[label] = {
                "sequential": len(times),
                "median_ms": statistics.median(times) * 1e3,
                "p90_ms": quantile(times, 0.9) * 1e3,
                "requests": done,
                "requests_per_s": done / elapsed,
            }
    report["added_latency_ms"] = report["http"]["median_ms"] - report["handle"]["median_ms"]
    report["throughput_ratio"] = report["http"]["requests_per_s"] / report["handle"]["requests_per_s"]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per phase")
    parser.add_argument("--ray-serve", action="store_true", help="also measure Ray Serve paths")
    args = parser.parse_args()

    runtime.init(num_cpus=args.cpus)
    try:
        handle = serve(Echo(), name="bench", replicas=args.replicas, http=True, use_pools=False)
        extra = start_ray_serve(handle, args.replicas) if args.ray_serve else {}
        report = asyncio.run(run(args, handle, extra))
        if args.ray_serve:
            from ray import serve as ray_serve

            ray_serve.shutdown()
        handle.stop()
    finally:
        runtime.shutdown()
    labels = ["handle", "http", *extra]
    print(f"{'path':14} {'median ms':>10} {'p90 ms':>8} {'req/s':>8}  (sequential n, concurrent n)")
    for label in labels:
        row = report[label]
        print(
            f"{label:14} {row['median_ms']:10.2f} {row['p90_ms']:8.2f} {row['requests_per_s']:8.0f}"
            f"  ({row['sequential']}, {row['requests']} at {args.concurrency} in flight)"
        )
    print(
        f"HTTP adds {report['added_latency_ms']:.2f} ms per request (median) and runs at "
        f"{report['throughput_ratio']:.2f}x the handle's requests/s"
    )
    print(json.dumps({"benchmark": "serve_http", **report}))


if __name__ == "__main__":
    main()
