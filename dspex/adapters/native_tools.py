"""Native function calling, shared by every adapter (Chat, JSON, XML).

With ``use_native_function_calling=True`` a signature that has a tools input
field (``list[Tool]`` or ``Tool``) and a `ToolCalls` output field is sent the
provider's own way:

* before formatting (`plan_native_tools`), both fields leave the signature the
  prompt is written from, and the tools go into the request's ``tools`` param
  (OpenAI's function shape; the Anthropic protocol converts it);
* after the call (`read_native_output`), the reply's tool calls become the
  `ToolCalls` value of the output field, and any text is parsed for the other
  output fields. A reply that holds tool calls is not failed for text that does
  not parse: the calls are what the model answered with, and the fields it left
  out are None (or their defaults).

With the option off, tools and tool calls are ordinary text fields, and tool
params a caller passed are dropped (so the request does not advertise tools the
prompt also lists). An LM that says it cannot call functions
(``supports_function_calling`` False, the default of a custom `BaseLM`) is also
prompted the text way.

Tool calls are read leniently, as the model wrote them: a call naming a tool that
was not offered, or whose arguments are not a JSON object, still comes back in
the `ToolCalls` (the second with ``args_error`` set). Running it raises the typed
error (`ToolNotFoundError`, `ToolArgumentError`), which an agent loop shows the
model, instead of the whole prediction failing on one bad call.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dspex.adapters.types.tool import Tool, ToolCallResults, ToolCalls
from dspex.clients.types import Message, Output, output_text, output_tool_calls
from dspex.errors import AdapterParseError, SignatureError
from dspex.signatures.signature import SignatureMeta

if TYPE_CHECKING:
    from dspex.adapters.base import Adapter

TOOL_PARAMS = ("tools", "tool_choice", "parallel_tool_calls")


@dataclass(frozen=True, slots=True)
class NativeToolPlan:
    """What `plan_native_tools` took out of the signature, to put back after the call."""

    original: SignatureMeta
    tools_field: str
    calls_field: str


def tools_input_field(signature: SignatureMeta) -> str | None:
    """The first input field typed ``list[Tool]`` or ``Tool``."""
    for name, spec in signature.input_fields.items():
        annotation = spec.annotation
        if annotation is Tool:
            return name
        if typing.get_origin(annotation) is list and typing.get_args(annotation)[:1] == (Tool,):
            return name
    return None


def tool_calls_output_field(signature: SignatureMeta) -> str | None:
    """The first output field typed `ToolCalls`."""
    for name, spec in signature.output_fields.items():
        if spec.annotation is ToolCalls:
            return name
    return None


def plan_native_tools(
    adapter: Adapter,
    lm: Any,
    lm_kwargs: dict[str, Any],
    signature: SignatureMeta,
    inputs: Mapping[str, Any],
) -> tuple[SignatureMeta, NativeToolPlan | None]:
    """The signature to write the prompt from, and the plan (None: nothing is native).
    Adds the tools to ``lm_kwargs`` (or drops tool params when native calling is off)."""
    if not adapter.use_native_function_calling:
        for key in TOOL_PARAMS:
            lm_kwargs.pop(key, None)
        return signature, None
    calls_field = tool_calls_output_field(signature)
    if calls_field is None:
        return signature, None
    tools_field = tools_input_field(signature)
    if tools_field is None:
        raise SignatureError(
            f"output field {calls_field!r} (ToolCalls) receives the model's tool calls, but the "
            "signature has no tools to offer: add an input field typed list[dspex.Tool]"
        )
    if not getattr(lm, "supports_function_calling", False):
        return signature, None
    lm_kwargs["tools"] = [tool.format_as_function_call() for tool in _tools(inputs.get(tools_field), tools_field)]
    if adapter.parallel_tool_calls is not None and lm_kwargs.get("parallel_tool_calls") is None:
        lm_kwargs["parallel_tool_calls"] = adapter.parallel_tool_calls
    if lm_kwargs.get("parallel_tool_calls") is not None:
        # The parallel option only applies when the model chooses its calls itself.
        lm_kwargs.setdefault("tool_choice", "auto")
    prompt_signature = signature.delete(calls_field).delete(tools_field)
    return prompt_signature, NativeToolPlan(signature, tools_field, calls_field)


def _tools(value: Any, field: str) -> list[Tool]:
    items = value if isinstance(value, (list, tuple)) else [value]
    tools: list[Tool] = []
    for item in items:
        if isinstance(item, Tool):
            tools.append(item)
        elif callable(item):
            tools.append(Tool(item))
        else:
            raise SignatureError(
                f"input {field!r} must be a list of dspex.Tool (or functions), got an item "
                f"{item!r:.100} of type {type(item).__name__}"
            )
    return tools


def read_native_output(
    adapter: Adapter,
    signature: SignatureMeta,
    output: Output,
    plan: NativeToolPlan,
    parse: Callable[[SignatureMeta, str], dict[str, Any]],
) -> dict[str, Any]:
    """One completion of a native call as values of every output field of the original
    signature (``signature`` is the one the prompt was written from)."""
    from dspex.adapters.base import REQUIRED, missing_output_value

    text = output_text(output)
    calls = output_tool_calls(output)
    if calls:
        values: dict[str, Any] = {}
        if text and signature.output_fields:
            try:
                values = parse(signature, text)
            except AdapterParseError:
                values = {}  # the calls are the answer; free text beside them is not a failure
    elif text:
        values = parse(signature, text)
    else:
        raise AdapterParseError(
            "the LM returned neither text nor tool calls",
            raw_text="",
            signature=plan.original,
            adapter_name=type(adapter).__name__,
        )
    for name, spec in plan.original.output_fields.items():
        if name not in values:
            fallback = missing_output_value(spec)
            values[name] = None if fallback is REQUIRED else fallback
    values[plan.calls_field] = ToolCalls.from_dict_list(calls) if calls else None
    return {name: values[name] for name in plan.original.output_fields}


# --- tool calls in a conversation history ------------------------------------------------


def tool_calls_in(entry: Mapping[str, Any]) -> ToolCalls | None:
    """The `ToolCalls` a history message holds (as the object or its dict form), if any."""
    for value in entry.values():
        if isinstance(value, ToolCalls):
            return value
        if isinstance(value, Mapping) and "tool_calls" in value:
            return ToolCalls.model_validate(dict(value))
    return None


def tool_call_results_of(calls: ToolCalls | None) -> ToolCallResults | None:
    if calls is None or calls.tool_call_results is None:
        return None
    return ToolCallResults.model_validate(calls.tool_call_results)


def without_results(value: Any) -> Any:
    """``value`` without tool-call results when it is a `ToolCalls` (or its dict form)."""
    if isinstance(value, ToolCalls) and value.tool_call_results is not None:
        return value.model_copy(update={"tool_call_results": None})
    if isinstance(value, Mapping) and "tool_calls" in value and "tool_call_results" in value:
        return {k: v for k, v in value.items() if k != "tool_call_results"}
    return value


def native_history_turns(
    adapter: Adapter, signature: SignatureMeta, entry: Mapping[str, Any], calls: ToolCalls
) -> list[Message]:
    """An earlier step of a native tool-calling conversation as the provider's turns: the
    assistant's other outputs with its ``tool_calls``, then a ``role: "tool"`` message
    per result. Calls whose results do not match them one to one by id are left out (a
    provider rejects a call without its result), keeping only the text outputs."""
    results = tool_call_results_of(calls)
    if results is not None:
        call_ids = [call.id for call in calls.tool_calls]
        result_ids = [result.call_id for result in results.tool_call_results]
        if call_ids != result_ids or not all(call_ids):
            results = None
    outputs = {
        name: entry[name]
        for name in signature.output_fields
        if entry.get(name) is not None and not isinstance(entry[name], ToolCalls)
    }
    content = adapter.assistant_message(signature, outputs) if outputs else ""
    turns: list[Message] = []
    if content or results is not None:
        assistant: Message = {"role": "assistant", "content": content or None}
        if results is not None:
            assistant["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.args, ensure_ascii=False, default=str)},
                }
                for call in calls.tool_calls
            ]
        turns.append(assistant)
    for result in results.tool_call_results if results is not None else ():
        value = result.value
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        turns.append({"role": "tool", "tool_call_id": result.call_id, "name": result.name, "content": text})
    return turns
