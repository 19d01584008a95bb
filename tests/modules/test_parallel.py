"""Parallel and Module.batch: concurrent calls, results in order, failures counted."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import dspex
from dspex.errors import ParallelExecutionError
from dspex.testing import DummyLM


class Gate:
    """Opens once ``n`` callers are inside at the same time: proves concurrency."""

    def __init__(self, n: int) -> None:
        self.n, self.inside, self.opened = n, 0, asyncio.Event()

    async def pass_through(self) -> None:
        self.inside += 1
        if self.inside >= self.n:
            self.opened.set()
        await asyncio.wait_for(self.opened.wait(), 10)


class Echo(dspex.Module):
    def __init__(self, gate: Gate | None = None, failing: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.gate, self.failing = gate, failing

    async def aforward(self, question: str) -> dspex.Prediction:
        if self.gate is not None:
            await self.gate.pass_through()
        if question in self.failing:
            raise ValueError(f"no answer for {question}")
        return dspex.Prediction(answer=question.upper())


def test_parallel_runs_pairs_concurrently_and_keeps_their_order() -> None:
    echo = Echo(Gate(4))  # would time out if the four calls ran one after another
    pairs: list[tuple[Any, Any]] = [
        (echo, dspex.Example(question="a").with_inputs("question")),
        (echo, {"question": "b"}),
        (echo, ("c",)),
        (echo, {"question": "d"}),
    ]
    results = dspex.Parallel(num_threads=4)(pairs)
    assert [r.answer for r in results] == ["A", "B", "C", "D"]


def test_failures_give_none_and_are_returned_when_asked() -> None:
    echo = Echo(failing=frozenset({"b"}))
    pairs = [(echo, {"question": q}) for q in "abc"]
    results, failed, errors = dspex.Parallel(max_errors=5, return_failed_examples=True)(pairs)
    assert [r.answer if r else None for r in results] == ["A", None, "C"]
    assert failed == [{"question": "b"}] and isinstance(errors[0], ValueError)


def test_the_max_errors_th_failure_stops_the_rest() -> None:
    echo = Echo(failing=frozenset("abc"))
    with pytest.raises(ParallelExecutionError, match="max_errors=2") as info:
        dspex.Parallel(num_threads=1, max_errors=2)([(echo, {"question": q}) for q in "abcde"])
    assert info.value.failed == [0, 1] and isinstance(info.value.__cause__, ValueError)
    assert isinstance(info.value, RuntimeError)


def test_a_plain_function_runs_in_a_worker_thread_with_the_callers_settings() -> None:
    seen: list[Any] = []

    def plain(x: int) -> int:
        seen.append((threading.current_thread() is threading.main_thread(), dspex.settings.max_errors))
        return x * 2

    with dspex.context(max_errors=7):
        assert dspex.Parallel()([(plain, (1,)), (plain, (2,))]) == [2, 4]
    assert seen == [(False, 7), (False, 7)]


def test_module_batch_uses_each_examples_inputs_and_counts_usage_once() -> None:
    lm = DummyLM([{"answer": "x"}, {"answer": "y"}, {"answer": "z"}])
    examples = [dspex.Example(question=q, answer="?").with_inputs("question") for q in "abc"]
    with dspex.context(lm=lm), dspex.track_usage() as tracker:
        results = dspex.Predict("question -> answer").batch(examples, num_threads=3)
    assert sorted(r.answer for r in results) == ["x", "y", "z"]
    assert len(lm.history) == 3 and tracker.get_total_tokens()  # every call tracked
    with pytest.raises(dspex.ConfigurationError, match="cannot call a module with a str"):
        dspex.Parallel()([(Echo(), "bare string")])
