"""Provider pool: the actor hop's CPU cost, one pool's throughput, stream vs batch replies.

Against the simulated LM in its own process, at 0 ms latency (so only CPU is
measured), the same LM calls are made in-process and through a `ProviderPool`
actor, with C calls in flight from one asyncio client:

- client CPU per call (``time.process_time`` of this process),
- pool CPU per call (the actor's process time, from its stats),
- calls/s of the whole path.

Three modes are measured: "lease" (the client makes the HTTP call under a
lease from the pool, which keeps only the shared state), "stream" (the pool
makes the call; a Ray streaming generator returns results as they finish) and
"batch" (the pool makes the call; one reply per batch). A last run adds latency with
jitter (20 ms + up to 200 ms) to show what each mode does to per-call latency.

    python benchmarks/pool.py [--calls 4000] [--concurrency 1,50,500]

Starts a private local Ray (num_cpus=2, 127.0.0.1, its own temp dir) and stops
it, and the simulated LM, at the end. 2-core machine: the client, the pool
actor and the server share the cores, so calls/s are lower bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from typing import Any

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before Ray is imported anywhere


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--concurrency", default="1,50,500")
    return parser.parse_args()


async def run_calls(lm: Any, calls: int, concurrency: int) -> tuple[float, float, list[float]]:
    """(client CPU seconds, wall seconds, per-call latencies) of `calls` unique requests."""
    per_worker = max(1, calls // concurrency)
    run = uuid.uuid4().hex  # unique prompts: nothing is shared or cached
    latencies: list[float] = []

    async def worker(w: int) -> None:
        for i in range(per_worker):
            started = time.perf_counter()
            await lm.acomplete([{"role": "user", "content": f"{run} {w} {i}"}])
            latencies.append(time.perf_counter() - started)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return time.process_time() - cpu, time.perf_counter() - wall, latencies


async def measure(lm: Any, calls: int, concurrency: int, pool: Any = None) -> dict[str, float]:
    await run_calls(lm, min(calls, 500), concurrency)  # warm up connections and the route
    before = await pool.stats.remote() if pool is not None else None
    cpu, wall, latencies = await run_calls(lm, calls, concurrency)
    n = len(latencies)
    figures = {
        "client_ms": cpu / n * 1e3,
        "calls_per_s": n / wall,
        "p50_ms": statistics.median(latencies) * 1e3,
    }
    if pool is not None:
        after = await pool.stats.remote()
        figures["pool_ms"] = (after["cpu_seconds"] - before["cpu_seconds"]) / n * 1e3
    return figures


def row(label: str, concurrency: int, f: dict[str, float]) -> str:
    pool = f"{f['pool_ms']:8.3f}" if "pool_ms" in f else "       -"
    total = f["client_ms"] + f.get("pool_ms", 0.0)
    return (
        f"{label:<12} {concurrency:>5} {f['client_ms']:9.3f} {pool} {total:9.3f} "
        f"{f['calls_per_s']:9.0f} {f['p50_ms']:8.2f}"
    )


async def cpu_table(sim_url: str, calls: int, levels: list[int]) -> None:
    from dspex.clients import LM
    from dspex.runtime.pools import pool_client

    lm = LM("openai/sim", api_base=sim_url, cache=False)
    pool = await asyncio.to_thread(pool_client.start_pool, lm)
    await pool.ping.remote()
    print(
        f"{'path':<12} {'in-fl':>5} {'client ms':>9} {'pool ms':>8} {'total ms':>9} "
        f"{'calls/s':>9} {'p50 ms':>8}"
    )
    for concurrency in levels:
        n = calls if concurrency > 1 else min(calls, 1000)
        pool_client.disable_pools()
        base = await measure(lm, n, concurrency)
        print(row("in-process", concurrency, base))
        for mode in ("lease", "stream", "batch"):
            pool_client.enable_pools(mode=mode)
            figures = await measure(lm, n, concurrency, pool)
            print(row(f"pool/{mode}", concurrency, figures))
            hop = figures["client_ms"] + figures["pool_ms"] - base["client_ms"]
            print(f"{'':<12} {'':>5} actor hop adds {hop:.3f} ms CPU per call (client + pool)")
    pool_client.disable_pools()
    pool_client.stop_pool(lm)


async def chain_wall(lm: Any, examples: int, steps: int) -> float:
    """Wall seconds for `examples` concurrent programs of `steps` sequential LM calls."""
    run = uuid.uuid4().hex

    async def program(e: int) -> None:
        for s in range(steps):
            await lm.acomplete([{"role": "user", "content": f"{run} {e} step {s}"}])

    started = time.perf_counter()
    await asyncio.gather(*(program(e) for e in range(examples)))
    return time.perf_counter() - started


async def latency_table(calls: int) -> None:
    from dspex.clients import LM
    from dspex.runtime.pools import pool_client
    from dspex.simlm import spawn_sim_lm

    with spawn_sim_lm(seed=2, latency_ms=20, jitter_ms=200) as sim:
        lm = LM("openai/sim", api_base=sim.url, cache=False)
        await asyncio.to_thread(pool_client.start_pool, lm)
        print("\nwith 20 ms + up to 200 ms latency, 200 in flight:")
        for mode in ("in-process", "lease", "stream", "batch"):
            if mode == "in-process":
                pool_client.disable_pools()
            else:
                pool_client.enable_pools(mode=mode)  # type: ignore[arg-type]
            _, wall, latencies = await run_calls(lm, calls, 200)
            latencies.sort()
            label = mode if mode == "in-process" else f"pool/{mode}"
            print(
                f"  {label:<11} p50 {statistics.median(latencies) * 1e3:6.1f} ms, "
                f"p95 {latencies[int(len(latencies) * 0.95)] * 1e3:6.1f} ms, "
                f"{len(latencies) / wall:6.0f} calls/s"
            )
        print("  200 programs of 3 sequential calls each, all at once (wall time):")
        pool_client.disable_pools()
        print(f"    in-process  {await chain_wall(lm, 200, 3):5.2f} s")
        for mode in ("lease", "stream", "batch"):
            pool_client.enable_pools(mode=mode)
            print(f"    pool/{mode:<6} {await chain_wall(lm, 200, 3):5.2f} s")
        pool_client.disable_pools()
        pool_client.stop_pool(lm)


def main() -> None:
    args = parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    import ray

    from dspex.clients import configure_cache
    from dspex.simlm import spawn_sim_lm

    configure_cache(enable_disk=False)
    with tempfile.TemporaryDirectory(prefix="dspex-bench-ray-") as temp_dir:
        ray.init(
            address="local",
            num_cpus=2,
            namespace="dspex",
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _temp_dir=temp_dir,  # private: leaves other local clusters' address file alone
        )
        try:
            with spawn_sim_lm(seed=1) as sim:
                asyncio.run(cpu_table(sim.url, args.calls, levels))
            asyncio.run(latency_table(min(args.calls, 2000)))
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
