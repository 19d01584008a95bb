"""The simulated LM's streamed answers on the wire: OpenAI chunks and Anthropic events,
chunking set through the admin endpoint, and a stream cut mid-way by the fault config."""

from __future__ import annotations

import json
from collections.abc import Iterator

import aiohttp
import pytest

from dspex.simlm import start_sim_lm
from dspex.simlm.server import SimLMServer
from dspex.simlm.streaming import split_text

MESSAGES = [{"role": "user", "content": "Tell me something about rivers and lakes"}]


@pytest.fixture
def sim() -> Iterator[SimLMServer]:
    with start_sim_lm(seed=2) as server:
        yield server


async def _post(url: str, body: dict[str, object]) -> tuple[int, str, list[bytes]]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        lines = []
        try:
            async for line in response.content:
                lines.append(line.rstrip(b"\r\n"))
        except aiohttp.ClientPayloadError:
            lines.append(b"<cut>")
        return response.status, response.headers.get("Content-Type", ""), lines


def _events(lines: list[bytes]) -> list[dict[str, object]]:
    return [json.loads(line[6:]) for line in lines if line.startswith(b"data: {")]


async def test_openai_stream_is_chunks_usage_and_done(sim: SimLMServer) -> None:
    body = {"model": "m", "messages": MESSAGES}
    async with aiohttp.ClientSession() as session, session.post(f"{sim.url}/chat/completions", json=body) as response:
        whole = (await response.json())["choices"][0]["message"]["content"]
    status, kind, lines = await _post(f"{sim.url}/chat/completions", {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert status == 200 and kind.startswith("text/event-stream")
    assert lines[-2:] == [b"data: [DONE]", b""]
    events = _events(lines)
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    text = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])  # type: ignore[union-attr]
    assert text == whole
    assert [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]] == ["stop"]  # type: ignore[union-attr]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] > 0  # type: ignore[index]
    # without include_usage there is no usage chunk
    _, _, plain = await _post(f"{sim.url}/chat/completions", {**body, "stream": True})
    assert all(e["choices"] for e in _events(plain))


async def test_anthropic_stream_is_the_messages_event_sequence(sim: SimLMServer) -> None:
    body = {"model": "m", "max_tokens": 200, "messages": MESSAGES, "stream": True}
    status, _, lines = await _post(f"{sim.url}/messages", body)
    names = [line[7:].decode() for line in lines if line.startswith(b"event: ")]
    assert status == 200
    assert names[:2] == ["message_start", "content_block_start"] and names[-2:] == ["message_delta", "message_stop"]
    events = _events(lines)
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")  # type: ignore[index]
    assert text.startswith("This is a simulated reply")
    assert events[0]["message"]["usage"]["input_tokens"] > 0  # type: ignore[index]
    assert events[-2]["usage"]["output_tokens"] > 0  # type: ignore[index]


async def test_chunking_is_set_through_the_admin_endpoint(sim: SimLMServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{sim.base_url}/admin/stream", json={"chunk_chars": 5}) as response:
            assert (await response.json())["chunk_chars"] == 5
        async with session.post(f"{sim.base_url}/admin/stream", json={"chunk_chars": -1}) as response:
            assert response.status == 400
    _, _, lines = await _post(f"{sim.url}/chat/completions", {"model": "m", "messages": MESSAGES, "stream": True})
    pieces = [c["delta"]["content"] for e in _events(lines) for c in e["choices"] if c["delta"].get("content")]  # type: ignore[union-attr,index]
    assert all(len(p) == 5 for p in pieces[:-1]) and len(pieces) > 3
    assert split_text("a bc  d", 0) == ["a", " bc", "  d"]


async def test_a_cut_fault_closes_the_stream_after_n_chunks_on_the_first_attempts(sim: SimLMServer) -> None:
    sim.set_faults(stream_cut_after=3, stream_cut_first=1)
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    _, _, first = await _post(f"{sim.url}/chat/completions", body)
    assert first[-1] == b"<cut>" and b"data: [DONE]" not in first
    assert sum(1 for e in _events(first) for c in e["choices"] if c["delta"].get("content")) == 3  # type: ignore[union-attr]
    _, _, second = await _post(f"{sim.url}/chat/completions", body)  # the same body's second attempt
    assert b"data: [DONE]" in second
    assert sim.stream_stats()["cut"] == 1 and sim.stream_stats()["streams"] == 2
