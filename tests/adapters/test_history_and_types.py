"""History as an input field, custom field types (Code, Reasoning, Citations) and
the XMLAdapter, through the adapters' format/parse and a full Predict call."""

from __future__ import annotations

import asyncio
import json

import pydantic
import pytest
from _fakes import ScriptedLM

import dspex
from dspex.adapters import ChatAdapter, JSONAdapter, XMLAdapter
from dspex.experimental import Citations, Document


class Chat(dspex.Signature):
    question: str = dspex.InputField()
    history: dspex.History = dspex.InputField()
    answer: str = dspex.OutputField()


HISTORY = dspex.History(
    messages=[
        {"question": "Capital of France?", "answer": "Paris"},
        {"question": "Capital of Germany?", "answer": "Berlin"},
    ]
)


def test_history_is_rendered_as_prior_turns_between_system_and_current_input() -> None:
    messages = ChatAdapter().format(Chat, [], {"question": "And Italy?", "history": HISTORY})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[1]["content"] == "[[ ## question ## ]]\nCapital of France?"
    assert messages[2]["content"] == "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
    assert messages[4]["content"].startswith("[[ ## answer ## ]]\nBerlin")
    assert messages[5]["content"].startswith("[[ ## question ## ]]\nAnd Italy?")
    # The history is turns, not a field: neither the system message nor the input names it.
    assert "history" not in messages[0]["content"]
    assert "history" not in messages[5]["content"]


def test_history_comes_after_demos() -> None:
    demo = {"question": "2+2?", "answer": "4"}
    messages = ChatAdapter().format(Chat, [demo], {"question": "And Italy?", "history": HISTORY})
    assert messages[1]["content"] == "[[ ## question ## ]]\n2+2?"
    assert messages[3]["content"] == "[[ ## question ## ]]\nCapital of France?"


def test_json_adapter_renders_history_replies_as_json_objects() -> None:
    messages = JSONAdapter().format(Chat, [], {"question": "And Italy?", "history": HISTORY})
    assert len(messages) == 6
    assert json.loads(messages[2]["content"]) == {"answer": "Paris"}
    assert messages[3]["content"] == "[[ ## question ## ]]\nCapital of Germany?"


def test_history_message_without_outputs_gives_only_a_user_turn() -> None:
    history = dspex.History(messages=[{"question": "hello"}])
    messages = ChatAdapter().format(Chat, [], {"question": "next", "history": history})
    assert [m["role"] for m in messages] == ["system", "user", "user"]


def test_history_rejects_unknown_keys_and_is_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        dspex.History(messages=[], turns=3)
    with pytest.raises(pydantic.ValidationError):
        HISTORY.messages = []


def test_predict_with_history_sends_prior_turns_to_the_lm() -> None:
    lm = ScriptedLM("[[ ## answer ## ]]\nRome\n\n[[ ## completed ## ]]")
    with dspex.context(lm=lm, adapter=ChatAdapter()):
        prediction = dspex.Predict(Chat)(question="And Italy?", history=HISTORY)
    assert prediction.answer == "Rome"
    sent = lm.requests[0]["messages"]
    assert [m["role"] for m in sent][1:5] == ["user", "assistant", "user", "assistant"]


def test_adapter_call_returns_one_dict_per_completion() -> None:
    lm = ScriptedLM(["[[ ## answer ## ]]\nParis", "[[ ## answer ## ]]\nLyon"])
    signature = dspex.Signature("question -> answer")
    assert ChatAdapter()(lm, {}, signature, [], {"question": "q"}) == [{"answer": "Paris"}, {"answer": "Lyon"}]
    lm = ScriptedLM('{"answer": "Paris"}')
    assert asyncio.run(JSONAdapter().acall(lm, {}, signature, [], {"question": "q"})) == [{"answer": "Paris"}]
    lm = ScriptedLM('{"answer": "Paris"}')
    result = asyncio.run(JSONAdapter().arun(lm, {}, signature, [], {"question": "q"}))
    assert result.completions == [{"answer": "Paris"}] and result.usage.calls == 1


