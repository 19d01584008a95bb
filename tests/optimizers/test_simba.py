"""SIMBA against the simulated LM over HTTP: it lifts a ChainOfThought program, a seed
fixes its result, a run stopped by its budget resumes to the uninterrupted result, and
its arguments are checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.optimizers.run_store import RunStore
from dspex.simlm import SimLMServer, datasets, start_sim_lm

pytestmark = pytest.mark.usefixtures("isolated_cache")  # a fresh LM cache per test

@pytest.fixture(scope="module")
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm(seed=0) as server:
        yield server




@pytest.fixture
def lm(sim: SimLMServer) -> dspex.LM:
    lm = dspex.LM("openai/sim-simba", api_base=sim.url, api_key="local")
    dspex.configure(lm=lm)
    return lm


def examples(split: str, start: int, stop: int) -> list[dspex.Example]:
    rows = datasets.load("arithmetic", split)[start:stop]
    return [dspex.Example(question=r["question"], answer=r["answer"]).with_inputs("question") for r in rows]


def correct(gold: Any, pred: Any) -> float:
    try:
        return float(int(gold.answer) == int(pred.answer))
    except (TypeError, ValueError):
        return 0.0


def with_info(gold: Any, pred: Any) -> dspex.Prediction:
    return dspex.Prediction(score=correct(gold, pred), note="exact match")


def test_simba_lifts_a_chain_of_thought_program(lm: dspex.LM, tmp_path: Path) -> None:
    train, dev = examples("train", 0, 48), examples("dev", 0, 80)
    program = dspex.ChainOfThought("question -> answer: int")
    evaluate = dspex.Evaluate(devset=dev, metric=lambda g, p, t=None: correct(g, p), num_threads=16)
    before = evaluate(program).score
    optimized = dspex.SIMBA(metric=with_info, bsize=16, max_steps=5).compile(
        program, trainset=train, seed=0, store=RunStore(tmp_path / "runs.db")
    )
    after = evaluate(optimized).score
    assert after >= before + 10, (before, after)
    assert optimized.candidate_programs[0]["program"].dump_state() == optimized.dump_state()
    assert [c["score"] for c in optimized.candidate_programs] == sorted(
        (c["score"] for c in optimized.candidate_programs), reverse=True
    )
    assert set(optimized.trial_logs) == set(range(5))
    assert program.predict.demos == []  # the student is untouched


def test_a_stopped_run_resumes_to_the_uninterrupted_result(sim: SimLMServer, tmp_path: Path) -> None:
    lm = dspex.LM("openai/sim-simba-resume", api_base=sim.url, api_key="local", cache=False)
    dspex.configure(lm=lm)
    train = examples("train", 0, 16)

    def compile_(store: RunStore, run_id: str, **budget: Any) -> Any:
        simba = dspex.SIMBA(metric=correct, bsize=8, num_candidates=3, max_steps=3)
        return simba.compile(dspex.ChainOfThought("question -> answer: int"), trainset=train, seed=5,
                             store=store, run_id=run_id, **budget)

    whole = compile_(RunStore(tmp_path / "a.db"), "whole")
    store = RunStore(tmp_path / "b.db")
    assert compile_(store, "cut", max_lm_calls=100).run_info.status == "budget_limited"
    resumed = compile_(store, "cut")
    assert resumed.run_info.status == "finished" and resumed.run_info.replayed_steps >= 1
    assert resumed.dump_state() == whole.dump_state()


def test_simba_checks_its_arguments(lm: dspex.LM, tmp_path: Path) -> None:
    with pytest.raises(dspex.ConfigurationError, match="at least bsize=32"):
        dspex.SIMBA(metric=correct).compile(dspex.Predict("question -> answer"), trainset=examples("train", 0, 5),
                                            store=RunStore(tmp_path / "runs.db"))
    with pytest.raises(dspex.ConfigurationError, match="num_candidates"):
        dspex.SIMBA(metric=correct, num_candidates=0)
