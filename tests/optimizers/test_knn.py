"""KNN and KNNFewShot: neighbours by embedding, per-call bootstraps from them."""

from __future__ import annotations

from typing import Any

import pytest

import dspex
from dspex.errors import ConfigurationError
from dspex.optimizers import KNN, HashingEmbedder, KNNFewShot
from dspex.optimizers.knn import KNNFewShotProgram

PANTRY = [
    dspex.Example(question="How long do red apples keep in the fridge?", answer="weeks"),
    dspex.Example(question="Which river flows through the old capital?", answer="the Vell"),
    dspex.Example(question="Are green apples sour or sweet?", answer="sour"),
    dspex.Example(question="When are income taxes due?", answer="April"),
    dspex.Example(question="How deep is the river near the mill?", answer="two metres"),
]
PANTRY = [e.with_inputs("question") for e in PANTRY]


def test_knn_picks_the_nearest_examples_closest_first() -> None:
    knn = KNN(2, PANTRY, vectorizer=HashingEmbedder())
    nearest = knn(question="How long do apples keep, and are apples sweet?")
    assert [e.answer for e in nearest] == ["weeks", "sour"]
    assert [e.answer for e in knn(question="Which river is deep near the mill?")] == ["two metres", "the Vell"]


def test_knn_accepts_a_plain_function_as_vectorizer() -> None:
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> list[list[float]]:
        calls.append(texts)
        return [[1.0, 0.0] if "apple" in t else [0.0, 1.0] for t in texts]

    knn = KNN(1, PANTRY, vectorizer=embed)
    assert knn(question="an apple?")[0].answer in {"weeks", "sour"}
    assert calls[0][0] == "question: How long do red apples keep in the fridge?"  # inputs as "key: value"
    knn(question="taxes")
    assert len(calls) == 3  # the trainset is embedded once, each query once


def test_knn_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigurationError):
        KNN(0, PANTRY, vectorizer=HashingEmbedder())
    with pytest.raises(ConfigurationError):
        KNN(2, [], vectorizer=HashingEmbedder())
    with pytest.raises(ConfigurationError):
        KNNFewShot(2, PANTRY, vectorizer=HashingEmbedder(), max_bootstraped_demos=2)


def test_knn_few_shot_bootstraps_from_the_neighbours_at_each_call(
    lm: Any, train: list[dspex.Example], exact: Any
) -> None:
    optimizer = KNNFewShot(
        3, train, vectorizer=HashingEmbedder(), metric=exact, max_bootstrapped_demos=3, max_labeled_demos=3
    )
    student = dspex.ChainOfThought("question -> answer")
    program = optimizer.compile(student)
    assert isinstance(program, KNNFewShotProgram)
    assert student.predict.demos == []

    query = "What is 12 + 13?"
    neighbours = {e.question for e in program.knn(question=query)}
    assert len(neighbours) == 3
    before = len(lm.history)
    prediction = program(question=query)
    assert prediction.answer
    answer_prompt = lm.history[-1]["messages"]
    shown = " ".join(str(m["content"]) for m in answer_prompt)
    assert all(question in shown for question in neighbours)  # demos come from the neighbours
    others = {e.question for e in train} - neighbours
    assert not any(question in shown for question in others)
    assert len(lm.history) > before + 1  # the teacher ran on neighbours before the answer


def test_knn_few_shot_compiled_program_answers_async(lm: Any, train: list[dspex.Example], exact: Any) -> None:
    import asyncio

    program = KNNFewShot(2, train, vectorizer=HashingEmbedder(), metric=exact).compile(
        dspex.ChainOfThought("question -> answer")
    )

    async def both() -> list[Any]:
        return list(await asyncio.gather(*(program.acall(question=e.question) for e in train[:3])))

    from dspex.utils.aio import run_sync

    answers = run_sync(both())
    assert len(answers) == 3 and all(a.answer for a in answers)
