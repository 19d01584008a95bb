"""OptimizationCoordinator on real Ray: same program as in-process, resume after a kill,
driver re-attach, and `runs()`.

The simulated LM runs as an HTTP server (5 ms latency) so the coordinator's
process reaches it; ``num_threads=1`` makes a run last a couple of seconds, so
a test can act on it while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from _polling import coordinator, poll, restarted_progress

import dspex
from dspex.errors import ConfigurationError
from dspex.optimizers import BootstrapRS, LabeledFewShot
from dspex.optimizers.run_store import RunStore
from dspex.primitives.settings import settings
from dspex.runtime.coordinator import (
    OPTIMIZERS_SUPERVISOR,
    OptimizationCoordinator,
    RunCancelledError,
    coordinator_name,
    count_steps,
    load_outcome,
    make_job,
    save_job,
)
from dspex.runtime.runs import aresume, resume, runs
from dspex.simlm import datasets, start_sim_lm

pytestmark = pytest.mark.ray

T = TypeVar("T")
DEADLINE = 60.0


def examples(split: str, n: int) -> list[dspex.Example]:
    rows = datasets.load("arithmetic", split)  # type: ignore[arg-type]
    return [dspex.Example(question=r["question"], answer=str(r["answer"])).with_inputs("question") for r in rows][:n]


TRAIN = examples("train", 20)
VAL = examples("dev", 24)


def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
    return str(example.answer).strip() == str(prediction.answer).strip()


def search() -> BootstrapRS:
    return BootstrapRS(
        exact, max_bootstrapped_demos=2, max_labeled_demos=4, num_candidate_programs=8, num_threads=1
    )


def student() -> dspex.ChainOfThought:
    return dspex.ChainOfThought("question -> answer")


async def steps_at_least(store: RunStore, run_id: str, count: int) -> None:
    async def enough() -> bool:
        return count_steps(store, run_id) >= count

    await poll(enough, f"{count} stored steps of run {run_id}")


async def child_names() -> list[str]:
    from dspex.runtime.supervision import get_supervisor

    children = await get_supervisor(OPTIMIZERS_SUPERVISOR).which_children.remote()
    return [child.name for child in children]


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_lm() -> Iterator[Any]:
    with start_sim_lm(seed=0, latency_ms=5) as server:
        model = dspex.LM("openai/sim-lm", api_base=server.url, cache=False)
        previous = settings.lm
        dspex.configure(lm=model)
        yield model
        dspex.configure(lm=previous)


@pytest.fixture(scope="module")
def reference(http_lm: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The program an uninterrupted in-process run compiles."""
    store = RunStore(tmp_path_factory.mktemp("reference") / "runs.sqlite3")
    program = search().compile(
        student(), trainset=TRAIN, valset=VAL, run_id="reference", store=store, coordinator=False
    )
    return dict(program.dump_state())


# --- the coordinator class, without Ray ---------------------------------------------------------


async def test_the_coordinator_class_runs_a_compile_in_process(
    http_lm: Any, reference: dict[str, Any], store: RunStore
) -> None:
    job = make_job(search(), student(), trainset=TRAIN, valset=VAL, max_lm_calls=None, max_cost=None, kwargs={})
    save_job(store, "unit", job)
    unit = OptimizationCoordinator("unit", str(store.path), linger=0.05)
    outcome = await unit.result()
    assert outcome.state == "finished"
    assert load_outcome(outcome, "unit").dump_state() == reference
    progress = await unit.progress()
    assert progress.state == "finished" and progress.steps == count_steps(store, "unit") > 0
    assert progress.trials == 11 and progress.lm_calls > 0 and progress.resumed_steps == 0

    async def exited() -> bool:
        return unit.exit_reason is not None

    await poll(exited, "the finished coordinator to exit")
    assert unit.exit_reason is not None and unit.exit_reason.kind == "normal"


async def test_a_cancelled_coordinator_marks_its_run_cancelled(http_lm: Any, store: RunStore) -> None:
    job = make_job(search(), student(), trainset=TRAIN, valset=VAL, max_lm_calls=None, max_cost=None, kwargs={})
    save_job(store, "stop", job)
    unit = OptimizationCoordinator("stop", str(store.path))
    await unit.ready()
    await steps_at_least(store, "stop", 1)
    await unit.cancel()
    outcome = await unit.result()
    assert outcome.state == "cancelled"
    assert store.get_run("stop").status == "cancelled"
    with pytest.raises(RunCancelledError, match="resume"):
        load_outcome(outcome, "stop")


