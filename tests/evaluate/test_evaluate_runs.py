"""Evaluate on the in-process runner: order, bounds, laziness, errors, cancellation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from dspex.clients.types import Usage
from dspex.errors import ConfigurationError, EvaluationError
from dspex.evaluate import Evaluate, EvaluationFailure, EvaluationResult
from dspex.primitives.example import Example
from dspex.primitives.module import Module, record_usage
from dspex.primitives.prediction import Prediction
from dspex.primitives.settings import context, record_trace
from dspex.primitives.workload import current_workload


def devset(n: int) -> list[Example]:
    return [Example(question=f"q{i}", answer=f"a{i}").with_inputs("question") for i in range(n)]


def index_of(question: str) -> int:
    return int(question[1:])


def exact(example: Any, pred: Any) -> bool:
    return example.answer == pred.answer


class Echo:
    """Answers every question correctly."""

    async def acall(self, question: str) -> Prediction:
        return Prediction(answer=f"a{index_of(question)}")


class InFlight:
    """Counts how many calls are running at once."""

    def __init__(self, yields: int = 3) -> None:
        self.now = 0
        self.peak = 0
        self.yields = yields

    async def acall(self, question: str) -> Prediction:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            for _ in range(self.yields):
                await asyncio.sleep(0)
        finally:
            self.now -= 1
        return Prediction(answer=f"a{index_of(question)}")


# --- results ---------------------------------------------------------------


async def test_results_keep_devset_order_when_examples_finish_out_of_order() -> None:
    finished: list[int] = []

    class Reversed:
        async def acall(self, question: str) -> Prediction:
            i = index_of(question)
            # Later examples in each batch of 8 yield fewer times, so finish first.
            for _ in range(8 - i % 8):
                await asyncio.sleep(0)
            finished.append(i)
            return Prediction(answer=f"a{i}")

    data = devset(32)
    result = await Evaluate(devset=data, metric=exact, num_threads=8).acall(Reversed())

    assert finished != sorted(finished)
    assert [example for example, _, _ in result.results] == data
    assert [pred.answer for _, pred, _ in result.results] == [f"a{i}" for i in range(32)]
    assert result.score == 100.0
    assert float(result) == 100.0


async def test_score_is_a_percentage_rounded_to_two_places() -> None:
    def one_in_three(example: Any, pred: Any) -> bool:
        return index_of(example.question) % 3 == 0

    result = await Evaluate(devset=devset(3), metric=one_in_three).acall(Echo())
    assert result.score == 33.33
    assert [score for _, _, score in result.results] == [1.0, 0.0, 0.0]


async def test_empty_devset_is_an_error_not_a_score_of_zero() -> None:
    with pytest.raises(EvaluationError, match="the devset is empty"):
        await Evaluate(devset=[], metric=exact).acall(Echo())


async def test_usage_is_summed_over_predictions() -> None:
    class Costly:
        async def acall(self, question: str) -> Prediction:
            pred = Prediction(answer="x")
            pred.usage = Usage(prompt_tokens=10, completion_tokens=2, calls=1, cost=0.5)
            return pred

    result = await Evaluate(devset=devset(4), metric=exact).acall(Costly())
    assert result.usage == Usage(prompt_tokens=40, completion_tokens=8, calls=4, cost=2.0)
    assert result.elapsed > 0
    assert repr(result) == "EvaluationResult(score=0.0, results=<list of 4 results>)"


# --- concurrency and laziness ------------------------------------------------


async def test_num_threads_bounds_examples_in_flight() -> None:
    program = InFlight()
    result = await Evaluate(devset=devset(50), metric=exact, num_threads=4).acall(program)
    assert program.peak == 4
    assert result.score == 100.0


async def test_num_threads_defaults_to_the_settings_value() -> None:
    program = InFlight()
    with context(num_threads=3):
        await Evaluate(devset=devset(20), metric=exact).acall(program)
    assert program.peak == 3


async def test_generator_devset_is_read_no_further_ahead_than_the_work_in_flight() -> None:
    pulled = 0
    finished = 0
    ahead: list[int] = []

    def examples() -> Iterator[Example]:
        nonlocal pulled
        for example in devset(200):
            pulled += 1
            yield example

    class Watcher:
        async def acall(self, question: str) -> Prediction:
            nonlocal finished
            ahead.append(pulled - finished)
            await asyncio.sleep(0)
            finished += 1
            return Prediction(answer=f"a{index_of(question)}")

    result = await Evaluate(devset=examples(), metric=exact, num_threads=5).acall(Watcher())

    assert len(result.results) == 200
    assert max(ahead) == 5
    assert result.score == 100.0


async def test_an_iterator_devset_cannot_be_evaluated_twice_by_accident() -> None:
    evaluator = Evaluate(devset=iter(devset(3)), metric=exact)
    await evaluator.acall(Echo())
    with pytest.raises(ConfigurationError, match="iterator"):
        await evaluator.acall(Echo())
    # A fresh devset for the call is fine.
    assert (await evaluator.acall(Echo(), devset=iter(devset(2)))).score == 100.0


async def test_100k_examples_complete_with_bounded_in_flight_work() -> None:
    program = InFlight(yields=1)

    def examples() -> Iterator[dict[str, str]]:
        for i in range(100_000):
            yield {"question": f"q{i}"}

    def metric(example: Any, pred: Any) -> float:
        return 1.0

    result = await Evaluate(devset=examples(), metric=metric, num_threads=64).acall(program)
    assert len(result.results) == 100_000
    assert program.peak == 64
    assert result.score == 100.0


# --- kinds of programs -------------------------------------------------------


async def test_async_function_and_async_callable_programs() -> None:
    # A plain dict example passes every key, labels included.
    async def function(question: str, answer: str) -> dict[str, str]:
        return {"answer": f"a{index_of(question)}"}

    class Callable:
        async def __call__(self, question: str, answer: str) -> dict[str, str]:
            return {"answer": f"a{index_of(question)}"}

    def metric(example: Any, pred: dict[str, str]) -> bool:
        return pred["answer"] == example["answer"]

    data = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(5)]
    for program in (function, Callable()):
        result = await Evaluate(devset=data, metric=metric).acall(program)
        assert result.score == 100.0


async def test_sync_program_runs_in_num_threads_threads_at_once() -> None:
    # Every call waits for 8 calls to be running together: fewer threads time out.
    barrier = threading.Barrier(8, timeout=10)
    threads: set[str] = set()

    def program(question: str) -> Prediction:
        threads.add(threading.current_thread().name)
        barrier.wait()
        return Prediction(answer=f"a{index_of(question)}")

    result = await Evaluate(devset=devset(16), metric=exact, num_threads=8, max_errors=0).acall(
        program
    )
    assert result.score == 100.0
    assert len(threads) == 8
    assert threading.current_thread().name not in threads


async def test_async_module_usage_and_trace_reach_the_result_and_metric() -> None:
    class QA(Module):
        async def aforward(self, question: str) -> Prediction:
            await asyncio.sleep(0)
            record_usage(Usage(prompt_tokens=3, completion_tokens=1, calls=1))
            pred = Prediction(answer=f"a{index_of(question)}")
            record_trace(self, {"question": question}, pred)
            return pred

    def metric(example: Any, pred: Any, trace: Any) -> bool:
        return len(trace) == 1 and exact(example, pred)

    result = await Evaluate(devset=devset(6), metric=metric, num_threads=3).acall(QA())
    assert result.score == 100.0
    assert result.usage == Usage(prompt_tokens=18, completion_tokens=6, calls=6)


async def test_forward_only_module_runs_in_num_threads_threads_at_once() -> None:
    barrier = threading.Barrier(8, timeout=10)

    class QA(Module):
        def forward(self, question: str) -> Prediction:
            barrier.wait()
            return Prediction(answer=f"a{index_of(question)}")

    result = await Evaluate(devset=devset(16), metric=exact, num_threads=8, max_errors=0).acall(
        QA()
    )
    assert result.score == 100.0


def test_sync_call_from_plain_code() -> None:
    result = Evaluate(devset=devset(5), metric=exact)(Echo())
    assert isinstance(result, EvaluationResult)
    assert result.score == 100.0


async def test_sync_call_from_inside_a_running_loop() -> None:
    result = Evaluate(devset=devset(5), metric=exact)(Echo())
    assert result.score == 100.0


async def test_sync_call_carries_settings_context() -> None:
    program = InFlight()
    with context(num_threads=2):
        Evaluate(devset=devset(10), metric=exact)(program)
    assert program.peak == 2


# --- metrics -------------------------------------------------------------------


async def test_async_metric_is_awaited() -> None:
    async def metric(example: Any, pred: Any) -> float:
        await asyncio.sleep(0)
        return 0.5

    assert (await Evaluate(devset=devset(4), metric=metric).acall(Echo())).score == 50.0


async def test_metric_with_trace_gets_its_own_examples_trace() -> None:
    class Traced:
        async def acall(self, question: str) -> Prediction:
            await asyncio.sleep(0)
            pred = Prediction(answer=f"a{index_of(question)}")
            record_trace(self, {"question": question}, pred)
            return pred

    seen: list[list[Any]] = []

    def metric(example: Any, pred: Any, trace: Any) -> bool:
        seen.append(trace)
        return len(trace) == 1 and trace[0][1]["question"] == example.question

    result = await Evaluate(devset=devset(10), metric=metric, num_threads=5).acall(Traced())
    assert result.score == 100.0
    assert all(isinstance(trace, list) for trace in seen)


async def test_metric_may_return_a_prediction_with_a_score() -> None:
    def metric(example: Any, pred: Any) -> Prediction:
        return Prediction(score=0.25, feedback="meh")

    assert (await Evaluate(devset=devset(4), metric=metric).acall(Echo())).score == 25.0


async def test_metric_returning_a_non_number_is_an_error_of_that_example() -> None:
    def metric(example: Any, pred: Any) -> str | bool:
        return "yes" if index_of(example.question) else True

    result = await Evaluate(devset=devset(2), metric=metric).acall(Echo())
    assert result.n_errors == 1
    assert (result.errors[0].error_type, result.errors[0].stage) == ("TypeError", "metric")
    assert "return a bool, a number" in result.errors[0].message


async def test_metric_is_required() -> None:
    with pytest.raises(ConfigurationError, match="metric"):
        await Evaluate(devset=devset(1)).acall(Echo())


# --- errors --------------------------------------------------------------------


class FailOdd:
    async def acall(self, question: str) -> Prediction:
        i = index_of(question)
        if i % 2:
            raise ValueError(f"odd question {i}")
        return Prediction(answer=f"a{i}")


async def test_failed_examples_score_failure_score_and_are_recorded() -> None:
    evaluator = Evaluate(devset=devset(10), metric=exact, max_errors=100, failure_score=0.25)
    result = await evaluator.acall(FailOdd())

    assert result.n_errors == 5
    assert result.score == round(100 * (5 * 1.0 + 5 * 0.25) / 10, 2)
    assert [f.index for f in sorted(result.errors, key=lambda f: f.index)] == [1, 3, 5, 7, 9]
    failure = next(f for f in result.errors if f.index == 3)
    assert failure == EvaluationFailure(
        3, devset(10)[3], "ValueError", "odd question 3", None, "program"
    )
    example, pred, score = result.results[3]
    assert (example.question, score) == ("q3", 0.25)
    assert isinstance(pred, Prediction) and len(pred) == 0


async def test_provide_traceback_keeps_where_it_failed() -> None:
    evaluator = Evaluate(devset=devset(2), metric=exact, provide_traceback=True)
    result = await evaluator.acall(FailOdd())
    (failure,) = result.errors  # example 1 of 2; example 0 was measured
    assert failure.traceback is not None
    assert "in acall" in failure.traceback and "ValueError: odd question 1" in failure.traceback


async def test_an_example_without_inputs_is_an_error_not_a_crash() -> None:
    data = [*devset(1), Example(question="q1", answer="a1")]  # the second lacks with_inputs(...)
    result = await Evaluate(devset=data, metric=exact).acall(Echo())
    assert [(f.index, f.error_type, f.stage) for f in result.errors] == [
        (1, "InputKeysNotSetError", "inputs")
    ]


class Stuck:
    """Examples 0-2 fail at once; every other example waits until cancelled."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0
        self.never = asyncio.Event()

    async def acall(self, question: str) -> Prediction:
        self.started += 1
        if index_of(question) < 3:
            raise RuntimeError(f"LM unreachable for {question}")
        try:
            await self.never.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return Prediction(answer="unreachable")


