from __future__ import annotations

import copy
import pickle

import pytest

from dspex.clients.types import Usage
from dspex.errors import DspexError
from dspex.primitives import Completions, Example, MissingScoreError, Prediction

ROWS = [
    {"answer": "4", "reasoning": "2+2"},
    {"answer": "5", "reasoning": "guess"},
    {"answer": "4"},
]


def test_prediction_is_an_example_without_inputs() -> None:
    pred = Prediction(answer="4")
    assert isinstance(pred, Example)
    assert pred.answer == pred["answer"] == "4"
    for call in (lambda: pred.with_inputs("answer"), pred.inputs, pred.labels):
        with pytest.raises(TypeError, match=r"no input|no labels"):
            call()


def test_from_completions_takes_fields_of_the_first() -> None:
    pred = Prediction.from_completions(ROWS, signature="sig")
    assert pred.toDict() == ROWS[0]
    comps = pred.completions
    assert isinstance(comps, Completions) and comps.signature == "sig"
    assert len(comps) == 3
    assert comps.answer == ["4", "5", "4"]
    assert comps["reasoning"] == ["2+2", "guess", None]
    assert comps[1] == Prediction(answer="5", reasoning="guess")
    assert isinstance(comps[1], Prediction)
    assert [p.answer for p in comps] == ["4", "5", "4"]
    assert comps[1:].to_list() == ROWS[1:]
    with pytest.raises(AttributeError, match="score"):
        _ = comps.score
    with pytest.raises(KeyError):
        _ = comps["score"]


def test_completions_are_a_copy_of_the_input_rows() -> None:
    rows = [dict(r) for r in ROWS]
    comps = Completions(rows)
    rows[0]["answer"] = "changed"
    assert comps.answer[0] == "4"
    comps.to_list()[0]["answer"] = "changed"
    assert comps.answer[0] == "4"


def test_completions_reject_non_dicts() -> None:
    with pytest.raises(TypeError, match="item 1"):
        Completions([{"a": 1}, "oops"])  # type: ignore[list-item]


def test_empty_completions_give_an_empty_prediction() -> None:
    pred = Prediction.from_completions([])
    assert len(pred) == 0 and len(pred.completions) == 0


def test_plain_prediction_has_itself_as_single_completion() -> None:
    pred = Prediction(answer="4")
    assert pred.completions.to_list() == [{"answer": "4"}]
    pred.completions = [{"answer": "x"}, {"answer": "y"}]
    assert pred.completions.answer == ["x", "y"]


def test_usage_defaults_to_empty_and_is_settable() -> None:
    pred = Prediction(answer="4")
    assert pred.usage == Usage() and pred.get_lm_usage() == {}
    pred.usage = Usage(prompt_tokens=3, completion_tokens=2, calls=1, cost=0.5)
    assert "usage" not in pred  # a property, not a field
    assert pred.usage.total_tokens == 5
    # A bare total names no model, so there is no per-model breakdown.
    assert pred.get_lm_usage() == {}
    with pytest.raises(TypeError, match="Usage"):
        pred.usage = {"prompt_tokens": 1}  # type: ignore[assignment]


def test_get_lm_usage_is_per_model_like_dspy() -> None:
    pred = Prediction(answer="4")
    pred.set_usage(
        Usage(5, 3, 2, None),
        {"openai/a": Usage(4, 2, 1, 0.25), "openai/b": Usage(1, 1, 1, None)},
    )
    assert pred.get_lm_usage() == {
        "openai/a": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6, "calls": 1, "cost": 0.25},
        "openai/b": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "calls": 1, "cost": None},
    }
    pred.get_lm_usage()["openai/a"]["prompt_tokens"] = 99  # a copy: the prediction keeps its own
    assert pred.get_lm_usage()["openai/a"]["prompt_tokens"] == 4


def test_set_lm_usage_accepts_the_dict_get_lm_usage_returns() -> None:
    pred = Prediction()
    pred.set_lm_usage({"openai/m": {"prompt_tokens": 7, "completion_tokens": 1, "calls": 2}})
    assert pred.usage == Usage(prompt_tokens=7, completion_tokens=1, calls=2)
    other = Prediction()
    other.set_lm_usage(pred.get_lm_usage())
    assert other.usage == pred.usage and other.get_lm_usage() == pred.get_lm_usage()


def test_set_lm_usage_accepts_a_total() -> None:
    pred = Prediction()
    pred.set_lm_usage({"prompt_tokens": 7, "completion_tokens": 1, "calls": 2})
    assert pred.usage == Usage(prompt_tokens=7, completion_tokens=1, calls=2)
    pred.set_lm_usage(Usage(calls=3))
    assert pred.usage == Usage(calls=3)
    with pytest.raises(TypeError, match="per model"):
        pred.set_lm_usage([1, 2])  # type: ignore[arg-type]


def test_copy_keeps_usage() -> None:
    pred = Prediction(answer="4")
    pred.set_usage(Usage(calls=1), {"openai/m": Usage(calls=1)})
    copied = pred.copy(answer="5")
    assert copied.usage == Usage(calls=1) and copied.get_lm_usage() == pred.get_lm_usage()


def test_pickle_and_deepcopy_keep_usage_and_completions() -> None:
    pred = Prediction.from_completions(ROWS)
    pred.usage = Usage(prompt_tokens=1, calls=1)
    for clone in (pickle.loads(pickle.dumps(pred)), copy.deepcopy(pred)):
        assert clone == pred
        assert clone.usage == pred.usage
        assert clone.completions == pred.completions


def test_numeric_operations_read_score() -> None:
    a, b = Prediction(score=0.5), Prediction(score=1.5, feedback="ok")
    assert float(a) == 0.5
    assert a + b == 2.0 and a + 1 == 1.5 and 1 + a == 1.5
    assert sum([a, b]) == 2.0
    assert b / 3 == 0.5 and 3 / b == 2.0 and b / a == 3.0
    assert a < b and a <= b and b > a and b >= a and a < 1 and a > 0
    assert max([a, b]) is b
    assert sorted([b, a]) == [a, b]
    assert a == 0.5 and a != 1 and Prediction(answer="x") != 0
    assert a != Prediction(score=0.5, feedback="f")  # two Predictions: fields compared


def test_numeric_operation_without_score_is_a_clear_error() -> None:
    with pytest.raises(MissingScoreError, match="score") as info:
        float(Prediction(answer="4"))
    assert isinstance(info.value, DspexError) and isinstance(info.value, ValueError)
    with pytest.raises(TypeError):
        _ = Prediction(score=1) + "x"


def test_repr_mentions_extra_completions() -> None:
    assert repr(Prediction(answer="4")) == "Prediction(answer='4')"
    assert "2 more completions omitted" in repr(Prediction.from_completions(ROWS))
