"""Retrying LM requests that failed for reasons a retry can fix.

Retryable errors are those whose ``.retryable`` is true (rate limits, 5xx,
timeouts, dropped connections, malformed 200 bodies, streams cut off) except a
stream cut after some of it reached the consumer (``chunks_delivered``: see
`dspex.clients.streaming`). Anything else (auth, bad
request, context window) is raised at once: repeating it only wastes time.

The delay before retry ``k`` (0-based) is "full jitter" exponential backoff,
``uniform(0, min(cap, base * 2**k))``, which spreads a crowd of clients that
failed together. When the provider says how long to wait (``Retry-After``),
that hint wins: we wait that long plus a little jitter, capped so a bogus
header cannot stall a run for hours.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from dspex.errors import LMError

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[object]]


@dataclass(frozen=True)
class RetryPolicy:
    """How many extra attempts to make and how long to wait between them."""

    num_retries: int = 3
    base: float = 0.5
    cap: float = 30.0
    retry_after_cap: float = 60.0
    retry_after_jitter: float = 0.25
    # None means asyncio.sleep / random.random, looked up at call time: a policy shipped
    # to another process must not carry a copy of this process's random state (every
    # worker would then draw the same jitter, which is what jitter exists to avoid).
    sleep: Sleep | None = field(default=None, compare=False)
    rand: Callable[[], float] | None = field(default=None, compare=False)

    def delay(self, attempt: int, error: BaseException) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based) ended in ``error``."""
        draw = self.rand or random.random
        hint = getattr(error, "retry_after", None)
        if hint is not None:
            # The provider knows its own recovery time better than our backoff does.
            wait = max(0.0, float(hint)) + draw() * self.retry_after_jitter
            return min(wait, self.retry_after_cap)
        return draw() * min(self.cap, self.base * (2**attempt))


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, LMError) and error.retryable


async def call_with_retries(
    attempt_fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Await ``attempt_fn()`` until it succeeds, retrying retryable LM errors.

    Makes at most ``1 + policy.num_retries`` attempts; the last error is raised
    unchanged when they are all spent. ``on_retry(attempt, error, delay)`` is
    called before each wait (for logging or events).
    """
    attempt = 0
    while True:
        try:
            return await attempt_fn()
        except LMError as error:
            if not error.retryable or attempt >= policy.num_retries:
                raise
            if getattr(error, "chunks_delivered", 0):
                raise  # a stream cut after the consumer saw part of it (clients.streaming)
            wait = policy.delay(attempt, error)
            if on_retry is not None:
                on_retry(attempt, error, wait)
            attempt += 1
            await (policy.sleep or asyncio.sleep)(wait)
