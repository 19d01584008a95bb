"""GEPA and SIMBA: dspex vs DSPy 3.4.1 on the same workload, wall time, LM calls and dev score.

Both systems optimize ``ChainOfThought("question -> answer: int")`` on the simulated LM's
arithmetic task (its own process, a fixed latency per request, LM caches off) with the
same metric, data, seed and threads, then score the result on the same dev set:

- ``--optimizer gepa``: ``auto="light"``, the task LM as reflection LM, a metric that
  gives feedback with its score, train and val sets;
- ``--optimizer simba``: ``bsize``, ``max_steps``, a plain metric, the trainset.

DSPy runs in its own virtualenv (``benchmarks/dspy_venv.py``); without one only dspex is
measured.

    python benchmarks/reflective_optimizers.py --optimizer gepa [--latency-ms 50] [--train 30] [--val 30]
    python benchmarks/reflective_optimizers.py --optimizer simba [--train 64] [--bsize 32] [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from dspy_venv import DEFAULT_PYTHON, run_in_dspy_venv

FEEDBACK = "Wrong: the answer is {answer}. Work step by step and double-check every operation."

# The program, metric and optimizer, written once against a `dspy`-shaped module: the
# runner below executes it with DSPy in DSPy's venv, and `run_dspex` with dspex here.
WORKLOAD = r'''
def correct(gold, pred):
    try:
        return int(gold.answer) == int(pred.answer)
    except (TypeError, ValueError):
        return False


def make_metric(dspy, config):
    if config["optimizer"] == "simba":
        return lambda gold, pred: float(correct(gold, pred))

    def metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
        if correct(gold, pred):
            return dspy.Prediction(score=1.0, feedback="Correct.")
        return dspy.Prediction(score=0.0, feedback=config["feedback"].format(answer=gold.answer))

    return metric


def rows(dspy, config, name):
    return [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in config[name]]


def compile_program(dspy, config, lm, **extra):
    program = dspy.ChainOfThought("question -> answer: int")
    metric = make_metric(dspy, config)
    if config["optimizer"] == "gepa":
        optimizer = dspy.GEPA(metric=metric, auto="light", reflection_lm=lm, num_threads=config["threads"], seed=0)
        return optimizer.compile(program, trainset=rows(dspy, config, "train"), valset=rows(dspy, config, "val"), **extra)
    optimizer = dspy.SIMBA(metric=metric, bsize=config["bsize"], max_steps=config["steps"], num_threads=config["threads"])
    return optimizer.compile(program, trainset=rows(dspy, config, "train"), seed=0, **extra)


def dev_score(dspy, config, program):
    evaluate = dspy.Evaluate(devset=rows(dspy, config, "dev"), metric=lambda g, p, t=None: correct(g, p), num_threads=16)
    return float(evaluate(program).score)
'''

DSPY_RUNNER = WORKLOAD + r'''
import json, sys, time, urllib.request
import dspy

config = json.load(open(sys.argv[1]))
lm = dspy.LM("openai/sim-lm", api_base=config["url"], api_key="sim-local", cache=False)
dspy.configure(lm=lm)
urllib.request.urlopen(urllib.request.Request(config["base_url"] + "/admin/reset", data=b"{}", method="POST")).read()
start = time.perf_counter()
optimized = compile_program(dspy, config, lm)
wall = time.perf_counter() - start
calls = json.loads(urllib.request.urlopen(config["base_url"] + "/stats").read())["total"]
print("RESULT " + json.dumps({"wall": wall, "calls": calls, "score": dev_score(dspy, config, optimized),
                              "version": dspy.__version__}))
'''


def run_dspex(server: Any, config: dict[str, Any]) -> dict[str, Any]:
    import dspex
    from dspex.optimizers.run_store import RunStore

    workload: dict[str, Any] = {}
    exec(WORKLOAD, workload)  # the same code DSPy's runner executes
    lm = dspex.LM("openai/sim-lm", api_base=server.url, api_key="sim-local", cache=False)
    with dspex.context(lm=lm), tempfile.TemporaryDirectory() as scratch:
        server.reset_stats()
        start = time.perf_counter()
        optimized = workload["compile_program"](dspex, config, lm, store=RunStore(os.path.join(scratch, "runs.db")))
        wall = time.perf_counter() - start
        calls = int(server.stats()["total"])
        score = workload["dev_score"](dspex, config, optimized)
    return {"wall": wall, "calls": calls, "score": score}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--optimizer", choices=("gepa", "simba"), required=True)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--train", type=int, default=None, help="default: 30 for GEPA, 64 for SIMBA")
    parser.add_argument("--val", type=int, default=30, help="GEPA's valset")
    parser.add_argument("--bsize", type=int, default=32, help="SIMBA's mini-batch")
    parser.add_argument("--steps", type=int, default=8, help="SIMBA's max_steps")
    parser.add_argument("--dev", type=int, default=100)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--dspy-python", default=DEFAULT_PYTHON)
    args = parser.parse_args()
    train = args.train or (30 if args.optimizer == "gepa" else 64)

    from dspex.simlm import datasets, spawn_sim_lm

    pairs = [(r["question"], r["answer"]) for r in datasets.load("arithmetic", "train")]
    config: dict[str, Any] = {
        "optimizer": args.optimizer,
        "train": pairs[:train],
        "val": pairs[train : train + args.val],
        "dev": [(r["question"], r["answer"]) for r in datasets.load("arithmetic", "dev")[: args.dev]],
        "threads": args.threads,
        "bsize": args.bsize,
        "steps": args.steps,
        "feedback": FEEDBACK,
    }
    with spawn_sim_lm(seed=0, latency_ms=args.latency_ms) as server:
        ours = run_dspex(server, config)
        theirs = run_in_dspy_venv(args.dspy_python, DSPY_RUNNER, {**config, "url": server.url, "base_url": server.base_url})
    setup = (f"auto=light, train {train} / val {args.val}" if args.optimizer == "gepa"
             else f"bsize={args.bsize} max_steps={args.steps}, train {train}")
    print(f"{args.optimizer.upper()} {setup} / dev {args.dev}, {args.latency_ms:g} ms per request, {args.threads} threads")
    print(f"dspex      {ours['wall']:7.1f} s  {ours['calls']:5d} LM calls  dev {ours['score']:.1f}")
    if isinstance(theirs, str):
        print(theirs)
        return
    print(f"DSPy {theirs['version']} {theirs['wall']:7.1f} s  {theirs['calls']:5d} LM calls  dev {theirs['score']:.1f}")
    print(f"dspex is {theirs['wall'] / ours['wall']:.1f}x faster ({ours['calls']} vs {theirs['calls']} LM calls)")


if __name__ == "__main__":
    main()
