"""The shared state of one LM endpoint, handed out as short leases (pure logic, no clock).

Why leases: sending every request through one actor that makes the HTTP call
costs an actor hop per call (about 1 ms of CPU, a queue in one Python process
for all of a model's cluster-wide traffic). What must be shared is only the
endpoint's *state*: its rate budget (rpm/tpm), its circuit breaker, its
concurrency cap and its usage. So the pool actor keeps that state here, and
each calling process (a holder, `dspex.clients.endpoint_lease`) asks for a
lease now and then: permission to send up to ``requests`` requests (and
``tokens`` tokens) within the next ``ttl`` seconds, the breaker's state, and
how many requests it may have in flight. It makes the HTTP calls itself and
reports what happened with its next ask.

What holds, and why:

- **rate limits, exactly**: permits are taken from the same token buckets a
  per-request limiter would use (`dspex.clients.limiter.TokenBucket`), and a
  request is sent only with a permit, so the cluster never sends more than the
  buckets allow. Permits a holder did not use come back with its next report.
  A 429's ``Retry-After`` pauses the buckets for everyone (holders learn it at
  their next ask, and pause themselves at once).
- **the breaker, within one lease**: reported outcomes go into the same
  `CircuitLogic` the in-process breaker uses, tagged with the epoch they were
  admitted under. Once it opens, no holder gets another permit, and a holder's
  current lease ends within ``ttl``; so an outage is stopped cluster-wide
  within one lease of the outcomes that show it. Half-open: exactly one
  holder gets a single probe permit.
- **the concurrency cap**: when the endpoint has one, slots are granted to
  holders out of what others do not hold, and a holder keeps at most what it
  was granted in flight. A holder that stops asking for longer than
  ``holder_expiry`` loses its slots (it crashed or went away).

The ledger shares its circuit and buckets with the pool's per-request breaker
and limiter, so requests sent through the pool and requests sent under leases
draw on one budget and feed one circuit.

Every method takes ``now`` (seconds, any monotonic clock): tested on a fake clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dspex.clients.breaker_state import BreakerState, CircuitLogic, Transition
from dspex.clients.limiter import RateLimiter

DEFAULT_LEASE_SECONDS = 0.2
"""How long a lease is good for: the bound on how late a holder learns that the
breaker opened or a 429 paused the endpoint."""
DEFAULT_MAX_CIRCUIT_WAIT = 120.0
"""How long batch work waits for an open circuit when its deadline allows: a few probes
at the default reset timeout, so a short outage costs an evaluation a pause, not its
examples."""
HOLDER_EXPIRY_LEASES = 5
"""A holder silent for this many lease periods is gone: its concurrency slots return."""


@dataclass(frozen=True)
class Report:
    """What a holder saw since its last ask. Counts for stats; outcomes for the breaker."""

    outcomes: tuple[tuple[int, bool], ...] = ()
    """``(epoch, failed)`` of each finished attempt the breaker counts, in order."""
    probe: tuple[int, bool | None] | None = None
    """The half-open probe it was granted: ``(epoch, failed)``, failed None if it never ran."""
    unused_requests: int = 0
    """Permits of earlier leases it did not use (they return to the request bucket)."""
    token_correction: int = 0
    """Estimated minus actual tokens of its finished requests, plus unused token permits."""
    retry_after: float | None = None
    """The longest ``Retry-After`` of a 429 it got."""
    in_flight: int = 0
    requests: int = 0  # requests answered successfully
    errors: int = 0  # requests that failed after their retries
    calls: int = 0  # HTTP attempts made
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    @property
    def empty(self) -> bool:
        return self == _EMPTY


_EMPTY = Report()


@dataclass(frozen=True)
class LeaseAsk:
    """A holder's ask: what it wants for the next lease period, and its report."""

    holder: str
    requests: int = 0
    """Permits wanted (requests waiting plus the expected rate over a lease)."""
    tokens: int = 0
    """Token permits wanted (the estimates of those requests); ignored without a tpm limit."""
    slots: int = 0
    """Concurrency slots wanted in all (in flight plus waiting); ignored without a cap."""
    in_flight: int = 0
    """Requests it has in flight now: it keeps at least these slots."""
    waiting_for_circuit: int = 0
    """Batch requests it holds back while the circuit is open (for stats)."""
    report: Report = field(default_factory=Report)


