"""BootstrapFewShot and BootstrapRS: dspex vs DSPy on the simulated LM over HTTP.

Both compile the same ``ChainOfThought("question -> answer")`` program on the
same bundled dataset against one simulated LM server in its own process (``spawn_sim_lm``) with a
fixed latency per request, LM caches off, the same settings. For each run:
wall time of the compile, LM requests the server saw during it (and the most
it saw at once), and the compiled program's score on the dev split (not timed).
dspex's BootstrapFewShot also runs with ``num_threads=1`` to show that the
parallel run builds the same program as the serial algorithm.

DSPy runs in its own virtualenv in a subprocess (install it with
``python -m venv /tmp/dspy-venv && /tmp/dspy-venv/bin/pip install dspy``);
without one, only dspex is measured.

    python benchmarks/optimizers.py [--latency-ms 100] [--train 100] [--val 50]
                                    [--dev 200] [--threads 16] [--candidates 8]
                                    [--dspy-python /tmp/dspy-venv/bin/python] [--skip-dspy]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

TASK = "arithmetic"

DSPY_RUNNER = r"""
import json, sys, time, urllib.request
import dspy

config = json.load(open(sys.argv[1]))

def admin(path, data=None):
    request = urllib.request.Request(config["base_url"] + path, data=data, method="POST" if data else "GET")
    return json.loads(urllib.request.urlopen(request).read())

def examples(name):
    return [dspy.Example(**row).with_inputs("question") for row in config[name]]

def metric(example, prediction, trace=None):
    return str(example.answer).strip() == str(prediction.answer).strip()

dspy.configure(lm=dspy.LM("openai/sim-lm", api_base=config["url"], api_key="sim-local", cache=False))
train, val, dev = examples("train"), examples("val"), examples("dev")
settings = config["settings"]
for name in config["optimizers"]:
    if name == "BootstrapFewShot":
        optimizer = dspy.BootstrapFewShot(metric=metric, **settings["bootstrap"])
        options = {"trainset": train}
    else:
        optimizer = dspy.BootstrapFewShotWithRandomSearch(metric=metric, **settings["random_search"])
        options = {"trainset": train, "valset": val}
    admin("/admin/reset", b"{}")
    start = time.perf_counter()
    program = optimizer.compile(dspy.ChainOfThought("question -> answer"), **options)
    wall = time.perf_counter() - start
    seen = admin("/stats")
    score = dspy.Evaluate(devset=dev, metric=metric, num_threads=config["threads"])(program).score
    print("RESULT " + json.dumps({"optimizer": name, "wall": wall, "lm_calls": seen["total"],
                                   "peak": seen["max_in_flight"], "score": float(score),
                                   "system": "DSPy " + dspy.__version__}), flush=True)
"""


@dataclass
class Outcome:
    optimizer: str
    system: str
    wall: float
    lm_calls: int
    peak: int
    score: float
    note: str = ""


def settings(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The optimizer settings both systems use."""
    return {
        "bootstrap": {"max_bootstrapped_demos": 4, "max_labeled_demos": 16},
        "random_search": {
            "max_bootstrapped_demos": 4,
            "max_labeled_demos": 4,
            "num_candidate_programs": args.candidates,
            "num_threads": args.threads,
        },
    }


def load_rows(split: str, start: int, n: int) -> list[dict[str, str]]:
    from dspex.simlm import datasets

    rows = datasets.load(TASK, split)[start : start + n]  # type: ignore[arg-type]
    return [{"question": r["question"], "answer": str(r["answer"])} for r in rows]


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return str(example.answer).strip() == str(prediction.answer).strip()


# --- dspex ---------------------------------------------------------------------------


async def run_dspex(server: Any, rows: dict[str, list[dict[str, str]]], args: argparse.Namespace) -> list[Outcome]:
    import dspex
    from dspex.optimizers import BootstrapFewShot, BootstrapRS
    from dspex.optimizers.run_store import RunStore

    def examples(name: str) -> list[Any]:
        return [dspex.Example(**r).with_inputs("question") for r in rows[name]]

    train, val, dev = examples("train"), examples("val"), examples("dev")
    store = RunStore(Path(tempfile.mkdtemp(prefix="dspex-bench-")) / "runs.sqlite3")
    config = settings(args)
    runs: list[tuple[str, str, Any, dict[str, Any]]] = [
        ("BootstrapFewShot", "dspex", BootstrapFewShot(metric=exact, num_threads=args.threads, **config["bootstrap"]),
         {"trainset": train}),
        ("BootstrapFewShot", "dspex serial", BootstrapFewShot(metric=exact, num_threads=1, **config["bootstrap"]),
         {"trainset": train}),
        ("BootstrapRS", "dspex", BootstrapRS(metric=exact, **config["random_search"]), {"trainset": train, "valset": val}),
    ]
    outcomes: list[Outcome] = []
    states: dict[str, Any] = {}
    lm = dspex.LM("openai/sim-lm", api_base=server.url, api_key="sim-local", cache=False)
    with dspex.context(lm=lm):
        for name, system, optimizer, options in runs:
            server.reset_stats()
            start = time.perf_counter()
            program = await optimizer.acompile(dspex.ChainOfThought("question -> answer"), store=store, **options)
            wall = time.perf_counter() - start
            seen = server.stats()
            evaluate = dspex.Evaluate(devset=dev, metric=exact, num_threads=args.threads)
            score = (await evaluate.acall(program)).score
            states[system + name] = program.dump_state()
            note = f"{len(store.trials(program.run_info.run_id))} trials" if name == "BootstrapRS" else ""
            outcomes.append(Outcome(name, system, wall, int(seen["total"]), int(seen["max_in_flight"]), score, note))
    same = states["dspexBootstrapFewShot"] == states["dspex serialBootstrapFewShot"]
    outcomes[0].note = f"same program as serial: {same}"
    return outcomes


