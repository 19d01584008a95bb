"""A circuit breaker for one LM endpoint: judged on a failure rate, one half-open probe.

    breaker = CircuitBreaker(reset_timeout=30.0, on_state_change=print)
    response = await breaker.call(lambda: transport.post(...))              # fail fast
    response = await breaker.call(post, until=breaker.clock() + 120.0)      # or wait

Closed: calls go through; the circuit opens when at least half (by default) of
the recent calls failed, judged over a sliding window once it holds enough of
them, or after ``fail_max`` failures in a row. Open: calls fail fast with
`CircuitOpenError` (``retry_after`` = seconds until a probe is allowed).
Half-open (after ``reset_timeout``): exactly one probe call goes through; its
success closes the circuit, its failure opens it for another ``reset_timeout``.
The rules and the reasons for them are in `dspex.clients.breaker_state`,
which holds the pure logic this class drives with its clock.

Failing fast or waiting is the caller's choice. An interactive caller (a served
program) calls without ``until`` and gets `CircuitOpenError` at once: a
fallback or an error beats a wait. A batch caller (an evaluation, an
optimizer) passes ``until`` and waits for the circuit: while it is open, until
a probe may go (and then it may be the probe); while a probe runs, for the
probe's outcome, woken by the transition itself. A failed probe reopens the
circuit and the waiters wait again; one whose ``until`` comes before the next
probe could go fails then with `CircuitOpenError`.

The circuit is no longer built on aiobreaker: its breaker counts consecutive
failures only, admits every concurrent call when half-open and mixes local and
UTC time, so all that was left of it was a listener list.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from dspex.clients.breaker_state import (
    DEFAULT_FAIL_MAX,
    DEFAULT_FAILURE_RATE_THRESHOLD,
    DEFAULT_MINIMUM_CALLS,
    DEFAULT_RESET_TIMEOUT,
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_SECONDS,
    BreakerPolicy,
    BreakerState,
    CircuitLogic,
    Transition,
)
from dspex.errors import (
    CircuitOpenError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
)

T = TypeVar("T")

StateListener = Callable[[BreakerState, BreakerState], None]


def counts_as_failure(error: BaseException, *, count_rate_limits: bool = True) -> bool:
    """Whether ``error`` says the provider is unhealthy (5xx, timeout, unreachable, 429).

    A 4xx bad request or auth error is the caller's fault: the provider answered,
    so it must not open the circuit for everyone else.
    """
    if isinstance(error, LMRateLimitError):
        return count_rate_limits
    return isinstance(
        error, (LMServerError, LMTimeoutError, LMTransportError, TimeoutError, ConnectionError)
    )


class CircuitBreaker:
    """Closed / open / half-open circuit, opened by a failure rate, with a single probe.

    ``fail_max`` (positional, as before): consecutive failures that open the
    circuit whatever the failure rate says (default 20; ``None``: rate only).
    ``reset_timeout``: seconds open before a probe. ``failure_rate_threshold``,
    ``window`` (calls), ``window_seconds`` and ``minimum_calls`` set the rate
    rule (see `BreakerPolicy`; ``minimum_calls`` defaults to 50, or to ``window``
    if that is smaller). ``is_failure(error)`` decides which exceptions
    count (default: `counts_as_failure`, 429s counted unless
    ``count_rate_limits=False``); other exceptions are passed through and count
    as the provider answering. ``on_state_change(old, new)`` is called on every
    transition, inline: keep it cheap. ``clock`` is a monotonic clock in seconds
    (tests pass a fake one); ``until`` arguments are times on it.

    Used from one event loop (a pool actor's); not thread-safe.
    """

    def __init__(
        self,
        fail_max: int | None = DEFAULT_FAIL_MAX,
        reset_timeout: float = DEFAULT_RESET_TIMEOUT,
        *,
        failure_rate_threshold: float = DEFAULT_FAILURE_RATE_THRESHOLD,
        window: int = DEFAULT_WINDOW,
        window_seconds: float | None = DEFAULT_WINDOW_SECONDS,
        minimum_calls: int | None = None,
        is_failure: Callable[[BaseException], bool] | None = None,
        count_rate_limits: bool = True,
        on_state_change: StateListener | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
    ) -> None:
        self.policy = BreakerPolicy(
            failure_rate_threshold=failure_rate_threshold,
            window=window,
            window_seconds=window_seconds,
            # The default judges from 50 calls, or from a smaller window's size.
            minimum_calls=min(DEFAULT_MINIMUM_CALLS, window)
            if minimum_calls is None
            else minimum_calls,
            fail_max=fail_max,
            reset_timeout=reset_timeout,
        )
        self.name = name
        self.clock = clock
        self._is_failure = is_failure or (
            lambda error: counts_as_failure(error, count_rate_limits=count_rate_limits)
        )
        self._on_state_change = on_state_change
        self._logic = CircuitLogic(self.policy)
        # One future per waiting caller, resolved on every transition (and when a
        # cancelled probe frees its slot): waiters wake on the event, not on a poll.
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def fail_max(self) -> int | None:
        return self.policy.fail_max

    @property
    def reset_timeout(self) -> float:
        return self.policy.reset_timeout

    # --- state --------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The state as of now: an open circuit whose timeout passed reads ``half_open``."""
        return self._logic.state(self.clock())

    @property
    def fail_count(self) -> int:
        """Consecutive failures counted so far (reset by a success or a transition)."""
        return self._logic.consecutive_failures

    @property
    def failure_rate(self) -> float | None:
        """The share of failed calls in the closed circuit's window (None: no calls yet)."""
        calls, failures = self._logic.window_counts(self.clock())
        return failures / calls if calls else None

    @property
    def window_calls(self) -> int:
        """How many recent calls the failure rate is judged on."""
        return self._logic.window_counts(self.clock())[0]

    @property
    def waiting(self) -> int:
        """Callers waiting for the circuit to admit them."""
        return len(self._waiters)

    def retry_after(self) -> float:
        """Seconds until a call may be admitted (0 when one would be now)."""
        return self._logic.retry_after(self.clock())

    def check(self) -> None:
        """Raise `CircuitOpenError` if a call now would fail fast; admits nothing."""
        if not self._logic.would_admit(self.clock()):
            raise self._open_error()

    async def wait_until_admissible(self, until: float) -> None:
        """Return once a call would be admitted; `CircuitOpenError` if not by ``until``.

        ``until`` is a time on the breaker's `clock`. Returning admits nothing: a
        caller that then awaits something else before `call` may find the probe
        taken by another caller, and should wait again.
        """
        while True:
            now = self.clock()
            if self._logic.would_admit(now):
                return
            left = until - now
            # While open, nothing can change before the timeout but an operator's reset;
            # a caller that would pass its `until` before the next probe gives up now.
            next_probe = self._logic.retry_after(now) if self._logic.state(now) == "open" else None
            if left <= 0 or (next_probe is not None and next_probe > left):
                raise self._open_error(waited=True)
            await self._next_change(left if next_probe is None else next_probe)

    @property
    def logic(self) -> CircuitLogic:
        """The circuit's state and decisions; a lease ledger shares it (see endpoint_ledger)."""
        return self._logic

    def announce(self, transitions: Iterable[Transition]) -> None:
        """Tell listeners and waiters about transitions made on `logic` by another party."""
        self._announce(transitions)

    # --- calls --------------------------------------------------------------

    async def call(self, fn: Callable[[], Awaitable[T]], *, until: float | None = None) -> T:
        """Run ``fn()`` under the breaker.

        Without ``until``, a call the circuit does not admit raises
        `CircuitOpenError` at once. With it, the call waits (see
        `wait_until_admissible`) and raises only once ``until`` has passed.
        """
        while True:
            if until is not None:
                await self.wait_until_admissible(until)
            admission = self._logic.admit(self.clock())
            self._announce(admission.transitions)
            if admission.admitted:
                break
            if until is None:
                raise self._open_error()
        try:
            result = await fn()
        except Exception as error:
            self._record(admission.epoch, self._is_failure(error))
            raise
        except BaseException:
            # Cancelled: no outcome. A probe frees its slot for the next caller.
            if admission.probe and self._logic.release_probe(admission.epoch):
                self._wake()
            raise
        self._record(admission.epoch, False)
        return result

    def _record(self, epoch: int, failed: bool) -> None:
        self._announce(self._logic.record(self.clock(), epoch, failed))

    def reset(self) -> None:
        """Close the circuit and forget failures (an operator's override)."""
        self._announce(self._logic.reset(self.clock()))
        self._wake()

    # --- internals ----------------------------------------------------------

    def _announce(self, transitions: Iterable[Transition]) -> None:
        changed = False
        for old, new in transitions:
            changed = True
            if self._on_state_change is not None:
                self._on_state_change(old, new)
        if changed:
            self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _next_change(self, timeout: float) -> None:
        """Wait until the circuit changes (or a probe slot frees), at most ``timeout`` s."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait({waiter}, timeout=max(0.0, timeout))
        finally:
            self._waiters.discard(waiter)
            if not waiter.done():
                waiter.cancel()

    def _open_error(self, *, waited: bool = False) -> CircuitOpenError:
        now = self.clock()
        wait = self._logic.retry_after(now)
        why = self._logic.opened_because or "the provider failed"
        if self._logic.state(now) == "half_open":
            status = f"circuit half-open, a probe is running (opened after {why})"
        else:
            status = f"circuit open after {why}"
        if waited:
            action = (
                f"gave up waiting for it to close, next probe in {wait:.1f}s (the provider "
                "looks down: check its status page; a provider pool's max_circuit_wait "
                "sets how long batch work waits)"
            )
        else:
            action = (
                f"failing fast, next probe in {wait:.1f}s (the provider looks down: wait, "
                "or check its status page)"
            )
        return CircuitOpenError(
            f"{self.name or 'LM'}: {status}; {action}", model=self.name, retry_after=wait
        )


__all__ = ["BreakerState", "CircuitBreaker", "StateListener", "counts_as_failure"]
