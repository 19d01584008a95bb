"""Readable printing of LM call histories (``dspex.inspect_history``, ``module.inspect_history``).

An entry is a dict as `dspex.clients.history` records it (or as DSPy does: the
printer reads only ``messages``, ``prompt``, ``outputs``, ``timestamp`` and, when
present, ``model``, ``usage`` and ``cached``). Each entry is shown as its
messages, one block per role, then the reply: its text and any tool calls.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

from dspex.observability.blobs import describe_part, elide_blobs

_RESET = "\x1b[0m"
_ROLE_COLOUR = "\x1b[31m"  # message headers
_REPLY_COLOUR = "\x1b[32m"  # what the LM said
_META_COLOUR = "\x1b[34m"  # timestamps, placeholders for non-text parts


def pretty_print_history(
    history: Sequence[Mapping[str, Any]], n: int = 1, file: TextIO | None = None
) -> None:
    """Print the last ``n`` entries of ``history`` (prompts and replies).

    To ``file`` when given (plain text), else to stdout (coloured when it is a terminal).
    """
    out = file if file is not None else sys.stdout
    colors = file is None and _isatty(out)
    print(format_history(history, n, colors=colors), file=out)


def format_history(history: Sequence[Mapping[str, Any]], n: int = 1, *, colors: bool = False) -> str:
    """The text `pretty_print_history` prints."""
    entries = list(history)[-n:] if n > 0 else []
    paint = _Painter(colors)
    blocks = [_format_entry(entry, paint) for entry in entries]
    return "\n\n".join(blocks) + ("\n" if blocks else "")


class _Painter:
    def __init__(self, colors: bool) -> None:
        self.colors = colors

    def __call__(self, colour: str, text: str) -> str:
        return f"{colour}{text}{_RESET}" if self.colors else text


def _format_entry(entry: Mapping[str, Any], paint: _Painter) -> str:
    lines = [paint(_META_COLOUR, _heading(entry)), ""]
    messages = entry.get("messages") or [{"role": "user", "content": entry.get("prompt") or ""}]
    for message in messages:
        role = str(message.get("role") or "unknown").capitalize()
        lines.append(paint(_ROLE_COLOUR, f"{role} message:"))
        lines.extend(_content_lines(message.get("content"), paint))
        lines.extend(_tool_call_lines(message.get("tool_calls"), paint))
        lines.append("")
    outputs = list(entry.get("outputs") or [])
    for index, output in enumerate(outputs):
        label = "Response:" if index == 0 else f"Response {index + 1}:"
        text, tool_calls = _reply_parts(output)
        if text:
            lines.append(paint(_ROLE_COLOUR, label))
            lines.append(paint(_REPLY_COLOUR, text.strip()))
        lines.extend(_tool_call_lines(tool_calls, paint))
    return "\n".join(lines).rstrip("\n")


def _heading(entry: Mapping[str, Any]) -> str:
    stamp = entry.get("timestamp", "unknown time")
    if isinstance(stamp, int | float):
        stamp = datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec="seconds")
    parts = [f"[{stamp}]"]
    if entry.get("model"):
        parts.append(str(entry["model"]))
    if entry.get("cached"):
        parts.append("(cached)")
    usage = entry.get("usage")
    if isinstance(usage, Mapping) and "prompt_tokens" in usage:
        parts.append(f"tokens in/out: {usage.get('prompt_tokens')}/{usage.get('completion_tokens')}")
    cost = entry.get("cost")
    if isinstance(cost, int | float) and cost:
        parts.append(f"cost: ${cost:.6f}")
    return "  ".join(parts)


def _content_lines(content: Any, paint: _Painter) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [elide_blobs(content).strip()]
    if not isinstance(content, list):
        return [str(content)]
    lines: list[str] = []
    for part in content:
        if not isinstance(part, Mapping):
            lines.append(str(part))
            continue
        kind = part.get("type")
        if kind == "text":
            lines.append(elide_blobs(str(part.get("text", ""))).strip())
        else:
            lines.append(paint(_META_COLOUR, _placeholder(kind, part)))
    return lines


def _placeholder(kind: Any, part: Mapping[str, Any]) -> str:
    # Images, audio and files would flood the terminal: show what they are, not their bytes.
    return describe_part(part)


def _reply_parts(output: Any) -> tuple[str, Any]:
    """(text, tool calls) of one completion: a string, or a dict with ``text``/``tool_calls``."""
    if isinstance(output, Mapping):
        return str(output.get("text") or ""), output.get("tool_calls")
    return ("" if output is None else str(output)), None


def _tool_call_lines(tool_calls: Any, paint: _Painter) -> list[str]:
    if not tool_calls:
        return []
    lines = [paint(_ROLE_COLOUR, "Tool calls:")]
    for call in tool_calls:
        name, arguments = _tool_call(call)
        lines.append(paint(_REPLY_COLOUR, f"{name}: {arguments}"))
    return lines


def _tool_call(call: Any) -> tuple[str, str]:
    """Name and arguments (as compact JSON when they are JSON) of one tool call, whichever
    shape it has: OpenAI's ``{"function": {"name", "arguments"}}`` or ``{"name", "args"}``."""
    if not isinstance(call, Mapping):
        return "<unknown>", str(call)
    function = call.get("function") if isinstance(call.get("function"), Mapping) else {}
    name = function.get("name") or call.get("name") or "<unknown>"
    arguments = function.get("arguments")
    if arguments is None:
        arguments = call.get("args", call.get("arguments", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return str(name), arguments
    if isinstance(arguments, dict | list):
        return str(name), json.dumps(arguments, ensure_ascii=False)
    return str(name), str(arguments)


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


__all__ = ["format_history", "pretty_print_history"]
