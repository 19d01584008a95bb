"""MIPROv2 light and BootstrapRS: in-process vs on the runtime (``dspex.init()``), warm.

Both optimizers compile ``ChainOfThought("question -> answer")`` on the
bundled arithmetic task (train 100 from the train split, valset 100 from the
dev split's tail; the compiled program is scored, untimed, on the dev split's
head) against one simulated LM server in its own process with a fixed latency
per request and LM caches off, in each setting:

- ``num_threads=16``, 50 ms per request (the setting of issue 11)
- ``num_threads=64``, 100 ms per request

First every optimizer runs in-process (no Ray in this process yet), then
``dspex.init(num_cpus=2)`` starts a local runtime and every optimizer runs again
through its ``OptimizationCoordinator``. Each (optimizer, mode) runs once to warm
up (imports, connections, actors) and is then timed ``--repeats`` times; the
report shows the best and the mean.

With ``--modes ...,dspy`` the same two optimizers (DSPy's ``MIPROv2`` and
``BootstrapFewShotWithRandomSearch``, same parameters, same ``ChainOfThought``
student, same data) also run in DSPy 3.4 in its own virtualenv, once per
setting after one warm-up LM call (install it with ``python -m venv
/tmp/dspy-venv && /tmp/dspy-venv/bin/pip install dspy``), and the report shows
DSPy wall / runtime wall (target: at least 5) next to both LM call counts and
dev scores.

Per timed compile: wall time, LM requests the server saw, requests in flight
at the server (``calls x latency / wall``, i.e. averaged over the whole
compile, and averaged over the traffic window only), the traffic window (first
to last request, sampled from ``/stats`` every ``--sample-ms``) and the dev
score. Last, the ratio runtime wall / in-process wall per optimizer and
setting (target: at most 1.2).

    python benchmarks/runtime_optimizers.py [--settings 16:50,64:100] [--repeats 1]
                                            [--optimizers mipro,rs] [--sample-ms 10]
                                            [--modes in-process,runtime,dspy]
                                            [--dspy-python /tmp/dspy-venv/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from dspy_venv import DEFAULT_PYTHON, run_in_dspy_venv

TASK = "arithmetic"


@dataclass
class Outcome:
    setting: str
    optimizer: str
    mode: str
    wall: float
    lm_calls: int
    in_flight: float
    """Average requests in flight over the whole compile (calls x latency / wall)."""
    window: float
    """First to last request at the server (sampled), seconds; 0 without sampling."""
    window_in_flight: float
    """Average in-flight requests inside the traffic window (sampled)."""
    peak: int
    score: float


class Sampler:
    """Polls the server's ``/stats`` from a thread: when requests started and ended, how
    many were in flight. Cheap (one small GET per tick) and identical in both modes."""

    def __init__(self, host: str, port: int, period: float) -> None:
        self.host, self.port, self.period = host, port, period
        self.samples: list[tuple[float, int, int]] = []  # (time, total, in_flight)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        if self.period > 0:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        while not self._stop.is_set():
            conn.request("GET", "/stats")
            data = json.loads(conn.getresponse().read())
            self.samples.append((time.perf_counter(), int(data["total"]), int(data["in_flight"])))
            self._stop.wait(self.period)
        conn.close()

    def bounds(self) -> tuple[float, float] | None:
        """(first request seen, last request ended), on perf_counter's clock."""
        busy = [s for s in self.samples if s[1] > 0]
        if not busy:
            return None
        final_total = busy[-1][1]
        end = next((t for t, total, flying in busy if total == final_total and flying == 0), busy[-1][0])
        return busy[0][0], end

    def window(self) -> tuple[float, float]:
        """(traffic window seconds, mean in flight inside it) from the samples."""
        busy = [s for s in self.samples if s[1] > 0]
        if not busy:
            return 0.0, 0.0
        first = busy[0][0]
        final_total = busy[-1][1]
        # The last request ended at the first sample that sees the final total and nothing in flight.
        end = next((t for t, total, flying in busy if total == final_total and flying == 0), busy[-1][0])
        inside = [flying for t, _, flying in busy if t <= end]
        return end - first, sum(inside) / max(len(inside), 1)


