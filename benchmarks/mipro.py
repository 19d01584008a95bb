"""MIPROv2 ``auto="light"``: dspex vs DSPy on the simulated LM over HTTP.

Both optimize the same zero-shot ``question -> answer`` program on the same
bundled dataset against one simulated LM server in its own process (``spawn_sim_lm``) with a fixed
latency per request, with LM caches off. For each: wall time of the compile,
LM requests the server saw during it, and the compiled program's score on the
dev split. DSPy runs in its own virtualenv in a subprocess (install it with
``python -m venv /tmp/dspy-venv && /tmp/dspy-venv/bin/pip install dspy``);
without one, only dspex is measured.

    python benchmarks/mipro.py [--latency-ms 100] [--task arithmetic] [--train 100]
                               [--dev 200] [--threads 64] [--seeds 9,10,11]
                               [--show-programs] [--timeout 900]
                               [--dspy-python /tmp/dspy-venv/bin/python]

Each system makes one warm-up LM call before the timed compile, so neither
pays its HTTP stack's first import inside it (DSPy imports it with ``dspy``,
dspex on first use); both import optuna inside the compile, as both do lazily.

The simulated LM reads both dspex's and DSPy's prompt layouts, so both
optimizers' instructions and demos count the same way. One seed's dev score
moves by a few points with the program it picks; ``--seeds`` runs several and
reports the means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

DSPY_RUNNER = r"""
import inspect, json, sys, time, urllib.request
import dspy

config = json.load(open(sys.argv[1]))

def post(path):
    request = urllib.request.Request(config["base_url"] + path, data=b"{}", method="POST")
    urllib.request.urlopen(request).read()

def stats():
    return json.loads(urllib.request.urlopen(config["base_url"] + "/stats").read())

def rows(name):
    return [dspy.Example(question=r["question"], answer=r["answer"]).with_inputs("question")
            for r in config[name]]

lm = dspy.LM("openai/sim-lm", api_base=config["url"], api_key="sim-local", cache=False)
dspy.configure(lm=lm)
metric = dspy.evaluate.answer_exact_match
student = dspy.Predict("question -> answer")
optimizer = dspy.MIPROv2(metric=metric, auto="light", num_threads=config["threads"], seed=config["seed"])
options = {"trainset": rows("train")}
if "requires_permission_to_run" in inspect.signature(optimizer.compile).parameters:
    options["requires_permission_to_run"] = False
lm("Say hello.")  # warm-up: first-call imports and one connection, outside the timing
post("/admin/reset")
start = time.perf_counter()
compiled = optimizer.compile(student, **options)
wall = time.perf_counter() - start
calls = stats()["total"]
evaluate = dspy.Evaluate(devset=rows("dev"), metric=metric, num_threads=config["threads"])
score = float(evaluate(compiled).score)
predictor = compiled.predictors()[0]
print("RESULT " + json.dumps({"wall": wall, "lm_calls": calls, "score": score,
                               "version": dspy.__version__,
                               "instructions": predictor.signature.instructions,
                               "demos": len(predictor.demos)}))
