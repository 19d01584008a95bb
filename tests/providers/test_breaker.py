"""CircuitBreaker: open after consecutive failures, fail fast, one half-open probe, close.

Time is a fake clock moved by the test, so nothing here sleeps.
"""

from __future__ import annotations

import asyncio

import pytest

from dspex.errors import (
    CircuitOpenError,
    LMAuthError,
    LMBadRequestError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
)
from dspex.providers.breaker import CircuitBreaker, counts_as_failure


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, transitions: list[tuple[str, str]], **kwargs: object) -> CircuitBreaker:
    return CircuitBreaker(
        clock=clock,
        on_state_change=lambda old, new: transitions.append((old, new)),
        name="openai/test",
        **kwargs,  # type: ignore[arg-type]
    )


async def fail(error: BaseException) -> None:
    raise error


async def ok() -> str:
    return "ok"


async def trip(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(LMServerError):
            await breaker.call(lambda: fail(LMServerError("boom")))


async def test_opens_after_fail_max_consecutive_failures_and_fails_fast() -> None:
    clock, transitions = Clock(), []
    breaker = make(clock, transitions, fail_max=3, reset_timeout=10.0)
    await trip(breaker, 2)
    assert breaker.state == "closed" and breaker.fail_count == 2
    await trip(breaker, 1)  # the third failure re-raises the real error and opens
    assert breaker.state == "open"
    assert transitions == [("closed", "open")]

    called = []

    async def spy() -> str:
        called.append(1)
        return "ok"

    clock.now += 4.0
    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(spy)
    assert called == []  # failing fast means not calling the provider
    assert info.value.retry_after == pytest.approx(6.0)
    assert info.value.model == "openai/test"


async def test_success_resets_the_consecutive_count() -> None:
    breaker = make(Clock(), [], fail_max=3)
    await trip(breaker, 2)
    assert await breaker.call(ok) == "ok"
    await trip(breaker, 2)
    assert breaker.state == "closed"


@pytest.mark.parametrize(
    "error",
    [LMBadRequestError("bad", status=400), LMAuthError("no key", status=401), ValueError("bug")],
)
async def test_caller_errors_do_not_open_the_circuit(error: Exception) -> None:
    breaker = make(Clock(), [], fail_max=2)
    for _ in range(5):
        with pytest.raises(type(error)):
            await breaker.call(lambda: fail(error))
    assert breaker.state == "closed"
    assert breaker.fail_count == 0


def test_failure_classification() -> None:
    for error in (LMServerError("x"), LMTimeoutError("x"), LMTransportError("x"), TimeoutError()):
        assert counts_as_failure(error)
    assert counts_as_failure(LMRateLimitError("x"))
    assert not counts_as_failure(LMRateLimitError("x"), count_rate_limits=False)
    assert not counts_as_failure(LMBadRequestError("x"))


async def test_rate_limits_can_be_left_out() -> None:
    breaker = make(Clock(), [], fail_max=2, count_rate_limits=False)
    for _ in range(4):
        with pytest.raises(LMRateLimitError):
            await breaker.call(lambda: fail(LMRateLimitError("slow down")))
    assert breaker.state == "closed"


async def test_half_open_admits_exactly_one_probe_then_closes() -> None:
    clock, transitions = Clock(), []
    breaker = make(clock, transitions, fail_max=1, reset_timeout=5.0)
    await trip(breaker, 1)
    clock.now += 5.0
    assert breaker.state == "half_open"

    release = asyncio.Event()

    async def probe() -> str:
        await release.wait()
        return "probe"

    probe_task = asyncio.ensure_future(breaker.call(probe))
    await asyncio.sleep(0)  # let the probe get admitted
    for _ in range(3):  # concurrent calls while the probe runs fail fast
        with pytest.raises(CircuitOpenError):
            await breaker.call(ok)
    release.set()
    assert await probe_task == "probe"
    assert breaker.state == "closed"
    assert await breaker.call(ok) == "ok"
    assert transitions == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_failed_probe_reopens_for_a_fresh_timeout() -> None:
    clock, transitions = Clock(), []
    breaker = make(clock, transitions, fail_max=1, reset_timeout=5.0)
    await trip(breaker, 1)
    clock.now += 7.0
    with pytest.raises(LMTimeoutError):
        await breaker.call(lambda: fail(LMTimeoutError("still down")))
    assert breaker.state == "open"
    clock.now += 4.0
    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(ok)
    assert info.value.retry_after == pytest.approx(1.0)  # measured from the probe's failure
    clock.now += 1.0
    assert await breaker.call(ok) == "ok"
    assert transitions[-3:] == [
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


async def test_cancelled_probe_frees_the_gate() -> None:
    clock = Clock()
    breaker = make(clock, [], fail_max=1, reset_timeout=1.0)
    await trip(breaker, 1)
    clock.now += 1.0
    never = asyncio.Event()

    async def hang() -> None:
        await never.wait()

    probe = asyncio.ensure_future(breaker.call(hang))
    await asyncio.sleep(0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert await breaker.call(ok) == "ok"  # a new probe was admitted and closed it
    assert breaker.state == "closed"


async def test_outcome_of_a_call_started_before_the_circuit_opened_is_ignored() -> None:
    clock = Clock()
    breaker = make(clock, [], fail_max=2, reset_timeout=5.0)
    release = asyncio.Event()

    async def slow_ok() -> str:
        await release.wait()
        return "late"

    slow = asyncio.ensure_future(breaker.call(slow_ok))
    await asyncio.sleep(0)
    await trip(breaker, 2)
    assert breaker.state == "open"
    release.set()
    assert await slow == "late"
    # The late success says nothing about the provider now: still open, still failing fast.
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)


async def test_check_raises_only_when_a_call_would_fail_fast() -> None:
    clock = Clock()
    breaker = make(clock, [], fail_max=1, reset_timeout=2.0)
    breaker.check()
    await trip(breaker, 1)
    with pytest.raises(CircuitOpenError):
        breaker.check()
    clock.now += 2.0
    breaker.check()  # half-open with no probe running: a call would be admitted
    assert breaker.retry_after() == 0.0


async def test_reset_closes_and_forgets() -> None:
    clock, transitions = Clock(), []
    breaker = make(clock, transitions, fail_max=1, reset_timeout=60.0)
    await trip(breaker, 1)
    breaker.reset()
    assert breaker.state == "closed" and breaker.fail_count == 0
    assert await breaker.call(ok) == "ok"
    assert transitions == [("closed", "open"), ("open", "closed")]


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(fail_max=0)
    with pytest.raises(ValueError):
        CircuitBreaker(reset_timeout=-1)
