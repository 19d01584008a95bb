"""The in-process runner: a program and a metric over a devset, on asyncio.

One task per example, created only when a slot is free, so at most
``num_threads`` examples are in flight and the devset (possibly a generator) is
read no further ahead than that: memory is the in-flight work plus the results.
Every example ends as a score or as a recorded failure; once failures exceed
``max_errors`` the run cancels what is in flight and raises `EvaluationError`.

`evaluate_example`, `ProgramCaller` and `MetricCaller` are the per-example
contract; the Ray runner reuses them inside its workers. `evaluate_example`
runs each example as batch work, so an LM request that meets an open circuit
breaker waits for the provider instead of losing the example.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import traceback as tb
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dspex.clients.types import Usage
from dspex.errors import AdapterParseError, BudgetExceededError, EvaluationError, LMError
from dspex.evaluate.progress import NullProgress, Progress
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.primitives.settings import context
from dspex.primitives.workload import batch_work

__all__ = [
    "STAGES",
    "EvaluationFailure",
    "MetricCaller",
    "ProgramCaller",
    "RunOptions",
    "RunOutcome",
    "evaluate_example",
    "example_inputs",
    "failure_stage",
    "fields_of",
    "nothing_measured",
    "run_local",
    "to_score",
]

logger = logging.getLogger("dspex.evaluate")

Row = tuple[Any, Any, float]
"""``(example, prediction, score)``: one evaluated example."""


STAGES: dict[str, str] = {
    "inputs": "failed reading its inputs",
    "program": "failed in the program",
    "lm": "failed in the LM call",
    "metric": "failed in the metric",
}
"""Where an example can fail, and how a report says it. A failure whose stage is
unknown (an evaluator that does not record it) reads "failed in the program or the metric"."""

_UNKNOWN_STAGE = "failed in the program or the metric"


@functools.cache
def _lm_error_types() -> frozenset[str]:
    """Names of the exceptions that mean the LM failed (a remote failure keeps only its name)."""
    names = {AdapterParseError.__name__}
    pending: list[type[BaseException]] = [LMError]
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    return frozenset(names)


@dataclass(frozen=True)
class EvaluationFailure:
    """An example whose inputs, program, LM or metric failed; plain data, safe to pickle."""

    index: int
    example: Any
    error_type: str
    message: str
    traceback: str | None = None
    stage: str = ""
    """A key of `STAGES`, or "" when the evaluator did not record where it failed."""

    @property
    def where(self) -> str:
        """The stage, or the best guess from the exception's type when it was not recorded."""
        if self.stage:
            return self.stage
        if self.error_type in _lm_error_types():
            return "lm"
        if self.error_type == "InputKeysNotSetError":
            return "inputs"
        return ""

    def describe(self) -> str:
        """One line for an error report: position, inputs, where it failed, exception."""
        message = _clip(self.message, 200)
        said = STAGES.get(self.where, _UNKNOWN_STAGE)
        return f"#{self.index} {preview(self.example)} {said}: {self.error_type}: {message}"


@dataclass(frozen=True)
class RunOptions:
    num_threads: int
    max_errors: int | None
    """None: no limit."""
    failure_score: float = 0.0
    provide_traceback: bool = False


@dataclass
class RunOutcome:
    results: list[Row]
    failures: list[EvaluationFailure]
    usage: Usage | None
    budget_charged: bool = False
    """The runner charged ``usage`` to the active run budget itself, as results arrived."""


# --- reading examples and predictions by duck type ---------------------------


def fields_of(obj: Any) -> dict[str, Any]:
    """The named fields of an example or prediction, as a new dict."""
    if isinstance(obj, Mapping):
        return dict(obj)
    # items() before toDict(): program inputs must keep their types (toDict
    # turns nested models into dicts) and skip hidden bookkeeping fields.
    for name in ("items", "toDict"):
        method = getattr(obj, name, None)
        if callable(method):
            return dict(method())
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    return {}


def example_inputs(example: Any) -> dict[str, Any]:
    """The keyword arguments a program gets for this example."""
    method = getattr(example, "inputs", None)
    if callable(method):
        return fields_of(method())
    if isinstance(example, Mapping):
        return dict(example)
    raise TypeError(
        f"an example of type {type(example).__name__} has no inputs(); "
        "pass Example objects (Example(...).with_inputs(...)) or dicts of inputs"
    )


