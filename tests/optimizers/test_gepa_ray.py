"""GEPA in a coordinator on real Ray: killed mid-run, its supervisor restarts it, the run
resumes from its stored iterations and ends with the program an uninterrupted in-process
run compiles."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from _polling import coordinator, poll, restarted_progress

import dspex
from dspex.optimizers.run_store import RunStore
from dspex.primitives.settings import settings
from dspex.runtime import runs
from dspex.runtime.coordinator import count_steps
from dspex.simlm import datasets, start_sim_lm

pytestmark = pytest.mark.ray
del runs  # imported for its registration: compile(coordinator=True) runs in a coordinator

T = TypeVar("T")
DEADLINE = 90.0
ROWS = datasets.load("arithmetic", "train")
TRAIN = [dspex.Example(question=r["question"], answer=r["answer"]).with_inputs("question") for r in ROWS[:12]]
VAL = [dspex.Example(question=r["question"], answer=r["answer"]).with_inputs("question") for r in ROWS[12:20]]


def metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:
    try:
        ok = int(gold.answer) == int(pred.answer)
    except (TypeError, ValueError):
        ok = False
    feedback = "Correct." if ok else f"Wrong: the answer is {gold.answer}. Double-check every operation."
    return dspex.Prediction(score=float(ok), feedback=feedback)


def gepa() -> dspex.GEPA:
    # One iteration at a time and one thread: the run lasts long enough to be killed.
    return dspex.GEPA(metric=metric, max_metric_calls=150, num_threads=1, num_parallel_proposals=1, seed=1)


def student() -> dspex.ChainOfThought:
    return dspex.ChainOfThought("question -> answer: int")


@pytest.fixture(scope="module")
def http_lm() -> Iterator[Any]:
    with start_sim_lm(seed=0, latency_ms=5) as server:
        model = dspex.LM("openai/sim-gepa", api_base=server.url, cache=False)
        previous = settings.lm
        dspex.configure(lm=model)
        yield model
        dspex.configure(lm=previous)


async def test_a_killed_gepa_coordinator_resumes_and_ends_with_the_same_program(
    optimizers: None, http_lm: Any, tmp_path: Any
) -> None:
    import ray

    reference = gepa().compile(student(), trainset=TRAIN, valset=VAL, run_id="ref",
                               store=RunStore(tmp_path / "ref.db"), coordinator=False)
    store = RunStore(tmp_path / "runs.db")
    driver = asyncio.ensure_future(
        gepa().acompile(student(), trainset=TRAIN, valset=VAL, run_id="g", store=store, coordinator=True)
    )

    async def some_steps() -> bool:
        return count_steps(store, "g") >= 3

    async def steps_or_failed() -> bool:
        if driver.done():
            driver.result()  # a failed compile raises here instead of timing out below
        return await some_steps()

    await poll(steps_or_failed, "3 stored GEPA steps", DEADLINE)
    victim = coordinator("g")
    assert victim is not None
    ray.kill(victim)

    progress = await restarted_progress("g", victim, "the supervisor to restart the GEPA coordinator", DEADLINE)
    assert progress.resumed_steps >= 3
    program = await asyncio.wait_for(driver, DEADLINE)
    assert program.run_info.status == "finished" and program.run_info.replayed_steps >= 3
    assert program.predict.signature.instructions == reference.predict.signature.instructions
