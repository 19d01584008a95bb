"""How images, audio and files are written for each provider: OpenAI takes the content
parts as dspex writes them; the Anthropic protocol turns them into its blocks, or
refuses (before sending) what its API cannot take."""

from __future__ import annotations

import base64
import json

import pytest
from _media import pdf_bytes, png_bytes

import dspex
from dspex.clients.anthropic_protocol import FILES_BETA, AnthropicProtocol
from dspex.clients.openai_protocol import OpenAIProtocol
from dspex.errors import UnsupportedMediaError


def anthropic_body(*parts: dict) -> tuple[dict, dict]:
    _, headers, body = AnthropicProtocol().build_request(
        api_base="http://x/v1",
        model_name="c",
        messages=[{"role": "user", "content": [{"type": "text", "text": "look"}, *parts]}],
        params={},
        api_key=None,
    )
    return headers, json.loads(body)


def test_openai_sends_the_parts_as_written() -> None:
    parts = [*dspex.Image(png_bytes()).format(), *dspex.File.from_bytes(pdf_bytes(), filename="a.pdf").format()]
    _, _, body = OpenAIProtocol().build_request(
        api_base="http://x/v1", model_name="m", messages=[{"role": "user", "content": parts}], params={}, api_key=None
    )
    assert json.loads(body)["messages"][0]["content"] == parts


def test_anthropic_turns_files_into_document_blocks() -> None:
    pdf = pdf_bytes()
    headers, body = anthropic_body(*dspex.File.from_bytes(pdf, filename="q3.pdf").format())
    block = body["messages"][0]["content"][1]
    assert block == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(pdf).decode()},
        "title": "q3.pdf",
    }
    assert "anthropic-beta" not in headers
    _, body = anthropic_body(*dspex.File.from_bytes(b"plain words", mime_type="text/plain").format())
    assert body["messages"][0]["content"][1]["source"] == {"type": "text", "media_type": "text/plain", "data": "plain words"}
    headers, body = anthropic_body(*dspex.File.from_file_id("file_01").format())
    assert body["messages"][0]["content"][1] == {"type": "document", "source": {"type": "file", "file_id": "file_01"}}
    assert headers["anthropic-beta"] == FILES_BETA


def test_anthropic_refuses_what_its_api_cannot_take() -> None:
    with pytest.raises(UnsupportedMediaError, match="takes no audio"):
        anthropic_body({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}})
    with pytest.raises(UnsupportedMediaError, match="only from http"):
        anthropic_body(*dspex.Image("gs://bucket/a.png").format())
    with pytest.raises(UnsupportedMediaError, match="this file is application/zip"):
        anthropic_body(*dspex.File.from_bytes(b"PK\x03\x04rest").format())
