"""The simulated LM answering native tool requests over real HTTP, on the OpenAI and the
Anthropic wire formats: tool calls chosen from the question, tool_choice, the text answer
after tool results, a spoiled-arguments fault, bad tool lists, and the /stats counters."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from dspex.simlm import SimLMServer, start_sim_lm

WEATHER = {
    "name": "get_weather",
    "description": "Current weather conditions of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ADD = {
    "name": "add",
    "description": "Add two integers.",
    "parameters": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
}
FORECAST = {
    "name": "lookup",
    "description": "Tomorrow's forecast: rain, snow or sunshine.",
    "parameters": {"type": "object", "properties": {"place": {"type": "string"}}},
}


def openai_tools(*specs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": spec} for spec in specs]


def anthropic_tools(*specs: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": s["name"], "description": s["description"], "input_schema": s["parameters"]}
        for s in specs
    ]


@pytest.fixture
def sim() -> Iterator[SimLMServer]:
    server = start_sim_lm(seed=3)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with http.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}) as resp:
        return resp.status, await resp.json(content_type=None)


async def openai(sim: SimLMServer, http: aiohttp.ClientSession, messages: list[Any], **params: Any) -> tuple[int, dict[str, Any]]:
    return await post(http, f"{sim.url}/chat/completions", {"model": "sim", "messages": messages, **params})


async def anthropic(sim: SimLMServer, http: aiohttp.ClientSession, messages: list[Any], **params: Any) -> tuple[int, dict[str, Any]]:
    body = {"model": "sim", "max_tokens": 256, "messages": messages, **params}
    return await post(http, f"{sim.url}/messages", body)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


async def test_openai_reply_is_a_tool_call_chosen_from_the_question(
    sim: SimLMServer, http: aiohttp.ClientSession
) -> None:
    status, data = await openai(sim, http, [user("What is the weather in Lisbon?")], tools=openai_tools(ADD, WEATHER))
    assert status == 200
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Lisbon"}

    status, data = await openai(sim, http, [user("Please add 12 and 30.")], tools=openai_tools(WEATHER, ADD))
    [call] = data["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "add"
    assert json.loads(call["function"]["arguments"]) == {"a": 12, "b": 30}


async def test_anthropic_reply_is_a_tool_use_block(sim: SimLMServer, http: aiohttp.ClientSession) -> None:
    status, data = await anthropic(sim, http, [user("What is the weather in Lisbon?")], tools=anthropic_tools(WEATHER))
    assert status == 200, data
    assert data["stop_reason"] == "tool_use"
    [block] = data["content"]
    assert block["type"] == "tool_use" and block["name"] == "get_weather"
    assert block["input"] == {"city": "Lisbon"}  # an object, not JSON text


async def test_a_tool_is_matched_by_its_description_when_no_name_fits(
    sim: SimLMServer, http: aiohttp.ClientSession
) -> None:
    _, data = await openai(sim, http, [user("Will there be snow in Oslo?")], tools=openai_tools(ADD, FORECAST))
    [call] = data["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "lookup"


async def test_no_fitting_tool_gets_a_text_answer(sim: SimLMServer, http: aiohttp.ClientSession) -> None:
    _, data = await openai(sim, http, [user("Tell me a joke.")], tools=openai_tools(ADD))
    message = data["choices"][0]["message"]
    assert "tool_calls" not in message and isinstance(message["content"], str)
    assert data["choices"][0]["finish_reason"] == "stop"


async def test_tool_choice_none_named_and_required(sim: SimLMServer, http: aiohttp.ClientSession) -> None:
    question = [user("What is the weather in Lisbon?")]
    _, data = await openai(sim, http, question, tools=openai_tools(WEATHER), tool_choice="none")
    assert "tool_calls" not in data["choices"][0]["message"]

    forced = {"type": "function", "function": {"name": "add"}}
    _, data = await openai(sim, http, question, tools=openai_tools(WEATHER, ADD), tool_choice=forced)
    assert data["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "add"

    _, data = await anthropic(sim, http, [user("Tell me a joke.")], tools=anthropic_tools(ADD), tool_choice={"type": "any"})
    assert [b["name"] for b in data["content"] if b["type"] == "tool_use"] == ["add"]

    status, data = await openai(
        sim, http, question, tools=openai_tools(WEATHER),
        tool_choice={"type": "function", "function": {"name": "missing"}},
    )
    assert status == 400 and "missing" in data["error"]["message"]


async def test_after_tool_results_the_reply_is_text_from_them(sim: SimLMServer, http: aiohttp.ClientSession) -> None:
    question = user("What is the weather in Lisbon?")
    _, data = await openai(sim, http, [question], tools=openai_tools(WEATHER))
    call = data["choices"][0]["message"]["tool_calls"][0]
    turns = [
        question,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 24 C"},
    ]
    _, data = await openai(sim, http, turns, tools=openai_tools(WEATHER))
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "Sunny, 24 C"}

    turns = [
        question,
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Lisbon"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "Rain, 12 C"}]},
    ]
    _, data = await anthropic(sim, http, turns, tools=anthropic_tools(WEATHER))
    assert data["content"] == [{"type": "text", "text": "Rain, 12 C"}]
    assert data["stop_reason"] == "end_turn"


async def test_malformed_fault_spoils_the_arguments(sim: SimLMServer, http: aiohttp.ClientSession) -> None:
    sim.set_faults(malformed_rate=1.0)
    _, data = await openai(sim, http, [user("What is the weather in Lisbon?")], tools=openai_tools(WEATHER))
    arguments = data["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(arguments)
    assert sim.stats()["faults"]["malformed"] == 1


async def test_bad_tool_lists_are_rejected(sim: SimLMServer, http: aiohttp.ClientSession) -> None:
    status, data = await openai(sim, http, [user("hi")], tools=[{"name": "x"}])
    assert status == 400 and "tools[0]" in data["error"]["message"]
    status, data = await anthropic(sim, http, [user("hi")], tools=[{"name": "x"}])
    assert status == 400 and "input_schema" in data["error"]["message"]


async def test_stats_count_tool_requests_and_calls(sim: SimLMServer, http: aiohttp.ClientSession) -> None:
    await openai(sim, http, [user("What is the weather in Lisbon?")], tools=openai_tools(WEATHER), n=2)
    await openai(sim, http, [user("Tell me a joke.")], tools=openai_tools(ADD))
    await openai(sim, http, [user("What is the weather in Lisbon?")])
    stats = sim.stats()
    assert stats["tool_requests"] == 2
    assert stats["tool_calls"] == 2  # one per choice of the first request
