"""Answer metrics on normalised text."""

from __future__ import annotations

import pytest

from dspex.evaluate import (
    EM,
    F1,
    answer_exact_match,
    answer_passage_match,
    normalize_text,
)
from dspex.primitives.example import Example
from dspex.primitives.prediction import Prediction


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("The Eiffel  Tower!", "eiffel tower"),
        ("An apple, a day.", "apple day"),
        ("“Curly” quotes — and dashes…", "curly quotes and dashes"),
        ("theatre", "theatre"),  # an article inside a word stays
        ("1,000", "1000"),
        ("  ", ""),
        (42, "42"),
    ],
)
def test_normalize_text(text: object, normal: str) -> None:
    assert normalize_text(text) == normal


def test_normalize_text_treats_composed_and_decomposed_accents_alike() -> None:
    assert normalize_text("Café") == normalize_text("Cafe\u0301")


def test_em_against_one_answer_or_a_list() -> None:
    assert EM("the Paris.", "paris")
    assert EM("Paris", ["London", "PARIS"])
    assert not EM("Paris, France", ["Paris"])
    assert not EM("Paris", [])


def test_f1_is_the_best_token_overlap() -> None:
    assert F1("Paris France", ["Paris"]) == pytest.approx(2 / 3)
    assert F1("Paris", ["London", "Paris France"]) == pytest.approx(2 / 3)
    assert F1("London", ["Paris"]) == 0.0
    assert F1("cat cat", ["cat"]) == pytest.approx(2 / 3)  # repeated tokens count once each
    assert F1("the", ["a"]) == 1.0  # both normalise to nothing
    assert F1("the", ["Paris"]) == 0.0
    assert F1("Paris", []) == 0.0


def test_answer_exact_match_with_string_list_and_number_answers() -> None:
    example = Example(question="q", answer="The Louvre").with_inputs("question")
    assert answer_exact_match(example, Prediction(answer="louvre"))
    assert not answer_exact_match(example, Prediction(answer="the Orsay"))

    several = Example(question="q", answer=["NYC", "New York City"])
    assert answer_exact_match(several, Prediction(answer="new york city."))

    number = Example(question="q", answer=42)
    assert answer_exact_match(number, Prediction(answer="42"))
    assert answer_exact_match(Example(answer="42"), Prediction(answer=42))


def test_answer_exact_match_with_frac_uses_f1() -> None:
    example = Example(answer="New York City")
    pred = Prediction(answer="New York")
    assert not answer_exact_match(example, pred)
    assert answer_exact_match(example, pred, frac=0.8)  # F1 = 0.8
    assert not answer_exact_match(example, pred, frac=0.9)


def test_metrics_accept_plain_dicts() -> None:
    assert answer_exact_match({"answer": "4"}, {"answer": " 4 "})
    assert answer_passage_match({"answer": "4"}, {"context": ["2 + 2 = 4"]})


def test_answer_passage_match() -> None:
    example = Example(answer=["Marie Curie", "Curie"])
    assert answer_passage_match(
        example, Prediction(context=["Unrelated.", "Radium was found by MARIE CURIE."])
    )
    assert answer_passage_match(example, Prediction(context="It was Curie, in 1898."))
    assert not answer_passage_match(example, Prediction(context=["Pierre discovered it."]))
    assert not answer_passage_match(example, Prediction(context=[]))


def test_answer_passage_match_needs_whole_words() -> None:
    assert not answer_passage_match(Example(answer="cat"), Prediction(context=["concatenate"]))
    # An answer that normalises to nothing matches no passage.
    assert not answer_passage_match(Example(answer="The"), Prediction(context=["the end"]))
