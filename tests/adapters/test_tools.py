"""`dspex.Tool`, `dspex.ToolCalls`, `dspex.ToolCallResults`: describing, validating,
calling tools, and tool calls as field values."""

from __future__ import annotations

import asyncio
import copy
import pickle
import threading

import pydantic
import pytest

import dspex
from dspex.adapters.values import format_value, parse_value, type_hint
from dspex.errors import ToolArgumentError, ToolExecutionError, ToolNotFoundError


class Address(pydantic.BaseModel):
    city: str
    zip_code: str | None = None


def search(query: str, k: int = 2) -> list[str]:
    """Search the index for documents about a query."""
    return [f"{query}-{i}" for i in range(k)]


def locate(address: Address) -> str:
    """Where an address is."""
    return f"{address.city} ({address.zip_code})"


async def double(n: int) -> int:
    """Double a number."""
    await asyncio.sleep(0)
    return n * 2


class Counter:
    """Count calls with a step."""

    def __init__(self) -> None:
        self.total = 0

    def __call__(self, step: int = 1) -> int:
        self.total += step
        return self.total


def test_name_description_and_schema_come_from_the_function() -> None:
    tool = dspex.Tool(search)
    assert tool.name == "search"
    assert tool.desc == "Search the index for documents about a query."
    assert tool.args == {"query": {"type": "string"}, "k": {"type": "integer", "default": 2}}


def test_pydantic_argument_schema_is_inlined_and_values_are_parsed_into_the_model() -> None:
    tool = dspex.Tool(locate)
    schema = tool.args["address"]
    assert "$ref" not in str(schema) and schema["properties"]["city"] == {"title": "City", "type": "string"}
    assert tool(address={"city": "Oslo", "zip_code": "0150"}) == "Oslo (0150)"


def test_explicit_name_desc_and_args_win() -> None:
    tool = dspex.Tool(search, name="find", desc="Find things.", args={"query": {"type": "string"}})
    assert (tool.name, tool.desc, list(tool.args)) == ("find", "Find things.", ["query"])


def test_callable_object_is_described_by_its_class_and_call_signature() -> None:
    counter = Counter()
    tool = dspex.Tool(counter)
    assert tool.name == "Counter"
    assert tool.desc == "Count calls with a step."
    assert tool.args == {"step": {"type": "integer", "default": 1}}
    assert tool(step=3) == 3 and tool() == 4


def test_arguments_are_converted_to_the_hinted_types() -> None:
    assert dspex.Tool(search)(query="cats", k="3") == ["cats-0", "cats-1", "cats-2"]


def test_bad_arguments_raise_one_error_listing_every_problem() -> None:
    tool = dspex.Tool(search)
    with pytest.raises(ToolArgumentError) as caught:
        tool(k="many", color="red")
    error = caught.value
    assert isinstance(error, ValueError) and error.tool == "search"
    message = str(error)
    assert "unknown argument 'color'" in message
    assert "argument 'k'='many'" in message
    assert "missing required argument 'query'" in message
    assert "it takes: query, k" in message
    assert pickle.loads(pickle.dumps(error)).problems == error.problems


def test_arguments_that_are_not_an_object_are_a_tool_argument_error() -> None:
    with pytest.raises(ToolArgumentError):
        dspex.Tool(search).validate_args(["cats"])  # type: ignore[arg-type]


def test_function_with_kwargs_accepts_extra_arguments() -> None:
    def anything(query: str, **extra: object) -> str:
        """Take anything."""
        return f"{query}:{sorted(extra)}"

    assert dspex.Tool(anything)(query="q", a=1, b=2) == "q:['a', 'b']"


def test_async_tool_is_awaited_by_acall_and_run_to_completion_by_call() -> None:
    tool = dspex.Tool(double)
    assert asyncio.run(tool.acall(n=4)) == 8
    assert tool(n=5) == 10


def test_acall_runs_a_sync_tool_in_a_worker_thread() -> None:
    main = threading.get_ident()

    def where() -> int:
        """The thread it runs in."""
        return threading.get_ident()

    assert asyncio.run(dspex.Tool(where).acall()) != main


def test_tool_survives_pickle_and_deepcopy() -> None:
    tool = dspex.Tool(search)
    for clone in (pickle.loads(pickle.dumps(tool)), copy.deepcopy(tool)):
        assert clone.name == "search" and clone(query="x", k=1) == ["x-0"]


def test_tools_render_in_a_prompt_as_name_description_and_arguments() -> None:
    text = format_value([dspex.Tool(search)])
    assert '"name": "search"' in text and "Search the index" in text and '"k"' in text
    assert "function" not in text
    assert str(dspex.Tool(search)).startswith("search: Search the index for documents about a query.")


def test_function_call_shape_lists_required_arguments() -> None:
    shape = dspex.Tool(search).format_as_function_call()
    assert shape["function"]["name"] == "search"
    assert shape["function"]["parameters"]["required"] == ["query"]


def test_tool_start_and_end_callbacks_are_told() -> None:
    seen: list[str] = []

    class Recorder(dspex.BaseCallback):
        def on_tool_start(self, call_id, instance, inputs):  # type: ignore[no-untyped-def]
            seen.append(f"start {instance.name} {inputs}")

        def on_tool_end(self, call_id, outputs, exception):  # type: ignore[no-untyped-def]
            seen.append(f"end {outputs}")

    with dspex.context(callbacks=[Recorder()]):
        dspex.Tool(search)(query="a", k=1)
    assert seen == ["start search {'kwargs': {'query': 'a', 'k': 1}}", "end ['a-0']"]


