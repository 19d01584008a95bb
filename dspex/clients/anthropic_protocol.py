"""The Anthropic Messages protocol: ``POST {api_base}/messages``.

Differences from Chat Completions that this module absorbs:
- system messages move to the top-level ``system`` field;
- ``max_tokens`` is required (default `DEFAULT_MAX_TOKENS`);
- ``stop`` is called ``stop_sequences``;
- there is no ``n``: the LM client fans ``n > 1`` out into parallel requests;
- ``response_format`` and ``seed`` do not exist: they are left out of the body
  (adapters parse the text reply either way), with a one-time warning;
- OpenAI-style ``image_url`` content parts become Anthropic ``image`` blocks and
  ``file`` parts ``document`` blocks (PDF, plain text, or an uploaded file's id);
  audio parts are refused (`UnsupportedMediaError`): the API takes no audio;
- native tool calling: OpenAI-shaped ``tools`` become ``{name, description,
  input_schema}``, ``tool_choice``/``parallel_tool_calls`` become Anthropic's
  ``tool_choice``; an assistant message's ``tool_calls`` become ``tool_use`` blocks
  and ``role: "tool"`` results become a user turn of ``tool_result`` blocks; a
  reply's ``tool_use`` blocks come back as OpenAI-shaped tool calls, so adapters
  read one shape whichever provider answered.
"""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.clients.openai_protocol import decode_json, encode_json, error_from_response
from dspex.clients.transport import HTTPResponse
from dspex.clients.types import LMResponse, Message, Usage, completion_output
from dspex.errors import ConfigurationError, LMResponseError, UnsupportedMediaError

ANTHROPIC_VERSION = "2023-06-01"
FILES_BETA = "files-api-2025-04-14"
DEFAULT_MAX_TOKENS = 4096
_UNSUPPORTED = ("response_format", "seed", "n")
_warned: set[str] = set()


class AnthropicProtocol:
    name = "anthropic"
    default_api_base = "https://api.anthropic.com/v1"
    api_key_env = "ANTHROPIC_API_KEY"
    api_base_envs = ("ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL")
    supports_n = False

    def build_request(
        self,
        *,
        api_base: str,
        model_name: str,
        messages: Sequence[Message],
        params: Mapping[str, Any],
        api_key: str | None,
    ) -> tuple[str, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        system, turns = split_system(messages)
        if _refers_to_uploaded_files(turns):
            headers["anthropic-beta"] = FILES_BETA  # documents by file_id are in beta
        body: dict[str, Any] = {"model": model_name, "messages": turns}
        if system:
            body["system"] = system
        body["max_tokens"] = DEFAULT_MAX_TOKENS
        tool_params = {k: params.get(k) for k in _TOOL_PARAMS}
        if tool_params["tools"]:
            body["tools"] = [anthropic_tool(tool) for tool in tool_params["tools"]]
            choice = anthropic_tool_choice(tool_params["tool_choice"], tool_params["parallel_tool_calls"])
            if choice is not None:
                body["tool_choice"] = choice
        for name, value in params.items():
            if value is None or name in _TOOL_PARAMS:
                continue
            if name in _UNSUPPORTED:
                _warn_once(name)
            elif name == "stop":
                body["stop_sequences"] = [value] if isinstance(value, str) else list(value)
            else:
                body[name] = value
        return api_base.rstrip("/") + "/messages", headers, encode_json(body)

    def parse_response(self, http: HTTPResponse, *, model: str) -> LMResponse:
        if http.status != 200:
            raise error_from_response(http, model=model, key_env=self.api_key_env)
        data = decode_json(http, model=model)
        blocks = data.get("content")
        texts = [
            b["text"]
            for b in blocks or ()
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        ]
        tool_calls = [
            openai_tool_call(b, model=model)
            for b in blocks or ()
            if isinstance(b, dict) and b.get("type") == "tool_use"
        ]
        if not isinstance(blocks, list) or not (texts or tool_calls):
            raise LMResponseError(
                f"{model}: the response has no text content and no tool use: {http.body[:500]!r}",
                model=model,
            )
        usage = data.get("usage") or {}
        # Cached prompt tokens are still prompt tokens (billed at other rates: advisory cost).
        prompt = sum(
            _int(usage.get(k))
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        return LMResponse(
            outputs=[completion_output("".join(texts) if texts else None, tool_calls)],
            usage=Usage(
                prompt_tokens=prompt, completion_tokens=_int(usage.get("output_tokens")), calls=1
            ),
            model=model,
            finish_reasons=[data.get("stop_reason")],
        )


def split_system(messages: Sequence[Message]) -> tuple[str, list[Message]]:
    """The joined system text, and the other messages converted to Anthropic content
    (tool calls and tool results included; consecutive results share one user turn)."""
    system: list[str] = []
    turns: list[Message] = []
    for message in messages:
        content = message.get("content")
        role = message.get("role")
        if role == "system":
            system.append(_plain_text(content))
        elif role == "tool":
            block = _tool_result_block(message)
            last = turns[-1] if turns else None
            if last is not None and last.get("role") == "user" and _is_tool_results(last):
                last["content"].append(block)
            else:
                turns.append({"role": "user", "content": [block]})
        elif role == "assistant" and message.get("tool_calls"):
            turns.append({"role": "assistant", "content": _tool_use_blocks(message)})
        else:
            turns.append({**message, "content": _convert_content(content)})
    return "\n\n".join(s for s in system if s), turns


# --- native tool calling ---------------------------------------------------------------

_TOOL_PARAMS = ("tools", "tool_choice", "parallel_tool_calls")


def anthropic_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI-shaped tool (``{"type": "function", "function": {...}}``) as an
    Anthropic tool; one already in Anthropic's shape is sent as it is."""
    function = tool.get("function")
    if not isinstance(function, Mapping):
        return dict(tool)
    spec: dict[str, Any] = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        spec["description"] = function["description"]
    return spec


def anthropic_tool_choice(choice: Any, parallel: bool | None) -> dict[str, Any] | None:
    """OpenAI's ``tool_choice`` ("auto", "required", "none" or one named function) and
    ``parallel_tool_calls`` as Anthropic's ``tool_choice`` object."""
    if isinstance(choice, Mapping) and choice.get("type") in ("auto", "any", "tool", "none"):
        result = dict(choice)  # already Anthropic's shape
    elif isinstance(choice, Mapping):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else choice.get("name")
        result = {"type": "tool", "name": name}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "none":
        result = {"type": "none"}
    elif choice in (None, "auto"):
        result = {"type": "auto"} if choice == "auto" or parallel is False else None
    else:
        raise ConfigurationError(
            f"tool_choice={choice!r} is not one of 'auto', 'required', 'none' or "
            "{'type': 'function', 'function': {'name': ...}}"
        )
    if parallel is False and result is not None and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result


def openai_tool_call(block: Mapping[str, Any], *, model: str) -> dict[str, Any]:
    """A ``tool_use`` block as an OpenAI-shaped tool call (arguments as JSON text)."""
    name = block.get("name")
    if not isinstance(name, str) or not name:
        raise LMResponseError(f"{model}: a tool_use block has no name: {dict(block)!r:.300}", model=model)
    arguments = block.get("input")
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {
            "name": name,
            "arguments": json.dumps({} if arguments is None else arguments, ensure_ascii=False),
        },
    }


def _tool_use_blocks(message: Message) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = _plain_text(message.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                arguments = {}  # Anthropic takes an object; the original text is not one
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": arguments if isinstance(arguments, dict) else {},
            }
        )
    return blocks


