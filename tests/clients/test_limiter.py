"""RateLimiter: smooth rpm/tpm token buckets, reservations settled after the call, pauses.

A fake clock whose sleep advances it: waits take no real time and admission
times are exact.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from dspex.clients.limiter import (
    DEFAULT_COMPLETION_TOKENS,
    RateLimiter,
    estimate_tokens,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def limiter(clock: Clock, **kwargs: float) -> RateLimiter:
    return RateLimiter(clock=clock, sleep=clock.sleep, **kwargs)


async def admission_times(
    lim: RateLimiter, clock: Clock, count: int, tokens: int = 0
) -> list[float]:
    times: list[float] = []

    async def one() -> None:
        await lim.acquire(tokens)
        times.append(clock.now)

    await asyncio.gather(*(one() for _ in range(count)))
    return times


async def test_rpm_is_spread_over_the_minute_with_one_second_of_burst() -> None:
    clock = Clock()
    lim = limiter(clock, rpm=600)  # 10 per second
    times = await admission_times(lim, clock, 40)
    assert times[:10] == [0.0] * 10  # one second's quota may go at once
    gaps = [b - a for a, b in itertools.pairwise(times[10:])]
    assert all(gap == pytest.approx(0.1) for gap in gaps)
    assert times[-1] == pytest.approx(3.0)


async def test_long_run_rate_matches_the_limit() -> None:
    clock = Clock()
    lim = limiter(clock, rpm=1200)
    times = await admission_times(lim, clock, 20 + 20 * 30)
    # After the initial burst, exactly 20 per second for 30 seconds.
    assert times[-1] == pytest.approx(30.0)
    in_window = [t for t in times if 10.0 < t <= 20.0]
    assert len(in_window) == 200


async def test_slow_rates_below_one_per_second() -> None:
    clock = Clock()
    lim = limiter(clock, rpm=30)  # one every 2 s
    times = await admission_times(lim, clock, 3)
    assert times == pytest.approx([0.0, 2.0, 4.0])


async def test_token_reservation_is_settled_with_actual_usage() -> None:
    clock = Clock()
    lim = limiter(clock, tpm=6000)  # 100 tokens/s, at most 100 at once
    first = await lim.acquire(100)
    assert lim.wait_time(100) == pytest.approx(1.0)
    first.settle(20)  # used far less than reserved: 80 come back
    assert lim.wait_time(100) == pytest.approx(0.2)
    second = await lim.acquire(100)
    assert clock.now == pytest.approx(0.2)
    second.settle(300)  # used more than reserved: the extra is owed
    assert lim.wait_time(100) == pytest.approx(3.0)


async def test_a_request_larger_than_a_seconds_quota_waits_for_a_full_bucket_then_owes() -> None:
    clock = Clock()
    lim = limiter(clock, tpm=600)  # 10 tokens/s
    await lim.acquire(5)
    big = asyncio.ensure_future(lim.acquire(50))
    await big
    assert clock.now == pytest.approx(0.5)  # waited until the bucket was full again
    await lim.acquire(10)
    assert clock.now == pytest.approx(0.5 + 5.0)  # paid off 40 tokens of debt, then 10


async def test_cancelled_reservation_gives_everything_back() -> None:
    clock = Clock()
    lim = limiter(clock, rpm=60, tpm=600)
    reservation = await lim.acquire(10)
    assert lim.wait_time(10) > 0
    reservation.cancel()
    reservation.settle(999)  # a second settle/cancel is ignored
    assert lim.wait_time(10) == 0.0


async def test_pause_holds_every_admission_until_retry_after() -> None:
    clock = Clock()
    lim = limiter(clock, rpm=6000)
    lim.pause(2.5)
    lim.pause(1.0)  # never shortens an existing pause
    assert lim.paused_for() == pytest.approx(2.5)
    times = await admission_times(lim, clock, 3)
    assert min(times) == pytest.approx(2.5)


async def test_pause_applies_without_rate_limits() -> None:
    clock = Clock()
    lim = limiter(clock)
    assert not lim.enabled
    await lim.acquire()
    assert clock.now == 0.0
    lim.pause(1.5)
    await lim.acquire()
    assert clock.now == pytest.approx(1.5)


async def test_admission_is_first_come_first_served() -> None:
    clock = Clock()
    lim = limiter(clock, rpm=60, tpm=6000)
    order: list[int] = []

    async def one(i: int, tokens: int) -> None:
        await lim.acquire(tokens)
        order.append(i)

    # A big request queued early must not be overtaken by later small ones.
    await asyncio.gather(one(0, 10), one(1, 100), one(2, 1), one(3, 1))
    assert order == [0, 1, 2, 3]


def test_estimate_tokens() -> None:
    messages = [{"role": "system", "content": "x" * 40}, {"role": "user", "content": "y" * 40}]
    assert estimate_tokens(messages, {"max_tokens": 100}) == 20 + 100
    assert estimate_tokens(messages, {}) == 20 + DEFAULT_COMPLETION_TOKENS
    assert estimate_tokens(messages, {"max_tokens": 10, "n": 3}) == 20 + 30
    parts = [{"role": "user", "content": [{"type": "text", "text": "z" * 8}]}]
    assert estimate_tokens(parts, {"max_tokens": 1}) == 2 + 1