def preview(example: Any, width: int = 120) -> str:
    """``{question='What is…', k=3}``: an example's inputs, short enough for a log line."""
    try:
        fields = example_inputs(example)
    except Exception:
        return _clip(repr(example), width)
    inner = ", ".join(f"{k}={_clip(repr(v), 40)}" for k, v in fields.items())
    return "{" + _clip(inner, width) + "}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def to_score(value: Any) -> float:
    """A metric's return value as a float: bool, number, or anything with ``.score``."""
    if isinstance(value, (bool, int, float)):
        return float(value)
    score = getattr(value, "score", None)
    if score is not None and score is not value:
        return to_score(score)
    if hasattr(value, "__float__") and not isinstance(value, (str, bytes)):
        return float(value)
    raise TypeError(
        f"the metric returned {type(value).__name__} {_clip(repr(value), 60)}; "
        "return a bool, a number, or a Prediction with a `score` field"
    )


# --- calling programs and metrics -------------------------------------------


class ProgramCaller:
    """Calls a program the best way it offers: ``acall``, an async call, or a thread."""

    def __init__(self, program: Any, max_threads: int) -> None:
        if not callable(program) and not callable(getattr(program, "acall", None)):
            raise TypeError(
                f"cannot evaluate a {type(program).__name__}: a program needs "
                "`async acall(**inputs)` or must be callable"
            )
        self._program = program
        self._max_threads = max_threads
        self._executor: ThreadPoolExecutor | None = None
        acall = getattr(program, "acall", None)
        if _is_forward_only_module(program):
            # Module.acall would run forward through asyncio.to_thread, capped
            # by the default executor; its sync __call__ in our pool is not.
            self._async: Callable[..., Any] | None = None
        elif callable(acall):
            self._async = acall
        elif _is_async_callable(program):
            self._async = program
        else:
            self._async = None

    async def __call__(self, inputs: dict[str, Any]) -> Any:
        if self._async is not None:
            result = self._async(**inputs)
        else:
            result = await self._in_thread(inputs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _in_thread(self, inputs: dict[str, Any]) -> asyncio.Future[Any]:
        # A dedicated pool sized to num_threads: the loop's default executor
        # (and so asyncio.to_thread) caps at min(32, cpus + 4) threads, which
        # would quietly lower the concurrency the user asked for.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._max_threads, thread_name_prefix="dspex-eval")
        # The copied context carries this example's trace into the thread.
        call = functools.partial(contextvars.copy_context().run, self._program, **inputs)
        return asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        # Threads cannot be interrupted; queued calls are dropped, running ones
        # finish in the background and their results are ignored.
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _is_forward_only_module(program: Any) -> bool:
    return isinstance(program, Module) and type(program).aforward is Module.aforward


def _is_async_callable(obj: Any) -> bool:
    # An instance of a class with `async def __call__` is async too.
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(type(obj).__call__)


class MetricCaller:
    """Calls ``metric(example, pred[, trace])``, sync or async, and reads a float score."""

    def __init__(self, metric: Any) -> None:
        acall = getattr(metric, "acall", None)
        # An LM-judge metric is a module: its sync __call__ would block the loop,
        # so take its acall when that accepts (example, pred).
        use_acall = callable(acall) and _accepts_args(acall, 2)
        self._fn: Callable[..., Any] = acall if use_acall else metric
        self._with_trace = _accepts_args(self._fn, 3)

    async def __call__(self, example: Any, prediction: Any, trace: list[Any]) -> float:
        if self._with_trace:
            value = self._fn(example, prediction, trace)
        else:
            value = self._fn(example, prediction)
        if inspect.isawaitable(value):
            value = await value
        return to_score(value)


def _accepts_args(fn: Callable[..., Any], count: int) -> bool:
    """Whether `fn` can be called with `count` positional arguments."""
    try:
        inspect.signature(fn).bind(*([None] * count))
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins): assume the plain two-argument form
        return count == 2
    return True


_STAGE_ATTRIBUTE = "_dspex_evaluation_stage"


def _mark_stage(exc: BaseException, stage: str) -> None:
    """Note on the exception where it was raised, for `failure_stage`."""
    # An exception class with __slots__ takes no attribute: its stage stays unknown.
    with contextlib.suppress(AttributeError):
        setattr(exc, _STAGE_ATTRIBUTE, stage)


def failure_stage(exc: BaseException) -> str:
    """Where `evaluate_example` failed: a key of `STAGES`, or "" if it cannot tell.

    A program failure caused by an LM error (raised directly or as the cause of
    what the program raised) counts as the LM's.
    """
    stage = getattr(exc, _STAGE_ATTRIBUTE, "")
    if stage == "program" and _caused_by_lm(exc):
        return "lm"
    return stage if isinstance(stage, str) else ""


def _caused_by_lm(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (LMError, AdapterParseError)):
            return True
        seen.add(id(current))
        # `raise X from None` hides the context: then the LM error was handled, not the cause.
        context = None if current.__suppress_context__ else current.__context__
        current = current.__cause__ or context
    return False


