"""BestOfN: dspex runs the attempts at once, DSPy one after another; wall time at the same calls.

Both wrap ``ChainOfThought("question -> answer")`` in ``BestOfN(N, reward_fn, threshold)``
with a threshold no answer reaches, so every attempt runs, against one simulated LM server
(its own process, fixed latency per request, LM caches off) and answer the same
questions one after another. Reported per system: wall time per question, LM requests
the server saw, and dspex's speed-up. DSPy runs in its own virtualenv
(``python -m venv /tmp/dspy-venv && /tmp/dspy-venv/bin/pip install dspy``); without one
only dspex is measured.

    python benchmarks/refinement.py [--n 5] [--latency-ms 100] [--questions 5]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from dspy_venv import DEFAULT_PYTHON, run_in_dspy_venv

DSPY_RUNNER = r"""
import json, sys, time, urllib.request
import dspy

config = json.load(open(sys.argv[1]))
lm = dspy.LM("openai/sim-lm", api_base=config["url"], api_key="sim-local", cache=False)
dspy.configure(lm=lm)

def never(args, prediction):
    return 0.0

program = dspy.BestOfN(dspy.ChainOfThought("question -> answer"), N=config["n"], reward_fn=never, threshold=1.0)
lm("Say hello.")  # warm-up: first-call imports and one connection
request = urllib.request.Request(config["base_url"] + "/admin/reset", data=b"{}", method="POST")
urllib.request.urlopen(request).read()
start = time.perf_counter()
for question in config["questions"]:
    program(question=question)
wall = time.perf_counter() - start
calls = json.loads(urllib.request.urlopen(config["base_url"] + "/stats").read())["total"]
print("RESULT " + json.dumps({"wall": wall, "calls": calls, "version": dspy.__version__}))
"""


def never(args: object, prediction: object) -> float:
    return 0.0


def run_dspex(url: str, server: object, n: int, questions: list[str]) -> tuple[float, int]:
    import dspex

    lm = dspex.LM("openai/sim-lm", api_base=url, api_key="sim-local", cache=False)
    program = dspex.BestOfN(dspex.ChainOfThought("question -> answer"), N=n, reward_fn=never, threshold=1.0)
    with dspex.context(lm=lm):
        lm("Say hello.")
        server.reset_stats()  # type: ignore[attr-defined]
        start = time.perf_counter()
        for question in questions:
            program(question=question)
        wall = time.perf_counter() - start
    return wall, int(server.stats()["total"])  # type: ignore[attr-defined]


def run_dspy(python: str, server: object, n: int, questions: list[str]) -> tuple[float, int, str] | str:
    config = {"url": server.url, "base_url": server.base_url, "n": n, "questions": questions}  # type: ignore[attr-defined]
    found = run_in_dspy_venv(python, DSPY_RUNNER, config)
    if isinstance(found, str):
        return found
    return float(found["wall"]), int(found["calls"]), str(found["version"])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=5, help="attempts per question")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--dspy-python", default=DEFAULT_PYTHON)
    args = parser.parse_args()

    from dspex.simlm import datasets, spawn_sim_lm

    questions = [r["question"] for r in datasets.load("arithmetic", "dev")[: args.questions]]
    with spawn_sim_lm(seed=0, latency_ms=args.latency_ms) as server:
        ours_wall, ours_calls = run_dspex(server.url, server, args.n, questions)
        theirs = run_dspy(args.dspy_python, server, args.n, questions)
    per = len(questions)
    print(f"BestOfN N={args.n}, {per} questions, {args.latency_ms:g} ms per request, every attempt runs")
    print(f"dspex     {ours_wall / per:6.2f} s per question  {ours_calls} LM calls")
    if isinstance(theirs, str):
        print(theirs)
        return
    wall, calls, version = theirs
    print(f"DSPy {version} {wall / per:6.2f} s per question  {calls} LM calls")
    print(f"dspex is {wall / ours_wall:.1f}x faster at {ours_calls} vs {calls} LM calls")


if __name__ == "__main__":
    main()
