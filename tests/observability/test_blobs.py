"""Placeholders for base64 content in whatever is shown: logs, events, traces, history."""

from __future__ import annotations

import base64

from _media import png_bytes

from dspex.observability.blobs import (
    describe_data_uri,
    describe_part,
    elide_blobs,
    elide_in,
    human_size,
)
from dspex.observability.redact import redact, redact_data

PNG = png_bytes(60, 40, (200, 10, 10))
URI = "data:image/png;base64," + base64.b64encode(PNG + bytes(range(256)) * 4).decode()
B64 = base64.b64encode(bytes(range(256)) * 8).decode()


def test_data_uris_become_a_placeholder_with_type_size_and_digest() -> None:
    shown = elide_blobs(f"before {URI} after")
    assert shown.startswith("before <image/png, ") and shown.endswith("> after")
    assert "sha256:" in shown and URI[30:80] not in shown
    assert describe_data_uri(URI) in shown
    assert human_size(len(PNG) + 1024) in shown


def test_long_bare_base64_is_elided_short_text_is_not() -> None:
    assert B64 not in elide_blobs(f"audio: {B64}")
    assert elide_blobs("a short key abcdef0123456789 stays") == "a short key abcdef0123456789 stays"
    for text in ("x" * 1000, "ACGT" * 300, "0123456789abcdef" * 40):  # long, but text
        assert elide_blobs(f"value {text}") == f"value {text}"
    tiny = "data:image/png;base64,iVBORw0KGgo="
    assert elide_blobs(tiny) == tiny


def test_redact_elides_blobs_and_still_masks_secrets() -> None:
    text = redact(f'{{"url": "{URI}", "api_key": "sk-abcdefghijklmnopqrstuvwxyz"}}')
    assert URI[30:80] not in text and "sk-abcdef" not in text and "<image/png" in text
    data = redact_data({"messages": [{"content": [{"type": "image_url", "image_url": {"url": URI}}]}]})
    assert URI[30:80] not in str(data)


def test_elide_in_walks_nested_values() -> None:
    value = elide_in({"a": [URI, {"b": B64}], "n": 3})
    assert value["n"] == 3 and "<image/png" in value["a"][0] and B64 not in str(value)


def test_describe_part_for_each_provider_shape() -> None:
    assert describe_part({"type": "image_url", "image_url": {"url": URI}}) == describe_data_uri(URI)
    assert describe_part({"type": "image_url", "image_url": {"url": "https://x.org/a.png?sig=1"}}) == (
        "<image https://x.org/a.png?…>"
    )
    audio = describe_part({"type": "input_audio", "input_audio": {"data": B64, "format": "wav"}})
    assert audio.startswith("<audio/wav, 2.0 kB, sha256:")
    anthropic = describe_part({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}})
    assert anthropic.startswith("<image/png, 2.0 kB")
    assert describe_part({"type": "file", "file": {"file_id": "file-1", "filename": "a.pdf"}}) == "<file a.pdf id=file-1>"
    assert describe_part({"type": "document", "source": {"type": "file", "file_id": "f1"}}) == "<document file_id=f1>"
