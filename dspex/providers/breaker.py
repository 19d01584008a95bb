"""A circuit breaker for one LM endpoint, over aiobreaker 1.2.

    breaker = CircuitBreaker(fail_max=5, reset_timeout=30.0, on_state_change=print)
    response = await breaker.call(lambda: transport.post(...))

Closed: calls go through; ``fail_max`` consecutive failures open the circuit.
Open: calls fail fast with `CircuitOpenError` (``retry_after`` = seconds until a
probe is allowed). Half-open (after ``reset_timeout``): exactly one probe call
goes through while the others still fail fast; the probe's success closes the
circuit, its failure opens it again for another ``reset_timeout``.

aiobreaker keeps the state machine, the failure counter and the listeners. We
drive it differently from its ``call_async`` for three reasons found in 1.2:
it lets every concurrent call through while half-open; its ``time_until_open``
raises once the timeout has passed; and it stores ``opened_at`` in UTC but
compares ``opens_at`` with local time. So admission (open / half-open / one
probe) and every time computation live here, on an injectable clock, and
aiobreaker is only told the outcome of calls. An outcome is dropped when the
circuit changed state while the call was running: a slow call started before
the circuit opened says nothing about the provider now.

aiobreaker is imported when the first breaker is built, so importing this
module (and ``dspex``) stays cheap.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Literal, TypeVar

from dspex.errors import (
    CircuitOpenError,
    LMRateLimitError,
    LMServerError,
    LMTimeoutError,
    LMTransportError,
)

T = TypeVar("T")

BreakerState = Literal["closed", "open", "half_open"]
StateListener = Callable[[BreakerState, BreakerState], None]

_AIOBREAKER_NAMES: dict[str, BreakerState] = {
    "CLOSED": "closed",
    "OPEN": "open",
    "HALF_OPEN": "half_open",
}


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
    """Closed / open / half-open circuit with a single half-open probe.

    ``is_failure(error)`` decides which exceptions count (default:
    `counts_as_failure`, with 429s counted unless ``count_rate_limits=False``).
    Other exceptions are passed through and count as the provider answering.
    ``on_state_change(old, new)`` is called on every transition, inline: keep it
    cheap. ``clock`` is a monotonic clock in seconds (tests pass a fake one).
    """

    def __init__(
        self,
        fail_max: int = 5,
        reset_timeout: float = 30.0,
        *,
        is_failure: Callable[[BaseException], bool] | None = None,
        count_rate_limits: bool = True,
        on_state_change: StateListener | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
    ) -> None:
        if fail_max < 1:
            raise ValueError(f"fail_max must be at least 1, got {fail_max}")
        if reset_timeout < 0:
            raise ValueError(f"reset_timeout must be >= 0, got {reset_timeout}")
        import aiobreaker

        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        self.name = name
        self._is_failure = is_failure or (
            lambda error: counts_as_failure(error, count_rate_limits=count_rate_limits)
        )
        self._on_state_change = on_state_change
        self._clock = clock
        self._opened_at = 0.0
        self._epoch = 0  # bumped on every transition; outcomes from an older epoch are stale
        self._probe_running = False
        self._breaker = aiobreaker.CircuitBreaker(
            fail_max=fail_max,
            timeout_duration=timedelta(seconds=reset_timeout),
            listeners=[_Listener(self)],
            name=name,
        )

    # --- state --------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The state as of now: an open circuit whose timeout passed reads ``half_open``."""
        state = self._raw_state()
        if state == "open" and self._open_remaining() <= 0:
            return "half_open"
        return state

    @property
    def fail_count(self) -> int:
        """Consecutive failures counted so far."""
        return int(self._breaker.fail_counter)

    def retry_after(self) -> float:
        """Seconds until a call may be admitted (0 when closed)."""
        state = self._raw_state()
        if state == "open":
            return max(0.0, self._open_remaining())
        if state == "half_open" and self._probe_running:
            return self.reset_timeout  # at worst the probe fails and the circuit reopens
        return 0.0

    def check(self) -> None:
        """Raise `CircuitOpenError` if a call now would fail fast; admits nothing."""
        state = self.state
        if state == "open" or (state == "half_open" and self._probe_running):
            raise self._open_error()

    # --- calls --------------------------------------------------------------

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` under the breaker, or raise `CircuitOpenError` at once."""
        epoch, probe = self._admit()
        try:
            result = await fn()
        except Exception as error:
            self._record(epoch, error)
            raise
        finally:
            if probe:
                self._probe_running = False
        self._record(epoch, None)
        return result

    def _admit(self) -> tuple[int, bool]:
        """(epoch, is_probe) of an admitted call, or `CircuitOpenError`."""
        state = self._raw_state()
        if state == "open":
            if self._open_remaining() > 0:
                raise self._open_error()
            self._breaker.half_open()  # the listener bumps the epoch
            state = "half_open"
        if state == "half_open":
            if self._probe_running:
                raise self._open_error()
            self._probe_running = True
            return self._epoch, True
        return self._epoch, False

    def _record(self, epoch: int, error: BaseException | None) -> None:
        if epoch != self._epoch:
            return  # the circuit moved on while this call ran
        import aiobreaker

        failed = error is not None and self._is_failure(error)
        try:
            # aiobreaker's state objects count the outcome and make the transition.
            if failed:
                self._breaker.call(_raise, error)
            else:
                self._breaker.call(_succeed)
        except aiobreaker.CircuitBreakerError:
            pass  # it just opened: the caller gets the original error, not this one
        except Exception as raised:
            if raised is not error:
                raise

    def reset(self) -> None:
        """Close the circuit and forget failures (an operator's override)."""
        self._probe_running = False
        self._breaker.close()

    # --- internals ----------------------------------------------------------

    def _raw_state(self) -> BreakerState:
        return _AIOBREAKER_NAMES[self._breaker.current_state.name]

    def _open_remaining(self) -> float:
        return self._opened_at + self.reset_timeout - self._clock()

    def _open_error(self) -> CircuitOpenError:
        wait = self.retry_after()
        return CircuitOpenError(
            f"{self.name or 'LM'}: circuit open after {self.fail_max} consecutive failures; "
            f"failing fast, next probe in {wait:.1f}s (the provider looks down: wait, or "
            "check its status page)",
            model=self.name,
            retry_after=wait,
        )

    def _transition(self, old: BreakerState, new: BreakerState) -> None:
        self._epoch += 1
        if new == "open":
            self._opened_at = self._clock()
        if new != "half_open":
            self._probe_running = False
        if old != new and self._on_state_change is not None:
            self._on_state_change(old, new)


class _Listener:
    """Forwards aiobreaker's state changes to the wrapper (duck-typed listener)."""

    def __init__(self, owner: CircuitBreaker) -> None:
        self._owner = owner

    def before_call(self, breaker: Any, func: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def failure(self, breaker: Any, exception: BaseException) -> None:
        pass

    def success(self, breaker: Any) -> None:
        pass

    def state_change(self, breaker: Any, old: Any, new: Any) -> None:
        old_name = _AIOBREAKER_NAMES[old.state.name] if old is not None else "closed"
        self._owner._transition(old_name, _AIOBREAKER_NAMES[new.state.name])


def _raise(error: BaseException) -> None:
    raise error


def _succeed() -> None:
    return None