async def test_too_many_errors_cancels_work_in_flight_and_raises_with_details() -> None:
    program = Stuck()
    evaluator = Evaluate(devset=devset(1000), metric=exact, num_threads=4, max_errors=2)

    with pytest.raises(EvaluationError) as caught:
        await asyncio.wait_for(evaluator.acall(program), timeout=10)

    # The three failures plus at most one full set of slots ever started.
    assert program.started <= 3 + 4
    assert program.cancelled == program.started - 3
    message = str(caught.value)
    assert "3 examples failed, more than max_errors=2" in message
    assert "question='q0'" in message and "RuntimeError: LM unreachable for q0" in message
    assert "raise max_errors" in message and "check the LM" in message
    assert [type(exc) for _, exc in caught.value.failures] == [RuntimeError] * 3
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_max_errors_defaults_to_the_settings_value() -> None:
    with context(max_errors=0), pytest.raises(EvaluationError, match="max_errors=0"):
        await Evaluate(devset=devset(4), metric=exact).acall(FailOdd())


async def test_exactly_max_errors_failures_still_complete() -> None:
    result = await Evaluate(devset=devset(6), metric=exact, max_errors=3).acall(FailOdd())
    assert result.n_errors == 3


async def test_cancelling_the_evaluation_cancels_every_example() -> None:
    all_started = asyncio.Event()

    class Waits:
        def __init__(self) -> None:
            self.started = 0
            self.cancelled = 0

        async def acall(self, question: str) -> Prediction:
            self.started += 1
            if self.started == 4:
                all_started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            return Prediction()

    program = Waits()
    run = asyncio.ensure_future(
        Evaluate(devset=devset(100), metric=exact, num_threads=4).acall(program)
    )
    await all_started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    assert program.started == 4
    assert program.cancelled == 4
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_budget_exhaustion_stops_the_whole_evaluation() -> None:
    from dspex.errors import BudgetExceededError
    from dspex.evaluate import Evaluate
    from dspex.primitives.example import Example
    from dspex.primitives.prediction import Prediction

    started = 0

    class Spender:
        async def acall(self, **inputs: object) -> Prediction:
            nonlocal started
            started += 1
            if started > 3:
                raise BudgetExceededError("budget used up")
            return Prediction(answer="x")

    devset = [Example(question=str(i), answer="x").with_inputs("question") for i in range(50)]
    evaluator = Evaluate(devset=devset, metric=lambda e, p: 1.0, num_threads=2, max_errors=100)
    with pytest.raises(BudgetExceededError):
        await evaluator.acall(Spender())
    assert started < 10


