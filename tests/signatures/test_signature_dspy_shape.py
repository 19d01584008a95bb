"""Signature behaviour a DSPy program relies on: error types, field order and
metadata, instruction helpers, saved-state shape and string types."""

from __future__ import annotations

import pydantic
import pytest

import dspex
from dspex.errors import SignatureError, SignatureTypeError


def test_signature_errors_are_also_the_builtins_dspy_raises() -> None:
    with pytest.raises(ValueError, match="distinct names"):
        dspex.Signature("value -> value")
    with pytest.raises(ValueError):
        dspex.Signature("")
    with pytest.raises(ValueError):
        dspex.Signature("a -> b: NoSuchType")
    with pytest.raises(TypeError) as caught:

        class Untyped(dspex.Signature):
            question: str

    assert isinstance(caught.value, SignatureTypeError) and isinstance(caught.value, SignatureError)
    with pytest.raises(TypeError):

        class PlainPydantic(dspex.Signature):
            question: str = pydantic.Field()


def test_fields_keep_definition_order_when_annotated_and_unannotated_mix() -> None:
    class Mixed(dspex.Signature):
        text: str = dspex.InputField()
        verdict = dspex.OutputField()
        passed: bool = dspex.OutputField()

    assert list(Mixed.fields) == ["text", "verdict", "passed"]
    assert Mixed.fields["verdict"].annotation is str


def test_json_schema_extra_reports_role_prefix_desc_and_constraints() -> None:
    class Described(dspex.Signature):
        question: str = dspex.InputField(prefix="Q:", desc="what to answer")
        answer: int = dspex.OutputField(ge=5, le=10, json_schema_extra={"unit": "cm"})

    question = Described.fields["question"].json_schema_extra
    assert question["prefix"] == "Q:" and question["desc"] == "what to answer"
    assert question["__dspy_field_type"] == "input"
    answer = Described.fields["answer"].json_schema_extra
    assert answer["prefix"] == "Answer:" and answer["desc"] == "${answer}"
    assert answer["unit"] == "cm"
    assert "greater than or equal to 5" in answer["constraints"]
    assert "less than or equal to 10" in answer["constraints"]


def test_infer_prefix_splits_camel_snake_digits_and_keeps_acronyms() -> None:
    assert dspex.infer_prefix("someAttributeName42IsCool") == "Some Attribute Name 42 Is Cool"
    assert dspex.infer_prefix("some_attribute_name") == "Some Attribute Name"
    assert dspex.infer_prefix("isHTTPSSecure123") == "Is HTTPS Secure 123"
    assert dspex.infer_prefix("modelT45Enhanced") == "Model T 45 Enhanced"


def test_append_instructions_returns_a_new_signature() -> None:
    base = dspex.Signature("text -> summary", "Summarise.")
    longer = base.append_instructions("Be brief.").append_instructions("Use English.")
    assert longer.instructions == "Summarise.\n\nBe brief.\n\nUse English."
    assert base.instructions == "Summarise."
    default = dspex.Signature("text -> summary")
    assert default.append_instructions("More.").instructions == f"{default.instructions}\n\nMore."


def test_with_updated_fields_changes_prefix_and_other_metadata_only_on_the_copy() -> None:
    base = dspex.Signature("input1, input2 -> output")
    changed = base.with_updated_fields("input1", prefix="Modified:", note="kept")
    assert changed.fields["input1"].json_schema_extra["prefix"] == "Modified:"
    assert changed.fields["input1"].json_schema_extra["note"] == "kept"
    assert base.fields["input1"].json_schema_extra["prefix"] == "Input 1:"
    assert changed.fields["input2"].json_schema_extra == base.fields["input2"].json_schema_extra


def test_calling_a_signature_with_field_values_builds_a_record() -> None:
    sig = dspex.Signature("question -> answer")
    record = sig(question="q", answer="a")
    assert isinstance(record, sig) and record.question == "q" and record.answer == "a"
    with pytest.raises(SignatureError, match="no field"):
        sig(question="q", other=1)


def test_dump_state_has_dspys_shape_and_load_state_reads_it_and_the_old_one() -> None:
    class Sentiment(dspex.Signature):
        """Classify."""

        sentence: str = dspex.InputField(desc="a sentence")
        sentiment: str = dspex.OutputField()

    state = Sentiment.dump_state()
    assert state == {
        "instructions": "Classify.",
        "fields": [
            {"prefix": "Sentence:", "description": "a sentence"},
            {"prefix": "Sentiment:", "description": "${sentiment}"},
        ],
    }
    edited = {"instructions": "New.", "fields": [{"prefix": "S:", "description": "d"}, state["fields"][1]]}
    loaded = Sentiment.load_state(edited)
    assert loaded.instructions == "New." and loaded.fields["sentence"].desc == "d"
    assert loaded.fields["sentence"].prefix == "S:"
    assert loaded.fields["sentiment"].desc == ""  # the placeholder means "no description"
    assert loaded.dump_state() == edited
    old_style = {"instructions": "Old.", "fields": [{"name": "sentiment", "desc": "pos or neg"}]}
    assert Sentiment.load_state(old_style).fields["sentiment"].desc == "pos or neg"


def test_variadic_tuple_in_a_string_signature() -> None:
    sig = dspex.Signature("scores: tuple[int, ...] -> best: int")
    assert sig.input_fields["scores"].annotation == tuple[int, ...]


def test_a_signature_built_step_by_step_pickles_by_value() -> None:
    import cloudpickle

    import dspex

    # Built the way ReAct builds its step signature: the intermediate signatures have no
    # outputs, and cloudpickle rebuilds every class of the chain on the other side.
    step = dspex.Signature("question -> answer").delete("answer").append("trajectory", dspex.InputField(), type_=str)
    step = step.append("next_thought", dspex.OutputField(), type_=str)
    back = cloudpickle.loads(cloudpickle.dumps(step))
    assert back == step and list(back.output_fields) == ["next_thought"]
