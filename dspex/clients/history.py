"""A bounded record of LM calls, for inspection while developing a program.

Every successful LM call appends one entry (a plain dict) to the process-wide
``GLOBAL_HISTORY`` (the last 10,000 calls) and to the calling LM's own
``lm.history``, unless ``recording_enabled()`` says no: settings install a hook
that reads ``dspex.configure(disable_history=True)`` (the client layer does not
import settings). Entries never hold the API key or API base: only the model,
the messages, the request params, the outputs, usage and cost.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TextIO

from dspex.clients.types import LMResponse, Message

MAX_HISTORY = 10_000

GLOBAL_HISTORY: deque[dict[str, Any]] = deque(maxlen=MAX_HISTORY)


def _always() -> bool:
    return True


recording_enabled: Callable[[], bool] = _always
"""Asked before each entry is recorded; `dspex.primitives.settings` replaces it with
one that reads the ``disable_history`` setting of the calling context."""


def make_entry(
    *,
    model: str,
    messages: Sequence[Message],
    params: dict[str, Any],
    response: LMResponse,
    latency: float,
) -> dict[str, Any]:
    """One history entry; ``params`` must already be free of secrets."""
    return {
        "uuid": str(uuid.uuid4()),
        "timestamp": time.time(),
        "model": model,
        # Shallow copies: a caller reusing its message list must not rewrite history.
        "messages": list(messages),
        "params": dict(params),
        "outputs": list(response.outputs),
        "finish_reasons": list(response.finish_reasons),
        "usage": response.usage.to_dict(),
        "cost": response.usage.cost,
        "cached": response.cached,
        "latency": latency,
    }


def record(entry: dict[str, Any], *local: deque[dict[str, Any]]) -> None:
    """Append ``entry`` to the global history and to each of the given local ones
    (nothing, while history is disabled)."""
    if not recording_enabled():
        return
    GLOBAL_HISTORY.append(entry)
    for history in local:
        history.append(entry)


def format_entries(entries: Iterable[dict[str, Any]]) -> str:
    """Render entries as readable text: messages, then outputs, then usage."""
    return "\n".join(_format_entry(e) for e in entries)


def inspect_history(
    n: int = 1,
    *,
    history: Sequence[dict[str, Any]] | None = None,
    file: TextIO | None = None,
) -> str:
    """Print the last ``n`` LM calls (of ``history``, default the global one) and return the text."""
    source = list(GLOBAL_HISTORY if history is None else history)
    text = format_entries(source[-n:] if n > 0 else [])
    print(text, file=file or sys.stdout)
    return text


def _format_entry(entry: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(entry["timestamp"]).strftime("%Y-%m-%d %H:%M:%S")
    usage = entry["usage"]
    cost = entry["cost"]
    head = (
        f"[{when}] {entry['model']}"
        f"{'  (cached)' if entry['cached'] else ''}"
        f"  tokens in/out: {usage['prompt_tokens']}/{usage['completion_tokens']}"
        f"{f'  cost: ${cost:.6f}' if cost else ''}"
    )
    lines = ["", head, ""]
    for message in entry["messages"]:
        lines.append(f"{str(message.get('role', '?')).upper()}:")
        lines.append(_content_text(message.get("content")))
        lines.append("")
    for i, output in enumerate(entry["outputs"]):
        label = "RESPONSE:" if len(entry["outputs"]) == 1 else f"RESPONSE {i + 1}:"
        lines.append(label)
        lines.append(output)
        lines.append("")
    return "\n".join(lines)


def _content_text(content: Any) -> str:
    # Multimodal content is a list of parts; show text parts and name the others.
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            else:
                kind = part.get("type", "part") if isinstance(part, dict) else type(part).__name__
                parts.append(f"<{kind}>")
        return "\n".join(parts)
    return "" if content is None else str(content)
