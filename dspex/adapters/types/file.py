"""`File`: a document (a PDF, a text file) as a field value.

Held as any of ``file_data`` (a data URI carrying the bytes), ``file_id`` (a
file uploaded to the provider beforehand) and ``filename``. In a prompt it is an
OpenAI ``file`` content part; the Anthropic protocol sends a ``document`` block
(PDFs and plain text as data, an uploaded file by id). Make one with
``File.from_path``, ``File.from_bytes``, ``File.from_file_id``, ``File(data_uri)``
or ``File(file_data=..., filename=...)``; only ``from_path`` reads the filesystem.
Shown, it is a placeholder, never its base64.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import pydantic

from dspex.adapters.types.base import ContentPart, Type
from dspex.adapters.types.media import (
    encode_data_uri,
    guess_from_name,
    read_path,
    sniff,
    split_data_uri,
)
from dspex.errors import MediaTypeError
from dspex.observability.blobs import describe_data_uri

_OCTET_STREAM = "application/octet-stream"
_KEYS = ("file_data", "file_id", "filename")


class File(Type):
    """A file input: its bytes (``file_data``, a data URI), a provider ``file_id``, or both."""

    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None
    parts_value: ClassVar[bool] = True

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    def __init__(self, source: Any = None, /, **fields: Any) -> None:
        if source is not None:
            given = encode_file_to_dict(source)
            both = sorted(set(given) & set(fields))
            if both:
                raise TypeError(f"File received {', '.join(both)} both in the source and as keywords; give it once")
            fields = {**given, **fields}
        super().__init__(**fields)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_any(cls, value: Any) -> Any:
        return encode_file_to_dict(value)

    @pydantic.model_validator(mode="after")
    def _check_data(self) -> File:
        if self.file_data is not None and self.file_data.startswith("data:"):
            split_data_uri(self.file_data)  # a malformed data URI fails here, not at the provider
        return self

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str], filename: str | None = None, mime_type: str | None = None
    ) -> File:
        """A local file. Its media type: ``mime_type``, else read from its bytes (PDF,
        images, audio), else guessed from its name, else ``application/octet-stream``."""
        data = read_path(path, "File.from_path")
        name = filename or os.path.basename(os.fspath(path))
        kind = mime_type or sniff(data, text=False) or guess_from_name(os.fspath(path)) or _OCTET_STREAM
        return cls(file_data=encode_data_uri(kind, data), filename=name)

    @classmethod
    def from_bytes(cls, data: bytes, filename: str | None = None, mime_type: str | None = None) -> File:
        """Raw bytes; the media type is ``mime_type``, else read from the bytes (PDF,
        images, audio), else ``application/octet-stream``."""
        kind = mime_type or sniff(data, text=False) or _OCTET_STREAM
        return cls(file_data=encode_data_uri(kind, data), filename=filename)

    @classmethod
    def from_file_id(cls, file_id: str, filename: str | None = None) -> File:
        """A file uploaded to the provider beforehand (OpenAI's Files API)."""
        return cls(file_id=file_id, filename=filename)

    @property
    def media_type(self) -> str | None:
        if self.file_data and self.file_data.startswith("data:"):
            return split_data_uri(self.file_data)[0]
        return guess_from_name(self.filename) if self.filename else None

    def format(self) -> list[ContentPart]:
        shown = {key: getattr(self, key) for key in _KEYS if getattr(self, key) is not None}
        return [{"type": "file", "file": shown}]

    @classmethod
    def description(cls) -> str:
        return "a file"

    def __str__(self) -> str:
        bits = []
        if self.filename:
            bits.append(self.filename)
        if self.file_id:
            bits.append(f"id={self.file_id}")
        if self.file_data:
            bits.append(describe_data_uri(self.file_data) if self.file_data.startswith("data:") else "<data>")
        return f"<file {' '.join(bits)}>"

    def __repr__(self) -> str:
        bits = []
        if self.file_data is not None:
            bits.append(
                f"file_data={describe_data_uri(self.file_data)}" if self.file_data.startswith("data:")
                else f"file_data=<{len(self.file_data)} characters>"
            )
        bits += [f"{key}={getattr(self, key)!r}" for key in ("file_id", "filename") if getattr(self, key) is not None]
        return f"File({', '.join(bits)})"


def encode_file_to_dict(file: Any) -> dict[str, Any]:
    """``{"file_data"?, "file_id"?, "filename"?}`` for a `File`, such a dict, a data URI
    or bytes. Never reads a file: a path is refused with a pointer to ``File.from_path``."""
    if isinstance(file, File):
        return {key: getattr(file, key) for key in _KEYS if getattr(file, key) is not None}
    if isinstance(file, dict):
        if not any(key in file for key in _KEYS):
            raise MediaTypeError(
                f"a dspex.File must contain at least one of file_data, file_id or filename; got keys {sorted(file)}"
            )
        return file
    if isinstance(file, str):
        if file.startswith("data:"):
            split_data_uri(file)
            return {"file_data": file}
        raise MediaTypeError(
            f"File({file[:80]!r}): a string must be a data URI; read a local file with File.from_path(path), "
            "refer to an uploaded one with File.from_file_id(id)"
        )
    if isinstance(file, bytes | bytearray | memoryview):
        data = bytes(file)
        return {"file_data": encode_data_uri(sniff(data, text=False) or _OCTET_STREAM, data)}
    if isinstance(file, os.PathLike):
        raise MediaTypeError(f"File({os.fspath(file)!r}) does not read files: use File.from_path(path)")
    raise MediaTypeError(f"cannot make a File from a {type(file).__name__}")
