"""`Reasoning`: a model's step-by-step text, kept as a field value that reads like a str."""

from __future__ import annotations

from typing import Any, ClassVar

import pydantic

from dspex.adapters.types.base import Type


class Reasoning(Type):
    """Reasoning text. Compares equal to the same string and renders as it."""

    content: str
    text_value: ClassVar[bool] = True

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_text(cls, data: Any) -> Any:
        return {"content": data} if isinstance(data, str) else data

    @pydantic.model_serializer
    def _as_text(self) -> str:
        return self.content

    def format(self) -> str:
        return self.content

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.content == other
        return isinstance(other, Reasoning) and other.content == self.content

    def __hash__(self) -> int:
        return hash(self.content)

    def __str__(self) -> str:
        return self.content

    def __len__(self) -> int:
        return len(self.content)

    def __contains__(self, text: str) -> bool:
        return text in self.content
