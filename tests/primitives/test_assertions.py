"""dspex.Assert / dspex.Suggest: a failed check re-runs the step that produced the value
with the message as feedback; Assert raises after max_backtracks, Suggest logs and goes
on. Scripted answers (DummyLM) for the mechanics, the simulated LM over HTTP for a
program that gets its answers right by backtracking."""

from __future__ import annotations

import asyncio
import functools
import logging
import pickle
from typing import Any

import pytest

import dspex
from dspex.primitives.assertions import FEEDBACK_FIELD
from dspex.simlm import datasets, start_sim_lm
from dspex.utils import DummyLM

pytestmark = pytest.mark.usefixtures("isolated_cache")  # a fresh LM cache per test

class ShortAnswer(dspex.Module):
    def __init__(self, checker: Any = dspex.Assert, limit: int = 10) -> None:
        super().__init__()
        self.draft = dspex.Predict("question -> notes")
        self.answer = dspex.Predict("question, notes -> answer")
        self.checker = checker
        self.limit = limit
        self.seen: list[str] = []

    def forward(self, question: str) -> Any:
        notes = self.draft(question=question).notes
        pred = self.answer(question=question, notes=notes)
        self.seen.append(pred.answer)
        self.checker(len(pred.answer) <= self.limit, f"the answer must be at most {self.limit} characters")
        return pred


def _requests(lm: DummyLM) -> list[str]:
    return [str(entry["messages"][-1]["content"]) for entry in lm.history]


def test_a_failed_assert_reruns_the_step_with_its_past_output_and_the_message() -> None:
    lm = DummyLM(
        {
            "past_answer": {"answer": "Paris"},  # the re-run, told what went wrong
            "[[ ## notes ## ]]\n": {"answer": "The capital city of France is Paris"},
            "": {"notes": "France; capital"},
        }
    )
    dspex.configure(lm=lm)
    program = ShortAnswer()
    with dspex.context(trace=[]):
        result = program(question="What is the capital of France?")
        trace = list(dspex.settings.trace)

    assert result.answer == "Paris"
    assert program.seen == ["The capital city of France is Paris", "Paris"]
    retry = _requests(lm)[-1]
    assert "The capital city of France is Paris" in retry  # past_answer
    assert "the answer must be at most 10 characters" in retry  # feedback
    # The re-run's draft step got the same request (an LM with a cache answers it from
    # there); only the step that failed the check was told anything.
    requests = _requests(lm)
    assert len(requests) == 4 and requests[0] == requests[2]
    assert "feedback" not in requests[2] and requests[1] != requests[3]
    # The trace holds the passing run only, with the step's own inputs (no feedback fields).
    assert [p for p, _, _ in trace] == [program.draft, program.answer]
    assert FEEDBACK_FIELD not in trace[1][1] and "past_answer" not in trace[1][1]


def test_an_assert_still_failing_raises_with_every_message_after_max_backtracks() -> None:
    lm = DummyLM({"": {"notes": "n", "answer": "far too long an answer"}})
    dspex.configure(lm=lm)
    program = ShortAnswer(limit=3).activate_assertions(max_backtracks=1)
    with pytest.raises(dspex.AssertionFailedError) as caught:
        program(question="q")
    assert caught.value.backtracks == 1
    assert caught.value.messages == ["the answer must be at most 3 characters"] * 2
    assert "max_backtracks" in str(caught.value)
    assert len(program.seen) == 2  # the first run and one re-run
    assert isinstance(caught.value, AssertionError)  # code catching AssertionError still works
    copy = pickle.loads(pickle.dumps(caught.value))
    assert copy.messages == caught.value.messages and copy.backtracks == 1


