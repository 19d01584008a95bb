"""CircuitBreaker: open on a failure rate (or a run of failures), fail fast or wait,
one half-open probe, close.

Time is a fake clock moved by the test, so nothing here sleeps; the few tests of
waiting through an open period use the real clock with a reset timeout of a
fraction of a second. The window logic itself is tested in test_breaker_state.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from dspex.clients.breaker import CircuitBreaker, counts_as_failure
from dspex.errors import (
    CircuitOpenError,
    ConfigurationError,
    LMAuthError,
    LMBadRequestError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
)


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
    with pytest.raises(ConfigurationError, match="fail_max"):
        CircuitBreaker(fail_max=0)
    with pytest.raises(ConfigurationError, match="reset_timeout"):
        CircuitBreaker(reset_timeout=-1)
    with pytest.raises(ConfigurationError, match="minimum_calls"):
        CircuitBreaker(window=10, minimum_calls=20)
    CircuitBreaker(window=10)  # the default minimum follows a smaller window


# --- flaky is not down ---------------------------------------------------------------


async def test_default_breaker_stays_closed_through_runs_of_random_failures() -> None:
    # One call in five fails, five in a row at times (as random 429s/500s under
    # concurrency do): the provider answers 80% of requests, so nothing fails fast.
    clock = Clock()
    breaker = make(clock, [])
    for _ in range(40):
        for _ in range(20):
            assert await breaker.call(ok) == "ok"
        await trip(breaker, 5)
    assert breaker.state == "closed"
    assert breaker.failure_rate == pytest.approx(0.2)
    assert breaker.window_calls == 100


async def test_default_breaker_opens_on_an_outage_within_fail_max_calls() -> None:
    clock, transitions = Clock(), []
    breaker = make(clock, transitions)
    for _ in range(200):
        assert await breaker.call(ok) == "ok"
    await trip(breaker, 19)
    assert breaker.state == "closed"
    await trip(breaker, 1)
    assert breaker.state == "open" and transitions == [("closed", "open")]
    with pytest.raises(CircuitOpenError, match="20 failures in a row"):
        await breaker.call(ok)


# --- waiting for the circuit (batch work) -----------------------------------------------


async def settle() -> None:
    """Let every ready task run until they all block (a few loop passes)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_waiters_proceed_when_the_probe_succeeds() -> None:
    clock = Clock()
    breaker = make(clock, [], fail_max=1, reset_timeout=5.0)
    await trip(breaker, 1)
    clock.now += 5.0
    release = asyncio.Event()

    async def probe() -> str:
        await release.wait()
        return "probe"

    probe_task = asyncio.ensure_future(breaker.call(probe))
    await settle()
    waiters = [
        asyncio.ensure_future(breaker.call(ok, until=clock.now + 60.0)) for _ in range(3)
    ]
    await settle()
    assert not any(w.done() for w in waiters)  # waiting for the probe, not failing
    assert breaker.waiting == 3
    with pytest.raises(CircuitOpenError):  # a caller without `until` still fails fast
        await breaker.call(ok)
    release.set()
    assert await probe_task == "probe"
    assert await asyncio.gather(*waiters) == ["ok"] * 3
    assert breaker.state == "closed" and breaker.waiting == 0


async def test_a_waiter_whose_deadline_comes_before_the_next_probe_fails_then() -> None:
    clock = Clock()
    breaker = make(clock, [], fail_max=1, reset_timeout=5.0)
    await trip(breaker, 1)
    clock.now += 5.0
    release = asyncio.Event()

    async def failing_probe() -> None:
        await release.wait()
        raise LMServerError("still down")

    probe_task = asyncio.ensure_future(breaker.call(failing_probe))
    await settle()
    waiter = asyncio.ensure_future(breaker.call(ok, until=clock.now + 3.0))
    await settle()
    assert not waiter.done()
    release.set()
    with pytest.raises(LMServerError):
        await probe_task
    # The circuit reopened for 5 s; this waiter may wait 3 s more: it cannot be let through.
    with pytest.raises(CircuitOpenError, match="gave up waiting") as info:
        await waiter
    assert info.value.retry_after == pytest.approx(5.0)


async def test_a_cancelled_probe_hands_the_probe_to_a_waiter() -> None:
    clock = Clock()
    breaker = make(clock, [], fail_max=1, reset_timeout=1.0)
    await trip(breaker, 1)
    clock.now += 1.0
    never = asyncio.Event()

    async def hang() -> None:
        await never.wait()

    probe = asyncio.ensure_future(breaker.call(hang))
    await settle()
    waiter = asyncio.ensure_future(breaker.call(ok, until=clock.now + 60.0))
    await settle()
    assert not waiter.done()
    probe.cancel()
    assert await waiter == "ok"  # woken by the freed slot, it probed and closed the circuit
    assert breaker.state == "closed"


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    clock = Clock()
    breaker = make(clock, [], fail_max=1, reset_timeout=60.0)
    await trip(breaker, 1)
    waiter = asyncio.ensure_future(breaker.call(ok, until=clock.now + 3600.0))
    await settle()
    assert breaker.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert breaker.waiting == 0


async def test_waiters_sit_out_the_open_period_and_failed_probes_until_one_succeeds() -> None:
    # Real clock, short timeout: nothing wakes the waiters but the passing of time
    # (open -> a probe may go) and the transitions the probes cause.
    breaker = CircuitBreaker(fail_max=1, reset_timeout=0.05, name="openai/test")
    await trip(breaker, 1)
    outcomes = iter([LMServerError("down"), LMServerError("down"), None])
    probes = 0

    async def call_provider() -> str:
        nonlocal probes
        if breaker.state != "closed":
            probes += 1
            error = next(outcomes)
            if error is not None:
                raise error
        return "ok"

    async def batch_call() -> str | BaseException:
        # A batch caller retries its own failed attempts, as the pool's retries do.
        until = breaker.clock() + 30.0
        while True:
            try:
                return await breaker.call(call_provider, until=until)
            except LMServerError:
                continue

    results = await asyncio.wait_for(asyncio.gather(*(batch_call() for _ in range(8))), 30.0)
    assert results == ["ok"] * 8
    assert probes == 3 and breaker.state == "closed"


async def test_a_waiter_gives_up_at_until_when_the_provider_stays_down() -> None:
    breaker = CircuitBreaker(fail_max=1, reset_timeout=0.05)
    await trip(breaker, 1)
    until = breaker.clock() + 0.3
    attempts = 0
    with pytest.raises(CircuitOpenError):
        while True:
            try:
                await breaker.call(lambda: fail(LMServerError("down")), until=until)
            except LMServerError:
                attempts += 1
    assert attempts >= 1  # it probed while it could
    assert time.monotonic() >= until - 0.06  # it gave up only when the next probe was past until