def test_code_input_carries_its_description_and_output_is_read_as_text() -> None:
    class Generate(dspex.Signature):
        question: str = dspex.InputField()
        code: dspex.Code = dspex.OutputField()

    system = ChatAdapter().system_message(Generate)
    assert dspex.Code.description() in system
    assert '"properties"' not in system  # the text description replaces a JSON schema
    parsed = ChatAdapter().parse(Generate, '[[ ## code ## ]]\n```python\nprint("hi")\n```')
    assert parsed["code"].code == 'print("hi")'
    assert parsed["code"] == 'print("hi")'


def test_code_with_language_and_code_input_rendering() -> None:
    java = dspex.Code["java"]
    assert java.language == "java" and "java" in java.description()

    class Analyse(dspex.Signature):
        code: dspex.Code = dspex.InputField()
        result: str = dspex.OutputField()

    messages = ChatAdapter().format(Analyse, [], {"code": dspex.Code(code="x = 1")})
    assert "[[ ## code ## ]]\nx = 1" in messages[1]["content"]


def test_reasoning_reads_like_a_string() -> None:
    reasoning = dspex.Reasoning.model_validate("step one")
    assert reasoning == "step one" and str(reasoning) == "step one" and "one" in reasoning


def test_documents_render_as_text_and_citations_parse_from_json() -> None:
    class Cite(dspex.Signature):
        documents: list[Document] = dspex.InputField()
        question: str = dspex.InputField()
        answer: str = dspex.OutputField()
        citations: Citations = dspex.OutputField()

    doc = Document(data="Water boils at 100 C.", title="Physics")
    messages = ChatAdapter().format(Cite, [], {"documents": [doc], "question": "Boiling point?"})
    assert "Water boils at 100 C." in messages[-1]["content"]
    reply = (
        "[[ ## answer ## ]]\n100 C\n\n[[ ## citations ## ]]\n"
        '[{"cited_text": "Water boils at 100 C.", "document_index": 0}]\n\n[[ ## completed ## ]]'
    )
    parsed = ChatAdapter().parse(Cite, reply)
    assert parsed["citations"][0].cited_text == "Water boils at 100 C."
    assert len(parsed["citations"]) == 1


def test_format_system_message_and_format_field_with_value() -> None:
    signature = dspex.Signature("question -> answer")
    adapter = ChatAdapter()
    assert adapter.format_system_message(signature) == adapter.system_message(signature)
    assert adapter.format_field_with_value({"question": "q", "answer": 3}) == (
        "[[ ## question ## ]]\nq\n\n[[ ## answer ## ]]\n3"
    )
    assert json.loads(JSONAdapter().format_field_with_value({"answer": [1, 2]}, role="assistant")) == {
        "answer": [1, 2]
    }
    assert JSONAdapter().format_field_with_value({"answer": "x"}, role="user") == "[[ ## answer ## ]]\nx"


def test_xml_adapter_round_trip_and_fallback_to_json() -> None:
    signature = dspex.Signature("question -> answer: int")
    adapter = XMLAdapter()
    messages = adapter.format(signature, [{"question": "1+1?", "answer": 2}], {"question": "2+2?"})
    assert messages[1]["content"] == "<question>\n1+1?\n</question>"
    assert messages[2]["content"] == "<answer>\n2\n</answer>"
    assert adapter.parse(signature, "Sure.\n<answer>\n4\n</answer>") == {"answer": 4}
    with pytest.raises(dspex.AdapterParseError):
        adapter.parse(signature, "four")
    lm = ScriptedLM("no tags here", '{"answer": 4}')
    assert adapter(lm, {}, signature, [], {"question": "2+2?"}) == [{"answer": 4}]


def test_missing_optional_outputs_take_their_defaults_and_required_ones_still_fail() -> None:
    class Partial(dspex.Signature):
        question: str = dspex.InputField()
        answer: str = dspex.OutputField()
        note: str | None = dspex.OutputField(default="No note")
        tags: list[str] = dspex.OutputField(default_factory=list)
        maybe: str | None = dspex.OutputField()

    expected = {"answer": "42", "note": "No note", "tags": [], "maybe": None}
    assert ChatAdapter().parse(Partial, "[[ ## answer ## ]]\n42\n\n[[ ## completed ## ]]") == expected
    assert JSONAdapter().parse(Partial, '{"answer": "42"}') == expected
    assert XMLAdapter().parse(Partial, "<answer>42</answer>") == expected
    for adapter, reply in ((ChatAdapter(), "[[ ## note ## ]]\nx"), (JSONAdapter(), '{"note": "x"}')):
        with pytest.raises(dspex.AdapterParseError):
            adapter.parse(Partial, reply)