async def evaluate_example(
    program: ProgramCaller, metric: MetricCaller, example: Any
) -> tuple[Any, float]:
    """Run one example under its own trace and score it; raises what they raise.

    A raised exception is marked with the stage that raised it (inputs, program,
    metric), which `failure_stage` reads. Runs as batch work
    (`dspex.primitives.workload`): an LM request that meets an open circuit waits
    for the provider's probe instead of losing the example.
    """
    stage = "inputs"
    try:
        inputs = example_inputs(example)
        stage = "program"
        trace: list[Any] = []
        with batch_work():
            with context(trace=trace):
                prediction = await program(inputs)
            stage = "metric"
            # The metric runs outside the trace so an LM-judge's own calls stay out of it.
            score = await metric(example, prediction, trace)
    except Exception as exc:
        _mark_stage(exc, stage)
        raise
    return prediction, score


# --- the run ----------------------------------------------------------------------


class _Run:
    """State of one evaluation: results by index, failures, slots, in-flight tasks."""

    def __init__(
        self,
        program: ProgramCaller,
        metric: MetricCaller,
        options: RunOptions,
        progress: Progress,
    ) -> None:
        self.program = program
        self.metric = metric
        self.options = options
        self.progress = progress
        self.rows: list[Row | None] = []
        self.failures: list[EvaluationFailure] = []
        self.exceptions: list[tuple[Any, BaseException]] = []
        self.usage: Usage | None = None
        self.in_flight: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(options.num_threads)
        self.stopped = False
        self.aborted: BaseException | None = None

    async def run(self, devset: Iterable[Any]) -> None:
        try:
            await self._schedule(iter(devset))
            # Loop: wait() takes a snapshot, and a run stopped for errors
            # cancels tasks that then still need to finish unwinding.
            while self.in_flight:
                await asyncio.wait(set(self.in_flight))
        finally:
            await self._cancel_in_flight()

    async def _schedule(self, examples: Iterable[Any]) -> None:
        iterator = iter(examples)
        index = 0
        while True:
            # Take a slot before reading the next example, so a generator is
            # never read further ahead than the work in flight.
            await self.slots.acquire()
            if self.stopped:
                return
            try:
                example = next(iterator)
            except StopIteration:
                self.slots.release()
                return
            self.rows.append(None)
            task = asyncio.ensure_future(self._one(index, example))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
            index += 1

    async def _one(self, index: int, example: Any) -> None:
        try:
            prediction, score = await evaluate_example(self.program, self.metric, example)
        except BudgetExceededError as exc:
            # Not the example's fault: the whole evaluation stops, nothing is scored.
            self._abort(exc)
        except Exception as exc:
            self._fail(index, example, exc)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # KeyboardInterrupt, SystemExit or a custom BaseException: never drop
            # the example silently; stop everything and re-raise it to the caller.
            self._abort(exc)
        else:
            self._succeed(index, example, prediction, score)
        finally:
            self.slots.release()

    def _succeed(self, index: int, example: Any, prediction: Any, score: float) -> None:
        self.rows[index] = (example, prediction, score)
        usage = getattr(prediction, "usage", None)
        if not isinstance(usage, Usage):
            usage = None
        elif self.usage is None:
            self.usage = usage
        else:
            self.usage = self.usage + usage
        self.progress.advance(score, usage, False)

    def _fail(self, index: int, example: Any, exc: Exception) -> None:
        options = self.options
        trace = "".join(tb.format_exception(exc)) if options.provide_traceback else None
        failure = EvaluationFailure(
            index, example, type(exc).__name__, str(exc), trace, failure_stage(exc)
        )
        logger.warning(
            "evaluation example %s", failure.describe(), exc_info=exc if trace else None
        )
        self.rows[index] = (example, Prediction(), options.failure_score)
        self.failures.append(failure)
        limit = options.max_errors
        if limit is not None:
            # Kept only for the EvaluationError a limit may raise: an exception
            # holds its traceback's frames, too much to keep for every failure.
            self.exceptions.append((example, exc))
        self.progress.advance(options.failure_score, None, True)
        if limit is not None and len(self.failures) > limit and not self.stopped:
            self._stop()

    def _abort(self, exc: BaseException) -> None:
        if self.aborted is None:
            self.aborted = exc
            self._stop()

    def _stop(self) -> None:
        self.stopped = True
        current = asyncio.current_task()
        for task in self.in_flight:
            if task is not current:
                task.cancel()

    async def _cancel_in_flight(self) -> None:
        pending = [task for task in self.in_flight if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    def outcome(self) -> RunOutcome:
        rows = [row for row in self.rows if row is not None]
        return RunOutcome(results=rows, failures=self.failures, usage=self.usage)

    def error(self) -> EvaluationError:
        return too_many_errors(self.failures, self.exceptions, self.options.max_errors)


def too_many_errors(
    failures: list[EvaluationFailure],
    exceptions: list[tuple[Any, BaseException]],
    max_errors: int | None,
    shown: int = 5,
) -> EvaluationError:
    """The error that stops a run, listing what failed and what to do."""
    lines = [
        f"Evaluation stopped: {len(failures)} examples failed, more than "
        f"max_errors={max_errors}. First failures:"
    ]
    lines += [f"  {failure.describe()}" for failure in failures[:shown]]
    if len(failures) > shown:
        lines.append(f"  ... and {len(failures) - shown} more (see EvaluationError.failures)")
    lines.append(
        "What to do: if some failures are expected, raise max_errors (Evaluate(max_errors=...)); "
        "if they come from the program or metric code, fix it (provide_traceback=True logs where); "
        "if they are LM errors (timeouts, rate limits, auth), check the LM configuration and "
        "the provider."
    )
    return EvaluationError("\n".join(lines), failures=list(exceptions), records=list(failures))


def nothing_measured(
    failures: list[EvaluationFailure],
    exceptions: list[tuple[Any, BaseException]] | None = None,
    shown: int = 3,
) -> EvaluationError:
    """The error for an evaluation in which every example failed (or there was none).

    Its score would be a number computed from no measurement at all, so it is
    not returned: the message names the cause and what to do about it.
    """
    if not failures:
        return EvaluationError(
            "Evaluation measured nothing: the devset is empty. Pass at least one example "
            "(dspex.Example(...).with_inputs(...))."
        )
    failures = sorted(failures, key=lambda failure: failure.index)
    total = len(failures)
    causes: dict[tuple[str, str], list[EvaluationFailure]] = {}
    for failure in failures:
        causes.setdefault((failure.where, failure.error_type), []).append(failure)
    if len(causes) == 1:
        summary = _one_cause(*next(iter(causes)), total, failures[0])
    else:
        parts = [
            f"{_cause_phrase(where, error_type)} for {len(group)}"
            for (where, error_type), group in sorted(causes.items(), key=lambda kv: -len(kv[1]))
        ]
        summary = f"all {total} examples failed: " + "; ".join(parts)
    lines = [f"Evaluation measured nothing: {summary}. First failures:"]
    lines += [f"  {failure.describe()}" for failure in failures[:shown]]
    advice = {_ADVICE.get(where, _ADVICE[""]) for where, _ in causes}
    lines += [f"What to do: {text}" for text in sorted(advice)]
    return EvaluationError(
        "\n".join(lines), failures=list(exceptions or []), records=list(failures)
    )


_ADVICE = {
    "inputs": "mark each example's input fields, e.g. "
    "dspex.Example(question=..., answer=...).with_inputs('question').",
    "lm": "check the LM's model name, api_base and API key, and whether the provider is up "
    "(dspex.inspect_history() shows the last requests).",
    "metric": "fix the metric (it is called as metric(example, prediction) and must return a "
    "bool or a number); Evaluate(provide_traceback=True) logs where it raised.",
    "program": "fix the program; Evaluate(provide_traceback=True) logs where it raised.",
    "": "fix the program or the metric; Evaluate(provide_traceback=True) logs where it raised.",
}


def _cause_phrase(where: str, error_type: str) -> str:
    if where == "inputs":
        return f"the example has no inputs ({error_type})"
    if where == "lm":
        return f"the LM call failed ({error_type})"
    if where in ("program", "metric"):
        return f"the {where} raised {error_type}"
    return f"the program or the metric raised {error_type}"


def _one_cause(where: str, error_type: str, total: int, first: EvaluationFailure) -> str:
    first_message = _clip(first.message, 200)
    if where == "inputs":
        return (
            f"no example has inputs: call .with_inputs(...) on each example "
            f"({error_type} for all {total})"
        )
    if where == "lm":
        return f"every LM call failed, for all {total} examples: {error_type}: {first_message}"
    who = f"the {where}" if where in ("program", "metric") else "the program or the metric"
    return f"{who} raised {error_type} for all {total} examples ({first_message})"


async def run_local(
    program: Any,
    metric: Any,
    devset: Iterable[Any],
    options: RunOptions,
    progress: Progress | None = None,
) -> RunOutcome:
    """Evaluate `program` on `devset` in this process; results in devset order.

    Raises `EvaluationError` once more than ``options.max_errors`` examples fail,
    after cancelling the examples still in flight.
    """
    caller = ProgramCaller(program, options.num_threads)
    run = _Run(caller, MetricCaller(metric), options, progress or NullProgress())
    try:
        await run.run(devset)
    finally:
        caller.close()
    if run.aborted is not None:
        raise run.aborted
    if run.stopped:
        raise run.error()
    return run.outcome()
