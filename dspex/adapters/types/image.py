"""`Image`: a picture as a field value, sent to the LM as an image content part.

An image is held as one string, its ``url``: an ``http(s)://`` or ``gs://``
address the provider fetches itself, or a ``data:image/...;base64,...`` URI
carrying the bytes. Ways to make one:

* ``Image("https://...")``, ``Image("data:image/png;base64,...")``, ``Image(url=...)``
* ``Image(png_bytes)``: the kind is read from the bytes' first bytes (PNG, JPEG,
  GIF, WebP, ...), so bytes that are not an image are refused at once;
* ``Image(pil_image)`` when Pillow is installed (``pip install pillow``);
* ``Image.from_path(path)`` reads a file, ``Image.from_url(url)`` downloads one.

Only ``from_path`` and ``from_url`` touch the filesystem or the network;
``Image(...)``, and validating a field value (from a saved demo or an LM reply),
never do, so untrusted data cannot make a program read a file or fetch a URL.

In a prompt an image is an OpenAI ``image_url`` part (the Anthropic protocol
turns it into an ``image`` block); a ``list[dspex.Image]`` sends one part per
image. Shown anywhere (``repr``, ``str``, logs, ``inspect_history``) it is a
placeholder such as ``<image/png, 1.2 MB, sha256:3f2a9c01b7d4>``; saved, it is its
URL or data URI, and it loads back equal.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pydantic

from dspex.adapters.types.base import ContentPart, Type
from dspex.adapters.types.media import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT,
    decode_head,
    encode_data_uri,
    fetch_url,
    guess_from_name,
    read_path,
    sniff,
    split_data_uri,
)
from dspex.errors import MediaTypeError
from dspex.observability.blobs import base64_size, describe_data_uri, short_digest, shown_url

_UNSET: Any = object()
_URL_SCHEMES = ("http", "https", "gs")


class Image(Type):
    """An image input: a URL the provider fetches, or the image's bytes as a data URI."""

    url: str
    parts_value: ClassVar[bool] = True

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    def __init__(self, source: Any = None, /, *, download: Any = _UNSET, verify: Any = _UNSET, **data: Any) -> None:
        legacy = download is not _UNSET or verify is not _UNSET
        if legacy and source is None:
            # Only a developer's positional call may download: a dict from an LM reply
            # or a saved file never reaches this path with download=True.
            raise TypeError("download= and verify= go with a positional source; use Image.from_url(url, verify=...)")
        if source is not None and "url" in data:
            raise TypeError("Image received both `source` and `url`; give the image once")
        if legacy:
            warnings.warn(
                "the `download` and `verify` arguments of Image() are deprecated: use "
                "Image.from_url(url, verify=...) to download an image, or Image(url) to send the URL itself",
                DeprecationWarning,
                stacklevel=2,
            )
        if source is not None:
            if download is True and isinstance(source, str) and urlsplit(source).scheme in ("http", "https"):
                source = type(self).from_url(source, verify=verify is not False).url
            data["url"] = source
        if "url" in data:
            # Normalised here so a bad source raises our own error, not pydantic's wrapper.
            data["url"] = encode_image(data["url"])
        super().__init__(**data)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_any(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {**value, "url": encode_image(value["url"])} if "url" in value else value
        return {"url": encode_image(value)}

    # --- explicit loading ------------------------------------------------------------

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> Image:
        """The image in a local file (its kind read from its bytes, not its name)."""
        data = read_path(path, "Image.from_path")
        return cls(url=_image_data_uri(data, f"the file {os.fspath(path)}"))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Image:
        """Deprecated name of `from_path`."""
        warnings.warn("Image.from_file is deprecated: use Image.from_path", DeprecationWarning, stacklevel=2)
        return cls.from_path(path)

    @classmethod
    def from_url(
        cls,
        url: str,
        verify: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> Image:
        """Download an http(s) image now and hold its bytes (as a data URI).

        Raises `MediaFetchError` if it cannot be downloaded (unreachable host, timeout,
        error status, larger than ``max_bytes``) and `MediaTypeError` if what came back
        is not an image. This fetches whatever host the URL names (see
        `dspex.adapters.types.media` on untrusted URLs). To let the provider fetch the
        image instead, pass the URL itself: ``Image(url)``.
        """
        body, served_as = fetch_url(url, what="Image.from_url", timeout=timeout, max_bytes=max_bytes, verify=verify)
        shown = shown_url(url)
        return cls(url=_image_data_uri(body, f"what {shown} returned", served_as=served_as))

    @classmethod
    def from_PIL(cls, pil_image: Any) -> Image:
        """Deprecated name of ``Image(pil_image)``."""
        warnings.warn("Image.from_PIL is deprecated: use Image(pil_image)", DeprecationWarning, stacklevel=2)
        return cls(pil_image)

    # --- what it is --------------------------------------------------------------------

    @property
    def is_data(self) -> bool:
        """True when the image's bytes are held here (a data URI), not only its address."""
        return self.url.startswith("data:")

    @property
    def media_type(self) -> str | None:
        """``image/png`` and the like: from the data URI, else guessed from the URL's name."""
        if self.is_data:
            return split_data_uri(self.url)[0]
        return guess_from_name(urlsplit(self.url).path)

    @property
    def size(self) -> int | None:
        """Bytes of image data held (None for a URL)."""
        return base64_size(self.url.partition(",")[2]) if self.is_data else None

    @property
    def digest(self) -> str:
        """The first 12 hex digits of the sha256 of ``url`` (as placeholders show it)."""
        return short_digest(self.url)

    def to_bytes(self) -> bytes:
        """The image's bytes (only for an image held as a data URI)."""
        import base64

        if not self.is_data:
            raise MediaTypeError(f"{self} is a URL; Image.from_url(url) downloads it")
        return base64.b64decode(self.url.partition(",")[2])

    # --- in prompts and saved files --------------------------------------------------------

    def format(self) -> list[ContentPart]:
        return [{"type": "image_url", "image_url": {"url": self.url}}]

    @classmethod
    def description(cls) -> str:
        return "an image"

    def json_value(self, dumped: Any) -> Any:
        return self.url

    def __str__(self) -> str:
        return describe_data_uri(self.url) if self.is_data else f"<image {shown_url(self.url)}>"

    def __repr__(self) -> str:
        if self.is_data:
            return f"Image({describe_data_uri(self.url)})"
        return f"Image(url={shown_url(self.url)!r})"


def encode_image(image: Any) -> str:
    """The ``url`` an `Image` holds for ``image``: a URL or data URI kept as it is (a
    data URI checked to be an image), bytes or a PIL image encoded as a data URI.

    Never reads a file or the network: a local path is refused with a pointer to
    ``Image.from_path``. Raises `MediaTypeError` for anything that is not an image.
    """
    if isinstance(image, Image):
        return image.url
    if isinstance(image, dict) and set(image) == {"url"}:
        return encode_image(image["url"])
    if isinstance(image, str):
        return _checked_string(image.strip())
    if isinstance(image, bytes | bytearray | memoryview):
        return _image_data_uri(bytes(image), "the bytes")
    if isinstance(image, os.PathLike):
        raise MediaTypeError(
            f"Image({os.fspath(image)!r}) does not read files: use Image.from_path(path) to load a local image"
        )
    if _is_pil_image(image):
        return _encode_pil(image)
    raise MediaTypeError(
        f"cannot make an image from a {type(image).__name__}: give a URL, a data URI, bytes, "
        "a PIL image (with Pillow installed), or load one with Image.from_path / Image.from_url"
    )


def _checked_string(text: str) -> str:
    if text.startswith("data:"):
        media_type, payload = split_data_uri(text)
        if not media_type.startswith("image/"):
            raise MediaTypeError(
                f"a data URI of {media_type} is not an image; send documents with dspex.File "
                "and audio with dspex.Audio"
            )
        kind = sniff(decode_head(payload))
        if kind is not None and not kind.startswith("image/"):
            raise MediaTypeError(f"the data URI says {media_type}, but its bytes are {kind}, not an image")
        return text
    parts = urlsplit(text)
    if parts.scheme in _URL_SCHEMES and parts.netloc:
        return text
    if parts.scheme == "file" or (not parts.scheme and _looks_like_path(text)):
        raise MediaTypeError(
            f"Image({text!r}) does not read files: use Image.from_path({text!r}) to load a local image"
        )
    raise MediaTypeError(
        f"Unrecognized image source {text[:80]!r}: give an http(s) or gs:// URL or a data URI; "
        "local files are read only by Image.from_path(path)"
    )


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or os.path.splitext(text)[1] != ""


def _image_data_uri(data: bytes, source: str, served_as: str | None = None) -> str:
    kind = sniff(data)
    if kind is None or not kind.startswith("image/"):
        looks = f"they look like {kind}" if kind else "they match no format dspex knows"
        served = f"; it was served as {served_as}" if served_as else ""
        hint = " (send PDFs and other documents with dspex.File)" if kind and not kind.startswith("image/") else ""
        raise MediaTypeError(
            f"{source} could not be identified as an image ({looks}{served}). "
            f"Images dspex reads: PNG, JPEG, GIF, WebP, BMP, TIFF, ICO, HEIC, AVIF{hint}"
        )
    return encode_data_uri(kind, data)


def _is_pil_image(value: Any) -> bool:
    # Checked by module name, so Pillow is imported only when given one of its images.
    return type(value).__module__.startswith("PIL.") and hasattr(value, "save") and hasattr(value, "mode")


def _encode_pil(image: Any) -> str:
    saved_as = (getattr(image, "format", None) or "PNG").upper()
    if saved_as not in ("PNG", "JPEG", "GIF", "WEBP"):
        saved_as = "PNG"  # what every provider takes
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=saved_as)
    except (OSError, ValueError, KeyError):  # e.g. an RGBA image cannot be a JPEG
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return _image_data_uri(buffer.getvalue(), "the PIL image")
