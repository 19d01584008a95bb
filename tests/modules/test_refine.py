"""Refine: sequential attempts, advice from a failed attempt reaching the next attempt's
predictors as a ``hint_`` input, threshold and fail_count semantics; with scripted
answers (DummyLM) and against the simulated LM over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.clients.history import GLOBAL_HISTORY
from dspex.simlm import SimLMServer, datasets, start_sim_lm
from dspex.utils import DummyLM

pytestmark = pytest.mark.usefixtures("isolated_cache")  # a fresh LM cache per test

ADVICE_KEY = "predictor_names"  # only the advice step's prompt has this field


@pytest.fixture(scope="module")
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm() as server:
        yield server




def _prompts_since(start: int) -> list[str]:
    return [str(entry["messages"][-1]["content"]) for entry in list(GLOBAL_HISTORY)[start:]]


def _is_paris(_inputs: dict[str, Any], pred: Any) -> float:
    return float(pred.answer == "Paris")


def test_advice_from_a_failed_attempt_reaches_the_next_attempt_as_hint() -> None:
    dspex.configure(
        lm=DummyLM(
            {
                ADVICE_KEY: {"analysis": "it named the wrong city", "advice": {"self": "The capital is Paris."}},
                "hint_": {"answer": "Paris"},
                "": {"answer": "Lyon"},
            }
        )
    )
    predict = dspex.Predict("question -> answer")
    refine = dspex.Refine(predict, N=3, reward_fn=_is_paris, threshold=1.0)
    start = len(GLOBAL_HISTORY)
    with dspex.context(trace=[]):
        result = refine(question="What is the capital of France?")
        trace = list(dspex.settings.trace)
    assert result.answer == "Paris"
    first, advice, second = _prompts_since(start)  # attempt, advice step, attempt: then it passed
    assert "hint_" not in first
    assert ADVICE_KEY in advice and '"answer": "Lyon"' in advice and "0.0" in advice
    assert "[[ ## hint_ ## ]]\nThe capital is Paris." in second
    # Traced as the module's own call: its predictor, no hint input, no advice step.
    assert len(trace) == 1
    assert trace[0][0] is predict and trace[0][1] == {"question": "What is the capital of France?"}


class TwoSteps(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.draft = dspex.Predict("question -> notes")
        self.answer = dspex.Predict("question, notes -> answer")

    def forward(self, question: str) -> dspex.Prediction:
        notes = self.draft(question=question).notes
        return self.answer(question=question, notes=notes)


def test_each_predictor_gets_its_own_advice_and_na_when_none() -> None:
    dspex.configure(
        lm=DummyLM(
            {
                ADVICE_KEY: {"analysis": "the answer step ignored the notes", "advice": {"answer": "Use the notes."}},
                "Use the notes.": {"answer": "Paris"},
                "[[ ## notes ## ]]\nFrance": {"answer": "Lyon"},
                "": {"notes": "France's capital is Paris"},
            }
        )
    )
    refine = dspex.Refine(TwoSteps(), N=2, reward_fn=_is_paris, threshold=1.0)
    start = len(GLOBAL_HISTORY)
    assert refine(question="What is the capital of France?").answer == "Paris"
    prompts = _prompts_since(start)
    assert len(prompts) == 5  # draft, answer, advice, draft, answer
    assert "answer" in prompts[2] and "draft" in prompts[2]  # both predictors named in the advice request
    assert "[[ ## hint_ ## ]]\nN/A" in prompts[3]
    assert "[[ ## hint_ ## ]]\nUse the notes." in prompts[4]


def test_a_passing_first_attempt_makes_no_advice_call_and_no_retry() -> None:
    dspex.configure(lm=DummyLM({"": {"answer": "Paris"}}))
    start = len(GLOBAL_HISTORY)
    refine = dspex.Refine(dspex.Predict("question -> answer"), N=3, reward_fn=_is_paris, threshold=1.0)
    assert refine(question="q").answer == "Paris"
    assert len(_prompts_since(start)) == 1


def test_no_passing_attempt_returns_the_best_and_the_last_attempt_asks_no_advice() -> None:
    scores = iter([0.3, 0.7, 0.5])
    dspex.configure(lm=DummyLM({ADVICE_KEY: {"analysis": "-", "advice": {"self": "try harder"}}, "": {"answer": "x"}}))
    rewarded: list[float] = []

    def reward(_inputs: dict[str, Any], _pred: Any) -> float:
        rewarded.append(next(scores))
        return rewarded[-1]

    refine = dspex.Refine(dspex.Predict("question -> answer"), N=3, reward_fn=reward, threshold=1.0)
    start = len(GLOBAL_HISTORY)
    with dspex.context(trace=[]):
        refine(question="q")
        trace = list(dspex.settings.trace)
    prompts = _prompts_since(start)
    assert sum(ADVICE_KEY in p for p in prompts) == 2 and len(prompts) == 5
    assert rewarded == [0.3, 0.7, 0.5]
    # The best (second) attempt's trace is the one kept: it saw a hint, which the trace drops.
    assert len(trace) == 1 and "hint_" not in trace[0][1]


def test_attempts_are_separate_rollouts_at_temperature_one() -> None:
    dspex.configure(lm=DummyLM({ADVICE_KEY: {"analysis": "-", "advice": {"self": "again"}}, "": {"answer": "x"}}))
    start = len(GLOBAL_HISTORY)
    dspex.Refine(dspex.Predict("question -> answer"), N=2, reward_fn=lambda _a, _p: 0.0, threshold=1.0)(question="q")
    attempts = [e for e in list(GLOBAL_HISTORY)[start:] if ADVICE_KEY not in str(e["messages"][-1]["content"])]
    assert [e["params"]["rollout_id"] for e in attempts] == [0, 1]
    assert {e["params"]["temperature"] for e in attempts} == {1.0}


# --- failures --------------------------------------------------------------------------------


class Script:
    """State shared by every per-attempt copy of a module (deepcopy leaves it shared)."""

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = errors
        self.calls = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> Script:
        return self


class Flaky(dspex.Module):
    """Raises the exceptions given, one per call, then answers through its predictor."""

    def __init__(self, errors: list[BaseException]) -> None:
        super().__init__()
        self.predict = dspex.Predict("question -> answer")
        self.script = Script(errors)

    def forward(self, question: str) -> dspex.Prediction:
        self.script.calls += 1
        if self.script.errors:
            raise self.script.errors.pop(0)
        return self.predict(question=question)


def test_a_failed_attempt_within_fail_count_is_followed_by_another() -> None:
    dspex.configure(lm=DummyLM({"": {"answer": "Paris"}}))
    module = Flaky([ValueError("boom")])
    refine = dspex.Refine(module, N=3, reward_fn=_is_paris, threshold=1.0)
    assert refine(question="q").answer == "Paris"
    assert module.script.calls == 2


def test_one_failure_past_fail_count_is_raised() -> None:
    dspex.configure(lm=DummyLM({"": {"answer": "Paris"}}))
    module = Flaky([ValueError("one"), KeyError("two")])
    refine = dspex.Refine(module, N=3, reward_fn=_is_paris, threshold=1.0, fail_count=1)
    with pytest.raises(KeyError, match="two"):
        refine(question="q")
    assert module.script.calls == 2


def test_every_attempt_failing_raises_the_last_error() -> None:
    dspex.configure(lm=DummyLM({"": {"answer": "Paris"}}))
    refine = dspex.Refine(Flaky([ValueError("1"), ValueError("2")]), N=2, reward_fn=_is_paris, threshold=1.0)
    with pytest.raises(ValueError, match="2"):
        refine(question="q")


def test_an_advice_step_that_fails_counts_against_fail_count() -> None:
    # The advice reply lacks its fields: the advice step fails to parse.
    dspex.configure(lm=DummyLM({ADVICE_KEY: {"answer": "not advice"}, "": {"answer": "Lyon"}}))
    refine = dspex.Refine(dspex.Predict("question -> answer"), N=3, reward_fn=_is_paris, threshold=1.0, fail_count=0)
    with pytest.raises(dspex.AdapterParseError):
        refine(question="q")
    # Tolerated, it leaves the attempts to run on without advice; the best is returned.
    refine = dspex.Refine(dspex.Predict("question -> answer"), N=3, reward_fn=_is_paris, threshold=1.0)
    assert refine(question="q").answer == "Lyon"


# --- against the simulated LM over HTTP ----------------------------------------------------


def test_hints_turn_failed_attempts_into_passes_over_http(sim: SimLMServer) -> None:
    rows = datasets.load("arithmetic", "dev")[:10]
    gold = {row["question"]: str(row["answer"]) for row in rows}

    def correct(inputs: dict[str, Any], pred: Any) -> float:
        return float(str(pred.answer).strip() == gold[inputs["question"]])

    lm = dspex.LM("openai/sim-a", api_base=sim.url, api_key="k")
    single = dspex.Predict("question -> answer", temperature=1.0)
    refine = dspex.Refine(dspex.Predict("question -> answer"), N=3, reward_fn=correct, threshold=1.0)
    start = len(GLOBAL_HISTORY)
    with dspex.context(lm=lm):
        once = [correct({"question": q}, single(question=q)) for q in gold]
        refined = [correct({"question": q}, refine(question=q)) for q in gold]
    prompts = _prompts_since(start)
    # Every question a single call got right, Refine's first attempt (the same request) gets
    # right too; some of the others pass on a later attempt that carries a hint.
    assert all(r >= o for o, r in zip(once, refined, strict=True))
    assert sum(refined) > sum(once)
    assert any("[[ ## hint_ ## ]]" in p for p in prompts)
    assert sum(ADVICE_KEY in p for p in prompts) >= sum(1 for o in once if not o)