# --- on Ray ---------------------------------------------------------------------------------------


def test_a_coordinator_compile_equals_the_in_process_one(
    optimizers: None, reference: dict[str, Any], store: RunStore
) -> None:
    program = search().compile(student(), trainset=TRAIN, valset=VAL, run_id="a", store=store, coordinator=True)
    assert program.dump_state() == reference
    assert program.run_info.status == "finished" and program.run_info.replayed_steps == 0
    # The driver collected the result: the coordinator is stopped, not restarted, its spec gone.
    assert coordinator("a") is None
    assert coordinator_name("a") not in asyncio.run(child_names())

    updated = store.get_run("a").updated
    again = search().compile(student(), trainset=TRAIN, valset=VAL, run_id="a", store=store, coordinator=True)
    assert again.dump_state() == reference
    assert again.run_info == program.run_info  # the stored program, not a re-run
    assert store.get_run("a").updated == updated


async def test_a_killed_coordinator_is_restarted_and_resumes(
    optimizers: None, reference: dict[str, Any], store: RunStore
) -> None:
    import ray

    driver = asyncio.ensure_future(
        search().acompile(student(), trainset=TRAIN, valset=VAL, run_id="b", store=store, coordinator=True)
    )
    await steps_at_least(store, "b", 3)
    victim = coordinator("b")
    assert victim is not None and store.get_run("b").status == "running"
    ray.kill(victim)
    killed = time.monotonic()

    progress = await restarted_progress("b", victim, "the supervisor to restart the coordinator")
    resumed_after = time.monotonic() - killed
    assert progress.resumed_steps >= 3
    program = await asyncio.wait_for(driver, DEADLINE)
    print(f"\ncoordinator back {resumed_after:.2f}s after ray.kill; run_info={program.run_info}")
    assert program.run_info.replayed_steps >= 3
    assert program.dump_state() == reference


async def test_a_driver_reattaches_to_a_running_coordinator(
    optimizers: None, reference: dict[str, Any], store: RunStore
) -> None:
    first = asyncio.ensure_future(
        search().acompile(student(), trainset=TRAIN, valset=VAL, run_id="c", store=store, coordinator=True)
    )
    await steps_at_least(store, "c", 2)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    # Only the driver's wait was cancelled: the run goes on in its coordinator.
    handle = coordinator("c")
    assert handle is not None
    assert (await handle.progress.remote()).state in ("running", "finished")
    assert store.get_run("c").status in ("running", "finished")

    program = await search().acompile(
        student(), trainset=TRAIN, valset=VAL, run_id="c", store=store, coordinator=True
    )
    assert program.dump_state() == reference
    assert program.run_info.replayed_steps == 0  # the same coordinator finished it: no restart


async def test_evaluations_fan_out_to_eval_workers_when_the_runtime_is_up(
    optimizers: None, reference: dict[str, Any], store: RunStore
) -> None:
    job = make_job(search(), student(), trainset=TRAIN, valset=VAL, max_lm_calls=None, max_cost=None, kwargs={})
    assert not job.fan_out  # this driver has no dspex runtime up; a driver after dspex.init() has
    save_job(store, "fan", dataclasses.replace(job, fan_out=True))
    program = await aresume("fan", store=store)  # starts a coordinator from the stored job
    assert store.get_run("fan").config["evaluator"] == "RayEvaluator"
    assert program.dump_state() == reference


def test_runs_lists_runs_with_their_status(optimizers: None, store: RunStore) -> None:
    LabeledFewShot(k=2).compile(student(), trainset=TRAIN, run_id="labeled", store=store, coordinator=True)
    search().compile(
        student(), trainset=TRAIN, valset=VAL, run_id="budget", store=store, max_lm_calls=60, coordinator=False
    )
    listed = {summary.run_id: summary for summary in runs(store)}
    assert set(listed) == {"labeled", "budget"}
    assert listed["labeled"].status == "finished" and listed["labeled"].has_result
    assert listed["labeled"].coordinator is False  # stopped once its result was collected
    budget = listed["budget"]
    assert budget.status == "budget_limited" and not budget.has_result
    assert budget.optimizer == "BootstrapFewShotWithRandomSearch" and budget.steps > 0
    assert 0 < budget.lm_calls <= 60 and budget.trials > 0

    assert resume("labeled", store=store).dump_state() == LabeledFewShot(k=2).compile(
        student(), trainset=TRAIN, coordinator=False
    ).dump_state()
    with pytest.raises(ConfigurationError, match="compiled in-process"):
        resume("budget", store=store)


