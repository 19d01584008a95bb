"""BootstrapFewShotWithRandomSearch: candidates, trials, best program, budgets, resume."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import dspex
from dspex.optimizers import BootstrapFewShotWithRandomSearch, BootstrapRS, SearchError
from dspex.optimizers.run_store import RunStore


def search(metric: Any, **options: Any) -> BootstrapFewShotWithRandomSearch:
    settings: dict[str, Any] = {"max_bootstrapped_demos": 3, "max_labeled_demos": 4, "num_candidate_programs": 4}
    return BootstrapRS(metric=metric, **{**settings, **options})


def test_returns_the_best_candidate_and_records_every_trial(
    lm: Any, train: list[dspex.Example], dev: list[dspex.Example], exact: Any, store: RunStore
) -> None:
    student = dspex.ChainOfThought("question -> answer")
    best = search(exact).compile(student, trainset=train, valset=dev[:40], run_id="rs", store=store)
    trials = store.trials("rs")
    assert [t.params["seed"] for t in trials] == [-3, -2, -1, 0, 1, 2, 3]
    assert all(t.status == "scored" and t.kind == "candidate" for t in trials)
    scores = [t.score for t in trials]
    assert best.run_info.best_score == max(scores)
    ranked = [c["score"] for c in best.candidate_programs]
    assert ranked == sorted(scores, reverse=True)
    winner = next(t for t in trials if t.score == max(scores))  # the earliest seed wins ties
    assert best.candidate_programs[0]["seed"] == winner.params["seed"]
    assert best is best.candidate_programs[0]["program"]
    assert max(scores) > trials[0].score  # a bootstrapped candidate beats zero-shot
    assert student.predict.demos == []
    # The candidates' predictors are not mistaken for the best program's own.
    assert [name for name, _ in best.named_predictors()] == ["predict"]


def test_same_result_whatever_the_concurrency(lm: Any, train: list[dspex.Example], exact: Any) -> None:
    def run(threads: int) -> tuple[dict[str, Any], list[tuple[int, float]]]:
        best = search(exact, num_threads=threads).compile(dspex.ChainOfThought("question -> answer"), trainset=train)
        return best.dump_state(), [(c["seed"], c["score"]) for c in best.candidate_programs]

    assert run(1) == run(12)


class NeedsDemos(dspex.Module):
    """Fails whenever it has no demos: the zero-shot candidate's evaluation fails."""

    def __init__(self) -> None:
        super().__init__()
        self.predict = dspex.Predict("question -> reasoning, answer")

    async def aforward(self, question: str) -> Any:
        if not self.predict.demos:
            raise RuntimeError("no demos")
        return await self.predict.acall(question=question)


def test_a_failed_evaluation_is_recorded_as_failed_not_scored_zero(
    lm: Any, train: list[dspex.Example], exact: Any, store: RunStore
) -> None:
    best = search(exact, max_errors=2).compile(NeedsDemos(), trainset=train, run_id="f", store=store)
    trials = {t.params["seed"]: t for t in store.trials("f")}
    assert trials[-3].status == "failed" and trials[-3].score is None
    assert "EvaluationError" in (trials[-3].error or "")
    assert all(t.status == "scored" for seed, t in trials.items() if seed != -3)
    assert -3 not in [c["seed"] for c in best.candidate_programs]


def test_a_candidate_whose_evaluation_measured_nothing_is_a_failed_trial(
    lm: Any, train: list[dspex.Example], exact: Any, store: RunStore
) -> None:
    # An error limit above the valset's size: every zero-shot example fails, which scored 0.
    best = search(exact, max_errors=1000).compile(NeedsDemos(), trainset=train, run_id="n", store=store)
    trials = {t.params["seed"]: t for t in store.trials("n")}
    assert trials[-3].status == "failed" and trials[-3].score is None
    assert "the program raised RuntimeError for all" in (trials[-3].error or "")
    assert all(t.status == "scored" for seed, t in trials.items() if seed != -3)
    assert best.run_info.status == "finished"


