"""`Code`: source code as a field value; ``Code["java"]`` names the language."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pydantic

from dspex.adapters.types.base import Type

_FENCED = re.compile(r"```[\w+-]*[ \t]*\n?(.*?)\n?```", re.DOTALL)


class Code(Type):
    """A piece of source code. The LM writes it as plain text (a fence is removed)."""

    code: str
    language: ClassVar[str] = "python"
    text_value: ClassVar[bool] = True

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"code": _unfence(data)}
        if isinstance(data, dict) and isinstance(data.get("code"), str):
            return {**data, "code": _unfence(data["code"])}
        return data

    @pydantic.model_serializer
    def _as_text(self) -> str:
        return self.code

    def format(self) -> str:
        return self.code

    @classmethod
    def description(cls) -> str:
        return (
            f"Source code in {cls.language}. Write only the code, as plain text or inside "
            "one fenced block; it is read verbatim."
        )

    def __class_getitem__(cls, language: Any) -> type[Code]:  # type: ignore[override]
        if not isinstance(language, str):
            raise TypeError(f"Code[...] takes a language name, got {language!r}")
        return type(f"Code_{language}", (cls,), {"language": language, "__module__": cls.__module__})

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.code == other
        return isinstance(other, Code) and other.code == self.code

    def __hash__(self) -> int:
        return hash(self.code)

    def __str__(self) -> str:
        return self.code


def _unfence(text: str) -> str:
    match = _FENCED.search(text)
    return (match.group(1) if match else text).strip()
