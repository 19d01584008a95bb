"""Images, audio and files in requests to the simulated LM.

The simulated LM cannot look at a picture, but it checks what it is sent the
way a provider does: an OpenAI request may carry ``image_url``, ``input_audio``
and ``file`` parts, an Anthropic one ``image`` and ``document`` blocks, each
with data that decodes to what it claims to be. Anything else is a 400 error
naming the part. Every part it accepts is counted in the stats (``media``) and
remembered with the sha256 of its bytes (``recent_media``), so a test can tell
that the very image it gave went over the wire. It answers from the text parts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from dspex.errors import SimLMRequestError
from dspex.utils.sniff import sniff

#: image types both providers take
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_OPENAI_AUDIO = {"wav": "audio/wav", "mp3": "audio/mpeg"}
#: content shapes of the other protocol, refused as the real APIs refuse them
_ANTHROPIC_ONLY = ("image", "document")
_OPENAI_ONLY = ("image_url", "input_audio", "file")


@dataclass(frozen=True, slots=True)
class MediaPart:
    """One non-text part of a request: its part type, media type, size and digest
    (sha256 of the decoded bytes; of the URL or file id when no bytes were sent)."""

    kind: str
    media_type: str
    size: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "media_type": self.media_type, "bytes": self.size, "sha256": self.sha256}


def openai_media(content: Any, where: str) -> list[MediaPart]:
    """The media parts of one OpenAI message's content (400 on an invalid one)."""
    found: list[MediaPart] = []
    for index, part in enumerate(content if isinstance(content, list) else ()):
        at = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _ANTHROPIC_ONLY:
            raise SimLMRequestError(f"{at}: invalid content part type {kind!r} (an Anthropic block)")
        if kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str):
                raise SimLMRequestError(f"{at}: image_url needs an object with a 'url'")
            found.append(_openai_image(url, at))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            audio_format = audio.get("format")
            if audio_format not in _OPENAI_AUDIO:
                raise SimLMRequestError(f"{at}: input_audio format must be one of {sorted(_OPENAI_AUDIO)}, got {audio_format!r}")
            data = _decode(audio.get("data"), at)
            _expect(data, _OPENAI_AUDIO[audio_format], at, "audio")
            found.append(MediaPart(kind, _OPENAI_AUDIO[audio_format], len(data), _digest(data)))
        elif kind == "file":
            found.append(_openai_file(part.get("file") or {}, at))
    return found


def anthropic_media(content: Any, where: str) -> list[MediaPart]:
    """The media blocks of one Anthropic message's content (400 on an invalid one)."""
    found: list[MediaPart] = []
    for index, block in enumerate(content if isinstance(content, list) else ()):
        at = f"{where}.content.{index}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind in _OPENAI_ONLY:
            raise SimLMRequestError(f"{at}.type: unknown content block type {kind!r} (an OpenAI content part)")
        if kind not in _ANTHROPIC_ONLY:
            continue
        source = block.get("source") or {}
        source_type = source.get("type")
        if source_type == "url" and isinstance(source.get("url"), str):
            found.append(MediaPart(kind, "url", 0, _digest(source["url"].encode())))
        elif source_type == "file" and isinstance(source.get("file_id"), str):
            found.append(MediaPart(kind, "file", 0, _digest(source["file_id"].encode())))
        elif source_type == "text" and kind == "document":
            data = str(source.get("data", "")).encode()
            found.append(MediaPart(kind, "text/plain", len(data), _digest(data)))
        elif source_type == "base64":
            media_type = source.get("media_type")
            allowed = _IMAGE_TYPES if kind == "image" else ("application/pdf",)
            if media_type not in allowed:
                raise SimLMRequestError(f"{at}.source.media_type: must be one of {allowed}, got {media_type!r}")
            data = _decode(source.get("data"), at)
            _expect(data, media_type, at, kind)
            found.append(MediaPart(kind, media_type, len(data), _digest(data)))
        else:
            raise SimLMRequestError(f"{at}.source: unsupported source {source_type!r} for a {kind} block")
    return found


def _openai_image(url: str, at: str) -> MediaPart:
    if url.startswith(("http://", "https://")):
        return MediaPart("image_url", "url", 0, _digest(url.encode()))
    if not url.startswith("data:") or ";base64," not in url:
        raise SimLMRequestError(f"{at}: image_url must be an http(s) URL or a base64 data URI")
    declared = url[5:].split(";", 1)[0]
    data = _decode(url.split(";base64,", 1)[1], at)
    kind = sniff(data, text=False)
    if kind not in _IMAGE_TYPES:
        raise SimLMRequestError(
            f"{at}: the image could not be read: its bytes are {kind or 'of no known format'} "
            f"(declared {declared}); send PNG, JPEG, GIF or WebP"
        )
    return MediaPart("image_url", kind, len(data), _digest(data))


def _openai_file(file: dict[str, Any], at: str) -> MediaPart:
    data_uri = file.get("file_data")
    if isinstance(data_uri, str):
        if not data_uri.startswith("data:") or ";base64," not in data_uri:
            raise SimLMRequestError(f"{at}: file_data must be a base64 data URI")
        data = _decode(data_uri.split(";base64,", 1)[1], at)
        return MediaPart("file", data_uri[5:].split(";", 1)[0], len(data), _digest(data))
    if isinstance(file.get("file_id"), str):
        return MediaPart("file", "file_id", 0, _digest(file["file_id"].encode()))
    raise SimLMRequestError(f"{at}: a file part needs file_data or file_id")


def _decode(data: Any, at: str) -> bytes:
    if not isinstance(data, str) or not data:
        raise SimLMRequestError(f"{at}: missing base64 data")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SimLMRequestError(f"{at}: the data is not valid base64") from None


def _expect(data: bytes, media_type: str, at: str, what: str) -> None:
    found = sniff(data, text=False)
    if found != media_type:
        raise SimLMRequestError(f"{at}: the {what} data is {found or 'of no known format'}, not {media_type}")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
