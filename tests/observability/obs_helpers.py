"""Helpers for observability tests: a fake LM transport, span lookups."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from dspex.clients.transport import HTTPResponse

SECRET_KEY = "sk-test-0123456789abcdefghijklmnopqrstuv"


class FakeTransport:
    """Answers every chat request with one completion (or an error status); keeps the headers."""

    def __init__(self, status: int = 200, reply: str = "42") -> None:
        self.status = status
        self.reply = reply
        self.headers_seen: list[dict[str, str]] = []

    async def post(
        self, url: str, *, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> HTTPResponse:
        self.headers_seen.append(dict(headers))
        if self.status != 200:
            error = {"error": {"message": "the server had an error", "type": "server_error"}}
            return HTTPResponse(
                self.status, {"content-type": "application/json"}, json.dumps(error).encode()
            )
        completion = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "test-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.reply},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
        }
        return HTTPResponse(
            200, {"content-type": "application/json"}, json.dumps(completion).encode()
        )

    async def aclose(self) -> None:
        return None


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in spans]}"
    return found[0]


def all_attribute_text(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> str:
    """Every attribute name and value of every span and span event, as one string."""
    parts: list[str] = []
    for item in spans:
        parts.extend(f"{k}={v!r}" for k, v in (item.attributes or {}).items())
        for event in item.events:
            parts.extend(f"{k}={v!r}" for k, v in (event.attributes or {}).items())
        parts.append(str(item.status.description))
    return "\n".join(parts)


def make_lm(transport: Any, **kwargs: Any) -> Any:
    from dspex.clients.lm import LM

    return LM(
        "openai/test-model",
        api_base="http://127.0.0.1:9/v1",
        api_key=SECRET_KEY,
        cache=False,
        num_retries=0,
        transport=transport,
        **kwargs,
    )
