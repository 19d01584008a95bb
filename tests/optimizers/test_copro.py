"""COPRO against the simulated LM (in-process, no latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError
from dspex.evaluate import Evaluate
from dspex.optimizers.copro import COPRO
from dspex.optimizers.run_store import RunStore
from dspex.simlm import SimTransport, datasets
from dspex.simlm.tasks import instruction_quality


def examples(task: str, split: str, n: int) -> list[dspex.Example]:
    rows = datasets.load(task, split)[:n]  # type: ignore[arg-type]
    return [dspex.Example(question=r["question"], answer=str(r["answer"])).with_inputs("question") for r in rows]


@pytest.fixture
def sim() -> SimTransport:
    return SimTransport(seed=0)


@pytest.fixture
def lm(sim: SimTransport) -> dspex.LM:
    return dspex.LM("openai/sim-lm", transport=sim, api_base=sim.url, cache=False)


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite3")


async def dev_score(program: Any, task: str = "arithmetic") -> float:
    result = await Evaluate(devset=examples(task, "dev", 150), metric=dspex.answer_exact_match).acall(program)
    return result.score


async def test_copro_finds_a_better_instruction(lm: dspex.LM, store: RunStore) -> None:
    student = dspex.Predict("question -> answer")
    optimizer = COPRO(metric=dspex.answer_exact_match, breadth=5, depth=2, track_stats=True)
    with dspex.context(lm=lm):
        compiled = await optimizer.acompile(student, trainset=examples("arithmetic", "train", 40), store=store)
        before, after = await dev_score(student), await dev_score(compiled)

    instruction = compiled.signature.instructions
    assert instruction != student.signature.instructions
    assert instruction_quality("arithmetic", instruction) > 0
    assert after > before + 5
    assert student.signature.instructions == "From `question`, produce `answer`."  # untouched
    # Attached results, DSPy-shaped, that do not leak into the program's predictors.
    assert compiled.score == compiled.candidate_programs[0]["score"] == compiled.run_info.best_score
    assert [name for name, _ in compiled.named_predictors()] == ["self"]
    stats = compiled.results_best["self"]
    assert stats["depth"] == [0, 1]
    assert stats["max"][-1] == compiled.score
    assert set(compiled.results_latest["self"]) == {"depth", "max", "average", "min", "std"}
    # Every distinct candidate is one recorded trial.
    trials = store.trials(compiled.run_info.run_id)
    assert len(trials) == compiled.total_calls == len(compiled.candidate_programs)
    assert all(t.status == "scored" and t.kind == "candidate" for t in trials)


async def test_candidates_of_a_round_are_scored_concurrently(store: RunStore) -> None:
    sim = SimTransport(seed=0, latency_ms=20)
    lm = dspex.LM("openai/sim-lm", transport=sim, api_base=sim.url, cache=False)
    optimizer = COPRO(metric=dspex.answer_exact_match, breadth=4, depth=1, num_threads=2)
    with dspex.context(lm=lm):
        await optimizer.acompile(dspex.Predict("question -> answer"), trainset=examples("facts", "train", 4), store=store)

    # 4 candidates x 2 threads each: all candidates of the round in flight together.
    assert sim.stats()["max_in_flight"] == 8


async def test_a_failing_candidate_is_recorded_not_scored_zero(lm: dspex.LM, store: RunStore) -> None:
    broken: dict[str, str] = {}

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        instruction = trace[-1][0].signature.instructions
        if instruction != "From `question`, produce `answer`." and not broken:
            broken["instruction"] = instruction  # the first proposal this metric sees
        if instruction == broken.get("instruction"):
            raise RuntimeError("judge unavailable for this candidate")
        return dspex.answer_exact_match(example, prediction)

    optimizer = COPRO(metric=metric, breadth=3, depth=1, num_threads=1)
    with dspex.context(lm=lm):
        compiled = await optimizer.acompile(
            dspex.Predict("question -> answer"), trainset=examples("arithmetic", "train", 6), store=store
        )

    failed = [t for t in store.trials(compiled.run_info.run_id) if t.status == "failed"]
    assert len(failed) == 1
    assert failed[0].score is None
    assert failed[0].params["instruction"] == broken["instruction"]
    assert "judge unavailable" in (failed[0].error or "")
    assert compiled.signature.instructions != broken["instruction"]


async def test_resume_replays_every_step(lm: dspex.LM, sim: SimTransport, store: RunStore) -> None:
    optimizer = COPRO(metric=dspex.answer_exact_match, breadth=3, depth=2)
    trainset = examples("sentiment", "train", 10)
    with dspex.context(lm=lm):
        first = await optimizer.acompile(dspex.Predict("question -> answer"), trainset=trainset, store=store, run_id="c1")
        calls = sim.stats()["completions"]
        again = await optimizer.acompile(dspex.Predict("question -> answer"), trainset=trainset, store=store, run_id="c1")

    assert again.dump_state() == first.dump_state()
    assert sim.stats()["completions"] == calls
    assert again.run_info.replayed_steps > 0


async def test_budget_stop_returns_the_best_so_far(lm: dspex.LM, store: RunStore) -> None:
    student = dspex.Predict("question -> answer")
    optimizer = COPRO(metric=dspex.answer_exact_match, breadth=4, depth=3)
    with dspex.context(lm=lm):
        compiled = await optimizer.acompile(
            student, trainset=examples("arithmetic", "train", 10), store=store, max_lm_calls=45
        )

    info = compiled.run_info
    assert info.budget_limited and info.status == "budget_limited"
    assert info.lm_calls <= 45
    assert info.best_score is not None
    assert store.get_run(info.run_id).status == "budget_limited"


class TwoSteps(dspex.Module):
    def __init__(self) -> None:
        self.draft = dspex.Predict("question -> notes")
        self.answer = dspex.ChainOfThought("question, notes -> answer")

    async def aforward(self, question: str) -> Any:
        notes = await self.draft.acall(question=question)
        return await self.answer.acall(question=question, notes=notes.notes)


async def test_each_predictor_is_optimized_in_turn(lm: dspex.LM, store: RunStore) -> None:
    student = TwoSteps()
    optimizer = COPRO(metric=dspex.answer_exact_match, breadth=3, depth=2, track_stats=True)
    with dspex.context(lm=lm):
        compiled = await optimizer.acompile(student, trainset=examples("arithmetic", "train", 12), store=store)

    trials = store.trials(compiled.run_info.run_id)
    by_predictor = {name: [t for t in trials if t.params["predictor"] == name] for name in ("draft", "answer.predict")}
    assert all(by_predictor.values())
    assert {t.params["depth"] for t in by_predictor["answer.predict"]} == {0, 1}
    assert set(compiled.results_best) == {"draft", "answer.predict"}
    # The result is the best-scoring combination, built from the trialled instructions.
    best = compiled.candidate_programs[0]["instructions"]
    for name, predictor in compiled.named_predictors():
        assert predictor.signature.instructions == best[name]
        assert best[name] in {t.params["instruction"] for t in by_predictor[name]}
    assert [name for name, _ in compiled.named_predictors()] == ["draft", "answer.predict"]


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="breadth"):
        COPRO(metric=dspex.answer_exact_match, breadth=1)
    with pytest.raises(ConfigurationError, match="metric"):
        COPRO()
