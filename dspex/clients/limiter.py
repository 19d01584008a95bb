"""Smooth request and token rate limits for one LM endpoint.

    limiter = RateLimiter(rpm=600, tpm=200_000)
    reservation = await limiter.acquire(estimate_tokens(messages, params))
    ... make the call ...
    reservation.settle(actual_total_tokens)        # or reservation.cancel()

Each limit is a token bucket that refills at quota/60 per second and holds at
most one second's quota, so a minute's quota is spread over the minute instead
of being spent in a burst (aiolimiter releases a whole period's quota at once;
``AsyncLimiter(rpm/60, 1)`` would be smooth, but it reads the event loop's
clock, and these buckets must also run on a fake clock in tests and take a
correction after the call, which aiolimiter has no way to express).

Tokens are reserved before a call from an estimate (prompt characters / 4 plus
``max_tokens`` per completion) and settled with the usage the provider
reports. A bucket may go into debt (a request bigger than one second's quota
still goes through once the bucket is full); later requests then wait until
the debt is paid off, so the long-run rate is exact.

Admission is first come, first served. `pause(seconds)` (a provider's
``Retry-After`` on a 429) stops all admissions until then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

DEFAULT_COMPLETION_TOKENS = 256
"""Completion tokens assumed per request when ``max_tokens`` is not set."""

Sleep = Callable[[float], Awaitable[object]]


def estimate_tokens(
    messages: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    default_completion: int = DEFAULT_COMPLETION_TOKENS,
) -> int:
    """A cheap upper-ish estimate of a request's total tokens, for reserving budget."""
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):  # content parts
            chars += sum(
                len(str(part.get("text", ""))) for part in content if isinstance(part, dict)
            )
    completion = params.get("max_tokens") or params.get("max_completion_tokens")
    if not isinstance(completion, int) or completion <= 0:
        completion = default_completion
    n = params.get("n", 1)
    n = n if isinstance(n, int) and n > 0 else 1
    return chars // 4 + completion * n


class TokenBucket:
    """Refills at ``rate`` per second up to ``capacity``; may run into debt.

    A take of ``amount`` is allowed once the level reaches
    ``min(amount, capacity)``, then the whole amount is taken.
    """

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError(f"rate and capacity must be positive, got {rate} and {capacity}")
        self.rate = rate
        self.capacity = capacity
        self.level = capacity  # start full: one second's quota may go out at once
        self._updated = now

    def refill(self, now: float) -> None:
        if now > self._updated:
            self.level = min(self.capacity, self.level + (now - self._updated) * self.rate)
            self._updated = now

    def wait_time(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` may be taken (0 if now)."""
        self.refill(now)
        missing = min(amount, self.capacity) - self.level
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, amount: float) -> None:
        self.level -= amount

    def give_back(self, amount: float) -> None:
        """Return (or, if negative, charge) ``amount``; never above capacity."""
        self.level = min(self.capacity, self.level + amount)


class Reservation:
    """Budget taken for one request; settle it with the real usage, or cancel it."""

    __slots__ = ("_done", "_limiter", "tokens")

    def __init__(self, limiter: RateLimiter, tokens: int) -> None:
        self._limiter = limiter
        self.tokens = tokens
        self._done = False

    def settle(self, actual_tokens: int | None) -> None:
        """Correct the token bucket by ``estimate - actual`` (None: keep the estimate)."""
        if self._done:
            return
        self._done = True
        if actual_tokens is not None:
            self._limiter._adjust_tokens(self.tokens - actual_tokens)

    def cancel(self) -> None:
        """The request was never sent: give back both the request and its tokens."""
        if self._done:
            return
        self._done = True
        self._limiter._refund(self.tokens)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits (either may be None)."""

    # Float error can leave a few nanoseconds to wait; sleeping that long is pointless.
    _EPSILON = 1e-9

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep | None = None,
    ) -> None:
        now = clock()
        self.rpm, self.tpm = rpm, tpm
        self._requests = TokenBucket(rpm / 60, rpm / 60, now) if rpm else None
        self._tokens = TokenBucket(tpm / 60, tpm / 60, now) if tpm else None
        self._clock = clock
        self._sleep = sleep
        self._paused_until = now
        self._lock: asyncio.Lock | None = None
        self.waiting = 0

    @property
    def request_bucket(self) -> TokenBucket | None:
        """The rpm bucket (None without an rpm limit); a lease ledger grants from it too."""
        return self._requests

    @property
    def token_bucket(self) -> TokenBucket | None:
        """The tpm bucket (None without a tpm limit)."""
        return self._tokens

    @property
    def enabled(self) -> bool:
        return self._requests is not None or self._tokens is not None

    async def acquire(self, tokens: int = 0) -> Reservation:
        """Wait (first come, first served) until one request of ``tokens`` may go."""
        reservation = Reservation(self, tokens)
        if not self.enabled and self._clock() >= self._paused_until:
            return reservation
        if self._lock is None:
            self._lock = asyncio.Lock()  # made lazily: it must belong to the running loop
        self.waiting += 1
        try:
            # The lock queues waiters in arrival order; its holder sleeps for them all.
            async with self._lock:
                while (wait := self.wait_time(tokens)) > self._EPSILON:
                    await (self._sleep or asyncio.sleep)(wait)
                self._take(tokens)
        finally:
            self.waiting -= 1
        return reservation

    def wait_time(self, tokens: int = 0) -> float:
        """Seconds until a request of ``tokens`` could be admitted, ignoring queued ones."""
        now = self._clock()
        wait = self._paused_until - now
        if self._requests is not None:
            wait = max(wait, self._requests.wait_time(1, now))
        if self._tokens is not None and tokens > 0:
            wait = max(wait, self._tokens.wait_time(tokens, now))
        return max(0.0, wait)

    def pause(self, seconds: float) -> None:
        """Admit nothing for ``seconds`` (a provider's Retry-After); extends, never shortens."""
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    def _take(self, tokens: int) -> None:
        if self._requests is not None:
            self._requests.take(1)
        if self._tokens is not None and tokens > 0:
            self._tokens.take(tokens)

    def _refund(self, tokens: int) -> None:
        now = self._clock()
        if self._requests is not None:
            self._requests.refill(now)
            self._requests.give_back(1)
        self._adjust_tokens(tokens)

    def _adjust_tokens(self, delta: int) -> None:
        if self._tokens is not None and delta:
            self._tokens.refill(self._clock())
            self._tokens.give_back(delta)
