"""`Type`: the base of field types that render themselves into a prompt.

A subclass is a pydantic model that says how one of its values appears in a
message (`format`, a string or a list of chat content parts) and what the LM
should know about the type (`description`, added to the field's line in the
system message in place of a JSON schema when `text_value` is set).
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

import pydantic

ContentPart = dict[str, Any]


class Type(pydantic.BaseModel):
    """Base class of custom field types (``dspex.Code``, ``dspex.History``-like values)."""

    #: True when the LM writes a value of this type as plain text (code, prose)
    #: rather than as a JSON object, so replies are read as text.
    text_value: ClassVar[bool] = False

    def format(self) -> list[ContentPart] | dict[str, Any] | str:
        """The value as message content: a string, chat content parts, or a JSON object."""
        return self.model_dump_json()

    @classmethod
    def description(cls) -> str:
        """What the LM should know about this type; empty when the schema says enough."""
        return ""

    @classmethod
    def from_text(cls, text: str) -> Type:
        """A value read from the LM's text (for `text_value` types)."""
        return cls.model_validate(text)


# A value whose content parts are not all text (an image, a provider-specific part)
# travels through the string-building code as JSON between these markers; the
# finished message is then split into a list of content parts around them.
_PARTS_OPEN = "\x00dspex-parts:"
_PARTS_CLOSE = "\x00"
_PARTS = re.compile(re.escape(_PARTS_OPEN) + "(.*?)" + re.escape(_PARTS_CLOSE), re.DOTALL)


def render_parts(parts: list[ContentPart] | dict[str, Any] | str) -> str:
    """Content parts as prompt text: text parts verbatim; other parts marked, to be
    restored as parts of the message by `with_content_parts`. A JSON object (a
    `format` that returns a dict, as DSPy's ToolCalls does) is written as JSON."""
    if isinstance(parts, str):
        return parts
    if isinstance(parts, dict):
        return json.dumps(parts, ensure_ascii=False, default=str)
    if all(_is_text_part(p) for p in parts):
        return "\n".join(p["text"] for p in parts)
    return _PARTS_OPEN + json.dumps(parts, ensure_ascii=False, default=str) + _PARTS_CLOSE


def _is_text_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)


def with_content_parts(message: dict[str, Any]) -> dict[str, Any]:
    """The message with its content as a list of parts when a value in it has
    non-text parts; unchanged otherwise."""
    content = message.get("content")
    if not isinstance(content, str) or _PARTS_OPEN not in content:
        return message
    parts: list[ContentPart] = []
    position = 0
    for match in _PARTS.finditer(content):
        if match.start() > position:
            parts.append({"type": "text", "text": content[position : match.start()]})
        parts.extend(json.loads(match.group(1)))
        position = match.end()
    if position < len(content):
        parts.append({"type": "text", "text": content[position:]})
    return {**message, "content": parts}


def is_custom_type(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Type)