def _tool_result_block(message: Message) -> dict[str, Any]:
    return {
        "type": "tool_result",
        "tool_use_id": message.get("tool_call_id"),
        "content": _plain_text(message.get("content")),
    }


def _is_tool_results(turn: Message) -> bool:
    content = turn.get("content")
    return isinstance(content, list) and all(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def _plain_text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return "" if content is None else str(content)


def _convert_content(content: Any) -> Any:
    if not isinstance(content, list):
        return content
    return [_convert_part(part) for part in content]


def _convert_part(part: Any) -> Any:
    """One OpenAI-shaped content part as Anthropic takes it: ``image_url`` -> ``image``,
    ``file`` -> ``document``; audio, which Anthropic does not take, is refused."""
    if not isinstance(part, dict):
        return part
    kind = part.get("type")
    if kind == "image_url":
        return _image_block(part)
    if kind == "file":
        return _document_block(part.get("file") or {})
    if kind == "input_audio":
        raise UnsupportedMediaError(
            "Anthropic's Messages API takes no audio input, so a request with dspex.Audio cannot "
            "be sent to an anthropic/ model; use a model that takes audio (openai/gpt-4o-audio-preview) "
            "or send a transcript as text"
        )
    return part


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url", "") if isinstance(image, dict) else str(image)
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if not url.startswith(("http://", "https://")):
        raise UnsupportedMediaError(
            f"Anthropic fetches images only from http(s) URLs, not {url.split(':', 1)[0]}:// ones; "
            "load the image here (dspex.Image.from_url or from_path) so its bytes are sent"
        )
    return {"type": "image", "source": {"type": "url", "url": url}}


def _document_block(file: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI ``file`` part as a ``document`` block: a PDF as base64, plain text as
    text, an uploaded file by its id (Anthropic's Files API)."""
    data = file.get("file_data")
    block: dict[str, Any]
    if isinstance(data, str) and data.startswith("data:") and ";base64," in data:
        media_type, payload = data[5:].split(";base64,", 1)
        media_type = media_type.split(";", 1)[0].lower()
        if media_type == "application/pdf":
            block = {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": payload}}
        elif media_type.startswith("text/"):
            text = base64.b64decode(payload).decode("utf-8", errors="replace")
            block = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
        else:
            raise UnsupportedMediaError(
                f"Anthropic takes PDF and plain-text documents; this file is {media_type}. "
                "Convert it, or send it to a provider that takes it"
            )
    elif file.get("file_id"):
        block = {"type": "document", "source": {"type": "file", "file_id": file["file_id"]}}
    else:
        raise UnsupportedMediaError("a dspex.File with neither file_data nor file_id cannot be sent to Anthropic")
    if file.get("filename"):
        block["title"] = file["filename"]
    return block


def _refers_to_uploaded_files(turns: list[Message]) -> bool:
    return any(
        isinstance(block, dict) and (block.get("source") or {}).get("type") == "file"
        for turn in turns
        if isinstance(turn.get("content"), list)
        for block in turn["content"]
    )


def _warn_once(param: str) -> None:
    if param == "n" or param in _warned:
        return  # n is handled by the LM client's fan-out, not an omission
    _warned.add(param)
    warnings.warn(
        f"dspex: the Anthropic Messages API has no '{param}' parameter; it is left out of the request",
        stacklevel=3,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0
