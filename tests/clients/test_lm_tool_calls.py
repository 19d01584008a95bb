"""Native tool calling in the LM client, against a real local HTTP server that records
request bodies: tools and tool_choice on the wire (OpenAI as given, Anthropic converted),
tool-call replies parsed from both formats into one output shape, tool-call history turns
converted for Anthropic, plain replies unchanged, and tools in the cache key."""

from __future__ import annotations

import json
from typing import Any

import pytest

import dspex
from dspex.clients.anthropic_protocol import anthropic_tool_choice
from dspex.errors import ConfigurationError, LMResponseError

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ADD = {
    "type": "function",
    "function": {"name": "add", "description": "Add.", "parameters": {"type": "object", "properties": {}}},
}
ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"}]


def openai_tool_reply(*calls: tuple[str, str, str], content: str | None = None) -> dict[str, Any]:
    return {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "tool_calls": [
                        {"id": ident, "type": "function", "function": {"name": name, "arguments": arguments}}
                        for ident, name, arguments in calls
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 7},
    }


def anthropic_tool_reply(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "content": list(blocks),
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 9, "output_tokens": 7},
    }


def lm_for(server: Any, provider: str, **kwargs: Any) -> dspex.LM:
    return dspex.LM(f"{provider}/m", api_base=server.base_url, api_key="k", cache=False, **kwargs)


def test_openai_request_carries_tools_and_the_reply_tool_calls_are_read(server: Any) -> None:
    server.push(body=openai_tool_reply(("call_1", "get_weather", '{"city": "Oslo"}')))
    lm = lm_for(server, "openai")
    response = lm.complete(ASK, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)

    body = server.requests[-1].body
    assert body["tools"] == [WEATHER]
    assert body["tool_choice"] == "required"
    assert body["parallel_tool_calls"] is False
    assert response.outputs == [
        {
            "text": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
            ],
        }
    ]
    assert response.finish_reasons == ["tool_calls"]
    assert lm.history[-1]["params"]["tools"] == [WEATHER]  # what was asked is inspectable


def test_plain_replies_stay_strings_and_text_beside_calls_is_kept(server: Any) -> None:
    lm = lm_for(server, "openai")
    assert lm("hi", tools=[WEATHER]) == ["echo: hi"]
    server.push(body=openai_tool_reply(("c", "add", "{}"), content="Let me add."))
    [output] = lm("add", tools=[ADD])
    assert output["text"] == "Let me add." and output["tool_calls"][0]["function"]["name"] == "add"


def test_openai_arguments_sent_as_an_object_are_kept_as_json_text(server: Any) -> None:
    reply = openai_tool_reply(("c", "get_weather", "{}"))
    reply["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = {"city": "Oslo"}
    server.push(body=reply)
    [output] = lm_for(server, "openai")("w", tools=[WEATHER])
    assert json.loads(output["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}


def test_openai_malformed_tool_calls_raise_a_response_error(server: Any) -> None:
    reply = openai_tool_reply(("c", "", "{}"))
    server.push(body=reply)
    with pytest.raises(LMResponseError, match="no function name"):
        lm_for(server, "openai", num_retries=0)("w", tools=[WEATHER])
    # Malformed *arguments* are not the client's business: they reach the adapter as written.
    server.push(body=openai_tool_reply(("c", "get_weather", '{"city": "Os')))
    [output] = lm_for(server, "openai")("w", tools=[WEATHER])
    assert output["tool_calls"][0]["function"]["arguments"] == '{"city": "Os'


def test_anthropic_request_converts_tools_and_tool_choice(server: Any) -> None:
    server.push(
        body=anthropic_tool_reply(
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
        )
    )
    lm = lm_for(server, "anthropic")
    response = lm.complete(ASK, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)

    body = server.requests[-1].body
    assert body["tools"] == [
        {
            "name": "get_weather",
            "input_schema": WEATHER["function"]["parameters"],
            "description": "Weather of a city.",
        }
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert "parallel_tool_calls" not in body and body["system"] == "Be brief."
    [output] = response.outputs
    assert output["text"] == "Checking."
    [call] = output["tool_calls"]
    assert call["id"] == "toolu_1" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}


def test_anthropic_tool_history_becomes_tool_use_and_tool_result_blocks(server: Any) -> None:
    call = {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    call2 = {"id": "t2", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    messages = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call, call2]},
        {"role": "tool", "tool_call_id": "t1", "content": "Rain"},
        {"role": "tool", "tool_call_id": "t2", "content": "3"},
    ]
    lm_for(server, "anthropic")(messages=messages, tools=[WEATHER, ADD])
    turns = server.requests[-1].body["messages"]
    assert turns[1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "t2", "name": "add", "input": {}},
        ],
    }
    assert turns[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "Rain"},
            {"type": "tool_result", "tool_use_id": "t2", "content": "3"},
        ],
    }
    assert len(turns) == 3


def test_anthropic_tool_choice_mapping() -> None:
    assert anthropic_tool_choice(None, None) is None
    assert anthropic_tool_choice("auto", None) == {"type": "auto"}
    assert anthropic_tool_choice(None, False) == {"type": "auto", "disable_parallel_tool_use": True}
    assert anthropic_tool_choice("none", False) == {"type": "none"}
    assert anthropic_tool_choice({"type": "function", "function": {"name": "add"}}, None) == {
        "type": "tool",
        "name": "add",
    }
    assert anthropic_tool_choice({"type": "tool", "name": "add"}, None) == {"type": "tool", "name": "add"}
    with pytest.raises(ConfigurationError, match="tool_choice"):
        anthropic_tool_choice("sometimes", None)


def test_anthropic_reply_without_text_or_tool_use_is_an_error(server: Any) -> None:
    server.push(body=anthropic_tool_reply())
    with pytest.raises(LMResponseError, match="no text content and no tool use"):
        lm_for(server, "anthropic", num_retries=0)("w")


def test_cache_keys_include_the_tools(server: Any, isolated_cache: Any) -> None:
    lm = dspex.LM("openai/m", api_base=server.base_url, api_key="k")
    server.push(body=openai_tool_reply(("c1", "get_weather", '{"city": "Oslo"}')))
    first = lm("w", tools=[WEATHER])
    second = lm("w", tools=[WEATHER, ADD])  # another tool list: a new request
    assert server.count == 2
    assert second == ["echo: w"]
    again = lm("w", tools=[WEATHER])  # the same tools: answered from the cache
    assert server.count == 2
    assert again == first and isinstance(again[0], dict)
    again[0]["tool_calls"].clear()  # a caller editing its copy does not edit the cache
    assert lm("w", tools=[WEATHER]) == first