def test_adapters_accept_dspys_constructor_options() -> None:
    adapter = ChatAdapter(use_native_function_calling=True, parallel_tool_calls=True, use_json_adapter_fallback=False)
    assert adapter.use_native_function_calling and adapter.parallel_tool_calls
    assert not adapter.use_json_adapter_fallback
    assert JSONAdapter(callbacks=[]).callbacks == []


def test_dspy_path_to_adapter_errors() -> None:
    from dspex.utils.exceptions import AdapterParseError

    assert AdapterParseError is dspex.AdapterParseError


def test_dspy_attribute_paths_to_experimental_and_exceptions() -> None:
    assert dspex.experimental.Citations is Citations
    assert dspex.utils.exceptions.AdapterParseError is dspex.AdapterParseError


class _DeclaresSchemaSupport:
    def __init__(self, supports: bool, params: tuple[str, ...] = ()) -> None:
        self.supports_response_schema = supports
        self.supported_params = params


def test_json_adapter_sends_response_format_only_to_lms_that_support_it() -> None:
    signature = dspex.Signature("question -> answer")
    adapter = JSONAdapter()
    assert adapter.lm_kwargs(signature, _DeclaresSchemaSupport(True))["response_format"]["type"] == "json_schema"
    assert adapter.lm_kwargs(signature, _DeclaresSchemaSupport(False, ("response_format",))) == {
        "response_format": {"type": "json_object"}
    }
    assert adapter.lm_kwargs(signature, _DeclaresSchemaSupport(False)) == {}
    assert adapter.lm_kwargs(signature, object()) == {}  # an LM that says nothing: prompt only
    assert "response_format" in adapter.lm_kwargs(signature, dspex.LM("openai/gpt-4o-mini", api_key="k"))
    assert adapter.lm_kwargs(signature, dspex.LM("anthropic/claude-x", api_key="k")) == {}


def test_enums_parse_by_name_or_value_and_render_auto_values_by_name() -> None:
    import enum

    class Colour(enum.Enum):
        RED = enum.auto()
        GREEN = enum.auto()

    class Mood(enum.Enum):
        HAPPY = "happy"

    class Pick(dspex.Signature):
        question: str = dspex.InputField()
        colour: Colour = dspex.OutputField()
        mood: Mood = dspex.OutputField()

    reply = "[[ ## colour ## ]]\nGREEN\n\n[[ ## mood ## ]]\nhappy\n\n[[ ## completed ## ]]"
    assert ChatAdapter().parse(Pick, reply) == {"colour": Colour.GREEN, "mood": Mood.HAPPY}
    assert JSONAdapter().parse(Pick, '{"colour": "Colour.RED", "mood": "HAPPY"}') == {
        "colour": Colour.RED,
        "mood": Mood.HAPPY,
    }
    assert JSONAdapter().parse(Pick, '{"colour": 2, "mood": "happy"}')["colour"] is Colour.GREEN
    with pytest.raises(dspex.AdapterParseError):
        ChatAdapter(use_json_adapter_fallback=False).parse(Pick, "[[ ## colour ## ]]\nBLUE\n\n[[ ## mood ## ]]\nhappy")
    demo = ChatAdapter().format(Pick, [{"question": "q", "colour": Colour.RED, "mood": Mood.HAPPY}], {"question": "x"})
    assert "[[ ## colour ## ]]\nRED" in demo[2]["content"] and "[[ ## mood ## ]]\nhappy" in demo[2]["content"]
    assert "one of: 'RED', 'GREEN'" in demo[-1]["content"]  # the reply hint names the members


