"""The simulated LM checks the images, audio and files it is sent, as a provider would,
answers from the text around them, and counts and fingerprints what it accepted."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from _media import pdf_bytes, png_bytes, wav_bytes
from simlm_helpers import qa_messages

from dspex.simlm import SimLMServer, start_sim_lm

PNG = png_bytes(5, 5)
PNG_B64 = base64.b64encode(PNG).decode()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm(seed=3) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def with_parts(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    messages = qa_messages("What is 2 + 3?")
    last = messages[-1]
    messages[-1] = {**last, "content": [{"type": "text", "text": last["content"]}, *parts]}
    return messages


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with http.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_openai_media_parts_are_accepted_counted_and_answered_from_text(sim: SimLMServer, http: Any) -> None:
    sim.reset_stats()
    wav = wav_bytes()
    parts = (
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64," + base64.b64encode(pdf_bytes()).decode()}},
    )
    status, reply = await post(http, f"{sim.url}/chat/completions", {"model": "m", "messages": with_parts(*parts)})
    assert status == 200 and "[[ ## answer ## ]]" in reply["choices"][0]["message"]["content"]
    stats = sim.stats()
    assert stats["media"] == {"image_url": 1, "input_audio": 1, "file": 1} and stats["media_requests"] == 1
    assert stats["recent_media"][0]["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert stats["recent_media"][1]["sha256"] == hashlib.sha256(wav).hexdigest()


@pytest.mark.parametrize(
    "part,error",
    [
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}, "image could not be read"),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}, "not valid base64"),
        ({"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}, "http(s) URL or a base64 data URI"),
        ({"type": "input_audio", "input_audio": {"data": PNG_B64, "format": "wav"}}, "not audio/wav"),
        ({"type": "input_audio", "input_audio": {"data": PNG_B64, "format": "ogg"}}, "format must be one of"),
        ({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}, "an Anthropic block"),
    ],
)
async def test_openai_bad_media_is_a_400(sim: SimLMServer, http: Any, part: dict[str, Any], error: str) -> None:
    status, reply = await post(http, f"{sim.url}/chat/completions", {"model": "m", "messages": with_parts(part)})
    assert status == 400 and error in reply["error"]["message"]


async def test_anthropic_blocks_are_checked(sim: SimLMServer, http: Any) -> None:
    def body(*blocks: dict[str, Any]) -> dict[str, Any]:
        return {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, *blocks]}]}

    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}
    status, _ = await post(http, f"{sim.url}/messages", body(image))
    assert status == 200
    wrong_type = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG_B64}}
    status, reply = await post(http, f"{sim.url}/messages", body(wrong_type))
    assert status == 400 and "not image/jpeg" in reply["error"]["message"]
    svg = {"type": "image", "source": {"type": "base64", "media_type": "image/svg+xml", "data": PNG_B64}}
    status, reply = await post(http, f"{sim.url}/messages", body(svg))
    assert status == 400 and "media_type" in reply["error"]["message"]
    status, reply = await post(http, f"{sim.url}/messages", body({"type": "image_url", "image_url": {"url": "https://x"}}))
    assert status == 400 and "an OpenAI content part" in reply["error"]["message"]
