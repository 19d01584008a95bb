"""The wire formats the simulated LM speaks: OpenAI chat completions and the
Anthropic Messages API. Each turns a request body into a `CompletionRequest`
and completions back into that API's response and error shapes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import SimLMRequestError
from dspex.simlm.media import MediaPart, anthropic_media, openai_media
from dspex.simlm.prompt import Message, message_text
from dspex.simlm.tool_calls import NativeCall, ToolTurns, anthropic_turns, openai_turns

_MAX_N = 128
_OPENAI_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "user",
}


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    messages: list[Message]
    model: str
    n: int = 1
    temperature: float = 1.0
    max_tokens: int | None = None
    seed: int | None = None
    json_requested: bool = False
    schema: dict[str, Any] | None = None
    #: offered tools and trailing tool results (native tool calling)
    tool_turns: ToolTurns = field(default_factory=ToolTurns)
    #: images, audio and files the messages carry (the reply is read from the text)
    media: tuple[MediaPart, ...] = ()


@dataclass(frozen=True, slots=True)
class Choice:
    text: str
    finish: str  # "stop" | "length" | "tool_calls"
    tool_calls: tuple[NativeCall, ...] = ()


@dataclass(frozen=True, slots=True)
class Protocol:
    name: str
    parse: Callable[[bytes], CompletionRequest]
    render: Callable[[CompletionRequest, list[Choice], str, int, int], dict[str, Any]]


def json_response(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


# --- shared validation ---------------------------------------------------------


def _load(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SimLMRequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SimLMRequestError("request body must be a JSON object")
    return data


def _int(
    data: dict[str, Any], name: str, default: int | None, low: int, high: int | None = None
) -> int | None:
    value = data.get(name)
    if value is None:
        return default
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f" and at most {high}" if high is not None else ""
        raise SimLMRequestError(f"'{name}' must be an integer at least {low}{bound}, got {value!r}")
    return value


def _temperature(data: dict[str, Any]) -> float:
    value = data.get("temperature", 1.0)
    if value is None:
        return 1.0
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 2:
        raise SimLMRequestError(f"'temperature' must be a number between 0 and 2, got {value!r}")
    return float(value)


def _messages(raw: Any, roles: dict[str, str]) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise SimLMRequestError("'messages' must be a non-empty list of {role, content} objects")
    out: list[Message] = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict) or message.get("role") not in roles:
            raise SimLMRequestError(f"messages[{i}] needs a 'role' in {sorted(roles)}")
        if "content" not in message and not message.get("tool_calls"):
            raise SimLMRequestError(f"messages[{i}] has no 'content'")
        out.append((roles[message["role"]], message_text(message["content"])))
    return out


def _media(raw: list[Any], read: Callable[[Any, str], list[MediaPart]]) -> tuple[MediaPart, ...]:
    """Every image, audio clip and file the messages carry (400 on an invalid one)."""
    return tuple(
        part
        for i, message in enumerate(raw)
        if isinstance(message, dict) and isinstance(message.get("content"), list)
        for part in read(message["content"], f"messages[{i}]")
    )


# --- OpenAI ------------------------------------------------------------------------


def parse_openai(body: bytes) -> CompletionRequest:
    data = _load(body)
    if "messages" not in data:
        raise SimLMRequestError("missing required field 'messages'")
    response_format = data.get("response_format") or {}
    if not isinstance(response_format, dict):
        raise SimLMRequestError("'response_format' must be an object")
    kind = response_format.get("type")
    schema = (
        (response_format.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
    )
    max_tokens = _int(data, "max_completion_tokens", None, 1)
    return CompletionRequest(
        messages=_messages(data["messages"], _OPENAI_ROLES),
        model=str(data.get("model") or "sim-lm"),
        n=_int(data, "n", 1, 1, _MAX_N) or 1,
        temperature=_temperature(data),
        max_tokens=max_tokens if max_tokens is not None else _int(data, "max_tokens", None, 1),
        seed=_int(data, "seed", None, -(2**63)),
        json_requested=kind in ("json_schema", "json_object"),
        schema=schema if isinstance(schema, dict) else None,
        tool_turns=openai_turns(data),
        media=_media(data["messages"], openai_media),
    )


def render_openai(
    request: CompletionRequest,
    choices: list[Choice],
    ident: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-sim{ident}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": i,
                "message": _openai_message(c),
                "finish_reason": c.finish,
                "logprobs": None,
            }
            for i, c in enumerate(choices)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": "sim-lm",
    }


def _openai_message(choice: Choice) -> dict[str, Any]:
    if not choice.tool_calls:
        return {"role": "assistant", "content": choice.text}
    return {
        "role": "assistant",
        "content": choice.text or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_text},
            }
            for call in choice.tool_calls
        ],
    }


# --- Anthropic ---------------------------------------------------------------------


def parse_anthropic(body: bytes) -> CompletionRequest:
    data = _load(body)
    if "messages" not in data:
        raise SimLMRequestError("messages: Field required")
    if data.get("max_tokens") is None:
        raise SimLMRequestError("max_tokens: Field required")
    system = message_text(data.get("system"))
    messages = _messages(data["messages"], {"user": "user", "assistant": "assistant"})
    return CompletionRequest(
        messages=([("system", system)] if system else []) + messages,
        model=str(data.get("model") or "sim-lm"),
        temperature=_temperature(data),
        max_tokens=_int(data, "max_tokens", None, 1),
        tool_turns=anthropic_turns(data),
        media=_media(data["messages"], anthropic_media),
    )


def render_anthropic(
    request: CompletionRequest,
    choices: list[Choice],
    ident: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    choice = choices[0]
    return {
        "id": f"msg_sim{ident}",
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": _anthropic_blocks(choice),
        "stop_reason": {"length": "max_tokens", "tool_calls": "tool_use"}.get(choice.finish, "end_turn"),
        "stop_sequence": None,
        "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
    }


def _anthropic_blocks(choice: Choice) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if choice.text or not choice.tool_calls:
        blocks.append({"type": "text", "text": choice.text})
    for call in choice.tool_calls:
        try:
            arguments: Any = json.loads(call.arguments_text)
        except json.JSONDecodeError:
            arguments = call.arguments_text  # a malformed-content fault: not an object
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return blocks


PROTOCOLS: dict[tuple[str, str], Protocol] = {
    ("POST", "/v1/chat/completions"): Protocol("openai", parse_openai, render_openai),
    ("POST", "/v1/messages"): Protocol("anthropic", parse_anthropic, render_anthropic),
}


# --- errors ------------------------------------------------------------------------

_OPENAI_ERRORS = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    503: ("server_error", "service_unavailable"),
}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_response(protocol: str, status: int, message: str) -> dict[str, Any]:
    """An error body in the shape the protocol's clients expect."""
    if protocol == "anthropic":
        kind = _ANTHROPIC_ERRORS.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        return {"type": "error", "error": {"type": kind, "message": message}}
    kind, code = _OPENAI_ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", str(status))
    )
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


def models_response(model: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": 0, "owned_by": "dspex"}],
    }