DSPY_RUNNER = r"""
import json, sys, time, urllib.request
import dspy

config = json.load(open(sys.argv[1]))

def stats():
    return json.loads(urllib.request.urlopen(config["base_url"] + "/stats").read())

def reset():
    request = urllib.request.Request(config["base_url"] + "/admin/reset", data=b"{}", method="POST")
    urllib.request.urlopen(request).read()

def examples(name):
    return [dspy.Example(**r).with_inputs("question") for r in config[name]]

def exact(example, prediction, trace=None):
    return str(example.answer).strip() == str(prediction.answer).strip()

lm = dspy.LM("openai/sim-lm", api_base=config["url"], api_key="sim-local", cache=False)
dspy.configure(lm=lm)
threads = config["threads"]
if config["optimizer"] == "mipro":
    optimizer = dspy.MIPROv2(metric=exact, auto="light", num_threads=threads, seed=9)
else:
    optimizer = dspy.BootstrapFewShotWithRandomSearch(
        metric=exact, max_bootstrapped_demos=4, max_labeled_demos=4,
        num_candidate_programs=8, num_threads=threads,
    )
lm("Say hello.")  # warm-up: first-call imports and one connection, outside the timing
reset()
start = time.perf_counter()
program = optimizer.compile(dspy.ChainOfThought("question -> answer"),
                            trainset=examples("train"), valset=examples("val"))
wall = time.perf_counter() - start
calls = stats()["total"]
score = dspy.Evaluate(devset=examples("dev"), metric=exact, num_threads=threads)(program).score
print("RESULT " + json.dumps({"wall": wall, "lm_calls": calls, "score": float(score),
                               "version": dspy.__version__}))
"""


def run_dspy(
    python: str, server: Any, name: str, threads: int, latency_ms: float, data: dict[str, list[Any]]
) -> Outcome | str:
    """One compile in DSPy, in its own interpreter (an Outcome), or why not (a str)."""
    config = {
        "url": server.url,
        "base_url": server.base_url,
        "optimizer": name,
        "threads": threads,
        **{split: [{"question": e.question, "answer": e.answer} for e in found] for split, found in data.items()},
    }
    found = run_in_dspy_venv(python, DSPY_RUNNER, config)
    if isinstance(found, str):
        return f"DSPy {LABELS[name]}: {found}"
    return Outcome(
        setting=f"{threads} threads, {latency_ms:g} ms",
        optimizer=LABELS[name],
        mode="dspy",
        wall=found["wall"],
        lm_calls=int(found["lm_calls"]),
        in_flight=found["lm_calls"] * latency_ms / 1000 / found["wall"],
        window=0.0,
        window_in_flight=0.0,
        peak=0,
        score=float(found["score"]),  # a percentage, as dspex reports it
    )


def rows(split: str, start: int, n: int) -> list[dict[str, str]]:
    from dspex.simlm import datasets

    found = datasets.load(TASK, split)[start : start + n]  # type: ignore[arg-type]
    return [{"question": r["question"], "answer": str(r["answer"])} for r in found]


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return str(example.answer).strip() == str(prediction.answer).strip()


def make_optimizer(name: str, threads: int) -> Any:
    from dspex.optimizers import BootstrapRS
    from dspex.optimizers.mipro import MIPROv2

    if name == "mipro":
        return MIPROv2(metric=exact, auto="light", num_threads=threads, seed=9)
    return BootstrapRS(
        exact,
        max_bootstrapped_demos=4,
        max_labeled_demos=4,
        num_candidate_programs=8,
        num_threads=threads,
    )


