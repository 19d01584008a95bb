"""Evaluation wall time against the ideal ceil(N/C) x latency.

N examples, C in flight, an LM that takes `latency` per call: no runner can
beat ceil(N/C) x latency (N=1000, C=64, 100 ms: 16 x 0.1 = 1.6 s). This prints
each runner's wall time and its ratio to that ideal, in one run, on the same
simulated LM (a subprocess) and the same data:

- dspex in-process (`Evaluate(runner="local")`);
- dspex on Ray (`run_ray`, C split over the workers; warm pool, and the cold
  first run that also starts the worker actors);
- DSPy's `Evaluate(num_threads=C)`, when a Python with DSPy is given (`--dspy`,
  default /tmp/dspy-venv/bin/python if present).

    python benchmarks/evaluate.py
    python benchmarks/evaluate.py --n 1000 --concurrency 64 --latency-ms 100 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import dspex
from dspex.runtime.evaluation.ray_runner import DispatchStats, EvalWorkerPool, RunOptions, run_ray
from dspex.simlm import datasets, spawn_sim_lm

SIGNATURE = "question -> answer: int"
DSPY_PYTHON = "/tmp/dspy-venv/bin/python"


def rows(n: int) -> list[dict[str, Any]]:
    pool = datasets.load("arithmetic", "train") + datasets.load("arithmetic", "dev")
    return [
        {"question": pool[i % len(pool)]["question"], "answer": pool[i % len(pool)]["answer"]}
        for i in range(n)
    ]


def metric(example: Any, pred: Any) -> bool:
    return str(example.answer).strip() == str(pred.answer).strip()


def devset(data: list[dict[str, Any]]) -> list[dspex.Example]:
    return [dspex.Example(**row).with_inputs("question") for row in data]


def lm(url: str) -> dspex.LM:
    return dspex.LM("openai/sim-1", api_base=url, api_key="x", cache=False, timeout=30.0)


def in_process(url: str, data: list[dict[str, Any]], concurrency: int) -> tuple[float, float]:
    program = dspex.Predict(SIGNATURE)
    with dspex.context(lm=lm(url)):
        program(question=data[0]["question"])  # warm the HTTP session
        evaluate = dspex.Evaluate(
            devset=devset(data), metric=metric, num_threads=concurrency, runner="local"
        )
        started = time.perf_counter()
        result = evaluate(program)
        return time.perf_counter() - started, result.score


async def on_ray(
    url: str, data: list[dict[str, Any]], concurrency: int, workers: int, pool: EvalWorkerPool
) -> tuple[float, float, DispatchStats]:
    program = dspex.Predict(SIGNATURE)
    options = RunOptions(num_threads=concurrency, max_errors=None)
    stats = DispatchStats()
    with dspex.context(lm=lm(url)):
        started = time.perf_counter()
        outcome = await run_ray(
            program, metric, devset(data), options, workers=workers, pool=pool, stats=stats
        )
    seconds = time.perf_counter() - started
    score = 100 * sum(score for _, _, score in outcome.results) / len(outcome.results)
    return seconds, round(score, 2), stats


DSPY_SCRIPT = """
import json, sys, time
import dspy
url, concurrency = sys.argv[1], int(sys.argv[2])
data = json.load(sys.stdin)
dspy.configure(lm=dspy.LM("openai/sim-1", api_base=url, api_key="x", cache=False))
devset = [dspy.Example(**row).with_inputs("question") for row in data]
def metric(example, pred, trace=None):
    return str(example.answer).strip() == str(pred.answer).strip()
program = dspy.Predict("question -> answer: int")
program(question=devset[0].question)
evaluate = dspy.Evaluate(devset=devset, metric=metric, num_threads=concurrency,
                         display_progress=False)
started = time.perf_counter()
result = evaluate(program)
print(json.dumps({"seconds": time.perf_counter() - started, "score": float(result.score)}))
"""


def with_dspy(python: str, url: str, data: list[dict[str, Any]], concurrency: int) -> Any:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DSP_CACHEBOOL": "false"}
    done = subprocess.run(
        [python, "-c", DSPY_SCRIPT, url, str(concurrency)],
        input=json.dumps(data),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        return f"failed: {done.stderr.strip().splitlines()[-1:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def line(name: str, seconds: float, ideal: float, score: float, note: str = "") -> str:
    return f"{name:<34} {seconds:7.2f} s  {seconds / ideal:5.2f}x ideal  score {score:6.2f}  {note}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--workers", type=int, default=2, help="Ray eval workers")
    parser.add_argument("--dspy", default=DSPY_PYTHON, help="a Python with dspy installed")
    args = parser.parse_args()

    n, c = args.n, args.concurrency
    ideal = math.ceil(n / c) * args.latency_ms / 1000
    data = rows(n)
    print(f"N={n} C={c} latency={args.latency_ms:g} ms: ideal ceil(N/C) x latency = {ideal:.2f} s")
    server = spawn_sim_lm(seed=0, latency_ms=args.latency_ms)
    try:
        seconds, score = in_process(server.url, data, c)
        print(line("dspex in-process", seconds, ideal, score))
        print(ray_lines(server.url, data, c, args.workers, ideal))
        if Path(args.dspy).exists():
            dspy = with_dspy(args.dspy, server.url, data, c)
            if isinstance(dspy, dict):
                print(
                    line(f"DSPy Evaluate(num_threads={c})", dspy["seconds"], ideal, dspy["score"])
                )
            else:
                print(f"DSPy: {dspy}")
        else:
            print(f"DSPy: not measured ({args.dspy} not found)")
    finally:
        server.stop()


def ray_lines(url: str, data: list[dict[str, Any]], c: int, workers: int, ideal: float) -> str:
    import ray

    # A private temp dir: this Ray's address file never meets another Ray
    # instance on the machine. Loopback only (the env var keeps Ray from
    # swapping 127.0.0.1 for the IP it finds by a UDP connect).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    temp_dir = tempfile.mkdtemp(prefix="dspex-bench-ray-")
    os.environ["RAY_TMPDIR"] = temp_dir
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    pool = EvalWorkerPool()
    try:
        cold = asyncio.run(on_ray(url, data, c, workers, pool))
        warm = asyncio.run(on_ray(url, data, c, workers, pool))
    finally:
        pool.shutdown()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    name = f"dspex Ray, {workers} workers x {warm[2].per_worker_concurrency}"
    chunks = f"chunks of {warm[2].chunk_size}, <= {warm[2].max_outstanding} out"
    return "\n".join(
        [
            line(name, warm[0], ideal, warm[1], chunks),
            line(name + " (cold)", cold[0], ideal, cold[1], "includes starting the actors"),
        ]
    )


if __name__ == "__main__":
    main()