"""


@dataclass
class Outcome:
    system: str
    seed: int
    wall: float
    lm_calls: int
    score: float
    instructions: str = ""
    demos: int = 0


def load_rows(task: str, split: str, n: int) -> list[dict[str, str]]:
    from dspex.simlm import datasets

    return [
        {"question": r["question"], "answer": str(r["answer"])}
        for r in datasets.load(task, split)[:n]
    ]  # type: ignore[arg-type]


async def run_dspex(
    url: str,
    server: Any,
    train: list[dict[str, str]],
    dev: list[dict[str, str]],
    threads: int,
    seed: int,
) -> Outcome:
    import dspex
    from dspex.optimizers.mipro import MIPROv2
    from dspex.optimizers.run_store import RunStore

    def examples(rows: list[dict[str, str]]) -> list[Any]:
        return [dspex.Example(**r).with_inputs("question") for r in rows]

    lm = dspex.LM("openai/sim-lm", api_base=url, api_key="sim-local", cache=False)
    store = RunStore(Path(tempfile.mkdtemp(prefix="dspex-bench-")) / "runs.sqlite3")
    optimizer = MIPROv2(
        metric=dspex.answer_exact_match, auto="light", num_threads=threads, seed=seed
    )
    with dspex.context(lm=lm):
        # Warm-up: first-call imports (the HTTP client) and one connection, outside the timing.
        await lm.acall("Say hello.")
        server.reset_stats()
        start = time.perf_counter()
        compiled = await optimizer.acompile(
            dspex.Predict("question -> answer"), trainset=examples(train), store=store
        )
        wall = time.perf_counter() - start
        calls = int(server.stats()["total"])
        evaluate = dspex.Evaluate(
            devset=examples(dev), metric=dspex.answer_exact_match, num_threads=threads
        )
        score = (await evaluate.acall(compiled)).score
    predictor = compiled.predictors()[0]
    return Outcome(
        "dspex",
        seed,
        wall,
        calls,
        score,
        predictor.signature.instructions,
        len(predictor.demos),
    )


def run_dspy(
    python: str,
    server: Any,
    train: list[dict[str, str]],
    dev: list[dict[str, str]],
    threads: int,
    seed: int,
    timeout: float,
) -> Outcome | str:
    if not Path(python).exists():
        return f"no DSPy interpreter at {python} (see the module docstring to install one)"
    workdir = Path(tempfile.mkdtemp(prefix="dspy-bench-"))
    config = {
        "url": server.url,
        "base_url": server.base_url,
        "train": train,
        "dev": dev,
        "threads": threads,
        "seed": seed,
    }
    (workdir / "config.json").write_text(json.dumps(config))
    (workdir / "runner.py").write_text(DSPY_RUNNER)
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "DSPY_CACHEDIR": str(workdir / "cache"),
    }
    try:
        done = subprocess.run(
            [python, str(workdir / "runner.py"), str(workdir / "config.json")],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=workdir,
        )
    except subprocess.TimeoutExpired:
        return f"DSPy did not finish within {timeout:.0f} s"
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            data = json.loads(line.removeprefix("RESULT "))
            return Outcome(
                f"DSPy {data['version']}",
                seed,
                data["wall"],
                data["lm_calls"],
                data["score"],
                data["instructions"],
                data["demos"],
            )
    return f"DSPy failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}"


def report(outcomes: list[Outcome], problems: list[str], args: argparse.Namespace) -> None:
    print(
        f"\nMIPROv2 auto='light', task={args.task}, trainset={args.train}, dev={args.dev}, "
        f"latency={args.latency_ms:g} ms, threads={args.threads}, "
        f"seeds={','.join(map(str, args.seeds))}"
    )
    print(f"{'system':<14}{'seed':>5}{'wall s':>8}{'LM calls':>10}{'dev score':>11}{'demos':>7}")
    for o in outcomes:
        print(
            f"{o.system:<14}{o.seed:>5}{o.wall:>8.2f}{o.lm_calls:>10}{o.score:>11.1f}{o.demos:>7}"
        )
        if args.show_programs:
            print(f"{'':<14}instructions: {' '.join(o.instructions.split())[:150]}")
    systems = list(dict.fromkeys(o.system for o in outcomes))
    means = {name: _means([o for o in outcomes if o.system == name]) for name in systems}
    for name, (wall, calls, score) in means.items():
        print(f"{name:<14}{'mean':>5}{wall:>8.2f}{calls:>10.0f}{score:>11.1f}")
    if len(systems) == 2:
        (_, ours), (_, theirs) = means.items()
        print(
            f"speed-up (DSPy wall / dspex wall, means): {theirs[0] / ours[0]:.1f}x; "
            f"LM calls (DSPy / dspex): {theirs[1] / max(ours[1], 1):.2f}; "
            f"dev score (dspex - DSPy): {ours[2] - theirs[2]:+.1f} points"
        )
    for problem in problems:
        print(f"note: {problem}")
    if args.json:
        print(json.dumps({"results": [asdict(o) for o in outcomes], "problems": problems}))


def _means(outcomes: list[Outcome]) -> tuple[float, float, float]:
    n = len(outcomes)
    return (
        sum(o.wall for o in outcomes) / n,
        sum(o.lm_calls for o in outcomes) / n,
        sum(o.score for o in outcomes) / n,
    )


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}")
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--task", default="arithmetic")
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--dev", type=int, default=200)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument(
        "--seeds",
        type=_seed_list,
        default=[9],
        help="comma-separated optimizer seeds; each runs on both systems",
    )
    parser.add_argument("--show-programs", action="store_true", help="print chosen instructions")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per system")
    parser.add_argument("--dspy-python", default="/tmp/dspy-venv/bin/python")
    parser.add_argument("--skip-dspy", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from dspex.simlm import spawn_sim_lm

    train, dev = load_rows(args.task, "train", args.train), load_rows(args.task, "dev", args.dev)
    outcomes: list[Outcome] = []
    problems: list[str] = []
    with spawn_sim_lm(seed=0, latency_ms=args.latency_ms) as server:
        print(f"simulated LM at {server.url}, {args.latency_ms:g} ms per request", file=sys.stderr)
        for seed in args.seeds:
            outcomes.append(
                asyncio.run(
                    asyncio.wait_for(
                        run_dspex(server.url, server, train, dev, args.threads, seed),
                        args.timeout,
                    )
                )
            )
            if args.skip_dspy:
                continue
            theirs = run_dspy(
                args.dspy_python, server, train, dev, args.threads, seed, args.timeout
            )
            if isinstance(theirs, Outcome):
                outcomes.append(theirs)
            else:
                problems.append(theirs)
    report(outcomes, problems, args)


if __name__ == "__main__":
    main()
