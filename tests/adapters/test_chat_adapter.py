from __future__ import annotations

import pytest
from pydantic import BaseModel

from dspex.adapters import ChatAdapter, JSONAdapter
from dspex.errors import AdapterParseError
from dspex.signatures import InputField, OutputField, Signature


class Point(BaseModel):
    x: int
    y: int


class Solve(Signature):
    """Solve the arithmetic question."""

    question: str = InputField(desc="an arithmetic question")
    answer: int = OutputField(desc="the result", ge=0)


def test_system_message_lists_fields_structure_and_instructions() -> None:
    system = ChatAdapter().system_message(Solve)
    assert "- `question` (str): an arithmetic question" in system
    assert "- `answer` (int): the result Constraints: greater than or equal to 0." in system
    assert "[[ ## completed ## ]]" in system
    assert system.rstrip().endswith("Instructions:\nSolve the arithmetic question.")


def test_format_puts_demos_as_turns_and_inputs_as_sections() -> None:
    demos = [{"question": "1 + 1?", "answer": 2}, {"question": "no answer"}]
    messages = ChatAdapter().format(Solve, demos, {"question": "2 + 3?"})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "[[ ## question ## ]]\n1 + 1?"
    assert messages[2]["content"] == "[[ ## answer ## ]]\n2\n\n[[ ## completed ## ]]"
    last = messages[-1]["content"]
    assert last.startswith("[[ ## question ## ]]\n2 + 3?")
    assert "`[[ ## answer ## ]]` (an integer)" in last


def test_parse_typed_values() -> None:
    sig = Signature(
        "q -> n: int, f: float, ok: bool, items: list[str], kind: Literal['yes', 'no'], p: Point",
        custom_types={"Point": Point},
    )
    text = (
        "[[ ## n ## ]]\n42.\n\n[[ ## f ## ]]\n3.5\n\n[[ ## ok ## ]]\nTrue\n\n"
        '[[ ## items ## ]]\n["a", "b"]\n\n[[ ## kind ## ]]\n\'Yes\'\n\n'
        '[[ ## p ## ]]\n```json\n{"x": 1, "y": 2}\n```\n\n[[ ## completed ## ]]'
    )
    parsed = ChatAdapter().parse(sig, text)
    assert parsed == {"n": 42, "f": 3.5, "ok": True, "items": ["a", "b"], "kind": "yes", "p": Point(x=1, y=2)}


@pytest.mark.parametrize(
    ("reply", "field"),
    [
        ("no sections at all", "answer"),
        ("[[ ## answer ## ]]\nforty-two\n\n[[ ## completed ## ]]", "answer"),
        ("[[ ## answer ## ]]\n-3\n\n[[ ## completed ## ]]", "answer"),  # violates ge=0
    ],
)
def test_parse_failures_name_the_field(reply: str, field: str) -> None:
    with pytest.raises(AdapterParseError) as info:
        ChatAdapter().parse(Solve, reply)
    assert info.value.field == field
    assert info.value.raw_text == reply
    assert info.value.signature is Solve


def test_literal_rejects_values_outside_the_options() -> None:
    sig = Signature("q -> kind: Literal['yes', 'no']")
    with pytest.raises(AdapterParseError, match="kind"):
        ChatAdapter().parse(sig, "[[ ## kind ## ]]\nmaybe\n\n[[ ## completed ## ]]")


async def test_round_trip(scripted_lm) -> None:
    lm = scripted_lm("[[ ## answer ## ]]\n5\n\n[[ ## completed ## ]]")
    result = await ChatAdapter().arun(lm, {"temperature": 0.0}, Solve, [], {"question": "2 + 3?"})
    assert result.completions == [{"answer": 5}]
    assert result.usage.calls == 1
    assert lm.requests[0]["temperature"] == 0.0
    assert "response_format" not in lm.requests[0]


async def test_falls_back_to_json_once_then_succeeds(scripted_lm) -> None:
    lm = scripted_lm("garbage without markers", '{"answer": 7}')
    result = await ChatAdapter().arun(lm, {}, Solve, [], {"question": "3 + 4?"})
    assert result.completions == [{"answer": 7}]
    assert result.adapter == "chat+json"
    assert result.usage.calls == 2
    assert lm.requests[1]["response_format"]["type"] == "json_schema"
    assert "Reply with a JSON object" in lm.requests[1]["messages"][-1]["content"]


async def test_unparseable_after_fallback_raises_with_raw_text(scripted_lm) -> None:
    lm = scripted_lm("garbage", "still garbage")
    with pytest.raises(AdapterParseError) as info:
        await ChatAdapter().arun(lm, {}, Solve, [], {"question": "3 + 4?"})
    assert info.value.raw_text == "still garbage"
    assert info.value.signature is Solve
    assert "Chat sections" in str(info.value)
    assert len(lm.requests) == 2


async def test_no_fallback_when_disabled(scripted_lm) -> None:
    lm = scripted_lm("garbage")
    with pytest.raises(AdapterParseError):
        await ChatAdapter(use_json_adapter_fallback=False).arun(lm, {}, Solve, [], {"question": "x"})
    assert len(lm.requests) == 1


async def test_keeps_parseable_completions_when_some_fail(scripted_lm) -> None:
    lm = scripted_lm(["[[ ## answer ## ]]\n1\n\n[[ ## completed ## ]]", "junk"])
    result = await ChatAdapter().arun(lm, {"n": 2}, Solve, [], {"question": "x"})
    assert result.completions == [{"answer": 1}]
    assert len(result.rejected) == 1


def test_json_adapter_parses_object_in_prose() -> None:
    text = 'Sure! Here it is: {"answer": 12, "note": "{braces}"} hope that helps'
    assert JSONAdapter().parse(Solve, text) == {"answer": 12}


def test_json_adapter_missing_key_names_field() -> None:
    with pytest.raises(AdapterParseError) as info:
        JSONAdapter().parse(Solve, '{"other": 1}')
    assert info.value.field == "answer"


def test_json_adapter_response_format_modes(scripted_lm) -> None:
    adapter = JSONAdapter()
    schema = adapter.lm_kwargs(Solve, scripted_lm())["response_format"]
    assert schema["type"] == "json_schema"
    assert schema["json_schema"]["schema"]["properties"]["answer"]["type"] == "integer"
    open_dict = Signature("q -> data: dict[str, int]")
    assert adapter.lm_kwargs(open_dict, scripted_lm())["response_format"] == {"type": "json_object"}

    class Anthropic:
        provider = "anthropic"

    assert adapter.lm_kwargs(Solve, Anthropic()) == {}


async def test_json_adapter_downgrades_when_provider_rejects_schema(scripted_lm) -> None:
    from dspex.errors import LMBadRequestError

    lm = scripted_lm(LMBadRequestError("response_format json_schema is not supported"), '{"answer": 3}')
    result = await JSONAdapter().arun(lm, {}, Solve, [], {"question": "1 + 2?"})
    assert result.completions == [{"answer": 3}]
    assert lm.requests[1]["response_format"] == {"type": "json_object"}


def test_json_demo_is_an_object() -> None:
    messages = JSONAdapter().format(Solve, [{"question": "1+1", "answer": 2}], {"question": "q"})
    assert messages[2]["content"] == '{\n  "answer": 2\n}'
