"""``dspex demo``: the main job, end to end on one machine.

Starts the simulated LM (unless a real model is named), evaluates a zero-shot
Predict and a ChainOfThought on a bundled task, optimizes the ChainOfThought,
prints a before/after table and saves the optimized program.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import dspex
import dspex.runtime
from dspex.errors import DspexError


@dataclass
class Row:
    program: str
    score: float
    lm_calls: int
    seconds: float
    errors: int


def run_demo(
    *,
    lm_name: str | None,
    api_base: str | None,
    task: str,
    dev_size: int,
    latency_ms: float,
    output: str,
    json_output: bool,
    use_ray: bool = True,
    num_cpus: int | None = None,
) -> int:
    from rich.console import Console

    console = Console(stderr=json_output)
    try:
        if use_ray:
            console.print("Starting the dspex runtime on a local Ray ...")
            dspex.runtime.init(num_cpus=num_cpus)
        with _language_model(lm_name, api_base, latency_ms, console, use_ray) as lm:
            rows, program = _run(lm, task, dev_size, console, show_progress=not json_output)
    except DspexError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    finally:
        if use_ray:
            dspex.runtime.shutdown()
    program.save(output)
    if json_output:
        print(json.dumps({"results": [asdict(r) for r in rows], "saved_to": os.path.abspath(output)}))
    else:
        _print_table(console, rows)
        console.print(f"Optimized program saved to [bold]{os.path.abspath(output)}[/bold]")
    return 0


@contextmanager
def _language_model(
    lm_name: str | None, api_base: str | None, latency_ms: float, console: Any, use_ray: bool
) -> Iterator[Any]:
    if lm_name is not None:
        yield dspex.LM(lm_name, api_base=api_base, cache=False)
        return
    url, stop = _start_sim_lm(latency_ms, use_ray)
    console.print(f"Simulated LM listening on {url} ({latency_ms:g} ms per request)")
    try:
        yield dspex.LM("openai/sim-1", api_base=url, api_key="sim-local", cache=False)
    finally:
        stop()


def _start_sim_lm(latency_ms: float, use_ray: bool) -> tuple[str, Callable[[], None]]:
    """The simulated LM: a child of the root supervisor when the runtime is up."""
    root = getattr(dspex.runtime.current(), "root", None) if use_ray else None
    if root is None:
        from dspex.providers.simlm import start_sim_lm

        server = start_sim_lm(port=0, seed=0, latency_ms=latency_ms)
        return server.url, server.stop
    import ray

    from dspex.providers.simlm.service import SimLMService, free_port
    from dspex.supervisors import ChildSpec

    port = free_port()
    spec = ChildSpec(
        name="dspex.simlm",
        cls=SimLMService,
        kwargs={"port": port, "seed": 0, "latency_ms": latency_ms},
        actor_options={"num_cpus": 0},
    )
    ray.get(root.start_child.remote(spec))
    return f"http://127.0.0.1:{port}/v1", lambda: ray.get(root.terminate_child.remote("dspex.simlm"))


def _run(lm: Any, task: str, dev_size: int, console: Any, *, show_progress: bool) -> tuple[list[Row], Any]:
    trainset, devset = _dataset(task, dev_size)
    metric = dspex.answer_exact_match
    signature = "question -> answer"
    rows: list[Row] = []
    with dspex.context(lm=lm):
        predict = dspex.Predict(signature)
        rows.append(_evaluate("Predict (zero-shot)", predict, devset, metric, console, show_progress))
        cot = dspex.ChainOfThought(signature)
        rows.append(_evaluate("ChainOfThought (zero-shot)", cot, devset, metric, console, show_progress))
        best = cot
        for label, optimize in _optimizers(metric, trainset):
            console.print(f"Optimizing with {label} ...")
            started = time.monotonic()
            compiled = optimize(cot)
            compile_seconds = time.monotonic() - started
            row = _evaluate(f"ChainOfThought + {label}", compiled, devset, metric, console, show_progress)
            calls = getattr(getattr(compiled, "run_info", None), "lm_calls", 0)
            row.lm_calls += calls
            row.seconds += compile_seconds
            rows.append(row)
            best = compiled
    return rows, best


def _optimizers(metric: Callable[..., Any], trainset: list[Any]) -> list[tuple[str, Callable[[Any], Any]]]:
    from dspex.optimizers import BootstrapFewShot
    from dspex.optimizers.mipro import MIPROv2

    def bootstrap(student: Any) -> Any:
        optimizer = BootstrapFewShot(metric=metric, max_bootstrapped_demos=4, max_labeled_demos=4)
        return optimizer.compile(student, trainset=trainset)

    def mipro(student: Any) -> Any:
        optimizer = MIPROv2(metric=metric, auto="light", num_threads=32, seed=9)
        return optimizer.compile(student, trainset=trainset)

    return [("BootstrapFewShot", bootstrap), ('MIPROv2(auto="light")', mipro)]


def _dataset(task: str, dev_size: int) -> tuple[list[Any], list[Any]]:
    from dspex.providers.simlm import datasets

    if task not in datasets.names():
        raise DspexError(f"unknown task {task!r}; bundled tasks: {', '.join(datasets.names())}")
    def examples(split: str) -> list[Any]:
        return [dspex.Example(question=r["question"], answer=r["answer"]).with_inputs("question") for r in datasets.load(task, split)]

    return examples("train"), examples("dev")[:dev_size]


def _evaluate(label: str, program: Any, devset: list[Any], metric: Any, console: Any, show_progress: bool) -> Row:
    console.print(f"Evaluating {label} on {len(devset)} examples ...")
    started = time.monotonic()
    evaluator = dspex.Evaluate(devset=devset, metric=metric, num_threads=32, display_progress=show_progress)
    result = evaluator(program)
    calls = result.usage.calls if result.usage is not None else 0
    return Row(label, result.score, calls, time.monotonic() - started, result.n_errors)


def _print_table(console: Any, rows: list[Row]) -> None:
    from rich.table import Table

    table = Table(title="dspex demo: before and after")
    for column in ("program", "score %", "LM calls", "wall s", "errors"):
        table.add_column(column, justify="left" if column == "program" else "right")
    for row in rows:
        table.add_row(row.program, f"{row.score:.1f}", str(row.lm_calls), f"{row.seconds:.1f}", str(row.errors))
    console.print(table)


if __name__ == "__main__":
    sys.exit(
        run_demo(
            lm_name=None,
            api_base=None,
            task="arithmetic",
            dev_size=100,
            latency_ms=50,
            output="dspex_demo_program.json",
            json_output=False,
        )
    )