LABELS = {"mipro": "MIPROv2 light", "rs": "BootstrapRS"}


async def measure(
    server: Any,
    name: str,
    mode: str,
    threads: int,
    latency_ms: float,
    data: dict[str, list[Any]],
    store: Any,
    sample_ms: float,
) -> Outcome:
    import dspex

    optimizer = make_optimizer(name, threads)
    student = dspex.ChainOfThought("question -> answer")
    server.reset_stats()
    with Sampler(server.host, server.port, sample_ms / 1000) as sampler:
        start = time.perf_counter()
        program = await optimizer.acompile(
            student,
            trainset=data["train"],
            valset=data["val"],
            store=store,
            coordinator=mode == "runtime",
        )
        wall = time.perf_counter() - start
    seen = server.stats()
    window, window_in_flight = sampler.window()
    bounds = sampler.bounds()
    if bounds is not None and os.environ.get("DSPEX_BENCH_PHASES"):
        print(
            f"    {mode} {LABELS[name]}: {bounds[0] - start:.2f} s before the first request, "
            f"{start + wall - bounds[1]:.2f} s after the last",
            flush=True,
        )
    calls = int(seen["total"])
    score = (
        await dspex.Evaluate(
            devset=data["dev"], metric=exact, num_threads=threads, runner="local"
        ).acall(program)
    ).score
    return Outcome(
        setting=f"{threads} threads, {latency_ms:g} ms",
        optimizer=LABELS[name],
        mode=mode,
        wall=wall,
        lm_calls=calls,
        in_flight=calls * latency_ms / 1000 / wall,
        window=window,
        window_in_flight=window_in_flight,
        peak=int(seen["max_in_flight"]),
        score=float(score),
    )


