"""Native function calling end to end: a Predict with ``question, tools: list[Tool] ->
tool_calls: ToolCalls`` against the simulated LM over real HTTP, on the OpenAI and the
Anthropic protocols, through the Chat, JSON and XML adapters; what the prompt and the
request hold; replies with unknown tools or unreadable arguments; native off; the
DSPy-named pre/post-processing steps."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.adapters.chat import ChatAdapter
from dspex.adapters.json_adapter import JSONAdapter
from dspex.adapters.types.tool import Tool, ToolCalls
from dspex.adapters.xml_adapter import XMLAdapter
from dspex.clients import cache as cache_module
from dspex.clients.cache import LMCache
from dspex.errors import AdapterParseError, SignatureError, ToolArgumentError, ToolNotFoundError
from dspex.simlm import SimLMServer, start_sim_lm


def get_weather(city: str) -> str:
    """Report today's weather conditions for a city."""
    return f"Sunny in {city}"


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


TOOLS = [Tool(get_weather), Tool(add)]


class AskWithTools(dspex.Signature):
    """Answer the question, calling tools as needed."""

    question: str = dspex.InputField()
    tools: list[Tool] = dspex.InputField()
    tool_calls: ToolCalls = dspex.OutputField()


class AskWithToolsAndAnswer(dspex.Signature):
    question: str = dspex.InputField()
    tools: list[Tool] = dspex.InputField()
    answer: str = dspex.OutputField()
    tool_calls: ToolCalls = dspex.OutputField()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimLMServer]:
    server = start_sim_lm(seed=5)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _clean_sim(sim: SimLMServer) -> None:
    sim.set_faults()
    sim.reset_stats()


def lm_for(sim: SimLMServer, provider: str, **kwargs: Any) -> dspex.LM:
    return dspex.LM(f"{provider}/sim-lm", api_base=sim.url, api_key="k", **{"cache": False, **kwargs})


def prompt_text(lm: dspex.LM, index: int = -1) -> str:
    return "\n".join(str(m["content"]) for m in lm.history[index]["messages"])


ADAPTERS = [
    pytest.param(lambda: ChatAdapter(use_native_function_calling=True), id="chat"),
    pytest.param(JSONAdapter, id="json-default"),
    pytest.param(lambda: XMLAdapter(use_native_function_calling=True), id="xml"),
]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("make_adapter", ADAPTERS)
def test_predict_returns_tool_calls_that_run(sim: SimLMServer, provider: str, make_adapter: Any) -> None:
    lm = lm_for(sim, provider)
    with dspex.context(lm=lm, adapter=make_adapter()):
        prediction = dspex.Predict(AskWithTools)(question="What is the weather in Lisbon?", tools=TOOLS)

    calls = prediction.tool_calls
    assert isinstance(calls, ToolCalls)
    assert [(c.name, c.args) for c in calls.tool_calls] == [("get_weather", {"city": "Lisbon"})]
    assert calls.tool_calls[0].id  # the provider's call id is kept (for a tool-result turn)
    assert calls.execute(TOOLS) == ["Sunny in Lisbon"]

    # The request really offered the tools natively...
    assert sim.stats()["tool_requests"] == 1 and sim.stats()["tool_calls"] == 1
    sent = lm.history[-1]["params"]["tools"]
    assert [t["function"]["name"] for t in sent] == ["get_weather", "add"]
    # ...and the prompt neither lists them nor asks for the tool_calls field.
    prompt = prompt_text(lm)
    for absent in ("get_weather", "today's weather", "[[ ## tools ## ]]", "<tools>", "`tools` (", "tool_calls"):
        assert absent not in prompt, absent
    assert "Lisbon" in prompt


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_other_output_fields_are_none_when_the_reply_is_only_tool_calls(sim: SimLMServer, provider: str) -> None:
    with dspex.context(lm=lm_for(sim, provider), adapter=JSONAdapter()):
        prediction = dspex.Predict(AskWithToolsAndAnswer)(question="Please add 2 and 40.", tools=TOOLS)
    assert prediction.answer is None
    assert prediction.tool_calls.execute(TOOLS) == [42]


