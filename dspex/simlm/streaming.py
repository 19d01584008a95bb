"""The simulated LM's streamed answers (``"stream": true``), for both wire formats.

The answer is computed as for a plain request (same oracle, faults and stats), then
written as server-sent events the way each provider writes them:

- OpenAI: ``chat.completion.chunk`` events (a role delta, content deltas, a last
  chunk with ``finish_reason``, a usage chunk with empty ``choices`` when the request
  asked ``stream_options.include_usage``), then ``data: [DONE]``;
- Anthropic: ``message_start`` (input tokens), ``content_block_start`` /
  ``content_block_delta`` / ``content_block_stop`` per block, ``message_delta``
  (stop reason, output tokens), ``message_stop``.

Chunking is configurable (`StreamSettings`: ``chunk_chars=0`` splits before each
word, as tokens often fall; N > 0 cuts every N characters; ``chunk_delay_ms`` paces
the chunks), per server or through ``POST /admin/stream``. The fault config's
``stream_cut_after`` closes the connection after that many content chunks (of the
first ``stream_cut_first`` attempts of a body, 0: of every attempt), so clients can
be tested against a stream that breaks off mid-answer.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_WORD_START = re.compile(r"\s*\S+|\s+$")


class StreamSettings(BaseModel):
    """How streamed answers are chunked and paced."""

    model_config = ConfigDict(extra="forbid")

    chunk_chars: int = Field(0, ge=0)
    chunk_delay_ms: float = Field(0.0, ge=0.0)


@dataclass
class StreamCounters:
    streams: int = 0
    chunks: int = 0
    cut: int = 0
    client_gone: int = 0

    def snapshot(self) -> dict[str, int]:
        return {"streams": self.streams, "chunks": self.chunks, "cut": self.cut, "client_gone": self.client_gone}


@dataclass(frozen=True)
class StreamPlan:
    """What the HTTP layer writes for a streamed answer: events (bytes, each ending in a
    blank line), which of them are content chunks, pacing and where to cut."""

    events: list[bytes]
    content: frozenset[int]
    delay: float = 0.0
    cut_after: int | None = None  # content chunks written before the connection is closed
    counters: StreamCounters = field(default_factory=StreamCounters)


def requested(body: bytes) -> tuple[bool, bool]:
    """(stream, include_usage) of a request body (cheap when the body has no "stream")."""
    if b'"stream"' not in body:
        return False, False
    try:
        data = json.loads(body)
    except ValueError:
        return False, False
    if not isinstance(data, dict) or data.get("stream") is not True:
        return False, False
    options = data.get("stream_options")
    return True, bool(isinstance(options, dict) and options.get("include_usage"))


def split_text(text: str, chunk_chars: int) -> list[str]:
    if not text:
        return []
    if chunk_chars > 0:
        return [text[i : i + chunk_chars] for i in range(0, len(text), chunk_chars)]
    return _WORD_START.findall(text)


def plan(
    protocol: str,
    payload: dict[str, Any],
    settings: StreamSettings,
    *,
    include_usage: bool,
    cut_after: int | None,
    counters: StreamCounters,
) -> StreamPlan:
    """The events of ``payload`` (the answer a plain request gets) as a stream."""
    builder = _anthropic_events if protocol == "anthropic" else _openai_events
    events, content = builder(payload, settings.chunk_chars, include_usage)
    return StreamPlan(events, frozenset(content), settings.chunk_delay_ms / 1000.0, cut_after, counters)


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def _openai_events(payload: dict[str, Any], chunk_chars: int, include_usage: bool) -> tuple[list[bytes], list[int]]:
    base = {"id": payload["id"], "object": "chat.completion.chunk", "created": int(time.time()), "model": payload["model"]}

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return _sse({**base, "choices": choices, **extra})

    events: list[bytes] = []
    content: list[int] = []
    for choice in payload["choices"]:
        index, message = choice["index"], choice["message"]
        events.append(chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
        for piece in split_text(message.get("content") or "", chunk_chars):
            content.append(len(events))
            events.append(chunk([{"index": index, "delta": {"content": piece}, "finish_reason": None}]))
        for position, call in enumerate(message.get("tool_calls") or ()):
            delta = {"tool_calls": [{"index": position, **call}]}
            content.append(len(events))
            events.append(chunk([{"index": index, "delta": delta, "finish_reason": None}]))
        events.append(chunk([{"index": index, "delta": {}, "finish_reason": choice["finish_reason"]}]))
    if include_usage:
        events.append(chunk([], usage=payload["usage"]))
    events.append(b"data: [DONE]\n\n")
    return events, content


def _anthropic_events(payload: dict[str, Any], chunk_chars: int, include_usage: bool) -> tuple[list[bytes], list[int]]:
    del include_usage  # Anthropic always reports usage
    usage = payload["usage"]
    start = {**payload, "content": [], "stop_reason": None, "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1}}
    events = [_sse({"type": "message_start", "message": start}, "message_start")]
    content: list[int] = []
    for index, block in enumerate(payload["content"]):
        if block["type"] == "text":
            opened: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in split_text(block["text"], chunk_chars)]
        else:
            opened = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            arguments = block["input"] if isinstance(block["input"], str) else json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": arguments}]
        events.append(_sse({"type": "content_block_start", "index": index, "content_block": opened}, "content_block_start"))
        for delta in deltas:
            content.append(len(events))
            events.append(_sse({"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta"))
        events.append(_sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    final = {"type": "message_delta", "delta": {"stop_reason": payload["stop_reason"], "stop_sequence": None},
             "usage": {"output_tokens": usage["output_tokens"]}}
    events.append(_sse(final, "message_delta"))
    events.append(_sse({"type": "message_stop"}, "message_stop"))
    return events, content


async def write(request: Any, stream: StreamPlan) -> Any:
    """Write ``stream`` as the answer to an aiohttp ``request`` (chunked, event-stream)."""
    import asyncio

    from aiohttp import web

    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    counters = stream.counters
    counters.streams += 1
    written = 0
    try:
        for position, event in enumerate(stream.events):
            if position in stream.content:
                if stream.cut_after is not None and written >= stream.cut_after:
                    counters.cut += 1
                    # Close the socket mid-body: the client sees an unfinished chunked answer.
                    request.transport.close()
                    return response
                if stream.delay:
                    await asyncio.sleep(stream.delay)
                written += 1
                counters.chunks += 1
            await response.write(event)
        await response.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        counters.client_gone += 1
        raise
    return response


async def lines_of(stream: StreamPlan) -> AsyncIterator[bytes]:
    """The lines of ``stream`` as a client reads them, for the in-process `SimTransport`:
    paced, and broken off (`LMStreamInterruptedError`) where the cut fault says."""
    import asyncio

    from dspex.errors import LMStreamInterruptedError

    counters = stream.counters
    counters.streams += 1
    written = 0
    for position, event in enumerate(stream.events):
        if position in stream.content:
            if stream.cut_after is not None and written >= stream.cut_after:
                counters.cut += 1
                raise LMStreamInterruptedError("the simulated LM broke the stream off mid-answer (a cut fault)")
            if stream.delay:
                await asyncio.sleep(stream.delay)
            written += 1
            counters.chunks += 1
        for line in event.split(b"\n"):
            yield line


__all__ = ["StreamCounters", "lines_of", "StreamPlan", "StreamSettings", "plan", "requested", "split_text", "write"]
