"""LM construction, provider wiring, secrets, copies, sync edges, hooks, concurrency."""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
import threading
from typing import Any

import cloudpickle
import pytest

from dspex.clients import LM, LMCache, request_hooks
from dspex.clients import lm as lm_module
from dspex.errors import ConfigurationError

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
SECRET = "sk-test-THE-SECRET-VALUE-1234"


# --- construction --------------------------------------------------------------------


def test_model_string_parsing() -> None:
    lm = LM("openai/gpt-4o-mini")
    assert (lm.provider, lm.model_name, lm.model) == ("openai", "gpt-4o-mini", "openai/gpt-4o-mini")
    bare = LM("llama3.1:8b")
    assert (bare.provider, bare.model_name) == ("openai", "llama3.1:8b")
    nested = LM("openai/meta-llama/Llama-3.1-8B-Instruct")
    assert nested.model_name == "meta-llama/Llama-3.1-8B-Instruct"
    assert LM("anthropic/claude-3-5-haiku-latest").provider == "anthropic"


def test_unknown_provider_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"'openai/<model>'.*'anthropic/<model>'"):
        LM("gemini/gemini-pro")


def test_kwargs_become_default_request_params() -> None:
    lm = LM("openai/m", temperature=0.3, max_tokens=100, n=2, top_p=0.9, seed=1, stop=["x"])
    assert lm.kwargs == {
        "temperature": 0.3,
        "max_tokens": 100,
        "n": 2,
        "top_p": 0.9,
        "seed": 1,
        "stop": ["x"],
    }
    assert LM("openai/m").kwargs == {}


def test_secret_params_are_refused_per_call() -> None:
    lm = LM("openai/m")
    with pytest.raises(ConfigurationError, match="api_key"):
        lm.complete(MSGS, api_key="sk-x")


def test_bad_n_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="n must be"):
        LM("openai/m", n=0)


# --- wire format through a server -------------------------------------------------


async def test_openai_wire(server: Any, isolated_cache: Any, no_env_keys: None) -> None:
    lm = LM("openai/my-model", api_base=server.base_url, api_key=SECRET, temperature=0.5, seed=3)
    resp = await lm.acomplete(MSGS, temperature=0.0)
    seen = server.requests[0]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["Authorization"] == f"Bearer {SECRET}"
    assert seen.body == {"model": "my-model", "messages": MSGS, "temperature": 0.0, "seed": 3}
    assert resp.outputs == ["echo: hello"] and resp.finish_reasons == ["stop"]
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.calls) == (10, 5, 1)


async def test_openai_n_returns_n_outputs_in_one_request(server: Any, isolated_cache: Any) -> None:
    lm = LM("openai/m", api_base=server.base_url)
    resp = await lm.acomplete(MSGS, n=3)
    assert resp.outputs == ["echo: hello #0", "echo: hello #1", "echo: hello #2"]
    assert server.count == 1 and server.requests[0].body["n"] == 3


async def test_anthropic_wire_and_n_fan_out(
    server: Any, isolated_cache: Any, no_env_keys: None
) -> None:
    lm = LM("anthropic/claude-x", api_base=server.base_url, api_key=SECRET, max_tokens=64)
    resp = await lm.acomplete(MSGS, n=2)
    assert server.count == 2
    seen = server.requests[0]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == SECRET and "anthropic-version" in seen.headers
    assert seen.body["system"] == "Be brief."
    assert seen.body["messages"] == [{"role": "user", "content": "hello"}]
    assert seen.body["max_tokens"] == 64 and "n" not in seen.body
    assert resp.outputs == ["echo: hello", "echo: hello"]
    assert resp.usage.calls == 2 and resp.usage.prompt_tokens == 24


async def test_key_and_base_from_env(
    server: Any, isolated_cache: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    await LM("openai/m").acall("x")
    assert server.requests[0].headers["Authorization"] == "Bearer sk-from-env"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "ant-from-env")
    await LM("anthropic/c", api_base=server.base_url).acall("x")
    assert server.requests[1].headers["x-api-key"] == "ant-from-env"


# --- secrets ----------------------------------------------------------------------------


def test_repr_and_dump_state_hold_no_secrets() -> None:
    lm = LM("openai/m", api_key=SECRET, api_base="http://user:pw@host/v1", temperature=0.1)
    assert SECRET not in repr(lm) and "pw@host" not in repr(lm)
    state = lm.dump_state()
    assert state["model"] == "openai/m" and state["temperature"] == 0.1
    assert "api_key" not in state and "api_base" not in state
    assert SECRET not in str(state) and "pw@host" not in str(state)
    rebuilt = LM.from_state(state)
    assert rebuilt.kwargs == lm.kwargs and rebuilt.model == lm.model


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
async def test_pickle_drops_the_key_but_works_in_the_same_process(
    dumps: Any, server: Any, isolated_cache: Any, no_env_keys: None
) -> None:
    lm = LM("openai/m", api_base=server.base_url, api_key=SECRET)
    await lm.acall("warm")  # runtime state exists and is not pickled either
    data = dumps(lm)
    assert SECRET.encode() not in data
    clone = pickle.loads(data)
    assert len(clone.history) == 0 and clone.usage.calls == 0
    await clone.acall("x", cache=False)
    assert server.requests[-1].headers["Authorization"] == f"Bearer {SECRET}"


