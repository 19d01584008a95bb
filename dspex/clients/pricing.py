"""Advisory USD prices per 1M tokens, used to estimate the cost of LM calls.

ADVISORY ONLY: prices change and differ per account, region, batch and cache
discounts. Check your provider's price page, and pass ``LM(price=(in, out))``
(USD per 1M input tokens, per 1M output tokens) when you need a figure you can
rely on. Models not listed here get ``cost=None`` unless a price is given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

Price = tuple[float, float]
"""(USD per 1M input tokens, USD per 1M output tokens)."""

# Keys are model-name prefixes; the longest matching prefix wins, so dated
# snapshots ("gpt-4o-2024-08-06", "claude-3-5-haiku-20241022") find their family.
PRICES: dict[str, Price] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-haiku-4-5": (1.00, 5.00),
}

_PREFIXES = sorted(PRICES, key=len, reverse=True)


def lookup_price(model_name: str) -> Price | None:
    """The advisory price of ``model_name`` (without provider prefix), or None."""
    name = model_name.rsplit("/", 1)[-1].lower()
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return PRICES[prefix]
    return None


def cost_usd(price: Price | None, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Cost in USD of the given token counts at ``price``; None if no price is known."""
    if price is None:
        return None
    per_in, per_out = price
    return (prompt_tokens * per_in + completion_tokens * per_out) / 1_000_000


# --- worst cases, for reserving a cost budget before a request is sent ------------------

MESSAGE_OVERHEAD_TOKENS = 8
"""Tokens a chat API may add per message (role, separators); real APIs add 3-4."""
REQUEST_OVERHEAD_TOKENS = 16
"""Tokens a chat API may add per request (reply priming, system framing)."""


def prompt_token_bound(messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> int:
    """An upper bound on the prompt tokens of a chat request.

    Byte-level BPE tokenizers (OpenAI's, Anthropic's) never make a token of
    less than one byte, so the UTF-8 size of every text the request carries
    (message contents and roles, and the params, which hold response formats
    and tool schemas) bounds its prompt tokens, with a per-message allowance
    for framing. It over-counts English by about 4x, which is the point: it
    may only err on the side of reserving too much. Image parts are counted by
    the size of their text (a URL), not the tokens the provider bills for the
    image itself.
    """
    total = REQUEST_OVERHEAD_TOKENS + _text_bytes(params)
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + sum(_text_bytes(value) for value in message.values())
    return total


def worst_case_cost(
    price: Price,
    messages: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    max_tokens: int,
    completions: int = 1,
) -> float:
    """The most one request (``completions`` outputs of ``max_tokens`` each) can cost."""
    cost = cost_usd(price, prompt_token_bound(messages, params), max_tokens * completions)
    assert cost is not None  # a price was given
    return cost


def _text_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    return len(json.dumps(value, default=str, ensure_ascii=False).encode())
