"""Test doubles shared across test folders (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

from typing import Any

from dspex.clients.types import LMResponse, Usage


class ScriptedLM:
    """Replies with scripted texts, in order, and records every request it got."""

    provider = "openai"

    def __init__(self, *replies: str | list[str] | Exception) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []

    async def acomplete(self, messages: list[dict[str, Any]], **kwargs: Any) -> LMResponse:
        self.requests.append({"messages": messages, **kwargs})
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        outputs = reply if isinstance(reply, list) else [reply]
        return LMResponse(outputs=outputs, usage=Usage(10, 5, 1), model="scripted")