async def test_unpickled_elsewhere_falls_back_to_env(
    server: Any, isolated_cache: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = LM("openai/m", api_base=server.base_url, api_key=SECRET)
    data = cloudpickle.dumps(lm)
    # Another process has no registry entry: simulate by emptying ours.
    monkeypatch.setattr(lm_module, "_KEYS", {})
    monkeypatch.setenv("OPENAI_API_KEY", "sk-worker-env")
    await pickle.loads(data).acall("x", cache=False)
    assert server.requests[-1].headers["Authorization"] == "Bearer sk-worker-env"


def test_pickle_in_a_fresh_process_has_no_key(tmp_path: Any) -> None:
    data = cloudpickle.dumps(LM("openai/m", api_key=SECRET))
    path = tmp_path / "lm.pkl"
    path.write_bytes(data)
    code = (
        "import pickle, sys; lm = pickle.loads(open(sys.argv[1], 'rb').read()); "
        "print(repr(lm._api_key()))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "None"


async def test_secrets_stay_out_of_history_and_hooks(server: Any, isolated_cache: Any) -> None:
    events: list[dict[str, Any]] = []
    request_hooks.append(events.append)
    try:
        lm = LM("openai/m", api_base=server.base_url, api_key=SECRET)
        await lm.acall("x")
    finally:
        request_hooks.remove(events.append)
    text = str(list(lm.history)) + str(events)
    assert SECRET not in text and server.base_url not in text


# --- copy ------------------------------------------------------------------------------


async def test_copy_overrides_and_keeps_the_key(
    server: Any, isolated_cache: Any, no_env_keys: None
) -> None:
    lm = LM("openai/m", api_base=server.base_url, api_key=SECRET, temperature=0.0, num_retries=5)
    other = lm.copy(temperature=1.0, rollout_id=7, top_p=0.5)
    assert other.kwargs == {"temperature": 1.0, "top_p": 0.5}
    assert other.rollout_id == 7 and other.num_retries == 5
    assert lm.kwargs == {"temperature": 0.0} and lm.rollout_id is None
    assert lm.copy(temperature=None).kwargs == {}
    await other.acall("x")
    assert server.requests[-1].headers["Authorization"] == f"Bearer {SECRET}"
    rekeyed = lm.copy(api_key="sk-other")
    await rekeyed.acall("y")
    assert server.requests[-1].headers["Authorization"] == "Bearer sk-other"


# --- sync edges ---------------------------------------------------------------------------


def test_sync_call_from_a_plain_thread(server: Any, isolated_cache: Any) -> None:
    lm = LM("openai/m", api_base=server.base_url)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(lm("from thread")))
    thread.start()
    thread.join(10)
    assert results == [["echo: from thread"]]
    assert lm(messages=[{"role": "user", "content": "m"}]) == ["echo: m"]


async def test_sync_call_inside_a_running_loop(server: Any, isolated_cache: Any) -> None:
    lm = LM("openai/m", api_base=server.base_url)
    assert lm("inside loop") == ["echo: inside loop"]
    assert (lm.complete([{"role": "user", "content": "c"}])).outputs == ["echo: c"]


def test_call_without_prompt_or_messages() -> None:
    with pytest.raises(ConfigurationError, match="prompt or messages"):
        LM("openai/m")()


# --- concurrency and hooks --------------------------------------------------------------


async def test_max_concurrency_bounds_requests_in_flight(
    server: Any, isolated_cache: Any, wait_until: Any
) -> None:
    server.default_gated = True
    lm = LM("openai/m", api_base=server.base_url, max_concurrency=3, cache=False)
    copies = [lm, lm.copy(rollout_id=1), pickle.loads(pickle.dumps(lm))]  # share one limit
    tasks = [asyncio.create_task(copies[i % 3].acall(str(i))) for i in range(9)]
    await wait_until(lambda: server.count >= 3)
    assert server.count == 3  # the rest wait on the semaphore, not on the server
    server.open_gate()
    await asyncio.gather(*tasks)
    assert server.count == 9 and server.max_in_flight <= 3
    assert (lm.rpm, lm.tpm, lm.max_concurrency) == (None, None, 3)


async def test_request_hooks_see_success_and_error(server: Any, isolated_cache: Any) -> None:
    events: list[dict[str, Any]] = []

    def broken(_: dict[str, Any]) -> None:
        raise RuntimeError("observer bug")

    request_hooks.extend([events.append, broken])
    try:
        lm = LM("openai/m", api_base=server.base_url, num_retries=0)
        await lm.acall("a")
        await lm.acall("a")
        server.push(400, {"error": {"message": "nope"}})
        with pytest.raises(Exception, match="nope"):
            await lm.acall("b")
    finally:
        request_hooks.remove(events.append)
        request_hooks.remove(broken)
    assert [(e["cached"], e["error"]) for e in events] == [
        (False, None),
        (True, None),
        (False, "LMBadRequestError"),
    ]
    assert events[0]["usage"]["calls"] == 1 and events[0]["latency"] > 0
    assert events[2]["status"] == 400 and events[0]["model"] == "openai/m"


def test_lm_import_does_not_import_aiohttp() -> None:
    code = "import sys, dspex.clients; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_isolated_cache_fixture_is_used(isolated_cache: LMCache) -> None:
    from dspex.clients import get_cache

    assert get_cache() is isolated_cache