def test_a_text_reply_leaves_the_tool_calls_field_none(sim: SimLMServer) -> None:
    # No offered tool fits the question: the model answers in text.
    with dspex.context(lm=lm_for(sim, "openai"), adapter=ChatAdapter(use_native_function_calling=True)):
        prediction = dspex.Predict(AskWithToolsAndAnswer)(question="Tell me a joke.", tools=[Tool(add)])
    assert prediction.tool_calls is None
    assert isinstance(prediction.answer, str) and prediction.answer
    assert sim.stats()["tool_requests"] == 1 and sim.stats()["tool_calls"] == 0


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_call_to_an_unknown_tool_is_returned_and_fails_typed_when_run(sim: SimLMServer, provider: str) -> None:
    # The sim LM, told to use a tool that was not offered, calls it anyway (as models do).
    with dspex.context(lm=lm_for(sim, provider), adapter=JSONAdapter()):
        prediction = dspex.Predict(AskWithTools)(question="Use the `teleport` tool to reach Lisbon.", tools=TOOLS)
    [call] = prediction.tool_calls.tool_calls
    assert call.name == "teleport"
    with pytest.raises(ToolNotFoundError, match="teleport"):
        prediction.tool_calls.execute(TOOLS)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_unreadable_arguments_are_observable_and_fail_typed_when_run(sim: SimLMServer, provider: str) -> None:
    sim.set_faults(malformed_rate=1.0)  # the sim LM cuts each call's arguments JSON in half
    with dspex.context(lm=lm_for(sim, provider), adapter=JSONAdapter()):
        prediction = dspex.Predict(AskWithTools)(question="What is the weather in Lisbon?", tools=TOOLS)
    [call] = prediction.tool_calls.tool_calls
    assert call.name == "get_weather" and call.args == {}
    assert call.args_error is not None and "not a JSON object" in call.args_error
    with pytest.raises(ToolArgumentError, match="get_weather"):
        prediction.tool_calls.execute(TOOLS)


def test_native_off_keeps_tools_in_the_prompt_and_out_of_the_request(sim: SimLMServer) -> None:
    lm = lm_for(sim, "openai")
    # The ChatAdapter's default is off. What the sim LM writes for a text ToolCalls field
    # is not under test here.
    with dspex.context(lm=lm, adapter=ChatAdapter()), contextlib.suppress(AdapterParseError):
        dspex.Predict(AskWithTools)(question="What is the weather in Lisbon?", tools=TOOLS)
    assert "tools" not in lm.history[0]["params"]
    assert "get_weather" in prompt_text(lm, 0) and "[[ ## tool_calls ## ]]" in prompt_text(lm, 0)
    assert sim.stats()["tool_requests"] == 0


def test_caching_tells_tool_lists_apart(sim: SimLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = LMCache(disk_dir=tmp_path / "cache")
    monkeypatch.setattr(cache_module, "_default", cache)
    lm = lm_for(sim, "openai", cache=True)
    predict = dspex.Predict(AskWithTools)
    question = "What is the weather in Lisbon?"
    with dspex.context(lm=lm, adapter=JSONAdapter()):
        first = predict(question=question, tools=TOOLS)
        predict(question=question, tools=[Tool(get_weather)])
        assert sim.stats()["completions"] == 2  # another tool list is another request
        again = predict(question=question, tools=TOOLS)
        assert sim.stats()["completions"] == 2  # the same tools: from the cache
    assert again.tool_calls == first.tool_calls
    cache.close()


class RecordingLM(dspex.BaseLM):
    """A custom LM that records what it is asked and answers with one tool call."""

    def __init__(self, native: bool) -> None:
        super().__init__("recording")
        self.native = native
        self.requests: list[dict[str, Any]] = []

    @property
    def supports_function_calling(self) -> bool:
        return self.native

    def forward(self, prompt: str | None = None, messages: Any = None, **kwargs: Any) -> dict[str, Any]:
        self.requests.append({"messages": messages, **kwargs})
        call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2,}'}}
        message = {"role": "assistant", "content": "[[ ## tool_calls ## ]]\n{\"tool_calls\": []}", "tool_calls": [call]}
        return {"choices": [{"message": message}]}


def test_an_lm_without_function_calling_is_prompted_the_text_way() -> None:
    lm = RecordingLM(native=False)
    ChatAdapter(use_native_function_calling=True)(lm, {}, AskWithTools, [], {"question": "q", "tools": TOOLS})
    assert "tools" not in lm.requests[0]
    assert "get_weather" in str(lm.requests[0]["messages"])


def test_arguments_are_read_leniently_and_parallel_tool_calls_is_passed_on() -> None:
    lm = RecordingLM(native=True)
    adapter = ChatAdapter(use_native_function_calling=True, parallel_tool_calls=False)
    [values] = adapter(lm, {}, AskWithTools, [], {"question": "q", "tools": TOOLS})
    assert values["tool_calls"].tool_calls[0].args == {"a": 1, "b": 2}  # a trailing comma is read
    assert values["tool_calls"].tool_calls[0].args_error is None
    assert lm.requests[0]["parallel_tool_calls"] is False and lm.requests[0]["tool_choice"] == "auto"


def test_native_off_drops_tool_params_a_caller_passed() -> None:
    lm = RecordingLM(native=True)
    params = {"tools": [Tool(add).format_as_function_call()], "tool_choice": "auto", "parallel_tool_calls": True}
    ChatAdapter(use_native_function_calling=False)(lm, params, AskWithTools, [], {"question": "q", "tools": TOOLS})
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(lm.requests[0])


def test_tool_calls_without_tools_input_is_a_signature_error() -> None:
    signature = dspex.Signature("question -> tool_calls: ToolCalls", custom_types={"ToolCalls": ToolCalls})
    with pytest.raises(SignatureError, match=r"list\[dspex\.Tool\]"):
        JSONAdapter()(RecordingLM(native=True), {}, signature, [], {"question": "q"})


