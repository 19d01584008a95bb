"""An evaluation in which every example failed raises, naming the cause; each failure says
where it happened (inputs, program, LM, metric) and which example it was."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import dspex
from dspex.clients.retry import RetryPolicy
from dspex.errors import EvaluationError, LMServerError
from dspex.evaluate import Evaluate, EvaluationFailure
from dspex.primitives.example import Example
from dspex.primitives.prediction import Prediction
from dspex.simlm import start_sim_lm


def devset(n: int) -> list[Example]:
    return [Example(question=f"q{i}", answer=f"a{i}").with_inputs("question") for i in range(n)]


class Echo:
    async def acall(self, question: str) -> Prediction:
        return Prediction(answer=f"a{question[1:]}")


class Broken:
    async def acall(self, question: str) -> Prediction:
        raise RuntimeError(f"program bug on {question}")


def exact(example: Any, pred: Any) -> bool:
    return bool(example.answer == pred.answer)


def raising_metric(example: Any, pred: Any) -> bool:
    raise ValueError("metric bug")


@pytest.mark.parametrize("max_errors", [None, 10, 1000])
async def test_a_metric_that_always_raises_is_an_error_not_a_score_of_zero(
    max_errors: int | None,
) -> None:
    evaluator = Evaluate(devset=devset(10), metric=raising_metric, max_errors=max_errors)
    with pytest.raises(EvaluationError) as caught:
        await evaluator.acall(Echo())
    message = str(caught.value)
    assert "the metric raised ValueError for all 10 examples" in message
    assert "fix the metric" in message
    assert [(r.index, r.stage) for r in caught.value.records] == [(i, "metric") for i in range(10)]


async def test_examples_without_inputs_say_to_call_with_inputs() -> None:
    data = [Example(question=f"q{i}", answer="a") for i in range(3)]
    with pytest.raises(EvaluationError, match=r"no example has inputs: call \.with_inputs"):
        await Evaluate(devset=data, metric=exact).acall(Echo())


async def test_a_program_that_always_raises_names_the_program() -> None:
    with pytest.raises(EvaluationError, match="the program raised RuntimeError for all 4 examples"):
        await Evaluate(devset=devset(4), metric=exact).acall(Broken())


async def test_mixed_causes_are_each_counted() -> None:
    class HalfBroken:
        async def acall(self, question: str) -> Prediction:
            if int(question[1:]) % 2:
                raise RuntimeError("odd")
            return Prediction(answer="x")

    with pytest.raises(EvaluationError) as caught:
        await Evaluate(devset=devset(6), metric=raising_metric).acall(HalfBroken())
    message = str(caught.value)
    assert "all 6 examples failed" in message
    assert "the program raised RuntimeError for 3" in message
    assert "the metric raised ValueError for 3" in message


async def test_some_examples_measured_keeps_the_score_with_failures_counted() -> None:
    class OnlyFirst:
        async def acall(self, question: str) -> Prediction:
            if question != "q0":
                raise RuntimeError("fails")
            return Prediction(answer="a0")

    result = await Evaluate(devset=devset(10), metric=exact).acall(OnlyFirst())
    assert (result.score, result.n_errors) == (10.0, 9)


async def test_each_failure_is_logged_with_its_index_and_where_it_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def metric(example: Any, pred: Any) -> bool:
        if example.question == "q2":
            raise ValueError("metric bug")
        return True

    class FailsOnOne:
        async def acall(self, question: str) -> Prediction:
            if question == "q1":
                raise RuntimeError("program bug")
            return Prediction(answer="a")

    with caplog.at_level(logging.WARNING, logger="dspex.evaluate"):
        await Evaluate(devset=devset(4), metric=metric).acall(FailsOnOne())
    lines = [r.getMessage() for r in caplog.records if r.name == "dspex.evaluate"]
    assert any("#1 " in line and "failed in the program: RuntimeError" in line for line in lines)
    assert any("#2 " in line and "failed in the metric: ValueError" in line for line in lines)


def test_every_lm_call_failing_names_the_lm_error(caplog: pytest.LogCaptureFixture) -> None:
    # A real outage over HTTP: every request answered 503.
    with start_sim_lm(seed=0, faults={"outage": True}) as server:
        lm = dspex.LM("openai/sim-1", api_base=server.url, api_key="local", cache=False)
        lm.retry_policy = RetryPolicy(num_retries=1, base=0.001, cap=0.01, retry_after_cap=0.01)
        program = dspex.Predict("question -> answer")
        with (
            dspex.context(lm=lm),
            caplog.at_level(logging.WARNING, logger="dspex.evaluate"),
            pytest.raises(EvaluationError) as caught,
        ):
            Evaluate(devset=devset(5), metric=exact, num_threads=2)(program)
    message = str(caught.value)
    assert "every LM call failed, for all 5 examples: LMServerError" in message
    assert "check the LM's model name, api_base and API key" in message
    assert {r.stage for r in caught.value.records} == {"lm"}
    lines = [r.getMessage() for r in caplog.records if r.name == "dspex.evaluate"]
    assert sum("failed in the LM call: LMServerError" in line for line in lines) == 5


async def test_a_program_error_caused_by_an_lm_error_counts_as_the_lms() -> None:
    class Wraps:
        async def acall(self, question: str) -> Prediction:
            try:
                raise LMServerError("503 from provider", model="m")
            except LMServerError as exc:
                raise RuntimeError("step 2 failed") from exc

    with pytest.raises(EvaluationError, match="every LM call failed, for all 2 examples"):
        await Evaluate(devset=devset(2), metric=exact).acall(Wraps())


def test_a_failure_recorded_without_a_stage_is_described_from_its_type() -> None:
    # What an evaluator that does not record the stage (one running elsewhere) reports.
    example = devset(1)[0]
    lm_failure = EvaluationFailure(0, example, "LMTimeoutError", "timed out")
    other = EvaluationFailure(1, example, "ValueError", "bad")
    assert lm_failure.where == "lm" and "failed in the LM call" in lm_failure.describe()
    assert other.where == "" and "failed in the program or the metric" in other.describe()


@pytest.mark.ray
def test_on_the_ray_runner_an_evaluation_that_measured_nothing_raises_too(
    ray_cluster: Any,
) -> None:
    from dspex.runtime.evaluation.ray_runner import shutdown_pool

    try:
        with pytest.raises(EvaluationError) as caught:
            Evaluate(devset=devset(6), metric=raising_metric, runner="ray")(Echo())
    finally:
        shutdown_pool()
    # The workers report where each example failed, as the in-process runner does.
    assert "the metric raised ValueError for all 6 examples" in str(caught.value)
    assert sorted(r.index for r in caught.value.records) == list(range(6))
    assert {r.where for r in caught.value.records} == {"metric"}
