from __future__ import annotations

import copy
import pickle

import pytest
from pydantic import BaseModel

from dspex.errors import DspexError
from dspex.primitives import Example, InputKeysNotSetError


class Doc(BaseModel):
    title: str


def make() -> Example:
    return Example(question="2+2?", answer="4", dspy_uuid="u1")


def test_attribute_and_item_access_read_the_same_fields() -> None:
    ex = make()
    assert ex.question == ex["question"] == "2+2?"
    ex.answer = "four"
    ex["rationale"] = "sum"
    assert ex["answer"] == "four"
    assert ex.rationale == "sum"


def test_mapping_protocol_hides_dspy_prefixed_keys() -> None:
    ex = make()
    assert "question" in ex and "missing" not in ex
    assert len(ex) == 2
    assert ex.keys() == ["question", "answer"]
    assert ex.values() == ["2+2?", "4"]
    assert ex.items() == [("question", "2+2?"), ("answer", "4")]
    assert ex.keys(include_dspy=True) == ["question", "answer", "dspy_uuid"]
    assert list(ex) == ["question", "answer", "dspy_uuid"]
    assert ex.get("missing", 7) == 7
    assert ex.get("answer") == "4"


def test_missing_field_is_an_attribute_error() -> None:
    ex = make()
    assert not hasattr(ex, "nope")
    with pytest.raises(AttributeError, match="nope"):
        _ = ex.nope
    with pytest.raises(KeyError):
        _ = ex["nope"]


def test_delete_fields() -> None:
    ex = make()
    del ex.answer
    del ex["question"]
    assert ex.keys() == []
    with pytest.raises(AttributeError):
        del ex.answer


def test_build_from_dict_or_example_with_overrides() -> None:
    base = Example({"a": 1, "b": 2}).with_inputs("a")
    ex = Example(base, b=3)
    assert ex.toDict() == {"a": 1, "b": 3}
    assert ex.inputs().toDict() == {"a": 1}
    assert base.b == 2


def test_equality_by_fields_and_not_hashable() -> None:
    assert Example(a=1) == Example(a=1).with_inputs("a")
    assert Example(a=1) != Example(a=2)
    assert Example(a=1) != {"a": 1}
    # Hashable by value, as in DSPy: equal examples hash alike, whatever their input keys.
    assert hash(Example(a=1, b=[1, {"c": 2}])) == hash(Example(a=1, b=[1, {"c": 2}]).with_inputs("a"))
    assert len({Example(a=1), Example(a=1), Example(a=2)}) == 2


def test_repr_shows_fields_and_input_keys() -> None:
    text = repr(make().with_inputs("question"))
    assert "'question': '2+2?'" in text and "input_keys={'question'}" in text
    assert repr(Example(a=1)) == str(Example(a=1)) == "Example({'a': 1}) (input_keys=None)"
    assert "dspy_uuid" not in text


def test_with_inputs_returns_a_new_example() -> None:
    ex = make()
    with_in = ex.with_inputs("question")
    assert with_in is not ex
    assert with_in.inputs() == Example(question="2+2?")
    assert with_in.labels() == Example(answer="4", dspy_uuid="u1")
    with pytest.raises(InputKeysNotSetError):
        ex.inputs()


def test_inputs_without_input_keys_says_what_to_do() -> None:
    with pytest.raises(InputKeysNotSetError, match=r"with_inputs") as info:
        make().inputs()
    assert isinstance(info.value, ValueError) and isinstance(info.value, DspexError)
    with pytest.raises(InputKeysNotSetError):
        make().labels()


def test_inputs_keep_their_input_keys() -> None:
    inputs = make().with_inputs("question").inputs()
    assert inputs.inputs() == inputs


def test_user_fields_named_like_methods_do_not_break_internals() -> None:
    ex = Example(inputs="raw", labels="gold", _store="x").with_inputs("inputs")
    assert ex["inputs"] == "raw"
    assert ex.inputs() == Example(inputs="raw")
    assert ex.labels().toDict() == {"labels": "gold", "_store": "x"}
    ex.inputs = "changed"  # sets the field; the method is untouched
    assert ex["inputs"] == "changed" and callable(ex.inputs)


def test_copy_with_overrides_keeps_input_keys_and_is_independent() -> None:
    ex = make().with_inputs("question")
    other = ex.copy(answer="5")
    assert other.answer == "5" and ex.answer == "4"
    assert other.inputs().toDict() == {"question": "2+2?"}


def test_without_drops_fields() -> None:
    ex = make().with_inputs("question")
    trimmed = ex.without("answer", "not-there")
    assert trimmed.keys() == ["question"]
    assert ex.keys() == ["question", "answer"]
    assert trimmed.inputs().toDict() == {"question": "2+2?"}


def test_to_dict_converts_nested_values() -> None:
    ex = Example(doc=Doc(title="t"), parts=[Example(x=1)], meta={"inner": Example(y=2)})
    expected = {"doc": {"title": "t"}, "parts": [{"x": 1}], "meta": {"inner": {"y": 2}}}
    assert ex.toDict() == expected
    assert ex.to_dict() == expected


def test_pickle_and_deepcopy_roundtrip() -> None:
    ex = Example(question="q", tags=["a"]).with_inputs("question")
    for clone in (pickle.loads(pickle.dumps(ex)), copy.deepcopy(ex)):
        assert clone == ex
        assert clone.inputs().toDict() == {"question": "q"}
        clone.tags.append("b")
        assert ex.tags == ["a"]


def test_subclass_copy_keeps_type() -> None:
    class Row(Example):
        pass

    row = Row(a=1).with_inputs("a")
    assert type(row) is Row and type(row.copy()) is Row and type(row.without("a")) is Row
