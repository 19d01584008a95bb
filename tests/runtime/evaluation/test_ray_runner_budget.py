"""Run budgets on EvalWorkers: leases hold ``max_lm_calls=``/``max_cost=`` exactly.

Two workers on two nodes evaluate a real Predict program against the simulated LM
over HTTP; the server's own request count is the judge. Each chunk spends from a
lease of the run's budget, reserved before every request, so no request past the
budget is ever sent, and the leases' unused parts come back, so the budget is spent
to its last call rather than stranded in an idle worker's lease.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import dspex
from dspex.clients.budget import CallBudget, budget_scope
from dspex.errors import BudgetExceededError
from dspex.evaluate import Evaluate
from dspex.runtime.evaluation.ray_runner import DispatchStats, EvalWorkerPool, RunOptions, run_ray
from dspex.simlm import SimLMServer, datasets, start_sim_lm

pytestmark = pytest.mark.ray

PRICE = (1.0, 4.0)  # USD per 1M tokens


def examples(n: int) -> list[dspex.Example]:
    rows = datasets.load("arithmetic", "train")  # type: ignore[arg-type]
    return [
        dspex.Example(question=r["question"], answer=str(r["answer"])).with_inputs("question")
        for r in rows[:n]
    ]


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return str(example.answer).strip() == str(prediction.answer).strip()


@pytest.fixture
def server() -> Iterator[SimLMServer]:
    with start_sim_lm(seed=0, latency_ms=5) as running:
        yield running


@pytest.fixture
def two_node_pool(ray_cluster: Any) -> Iterator[EvalWorkerPool]:
    """Two EvalWorkers, one on the head node and one on a node added for the test."""
    import ray

    node = ray_cluster.add_node(
        num_cpus=1, resources={"budget_node": 1}, node_ip_address="127.0.0.1"
    )
    ray_cluster.wait_for_nodes()
    pool = EvalWorkerPool()
    try:
        head = ray.get_runtime_context().get_node_id()
        remote = pool.add(resources={"budget_node": 1})
        local = pool.add(scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False))
        nodes = ray.get([remote.ping.remote(), local.ping.remote()], timeout=60)
        assert nodes[0] != nodes[1] == head
        yield pool
    finally:
        pool.shutdown()
        ray_cluster.remove_node(node)


def lm(server: SimLMServer, **options: Any) -> dspex.LM:
    return dspex.LM("openai/sim-lm", api_base=server.url, cache=False, **options)


async def test_max_lm_calls_holds_exactly_across_workers_on_two_nodes(
    server: SimLMServer, two_node_pool: EvalWorkerPool
) -> None:
    budget, stats = CallBudget(max_calls=60), DispatchStats()
    options = RunOptions(num_threads=16, max_errors=None)

    with (
        dspex.context(lm=lm(server)),
        budget_scope(budget),
        pytest.raises(BudgetExceededError, match="max_lm_calls") as stopped,
    ):
        await run_ray(
            dspex.Predict("question -> answer"),
            exact,
            examples(200),
            options,
            workers=2,
            pool=two_node_pool,
            stats=stats,
        )

    sent = server.stats()["total"]
    assert sent == budget.calls == 60  # never past the budget, and no call stranded in a lease
    assert budget.holders == 0  # every lease came back
    assert "were not run" in str(stopped.value)
    assert stats.chunks_sent > 2  # both workers took several leases


async def test_max_cost_holds_across_workers_on_two_nodes(
    server: SimLMServer, two_node_pool: EvalWorkerPool
) -> None:
    budget = CallBudget(max_cost=0.01)
    options = RunOptions(num_threads=16, max_errors=None)

    with (
        dspex.context(lm=lm(server, price=PRICE, max_tokens=64)),
        budget_scope(budget),
        pytest.raises(BudgetExceededError, match="max_cost"),
    ):
        await run_ray(
            dspex.Predict("question -> answer"),
            exact,
            examples(300),
            options,
            workers=2,
            pool=two_node_pool,
        )

    stats = server.stats()
    billed = (stats["prompt_tokens"] * PRICE[0] + stats["completion_tokens"] * PRICE[1]) / 1e6
    assert billed == pytest.approx(budget.cost)  # settled to what the requests really cost
    assert 0.005 < billed <= 0.01
    assert budget.holders == 0


def test_evaluate_on_ray_spends_the_active_budget_once(
    server: SimLMServer, two_node_pool: EvalWorkerPool
) -> None:
    budget = CallBudget(max_calls=10_000)
    with dspex.context(lm=lm(server)), budget_scope(budget):
        result = Evaluate(devset=examples(40), metric=exact, runner="ray", num_threads=8)(
            dspex.Predict("question -> answer")
        )

    assert result.budget_charged and result.usage is not None
    assert budget.calls == result.usage.calls == server.stats()["total"] == 40
    assert budget.holders == 0
