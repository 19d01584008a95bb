"""EvalWorker as a plain object (no Ray): chunks, bounds, errors, payload caching."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

from dspex.clients.types import Usage
from dspex.errors import BudgetExceededError
from dspex.primitives.example import Example
from dspex.primitives.prediction import Prediction
from dspex.primitives.settings import settings
from dspex.runtime.evaluation.eval_worker import EvalWorker, ExampleError, RunSpec, pack_payload
from dspex.runtime.evaluation.ray_runner import RunOptions, plan


def example(i: int) -> Example:
    return Example(question=f"q{i}", answer=f"a{i}").with_inputs("question")


def exact(ex: Any, pred: Any) -> bool:
    return ex.answer == pred.answer


class Answers:
    """Correct for even indices; fails for multiples of 5.

    Each prediction reports which unpickled copy made it (``made_by``) and how many
    calls that copy had in flight (``in_flight``): what the worker did, read
    from its results (the class itself may be a by-value copy under Ray).
    """

    def __init__(self) -> None:
        self.now = 0

    async def acall(self, question: str) -> Prediction:
        i = int(question[1:])
        self.now += 1
        in_flight = self.now
        try:
            for _ in range(3):
                await asyncio.sleep(0)
        finally:
            self.now -= 1
        if i % 5 == 0:
            raise ValueError(f"no answer for {question}")
        pred = Prediction(
            answer=f"a{i}" if i % 2 == 0 else "wrong",
            lm=str(settings.lm),
            made_by=id(self),
            in_flight=in_flight,
        )
        pred.usage = Usage(prompt_tokens=3, completion_tokens=1, calls=1)
        return pred


def spec(payload: bytes, key: str, *, concurrency: int = 4, run_id: str = "r1") -> RunSpec:
    return RunSpec(
        run_id=run_id, payload_key=key, payload=payload, concurrency=concurrency, failure_score=0.5
    )


async def test_chunk_rows_carry_scores_predictions_errors_and_usage() -> None:
    key, blob = pack_payload(Answers(), exact, {"lm": "shipped-lm"})
    worker = EvalWorker()
    items = [(i, example(i)) for i in range(10, 16)]

    rows = await worker.run_chunk(spec(blob, key), 1, items)

    assert [row[0] for row in rows] == list(range(10, 16))
    by_index = {row[0]: row for row in rows}
    _, ok, score, error, usage = by_index[10]
    assert not ok and score == 0.5 and usage is None
    assert isinstance(error, ExampleError) and error.error_type == "ValueError"
    assert "no answer for q10" in error.message and not error.budget
    _, ok, score, pred, usage = by_index[12]
    assert ok and score == 1.0 and pred.answer == "a12"
    # The driver's settings travel with the payload and apply on the worker.
    assert pred.lm == "shipped-lm"
    assert usage == Usage(prompt_tokens=3, completion_tokens=1, calls=1)
    assert by_index[11][1:3] == (True, 0.0)


async def test_concurrency_is_bounded_per_run_across_chunks() -> None:
    key, blob = pack_payload(Answers(), exact, {})
    worker = EvalWorker()
    run = spec(blob, key, concurrency=3)
    chunks = [[(i, example(i)) for i in range(start, start + 8)] for start in (1, 101, 201)]

    results = await asyncio.gather(*(worker.run_chunk(run, n, c) for n, c in enumerate(chunks)))

    predictions = [row[3] for rows in results for row in rows if row[1]]
    assert sum(len(rows) for rows in results) == 24
    assert max(pred.in_flight for pred in predictions) == 3


async def test_payload_is_unpickled_once_per_worker_and_reused_across_runs() -> None:
    key, blob = pack_payload(Answers(), exact, {})
    worker = EvalWorker()

    first = await asyncio.gather(
        worker.run_chunk(spec(blob, key, run_id="a"), 1, [(1, example(1))]),
        worker.run_chunk(spec(blob, key, run_id="a"), 2, [(2, example(2))]),
    )
    await worker.end_run("a")
    later = await worker.run_chunk(spec(blob, key, run_id="b"), 1, [(3, example(3))])
    other = await EvalWorker().run_chunk(spec(blob, key, run_id="b"), 1, [(3, example(3))])

    copies = {rows[0][3].made_by for rows in first} | {later[0][3].made_by}
    assert len(copies) == 1
    assert other[0][3].made_by not in copies  # the check can fail: another worker, another copy


async def test_budget_exhaustion_is_flagged_for_the_driver() -> None:
    class Spends:
        async def acall(self, question: str) -> Prediction:
            raise BudgetExceededError("max_lm_calls=5 reached")

    key, blob = pack_payload(Spends(), exact, {})
    rows = await EvalWorker().run_chunk(spec(blob, key), 1, [(0, example(0))])

    error = rows[0][3]
    assert isinstance(error, ExampleError) and error.budget
    assert error.error_type == "BudgetExceededError"


async def test_a_payload_that_fails_to_load_is_retried_on_the_next_chunk() -> None:
    worker = EvalWorker()
    key, blob = pack_payload(Answers(), exact, {})

    with pytest.raises(pickle.UnpicklingError):
        await worker.run_chunk(spec(b"not a pickle", key), 1, [(2, example(2))])
    rows = await worker.run_chunk(spec(blob, key, run_id="r2"), 2, [(2, example(2))])

    assert rows[0][1] is True


def test_plan_splits_concurrency_and_bounds_outstanding_chunks() -> None:
    options = RunOptions(num_threads=64, max_errors=None)

    one = plan(options, workers=1, chunk_size=None)
    two = plan(options, workers=2, chunk_size=None)
    many = plan(RunOptions(num_threads=3, max_errors=None), workers=8, chunk_size=None)

    assert (one.concurrency, one.chunk_size, one.cap) == (64, 32, 3)
    assert (two.concurrency, two.chunk_size, two.cap) == (32, 16, 3)
    # Never more workers than examples allowed in flight.
    assert (many.workers, many.concurrency, many.chunk_size) == (3, 1, 1)
