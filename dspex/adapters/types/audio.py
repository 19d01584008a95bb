"""`Audio`: a sound clip as a field value, sent as an OpenAI ``input_audio`` part.

Held as base64 ``data`` and its ``audio_format`` (``wav``, ``mp3``, ...). Make one
from bytes (``Audio(wav_bytes)``: the format is read from the bytes), a data URI
(``data:audio/wav;base64,...``), ``Audio(data=..., audio_format=...)``, or load one
with ``Audio.from_path`` / ``Audio.from_url`` (the only ways that read a file or
the network). OpenAI's chat API takes ``wav`` and ``mp3``; Anthropic's Messages
API takes no audio, and a request that carries some is refused before it is sent
(`UnsupportedMediaError`). Shown, it is a placeholder, never its base64.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, ClassVar

import pydantic

from dspex.adapters.types.base import ContentPart, Type
from dspex.adapters.types.media import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT,
    decode_head,
    fetch_url,
    read_path,
    sniff,
    split_data_uri,
)
from dspex.errors import MediaTypeError
from dspex.observability.blobs import placeholder, short_digest, shown_url

#: audio/<subtype> -> the format name the OpenAI API uses
_FORMAT_OF = {"wav": "wav", "wave": "wav", "mpeg": "mp3", "mp3": "mp3", "flac": "flac", "ogg": "ogg",
              "webm": "webm", "mp4": "m4a", "m4a": "m4a", "aac": "aac"}


def _normalize_audio_format(audio_format: str) -> str:
    """``x-wav`` -> ``wav``: the ``x-`` of unregistered media subtypes is not part of the name."""
    return audio_format.removeprefix("x-")


def format_of_media_type(media_type: str) -> str:
    """``audio/mpeg`` -> ``mp3``, ``audio/x-wav`` -> ``wav``; other subtypes as they are."""
    subtype = _normalize_audio_format(media_type.split("/", 1)[-1].lower())
    return _FORMAT_OF.get(subtype, subtype)


class Audio(Type):
    """An audio input: base64 ``data`` in ``audio_format``."""

    data: str
    audio_format: str
    parts_value: ClassVar[bool] = True

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    def __init__(self, source: Any = None, /, **fields: Any) -> None:
        if source is not None:
            if "data" in fields:
                raise TypeError("Audio received data both as the source and as data=; give it once")
            fields = {**encode_audio(source, audio_format=fields.pop("audio_format", None)), **fields}
        super().__init__(**fields)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_any(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if "audio_format" in value:
                return {**value, "audio_format": _normalize_audio_format(str(value["audio_format"]))}
            return value
        return encode_audio(value)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> Audio:
        """The audio in a local file (its format read from its bytes)."""
        return cls(read_path(path, "Audio.from_path"))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Audio:
        """Deprecated name of `from_path`."""
        warnings.warn("Audio.from_file is deprecated: use Audio.from_path", DeprecationWarning, stacklevel=2)
        return cls.from_path(path)

    @classmethod
    def from_url(
        cls, url: str, verify: bool = True, timeout: float | None = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> Audio:
        """Download an http(s) audio file now (`MediaFetchError` if that fails,
        `MediaTypeError` if it is not audio)."""
        body, served_as = fetch_url(url, what="Audio.from_url", timeout=timeout, max_bytes=max_bytes, verify=verify)
        kind = sniff(body, text=False)
        if kind is None and served_as and served_as.startswith("audio/"):
            kind = served_as  # a format dspex does not sniff, but the server says it is audio
        if kind is None or not kind.startswith("audio/"):
            raise MediaTypeError(
                f"Audio.from_url: {shown_url(url)} is not audio (served as {served_as}, bytes look like {kind})"
            )
        return cls(data=_b64(body), audio_format=format_of_media_type(kind))

    @classmethod
    def from_bytes(cls, data: bytes, audio_format: str | None = None) -> Audio:
        """Audio from raw bytes; ``audio_format`` when the bytes do not tell (raw PCM)."""
        return cls(data, audio_format=audio_format) if audio_format else cls(data)

    def format(self) -> list[ContentPart]:
        return [{"type": "input_audio", "input_audio": {"data": self.data, "format": self.audio_format}}]

    @classmethod
    def description(cls) -> str:
        return "an audio clip"

    def __str__(self) -> str:
        return placeholder(f"audio/{self.audio_format}", len(self.data) * 3 // 4, short_digest(self.data))

    def __repr__(self) -> str:
        return f"Audio({self})"


def encode_audio(audio: Any, audio_format: str | None = None) -> dict[str, str]:
    """``{"data": base64, "audio_format": ...}`` for bytes, a data URI, an `Audio` or such
    a dict. Never reads a file or the network."""
    if isinstance(audio, Audio):
        return {"data": audio.data, "audio_format": audio.audio_format}
    if isinstance(audio, dict) and "data" in audio and "audio_format" in audio:
        return {"data": audio["data"], "audio_format": _normalize_audio_format(str(audio["audio_format"]))}
    if isinstance(audio, str) and audio.startswith("data:"):
        media_type, payload = split_data_uri(audio)
        if not media_type.startswith("audio/"):
            raise MediaTypeError(f"a data URI of {media_type} is not audio")
        decode_head(payload)  # refuses text that is not base64
        return {"data": payload, "audio_format": audio_format or format_of_media_type(media_type)}
    if isinstance(audio, str):
        raise MediaTypeError(
            f"Audio({audio[:80]!r}): a string must be a data URI (data:audio/wav;base64,...); "
            "load a local file with Audio.from_path(path) and a remote one with Audio.from_url(url)"
        )
    if isinstance(audio, bytes | bytearray | memoryview):
        data = bytes(audio)
        kind = sniff(data)
        if audio_format is None:
            if kind is None or not kind.startswith("audio/"):
                looks = f"they look like {kind}" if kind else "they match no audio format dspex knows"
                raise MediaTypeError(
                    f"the bytes could not be identified as audio ({looks}); give audio_format= for raw audio"
                )
            audio_format = format_of_media_type(kind)
        elif kind is not None and not kind.startswith("audio/") and kind != "text/plain":
            raise MediaTypeError(f"the bytes are {kind}, not audio")
        return {"data": _b64(data), "audio_format": _normalize_audio_format(audio_format)}
    if isinstance(audio, os.PathLike):
        raise MediaTypeError(f"Audio({os.fspath(audio)!r}) does not read files: use Audio.from_path(path)")
    if hasattr(audio, "shape"):
        raise MediaTypeError(
            "Audio does not encode arrays: write them as WAV bytes (e.g. with soundfile) and pass the bytes"
        )
    raise MediaTypeError(f"cannot make audio from a {type(audio).__name__}")


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")
