"""`Type`: the base of field types that render themselves into a prompt.

A subclass is a pydantic model that says how one of its values appears in a
message (`format`, a string or a list of chat content parts) and what the LM
should know about the type (`description`, added to the field's line in the
system message in place of a JSON schema when `text_value` is set).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pydantic

ContentPart = dict[str, Any]


class Type(pydantic.BaseModel):
    """Base class of custom field types (``dspex.Code``, ``dspex.History``-like values)."""

    #: True when the LM writes a value of this type as plain text (code, prose)
    #: rather than as a JSON object, so replies are read as text.
    text_value: ClassVar[bool] = False

    def format(self) -> list[ContentPart] | str:
        """The value as message content: a string, or chat content parts."""
        return self.model_dump_json()

    @classmethod
    def description(cls) -> str:
        """What the LM should know about this type; empty when the schema says enough."""
        return ""

    @classmethod
    def from_text(cls, text: str) -> Type:
        """A value read from the LM's text (for `text_value` types)."""
        return cls.model_validate(text)


def render_parts(parts: list[ContentPart] | str) -> str:
    """Content parts as prompt text: text parts verbatim, others as JSON."""
    if isinstance(parts, str):
        return parts
    rendered = []
    for part in parts:
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
            rendered.append(part["text"])
        else:
            rendered.append(json.dumps(part, ensure_ascii=False, default=str))
    return "\n".join(rendered)


def is_custom_type(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Type)
