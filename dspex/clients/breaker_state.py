"""A circuit breaker's bookkeeping and decisions, as pure logic (no asyncio, no clock).

Every method takes the time ``now`` (seconds on any monotonic clock) and
answers with values: whether a call is admitted, and which state transitions
happened. The async `CircuitBreaker` (breaker.py) owns the clock, tells the
listeners and wakes the callers waiting for the circuit; the logic here is
tested on a fake clock.

Why a failure rate and not consecutive failures: under concurrency, a provider
that fails one request in five at random produces five failures in a row about
once every 4,000 calls, so a "5 consecutive failures" breaker opens on a
provider that answers 80% of requests, and everything that meets the open
circuit fails. Flaky is not down. Like resilience4j's sliding window and
Envoy's success-rate outlier detection, the circuit here judges the share of
failures among recent calls, and only once it has seen enough of them.

The rules:

- **closed**: every call is admitted. Each outcome goes into a sliding window
  of the last ``window`` calls, none older than ``window_seconds``. The circuit
  opens when the window holds at least ``minimum_calls`` outcomes and the share
  of failures among them reaches ``failure_rate_threshold``; or, whatever the
  window says, after ``fail_max`` failures in a row (a floor for a provider
  that is plainly down, which the rate alone would see late at low traffic;
  ``None`` turns it off).
- **open**: nothing is admitted for ``reset_timeout`` seconds. Past that, the
  state reads ``half_open``.
- **half_open**: exactly one call, the probe, is admitted; the others are not.
  The probe's success closes the circuit with an empty window; its failure
  opens it for another ``reset_timeout``. A probe that ends without an outcome
  (cancelled) frees the slot for the next caller.
- An outcome counts only if the circuit has not changed state since its call
  was admitted (the ``epoch``): a slow call that started before the circuit
  opened says nothing about the provider now.

Defaults: with a 50% threshold over the last 100 calls judged from 50 on, a
provider failing 20% (30%) of calls at random opens the circuit in well under
one run in a thousand (about one in a hundred) of 3,000 calls, while an
outage opens it within ``fail_max`` (20) calls.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from dspex.errors import ConfigurationError

BreakerState = Literal["closed", "open", "half_open"]
Transition = tuple[BreakerState, BreakerState]
"""``(old, new)``: one change of state."""

DEFAULT_FAILURE_RATE_THRESHOLD = 0.5
DEFAULT_WINDOW = 100
DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_MINIMUM_CALLS = 50
DEFAULT_FAIL_MAX = 20
DEFAULT_RESET_TIMEOUT = 30.0


@dataclass(frozen=True)
class BreakerPolicy:
    """When a circuit opens and for how long (see the module docstring for the rules)."""

    failure_rate_threshold: float = DEFAULT_FAILURE_RATE_THRESHOLD
    window: int = DEFAULT_WINDOW
    window_seconds: float | None = DEFAULT_WINDOW_SECONDS
    minimum_calls: int = DEFAULT_MINIMUM_CALLS
    fail_max: int | None = DEFAULT_FAIL_MAX
    reset_timeout: float = DEFAULT_RESET_TIMEOUT

    def __post_init__(self) -> None:
        if not 0.0 < self.failure_rate_threshold <= 1.0:
            raise ConfigurationError(
                "circuit breaker: failure_rate_threshold must be in (0, 1] (the share of "
                f"failed calls that opens the circuit), got {self.failure_rate_threshold!r}"
            )
        if not _is_int(self.window) or self.window < 1:
            raise ConfigurationError(
                f"circuit breaker: window must be a whole number of calls >= 1, got {self.window!r}"
            )
        if self.window_seconds is not None and not self.window_seconds > 0:
            raise ConfigurationError(
                "circuit breaker: window_seconds must be > 0 (or None for no age limit), "
                f"got {self.window_seconds!r}"
            )
        if not _is_int(self.minimum_calls) or not 1 <= self.minimum_calls <= self.window:
            raise ConfigurationError(
                f"circuit breaker: minimum_calls must be between 1 and window ({self.window}), "
                f"got {self.minimum_calls!r}: the window never holds more calls than that"
            )
        if self.fail_max is not None and (not _is_int(self.fail_max) or self.fail_max < 1):
            raise ConfigurationError(
                "circuit breaker: fail_max (consecutive failures that open the circuit) must "
                f"be at least 1, or None to judge by the failure rate only; got {self.fail_max!r}"
            )
        if not self.reset_timeout >= 0:
            raise ConfigurationError(
                f"circuit breaker: reset_timeout must be >= 0 seconds, got {self.reset_timeout!r}"
            )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class FailureWindow:
    """The outcomes of the last ``size`` calls, none older than ``max_age`` seconds."""

    def __init__(self, size: int, max_age: float | None) -> None:
        self._size = size
        self._max_age = max_age
        self._outcomes: deque[tuple[float, bool]] = deque()  # (finished at, failed)
        self._failures = 0

    def add(self, now: float, failed: bool) -> None:
        self._outcomes.append((now, failed))
        self._failures += failed
        if len(self._outcomes) > self._size:
            self._failures -= self._outcomes.popleft()[1]

    def counts(self, now: float) -> tuple[int, int]:
        """``(calls, failures)`` in the window as of ``now``."""
        if self._max_age is not None:
            horizon = now - self._max_age
            outcomes = self._outcomes
            while outcomes and outcomes[0][0] <= horizon:
                self._failures -= outcomes.popleft()[1]
        return len(self._outcomes), self._failures

    def clear(self) -> None:
        self._outcomes.clear()
        self._failures = 0


@dataclass(frozen=True)
class Admission:
    """What `CircuitLogic.admit` decided for one call."""

    admitted: bool
    epoch: int
    """The circuit's epoch when admitted: pass it back to `record`."""
    probe: bool = False
    """This call is the half-open probe: its outcome decides the circuit."""
    retry_after: float = 0.0
    """Not admitted: seconds until a call may be (at worst, when a probe is running)."""
    transitions: tuple[Transition, ...] = ()


