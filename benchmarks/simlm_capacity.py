"""How many requests per second the simulated LM serves, by requests in flight.

Spawns the server as a subprocess (`spawn_sim_lm`) and drives it with raw
aiohttp clients, `concurrency` connections each looping requests, until a
request count or a time limit is reached. Prints requests/s, latency
percentiles and the server's own CPU time per request (from /proc), which
gives its ceiling on one core independently of the client's CPU, which shares
the machine.

    python benchmarks/simlm_capacity.py                      # 1, 64, 1000, 2000 in flight
    python benchmarks/simlm_capacity.py -c 500 --requests 5000 --latency-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import time
from dataclasses import dataclass

import aiohttp

from dspex.simlm import datasets, spawn_sim_lm

SYSTEM = """You fill in output fields from input fields.

Input fields:
- `question` (str): The question to answer.

Output fields:
- `reasoning` (str): Think it through step by step.
- `answer` (int): The final answer.

Message structure: each user message holds the input fields as sections; reply with the output fields as sections, then the completed marker.

Instructions:
Given the fields `question`, produce the fields `reasoning`, `answer`."""

REQUEST_LINE = (
    "Respond with the corresponding output fields, starting with the field `[[ ## reasoning ## ]]`, "
    "then `[[ ## answer ## ]]`, and then ending with the marker for `[[ ## completed ## ]]`."
)


@dataclass
class Result:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    server_cpu: float

    def line(self) -> str:
        rps = self.requests / self.seconds
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        cpu_ms = self.server_cpu / max(self.requests, 1) * 1000
        return (
            f"{self.concurrency:>6} {self.requests:>8} {self.errors:>6} {self.seconds:>7.2f} "
            f"{rps:>9.0f} {p50:>8.1f} {p99:>8.1f} {cpu_ms:>10.3f} {1000 / cpu_ms if cpu_ms else 0:>10.0f}"
        )


HEADER = (
    f"{'conns':>6} {'requests':>8} {'errors':>6} {'seconds':>7} {'req/s':>9} "
    f"{'p50 ms':>8} {'p99 ms':>8} {'srv cpu ms':>10} {'srv ceil/s':>10}"
)


def bodies() -> list[bytes]:
    """Distinct realistic dspex prompts (so parsing and the oracle do real work)."""
    out = []
    for row in datasets.load("arithmetic", "dev"):
        user = f"[[ ## question ## ]]\n{row['question']}\n\n{REQUEST_LINE}"
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        out.append(
            json.dumps({"model": "sim-lm", "messages": messages, "temperature": 0.0}).encode()
        )
    return out


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def drive(url: str, pid: int, concurrency: int, total: int, max_seconds: float) -> Result:
    payloads = bodies()
    connector = aiohttp.TCPConnector(
        limit=concurrency, limit_per_host=concurrency, force_close=False
    )
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.monotonic() + max_seconds
    headers = {"Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent, errors
        while sent < total and time.monotonic() < deadline:
            body = payloads[sent % len(payloads)]
            sent += 1
            start = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - start)

    timeout = aiohttp.ClientTimeout(total=max_seconds + 30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Warm up: open the connections before the clock starts.
        await asyncio.gather(
            *(
                session.get(url.replace("/chat/completions", "/models"))
                for _ in range(min(concurrency, 64))
            )
        )
        cpu0, t0 = process_cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        seconds, cpu = time.perf_counter() - t0, process_cpu_seconds(pid) - cpu0
    return Result(concurrency, len(latencies), errors, seconds, latencies, cpu)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 64, 1000, 2000])
    parser.add_argument("--requests", type=int, default=20000, help="per level, at most")
    parser.add_argument("--seconds", type=float, default=20.0, help="per level, at most")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    raise_fd_limit()  # before spawning, so the server inherits it too
    with spawn_sim_lm(latency_ms=args.latency_ms) as server:
        url = f"{server.url}/chat/completions"
        print(f"sim-lm pid {server.pid}, latency {args.latency_ms} ms, cpus {os.cpu_count()}")
        print(HEADER)
        for concurrency in args.concurrency:
            requests = max(args.requests, concurrency * 4)
            result = asyncio.run(drive(url, server.pid, concurrency, requests, args.seconds))
            print(result.line(), flush=True)


if __name__ == "__main__":
    main()
