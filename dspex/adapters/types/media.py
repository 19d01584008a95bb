"""What `dspex.Image`, `dspex.Audio` and `dspex.File` share: telling a file's
kind from its first bytes, data URIs, and the two explicit ways to load content
(`read_path`, `fetch_url`).

Security: building a media value from what a program is given (a string, a
dict parsed from an LM reply, a saved demo) never reads a file or opens a
connection: only the ``from_path`` and ``from_url`` class methods do, when a
developer calls them. ``fetch_url`` follows redirects and reaches any host the
machine can reach (loopback and cloud metadata addresses included), like any
HTTP client: check a URL that comes from untrusted input against an allowlist
before passing it.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from dspex.errors import MediaFetchError, MediaFileNotFoundError, MediaTypeError
from dspex.observability.blobs import shown_url
from dspex.utils.sniff import sniff

__all__ = ["fetch_url", "read_path", "sniff", "split_data_uri"]

#: the largest download `fetch_url` accepts unless told otherwise (OpenAI's image limit)
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff",
               "image/x-icon", "image/heic", "image/avif")
AUDIO_TYPES = ("audio/wav", "audio/mpeg", "audio/flac", "audio/ogg", "audio/webm", "audio/mp4")


def encode_data_uri(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def split_data_uri(uri: str) -> tuple[str, str]:
    """(media type, base64 text) of a ``data:<type>;base64,<data>`` URI."""
    header, comma, payload = uri.partition(",")
    if not comma or not header.startswith("data:") or not header.endswith(";base64"):
        raise MediaTypeError(
            f"{uri[:60]!r}... is not a base64 data URI (data:<media type>;base64,<data>)"
        )
    media_type = header[5:].split(";", 1)[0].strip().lower()
    if "/" not in media_type:
        raise MediaTypeError(f"the data URI {uri[:60]!r}... names no media type")
    return media_type, payload


def decode_head(payload: str, size: int = 64) -> bytes:
    """The first ``size`` bytes a base64 text decodes to (without decoding all of it)."""
    chunk = payload[: (size + 2) // 3 * 4]
    try:
        return base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise MediaTypeError(f"the data {payload[:40]!r}... is not valid base64") from None


def read_path(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of a local file, or `MediaFileNotFoundError` saying what was wrong."""
    file = Path(path).expanduser()
    if not file.exists():
        raise MediaFileNotFoundError(f"File not found: {file} does not exist ({what})")
    if not file.is_file():
        raise MediaFileNotFoundError(f"File not found: {file} is a directory, not a file ({what})")
    try:
        return file.read_bytes()
    except OSError as exc:
        raise MediaFileNotFoundError(f"{what}: {file} could not be read: {exc}") from exc


def guess_from_name(name: str) -> str | None:
    """The media type a file name's extension suggests."""
    guessed, _ = mimetypes.guess_type(name)
    return guessed


def fetch_url(
    url: str,
    *,
    what: str,
    timeout: float | None = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    verify: bool = True,
) -> tuple[bytes, str | None]:
    """Download ``url`` (http or https only): its body and the Content-Type it was
    served with (None if none). Raises `MediaFetchError` when the host does not
    answer, the request times out, the status is not 2xx or the body is larger
    than ``max_bytes``. ``verify=False`` skips TLS certificate checks (self-signed
    servers only)."""
    shown = shown_url(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise MediaFetchError(f"{what}: {shown!r} is not an http(s) URL", url=shown)
    request = urllib.request.Request(url, headers={"User-Agent": "dspex"})
    try:
        # verify=False is the caller asking to accept a self-signed certificate.
        context = None if verify else ssl._create_unverified_context()
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            body = response.read(max_bytes + 1)
            content_type = response.headers.get("Content-Type")
    except urllib.error.HTTPError as exc:
        raise MediaFetchError(
            f"{what}: {shown} answered HTTP {exc.code} ({exc.reason}); check the URL",
            url=shown,
            status=exc.code,
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MediaFetchError(
            f"{what}: could not download {shown}: {reason}. Check that the host is reachable "
            f"from here (timeout {timeout}s), or load the content another way (from_path, bytes)",
            url=shown,
        ) from None
    if len(body) > max_bytes:
        raise MediaFetchError(
            f"{what}: {shown} is larger than {max_bytes} bytes; pass max_bytes= to allow it",
            url=shown,
        )
    media_type = content_type.split(";", 1)[0].strip().lower() if content_type else None
    return body, media_type or None