@pytest.mark.parametrize(
    "limit",
    [{"max_lm_calls": 60, "max_cost": None}, {"max_lm_calls": None, "max_cost": 0.03}],
    ids=["max_lm_calls", "max_cost"],
)
async def test_a_budget_holds_exactly_in_the_coordinator_with_workers_on_two_nodes(
    optimizers: None, store: RunStore, ray_cluster: Any, limit: dict[str, Any]
) -> None:
    price = (1.0, 4.0)
    node = ray_cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    ray_cluster.wait_for_nodes()
    try:
        with start_sim_lm(seed=0, latency_ms=2) as server:
            lm = dspex.LM("openai/sim-lm", api_base=server.url, cache=False, price=price, max_tokens=200)
            optimizer = BootstrapRS(
                exact, max_bootstrapped_demos=2, max_labeled_demos=4, num_candidate_programs=8, num_threads=8
            )
            with dspex.context(lm=lm):
                job = make_job(
                    optimizer, student(), trainset=TRAIN, valset=examples("dev", 40), kwargs={}, **limit
                )
            # As after dspex.init(): the coordinator fans evaluations out to EvalWorkers.
            save_job(store, "exact", dataclasses.replace(job, fan_out=True))
            program = await aresume("exact", store=store)
            stats = server.stats()
    finally:
        ray_cluster.remove_node(node)

    if limit["max_lm_calls"] is not None:
        assert stats["total"] <= limit["max_lm_calls"]
    else:
        billed = (stats["prompt_tokens"] * price[0] + stats["completion_tokens"] * price[1]) / 1e6
        assert 0 < billed <= limit["max_cost"]
    assert store.get_run("exact").status == "budget_limited"
    assert program.run_info.status == "budget_limited" and program.run_info.best_score is not None
    assert isinstance(program, dspex.ChainOfThought)


def test_runs_reads_the_default_store(tmp_path: Path) -> None:
    # DSPEX_RUNS_DB points into tmp_path (tests/optimizers/conftest.py).
    store = RunStore()
    store.create_run("r1", "LabeledFewShot", {})
    assert [summary.run_id for summary in runs()] == ["r1"]
    assert runs()[0].status == "running" and runs()[0].steps == 0


async def test_while_the_runtime_is_up_compile_runs_under_the_trees_optimizers_supervisor(
    optimizers: None, reference: dict[str, Any], store: RunStore
) -> None:
    from dspex import runtime
    from dspex.runtime.supervision import get_supervisor, stop_supervisor

    # The tree brings its own dspex.optimizers: the standalone one of the tests above must go.
    with contextlib.suppress(ValueError):
        stop_supervisor(OPTIMIZERS_SUPERVISOR, timeout=60)
    await poll(is_free(OPTIMIZERS_SUPERVISOR), "the standalone supervisor's name to be released")
    runtime.init()
    try:
        tree_branch = get_supervisor(OPTIMIZERS_SUPERVISOR)
        driver = asyncio.ensure_future(
            search().acompile(student(), trainset=TRAIN, valset=VAL, run_id="tree", store=store)
        )

        async def child_of_the_tree() -> bool:
            children = await tree_branch.which_children.remote()
            return coordinator_name("tree") in [child.name for child in children]

        await poll(child_of_the_tree, "the run's coordinator under the tree's dspex.optimizers")
        program = await asyncio.wait_for(driver, DEADLINE)
    finally:
        runtime.shutdown(stop_tree=True)
    assert program.dump_state() == reference
    # The driver had the runtime up, so the coordinator fanned evaluations out to EvalWorkers.
    assert store.get_run("tree").config["evaluator"] == "RayEvaluator"


def is_free(name: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        import ray

        try:
            ray.get_actor(name, namespace="dspex")
        except ValueError:
            return True
        return False

    return check