# --- DSPy ---------------------------------------------------------------------------


def run_dspy(server: Any, rows: dict[str, list[dict[str, str]]], args: argparse.Namespace) -> list[Outcome] | str:
    python = Path(args.dspy_python)
    if not python.exists():
        return f"no DSPy interpreter at {python} (see the module docstring to install one)"
    workdir = Path(tempfile.mkdtemp(prefix="dspy-bench-"))
    config = {
        "url": server.url,
        "base_url": server.base_url,
        "threads": args.threads,
        "settings": settings(args),
        "optimizers": ["BootstrapFewShot", "BootstrapRS"],
        **rows,
    }
    (workdir / "config.json").write_text(json.dumps(config))
    (workdir / "runner.py").write_text(DSPY_RUNNER)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DSPY_CACHEDIR": str(workdir / "cache")}
    try:
        done = subprocess.run(
            [str(python), str(workdir / "runner.py"), str(workdir / "config.json")],
            capture_output=True, text=True, timeout=args.timeout, env=env, cwd=workdir, check=False,
        )
    except subprocess.TimeoutExpired:
        return f"DSPy did not finish within {args.timeout:.0f} s"
    outcomes = [
        Outcome(**{k: v for k, v in json.loads(line.removeprefix("RESULT ")).items()})
        for line in done.stdout.splitlines()
        if line.startswith("RESULT ")
    ]
    if not outcomes:
        return f"DSPy failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}"
    return outcomes


# --- report ---------------------------------------------------------------------------


def report(outcomes: list[Outcome], problems: list[str], args: argparse.Namespace) -> None:
    print(
        f"\ntask={TASK}, trainset={args.train}, valset={args.val}, dev={min(args.dev, 200 - args.val)}, "
        f"latency={args.latency_ms:g} ms, threads={args.threads}, candidates={args.candidates}"
    )
    print(f"{'optimizer':<18}{'system':<14}{'wall s':>8}{'LM calls':>10}{'peak':>6}{'dev score':>11}  note")
    for o in outcomes:
        print(f"{o.optimizer:<18}{o.system:<14}{o.wall:>8.2f}{o.lm_calls:>10}{o.peak:>6}{o.score:>11.1f}  {o.note}")
    for name in ("BootstrapFewShot", "BootstrapRS"):
        ours = next((o for o in outcomes if o.optimizer == name and o.system == "dspex"), None)
        theirs = next((o for o in outcomes if o.optimizer == name and o.system.startswith("DSPy")), None)
        if ours and theirs:
            print(
                f"{name}: DSPy wall / dspex wall = {theirs.wall / ours.wall:.1f}x; "
                f"LM calls DSPy / dspex = {theirs.lm_calls / max(ours.lm_calls, 1):.2f}"
            )
    for problem in problems:
        print(f"note: {problem}")
    if args.json:
        print(json.dumps({"results": [asdict(o) for o in outcomes], "problems": problems}))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--val", type=int, default=50)
    parser.add_argument("--dev", type=int, default=200)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=8, help="num_candidate_programs for BootstrapRS")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed for DSPy")
    parser.add_argument("--dspy-python", default="/tmp/dspy-venv/bin/python")
    parser.add_argument("--skip-dspy", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from dspex.simlm import spawn_sim_lm

    # The valset comes from the dev split's tail, the scoring devset from its head.
    rows = {
        "train": load_rows("train", 0, args.train),
        "val": load_rows("dev", 200 - args.val, args.val),
        "dev": load_rows("dev", 0, min(args.dev, 200 - args.val)),
    }
    outcomes: list[Outcome] = []
    problems: list[str] = []
    with spawn_sim_lm(seed=0, latency_ms=args.latency_ms) as server:
        outcomes += asyncio.run(run_dspex(server, rows, args))
        if not args.skip_dspy:
            theirs = run_dspy(server, rows, args)
            if isinstance(theirs, str):
                problems.append(theirs)
            else:
                outcomes += theirs
    report(outcomes, problems, args)


if __name__ == "__main__":
    main()
