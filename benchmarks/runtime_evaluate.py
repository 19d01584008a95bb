"""Evaluate on the runtime against in-process: wall time and the whole machine's CPU per LM call.

N examples, C in flight, a simulated LM (its own process) answering after
``latency``. Each path evaluates the same Predict program on the same data,
warm (one run first), and reports:

- wall / ideal, where ideal = ceil(N/C) x latency;
- CPU per LM call counting every process on the machine but the LM server: the
  machine's busy time (/proc/stat) minus the server's own (/proc/<pid>/stat),
  so Ray's daemons, the pool actor and the EvalWorkers all count.

Paths: dspex in-process (no Ray); dspex after ``dspex.init()`` with provider
pools in lease mode (the default: workers make their own HTTP calls under the
pool's leases) and in stream mode (the pool actor makes every call).

    python benchmarks/runtime_evaluate.py [--n 1000] [--concurrency 64] [--latency-ms 100]

Starts a private local Ray (num_cpus=2) and stops it, and the server, at the end.
On this 2-core machine everything shares the cores with the server.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import dspex
from dspex.simlm import datasets, spawn_sim_lm

SIGNATURE = "question -> answer: int"
TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / TICKS


def process_seconds(pid: int) -> float:
    """CPU seconds (user + system) of one process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def per_process_seconds() -> dict[int, tuple[str, float]]:
    """Every process's CPU seconds and command line (for --by-process)."""
    seen: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")[:90]
            seen[int(entry)] = (command, process_seconds(int(entry)))
        except OSError:
            continue  # gone meanwhile
    return seen


def top_consumers(before: dict[int, tuple[str, float]], calls: int, count: int = 8) -> str:
    after = per_process_seconds()
    spent = [
        (after[pid][1] - before.get(pid, ("", 0.0))[1], after[pid][0]) for pid in after
    ]
    spent.sort(reverse=True)
    return "\n".join(
        f"    {seconds / max(calls, 1) * 1e3:7.3f} ms/call  {command}"
        for seconds, command in spent[:count]
        if seconds > 0
    )


def rows(n: int) -> list[dspex.Example]:
    pool = datasets.load("arithmetic", "train") + datasets.load("arithmetic", "dev")
    return [
        dspex.Example(question=pool[i % len(pool)]["question"], answer=pool[i % len(pool)]["answer"]).with_inputs("question")
        for i in range(n)
    ]


def metric(example: Any, pred: Any, trace: Any = None) -> bool:
    return str(example.answer).strip() == str(pred.answer).strip()


BY_PROCESS = False


def measure(run: Callable[[], float], server: Any, calls_before: Callable[[], int]) -> dict[str, float]:
    run()  # warm: connections, workers, leases
    processes = per_process_seconds() if BY_PROCESS else {}
    busy, served, calls = machine_busy_seconds(), process_seconds(server.pid), calls_before()
    started = time.perf_counter()
    score = run()
    wall = time.perf_counter() - started
    calls = calls_before() - calls
    client = (machine_busy_seconds() - busy) - (process_seconds(server.pid) - served)
    if BY_PROCESS:
        print(top_consumers(processes, calls))
    return {"wall": wall, "score": score, "calls": calls, "cpu_ms": client / max(calls, 1) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--by-process", action="store_true", help="show the top CPU users")
    args = parser.parse_args()
    global BY_PROCESS
    BY_PROCESS = args.by_process
    n, c = args.n, args.concurrency
    ideal = math.ceil(n / c) * args.latency_ms / 1000
    devset = rows(n)
    print(f"Evaluate N={n}, {c} in flight, {args.latency_ms:g} ms: ideal {ideal:.2f} s")
    print(f"{'path':<34} {'wall s':>7} {'/ideal':>7} {'LM calls':>9} {'CPU ms/call':>12} {'score':>6}")
    with spawn_sim_lm(seed=0, latency_ms=args.latency_ms) as server:
        lm = dspex.LM("openai/sim-1", api_base=server.url, cache=False, timeout=30.0)
        program = dspex.Predict(SIGNATURE)

        def served() -> int:
            return int(server.stats()["total"])

        def evaluate(runner: str | None) -> Callable[[], float]:
            def run() -> float:
                with dspex.context(lm=lm):
                    evaluator = dspex.Evaluate(
                        devset=devset, metric=metric, num_threads=c, runner=runner,
                        display_progress=False,
                    )
                    return float(evaluator(program).score)

            return run

        def report(name: str, figures: dict[str, float]) -> None:
            print(
                f"{name:<34} {figures['wall']:7.2f} {figures['wall'] / ideal:7.2f} "
                f"{figures['calls']:9.0f} {figures['cpu_ms']:12.3f} {figures['score']:6.1f}"
            )

        report("dspex in-process", measure(evaluate("local"), server, served))
        dspex.init(num_cpus=2, include_dashboard=False)
        try:
            from dspex.runtime.pools import pool_client

            for mode in ("lease", "stream"):
                pool_client.enable_pools(mode=mode)  # type: ignore[arg-type]
                report(f"dspex runtime, pools/{mode}", measure(evaluate(None), server, served))
        finally:
            dspex.shutdown()


if __name__ == "__main__":
    main()
