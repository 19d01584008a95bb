"""The optimizer framework: run store CRUD, durable steps and replay, call budgets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.clients.budget import CallBudget, Claim, active_budget, budget_scope
from dspex.clients.types import Usage
from dspex.errors import BudgetExceededError, ConfigurationError
from dspex.optimizers import Teleprompter
from dspex.optimizers.run import Run
from dspex.optimizers.run_store import RunStore
from dspex.primitives.workload import current_workload

# --- RunStore ----------------------------------------------------------------------


def test_run_store_runs_crud(store: RunStore) -> None:
    record = store.create_run("r1", "Opt", {"k": 3})
    assert (record.run_id, record.optimizer, record.status, record.config) == ("r1", "Opt", "running", {"k": 3})
    assert store.has_run("r1") and not store.has_run("nope")
    store.update_run("r1", status="finished", best_score=71.5, budget_limited=True, error="E: x")
    again = store.get_run("r1")
    assert (again.status, again.best_score, again.budget_limited, again.error) == ("finished", 71.5, True, "E: x")
    store.create_run("r2", "Opt", {})
    assert {r.run_id for r in store.list_runs()} == {"r1", "r2"}
    with pytest.raises(ValueError, match="unknown run status"):
        store.update_run("r1", status="exploded")
    store.delete_run("r1")
    assert not store.has_run("r1")
    with pytest.raises(ConfigurationError, match="no run 'r1'"):
        store.get_run("r1")


def test_run_store_steps_trials_and_usage(store: RunStore, tmp_path: Path) -> None:
    store.create_run("r", "Opt", {})
    assert store.get_step("r", "a") == (False, None)
    store.put_step("r", "a", {"demos": [dspex.Example(q="1")]})
    store.put_step("r", "b", (1.5, [1.0, 0.0]))
    found, value = store.get_step("r", "a")
    assert found and value["demos"][0].q == "1"
    assert store.step_keys("r") == ["a", "b"]
    store.record_trial("r", 0, {"seed": -3}, score=40.0, status="scored")
    store.record_trial("r", 1, {"seed": -2}, score=None, status="failed", error="E: x", kind="candidate")
    store.record_trial("r", 0, {"seed": -3}, score=45.0, status="scored")  # re-recorded on resume
    trials = store.trials("r")
    assert [(t.number, t.score, t.status, t.kind) for t in trials] == [
        (0, 45.0, "scored", "trial"),
        (1, None, "failed", "candidate"),
    ]
    store.add_usage("r", "m", calls=2, prompt_tokens=10, completion_tokens=5, cost=0.5)
    store.add_usage("r", "m", calls=1, prompt_tokens=1, completion_tokens=1, cost=0.25)
    assert store.usage("r") == {"m": {"calls": 3, "prompt_tokens": 11, "completion_tokens": 6, "cost": 0.75}}
    # Another handle on the same file (another process, a CLI) sees the same data.
    other = RunStore(store.path)
    assert other.step_keys("r") == ["a", "b"] and len(other.trials("r")) == 2


# --- Run.step replay -----------------------------------------------------------------


async def test_step_runs_once_and_a_reopened_run_replays_it(store: RunStore) -> None:
    calls: list[str] = []

    async def work() -> list[int]:
        calls.append("ran")
        return [1, 2, 3]

    run = Run.open("Opt", run_id="s", store=store)
    assert await run.step("k", work) == [1, 2, 3]
    assert await run.step("k", work) == [1, 2, 3]
    assert calls == ["ran"] and run.replayed_steps == 1
    resumed = Run.open("Opt", run_id="s", store=store)
    assert await resumed.step("k", work) == [1, 2, 3]
    assert calls == ["ran"] and resumed.replayed_steps == 1


async def test_a_failed_step_is_not_stored(store: RunStore) -> None:
    run = Run.open("Opt", run_id="f", store=store)

    async def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await run.step("k", boom)
    assert store.get_step("f", "k") == (False, None)


async def test_step_charges_lm_usage_and_resume_restores_the_budget(lm: Any, store: RunStore) -> None:
    run = Run.open("Opt", run_id="u", store=store, max_lm_calls=10)
    program = dspex.Predict("question -> answer")

    async def two_calls() -> str:
        await program.acall(question="What is 2 + 2?")
        await program.acall(question="What is 3 + 3?")
        return "done"

    await run.step("k", two_calls)
    assert run.budget.calls == 2
    assert store.usage("u")["openai/sim-lm"]["calls"] == 2
    resumed = Run.open("Opt", run_id="u", store=store, max_lm_calls=10)
    assert resumed.budget.calls == 2  # spent before the interruption still counts


async def test_a_step_on_a_spent_budget_raises_before_running(store: RunStore) -> None:
    run = Run.open("Opt", run_id="x", store=store, max_lm_calls=0)

    async def never() -> None:
        raise AssertionError("must not run")

    with pytest.raises(BudgetExceededError, match="0 LM calls"):
        await run.step("k", never)


async def test_optimizer_mismatch_on_resume_is_refused(store: RunStore) -> None:
    Run.open("OptA", run_id="m", store=store)
    with pytest.raises(ConfigurationError, match="made by OptA"):
        Run.open("OptB", run_id="m", store=store)


def test_config_secrets_never_reach_the_store(store: RunStore) -> None:
    Run.open("Opt", run_id="c", store=store, config={"api_key": "sk-secret", "k": 2, "fn": len})
    assert store.get_run("c").config == {"k": 2, "fn": "builtin_function_or_method"}


# --- budgets ---------------------------------------------------------------------------


def test_budget_reserve_settle_release() -> None:
    budget = CallBudget(max_calls=2)
    budget.reserve().settle(Claim(0, 0.0))  # a cache hit gives its reservation back
    assert budget.calls == 0
    budget.reserve().settle(Claim(1, 0.01))
    budget.reserve().release()  # the request never reached the LM
    assert (budget.calls, round(budget.cost, 4), budget.exhausted) == (1, 0.01, False)
    budget.reserve()
    assert budget.exhausted
    with pytest.raises(BudgetExceededError, match="2 LM calls"):
        budget.reserve()


def test_cost_budget_and_scope() -> None:
    budget = CallBudget(max_cost=0.05)
    with budget_scope(budget):
        assert active_budget() is budget
        budget.reserve(Claim(1, 0.05)).settle(Claim(1, 0.06))
    assert active_budget() is None
    with pytest.raises(BudgetExceededError, match=r"budget of \$0\.0500"):
        budget.reserve()


async def test_an_evaluation_cut_short_by_the_budget_raises_instead_of_scoring(
    lm: Any, store: RunStore, dev: list[dspex.Example], exact: Any
) -> None:
    run = Run.open("Opt", run_id="e", store=store, max_lm_calls=5)
    program = dspex.Predict("question -> answer")

    async def evaluate() -> float:
        result = await run.evaluate(program, dev[:20], exact, num_threads=4, max_errors=100)
        return float(result.score)

    with pytest.raises(BudgetExceededError):
        await run.step("eval", evaluate)
    assert store.get_step("e", "eval") == (False, None)  # no truncated score was stored


# --- Teleprompter statuses ----------------------------------------------------------


class Waits(Teleprompter):
    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def _compile(self, run: Run, student: Any, **kwargs: Any) -> Any:
        self.started.set()
        await asyncio.Event().wait()  # until cancelled


class Fails(Teleprompter):
    async def _compile(self, run: Run, student: Any, **kwargs: Any) -> Any:
        raise RuntimeError("broken optimizer")


async def test_cancelled_and_failed_runs_are_recorded_as_such(store: RunStore, train: list[dspex.Example]) -> None:
    waits = Waits()
    task = asyncio.ensure_future(waits.acompile(dspex.Predict("q -> a"), trainset=train, run_id="w", store=store))
    await waits.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.get_run("w").status == "cancelled"
    with pytest.raises(RuntimeError):
        await Fails().acompile(dspex.Predict("q -> a"), trainset=train, run_id="x", store=store)
    assert store.get_run("x").status == "failed"
    assert "broken optimizer" in (store.get_run("x").error or "")


def test_compile_validates_datasets() -> None:
    with pytest.raises(ConfigurationError, match="empty"):
        Fails().compile(dspex.Predict("q -> a"), trainset=[])
    with pytest.raises(ConfigurationError, match=r"not a dspex\.Example"):
        Fails().compile(dspex.Predict("q -> a"), trainset=[{"q": 1}])


async def test_usage_of_remote_evaluations_is_charged_to_the_run(tmp_path) -> None:
    from types import SimpleNamespace

    from dspex.optimizers.run import Run
    from dspex.optimizers.run_store import RunStore

    class RemoteEvaluator:
        remote = True

        async def __call__(self, program, devset, metric, **options):
            return SimpleNamespace(results=[], errors=[], usage=Usage(10, 5, calls=7, cost=0.5))

    run = Run.open("Test", store=RunStore(tmp_path / "r.db"), evaluator=RemoteEvaluator(), max_lm_calls=100)
    await run.evaluate(object(), [], None)
    assert run.budget.calls == 7 and run.budget.cost == 0.5
    assert sum(u["calls"] for u in run.store.usage(run.run_id).values()) == 7


async def test_remote_usage_the_runner_already_charged_is_not_charged_twice(tmp_path) -> None:
    from types import SimpleNamespace

    from dspex.clients.budget import active_budget
    from dspex.optimizers.run import Run
    from dspex.optimizers.run_store import RunStore

    class ChargingEvaluator:
        """Charges the active budget per result, as the Ray runner does."""

        remote = True

        async def __call__(self, program, devset, metric, **options):
            usage = Usage(10, 5, calls=7, cost=0.5)
            active_budget().charge(usage)
            return SimpleNamespace(results=[], errors=[], usage=usage, budget_charged=True)

    run = Run.open("Test", store=RunStore(tmp_path / "r.db"), evaluator=ChargingEvaluator(), max_lm_calls=100)
    await run.step("eval", lambda: run.evaluate(object(), [], None))
    assert run.budget.calls == 7 and run.budget.cost == 0.5
    assert sum(u["calls"] for u in run.store.usage(run.run_id).values()) == 7


def test_compile_runs_as_batch_work(store: RunStore) -> None:
    # An optimizer's LM calls wait for a recovering provider instead of failing.
    seen: list[str] = []

    class Records(Teleprompter):
        async def _compile(self, run: Run, student: Any, **kwargs: Any) -> Any:
            seen.append(current_workload())
            return student.deepcopy()

    Records().compile(
        dspex.Predict("question -> answer"),
        trainset=[dspex.Example(question="q", answer="a").with_inputs("question")],
        store=store,
        coordinator=False,
    )
    assert seen == ["batch"]
