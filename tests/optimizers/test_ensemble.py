"""Ensemble and majority: programs run at once, outputs reduced by vote."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError
from dspex.optimizers import Ensemble, majority
from dspex.utils.aio import run_sync


def test_majority_votes_on_the_normalised_last_field() -> None:
    outputs = [
        dspex.Prediction(reasoning="a", answer="Paris"),
        dspex.Prediction(reasoning="b", answer="London"),
        dspex.Prediction(reasoning="c", answer=" paris. "),
    ]
    winner = majority(outputs)
    assert winner.reasoning == "a" and winner.answer == "Paris"  # the first completion with the winning value


def test_majority_ties_go_to_the_first_value_and_empty_values_do_not_vote() -> None:
    outputs = [dspex.Prediction(answer=v) for v in ["", "B", "A", "", "A", "B", ""]]
    assert majority(outputs).answer == "B"
    assert majority(outputs, field="answer", normalize=None).answer == ""  # raw values: "" is the majority


def test_majority_reads_a_predictions_completions_and_signature() -> None:
    signature = dspex.Predict("question -> answer, confidence").signature
    completions = [{"answer": "4", "confidence": "low"}, {"answer": "5", "confidence": "low"},
                   {"answer": "5", "confidence": "high"}]
    prediction = dspex.Prediction.from_completions(completions, signature=signature)
    assert majority(prediction).confidence == "low"  # the last output field by default
    assert majority(prediction, field="answer").answer == "5"


class Gate:
    """Opens once `count` callers have arrived: proves they were in flight together."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.arrived = 0
        self.opened = asyncio.Event()

    async def arrive(self) -> None:
        self.arrived += 1
        if self.arrived == self.count:
            self.opened.set()
        await self.opened.wait()


class Fixed(dspex.Module):
    def __init__(self, answer: str, gate: Gate | None = None) -> None:
        super().__init__()
        self.answer = answer
        self.gate = gate
        self.calls = 0

    async def aforward(self, question: str) -> dspex.Prediction:
        self.calls += 1
        if self.gate is not None:
            await self.gate.arrive()
        return dspex.Prediction(answer=self.answer)


def test_ensemble_runs_all_programs_concurrently_and_votes() -> None:
    async def scenario() -> dspex.Prediction:
        gate = Gate(3)  # would never open if the programs ran one after another
        programs = [Fixed("x", gate), Fixed("y", gate), Fixed("y", gate)]
        ensemble = Ensemble(reduce_fn=dspex.majority).compile(programs)
        return await asyncio.wait_for(ensemble.acall(question="q"), 10)

    assert run_sync(scenario()).answer == "y"


def test_ensemble_without_reduce_fn_returns_every_output_as_dspy_does() -> None:
    outputs = Ensemble().compile([Fixed("a"), Fixed("b"), Fixed("a")])(question="q")
    assert [p.answer for p in outputs] == ["a", "b", "a"]


def test_ensemble_size_subsets_and_deterministic_choice() -> None:
    programs = [Fixed(str(i)) for i in range(5)]
    ensemble = Ensemble(reduce_fn=list, size=2, deterministic=True).compile(programs)
    first = [p.answer for p in ensemble(question="same")]
    assert len(first) == 2
    assert [p.answer for p in ensemble(question="same")] == first
    chosen = {tuple(p.answer for p in ensemble(question=f"q{i}")) for i in range(20)}
    assert len(chosen) > 1  # different inputs, different subsets
    assert sum(p.calls for p in programs) == 2 * 22


def test_ensemble_rejects_bad_settings() -> None:
    with pytest.raises(ConfigurationError):
        Ensemble(size=0)
    with pytest.raises(ConfigurationError):
        Ensemble(size=3).compile([Fixed("a")])
    with pytest.raises(ConfigurationError):
        Ensemble().compile([])


def test_ensemble_of_compiled_programs_on_the_sim(lm: Any, train: list[dspex.Example], exact: Any) -> None:
    from dspex.optimizers import LabeledFewShot

    programs: list[Any] = [
        LabeledFewShot(k=k).compile(dspex.ChainOfThought("question -> answer"), trainset=train) for k in (2, 4, 8)
    ]
    ensemble = Ensemble(reduce_fn=majority).compile(programs)
    answer = ensemble(question=train[20].question)
    votes = [p(question=train[20].question).answer for p in programs]
    assert answer.answer == max(votes, key=votes.count)
    assert [name for name, _ in ensemble.named_predictors()] == [f"programs[{i}].predict" for i in range(3)]
