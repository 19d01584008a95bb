"""The simulated LM over real HTTP: endpoints, every fault kind, stats, Anthropic API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from simlm_helpers import parse_sections, qa_messages

from dspex.simlm import SimLMServer, SimTransport, datasets, start_sim_lm
from dspex.simlm.faults import FaultConfig, FaultInjector

QUESTION = datasets.load("arithmetic", "dev")[0]["question"]


@pytest.fixture
def sim() -> Iterator[SimLMServer]:
    server = start_sim_lm(seed=7)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _chat_body(question: str = QUESTION, **params: Any) -> dict[str, Any]:
    return {"model": "sim", "messages": qa_messages(question), **params}


async def _post(
    http: aiohttp.ClientSession,
    url: str,
    body: Any,
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    async with http.post(url, data=data, headers=headers, **kw) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


async def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.01)


async def test_chat_completion_matches_the_in_process_transport(
    sim: SimLMServer, http: aiohttp.ClientSession
) -> None:
    assert sim.url == f"http://127.0.0.1:{sim.port}/v1"
    status, _, data = await _post(http, f"{sim.url}/chat/completions", _chat_body(n=2))
    assert status == 200
    assert data["model"] == "sim" and data["id"]
    assert len(data["choices"]) == 2
    usage = data["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    local = await SimTransport(seed=7).post(
        "http://x/v1/chat/completions",
        headers={},
        body=json.dumps(_chat_body(n=2)).encode(),
        timeout=5,
    )
    assert [c["message"] for c in local.json()["choices"]] == [
        c["message"] for c in data["choices"]
    ]


async def test_models_and_bad_requests(sim: SimLMServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{sim.url}/models") as resp:
        assert resp.status == 200
        assert (await resp.json())["data"][0]["id"] == "sim-lm"
    for body in (
        b"{not json",
        {"model": "sim"},
        {"messages": []},
        {"messages": [{"role": "user"}]},
    ):
        status, _, data = await _post(http, f"{sim.url}/chat/completions", body)
        assert status == 400
        assert set(data["error"]) >= {"message", "type", "code"}
        assert data["error"]["type"] == "invalid_request_error"
    status, _, _ = await _post(http, f"{sim.url}/nowhere", {})
    assert status == 404


async def test_error_500_and_429_rates_are_seeded(http: aiohttp.ClientSession) -> None:
    faults = {"error_500_rate": 0.3, "error_429_rate": 0.3, "retry_after": 2}

    async def statuses() -> list[int]:
        with start_sim_lm(seed=1, faults=faults) as server:
            out = []
            for example in datasets.load("arithmetic", "dev")[:40]:
                status, headers, data = await _post(
                    http, f"{server.url}/chat/completions", _chat_body(example["question"])
                )
                if status == 429:
                    assert headers["Retry-After"] == "2"
                    assert data["error"]["type"] == "rate_limit_error"
                if status == 500:
                    assert data["error"]["type"] == "server_error"
                out.append(status)
            return out

    first = await statuses()
    assert {200, 429, 500} <= set(first)
    assert first == await statuses()


async def test_timeout_fault_hangs_past_the_client_timeout(
    sim: SimLMServer, http: aiohttp.ClientSession
) -> None:
    sim.set_faults(timeout_rate=1.0, hang_seconds=30)
    with pytest.raises(asyncio.TimeoutError):
        await _post(
            http,
            f"{sim.url}/chat/completions",
            _chat_body(),
            timeout=aiohttp.ClientTimeout(total=0.2),
        )
    assert sim.stats()["faults"] == {"timeout": 1}
    sim.set_faults()
    status, _, _ = await _post(http, f"{sim.url}/chat/completions", _chat_body())
    assert status == 200


async def test_malformed_and_truncated_replies(
    sim: SimLMServer, http: aiohttp.ClientSession
) -> None:
    sim.set_faults(malformed_rate=1.0)
    _, _, data = await _post(http, f"{sim.url}/chat/completions", _chat_body())
    text = data["choices"][0]["message"]["content"]
    assert "[[ ##" not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    sim.set_faults(truncated_rate=1.0)
    _, _, data = await _post(http, f"{sim.url}/chat/completions", _chat_body())
    choice = data["choices"][0]
    assert choice["finish_reason"] == "length"
    assert "[[ ## completed ## ]]" not in choice["message"]["content"]


async def test_max_tokens_cuts_the_reply(sim: SimLMServer, http: aiohttp.ClientSession) -> None:
    _, _, data = await _post(http, f"{sim.url}/chat/completions", _chat_body(max_tokens=3))
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] <= 3


async def test_outage_starts_and_ends_through_the_admin_endpoint(
    sim: SimLMServer, http: aiohttp.ClientSession
) -> None:
    status, _, _ = await _post(http, f"{sim.base_url}/admin/faults", {"outage": True})
    assert status == 200
    status, _, data = await _post(http, f"{sim.url}/chat/completions", _chat_body())
    assert status == 503 and "outage" in data["error"]["message"]
    async with http.get(f"{sim.url}/models") as resp:
        assert resp.status == 503
    status, _, _ = await _post(http, f"{sim.base_url}/admin/faults", {})
    assert status == 200
    status, _, _ = await _post(http, f"{sim.url}/chat/completions", _chat_body())
    assert status == 200


def test_outage_window_ends_by_itself() -> None:
    now = [100.0]
    injector = FaultInjector(FaultConfig(outage_seconds=10), clock=lambda: now[0])
    assert injector.decide(b"a").status == 503
    now[0] = 109.9
    assert injector.decide(b"a").status == 503
    now[0] = 110.0
    assert injector.decide(b"a").status is None


async def test_fail_first_per_distinct_body(sim: SimLMServer, http: aiohttp.ClientSession) -> None:
    sim.set_faults(FaultConfig(fail_first=2, fail_status=503, retry_after=0))
    other = datasets.load("arithmetic", "dev")[1]["question"]
    for body in (_chat_body(), _chat_body(other)):
        seen = [(await _post(http, f"{sim.url}/chat/completions", body))[0] for _ in range(4)]
        assert seen == [503, 503, 200, 200]


async def test_bad_fault_config_is_rejected(sim: SimLMServer, http: aiohttp.ClientSession) -> None:
    status, _, data = await _post(http, f"{sim.base_url}/admin/faults", {"error_500_rate": 2})
    assert status == 400 and "error_500_rate" in data["error"]["message"]
    status, _, _ = await _post(http, f"{sim.base_url}/admin/faults", {"no_such_fault": 1})
    assert status == 400


async def test_stats_count_requests_tokens_and_concurrency(
    sim: SimLMServer, http: aiohttp.ClientSession
) -> None:
    usage = 0
    for n in (1, 3):
        _, _, data = await _post(http, f"{sim.url}/chat/completions", _chat_body(n=n))
        usage += data["usage"]["total_tokens"]
    await _post(http, f"{sim.url}/chat/completions", b"oops")
    async with http.get(f"{sim.base_url}/stats") as resp:
        stats = await resp.json()
    assert stats["total"] == 3
    assert stats["by_status"] == {"200": 2, "400": 1}
    assert stats["by_path"] == {"/v1/chat/completions": 3}
    assert stats["completions"] == 2 and stats["choices"] == 4
    assert stats["total_tokens"] == usage
    assert stats["in_flight"] == 0 and stats["max_in_flight"] == 1

    sim.set_faults(timeout_rate=1.0, hang_seconds=30)
    tasks = [
        asyncio.create_task(_post(http, f"{sim.url}/chat/completions", _chat_body(seed=i)))
        for i in range(10)
    ]
    try:
        await _wait_for(lambda: sim.stats()["in_flight"] == 10)
        assert sim.stats()["max_in_flight"] == 10
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    status, _, _ = await _post(http, f"{sim.base_url}/admin/reset", {})
    after = sim.stats()
    assert status == 200 and after["total"] == 0 and after["completions"] == 0


async def test_anthropic_messages_endpoint(sim: SimLMServer, http: aiohttp.ClientSession) -> None:
    system, *turns = qa_messages(QUESTION, reasoning=True)
    body = {
        "model": "claude-sim",
        "system": system["content"],
        "max_tokens": 512,
        "messages": [
            {"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in turns
        ],
    }
    status, _, data = await _post(http, f"{sim.url}/messages", body)
    assert status == 200
    assert (
        data["type"] == "message" and data["role"] == "assistant" and data["model"] == "claude-sim"
    )
    assert data["stop_reason"] == "end_turn"
    assert set(parse_sections(data["content"][0]["text"])) == {"reasoning", "answer"}
    assert data["usage"]["input_tokens"] > 0 and data["usage"]["output_tokens"] > 0
    status, _, error = await _post(
        http, f"{sim.url}/messages", {k: v for k, v in body.items() if k != "max_tokens"}
    )
    assert (
        status == 400
        and error["type"] == "error"
        and error["error"]["type"] == "invalid_request_error"
    )
    sim.set_faults(error_429_rate=1.0)
    status, headers, error = await _post(http, f"{sim.url}/messages", body)
    assert (
        status == 429 and error["error"]["type"] == "rate_limit_error" and "Retry-After" in headers
    )


async def test_api_key_is_enforced_when_set(http: aiohttp.ClientSession) -> None:
    with start_sim_lm(api_key="sk-sim") as server:
        status, _, data = await _post(http, f"{server.url}/chat/completions", _chat_body())
        assert status == 401 and data["error"]["code"] == "invalid_api_key"
        status, _, _ = await _post(
            http,
            f"{server.url}/chat/completions",
            _chat_body(),
            headers={"Authorization": "Bearer sk-sim"},
        )
        assert status == 200


def test_non_loopback_host_is_refused() -> None:
    with pytest.raises(ValueError, match="loopback"):
        start_sim_lm(host="0.0.0.0")