def test_a_failing_suggest_logs_and_the_program_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    lm = DummyLM({"": {"notes": "n", "answer": "far too long an answer"}})
    dspex.configure(lm=lm, max_backtracks=3)
    program = ShortAnswer(checker=dspex.Suggest, limit=3)
    with caplog.at_level(logging.WARNING, logger="dspex.primitives.assertions"):
        result = program(question="q")
    assert result.answer == "far too long an answer"
    assert len(program.seen) == 4  # the first run and the 3 re-runs settings allowed
    assert any("at most 3 characters" in r.getMessage() for r in caplog.records)


def test_target_module_picks_the_step_that_gets_the_feedback() -> None:
    lm = DummyLM(
        {
            "past_notes": {"notes": "France; capital; Paris"},
            "France; capital; Paris": {"answer": "Paris"},
            "[[ ## notes ## ]]\n": {"answer": "Lyon"},
            "": {"notes": "France; capital"},
        }
    )
    dspex.configure(lm=lm)

    class NotesFirst(ShortAnswer):
        def forward(self, question: str) -> Any:
            notes = self.draft(question=question).notes
            pred = self.answer(question=question, notes=notes)
            dspex.Assert(pred.answer == "Paris", "the notes must name the city", target_module=self.draft)
            return pred

    program = NotesFirst()
    assert program(question="capital of France?").answer == "Paris"
    told = [text for text in _requests(lm) if "past_notes" in text]
    assert len(told) == 1 and "the notes must name the city" in told[0]


def test_checks_outside_a_module_call_act_at_once(caplog: pytest.LogCaptureFixture) -> None:
    assert dspex.Assert(True, "fine") is True
    with pytest.raises(dspex.AssertionFailedError, match="no backtracking here"):
        dspex.Assert(False, "no backtracking here")
    with caplog.at_level(logging.WARNING, logger="dspex.primitives.assertions"):
        assert dspex.Suggest(False, "just a hint") is False
    assert any("just a hint" in r.getMessage() for r in caplog.records)


def test_async_programs_backtrack_and_dspy_2_activation_spellings_work() -> None:
    lm = DummyLM({"past_answer": {"answer": "ok"}, "": {"notes": "n", "answer": "much too long"}})
    dspex.configure(lm=lm)

    class Async(ShortAnswer):
        async def aforward(self, question: str) -> Any:
            notes = (await self.draft.acall(question=question)).notes
            pred = await self.answer.acall(question=question, notes=notes)
            dspex.Assert(len(pred.answer) <= 5, "at most 5 characters")
            return pred

    assert asyncio.run(Async().acall(question="q")).answer == "ok"

    never = DummyLM({"": {"notes": "n", "answer": "much too long"}})
    dspex.configure(lm=never)
    program = dspex.assert_transform_module(
        ShortAnswer(limit=3), functools.partial(dspex.backtrack_handler, max_backtracks=0)
    )
    with pytest.raises(dspex.AssertionFailedError):
        program(question="q")
    assert len(program.seen) == 1  # no re-run allowed


def test_backtracking_raises_the_score_on_the_simulated_lm() -> None:
    """A checked program answers more arithmetic questions right: a re-run told its
    earlier answer failed the check gets it right more often."""
    records = datasets.load("arithmetic", "dev")[:40]
    gold = {r["question"]: r["answer"] for r in records}

    class Checked(dspex.Module):
        def __init__(self, check: bool) -> None:
            super().__init__()
            self.solve = dspex.Predict("question -> answer: int")
            self.check = check

        def forward(self, question: str) -> Any:
            pred = self.solve(question=question)
            if self.check:  # a checker that knows the answer: a stand-in for a unit test
                dspex.Suggest(pred.answer == gold[question], "recompute: that result is wrong")
            return pred

    with start_sim_lm() as server:
        dspex.configure(lm=dspex.LM("openai/sim-lm", api_base=server.url, api_key="k", cache=False))
        plain = sum(Checked(False)(question=q).answer == a for q, a in gold.items())
        checked = sum(Checked(True)(question=q).answer == a for q, a in gold.items())
    assert checked > plain + 5, (plain, checked)