class CircuitLogic:
    """The state of one circuit and its decisions; every time is passed in."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self.epoch = 0  # bumped on every transition; outcomes from an older epoch are stale
        self.probe_running = False
        self.consecutive_failures = 0
        self.opened_because = ""
        self._state: BreakerState = "closed"
        self._opened_at = 0.0
        self._window = FailureWindow(policy.window, policy.window_seconds)

    # --- reading ------------------------------------------------------------

    def state(self, now: float) -> BreakerState:
        """The state as of ``now``: an open circuit whose timeout passed reads ``half_open``."""
        if self._state == "open" and self._open_remaining(now) <= 0:
            return "half_open"
        return self._state

    def retry_after(self, now: float) -> float:
        """Seconds until a call may be admitted (0 when one would be now)."""
        if self._state == "open":
            return max(0.0, self._open_remaining(now))
        if self._state == "half_open" and self.probe_running:
            return self.policy.reset_timeout  # at worst the probe fails and the circuit reopens
        return 0.0

    def would_admit(self, now: float) -> bool:
        """Whether `admit` at ``now`` would let a call through (changes nothing)."""
        state = self.state(now)
        return state == "closed" or (state == "half_open" and not self.probe_running)

    def window_counts(self, now: float) -> tuple[int, int]:
        """``(calls, failures)`` in the closed circuit's sliding window."""
        return self._window.counts(now)

    # --- deciding -----------------------------------------------------------

    def admit(self, now: float) -> Admission:
        """Let one call through, or say how long until one may go."""
        transitions: tuple[Transition, ...] = ()
        if self._state == "open":
            if self._open_remaining(now) > 0:
                return Admission(False, self.epoch, retry_after=self.retry_after(now))
            transitions = self._move(now, "half_open")
        if self._state == "half_open":
            if self.probe_running:
                return Admission(
                    False, self.epoch, retry_after=self.retry_after(now), transitions=transitions
                )
            self.probe_running = True
            return Admission(True, self.epoch, probe=True, transitions=transitions)
        return Admission(True, self.epoch, transitions=transitions)

    def record(self, now: float, epoch: int, failed: bool) -> tuple[Transition, ...]:
        """The outcome of a call admitted at ``epoch``; the transitions it caused."""
        if epoch != self.epoch:
            return ()  # the circuit moved on while this call ran
        if self._state == "half_open":  # the current epoch's only admitted call is the probe
            if failed:
                return self._move(now, "open", "the half-open probe failed")
            return self._move(now, "closed")
        if self._state != "closed":
            return ()
        if not failed:
            self.consecutive_failures = 0
            self._window.add(now, False)
            return ()
        self.consecutive_failures += 1
        self._window.add(now, True)
        reason = self._judge(now)
        return self._move(now, "open", reason) if reason else ()

    def release_probe(self, epoch: int) -> bool:
        """The probe admitted at ``epoch`` ended without an outcome (it was cancelled).

        True when the probe slot is free again for the next caller."""
        if epoch != self.epoch or self._state != "half_open" or not self.probe_running:
            return False
        self.probe_running = False
        return True

    def reset(self, now: float) -> tuple[Transition, ...]:
        """Close the circuit and forget every outcome (an operator's override)."""
        self.probe_running = False
        self.consecutive_failures = 0
        self._window.clear()
        if self._state == "closed":
            return ()
        return self._move(now, "closed")

    # --- internals ----------------------------------------------------------

    def _judge(self, now: float) -> str:
        """Why the closed circuit must open now, or "" if it must not."""
        policy = self.policy
        if policy.fail_max is not None and self.consecutive_failures >= policy.fail_max:
            return f"{self.consecutive_failures} failures in a row"
        calls, failures = self._window.counts(now)
        if calls >= policy.minimum_calls and failures >= policy.failure_rate_threshold * calls:
            return (
                f"{failures} of the last {calls} calls failed (threshold "
                f"{policy.failure_rate_threshold:.0%})"
            )
        return ""

    def _open_remaining(self, now: float) -> float:
        return self._opened_at + self.policy.reset_timeout - now

    def _move(self, now: float, new: BreakerState, reason: str = "") -> tuple[Transition, ...]:
        old = self._state
        self._state = new
        self.epoch += 1
        if new == "open":
            self._opened_at = now
            self.opened_because = reason
        if new != "half_open":
            self.probe_running = False
        # Every state starts afresh: failures from before an outage (or during it)
        # are not held against the provider once it has answered a probe.
        self.consecutive_failures = 0
        self._window.clear()
        return ((old, new),)


__all__ = [
    "Admission",
    "BreakerPolicy",
    "BreakerState",
    "CircuitLogic",
    "DEFAULT_FAILURE_RATE_THRESHOLD",
    "DEFAULT_FAIL_MAX",
    "DEFAULT_MINIMUM_CALLS",
    "DEFAULT_RESET_TIMEOUT",
    "DEFAULT_WINDOW",
    "DEFAULT_WINDOW_SECONDS",
    "FailureWindow",
    "Transition",
]
