"""The HTTP ingress's pure parts without a cluster: which inputs a program takes, how a
body is checked, how an answer is shaped."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dspex.modules.chain_of_thought import ChainOfThought
from dspex.modules.predict import Predict
from dspex.primitives.module import Module
from dspex.primitives.prediction import Prediction
from dspex.runtime.serve_http import _field_problems, _input_model, answer_body, input_fields


class Typed(Module):
    def forward(self, question: str, k: int = 3) -> Prediction:
        return Prediction(answer=question * k)


class Loose(Module):
    def forward(self, **inputs: Any) -> Prediction:
        return Prediction(**inputs)


def test_input_fields_come_from_the_signature_or_the_forward_parameters() -> None:
    assert input_fields(Predict("question, context -> answer")) == {
        "question": (str, True),
        "context": (str, True),
    }
    assert input_fields(Typed()) == {"question": (str, True), "k": (int, False)}
    assert input_fields(Loose()) is None  # any keywords: nothing to check
    assert input_fields(ChainOfThought("question -> answer")) == {"question": (str, True)}


def test_a_body_is_checked_field_by_field() -> None:
    model = _input_model(input_fields(Typed()))
    assert model.model_validate({"question": "q"}).k is None  # the program's default applies
    with pytest.raises(ValidationError) as info:
        model.model_validate({"k": "lots", "extra": 1})
    assert _field_problems(info.value) == [
        {"field": "question", "problem": "missing"},
        {"field": "k", "problem": "Input should be a valid integer, unable to parse string as an integer"},
        {"field": "extra", "problem": "not an input of this program"},
    ]
    assert _input_model(None) is None


def test_answers_are_outputs_and_usage() -> None:
    assert answer_body(Prediction(answer="A", score={1, 2})) == {
        "outputs": {"answer": "A", "score": [1, 2]},
        "usage": {},
    }
    assert answer_body("plain") == {"outputs": {"output": "plain"}, "usage": {}}
