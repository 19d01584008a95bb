"""Provider fallback in-process: `LM(..., fallbacks=[...])` (dspex.clients.fallback).

The primary's endpoint is a closed port on 127.0.0.1 (connection refused) or the
scriptable fake provider; fallbacks are simulated LM servers started by each test.
"""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex.clients import fallback as fallback_module
from dspex.clients.history import GLOBAL_HISTORY
from dspex.clients.lm import LM, request_hooks
from dspex.clients.retry import RetryPolicy
from dspex.clients.usage import track_usage
from dspex.errors import (
    ConfigurationError,
    LMAuthError,
    LMBadRequestError,
    LMFallbackExhaustedError,
    LMServerError,
)
from dspex.observability.events import Event, subscribe
from dspex.simlm import start_sim_lm
from dspex.simlm.server import SimLMServer

SECRET = "sk-primary-secret-0123456789abcdef"


def closed_port() -> int:
    """A port nothing listens on (connection refused) until a test starts a server there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def quick(lm: LM, num_retries: int = 1) -> LM:
    lm.retry_policy = RetryPolicy(num_retries=num_retries, base=0.005, cap=0.02)
    return lm


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def sim() -> Iterator[SimLMServer]:
    server = start_sim_lm(seed=3)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def fresh_circuits() -> Iterator[None]:
    """Every test starts with closed in-process circuits at the default policy."""
    fallback_module.configure_circuits()
    yield
    fallback_module.configure_circuits()


@pytest.fixture
def circuits() -> Iterator[None]:
    """In-process circuits that open after 2 failures and probe after 0.3 s."""
    fallback_module.configure_circuits(fail_max=2, reset_timeout=0.3)
    try:
        yield
    finally:
        fallback_module.configure_circuits()


@pytest.fixture
def events() -> Iterator[list[Event]]:
    seen: list[Event] = []
    with subscribe(seen.append, ["lm.fallback", "breaker.state"], remote=False):
        yield seen


def dead_primary(fallback: LM, port: int | None = None, **kwargs: Any) -> LM:
    port = port or closed_port()
    return quick(
        LM(
            "openai/primary",
            api_base=f"http://127.0.0.1:{port}/v1",
            api_key=SECRET,
            fallbacks=[fallback],
            **kwargs,
        )
    )


def claude(sim: SimLMServer, **kwargs: Any) -> LM:
    # The fallback speaks the Anthropic protocol: each LM its own wire format.
    return LM("anthropic/claude-sim", api_base=sim.url, api_key="fallback-key", **kwargs)


# --- falling through -------------------------------------------------------------------


def test_a_refused_primary_is_answered_by_the_fallback(
    sim: SimLMServer, isolated_cache: Any, circuits: None, events: list[Event]
) -> None:
    backup = claude(sim)
    lm = dead_primary(backup)
    hooked: list[dict[str, Any]] = []
    request_hooks.append(hooked.append)
    try:
        with track_usage() as tracker:
            outputs = lm("What is 2+2?")
    finally:
        request_hooks.remove(hooked.append)

    assert outputs == ["This is a simulated reply to: What is 2+2?"]
    entry = lm.history[-1]
    assert entry["model"] == "anthropic/claude-sim"  # who answered
    assert entry["fallback_from"] == [
        {"model": "openai/primary", "error": "LMTransportError", "status": None}
    ]
    # One entry, in the called LM's, the answering LM's and the global history.
    assert backup.history[-1] is entry and GLOBAL_HISTORY[-1] is entry
    assert len(lm.history) == 1
    # Usage under the model that answered; the failed attempts cost nothing.
    assert set(tracker.by_model()) == {"anthropic/claude-sim"}
    assert tracker.by_model()["anthropic/claude-sim"].calls == 1
    assert backup.usage.calls == 1 and lm.usage.calls == 0
    # Request hooks see every LM asked: the primary's failure, then the answer.
    assert [(h["model"], h["error"]) for h in hooked] == [
        ("openai/primary", "LMTransportError"),
        ("anthropic/claude-sim", None),
    ]
    [event] = [e for e in events if e.kind == "lm.fallback"]
    assert event.source == "openai/primary"
    assert event.data["from_model"] == "openai/primary"
    assert event.data["to_model"] == "anthropic/claude-sim"
    assert event.data["error"] == "LMTransportError" and not event.data["circuit_open"]
    assert SECRET not in repr(event) and "fallback-key" not in repr(event)


async def test_a_program_reports_usage_under_the_fallback_model(
    sim: SimLMServer, isolated_cache: Any, circuits: None
) -> None:
    lm = dead_primary(claude(sim))
    with dspex.context(lm=lm, track_usage=True):
        prediction = await dspex.Predict("question -> answer").acall(question="2+2?")
    assert set(prediction.get_lm_usage()) == {"anthropic/claude-sim"}
    assert lm.history[-1]["model"] == "anthropic/claude-sim"


async def test_server_errors_after_retries_fall_through(
    server: Any, sim: SimLMServer, isolated_cache: Any
) -> None:
    lm = quick(LM("openai/primary", api_base=server.base_url, fallbacks=[claude(sim)]), 2)
    for _ in range(3):
        server.push(503, {"error": {"message": "overloaded"}})
    assert await lm.acall("hi") == ["This is a simulated reply to: hi"]
    assert server.count == 3  # the primary's own retries came first


@pytest.mark.parametrize(
    ("status", "error"), [(400, LMBadRequestError), (401, LMAuthError), (403, LMAuthError)]
)
async def test_a_bad_request_or_auth_error_raises_without_falling_through(
    server: Any,
    sim: SimLMServer,
    isolated_cache: Any,
    circuits: None,
    events: list[Event],
    status: int,
    error: type[Exception],
) -> None:
    lm = quick(LM("openai/primary", api_base=server.base_url, fallbacks=[claude(sim)]), 3)
    server.push(status, {"error": {"message": "no", "type": "invalid_request_error"}})
    with pytest.raises(error):
        await lm.acall("hi")
    assert server.count == 1  # not retried either
    assert sim.stats()["total"] == 0 and not events


async def test_a_fallbacks_own_bad_request_raises_and_says_why_it_was_asked(
    server: Any, isolated_cache: Any
) -> None:
    second = quick(LM("openai/second", api_base=server.base_url), 3)
    lm = dead_primary(second, num_retries=0)
    server.push(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
    with pytest.raises(LMAuthError) as caught:
        await lm.acall("hi")
    assert server.count == 1
    assert caught.value.__notes__ == [
        "dspex: openai/second was asked as a fallback after openai/primary failed "
        "(LMTransportError)"
    ]


async def test_when_every_lm_fails_the_error_lists_each_answer(
    server: Any, isolated_cache: Any, circuits: None
) -> None:
    second = quick(LM("openai/second", api_base=server.base_url), 0)
    lm = dead_primary(second, num_retries=0)
    server.push(500, {"error": {"message": "boom"}})
    with pytest.raises(LMFallbackExhaustedError) as caught:
        await lm.acall("hi")
    failure = caught.value
    assert [(model, kind) for model, kind, _ in failure.failures] == [
        ("openai/primary", "LMTransportError"),
        ("openai/second", "LMServerError"),
    ]
    assert isinstance(failure.__cause__, LMServerError)
    assert failure.retryable and failure.status == 500 and failure.model == "openai/second"
    assert "openai/primary" in str(failure) and "openai/second" in str(failure)
    copied = pickle.loads(pickle.dumps(failure))  # reaches a driver from a Ray worker
    assert copied.failures == failure.failures and copied.retryable
    assert isinstance(failure, dspex.LMError) and dspex.LMFallbackExhaustedError is type(failure)


async def test_two_fallbacks_are_asked_in_order(
    sim: SimLMServer, isolated_cache: Any, circuits: None, events: list[Event]
) -> None:
    down = quick(LM("openai/down", api_base=f"http://127.0.0.1:{closed_port()}/v1"), 0)
    lm = quick(
        LM(
            "openai/primary",
            api_base=f"http://127.0.0.1:{closed_port()}/v1",
            fallbacks=[down, claude(sim)],
        ),
        0,
    )
    await lm.acall("hi")
    assert lm.history[-1]["model"] == "anthropic/claude-sim"
    assert [m["model"] for m in lm.history[-1]["fallback_from"]] == ["openai/primary", "openai/down"]
    hops = [(e.data["from_model"], e.data["to_model"]) for e in events if e.kind == "lm.fallback"]
    assert hops == [("openai/primary", "openai/down"), ("openai/down", "anthropic/claude-sim")]


# --- the circuit, and coming back ---------------------------------------------------------


def test_an_open_circuit_sends_requests_straight_to_the_fallback_and_a_probe_brings_them_back(
    sim: SimLMServer, isolated_cache: Any, circuits: None, events: list[Event]
) -> None:
    port = closed_port()
    backup = claude(sim)
    lm = dead_primary(backup, port=port, cache=False)
    circuit = fallback_module.circuit_for(lm)

    lm("first")  # two refused attempts (one retry): the circuit opens
    assert circuit.state == "open"
    lm("second")  # fails fast: no attempt reaches the primary's endpoint
    fast = [e for e in events if e.kind == "lm.fallback"][-1]
    assert fast.data["circuit_open"] and fast.data["error"] == "CircuitOpenError"
    assert lm.history[-1]["model"] == "anthropic/claude-sim"

    primary = start_sim_lm(port=port, seed=4)  # the primary's endpoint comes back
    try:
        n = 0

        def answered_by_primary() -> bool:
            nonlocal n
            n += 1
            lm(f"question {n}")
            return lm.history[-1]["model"] == "openai/primary"

        # After reset_timeout a request probes the primary; its success closes the circuit.
        wait_for(answered_by_primary, 10.0, "the primary to answer again")
        assert circuit.state == "closed"
        lm("after")
        assert lm.history[-1]["model"] == "openai/primary"
        assert primary.stats()["total"] >= 2
    finally:
        primary.stop()
    moves = [(e.data["old"], e.data["new"]) for e in events if e.kind == "breaker.state"]
    assert moves[0] == ("closed", "open") and moves[-1] == ("half_open", "closed")


def test_a_fallback_answer_is_cached_under_the_fallback_so_the_primary_answers_once_back(
    sim: SimLMServer, isolated_cache: Any
) -> None:
    port = closed_port()
    lm = dead_primary(claude(sim), port=port, num_retries=0)
    lm("same question")
    assert lm.history[-1]["model"] == "anthropic/claude-sim"
    primary = start_sim_lm(port=port, seed=4)
    try:
        lm("same question")  # the primary's cache key has no entry: it is asked
        entry = lm.history[-1]
        assert entry["model"] == "openai/primary" and not entry["cached"]
        lm("same question")
        assert lm.history[-1]["model"] == "openai/primary" and lm.history[-1]["cached"]
    finally:
        primary.stop()


def test_the_last_lm_in_line_is_not_behind_an_in_process_circuit(
    server: Any, isolated_cache: Any, circuits: None
) -> None:
    # The last LM has nobody to fail fast to: its failures are its own, every time.
    last = quick(LM("openai/last", api_base=server.base_url, cache=False), 0)
    lm = dead_primary(last, num_retries=0, cache=False)
    for _ in range(4):
        server.push(500, {"error": {"message": "boom"}})
        with pytest.raises(LMFallbackExhaustedError):
            lm("hi")
    assert server.count == 4
    assert fallback_module.circuit_for(last).state == "closed"


# --- configuration, copies, pickles and saved programs ------------------------------------


def test_fallbacks_must_be_lms_without_fallbacks_of_their_own(sim: SimLMServer) -> None:
    inner = LM("openai/a", fallbacks=[LM("openai/b")])
    with pytest.raises(ConfigurationError, match="fallbacks of its own"):
        LM("openai/x", fallbacks=[inner])
    with pytest.raises(ConfigurationError, match=r"must be a dspex\.LM"):
        LM("openai/x", fallbacks=["openai/b"])
    with pytest.raises(ConfigurationError, match=r"list of dspex\.LM"):
        LM("openai/x", fallbacks=LM("openai/b"))  # type: ignore[arg-type]


async def test_fallbacks_survive_copy_and_pickle(
    sim: SimLMServer, isolated_cache: Any, circuits: None
) -> None:
    lm = dead_primary(claude(sim, temperature=0.0))
    for clone in (lm.copy(rollout_id=1), pickle.loads(pickle.dumps(lm)), copy.deepcopy(lm)):
        assert [f.model for f in clone.fallbacks] == ["anthropic/claude-sim"]
        assert clone.fallbacks[0].kwargs == {"temperature": 0.0}
        assert await clone.acall("copied") == ["This is a simulated reply to: copied"]
        assert clone.history[-1]["model"] == "anthropic/claude-sim"
    assert SECRET.encode() not in pickle.dumps(lm)
    assert b"fallback-key" not in pickle.dumps(lm)
    # A copy for another rollout asks the fallback for another sample too.
    assert lm.copy(rollout_id=7).history == []
    await lm.copy(rollout_id=7).acall("copied")
    assert GLOBAL_HISTORY[-1]["params"].get("rollout_id") == 7


def test_fallbacks_are_saved_without_keys_or_endpoints_and_loaded_back(
    sim: SimLMServer, tmp_path: Path
) -> None:
    lm = dead_primary(claude(sim, temperature=0.5))
    program = dspex.Predict("question -> answer")
    program.lm = lm
    path = tmp_path / "program.json"
    program.save(str(path))
    text = path.read_text()
    saved = json.loads(text)
    assert SECRET not in text and "fallback-key" not in text
    assert sim.url not in text and "127.0.0.1" not in text
    [state] = saved["lm"]["fallbacks"]
    assert state["model"] == "anthropic/claude-sim" and state["temperature"] == 0.5

    # Loaded with the LM given in code: its fallbacks keep their endpoints and keys.
    in_code = dspex.Predict("question -> answer")
    in_code.lm = dead_primary(claude(sim, temperature=0.0))
    with pytest.warns(UserWarning, match="another endpoint"):  # the primary's port differs
        in_code.load(str(path))
    [restored] = in_code.lm.fallbacks
    assert restored.api_base == sim.url and restored.kwargs["temperature"] == 0.5
    assert restored.credential() == "fallback-key"

    # Loaded alone: the fallback is rebuilt from its state (endpoint from the environment).
    alone = dspex.Predict("question -> answer")
    with pytest.warns(UserWarning, match="another endpoint"):
        alone.load(str(path))
    [rebuilt] = alone.lm.fallbacks
    assert rebuilt.model == "anthropic/claude-sim" and rebuilt.api_base is None
    assert LM.load_state(lm.dump_state()).fallbacks[0].model == "anthropic/claude-sim"


def test_an_lm_pickled_before_fallbacks_existed_loads_without_them() -> None:
    lm = LM("openai/x")
    state = lm.__getstate__()
    del state["fallbacks"]
    old = LM.__new__(LM)
    old.__setstate__(state)
    assert old.fallbacks == ()


def test_the_dashboards_activity_feed_shows_fall_throughs_one_line_per_run_of_them() -> None:
    from dspex.dashboard.activity import Activity

    def hop(to_model: str, t: float) -> dict[str, Any]:
        data = {"from_model": "openai/primary", "to_model": to_model, "error": "CircuitOpenError"}
        return {"kind": "lm.fallback", "source": "openai/primary", "time": t, "data": data}

    activity = Activity()
    other = {"kind": "child.restarted", "source": "tree", "time": 5.0, "data": {}}
    activity.add([hop("anthropic/a", 1.0), hop("anthropic/a", 2.0)])
    activity.add([hop("anthropic/a", 3.0), hop("openai/b", 4.0), other, hop("openai/b", 6.0)])
    shown = activity.snapshot()["events"]  # newest first
    assert [(e["kind"], e["time"], e["data"].get("count", 1)) for e in shown] == [
        ("lm.fallback", 6.0, 1),
        ("child.restarted", 5.0, 1),
        ("lm.fallback", 4.0, 1),
        ("lm.fallback", 3.0, 3),
    ]


async def test_concurrent_requests_during_an_outage_all_get_answers(
    sim: SimLMServer, isolated_cache: Any, circuits: None
) -> None:
    lm = dead_primary(claude(sim), cache=False)
    answers = await asyncio.gather(*(lm.acall(f"q{i}") for i in range(20)))
    assert answers == [[f"This is a simulated reply to: q{i}"] for i in range(20)]
    assert fallback_module.circuit_for(lm).state == "open"
