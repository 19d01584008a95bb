"""The Python sandbox (`dspex.PythonInterpreter`, Deno + Pyodide): what a start costs and
how many executions a warm process serves.

Measured in one run, each part bounded by a count and a time budget:

- cold start: a new interpreter's first result (a new Deno process loading Pyodide);
- cold executions/s: a new interpreter per execution (what a program that makes one
  interpreter per call pays);
- warm executions/s: one interpreter, its process reused (pool_size=1), for a trivial
  expression, for code that makes a variable round trip, and for one host tool call;
- a pool of 2 processes serving concurrent executions of CPU-bound code.

Pyodide is installed first if needed (``dspex sandbox install``); the sandbox needs no
network after that.

Usage: python benchmarks/sandbox.py [--cold 3] [--warm 300] [--budget 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

from dspex.sandbox import PythonInterpreter, install


def timed_loop(step: Callable[[int], object], count: int, budget: float) -> tuple[int, float]:
    """Run step(i) up to `count` times or until `budget` seconds pass: (runs, seconds)."""
    started = time.perf_counter()
    runs = 0
    while runs < count and time.perf_counter() - started < budget:
        step(runs)
        runs += 1
    return runs, time.perf_counter() - started


def cold_starts(count: int, budget: float) -> list[float]:
    seconds: list[float] = []

    def one(_: int) -> None:
        started = time.perf_counter()
        with PythonInterpreter() as interpreter:
            assert interpreter.execute("1 + 1") == 2
            seconds.append(time.perf_counter() - started)

    timed_loop(one, count, budget)
    return seconds


def warm_rate(code: str, count: int, budget: float, **kwargs: object) -> tuple[float, int]:
    with PythonInterpreter(**kwargs) as interpreter:  # type: ignore[arg-type]
        interpreter.execute("0")  # started before the clock runs
        runs, seconds = timed_loop(lambda i: interpreter.execute(code, {"n": i}), count, budget)
        return runs / seconds, runs


def pooled_rate(pool_size: int, count: int, budget: float) -> tuple[float, int]:
    code = "sum(i * i for i in range(200_000))"  # ~tens of ms of Python in the sandbox
    with PythonInterpreter(pool_size=pool_size) as interpreter:
        interpreter.start()

        async def run_all() -> tuple[int, float]:
            started = time.perf_counter()
            done = 0
            while done < count and time.perf_counter() - started < budget:
                batch = min(pool_size * 4, count - done)
                await asyncio.gather(*(interpreter.aexecute(code) for _ in range(batch)))
                done += batch
            return done, time.perf_counter() - started

        runs, seconds = asyncio.run(run_all())
        return runs / seconds, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cold", type=int, default=3, help="cold starts to time")
    parser.add_argument("--warm", type=int, default=300, help="warm executions per row")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per row at most")
    args = parser.parse_args()

    started = time.perf_counter()
    install.install()
    print(f"Pyodide {install.PYODIDE_VERSION} ready in {time.perf_counter() - started:.2f}s "
          f"({install.pyodide_dir()})")

    cold = cold_starts(args.cold, args.budget * 3)
    cold_median = statistics.median(cold)
    rows = [
        ("cold start (new process to first result)", f"{cold_median:.2f} s median of {len(cold)}"),
        ("cold: new interpreter per execution", f"{1 / cold_median:8.2f} exec/s"),
    ]
    for label, code, kwargs in [
        ("warm: `n + 1` (pool_size=1)", "n + 1", {}),
        ("warm: 10k-element list in and out", "list(range(n, n + 10_000))", {}),
        ("warm: one host tool call", "double(n)", {"tools": {"double": lambda x: 2 * x}}),
    ]:
        rate, runs = warm_rate(code, args.warm, args.budget, **kwargs)
        rows.append((label, f"{rate:8.1f} exec/s ({runs} runs)"))
    single, single_runs = pooled_rate(1, args.warm, args.budget)
    double, double_runs = pooled_rate(2, args.warm, args.budget)
    rows.append(("CPU-bound code, pool_size=1", f"{single:8.1f} exec/s ({single_runs} runs)"))
    rows.append(("CPU-bound code, pool_size=2, concurrent", f"{double:8.1f} exec/s ({double_runs} runs)"))

    width = max(len(label) for label, _ in rows)
    print()
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    warm_rate_trivial = float(rows[2][1].split()[0])
    print(f"\nwarm vs cold: {warm_rate_trivial * cold_median:.0f}x more executions per second")


if __name__ == "__main__":
    main()
