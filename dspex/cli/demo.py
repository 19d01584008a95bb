"""``dspex demo``: the main job, end to end on one machine.

Starts the simulated LM (unless a real model is named), evaluates a zero-shot
Predict and a ChainOfThought on a bundled task, optimizes the ChainOfThought
with BootstrapFewShot and then MIPROv2, prints a before/after table and saves
the optimized program's state under the user data directory (``--output``
elsewhere), never into the current directory unasked.

What goes where: the narration (what is starting, progress bars) is on stderr;
the table, where the program went and what to run next are on stdout (with
``--json``, stdout holds only the JSON document).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dspex
import dspex.runtime
from dspex.errors import DspexError

SIGNATURE = "question -> answer"


@dataclass
class Row:
    """One program of the before/after table."""

    program: str
    dev_score: float
    """Percent correct on the held-out dev examples (no optimizer saw them)."""
    trial_score: float | None
    """The optimizer's best trial score on its own validation split of the trainset,
    which it used to choose the program (what ``dspex runs list`` shows); None when
    the program was not optimized or the optimizer scores no trials."""
    optimize_lm_calls: int
    evaluate_lm_calls: int
    optimize_seconds: float
    evaluate_seconds: float
    errors: int
    run_id: str | None = None


def default_output(run_id: str | None) -> Path:
    """``<user data dir>/dspex/cli/demo/<run id>.json``: next to the run store, not in the cwd."""
    import platformdirs

    name = run_id or time.strftime("program-%Y%m%d-%H%M%S")
    return Path(platformdirs.user_data_dir("dspex")) / "demo" / f"{name}.json"


def run_demo(
    *,
    lm_name: str | None,
    api_base: str | None,
    task: str,
    dev_size: int,
    latency_ms: float,
    output: str | None,
    json_output: bool,
    use_ray: bool = True,
    num_cpus: int | None = None,
) -> int:
    from rich.console import Console

    narrator = Narrator(Console(stderr=True))
    results = Console(stderr=json_output)
    try:
        if use_ray:
            cpus = "all CPUs" if num_cpus is None else f"{num_cpus} CPUs"
            with narrator.phase(f"Starting Ray (local, {cpus}) and the dspex supervision tree"):
                dspex.runtime.init(num_cpus=num_cpus)
        with _language_model(lm_name, api_base, latency_ms, narrator, use_ray) as lm:
            if use_ray:
                _start_eval_workers(narrator)
            rows, program, dev_count = _run(
                lm, task, dev_size, narrator, show_progress=not json_output
            )
    except DspexError as exc:
        narrator.console.print(f"[red]error:[/red] {exc}")
        return 1
    finally:
        if use_ray:
            with narrator.phase("Stopping the dspex runtime and Ray"):
                dspex.runtime.shutdown()
    run_id = rows[-1].run_id
    path = Path(output) if output is not None else default_output(run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(path)
    if json_output:
        document = {
            "results": [asdict(r) for r in rows],
            "saved_to": str(path.resolve()),
            "next": _next_commands(run_id),
        }
        print(json.dumps(document))
    else:
        _print_table(results, rows, dev_count=dev_count)
        _print_next_steps(results, rows[-1], path.resolve())
    return 0


class Narrator:
    """Says on stderr what the demo is waiting for: a spinner with the elapsed time on a
    terminal, a line when a step starts and one when it ends elsewhere (logs, pipes)."""

    def __init__(self, console: Any) -> None:
        self.console = console

    def say(self, text: str) -> None:
        self.console.print(text)

    @contextmanager
    def phase(self, text: str) -> Iterator[None]:
        started = time.monotonic()
        if self.console.is_terminal:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            spinner = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            with spinner:
                spinner.add_task(text, total=None)
                yield
            self.console.print(f"[green]✓[/green] {text} ({time.monotonic() - started:.1f} s)")
        else:
            self.console.print(f"{text} ...")
            yield
            self.console.print(f"{text}: done in {time.monotonic() - started:.1f} s")


@contextmanager
def _language_model(
    lm_name: str | None, api_base: str | None, latency_ms: float, narrator: Narrator, use_ray: bool
) -> Iterator[Any]:
    if lm_name is not None:
        yield dspex.LM(lm_name, api_base=api_base, cache=False)
        return
    where = "as a supervised actor" if use_ray else "in this process"
    with narrator.phase(f"Starting the simulated LM {where}"):
        url, stop = _start_sim_lm(latency_ms, use_ray)
    narrator.say(f"Simulated LM listening on {url} ({latency_ms:g} ms per request)")
    try:
        yield dspex.LM("openai/sim-1", api_base=url, api_key="sim-local", cache=False)
    finally:
        stop()


def _start_sim_lm(latency_ms: float, use_ray: bool) -> tuple[str, Callable[[], None]]:
    """The simulated LM: a child of the root supervisor when the runtime is up."""
    root = getattr(dspex.runtime.current(), "root", None) if use_ray else None
    if root is None:
        from dspex.simlm import start_sim_lm

        server = start_sim_lm(port=0, seed=0, latency_ms=latency_ms)
        return server.url, server.stop
    import ray

    from dspex.runtime.names import SIM_LM
    from dspex.runtime.supervision import ChildSpec
    from dspex.simlm.service import SimLMService, free_port

    port = free_port()
    spec = ChildSpec(
        name=SIM_LM,
        cls=SimLMService,
        kwargs={"port": port, "seed": 0, "latency_ms": latency_ms},
        actor_options={"num_cpus": 0},
    )
    ray.get(root.start_child.remote(spec))
    return f"http://127.0.0.1:{port}/v1", lambda: ray.get(
        root.terminate_child.remote(SIM_LM)
    )


def _start_eval_workers(narrator: Narrator) -> None:
    """Start the evaluation workers up front, so the first evaluation's wait is named."""
    import ray

    from dspex.runtime.evaluation.eval_worker import alive_nodes, default_pool
    from dspex.runtime.evaluation.ray_runner import WORKERS_PER_NODE

    count = alive_nodes() * WORKERS_PER_NODE
    with narrator.phase(
        f"Starting {count} evaluation worker{'s' if count != 1 else ''} (EvalWorker)"
    ):
        ray.get([worker.ping.remote() for worker in default_pool().ensure(count)])


