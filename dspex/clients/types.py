"""Plain values that cross the boundary between adapters and LM clients."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]
"""A chat message: ``{"role": "system"|"user"|"assistant", "content": str}``."""


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
    """What one LM request returned: one text per completion (``n`` of them)."""

    outputs: list[str]
    usage: Usage
    model: str
    cached: bool = False
    finish_reasons: list[str | None] = field(default_factory=list)
