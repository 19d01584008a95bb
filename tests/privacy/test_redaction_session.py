"""Placeholders: stable within a session, restored wherever a value nests them."""

from __future__ import annotations

import pickle

from pydantic import BaseModel

import dspex
from dspex.clients.types import Usage
from dspex.privacy import CREDIT_CARD, EMAIL, PHONE, RedactionSession

REDACTORS = [EMAIL, PHONE, CREDIT_CARD]


def test_the_same_value_keeps_its_placeholder_and_kinds_count_apart() -> None:
    session = RedactionSession()
    first = session.redact_text("a@example.com, b@example.com, +1 415 555 0132", REDACTORS)
    again = session.redact_text("b@example.com wrote to a@example.com", REDACTORS)
    assert first == "<EMAIL_1>, <EMAIL_2>, <PHONE_1>"
    assert again == "<EMAIL_2> wrote to <EMAIL_1>"


def test_a_placeholder_the_session_never_gave_out_stays_as_written() -> None:
    session = RedactionSession()
    session.redact_text("a@example.com", REDACTORS)
    assert session.restore_text("<EMAIL_1> and <EMAIL_7>") == "a@example.com and <EMAIL_7>"


class Contact(BaseModel):
    name: str
    emails: list[str]
    age: int


def test_values_nested_in_lists_dicts_models_and_predictions_are_redacted_and_restored() -> None:
    session = RedactionSession()
    value = {
        "people": [Contact(name="Jo", emails=["jo@example.com"], age=3)],
        "pair": ("x", "call 415-555-0132"),
        "n": 7,
    }
    redacted = session.redact(value, REDACTORS)
    assert redacted["people"][0].emails == ["<EMAIL_1>"]
    assert redacted["pair"] == ("x", "call <PHONE_1>")
    assert value["people"][0].emails == ["jo@example.com"]  # the original is untouched
    assert session.restore(redacted) == value


def test_a_restored_prediction_keeps_its_completions_and_usage() -> None:
    session = RedactionSession()
    session.redact_text("jo@example.com and ann@example.com", REDACTORS)
    prediction = dspex.Prediction.from_completions([{"answer": "<EMAIL_1>"}, {"answer": "<EMAIL_2>"}])
    prediction.set_usage(Usage(10, 5, 1), {"m": Usage(10, 5, 1)})
    restored = session.restore(prediction)
    assert restored.answer == "jo@example.com"
    assert restored.completions.answer == ["jo@example.com", "ann@example.com"]
    assert restored.usage == Usage(10, 5, 1)
    assert prediction.answer == "<EMAIL_1>"  # the one a trace may hold keeps placeholders


def test_tool_calls_arguments_are_restored() -> None:
    session = RedactionSession()
    session.redact_text("jo@example.com", REDACTORS)
    calls = dspex.ToolCalls(tool_calls=[dspex.ToolCalls.ToolCall(name="send", args={"to": "<EMAIL_1>"})])
    assert session.restore(calls).tool_calls[0].args == {"to": "jo@example.com"}


def test_a_session_never_pickles_its_values() -> None:
    session = RedactionSession()
    session.redact_text("jo@example.com", REDACTORS)
    data = pickle.dumps(session)
    assert b"jo@example.com" not in data
    assert len(pickle.loads(data)) == 0


def test_a_tool_inside_a_redacted_call_gets_real_values_and_returns_placeholders() -> None:
    received: list[str] = []

    def send(to: str) -> str:
        received.append(to)
        return f"sent to {to}, copy to ops@example.com"

    session = RedactionSession()
    assert session.redact_text("jo@example.com", REDACTORS) == "<EMAIL_1>"
    tool = dspex.Tool(send)
    with dspex.context(redactors=REDACTORS), session.active():
        assert tool(to="<EMAIL_1>") == "sent to <EMAIL_1>, copy to <EMAIL_2>"
    assert received == ["jo@example.com"]
    assert tool(to="<EMAIL_1>") == "sent to <EMAIL_1>, copy to ops@example.com"  # outside: as is


async def test_an_async_tool_call_is_treated_the_same() -> None:
    received: list[str] = []

    async def send(to: str) -> str:
        received.append(to)
        return f"sent to {to}"

    session = RedactionSession()
    session.redact_text("jo@example.com", REDACTORS)
    with dspex.context(redactors=REDACTORS), session.active():
        assert await dspex.Tool(send).acall(to="<EMAIL_1>") == "sent to <EMAIL_1>"
    assert received == ["jo@example.com"]


def test_media_inlined_as_base64_is_left_alone() -> None:
    session = RedactionSession()
    uri = "data:image/png;base64,iVBORw0KGgo/4155550132+AAAA"
    image = dspex.Image(url=uri)
    assert session.redact({"image": image, "note": "+1 415 555 0132"}, REDACTORS) == {
        "image": image,
        "note": "<PHONE_1>",
    }
    assert session.redact("data: call +1 415 555 0132", REDACTORS) == "data: call <PHONE_1>"