def test_predict_warns_when_an_input_does_not_fit_its_type(caplog: pytest.LogCaptureFixture) -> None:
    signature = dspex.Signature("count: int -> answer")
    reply = "[[ ## answer ## ]]\nok\n\n[[ ## completed ## ]]"
    with caplog.at_level("WARNING", logger="dspex.modules.predict"), dspex.context(lm=ScriptedLM(reply, reply)):
        dspex.Predict(signature)(count=["not", "a", "number"])
        assert "Type mismatch for field 'count': expected int" in caplog.text
        caplog.clear()
        dspex.Predict(signature)(count=3)
        assert caplog.text == ""
    with caplog.at_level("WARNING", logger="dspex.modules.predict"), dspex.context(
        lm=ScriptedLM(reply), warn_on_type_mismatch=False
    ):
        dspex.Predict(signature)(count="many")
    assert caplog.text == ""


def test_parse_errors_name_the_adapter_and_keep_dspys_attribute_names() -> None:
    signature = dspex.Signature("question -> answer")
    with pytest.raises(dspex.AdapterParseError, match=r"^Adapter ChatAdapter failed to parse") as caught:
        ChatAdapter().parse(signature, "{'output': 'x'}")
    error = caught.value
    assert error.adapter_name == "ChatAdapter" and error.lm_response == "{'output': 'x'}"
    assert error.parsed_result == {} and error.signature is signature
    with pytest.raises(dspex.AdapterParseError, match="Adapter JSONAdapter failed"):
        JSONAdapter().parse(signature, '{"answer1": "Paris"}')


class Event(dspex.Type):
    label: str

    def format(self) -> list[dict[str, object]]:
        return [{"type": "event", "event": {"label": self.label}}]


def test_custom_type_parts_are_spliced_into_the_message_as_content_parts() -> None:
    class Describe(dspex.Signature):
        event: Event = dspex.InputField()
        answer: str = dspex.OutputField()

    messages = ChatAdapter().format(Describe, [], {"event": Event(label="launch")})
    content = messages[-1]["content"]
    assert isinstance(content, list)
    assert content[0] == {"type": "text", "text": "[[ ## event ## ]]\n"}
    assert content[1] == {"type": "event", "event": {"label": "launch"}}
    assert content[2]["type"] == "text" and "[[ ## answer ## ]]" in content[2]["text"]
    # Text-only values keep the message a plain string.
    plain = ChatAdapter().format(dspex.Signature("question -> answer"), [], {"question": "q"})
    assert isinstance(plain[-1]["content"], str)


def test_custom_history_formatter_hook_gets_the_field_name_and_inputs() -> None:
    class OwnHistory(ChatAdapter):
        def format_conversation_history(self, signature, history_field_name, inputs):  # type: ignore[override]
            del inputs[history_field_name]
            return [{"role": "user", "content": "earlier, in short"}]

    messages = OwnHistory().format(Chat, [], {"question": "Q2", "history": HISTORY})
    assert messages[1] == {"role": "user", "content": "earlier, in short"}
    assert "Q2" in messages[2]["content"]


def test_citations_from_dict_list_and_demo_rendering() -> None:
    citations = Citations.from_dict_list([{"cited_text": "alpha", "document_index": 0}])
    assert citations[0].cited_text == "alpha"
    assert json.loads(citations.format()) == [
        {"cited_text": "alpha", "document_index": 0, "type": "char_location"}
    ]


def test_json_schema_asks_for_text_types_as_strings() -> None:
    from dspex.adapters.json_adapter import json_schema_format

    class Generate(dspex.Signature):
        question: str = dspex.InputField()
        code: dspex.Code = dspex.OutputField()

    schema = json_schema_format(Generate)["json_schema"]["schema"]
    assert schema["properties"]["code"]["type"] == "string"
    assert JSONAdapter().parse(Generate, '{"code": "x = 1"}')["code"].code == "x = 1"


def test_dummy_lm_answers_through_each_adapter_including_xml_and_history() -> None:
    from dspex.utils import DummyLM

    for adapter in (ChatAdapter(), JSONAdapter(), XMLAdapter()):
        with dspex.context(lm=DummyLM([{"answer": "Paris"}], adapter=adapter), adapter=adapter):
            assert dspex.Predict("question -> answer")(question="q").answer == "Paris"
    with dspex.context(lm=DummyLM([{"answer": "Rome"}])):
        assert dspex.Predict(Chat)(question="And Italy?", history=HISTORY).answer == "Rome"