@dataclass(frozen=True)
class Lease:
    """What a holder may do until ``ttl`` seconds after it received this."""

    requests: int | None
    """Requests it may send (None: no request limit)."""
    tokens: int | None
    """Tokens it may spend, by estimate (None: no token limit)."""
    slots: int | None
    """Requests it may have in flight at once (None: no cap)."""
    ttl: float
    state: BreakerState
    epoch: int
    """The breaker's epoch: outcomes of requests sent under this lease are tagged with it."""
    probe: bool = False
    """The one permit granted is the half-open probe."""
    retry_after: float = 0.0
    """Nothing granted: seconds until asking again can get something."""
    max_circuit_wait: float = 0.0
    """How long batch work may wait for an open circuit."""
    count_rate_limits: bool = True
    """Whether a 429 counts as a failure for the breaker (report it in ``outcomes``)."""


@dataclass
class _Holder:
    slots: int = 0
    in_flight: int = 0
    waiting_for_circuit: int = 0
    last_seen: float = 0.0


@dataclass
class Totals:
    """Everything reported so far (for the pool's stats)."""

    requests: int = 0
    errors: int = 0
    calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    leases: int = 0


class EndpointLedger:
    """One endpoint's rate buckets, breaker and concurrency slots, granted as leases."""

    def __init__(
        self,
        *,
        circuit: CircuitLogic,
        limiter: RateLimiter,
        max_concurrency: int | None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_circuit_wait: float = 0.0,
        count_rate_limits: bool = True,
    ) -> None:
        self.circuit = circuit
        self.limiter = limiter  # its buckets and its pause (a 429's Retry-After)
        self.requests = limiter.request_bucket
        self.tokens = limiter.token_bucket
        self.max_concurrency = max_concurrency
        self.lease_seconds = lease_seconds
        self.max_circuit_wait = max_circuit_wait
        self.count_rate_limits = count_rate_limits
        self.totals = Totals()
        self._holders: dict[str, _Holder] = {}

    # --- the one operation ------------------------------------------------------

    def lease(self, now: float, ask: LeaseAsk) -> tuple[Lease, tuple[Transition, ...]]:
        """Take ``ask``'s report in, then grant what may be granted now.

        Returns the lease and the breaker transitions the report caused (for events)."""
        transitions = self._take_report(now, ask.report)
        holder = self._holders.get(ask.holder)
        if holder is None:
            holder = self._holders[ask.holder] = _Holder()
        holder.last_seen, holder.in_flight = now, ask.in_flight
        holder.waiting_for_circuit = ask.waiting_for_circuit
        self._expire_holders(now)
        self.totals.leases += 1
        slots = self._grant_slots(ask, holder)

        state = self.circuit.state(now)
        paused = self.limiter.paused_for()
        probe_free = (
            ask.requests > 0 and state != "closed" and self.circuit.would_admit(now) and paused <= 0
        )
        if probe_free and self.requests is not None and self.requests.wait_time(1, now) > 0:
            probe_free = False  # even the probe waits for the rate limit
            paused = self.requests.wait_time(1, now)
        if probe_free:
            # Half-open and the probe is free: this holder sends it (one permit, no more).
            admission = self.circuit.admit(now)
            transitions += admission.transitions
            if self.requests is not None:
                self.requests.take(1)  # refilled by wait_time above
            return self._lease(
                requests=1, tokens=ask.tokens if self.tokens is not None else None,
                slots=slots, state="half_open", probe=True,
            ), transitions
        if state != "closed" or paused > 0:
            wait = max(self.circuit.retry_after(now), paused)
            return self._lease(
                requests=0, tokens=0, slots=slots, state=state, retry_after=wait
            ), transitions
        requests = self._grant_requests(now, ask.requests)
        tokens = self._grant_tokens(now, ask.tokens) if requests != 0 else 0
        if self.tokens is None:
            tokens = None
        if self.tokens is not None and ask.tokens > 0 and not tokens:
            # Request permits without the tokens to send them are no use: keep neither.
            if requests and self.requests is not None:
                self.requests.give_back(requests)
            requests, tokens = 0, 0
        retry_after = 0.0
        if requests == 0 and ask.requests > 0:
            retry_after = self._next_permit_in(now, ask.tokens)
        return self._lease(
            requests=requests, tokens=tokens, slots=slots, state="closed", retry_after=retry_after
        ), transitions

    def forget(self, holder: str) -> None:
        """A holder left for good (its process is stopping): its slots return now."""
        self._holders.pop(holder, None)

    # --- reading ------------------------------------------------------------------

    def in_flight(self) -> int:
        """Requests in flight cluster-wide, as of each holder's last ask."""
        return sum(h.in_flight for h in self._holders.values())

    def waiting_for_circuit(self) -> int:
        """Batch requests held back by holders while the circuit is open."""
        return sum(h.waiting_for_circuit for h in self._holders.values())

    def holders(self) -> int:
        return len(self._holders)

    # --- internals ----------------------------------------------------------------

    def _lease(
        self,
        *,
        requests: int | None,
        tokens: int | None,
        slots: int | None,
        state: BreakerState,
        probe: bool = False,
        retry_after: float = 0.0,
    ) -> Lease:
        return Lease(
            requests=requests,
            tokens=tokens,
            slots=slots,
            ttl=self.lease_seconds,
            state=state,
            epoch=self.circuit.epoch,
            probe=probe,
            retry_after=retry_after,
            max_circuit_wait=self.max_circuit_wait,
            count_rate_limits=self.count_rate_limits,
        )

    def _take_report(self, now: float, report: Report) -> tuple[Transition, ...]:
        if report.empty:
            return ()
        transitions: tuple[Transition, ...] = ()
        for epoch, failed in report.outcomes:
            transitions += self.circuit.record(now, epoch, failed)
        if report.probe is not None:
            epoch, failed = report.probe
            if failed is None:
                self.circuit.release_probe(epoch)
            else:
                transitions += self.circuit.record(now, epoch, failed)
        if self.requests is not None and report.unused_requests:
            self.requests.refill(now)
            self.requests.give_back(report.unused_requests)
        if self.tokens is not None and report.token_correction:
            self.tokens.refill(now)
            self.tokens.give_back(report.token_correction)
        if report.retry_after:
            self.limiter.pause(report.retry_after)
        t = self.totals
        t.requests += report.requests
        t.errors += report.errors
        t.calls += report.calls
        t.retries += report.retries
        t.prompt_tokens += report.prompt_tokens
        t.completion_tokens += report.completion_tokens
        t.cost += report.cost
        return transitions

    def _grant_requests(self, now: float, wanted: int) -> int | None:
        if self.requests is None:
            return None
        bucket = self.requests
        bucket.refill(now)
        granted = max(0, min(wanted, math.floor(bucket.level + 1e-9)))
        bucket.take(granted)
        return granted

    def _grant_tokens(self, now: float, wanted: int) -> int | None:
        if self.tokens is None:
            return None
        bucket = self.tokens
        bucket.refill(now)
        if wanted <= 0:
            return 0
        # As the per-request limiter does: a request bigger than the bucket goes once
        # the bucket is full (it runs into debt); otherwise grant what is there.
        if bucket.level >= min(wanted, bucket.capacity):
            granted = wanted
        else:
            granted = max(0, math.floor(bucket.level))
        bucket.take(granted)
        return granted

    def _next_permit_in(self, now: float, tokens: int) -> float:
        wait = 0.0
        if self.requests is not None:
            wait = max(wait, self.requests.wait_time(1, now))
        if self.tokens is not None and tokens > 0:
            wait = max(wait, self.tokens.wait_time(tokens, now))
        return wait

    def _grant_slots(self, ask: LeaseAsk, holder: _Holder) -> int | None:
        if self.max_concurrency is None:
            return None
        others = sum(h.slots for key, h in self._holders.items() if h is not holder)
        free = max(0, self.max_concurrency - others)
        # Never below what it has in flight: those requests hold their slots already.
        holder.slots = max(ask.in_flight, min(ask.slots, free))
        return holder.slots

    def _expire_holders(self, now: float) -> None:
        horizon = now - HOLDER_EXPIRY_LEASES * self.lease_seconds
        for key in [k for k, h in self._holders.items() if h.last_seen < horizon]:
            del self._holders[key]


__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_MAX_CIRCUIT_WAIT",
    "EndpointLedger",
    "Lease",
    "LeaseAsk",
    "Report",
    "Totals",
]