def test_every_candidate_failing_raises(lm: Any, train: list[dspex.Example], exact: Any) -> None:
    with pytest.raises(SearchError, match="all 1 candidates failed"):
        search(exact, max_errors=0).compile(NeedsDemos(), trainset=train, restrict=[-3])


def test_stop_at_score_stops_in_seed_order(lm: Any, train: list[dspex.Example], exact: Any, store: RunStore) -> None:
    best = search(exact, stop_at_score=0.0).compile(
        dspex.ChainOfThought("question -> answer"), trainset=train, run_id="s", store=store
    )
    assert [t.params["seed"] for t in store.trials("s")] == [-3]
    assert [c["seed"] for c in best.candidate_programs] == [-3]


def test_restrict_and_labeled_candidate(lm: Any, train: list[dspex.Example], exact: Any) -> None:
    best = search(exact, max_labeled_demos=5).compile(
        dspex.ChainOfThought("question -> answer"), trainset=train, restrict=[-2]
    )
    assert len(best.predict.demos) == 5
    assert not any(d.get("augmented") for d in best.predict.demos)


def test_budget_stop_returns_best_so_far(lm: Any, train: list[dspex.Example], exact: Any, store: RunStore) -> None:
    best = search(exact, num_candidate_programs=8).compile(
        dspex.ChainOfThought("question -> answer"), trainset=train, max_lm_calls=60, run_id="b", store=store
    )
    info = best.run_info
    assert info.budget_limited is True and info.status == "budget_limited"
    assert 0 < info.lm_calls <= 60
    assert store.get_run("b").budget_limited is True
    # The budget is spent in seed order: zero-shot (40 calls) is scored whole; the labeled
    # candidate is cut short and recorded as stopped by the budget, not scored on a partial run.
    trials = store.trials("b")
    assert [(t.params["seed"], t.status) for t in trials] == [(-3, "scored"), (-2, "failed")]
    assert "BudgetExceededError" in (trials[1].error or "")
    assert info.best_score == trials[0].score
    assert [c["seed"] for c in best.candidate_programs] == [-3]


async def test_interrupted_run_resumes_to_the_same_program(
    lm: Any, sim: Any, train: list[dspex.Example], dev: list[dspex.Example], exact: Any, store: RunStore
) -> None:
    valset = dev[:30]
    reference = await search(exact).acompile(
        dspex.ChainOfThought("question -> answer"), trainset=train, valset=valset, run_id="ref", store=store
    )
    reference_calls = sim.stats()["total"]

    calls = 0
    reached = asyncio.Event()

    def interrupting(example: Any, prediction: Any, trace: Any = None) -> bool:
        nonlocal calls
        calls += 1
        if calls == 40:
            reached.set()
        return exact(example, prediction, trace)

    task = asyncio.ensure_future(
        search(interrupting).acompile(
            dspex.ChainOfThought("question -> answer"), trainset=train, valset=valset, run_id="r", store=store
        )
    )
    await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.get_run("r").status == "cancelled"
    done_before = len(store.step_keys("r"))
    assert done_before > 0

    calls_before = sim.stats()["total"]
    resumed = await search(exact).acompile(
        dspex.ChainOfThought("question -> answer"), trainset=train, valset=valset, run_id="r", store=store
    )
    # Replayed work is not redone: the resumed run makes fewer LM calls than a fresh one.
    assert 0 < resumed.run_info.replayed_steps <= done_before
    assert sim.stats()["total"] - calls_before < reference_calls
    assert resumed.dump_state() == reference.dump_state()
    assert [(c["seed"], c["score"]) for c in resumed.candidate_programs] == [
        (c["seed"], c["score"]) for c in reference.candidate_programs
    ]
    assert store.get_run("r").status == "finished"