async def test_a_base_exception_aborts_instead_of_dropping_the_example() -> None:
    from dspex.evaluate import Evaluate
    from dspex.primitives.example import Example
    from dspex.primitives.prediction import Prediction

    class Interrupt(BaseException):
        pass

    class Program:
        async def acall(self, **inputs: object) -> Prediction:
            if inputs["question"] == "3":
                raise Interrupt()
            return Prediction(answer="x")

    devset = [Example(question=str(i), answer="x").with_inputs("question") for i in range(10)]
    with pytest.raises(Interrupt):
        await Evaluate(devset=devset, metric=lambda e, p: 1.0, num_threads=2).acall(Program())


def test_programs_and_metrics_run_as_batch_work() -> None:
    # Batch work waits for a recovering LM provider instead of losing examples.
    seen: list[str] = []

    class Records:
        async def acall(self, question: str) -> Prediction:
            seen.append(f"program:{current_workload()}")
            return Prediction(answer=f"a{index_of(question)}")

    def sync_program(question: str) -> Prediction:  # run on the runner's threads
        seen.append(f"thread:{current_workload()}")
        return Prediction(answer=f"a{index_of(question)}")

    def metric(example: Any, pred: Any) -> bool:
        seen.append(f"metric:{current_workload()}")
        return exact(example, pred)

    Evaluate(devset=devset(2), metric=metric, num_threads=2, runner="local")(Records())
    Evaluate(devset=devset(2), metric=metric, num_threads=2, runner="local")(sync_program)
    assert sorted(seen) == sorted(
        ["program:batch"] * 2 + ["thread:batch"] * 2 + ["metric:batch"] * 4
    )
    assert current_workload() == "interactive"  # only inside the evaluation


def test_one_thread_runs_the_metric_in_the_calling_thread_as_dspy_does() -> None:
    import threading

    seen: list[threading.Thread] = []

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        seen.append(threading.current_thread())
        return exact(example, prediction)

    Evaluate(devset=devset(3), metric=metric, num_threads=1)(Echo())
    assert seen and all(thread is threading.main_thread() for thread in seen)
    seen.clear()
    Evaluate(devset=devset(3), metric=metric, num_threads=2)(Echo())
    assert seen and all(thread is not threading.main_thread() for thread in seen)