def _run(
    lm: Any, task: str, dev_size: int, narrator: Narrator, *, show_progress: bool
) -> tuple[list[Row], Any, int]:
    """The table's rows, the last optimized program, and how many dev examples scored them."""
    trainset, devset = _dataset(task, dev_size)
    metric = dspex.answer_exact_match
    rows: list[Row] = []
    with dspex.context(lm=lm):
        predict = dspex.Predict(SIGNATURE)
        rows.append(_evaluate("Predict", predict, devset, metric, narrator, show_progress))
        cot = dspex.ChainOfThought(SIGNATURE)
        rows.append(_evaluate("ChainOfThought", cot, devset, metric, narrator, show_progress))
        best = cot
        for label, optimize in _optimizers(metric, trainset):
            with narrator.phase(f"Optimizing with {label} ({len(trainset)} train examples)"):
                started = time.monotonic()
                compiled = optimize(cot)
                compile_seconds = time.monotonic() - started
            row = _evaluate(f"CoT + {label}", compiled, devset, metric, narrator, show_progress)
            info = getattr(compiled, "run_info", None)
            row.optimize_lm_calls = getattr(info, "lm_calls", 0)
            row.optimize_seconds = compile_seconds
            row.trial_score = getattr(info, "best_score", None)
            row.run_id = getattr(info, "run_id", None)
            rows.append(row)
            best = compiled
    return rows, best, len(devset)


def _optimizers(
    metric: Callable[..., Any], trainset: list[Any]
) -> list[tuple[str, Callable[[Any], Any]]]:
    from dspex.optimizers import BootstrapFewShot, MIPROv2

    def bootstrap(student: Any) -> Any:
        optimizer = BootstrapFewShot(metric=metric, max_bootstrapped_demos=4, max_labeled_demos=4)
        return optimizer.compile(student, trainset=trainset)

    def mipro(student: Any) -> Any:
        optimizer = MIPROv2(metric=metric, auto="light", num_threads=32, seed=9)
        return optimizer.compile(student, trainset=trainset)

    return [("BootstrapFewShot", bootstrap), ("MIPROv2 light", mipro)]


