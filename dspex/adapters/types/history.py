"""`History`: earlier turns of a conversation, given to a predictor as an input.

Each message is a dict of the signature's field values (``{"question": ...,
"answer": ...}``). The adapters render every message as a user turn (its input
fields) followed by an assistant turn (its output fields), between the demos
and the current input, and leave the history field out of the field list.
"""

from __future__ import annotations

from typing import Any

import pydantic


class History(pydantic.BaseModel):
    """A conversation so far: ``History(messages=[{"question": ..., "answer": ...}, ...])``."""

    messages: list[dict[str, Any]]

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


def history_field(signature: Any) -> str | None:
    """The name of the signature's `History` input field, if it has one."""
    for name, spec in signature.input_fields.items():
        if spec.annotation is History:
            return name
    return None
