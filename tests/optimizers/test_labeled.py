"""LabeledFewShot: k labeled demos per predictor, sampled reproducibly."""

from __future__ import annotations

import random
from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError
from dspex.optimizers import LabeledFewShot


class TwoStep(dspex.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = dspex.Predict("question -> draft")
        self.second = dspex.Predict("question, draft -> answer")

    async def aforward(self, question: str) -> Any:
        draft = await self.first.acall(question=question)
        return await self.second.acall(question=question, draft=draft.draft)


def test_each_predictor_gets_k_demos_sampled_with_seed_zero(train: list[dspex.Example]) -> None:
    student = TwoStep()
    compiled = LabeledFewShot(k=5).compile(student, trainset=train)
    rng = random.Random(0)
    assert compiled.first.demos == rng.sample(train, 5)
    assert compiled.second.demos == rng.sample(train, 5)
    assert compiled.first.demos != compiled.second.demos


def test_k_larger_than_trainset_takes_everything(train: list[dspex.Example]) -> None:
    compiled = LabeledFewShot(k=100).compile(dspex.Predict("question -> answer"), trainset=train[:7])
    assert sorted(d.question for d in compiled.demos) == sorted(e.question for e in train[:7])


def test_sample_false_takes_the_first_k(train: list[dspex.Example]) -> None:
    compiled = LabeledFewShot(k=3).compile(dspex.Predict("question -> answer"), trainset=train, sample=False)
    assert compiled.demos == train[:3]


def test_student_is_untouched_and_a_new_program_returned(train: list[dspex.Example]) -> None:
    student = dspex.Predict("question -> answer")
    compiled = LabeledFewShot(k=4).compile(student, trainset=train)
    assert compiled is not student
    assert student.demos == []
    assert len(compiled.demos) == 4
    assert compiled.run_info.status == "finished"
    assert compiled.run_info.lm_calls == 0


def test_rejects_bad_k_and_unknown_options(train: list[dspex.Example]) -> None:
    with pytest.raises(ConfigurationError):
        LabeledFewShot(k=-1)
    with pytest.raises(ConfigurationError, match="samples"):
        LabeledFewShot(k=2).compile(dspex.Predict("question -> answer"), trainset=train, samples=False)
