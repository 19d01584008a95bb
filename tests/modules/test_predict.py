from __future__ import annotations

import asyncio

import pytest
from _fakes import ScriptedLM

import dspex
from dspex.errors import ConfigurationError, InputError

ANSWER_5 = "[[ ## answer ## ]]\n5\n\n[[ ## completed ## ]]"


def test_sync_call_returns_typed_prediction_with_usage() -> None:
    lm = ScriptedLM(ANSWER_5)
    predict = dspex.Predict("question -> answer: int")
    prediction = predict(question="2 + 3?", lm=lm)
    assert prediction.answer == 5
    assert prediction.usage.calls == 1
    assert lm.requests[0]["messages"][-1]["content"].startswith("[[ ## question ## ]]\n2 + 3?")


async def test_async_call_uses_configured_lm_and_per_call_config() -> None:
    lm = ScriptedLM(ANSWER_5)
    predict = dspex.Predict("question -> answer: int", temperature=0.3)
    with dspex.context(lm=lm):
        prediction = await predict.acall(question="2 + 3?", config={"max_tokens": 50})
    assert prediction.answer == 5
    assert lm.requests[0]["temperature"] == 0.3
    assert lm.requests[0]["max_tokens"] == 50


def test_demos_appear_as_turns() -> None:
    lm = ScriptedLM(ANSWER_5)
    predict = dspex.Predict("question -> answer: int")
    predict.demos = [dspex.Example(question="1 + 1?", answer=2)]
    predict(question="2 + 3?", lm=lm)
    roles = [m["role"] for m in lm.requests[0]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]


def test_n_completions_raise_temperature_and_fill_completions() -> None:
    lm = ScriptedLM([ANSWER_5, ANSWER_5.replace("5", "6")])
    predict = dspex.Predict("question -> answer: int")
    prediction = predict(question="x", lm=lm, config={"n": 2})
    assert lm.requests[0]["n"] == 2 and lm.requests[0]["temperature"] == 0.7
    assert prediction.answer == 5
    assert prediction.completions.answer == [5, 6]


def test_missing_lm_and_bad_inputs_are_clear_errors() -> None:
    predict = dspex.Predict("question -> answer")
    with dspex.context(lm=None), pytest.raises(ConfigurationError, match="no LM is configured"):
        predict(question="x")
    with pytest.raises(InputError, match="keyword arguments only"):
        predict("positional")


def test_inputs_are_treated_as_dspy_treats_them(caplog: pytest.LogCaptureFixture) -> None:
    # Unknown inputs are dropped with a warning; missing ones take their default, None when
    # the type allows it, and otherwise are left out with a warning.
    class Sig(dspex.Signature):
        question: str = dspex.InputField()
        context: str = dspex.InputField(default="DEFAULT_CONTEXT")
        hint: str | None = dspex.InputField()
        answer: str = dspex.OutputField()

    lm = ScriptedLM(ANSWER_5)
    with caplog.at_level("WARNING", logger="dspex.modules.predict"):
        dspex.Predict(Sig)(question="q", extra=1, lm=lm)
    sent = lm.requests[0]["messages"][-1]["content"]
    assert "DEFAULT_CONTEXT" in sent and "extra" not in sent
    assert "['extra'] are not in signature" in caplog.text and "Missing" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="dspex.modules.predict"):
        dspex.Predict(Sig)(lm=ScriptedLM(ANSWER_5))
    assert "Missing: ['question']" in caplog.text


def test_trace_records_predictor_inputs_and_prediction() -> None:
    lm = ScriptedLM(ANSWER_5)
    predict = dspex.Predict("question -> answer: int")
    trace: list = []
    with dspex.context(trace=trace, lm=lm):
        prediction = predict(question="2 + 3?")
    assert trace == [(predict, {"question": "2 + 3?"}, prediction)]


async def test_traces_stay_separate_under_gather() -> None:
    predict = dspex.Predict("question -> answer: int")
    lm = ScriptedLM(ANSWER_5, ANSWER_5)

    async def run(question: str) -> list:
        trace: list = []
        with dspex.context(trace=trace, lm=lm):
            await predict.acall(question=question)
        return trace

    first, second = await asyncio.gather(run("a"), run("b"))
    assert [t[1]["question"] for t in first] == ["a"]
    assert [t[1]["question"] for t in second] == ["b"]


def test_chain_of_thought_adds_reasoning_first() -> None:
    lm = ScriptedLM("[[ ## reasoning ## ]]\n2 plus 3\n\n" + ANSWER_5)
    cot = dspex.ChainOfThought("question -> answer: int")
    assert list(cot.predict.signature.output_fields) == ["reasoning", "answer"]
    prediction = cot(question="2 + 3?", lm=lm)
    assert prediction.reasoning == "2 plus 3" and prediction.answer == 5
    assert [name for name, _ in cot.named_predictors()] == ["predict"]


def test_state_round_trip_and_reset(tmp_path) -> None:
    predict = dspex.Predict("question -> answer: int")
    predict.signature = predict.signature.with_instructions("Tuned.")
    predict.demos = [dspex.Example(question="1 + 1?", answer=2)]
    path = tmp_path / "p.json"
    predict.save(path)
    fresh = dspex.Predict("question -> answer: int")
    fresh.load(path)
    assert fresh.signature.instructions == "Tuned."
    assert fresh.demos[0] == {"question": "1 + 1?", "answer": 2}  # a plain dict, as in DSPy
    fresh.reset()
    assert fresh.demos == []


class TwoStep(dspex.Module):
    def __init__(self) -> None:
        self.think = dspex.ChainOfThought("question -> facts")
        self.answer = dspex.Predict("question, facts -> answer: int")

    async def aforward(self, question: str) -> dspex.Prediction:
        facts = await self.think.acall(question=question)
        return await self.answer.acall(question=question, facts=facts.facts)


def test_composite_program_sums_usage_and_names_predictors() -> None:
    lm = ScriptedLM("[[ ## reasoning ## ]]\nr\n\n[[ ## facts ## ]]\nf\n\n[[ ## completed ## ]]", ANSWER_5)
    program = TwoStep()
    with dspex.context(lm=lm):
        prediction = program(question="q")
    assert prediction.answer == 5
    assert prediction.usage.calls == 2
    assert [n for n, _ in program.named_predictors()] == ["think.predict", "answer"]
