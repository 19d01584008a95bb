"""BestOfN: concurrent rollouts, a result that does not depend on completion order,
threshold and fail_count semantics, and distinct rollouts against the simulated LM
over real HTTP (no cache collapse)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import dspex
from dspex.clients.history import GLOBAL_HISTORY
from dspex.errors import ConfigurationError
from dspex.simlm import SimLMServer, datasets, start_sim_lm
from dspex.utils import DummyLM

pytestmark = pytest.mark.usefixtures("isolated_cache")  # a fresh LM cache per test

GATE_SECONDS = 10.0


@pytest.fixture(scope="module")
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm() as server:
        yield server




def _rollout(module: dspex.Module) -> int:
    """The rollout id this attempt's copy of the module runs under."""
    return int(module.predict.lm.kwargs["rollout_id"])


class ByRollout(dspex.Module):
    """Answers ``answers[rollout]`` (or raises it, if it is an exception); the attempt with
    rollout r finishes only after rollout r+1 has: completion order is the reverse of the
    index order, proved by events, not by sleeping."""

    def __init__(self, answers: list[Any]) -> None:
        super().__init__()
        self.predict = dspex.Predict("question -> answer")
        self.answers = answers
        self.finished: list[int] = []
        self.done: dict[int, asyncio.Event] = {}

    async def aforward(self, question: str) -> dspex.Prediction:
        rollout = _rollout(self)
        done = self.done.setdefault(rollout, asyncio.Event())
        later = self.done.setdefault(rollout + 1, asyncio.Event())
        try:
            if rollout + 1 < len(self.answers):
                await asyncio.wait_for(later.wait(), GATE_SECONDS)
            await self.predict.acall(question=question)
            answer = self.answers[rollout]
            if isinstance(answer, BaseException):
                raise answer
            return dspex.Prediction(answer=answer)
        finally:
            self.finished.append(rollout)
            done.set()


@pytest.fixture
def by_rollout(monkeypatch: pytest.MonkeyPatch) -> Any:
    def make(answers: list[Any]) -> ByRollout:
        module = ByRollout(answers)
        original_deepcopy = dspex.Module.deepcopy

        def deepcopy(self: Any) -> Any:
            copy = original_deepcopy(self)
            if isinstance(copy, ByRollout):
                copy.finished, copy.done = self.finished, self.done
            return copy

        monkeypatch.setattr(dspex.Module, "deepcopy", deepcopy)
        return module

    return make


def _reward(scores: dict[str, float]) -> Any:
    return lambda _inputs, pred: scores[pred.answer]


# --- concurrency ---------------------------------------------------------------------------


