"""GEPA against the simulated LM over HTTP: reflective feedback lifts a ChainOfThought
program, the metric budget holds, a resumed run ends with the uninterrupted run's
program, and the API's contracts (metric arity, one budget, custom proposers)."""

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
    lm = dspex.LM("openai/sim-gepa", api_base=sim.url, api_key="local")
    dspex.configure(lm=lm)
    return lm


def examples(split: str, start: int, stop: int) -> list[dspex.Example]:
    rows = datasets.load("arithmetic", split)[start:stop]
    return [dspex.Example(question=r["question"], answer=r["answer"]).with_inputs("question") for r in rows]


def correct(gold: Any, pred: Any) -> bool:
    try:
        return int(gold.answer) == int(pred.answer)
    except (TypeError, ValueError):
        return False


def with_feedback(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:
    if correct(gold, pred):
        return dspex.Prediction(score=1.0, feedback="Correct.")
    return dspex.Prediction(
        score=0.0,
        feedback=f"Wrong: the answer is {gold.answer}. Work step by step and double-check every operation.",
    )


def score_only(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> float:
    return float(correct(gold, pred))


def dev_score(program: Any, dev: list[dspex.Example]) -> float:
    evaluate = dspex.Evaluate(devset=dev, metric=lambda g, p, t=None: correct(g, p), num_threads=16)
    return evaluate(program).score


def test_reflective_feedback_lifts_a_chain_of_thought_program(lm: dspex.LM, tmp_path: Path) -> None:
    train, val, dev = examples("train", 0, 24), examples("train", 24, 48), examples("dev", 0, 80)
    program = dspex.ChainOfThought("question -> answer: int")
    before = dev_score(program, dev)
    gepa = dspex.GEPA(metric=with_feedback, auto="light", reflection_lm=lm, track_stats=True)
    optimized = gepa.compile(program, trainset=train, valset=val, store=RunStore(tmp_path / "runs.db"))
    after = dev_score(optimized, dev)
    assert after >= before + 10, (before, after)
    results = optimized.detailed_results
    budget = gepa.metric_budget(1, len(train), len(val))
    assert len(results.candidates) > 1 and results.total_metric_calls <= budget
    assert results.best_idx == max(range(len(results.candidates)), key=lambda i: results.val_aggregate_scores[i])
    assert results.parents[0] == [None] and all(p[0] is not None for p in results.parents[1:])
    instruction = optimized.predict.signature.instructions.lower()
    assert "step by step" in instruction or "verify" in instruction or "double-check" in instruction
    assert program.predict.signature.instructions not in ("", instruction)  # the student is untouched
    assert list(optimized.dump_state()) == ["predict"]  # the candidates are not saved with it


def test_the_runs_trials_show_each_candidate_and_the_frontier(lm: dspex.LM, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    gepa = dspex.GEPA(metric=with_feedback, max_metric_calls=80, reflection_lm=lm, track_stats=True)
    optimized = gepa.compile(dspex.ChainOfThought("question -> answer: int"), trainset=examples("train", 0, 12),
                             valset=examples("train", 12, 20), store=store, run_id="frontier")
    trials = [t for t in store.trials("frontier") if t.kind == "candidate"]
    results = optimized.detailed_results
    assert len(trials) == len(results.candidates)
    assert trials[0].params["frontier"] == [0]
    final = set(trials[-1].params["frontier"])
    best_somewhere = {i for winners in results.per_val_instance_best_candidates.values() for i in winners}
    assert final and final <= best_somewhere


def test_the_metric_budget_holds_exactly(lm: dspex.LM, tmp_path: Path) -> None:
    train, val = examples("train", 0, 12), examples("train", 12, 20)
    gepa = dspex.GEPA(metric=score_only, max_metric_calls=40, reflection_lm=lm, track_stats=True)
    optimized = gepa.compile(
        dspex.ChainOfThought("question -> answer: int"), trainset=train, valset=val,
        store=RunStore(tmp_path / "runs.db"),
    )
    calls = optimized.detailed_results.total_metric_calls
    assert 40 - 2 * 3 < calls <= 40  # it stops when a reflection step no longer fits


def test_a_resumed_run_ends_with_the_uninterrupted_runs_program(sim: SimLMServer, tmp_path: Path) -> None:
    train, val = examples("train", 0, 15), examples("train", 15, 25)
    lm = dspex.LM("openai/sim-gepa-resume", api_base=sim.url, api_key="local", cache=False)
    dspex.configure(lm=lm)

    def compile_(store: RunStore, run_id: str, **budget: Any) -> Any:
        gepa = dspex.GEPA(metric=with_feedback, max_metric_calls=120, reflection_lm=lm, seed=3)
        return gepa.compile(dspex.ChainOfThought("question -> answer: int"), trainset=train, valset=val,
                            store=store, run_id=run_id, **budget)

    whole = compile_(RunStore(tmp_path / "a.db"), "whole")
    store = RunStore(tmp_path / "b.db")
    stopped = compile_(store, "cut", max_lm_calls=40)
    assert stopped.run_info.status == "budget_limited"
    resumed = compile_(store, "cut")
    assert resumed.run_info.status == "finished"
    assert resumed.predict.signature.instructions == whole.predict.signature.instructions


def test_the_metric_must_take_five_arguments_and_one_budget_is_required() -> None:
    with pytest.raises(dspex.ConfigurationError, match="five arguments"):
        dspex.GEPA(metric=lambda gold, pred: 1.0, auto="light")
    with pytest.raises(dspex.ConfigurationError, match="exactly one budget"):
        dspex.GEPA(metric=score_only)
    with pytest.raises(dspex.ConfigurationError, match="exactly one budget"):
        dspex.GEPA(metric=score_only, auto="light", max_metric_calls=10)


def test_a_custom_proposer_gets_the_reflective_dataset(lm: dspex.LM, tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    def proposer(candidate: dict[str, str], reflective_dataset: dict[str, list[dict[str, Any]]],
                 components_to_update: list[str]) -> dict[str, str]:
        seen.append({"candidate": candidate, "dataset": reflective_dataset, "components": components_to_update})
        return {name: candidate[name] + " Work step by step and verify the result." for name in components_to_update}

    train = examples("train", 0, 9)
    gepa = dspex.GEPA(metric=score_only, max_metric_calls=30, instruction_proposer=proposer, use_merge=False)
    gepa.compile(dspex.ChainOfThought("question -> answer: int"), trainset=train,
                 store=RunStore(tmp_path / "runs.db"))
    assert seen and seen[0]["components"] == ["predict"]
    row = seen[0]["dataset"]["predict"][0]
    assert set(row) == {"Inputs", "Generated Outputs", "Feedback"}
    assert "question" in row["Inputs"] and "answer" in row["Generated Outputs"]
    assert row["Feedback"].startswith("This run scored")  # a float metric: the score is the feedback
