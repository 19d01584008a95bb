"""Reading a streamed answer: server-sent events in, text deltas and one `LMResponse` out.

Both providers stream server-sent events (``data: <json>`` lines, Anthropic's with
``event: <type>`` lines before them). A decoder is fed the lines one at a time and
returns the text each adds; `finish` gives the whole answer as the `LMResponse` a
non-streamed request would have returned (text, tool calls, finish reason, usage).

An answer is whole only when its final event arrived: ``data: [DONE]`` for OpenAI
(after the usage chunk, asked for with ``stream_options.include_usage``),
``message_stop`` for Anthropic. A stream that ends before it raises
`LMStreamInterruptedError`; an event that is not JSON raises `LMResponseError`;
both are retryable. So a cut stream is never mistaken for a short answer.

No I/O here: decoders are tested on bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from dspex.clients.types import LMResponse, Output, Usage, completion_output
from dspex.errors import LMResponseError, LMServerError, LMStreamInterruptedError


class StreamDecoder(Protocol):
    done: bool

    def feed(self, line: bytes) -> str:
        """Take one line of the stream; return the answer text it adds ("" for none)."""
        ...

    def finish(self) -> LMResponse:
        """The whole answer; raises `LMStreamInterruptedError` when it never ended."""
        ...


def stream_params(protocol_name: str) -> dict[str, Any]:
    """What a request body needs to be answered as a stream (usage included)."""
    if protocol_name == "openai":
        return {"stream": True, "stream_options": {"include_usage": True}}
    return {"stream": True}


def decoder_for(protocol_name: str, model: str) -> StreamDecoder:
    if protocol_name == "anthropic":
        return AnthropicStreamDecoder(model)
    return OpenAIStreamDecoder(model)


def _event_data(line: bytes, model: str) -> Any:
    """The JSON of a ``data:`` line; None for other lines (comments, ``event:``, blanks)."""
    if not line.startswith(b"data:"):
        return None
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return _DONE
    try:
        return json.loads(payload)
    except ValueError as exc:
        raise LMResponseError(
            f"{model}: a streamed event is not JSON: {payload[:200]!r}", model=model
        ) from exc


_DONE = object()


@dataclass
class _ToolCallParts:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OpenAIStreamDecoder:
    """``chat.completion.chunk`` events, each choice's ``delta`` appended; ``[DONE]`` ends."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.done = False
        self._texts: dict[int, list[str]] = {}
        self._calls: dict[int, dict[int, _ToolCallParts]] = {}
        self._finish: dict[int, str | None] = {}
        self._usage = Usage(calls=1)

    def feed(self, line: bytes) -> str:
        data = _event_data(line, self.model)
        if data is None:
            return ""
        if data is _DONE:
            self.done = True
            return ""
        if not isinstance(data, dict):
            raise LMResponseError(f"{self.model}: a streamed event is not an object: {data!r:.200}", model=self.model)
        if isinstance(data.get("error"), dict):
            message = data["error"].get("message", "error event")
            raise LMServerError(f"{self.model}: the provider failed mid-stream: {message}", model=self.model)
        usage = data.get("usage")
        if isinstance(usage, dict):
            self._usage = Usage(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")), 1)
        added = ""
        for choice in data.get("choices") or ():
            index = _int(choice.get("index"))
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                self._texts.setdefault(index, []).append(text)
                if index == 0:
                    added += text
            for call in delta.get("tool_calls") or ():
                parts = self._calls.setdefault(index, {}).setdefault(_int(call.get("index")), _ToolCallParts())
                parts.id = call.get("id") or parts.id
                function = call.get("function") or {}
                parts.name += function.get("name") or ""
                parts.arguments.append(function.get("arguments") or "")
            if choice.get("finish_reason") is not None:
                self._finish[index] = choice["finish_reason"]
        return added

    def finish(self) -> LMResponse:
        if not self.done:
            raise LMStreamInterruptedError(
                f"{self.model}: the stream ended before 'data: [DONE]': the answer is incomplete",
                model=self.model,
            )
        indices = sorted(set(self._texts) | set(self._calls) | set(self._finish)) or [0]
        outputs: list[Output] = []
        for index in indices:
            text = "".join(self._texts.get(index, ()))
            calls = [
                {
                    "id": parts.id,
                    "type": "function",
                    "function": {"name": parts.name, "arguments": "".join(parts.arguments) or "{}"},
                }
                for _, parts in sorted(self._calls.get(index, {}).items())
            ]
            outputs.append(completion_output(text if text or not calls else None, calls))
        return LMResponse(outputs, self._usage, self.model, finish_reasons=[self._finish.get(i) for i in indices])


class AnthropicStreamDecoder:
    """Messages events: text and tool-input deltas per content block; ``message_stop`` ends."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.done = False
        self._blocks: dict[int, dict[str, Any]] = {}
        self._input_tokens = 0
        self._output_tokens = 0
        self._stop_reason: str | None = None

    def feed(self, line: bytes) -> str:
        data = _event_data(line, self.model)
        if data is None or data is _DONE:
            return ""
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "message_start":
            usage = (data.get("message") or {}).get("usage") or {}
            self._input_tokens = sum(
                _int(usage.get(k))
                for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            )
            self._output_tokens = _int(usage.get("output_tokens"))
        elif kind == "content_block_start":
            block = dict(data.get("content_block") or {})
            block.setdefault("text", "")
            block["partial_json"] = []
            self._blocks[_int(data.get("index"))] = block
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            block = self._blocks.setdefault(_int(data.get("index")), {"type": "text", "text": "", "partial_json": []})
            if delta.get("type") == "text_delta":
                text = str(delta.get("text") or "")
                block["text"] += text
                return text
            if delta.get("type") == "input_json_delta":
                block["partial_json"].append(str(delta.get("partial_json") or ""))
        elif kind == "message_delta":
            self._stop_reason = (data.get("delta") or {}).get("stop_reason") or self._stop_reason
            usage = data.get("usage") or {}
            if "output_tokens" in usage:
                self._output_tokens = _int(usage.get("output_tokens"))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            message = (data.get("error") or {}).get("message", "error event")
            raise LMServerError(f"{self.model}: the provider failed mid-stream: {message}", model=self.model)
        return ""

    def finish(self) -> LMResponse:
        if not self.done:
            raise LMStreamInterruptedError(
                f"{self.model}: the stream ended before 'message_stop': the answer is incomplete",
                model=self.model,
            )
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for _, block in sorted(self._blocks.items()):
            if block.get("type") == "tool_use":
                arguments = "".join(block["partial_json"]) or json.dumps(block.get("input") or {})
                calls.append(
                    {"id": block.get("id"), "type": "function", "function": {"name": block.get("name"), "arguments": arguments}}
                )
            else:
                texts.append(str(block.get("text") or ""))
        output = completion_output("".join(texts) if texts else None, calls)
        usage = Usage(self._input_tokens, self._output_tokens, 1)
        return LMResponse([output], usage, self.model, finish_reasons=[self._stop_reason])


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


__all__ = [
    "AnthropicStreamDecoder",
    "OpenAIStreamDecoder",
    "StreamDecoder",
    "decoder_for",
    "stream_params",
]
