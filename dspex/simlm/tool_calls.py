"""The simulated LM answering native tool requests (OpenAI ``tools`` and Anthropic
``tools``), the way a function-calling model does.

* A request that offers tools and has no tool results yet is answered with a
  tool call: the tool the agent (`dspex.simlm.agent.pick_tool`) would pick for the
  question (a tool the question names, listed or not, so the unknown-tool path can
  be exercised; else the listed tool whose name fits the question; else the one
  whose description shares the most words with it), with arguments taken from
  the question. With no fitting tool the model answers in text, as usual.
  ``tool_choice`` naming one tool forces that tool; ``"required"``/``"any"`` forces
  some tool (the first listed when none fits); ``"none"`` forces text.
* A request whose last turn holds tool results (OpenAI ``role: "tool"``
  messages, Anthropic ``tool_result`` blocks) is answered in text: the results
  become the trajectory's observations, so the answer (in the prompt's format)
  is what the tools returned.

The question is the prompt's ``question`` section or element (else its first
input section or element, else the last user text without its request line).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dspex.errors import SimLMRequestError
from dspex.simlm import agent, oracle
from dspex.simlm.oracle import OracleConfig
from dspex.simlm.prompt import Message, ParsedPrompt, message_text, parse

_WORD = re.compile(r"[a-z]{4,}")
_ELEMENT = re.compile(r"<(\w+)>\s*(.*?)\s*</\1>", re.DOTALL)
_COMMON_WORDS = frozenset(
    {"what", "which", "when", "where", "does", "this", "that", "with", "from", "given", "return",
     "returns", "about", "tool", "function", "value", "input", "will", "there", "their", "into"}
)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One offered tool, whichever protocol offered it."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NativeCall:
    """One tool call of a reply. ``arguments_text`` is what goes on the wire: the JSON
    of ``arguments``, or a spoiled copy when a malformed-content fault hit the reply."""

    id: str
    name: str
    arguments: dict[str, Any]
    arguments_text: str


@dataclass(frozen=True, slots=True)
class ToolTurns:
    """The tool part of a request: what it offers and any results it ends with."""

    tools: tuple[ToolSpec, ...] = ()
    choice: Any = None
    #: texts of the tool results the conversation ends with (empty: none yet)
    results: tuple[str, ...] = ()
    #: how many trailing messages hold those results (left out of the prompt's parse)
    result_messages: int = 0


# --- reading requests --------------------------------------------------------------------


def openai_turns(data: Mapping[str, Any]) -> ToolTurns:
    """Tools, tool_choice and trailing ``role: "tool"`` results of a chat completions body."""
    tools = tuple(_openai_tool(t, i) for i, t in enumerate(_list(data.get("tools"), "tools")))
    results: list[str] = []
    for message in reversed(data.get("messages") or []):
        if not (isinstance(message, dict) and message.get("role") == "tool"):
            break
        results.insert(0, message_text(message.get("content")))
    return ToolTurns(tools, _checked_choice(data.get("tool_choice"), tools), tuple(results), len(results))


def anthropic_turns(data: Mapping[str, Any]) -> ToolTurns:
    """Tools, tool_choice and a final user turn of ``tool_result`` blocks of a Messages body."""
    tools = tuple(_anthropic_tool(t, i) for i, t in enumerate(_list(data.get("tools"), "tools")))
    messages = data.get("messages") or []
    last = messages[-1] if messages else None
    content = last.get("content") if isinstance(last, dict) and last.get("role") == "user" else None
    results = tuple(
        _result_text(block.get("content"))
        for block in content or ()
        if isinstance(content, list) and isinstance(block, dict) and block.get("type") == "tool_result"
    )
    return ToolTurns(tools, _checked_choice(data.get("tool_choice"), tools), results, 1 if results else 0)


def _checked_choice(choice: Any, tools: tuple[ToolSpec, ...]) -> Any:
    kind = _choice_kind(choice)
    if kind not in (None, "auto", "required", "any", "none") and kind not in {t.name for t in tools}:
        raise SimLMRequestError(f"tool_choice names {kind!r}, which is not among the tools")
    return choice


def _list(value: Any, name: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SimLMRequestError(f"'{name}' must be a list")
    return value


def _openai_tool(tool: Any, index: int) -> ToolSpec:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not (isinstance(tool, dict) and tool.get("type") == "function" and isinstance(function, dict)):
        raise SimLMRequestError(f"tools[{index}] must be {{\"type\": \"function\", \"function\": {{...}}}}")
    return _spec(function.get("name"), function.get("description"), function.get("parameters"), index)


def _anthropic_tool(tool: Any, index: int) -> ToolSpec:
    if not isinstance(tool, dict):
        raise SimLMRequestError(f"tools.{index}: must be an object with name and input_schema")
    if "input_schema" not in tool:
        raise SimLMRequestError(f"tools.{index}.input_schema: Field required")
    return _spec(tool.get("name"), tool.get("description"), tool.get("input_schema"), index)


def _spec(name: Any, description: Any, parameters: Any, index: int) -> ToolSpec:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise SimLMRequestError(f"tools[{index}] needs a name of letters, digits, _ or - (got {name!r})")
    if parameters is not None and not isinstance(parameters, dict):
        raise SimLMRequestError(f"tools[{index}] parameters must be a JSON schema object")
    return ToolSpec(name, description if isinstance(description, str) else "", parameters or {})


def _result_text(content: Any) -> str:
    return content if isinstance(content, str) else message_text(content)


# --- answering ---------------------------------------------------------------------------


def native_reply(
    messages: list[Message],
    turns: ToolTurns,
    *,
    json_requested: bool,
    schema: dict[str, Any] | None,
    rng: random.Random,
    config: OracleConfig,
    call_key: bytes,
) -> tuple[str | None, tuple[NativeCall, ...]] | None:
    """The reply to a request that offers tools: (text, tool calls), or None when the
    ordinary text answer applies (nothing offered, no fitting tool)."""
    if not turns.tools:
        return None
    kept = messages[: len(messages) - turns.result_messages] if turns.result_messages else messages
    prompt = parse(kept, json_requested=json_requested, schema=schema)
    if turns.results:
        return _answer_from_results(prompt, turns.results, rng, config), ()
    if _choice_kind(turns.choice) == "none":
        return None
    picked = _pick(turns, _question(prompt, kept))
    if picked is None:
        return None
    name, arguments = picked
    ident = "call_" + hashlib.blake2b(call_key + name.encode(), digest_size=9).hexdigest()
    text = json.dumps(arguments, ensure_ascii=False)
    return None, (NativeCall(ident, name, arguments, text),)


def spoiled(call: NativeCall) -> NativeCall:
    """The call with its arguments cut in half (a malformed-content fault): not JSON."""
    text = call.arguments_text
    return NativeCall(call.id, call.name, call.arguments, text[: max(1, len(text) // 2)])


def _answer_from_results(
    prompt: ParsedPrompt, results: tuple[str, ...], rng: random.Random, config: OracleConfig
) -> str:
    if not prompt.system.outputs:
        return results[-1]
    # The results read as an agent's observations: the oracle answers with what they hold.
    start = len(agent.observations(prompt.inputs))
    for offset, result in enumerate(results):
        prompt.inputs[f"observation_{start + offset}"] = result
    return oracle.reply(prompt, rng, config)


def _pick(turns: ToolTurns, question: str) -> tuple[str, dict[str, Any]] | None:
    by_name = {t.name: t for t in turns.tools}
    schemas = {t.name: _properties(t) for t in turns.tools}
    forced = _choice_kind(turns.choice)
    if forced not in (None, "auto", "required", "any", "none"):
        return by_name[forced].name, _arguments_for(forced, schemas, question)
    picked = agent.pick_tool(question, schemas)
    if picked is not None:
        return picked
    tool = _by_description(turns.tools, question)
    if tool is None and forced in ("required", "any"):
        tool = turns.tools[0]
    if tool is None:
        return None
    return tool.name, _arguments_for(tool.name, schemas, question)


def _arguments_for(name: str, schemas: dict[str, dict[str, Any]], question: str) -> dict[str, Any]:
    picked = agent.pick_tool(question, schemas, forced=name)
    return picked[1] if picked is not None else {}


def _properties(tool: ToolSpec) -> dict[str, Any]:
    properties = tool.parameters.get("properties")
    return properties if isinstance(properties, dict) else {}


def _by_description(tools: tuple[ToolSpec, ...], question: str) -> ToolSpec | None:
    words = set(_WORD.findall(question.lower())) - _COMMON_WORDS
    best, best_score = None, 0
    for tool in tools:
        score = len(words & (set(_WORD.findall(tool.description.lower())) - _COMMON_WORDS))
        if score > best_score:
            best, best_score = tool, score
    return best


def _choice_kind(choice: Any) -> str | None:
    """"auto", "none", "required"/"any", a forced tool's name, or None (not given)."""
    if choice is None or isinstance(choice, str):
        return choice
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "function":
            function = choice.get("function")
            return function.get("name") if isinstance(function, dict) else None
        if kind == "tool":
            return choice.get("name")
        return kind
    raise SimLMRequestError(f"'tool_choice' must be a string or an object, got {choice!r}")


def _question(prompt: ParsedPrompt, messages: list[Message]) -> str:
    if "question" in prompt.inputs:
        return prompt.inputs["question"]
    for value in prompt.inputs.values():
        return value
    text = next((text for role, text in reversed(messages) if role == "user"), "")
    elements = dict(_ELEMENT.findall(text))  # the XMLAdapter writes inputs as elements
    if elements:
        return elements.get("question") or next(iter(elements.values()))
    head, sep, tail = text.strip().rpartition("\n\n")
    return head if sep and tail.startswith(("Respond", "Reply")) else text


__all__ = [
    "NativeCall",
    "ToolSpec",
    "ToolTurns",
    "anthropic_turns",
    "native_reply",
    "openai_turns",
    "spoiled",
]