async def run_mode(
    mode: str,
    servers: dict[tuple[int, float], Any],
    optimizers: list[str],
    data: dict[str, list[Any]],
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> list[Outcome]:
    import dspex
    from dspex.optimizers.run_store import RunStore

    store = RunStore(Path(tempfile.mkdtemp(prefix="dspex-bench-")) / "runs.sqlite3")
    outcomes: list[Outcome] = []
    for (threads, latency_ms), server in servers.items():
        lm = dspex.LM("openai/sim-lm", api_base=server.url, cache=False)
        with dspex.context(lm=lm):
            for name in optimizers:
                for attempt in range(1 + args.repeats):
                    outcome = await measure(
                        server, name, mode, threads, latency_ms, data, store, args.sample_ms
                    )
                    kind = "warm-up" if attempt == 0 else "timed"
                    log(
                        f"{mode:<10} {outcome.setting:<20} {outcome.optimizer:<14} {kind:<8}"
                        f" {outcome.wall:6.2f} s  {outcome.lm_calls} calls"
                        f"  window {outcome.window:.2f} s  in flight {outcome.window_in_flight:.1f}"
                    )
                    if attempt > 0:
                        outcomes.append(outcome)
    return outcomes


def report(outcomes: list[Outcome], args: argparse.Namespace) -> None:
    print(f"\ntask={TASK}, train=100, val=100, dev=100, repeats={args.repeats} (after one warm-up)")
    header = (
        f"{'setting':<20}{'optimizer':<15}{'mode':<11}{'wall s':>8}{'best s':>8}{'LM calls':>9}"
        f"{'in flight':>10}{'window s':>9}{'in win':>8}{'peak':>6}{'dev':>7}"
    )
    print(header)
    groups: dict[tuple[str, str, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault((o.setting, o.optimizer, o.mode), []).append(o)
    means: dict[tuple[str, str, str], float] = {}
    for key, group in groups.items():
        n = len(group)
        wall = sum(o.wall for o in group) / n
        means[key] = wall
        print(
            f"{key[0]:<20}{key[1]:<15}{key[2]:<11}{wall:>8.2f}{min(o.wall for o in group):>8.2f}"
            f"{sum(o.lm_calls for o in group) / n:>9.0f}{sum(o.in_flight for o in group) / n:>10.1f}"
            f"{sum(o.window for o in group) / n:>9.2f}{sum(o.window_in_flight for o in group) / n:>8.1f}"
            f"{max(o.peak for o in group):>6}{sum(o.score for o in group) / n:>7.1f}"
        )
    dspy_keys = [key for key in groups if key[2] == "dspy"]
    if dspy_keys:
        print("\nDSPy wall / runtime wall (target >= 5), with LM calls and dev score (runtime vs DSPy):")
    for setting, optimizer, _ in dspy_keys:
        ours = groups.get((setting, optimizer, "runtime")) or groups.get((setting, optimizer, "in-process"))
        if not ours:
            continue
        theirs = groups[(setting, optimizer, "dspy")][0]
        wall = sum(o.wall for o in ours) / len(ours)
        print(
            f"  {setting:<20}{optimizer:<15}{theirs.wall / wall:6.2f}x  ({ours[0].mode})"
            f"  LM calls {sum(o.lm_calls for o in ours) / len(ours):.0f} vs {theirs.lm_calls}"
            f"  dev {sum(o.score for o in ours) / len(ours):.1f} vs {theirs.score:.1f}"
        )
    print("\nruntime wall / in-process wall (mean; target <= 1.2):")
    for setting, optimizer, mode in groups:
        if mode != "runtime" or (setting, optimizer, "in-process") not in means:
            continue
        ratio = means[(setting, optimizer, "runtime")] / means[(setting, optimizer, "in-process")]
        print(f"  {setting:<20}{optimizer:<15}{ratio:6.2f}x")
    if args.json:
        print(json.dumps([asdict(o) for o in outcomes]))


def _settings(text: str) -> list[tuple[int, float]]:
    found = []
    for part in text.split(","):
        threads, _, latency = part.partition(":")
        found.append((int(threads), float(latency)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--settings", type=_settings, default=[(16, 50.0), (64, 100.0)],
                        help="threads:latency_ms pairs, comma-separated")
    parser.add_argument("--optimizers", default="mipro,rs")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs after the warm-up")
    parser.add_argument("--sample-ms", type=float, default=10.0, help="0 turns the /stats sampler off")
    parser.add_argument("--modes", default="in-process,runtime")
    parser.add_argument("--dspy-python", default=DEFAULT_PYTHON)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from dspex.simlm import spawn_sim_lm

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    servers = {s: spawn_sim_lm(seed=0, latency_ms=s[1]) for s in args.settings}
    outcomes: list[Outcome] = []
    try:
        import dspex

        def examples(found: list[dict[str, str]]) -> list[Any]:
            return [dspex.Example(**r).with_inputs("question") for r in found]

        data = {
            "train": examples(rows("train", 0, 100)),
            "val": examples(rows("dev", 100, 100)),
            "dev": examples(rows("dev", 0, 100)),
        }
        if "in-process" in modes:
            outcomes += asyncio.run(run_mode("in-process", servers, optimizers, data, args, log))
        if "runtime" in modes:
            started = time.perf_counter()
            dspex.init(num_cpus=2)
            log(f"dspex.init took {time.perf_counter() - started:.1f} s")
            try:
                outcomes += asyncio.run(run_mode("runtime", servers, optimizers, data, args, log))
            finally:
                dspex.shutdown()
        if "dspy" in modes:
            for (threads, latency_ms), server in servers.items():
                for name in optimizers:
                    found = run_dspy(args.dspy_python, server, name, threads, latency_ms, data)
                    if isinstance(found, str):
                        log(found)
                        continue
                    log(f"dspy       {found.setting:<20} {found.optimizer:<14} timed    {found.wall:6.2f} s")
                    outcomes.append(found)
    finally:
        for server in servers.values():
            server.stop()
    report(outcomes, args)


if __name__ == "__main__":
    main()
