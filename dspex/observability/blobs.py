"""Short placeholders for binary content (images, audio, files) wherever it is shown.

A request carrying an image holds it as base64, often megabytes of it. What a
person or a log reads gets a placeholder instead: the media type, the decoded
size and the start of a sha256, ``<image/png, 1.2 MB, sha256:3f2a9c01b7d4>``.
The digest is of the data URI text (what the cache key hashes too), so two
placeholders with the same digest are the same content. Values kept to be read
back (saved programs, the run store, the cache, ``GLOBAL_HISTORY`` entries)
keep the real content; only what is printed, logged, traced or sent as an
event is shortened (`dspex.observability.redact.redact` calls `elide_blobs`).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from typing import Any

#: a data URI carrying base64 content, as written in text or JSON
_DATA_URI = re.compile(r"data:([\w.+-]+/[\w.+-]+)((?:;[\w.+-]+=[^;,\"'\s]*)*);base64,([A-Za-z0-9+/]*={0,2})")
#: a bare run of base64 long enough to be content rather than a word, hash or key
_BASE64_RUN = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{256,}+={0,2}")
#: encoded binary uses most of the 64 symbols; runs with fewer distinct ones are text
_BASE64_VARIETY = 24
#: data URIs shorter than this are shown as they are (a 1x1 pixel is readable enough)
_SHOW_BELOW = 160


def human_size(size: int) -> str:
    """``size`` bytes as ``532 B``, ``14.2 kB``, ``1.2 MB`` (powers of 1000)."""
    if size < 1000:
        return f"{size} B"
    value = size / 1000
    for unit in ("kB", "MB"):
        if value < 999.95:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def base64_size(encoded: str) -> int:
    """How many bytes ``encoded`` (base64) decodes to, without decoding it."""
    padding = 2 if encoded.endswith("==") else 1 if encoded.endswith("=") else 0
    return (len(encoded) - padding) * 3 // 4


def short_digest(text: str) -> str:
    """The first 12 hex digits of the sha256 of ``text``."""
    return sha256_hex(text)[:12]


#: strings at least this long have their digest remembered (the last few of them)
_REMEMBER_FROM = 32 * 1024
_REMEMBERED = 64
_digests: dict[str, str] = {}
_digests_lock = threading.Lock()


def sha256_hex(text: str) -> str:
    """The sha256 of ``text`` (UTF-8), in hex. For long strings (an image's data URI)
    the digests of the last few are remembered: the same image comes back as the same
    str object, whose hash Python keeps, so asking again is a dict lookup."""
    if len(text) < _REMEMBER_FROM:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
    digest = _digests.get(text)
    if digest is None:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        with _digests_lock:
            if len(_digests) >= _REMEMBERED:
                _digests.pop(next(iter(_digests)), None)
            _digests[text] = digest
    return digest


def placeholder(media_type: str, size: int, digest: str) -> str:
    """``<image/png, 1.2 MB, sha256:3f2a9c01b7d4>``."""
    return f"<{media_type}, {human_size(size)}, sha256:{digest}>"


def describe_data_uri(uri: str) -> str:
    """The placeholder of a base64 data URI (anything else is returned unchanged)."""
    header, comma, payload = uri.partition(",")
    if not (comma and header.startswith("data:") and header.endswith(";base64")):
        return uri
    media_type = header[5:].split(";", 1)[0] or "application/octet-stream"
    return placeholder(media_type, base64_size(payload), short_digest(uri))


def elide_blobs(text: str) -> str:
    """``text`` with base64 data URIs and long bare base64 runs replaced by placeholders."""
    if len(text) < _SHOW_BELOW:
        return text
    if "base64," in text:
        text = _DATA_URI.sub(_data_uri_placeholder, text)
    return _BASE64_RUN.sub(_run_placeholder, text)


def _data_uri_placeholder(match: re.Match[str]) -> str:
    uri = match.group(0)
    if len(uri) < _SHOW_BELOW:
        return uri
    return placeholder(match.group(1), base64_size(match.group(3)), short_digest(uri))


def _run_placeholder(match: re.Match[str]) -> str:
    run = match.group(0)
    if len(set(run[:1024])) < _BASE64_VARIETY:
        return run  # "xxxx...", a DNA string, hex: text in the base64 alphabet, not content
    return f"<base64, {human_size(base64_size(run))}, sha256:{short_digest(run)}>"


def elide_in(value: Any) -> Any:
    """A copy of nested dicts/lists with every string passed through `elide_blobs`."""
    if isinstance(value, str):
        return elide_blobs(value)
    if isinstance(value, Mapping):
        return {key: elide_in(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [elide_in(item) for item in value]
    return value


def describe_part(part: Mapping[str, Any]) -> str:
    """A one-line placeholder for a non-text content part, in OpenAI's shapes
    (``image_url``, ``input_audio``, ``file``) or Anthropic's (``image``, ``document``)."""
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        url = str(image.get("url", "") if isinstance(image, Mapping) else image or "")
        return f"<image {shown_url(url)}>" if not url.startswith("data:") else describe_data_uri(url)
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        data = str(audio.get("data", ""))
        return placeholder(f"audio/{audio.get('format', '?')}", base64_size(data), short_digest(data))
    if kind in ("file", "input_file"):
        info = part.get("file") or part.get("input_file") or {}
        bits = [f"file {info['filename']}" if info.get("filename") else "file"]
        if info.get("file_id"):
            bits.append(f"id={info['file_id']}")
        shown = f"<{' '.join(bits)}>"
        data = info.get("file_data")
        return f"{shown} {describe_data_uri(str(data))}" if data else shown
    if kind in ("image", "document"):
        source = part.get("source") or {}
        if source.get("type") == "base64":
            data = str(source.get("data", ""))
            return placeholder(str(source.get("media_type", kind)), base64_size(data), short_digest(data))
        if source.get("type") == "url":
            return f"<{kind} {shown_url(str(source.get('url', '')))}>"
        if source.get("type") == "file":
            return f"<{kind} file_id={source.get('file_id', '')}>"
        return f"<{kind} {source.get('media_type', source.get('type', ''))}>".replace(" >", ">")
    return f"<{kind or 'part'}>"


def shown_url(url: str) -> str:
    """A URL as shown in placeholders and reprs: without its query string and fragment
    (signed URLs carry their credentials there)."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=-1)
    return url if cut < 0 else url[:cut] + "?…"


__all__ = [
    "base64_size",
    "describe_data_uri",
    "describe_part",
    "elide_blobs",
    "elide_in",
    "human_size",
    "placeholder",
    "sha256_hex",
    "short_digest",
    "shown_url",
]
