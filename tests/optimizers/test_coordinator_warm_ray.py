"""The runtime's fast path for optimizers: small evaluations in the coordinator's process,
big ones on EvalWorkers, each counted once; warm spare coordinators that serve one run
after another, still restarted and resumed after a kill.

The simulated LM runs as an HTTP server so coordinators and workers reach it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from _polling import coordinator, poll

import dspex
from dspex.optimizers import BootstrapRS
from dspex.optimizers.run import Run
from dspex.optimizers.run_store import RunStore
from dspex.primitives.settings import settings
from dspex.runtime import runs as runs_module
from dspex.runtime.coordinator import (
    IN_PROCESS_MAX_EXAMPLES,
    OptimizationCoordinator,
    RayEvaluator,
    count_steps,
    load_outcome,
    make_job,
    save_job,
)
from dspex.simlm import datasets, start_sim_lm

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


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with start_sim_lm(seed=0, latency_ms=5) as running:
        yield running


@pytest.fixture(scope="module")
def http_lm(server: Any) -> Iterator[Any]:
    model = dspex.LM("openai/sim-lm", api_base=server.url, cache=False)
    previous = settings.lm
    dspex.configure(lm=model)
    yield model
    dspex.configure(lm=previous)


# --- dispatch by size --------------------------------------------------------------------------


def test_small_evaluations_run_in_process_big_ones_fan_out() -> None:
    evaluator = RayEvaluator()
    assert evaluator.runner_for(VAL) == "local"
    assert evaluator.runner_for([None] * (IN_PROCESS_MAX_EXAMPLES + 1)) == "ray"
    assert RayEvaluator(in_process_max=0).runner_for(VAL[:1]) == "ray"
    assert not RayEvaluator.remote  # the run must not charge its usage a second time


async def test_a_small_evaluation_on_the_runtime_runs_in_this_process_and_counts_once(
    http_lm: Any, server: Any, store: RunStore
) -> None:
    # Local by size (runner_for): the LM calls are made here, seen live by the step tracker.
    run = Run.open("Test", run_id="small", store=store, evaluator=RayEvaluator())
    server.reset_stats()
    result = await run.step("eval", lambda: run.evaluate(student(), VAL, exact, num_threads=4))
    calls = server.stats()["total"]
    assert len(result.results) == len(VAL) and calls == len(VAL)
    assert run.budget.calls == calls
    assert store.usage("small")[http_lm.model]["calls"] == calls


async def test_num_threads_bounds_a_search_whose_evaluations_run_in_the_coordinator(
    http_lm: Any, server: Any, store: RunStore
) -> None:
    # The coordinator gives the optimizer a RayEvaluator; small valsets are then evaluated in
    # its process, and the user's num_threads must bound them all, as it does in-process.
    optimizer = BootstrapRS(
        exact, max_bootstrapped_demos=2, max_labeled_demos=4, num_candidate_programs=6, num_threads=3
    )
    optimizer.evaluator = RayEvaluator()
    server.reset_stats()
    await optimizer.acompile(student(), trainset=TRAIN, valset=VAL, store=store, coordinator=False)
    stats = server.stats()
    assert stats["total"] > len(VAL) * 3  # several candidates were evaluated
    # Without the shared limit this reaches 20-27. The server may count one request more
    # than the client has in flight: a request stays counted until its handler returns, and
    # the client can send the next one as soon as it has read the answer.
    assert stats["max_in_flight"] <= 3 + 1


@pytest.mark.ray
async def test_a_fanned_out_evaluation_counts_its_usage_once(
    ray_cluster: Any, http_lm: Any, server: Any, store: RunStore
) -> None:
    run = Run.open("Test", run_id="big", store=store, evaluator=RayEvaluator(in_process_max=0))
    server.reset_stats()
    result = await run.step("eval", lambda: run.evaluate(student(), VAL, exact, num_threads=4))
    calls = server.stats()["total"]
    assert len(result.results) == len(VAL) and calls == len(VAL) and result.budget_charged
    assert run.budget.calls == calls
    assert store.usage("big")[http_lm.model]["calls"] == calls


# --- warm spares ---------------------------------------------------------------------------------


async def test_an_unclaimed_spare_exits_by_itself_and_is_claimed_once(store: RunStore) -> None:
    claimed = OptimizationCoordinator("spare-a", str(store.path), spare=True)
    await claimed.ready()
    assert await claimed.claim("run-1") and not await claimed.claim("run-2")
    assert claimed.run_id == "run-1" and store.slot_run("spare-a") == "run-1"
    assert store.run_slot("run-1") == "spare-a"
    await claimed.cancel()  # claimed but given no job yet: nothing to cancel

    idle = OptimizationCoordinator("spare-b", str(store.path), spare=True, spare_idle=0.05)
    await idle.ready()

    async def exited() -> bool:
        return idle.exit_reason is not None

    await poll(exited, "the idle spare to exit")
    assert idle.exit_reason is not None and idle.exit_reason.kind == "normal"
    assert not await idle.claim("run-3")


async def test_a_slot_serves_one_run_after_another(
    http_lm: Any, reference: dict[str, Any], store: RunStore
) -> None:
    slot = OptimizationCoordinator("slot-a", str(store.path), spare=True, linger=60)
    await slot.ready()
    programs = {}
    for run_id in ("first", "second"):
        assert not await slot.recycle()  # no run over yet
        assert await slot.claim(run_id)
        job = make_job(search(), student(), trainset=TRAIN, valset=VAL, max_lm_calls=None, max_cost=None, kwargs={})
        save_job(store, run_id, job)
        outcome = await slot.result()
        assert outcome.state == "finished" and store.get_run(run_id).status == "finished"
        programs[run_id] = load_outcome(outcome, run_id)
        assert await slot.recycle()  # a spare again: free in the store, waiting for a claim
        assert store.slot_run("slot-a") is None and slot.run_id == "slot-a"
    assert [program.run_info.run_id for program in programs.values()] == ["first", "second"]
    assert all(program.dump_state() == reference for program in programs.values())
    assert slot.exit_reason is None  # recycling cancelled the finished run's linger-exit
    await slot.terminate()


def test_a_restarted_slot_resumes_the_run_it_was_serving(http_lm: Any, store: RunStore) -> None:
    job = make_job(search(), student(), trainset=TRAIN, valset=VAL, max_lm_calls=None, max_cost=None, kwargs={})
    save_job(store, "served", job)
    store.assign_slot("slot-b", "served")
    restarted = OptimizationCoordinator("slot-b", str(store.path), spare=True)
    assert restarted.run_id == "served"  # its spec names the slot; the store names the run
    assert not asyncio.run(restarted.claim("other"))  # it has a run: not a spare

    # Claimed but killed before its driver stored the job: it waits for that job.
    store.assign_slot("slot-c", "unstored")
    waiting = OptimizationCoordinator("slot-c", str(store.path), spare=True)
    assert waiting.run_id == "unstored" and not asyncio.run(waiting.claim("other"))


@pytest.fixture(scope="module")
def reference(http_lm: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    store = RunStore(tmp_path_factory.mktemp("reference") / "runs.sqlite3")
    program = search().compile(student(), trainset=TRAIN, valset=VAL, store=store, coordinator=False)
    return dict(program.dump_state())


def spare_of(store: RunStore) -> str | None:
    """The slot id of this driver's spare for a BootstrapRS run on ``store``."""
    key = runs_module._session(("BootstrapFewShotWithRandomSearch", str(store.path.resolve())))
    entry = runs_module._spares._spares.get(key)
    return None if entry is None else entry[0]