def test_attempts_run_concurrently() -> None:
    inside: list[int] = []
    all_inside = asyncio.Event()

    class Gate(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.predict = dspex.Predict("question -> answer")

        async def aforward(self, question: str) -> dspex.Prediction:
            inside.append(_rollout(self))
            if len(inside) == 4:
                all_inside.set()
            # Sequential attempts would wait here alone until the deadline and fail.
            await asyncio.wait_for(all_inside.wait(), GATE_SECONDS)
            return await self.predict.acall(question=question)

    dspex.configure(lm=DummyLM({"": {"answer": "42"}}))
    # fail_count=0: an attempt timing out at the gate (sequential attempts) fails the call.
    best = dspex.BestOfN(Gate(), N=4, reward_fn=lambda _a, _p: 0.0, threshold=1.0, fail_count=0)
    result = best(question="What is 6 * 7?")
    assert result.answer == "42"
    assert sorted(inside) == [0, 1, 2, 3]


class Shared:
    """Bookkeeping every per-attempt copy of a module shares (deepcopy leaves it shared)."""

    def __init__(self) -> None:
        self.cancelled: list[int] = []

    def __deepcopy__(self, memo: dict[int, Any]) -> Shared:
        return self


def test_attempts_still_running_are_cancelled_once_the_result_is_settled() -> None:
    never = asyncio.Event()

    class FirstWins(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.predict = dspex.Predict("question -> answer")
            self.shared = Shared()

        async def aforward(self, question: str) -> dspex.Prediction:
            rollout = _rollout(self)
            if rollout > 0:
                try:
                    await asyncio.wait_for(never.wait(), GATE_SECONDS)
                except asyncio.CancelledError:
                    self.shared.cancelled.append(rollout)
                    raise
            return await self.predict.acall(question=question)

    dspex.configure(lm=DummyLM({"": {"answer": "x"}}))
    module = FirstWins()
    best = dspex.BestOfN(module, N=3, reward_fn=lambda _a, _p: 1.0, threshold=1.0, fail_count=0)
    assert best(question="q").answer == "x"
    assert sorted(module.shared.cancelled) == [1, 2]


def test_first_passing_attempt_by_index_wins_whatever_finishes_first(by_rollout: Any) -> None:
    module = by_rollout(["low", "good", "best"])
    dspex.configure(lm=DummyLM({"": {"answer": "x"}}))
    best = dspex.BestOfN(module, N=3, reward_fn=_reward({"low": 0.1, "good": 0.6, "best": 1.0}), threshold=0.5)
    assert best(question="q").answer == "good"
    assert module.finished[0] == 2  # the last attempt finished first, yet attempt 1 wins


def test_without_a_passing_attempt_the_best_reward_wins_and_ties_go_to_the_lowest_index(by_rollout: Any) -> None:
    dspex.configure(lm=DummyLM({"": {"answer": "x"}}))
    module = by_rollout(["a", "b", "c"])
    best = dspex.BestOfN(module, N=3, reward_fn=_reward({"a": 0.1, "b": 0.4, "c": 0.4}), threshold=0.9)
    assert best(question="q").answer == "b"


# --- failures --------------------------------------------------------------------------------


def test_failed_attempts_within_fail_count_are_skipped(by_rollout: Any) -> None:
    dspex.configure(lm=DummyLM({"": {"answer": "x"}}))
    module = by_rollout([ValueError("first"), "ok", "ok"])
    best = dspex.BestOfN(module, N=3, reward_fn=lambda _a, _p: 1.0, threshold=1.0)
    assert best(question="q").answer == "ok"


def test_one_failure_past_fail_count_is_raised_even_if_a_later_attempt_passes(by_rollout: Any) -> None:
    dspex.configure(lm=DummyLM({"": {"answer": "x"}}))
    module = by_rollout([ValueError("first"), KeyError("second"), "ok"])
    best = dspex.BestOfN(module, N=3, reward_fn=lambda _a, _p: 1.0, threshold=1.0, fail_count=1)
    with pytest.raises(KeyError, match="second"):
        best(question="q")


def test_fail_count_zero_raises_the_first_failure(by_rollout: Any) -> None:
    dspex.configure(lm=DummyLM({"": {"answer": "x"}}))
    module = by_rollout([ValueError("first"), "ok", "ok"])
    best = dspex.BestOfN(module, N=3, reward_fn=lambda _a, _p: 1.0, threshold=1.0, fail_count=0)
    with pytest.raises(ValueError, match="first"):
        best(question="q")


def test_failures_after_a_passing_attempt_do_not_matter(by_rollout: Any) -> None:
    dspex.configure(lm=DummyLM({"": {"answer": "x"}}))
    module = by_rollout(["ok", ValueError("late"), ValueError("later")])
    best = dspex.BestOfN(module, N=3, reward_fn=lambda _a, _p: 1.0, threshold=1.0, fail_count=0)
    assert best(question="q").answer == "ok"


def test_every_attempt_failing_raises_the_last_error(by_rollout: Any) -> None:
    dspex.configure(lm=DummyLM({"": {"answer": "x"}}))
    module = by_rollout([ValueError("one"), ValueError("two"), ValueError("three")])
    best = dspex.BestOfN(module, N=3, reward_fn=lambda _a, _p: 1.0, threshold=1.0)
    with pytest.raises(ValueError, match="three"):
        best(question="q")


def test_a_raising_reward_fn_counts_as_a_failed_attempt() -> None:
    dspex.configure(lm=DummyLM({"": {"answer": "x"}}))

    def reward(_inputs: dict[str, Any], _pred: Any) -> float:
        raise RuntimeError("judge down")

    best = dspex.BestOfN(dspex.Predict("question -> answer"), N=2, reward_fn=reward, threshold=1.0)
    with pytest.raises(RuntimeError, match="judge down"):
        best(question="q")


def test_bad_arguments_are_configuration_errors() -> None:
    predict = dspex.Predict("question -> answer")
    with pytest.raises(ConfigurationError, match="N"):
        dspex.BestOfN(predict, N=0, reward_fn=lambda _a, _p: 1.0, threshold=1.0)
    with pytest.raises(ConfigurationError, match="reward_fn"):
        dspex.BestOfN(predict, N=2, reward_fn="not callable", threshold=1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="fail_count"):
        dspex.BestOfN(predict, N=2, reward_fn=lambda _a, _p: 1.0, threshold=1.0, fail_count=-1)


def test_no_lm_anywhere_is_a_configuration_error() -> None:
    best = dspex.BestOfN(dspex.Predict("question -> answer"), N=2, reward_fn=lambda _a, _p: 1.0, threshold=1.0)
    with dspex.context(lm=None), pytest.raises(ConfigurationError, match="no LM"):
        best(question="q")


# --- traces ----------------------------------------------------------------------------------


def test_the_chosen_attempt_is_traced_with_the_original_predictor() -> None:
    dspex.configure(lm=DummyLM({"": {"answer": "x"}}))
    predict = dspex.Predict("question -> answer")
    best = dspex.BestOfN(predict, N=3, reward_fn=lambda _a, _p: 1.0, threshold=1.0)
    with dspex.context(trace=[]):
        best(question="q")
        trace = list(dspex.settings.trace)
    assert len(trace) == 1
    assert trace[0][0] is predict and trace[0][1] == {"question": "q"}


# --- rollouts against the simulated LM over HTTP -------------------------------------------


def test_each_attempt_is_its_own_rollout_at_temperature_one(sim: SimLMServer) -> None:
    lm = dspex.LM("openai/sim-a", api_base=sim.url, api_key="k", temperature=0.0)
    row = datasets.load("arithmetic", "dev")[0]
    rewards: list[float] = []

    def correct(inputs: dict[str, Any], pred: Any) -> float:
        rewards.append(float(str(pred.answer).strip() == str(row["answer"])))
        return rewards[-1]

    best = dspex.BestOfN(dspex.Predict("question -> answer"), N=3, reward_fn=correct, threshold=2.0)
    before, history_before = int(sim.stats()["total"]), len(GLOBAL_HISTORY)
    with dspex.context(lm=lm):
        best(question=row["question"])
    # Three rollouts, three requests: the cache did not answer attempts 2 and 3 with the first.
    assert int(sim.stats()["total"]) == before + 3
    calls = list(GLOBAL_HISTORY)[history_before:]
    assert sorted(c["params"]["rollout_id"] for c in calls) == [0, 1, 2]
    assert {c["params"]["temperature"] for c in calls} == {1.0}
    assert len(rewards) == 3
    # The same rollouts again: each from its own cache entry.
    with dspex.context(lm=lm):
        best(question=row["question"])
    assert int(sim.stats()["total"]) == before + 3


def test_rollouts_count_from_the_rollout_in_force(sim: SimLMServer) -> None:
    lm = dspex.LM("openai/sim-a", api_base=sim.url, api_key="k", cache=False)
    best = dspex.BestOfN(dspex.Predict("question -> answer"), N=2, reward_fn=lambda _a, _p: 0.0, threshold=1.0)
    history_before = len(GLOBAL_HISTORY)
    with dspex.context(lm=lm, rollout_id=10):
        best(question="What is 2 + 2?")
    calls = list(GLOBAL_HISTORY)[history_before:]
    assert sorted(c["params"]["rollout_id"] for c in calls) == [10, 11]


def test_real_pass_and_fail_over_http(sim: SimLMServer) -> None:
    lm = dspex.LM("openai/sim-a", api_base=sim.url, api_key="k")
    rows = datasets.load("arithmetic", "dev")[:8]

    def correct(inputs: dict[str, Any], pred: Any) -> float:
        gold = next(r["answer"] for r in rows if r["question"] == inputs["question"])
        return float(str(pred.answer).strip() == str(gold))

    best = dspex.BestOfN(dspex.ChainOfThought("question -> answer"), N=3, reward_fn=correct, threshold=1.0)
    with dspex.context(lm=lm):
        results = [correct({"question": r["question"]}, best(question=r["question"])) for r in rows]
    assert set(results) <= {0.0, 1.0} and len(results) == 8