# --- ToolCalls -----------------------------------------------------------------------


def test_from_dict_list_and_execute_against_a_tool_list() -> None:
    calls = dspex.ToolCalls.from_dict_list(
        [{"name": "search", "args": {"query": "cats", "k": 1}}, {"name": "double", "args": {"n": 2}}]
    )
    assert [c.name for c in calls.tool_calls] == ["search", "double"]
    tools = [dspex.Tool(search), dspex.Tool(double)]
    assert calls.execute(tools) == [["cats-0"], 4]
    assert asyncio.run(calls.aexecute(tools)) == [["cats-0"], 4]
    assert calls.tool_calls[0].execute({"search": search}) == ["cats-0"]


def test_execute_errors_are_typed() -> None:
    def broken(x: int) -> int:
        """Always fails."""
        raise KeyError("nothing here")

    call = dspex.ToolCalls.ToolCall(name="missing", args={})
    with pytest.raises(ToolNotFoundError, match="tool 'missing' not found"):
        call.execute([dspex.Tool(search)])
    with pytest.raises(ToolExecutionError, match="tool 'broken' raised KeyError") as caught:
        dspex.ToolCalls.ToolCall(name="broken", args={"x": 1}).execute([dspex.Tool(broken)])
    assert isinstance(caught.value.__cause__, KeyError)
    with pytest.raises(ToolArgumentError):
        dspex.ToolCalls.ToolCall(name="broken", args={"x": "one"}).execute([dspex.Tool(broken)])
    with pytest.raises(ToolArgumentError):
        asyncio.run(dspex.ToolCalls.ToolCall(name="broken", args={"y": 1}).aexecute([dspex.Tool(broken)]))


@pytest.mark.parametrize(
    "value",
    [
        [{"name": "search", "args": {"query": "a"}}],
        {"name": "search", "args": {"query": "a"}},
        {"tool_calls": [{"name": "search", "args": {"query": "a"}}]},
        [{"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"query": "a"}'}}],
        [{"id": "toolu_1", "type": "tool_use", "name": "search", "input": {"query": "a"}}],
    ],
)
def test_tool_calls_accept_dspex_openai_and_anthropic_shapes(value: object) -> None:
    calls = dspex.ToolCalls.model_validate(value)
    assert [(c.name, c.args) for c in calls.tool_calls] == [("search", {"query": "a"})]


def test_tool_calls_round_trip_through_an_output_field() -> None:
    class Plan(dspex.Signature):
        question: str = dspex.InputField()
        calls: dspex.ToolCalls = dspex.OutputField()

    spec = Plan.output_fields["calls"]
    assert "tool_calls" in type_hint(spec)
    parsed = parse_value('{"tool_calls": [{"name": "search", "args": {"query": "dogs"}}]}', spec)
    assert isinstance(parsed, dspex.ToolCalls) and parsed.tool_calls[0].args == {"query": "dogs"}
    assert format_value(parsed) == '{"tool_calls": [{"name": "search", "args": {"query": "dogs"}}]}'


def test_execute_without_tools_finds_the_function_among_the_callers_names() -> None:
    def shout(text: str) -> str:
        return text.upper()

    assert dspex.ToolCalls.ToolCall(name="shout", args={"text": "hi"}).execute() == "HI"
    assert dspex.ToolCalls.ToolCall(name="search", args={"query": "g", "k": 1}).execute() == ["g-0"]
    with pytest.raises(ToolNotFoundError):
        dspex.ToolCalls.ToolCall(name="nowhere", args={}).execute()


def test_lm_facing_schema_and_format_leave_out_ids_and_results() -> None:
    schema = pydantic.TypeAdapter(dspex.ToolCalls).json_schema()
    call_schema = schema["$defs"]["ToolCall"]
    assert "tool_call_results" not in schema["properties"]
    assert "id" not in call_schema["properties"] and call_schema["required"] == ["name", "args"]
    assert call_schema["properties"]["args"]["additionalProperties"] is True
    calls = dspex.ToolCalls(tool_calls=[dspex.ToolCalls.ToolCall(id="c1", name="search", args={"query": "a"})])
    assert calls.format() == {"tool_calls": [{"name": "search", "args": {"query": "a"}}]}


def test_a_call_with_a_malformed_function_value_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid function value"):
        dspex.ToolCalls.model_validate([{"id": "c1", "function": "search"}])


def test_tool_call_results_pair_values_with_calls() -> None:
    calls = dspex.ToolCalls(tool_calls=[dspex.ToolCalls.ToolCall(id="c1", name="search", args={"query": "a"})])
    results = dspex.ToolCallResults.from_tool_calls_and_values(calls, [["a-0"]], is_errors=[False])
    assert results.tool_call_results[0].model_dump() == {
        "call_id": "c1",
        "name": "search",
        "value": ["a-0"],
        "is_error": False,
    }
    with pytest.raises(ValueError, match="one value per call"):
        dspex.ToolCallResults.from_tool_calls_and_values(calls, [1, 2])
    assert dspex.ToolCallResults.model_validate({"name": "x", "value": 1}).tool_call_results[0].name == "x"
