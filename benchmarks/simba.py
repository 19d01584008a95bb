"""SIMBA: dspex vs DSPy 3.4.1 on the same workload, wall time, LM calls and dev score.

Both optimize ``ChainOfThought("question -> answer: int")`` on the simulated LM's
arithmetic task (its own process, a fixed latency per request, LM caches off) with the
same metric, trainset, ``bsize``, ``max_steps``, seed and 16 threads, then score the
result on the same dev set. DSPy runs in its own virtualenv (``benchmarks/dspy_venv.py``);
without one only dspex is measured.

    python benchmarks/simba.py [--latency-ms 50] [--train 64] [--dev 100]
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

def rows(name):
    return [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in config[name]]

def correct(gold, pred):
    try:
        return int(gold.answer) == int(pred.answer)
    except (TypeError, ValueError):
        return False

def metric(gold, pred):
    return float(correct(gold, pred))

train, dev = rows("train"), rows("dev")
program = dspy.ChainOfThought("question -> answer: int")
simba = dspy.SIMBA(metric=metric, bsize=config["bsize"], max_steps=config["steps"], num_threads=config["threads"])
urllib.request.urlopen(urllib.request.Request(config["base_url"] + "/admin/reset", data=b"{}", method="POST")).read()
start = time.perf_counter()
optimized = simba.compile(program, trainset=train, seed=0)
wall = time.perf_counter() - start
calls = json.loads(urllib.request.urlopen(config["base_url"] + "/stats").read())["total"]
score = dspy.Evaluate(devset=dev, metric=lambda g, p, t=None: correct(g, p), num_threads=16)(optimized).score
print("RESULT " + json.dumps({"wall": wall, "calls": calls, "score": float(score), "version": dspy.__version__}))
"""



def run_dspex(server: object, config: dict[str, object]) -> dict[str, float]:
    import dspex

    lm = dspex.LM("openai/sim-lm", api_base=server.url, api_key="sim-local", cache=False)  # type: ignore[attr-defined]

    def rows(name: str) -> list[dspex.Example]:
        return [dspex.Example(question=q, answer=a).with_inputs("question") for q, a in config[name]]  # type: ignore[attr-defined]

    def correct(gold: dspex.Example, pred: dspex.Prediction) -> bool:
        try:
            return int(gold.answer) == int(pred.answer)
        except (TypeError, ValueError):
            return False

    def metric(gold: dspex.Example, pred: dspex.Prediction) -> float:
        return float(correct(gold, pred))

    import tempfile

    from dspex.optimizers.run_store import RunStore

    with dspex.context(lm=lm):
        program = dspex.ChainOfThought("question -> answer: int")
        simba = dspex.SIMBA(metric=metric, bsize=int(config["bsize"]), max_steps=int(config["steps"]),  # type: ignore[call-overload]
                            num_threads=int(config["threads"]))  # type: ignore[call-overload]
        server.reset_stats()  # type: ignore[attr-defined]
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            optimized = simba.compile(program, trainset=rows("train"), seed=0,
                                      store=RunStore(os.path.join(scratch, "runs.db")))
        wall = time.perf_counter() - start
        calls = int(server.stats()["total"])  # type: ignore[attr-defined]
        evaluate = dspex.Evaluate(devset=rows("dev"), metric=lambda g, p, t=None: correct(g, p), num_threads=16)
        score = evaluate(optimized).score
    return {"wall": wall, "calls": calls, "score": float(score)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--bsize", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--dev", type=int, default=100)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--dspy-python", default=DEFAULT_PYTHON)
    args = parser.parse_args()

    from dspex.simlm import datasets, spawn_sim_lm

    train_rows = datasets.load("arithmetic", "train")
    pairs = [(r["question"], r["answer"]) for r in train_rows]
    config: dict[str, object] = {
        "train": pairs[: args.train],
        "dev": [(r["question"], r["answer"]) for r in datasets.load("arithmetic", "dev")[: args.dev]],
        "threads": args.threads,
        "bsize": args.bsize,
        "steps": args.steps,
    }
    with spawn_sim_lm(seed=0, latency_ms=args.latency_ms) as server:
        ours = run_dspex(server, config)
        theirs = run_in_dspy_venv(args.dspy_python, DSPY_RUNNER, {**config, "url": server.url, "base_url": server.base_url})
    print(f"SIMBA bsize={args.bsize} max_steps={args.steps}, train {args.train} / dev {args.dev}, "
          f"{args.latency_ms:g} ms per request, {args.threads} threads")
    print(f"dspex      {ours['wall']:7.1f} s  {ours['calls']:5d} LM calls  dev {ours['score']:.1f}")
    if isinstance(theirs, str):
        print(theirs)
        return
    print(f"DSPy {theirs['version']} {theirs['wall']:7.1f} s  {theirs['calls']:5d} LM calls  dev {theirs['score']:.1f}")
    print(f"dspex is {theirs['wall'] / ours['wall']:.1f}x faster ({ours['calls']} vs {theirs['calls']} LM calls)")


if __name__ == "__main__":
    main()