def actor_id(handle: Any) -> str:
    return str(handle._actor_id.hex())


@pytest.mark.ray
async def test_a_warm_spare_serves_the_next_runs_and_a_killed_one_resumes(
    optimizers: None, reference: dict[str, Any], store: RunStore
) -> None:
    import ray

    first = await search().acompile(student(), trainset=TRAIN, valset=VAL, store=store, coordinator=True)
    assert first.dump_state() == reference
    assert coordinator(first.run_info.run_id) is None  # a cold run's own coordinator is stopped
    spare = spare_of(store)
    assert spare is not None
    assert coordinator(spare) is not None  # up and waiting, before anyone asked for it

    # The next run is served by that spare: no coordinator started for it.
    driver = asyncio.ensure_future(
        search().acompile(student(), trainset=TRAIN, valset=VAL, store=store, coordinator=True)
    )

    async def serving_three_steps() -> str | None:
        run_id = store.slot_run(spare)
        return run_id if run_id is not None and count_steps(store, run_id) >= 3 else None

    second_id = await poll(serving_three_steps, "the spare to run the second compile")
    assert [s.coordinator for s in dspex.runs(store) if s.run_id == second_id] == [True]
    victim = coordinator(spare)
    assert victim is not None
    ray.kill(victim)  # the supervisor restarts it from the same spec: it resumes the run
    second = await asyncio.wait_for(driver, DEADLINE)
    assert second.run_info.run_id == second_id
    assert second.run_info.replayed_steps >= 3
    assert second.dump_state() == reference

    # The slot is given back after its run, and serves the third run in the same process.
    assert spare_of(store) == spare and store.slot_run(spare) is None
    recycled = coordinator(spare)
    assert recycled is not None and actor_id(recycled) != actor_id(victim)
    third = await search().acompile(student(), trainset=TRAIN, valset=VAL, store=store, coordinator=True)
    assert third.dump_state() == reference and third.run_info.run_id not in (second_id, spare)
    still = coordinator(spare)
    assert still is not None and actor_id(still) == actor_id(recycled)
    assert [s.coordinator for s in dspex.runs(store) if s.run_id == third.run_info.run_id] == [False]

    # A run with its own run_id does not take the spare.
    named = await search().acompile(
        student(), trainset=TRAIN, valset=VAL, store=store, run_id="named", coordinator=True
    )
    assert named.run_info.run_id == "named" and spare_of(store) == spare


def test_save_job_before_claim_keeps_the_job_for_a_restart(http_lm: Any, store: RunStore) -> None:
    # A spare restarted after its driver stored the job loads it: it is a run's coordinator.
    job = make_job(search(), student(), trainset=TRAIN, valset=VAL, max_lm_calls=None, max_cost=None, kwargs={})
    save_job(store, "restarted", job)
    restarted = OptimizationCoordinator("restarted", str(store.path), spare=True)
    assert not asyncio.run(restarted.claim())  # it has a job: not a spare any more
