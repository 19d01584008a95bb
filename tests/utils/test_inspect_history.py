"""`pretty_print_history`: readable prompts and replies, tool calls, no colour in files."""

from __future__ import annotations

import io

import pytest

from dspex.utils.inspect_history import format_history, pretty_print_history


def _entry(text: str, **extra: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}], "outputs": [f"re: {text}"], "timestamp": 0.0, **extra}


def test_last_n_entries_in_order() -> None:
    out = io.StringIO()
    pretty_print_history([_entry("one"), _entry("two"), _entry("three")], n=2, file=out)
    text = out.getvalue()
    assert "one" not in text and text.index("two") < text.index("three")
    assert "User message:" in text and "Response:" in text and "re: three" in text
    assert "\x1b[" not in text


def test_tool_calls_of_messages_and_outputs() -> None:
    entry = {
        "messages": [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "search", "arguments": '{"q": "x"}'}}
            ]},
            {"role": "tool", "content": "found", "tool_call_id": "1"},
        ],
        "outputs": [{"tool_calls": [{"name": "lookup", "args": {"q": "y"}}]}],
    }
    text = format_history([entry])
    assert 'search: {"q": "x"}' in text and "Tool message:" in text and "found" in text
    assert 'lookup: {"q": "y"}' in text
    assert "Response:" not in text  # the reply had no text, only a tool call


def test_media_parts_are_named_not_dumped() -> None:
    data = "A" * 5000
    entry = _entry("x")
    entry["messages"] = [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
    ]}]
    text = format_history([entry])
    assert "look" in text and "<image/png, 3.8 kB, sha256:" in text and data not in text


def test_heading_shows_model_tokens_and_other_completions(capsys: pytest.CaptureFixture[str]) -> None:
    entry = _entry("q", model="openai/m", usage={"prompt_tokens": 3, "completion_tokens": 2}, cached=True)
    entry["outputs"] = ["a", "b"]
    pretty_print_history([entry])
    text = capsys.readouterr().out
    assert "openai/m" in text and "(cached)" in text and "3/2" in text and "Response 2:" in text
    assert "\x1b[" not in text  # captured stdout is not a terminal
    assert format_history([_entry("q")], 0) == ""