def test_dspy_named_steps() -> None:
    adapter = ChatAdapter(use_native_function_calling=True)
    kwargs: dict[str, Any] = {}
    processed = adapter._call_preprocess(RecordingLM(native=True), kwargs, AskWithToolsAndAnswer, {"tools": TOOLS})
    assert list(processed.fields) == ["question", "answer"]
    assert [t["function"]["name"] for t in kwargs["tools"]] == ["get_weather", "add"]

    call = {"id": "c9", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
    outputs: list[Any] = [
        {"text": "[[ ## answer ## ]]\nadding\n\n[[ ## completed ## ]]", "tool_calls": [call]},
        {"text": None, "tool_calls": [call]},
        "[[ ## answer ## ]]\nthree\n\n[[ ## completed ## ]]",
    ]
    with_text, calls_only, text_only = adapter._call_postprocess(processed, AskWithToolsAndAnswer, outputs)
    assert with_text["answer"] == "adding" and with_text["tool_calls"].tool_calls[0].id == "c9"
    assert calls_only == {"answer": None, "tool_calls": ToolCalls.from_dict_list([call])}
    assert text_only == {"answer": "three", "tool_calls": None}


def test_string_signatures_name_the_tool_types_through_the_dspex_module(sim: SimLMServer) -> None:
    signature = dspex.Signature("question, tools: list[dspex.Tool] -> tool_calls: dspex.ToolCalls")
    assert signature.fields["tools"].annotation == list[Tool]
    with dspex.context(lm=lm_for(sim, "anthropic"), adapter=JSONAdapter()):
        prediction = dspex.Predict(signature)(question="Please add 5 and 6.", tools=TOOLS)
    assert prediction.tool_calls.execute(TOOLS) == [11]


class StepWithHistory(dspex.Signature):
    question: str = dspex.InputField()
    history: dspex.History = dspex.InputField()
    tools: list[Tool] = dspex.InputField()
    next_thought: str = dspex.OutputField()
    tool_calls: ToolCalls = dspex.OutputField()


def history_with_results(call_ids: list[str | None], result_ids: list[str | None]) -> dspex.History:
    calls = ToolCalls(tool_calls=[ToolCalls.ToolCall(id=i, name="add", args={"a": 1, "b": n}) for n, i in enumerate(call_ids)])
    results = dspex.ToolCallResults(
        tool_call_results=[
            dspex.ToolCallResults.ToolCallResult(call_id=i, name="add", value={"sum": 1 + n}) for n, i in enumerate(result_ids)
        ]
    )
    step = {"question": "Q1", "next_thought": "I add.", "tool_calls": calls.model_copy(update={"tool_call_results": results})}
    return dspex.History(messages=[step])


def test_native_history_replays_calls_and_results_as_provider_turns() -> None:
    lm = RecordingLM(native=True)
    history = history_with_results(["c1", "c2"], ["c1", "c2"])
    ChatAdapter(use_native_function_calling=True)(lm, {}, StepWithHistory, [], {"question": "Q2", "history": history, "tools": TOOLS})
    messages = lm.requests[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool", "user"]
    assistant = messages[2]
    assert "I add." in assistant["content"] and "tool_calls ##" not in assistant["content"]
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in assistant["tool_calls"]] == [
        ("c1", "add", '{"a": 1, "b": 0}'),
        ("c2", "add", '{"a": 1, "b": 1}'),
    ]
    assert messages[3] == {"role": "tool", "tool_call_id": "c1", "name": "add", "content": '{"sum": 1}'}
    assert messages[4]["tool_call_id"] == "c2"
    assert "Q2" in messages[5]["content"] and "tool_call_results" not in messages[5]["content"]


@pytest.mark.parametrize("call_ids, result_ids", [(["c1"], ["other"]), ([None], [None])])
def test_native_history_leaves_out_calls_whose_results_do_not_match(call_ids: list[Any], result_ids: list[Any]) -> None:
    lm = RecordingLM(native=True)
    history = history_with_results(call_ids, result_ids)
    ChatAdapter(use_native_function_calling=True)(lm, {}, StepWithHistory, [], {"question": "Q2", "history": history, "tools": TOOLS})
    messages = lm.requests[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "tool_calls" not in messages[2] and "I add." in messages[2]["content"]


@pytest.mark.parametrize("adapter", [ChatAdapter(), JSONAdapter(use_native_function_calling=False), XMLAdapter()])
def test_text_history_shows_results_as_a_user_turn(adapter: Any) -> None:
    history = history_with_results(["c1"], ["c1"])
    messages = adapter.format(StepWithHistory, [], {"question": "Q2", "history": history, "tools": TOOLS})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "user"]
    assert "add" in messages[2]["content"] and "sum" not in messages[2]["content"]
    results_turn = messages[3]["content"]
    assert "tool_call_results" in results_turn and '"sum": 1' in results_turn and "Q2" not in results_turn
