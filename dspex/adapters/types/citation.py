"""`Document` (a source given to the LM) and `Citations` (the passages it cited).

Prompts carry documents as text sections here; providers' native citation APIs
are not used (see the README's differences from DSPy).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pydantic

from dspex.adapters.types.base import ContentPart, Type


class Document(Type):
    """A source document: its text, and optionally a title and context."""

    data: str
    title: str | None = None
    media_type: str = "text/plain"
    context: str | None = None

    def format(self) -> list[ContentPart]:
        header = f"Document: {self.title}" if self.title else "Document"
        lines = [header]
        if self.context:
            lines.append(f"Context: {self.context}")
        lines.append(self.data)
        return [{"type": "text", "text": "\n".join(lines)}]


class Citation(pydantic.BaseModel):
    """One cited passage: the text, which document it came from, and where in it."""

    cited_text: str
    document_index: int = 0
    document_title: str | None = None
    start_char_index: int | None = None
    end_char_index: int | None = None
    supported_text: str | None = None
    type: str = "char_location"


class Citations(Type):
    """The passages an answer rests on, as a list of `Citation`s."""

    citations: list[Citation]

    Citation: ClassVar[type[Citation]] = Citation  # also reachable as Citations.Citation

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_list(cls, data: Any) -> Any:
        return {"citations": data} if isinstance(data, list) else data

    @classmethod
    def from_dict_list(cls, citations: list[dict[str, Any]]) -> Citations:
        """Citations from plain dicts (``[{"cited_text": ..., "document_index": 0}]``)."""
        return cls(citations=[Citation.model_validate(c) for c in citations])

    def format(self) -> str:
        return json.dumps([c.model_dump(exclude_none=True) for c in self.citations], ensure_ascii=False)

    @classmethod
    def description(cls) -> str:
        return (
            "A list of citations; each gives the exact cited_text, the document_index of its "
            "source (counting from 0) and optionally the document_title."
        )

    def __len__(self) -> int:
        return len(self.citations)

    def __iter__(self):  # type: ignore[override]
        return iter(self.citations)

    def __getitem__(self, index: int) -> Citation:
        return self.citations[index]