def _dataset(task: str, dev_size: int) -> tuple[list[Any], list[Any]]:
    from dspex.simlm import datasets

    if task not in datasets.names():
        raise DspexError(f"unknown task {task!r}; bundled tasks: {', '.join(datasets.names())}")

    def examples(split: str) -> list[Any]:
        return [
            dspex.Example(question=r["question"], answer=r["answer"]).with_inputs("question")
            for r in datasets.load(task, split)
        ]

    return examples("train"), examples("dev")[:dev_size]


def _evaluate(
    label: str,
    program: Any,
    devset: list[Any],
    metric: Any,
    narrator: Narrator,
    show_progress: bool,
) -> Row:
    narrator.say(f"Evaluating {label} on {len(devset)} held-out dev examples")
    started = time.monotonic()
    evaluator = dspex.Evaluate(
        devset=devset, metric=metric, num_threads=32, display_progress=show_progress
    )
    result = evaluator(program)
    calls = result.usage.calls if result.usage is not None else 0
    return Row(
        program=label,
        dev_score=result.score,
        trial_score=None,
        optimize_lm_calls=0,
        evaluate_lm_calls=calls,
        optimize_seconds=0.0,
        evaluate_seconds=time.monotonic() - started,
        errors=result.n_errors,
    )


def _print_table(console: Any, rows: list[Row], *, dev_count: int) -> None:
    from rich import box
    from rich.table import Table

    table = Table(
        title="dspex demo: before and after optimizing", title_justify="left", box=box.SIMPLE_HEAD
    )
    columns = [
        "program",
        "dev %\nheld-out",
        "trial %\nvalset",
        "LM calls\noptimize",
        "LM calls\nevaluate",
        "wall s",
    ]
    with_errors = any(row.errors for row in rows)
    if with_errors:
        columns.append("errors")
    for header in columns:
        table.add_column(header, justify="left" if header == "program" else "right", no_wrap=True)
    for row in rows:
        cells = [
            row.program,
            f"{row.dev_score:.1f}",
            "-" if row.trial_score is None else f"{row.trial_score:.1f}",
            str(row.optimize_lm_calls) if row.run_id else "-",
            str(row.evaluate_lm_calls),
            f"{row.optimize_seconds + row.evaluate_seconds:.1f}",
        ]
        if with_errors:
            cells.append(str(row.errors))
        table.add_row(*cells)
    console.print(table)
    legend = [
        f"dev %: correct on {dev_count} held-out dev examples, which no optimizer saw.",
        "trial %: the optimizer's best score on its validation split of the trainset,",
        "  which chose the program (what `dspex runs list` shows); BootstrapFewShot",
        "  scores no trials.",
        "LM calls: made while optimizing, and while scoring the dev examples.",
        "wall s: optimizing and evaluating together.",
    ]
    console.print("\n".join(legend), highlight=False, markup=False)


def _next_commands(run_id: str | None) -> list[str]:
    commands = [f"dspex runs show {run_id}"] if run_id else []
    return [*commands, "dspex runs list", "dspex dashboard"]


_COMMAND_NOTES = {
    "dspex runs show": "its trials, scores and LM usage",
    "dspex runs list": "every run in the run store",
    "dspex dashboard": "the runs, live, in a browser",
}


def _print_next_steps(console: Any, last: Row, path: Path) -> None:
    # soft_wrap: a path or command is never broken across lines, so it can be copied.
    say = dict(highlight=False, markup=False, soft_wrap=True)
    console.print(f"\nThe optimized program ({last.program}) is saved to:", **say)
    console.print(f"  {path}", **say)
    console.print("Load it in Python:", **say)
    console.print(f'  program = dspex.ChainOfThought("{SIGNATURE}")', **say)
    console.print(f'  program.load("{path}")', **say)
    console.print("Next:", **say)
    commands = _next_commands(last.run_id)
    width = max(len(command) for command in commands)
    for command in commands:
        note = next(text for prefix, text in _COMMAND_NOTES.items() if command.startswith(prefix))
        console.print(f"  {command:<{width}}   {note}", **say)


if __name__ == "__main__":
    sys.exit(
        run_demo(
            lm_name=None,
            api_base=None,
            task="arithmetic",
            dev_size=100,
            latency_ms=50,
            output=None,
            json_output=False,
        )
    )
