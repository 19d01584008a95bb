"""Plain values that cross the boundary between adapters and LM clients."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]
"""A chat message: ``{"role": "system"|"user"|"assistant", "content": str}`` (or, in
a native tool-calling conversation, an assistant message with ``tool_calls`` and
``{"role": "tool", "tool_call_id", "content"}`` results, in the OpenAI shape)."""

Output = str | dict[str, Any]
"""One completion: its text, or, when the model asked for tool calls, a dict
``{"text": str | None, "tool_calls": [OpenAI-shaped calls]}`` (DSPy's shape), each call
``{"id", "type": "function", "function": {"name", "arguments": "<JSON text>"}}``
whichever provider answered."""


def completion_output(text: str | None, tool_calls: list[dict[str, Any]]) -> Output:
    """The text alone when there are no tool calls (so plain replies stay strings),
    else the text-and-calls dict."""
    if not tool_calls:
        return "" if text is None else text
    return {"text": text, "tool_calls": tool_calls}


def output_text(output: Output) -> str | None:
    """The text of one completion (None for a tool-calls-only reply)."""
    if isinstance(output, dict):
        text = output.get("text")
        return None if text is None else str(text)
    return output


def output_tool_calls(output: Output) -> list[dict[str, Any]]:
    """The tool calls of one completion (none for a plain text reply)."""
    if isinstance(output, dict):
        return list(output.get("tool_calls") or [])
    return []


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts (and cost in USD, when a price is known) of one or more LM calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    cost: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        if self.cost is None and other.cost is None:
            cost = None
        else:
            cost = (self.cost or 0.0) + (other.cost or 0.0)
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.calls + other.calls,
            cost,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "calls": self.calls,
            "cost": self.cost,
        }


@dataclass(frozen=True, slots=True)
class LMResponse:
    """What one LM request returned: one output per completion (``n`` of them), a
    string, or a text-and-tool-calls dict when the model asked for tool calls."""

    outputs: list[Output]
    usage: Usage
    model: str
    cached: bool = False
    finish_reasons: list[str | None] = field(default_factory=list)
