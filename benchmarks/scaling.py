"""Evaluation throughput on 1, 2 and 3 Ray nodes (``ray.cluster_utils.Cluster``), by pool mode.

For each node count a fresh cluster is started (each node ``num_cpus=1``; the
nodes are processes on this machine, so they share its 2 cores), the dspex
runtime attaches to it, and one evaluation of N examples runs with C examples
in flight per node, against a simulated LM (its own process) answering after a
short latency. Reported per pool mode: LM calls per second, CPU per call
counting every process but the server (machine busy time minus the server's),
and what the endpoint's pool actor saw: actor calls carrying requests
("batches", stream mode) or leases (lease mode). In lease mode no actor is on
the path of every request: the pool sees a few leases per process per second.

    python benchmarks/scaling.py [--nodes 1,2,3] [--n 3000] [--per-node 64] [--latency-ms 20]

On real nodes each node brings its own cores, so calls/s would grow with the
node count as long as the LM endpoint keeps up; here they share two cores, so
calls/s stays flat and the CPU per call shows what each extra node costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Keeps Ray from swapping the loopback address for the one it finds by a UDP connect.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="dspex-bench-ray-"))

from runtime_evaluate import machine_busy_seconds, metric, process_seconds, rows

import dspex
from dspex.simlm import spawn_sim_lm

SIGNATURE = "question -> answer: int"
LOOPBACK = "127.0.0.1"


def reported(lm: Any, requests: int, timeout: float = 10.0) -> dict[str, Any]:
    """The pool's stats once they count ``requests`` (lease reports arrive a lease
    period after a worker goes idle), or as they are after ``timeout``."""
    from dspex.runtime.pools import pool_client

    deadline = time.monotonic() + timeout
    while True:
        stats = pool_client.pool_stats(lm)
        if stats["requests"] >= requests or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def run_on(nodes: int, args: argparse.Namespace, server: Any) -> list[str]:
    import ray
    from ray.cluster_utils import Cluster

    from dspex.runtime.pools import pool_client
    from dspex.runtime.pools.lease_client import flush_leases

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": LOOPBACK, "include_dashboard": False},
    )
    lines: list[str] = []
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, _node_ip_address=LOOPBACK, log_to_driver=False)
        dspex.init()
        lm = dspex.LM("openai/sim-1", api_base=server.url, cache=False, timeout=30.0)
        program = dspex.Predict(SIGNATURE)
        devset = rows(args.n)

        def evaluate() -> float:
            with dspex.context(lm=lm):
                evaluator = dspex.Evaluate(
                    devset=devset, metric=metric, num_threads=args.per_node * nodes,
                    display_progress=False,
                )
                return float(evaluator(program).score)

        for mode in ("lease", "stream"):
            pool_client.enable_pools(mode=mode)  # type: ignore[arg-type]
            base = pool_client.pool_stats(lm)["requests"]
            evaluate()  # warm: workers on every node, connections, leases
            before = reported(lm, base + args.n)
            busy, served, calls = machine_busy_seconds(), process_seconds(server.pid), server.stats()["total"]
            started = time.perf_counter()
            evaluate()
            wall = time.perf_counter() - started
            calls = server.stats()["total"] - calls
            cpu = (machine_busy_seconds() - busy) - (process_seconds(server.pid) - served)
            asyncio.run(flush_leases())
            after = reported(lm, before["requests"] + args.n)
            lines.append(
                f"{nodes:>5} {mode:<7} {calls / wall:9.0f} {cpu / calls * 1e3:10.3f} "
                f"{after['batches'] - before['batches']:12d} {after['leases'] - before['leases']:8d} "
                f"{after['leaseholders']:8d}"
            )
        dspex.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="1,2,3")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--per-node", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    print(
        f"Evaluate N={args.n}, {args.per_node} in flight per node, {args.latency_ms:g} ms latency; "
        "nodes share this machine's 2 cores"
    )
    print(f"{'nodes':>5} {'mode':<7} {'calls/s':>9} {'CPU ms/call':>10} {'pool batches':>12} {'leases':>8} {'holders':>8}")
    with spawn_sim_lm(seed=0, latency_ms=args.latency_ms) as server:
        for nodes in [int(n) for n in args.nodes.split(",")]:
            for line in run_on(nodes, args, server):
                print(line, flush=True)


if __name__ == "__main__":
    main()
