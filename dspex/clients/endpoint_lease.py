"""A process's lease on an LM endpoint: admit requests locally, report, renew.

The other half of `dspex.clients.endpoint_ledger`. One `EndpointLease` per
endpoint per process gates that process's requests: a request is sent only
with a permit from a lease that has not expired, under a closed circuit (or as
the half-open probe), within the concurrency slots granted. The HTTP call is
made by the caller, in its own process; nothing crosses a process boundary per
request.

Renewals go through ``renew`` (the runtime passes a call to the provider pool
actor; a test passes the ledger itself) and carry the report of what happened
since the last one. They happen:

- before a request when there is no usable lease (none yet, expired, out of
  permits or slots), one renewal in flight at a time per endpoint however many
  requests wait;
- ahead of time, in the background, once half a lease has passed while there is
  traffic, so steady traffic never waits for one;
- at once after a failure the breaker counts, before the next request: the
  pool must see an outage before this process sends more into it;
- a lease period after the process goes quiet, to deliver the last report.

A 429's ``Retry-After`` pauses this process at once and the endpoint for
everyone at the next renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from dspex.clients.breaker_state import BreakerState
from dspex.clients.endpoint_ledger import DEFAULT_MAX_CIRCUIT_WAIT, Lease, LeaseAsk, Report
from dspex.errors import CircuitOpenError

Renew = Callable[[LeaseAsk], Awaitable[Lease]]

# The fewest seconds between two renewals that got nothing: bounds the ask rate of a
# process that waits for the rate limit or for slots.
MIN_RETRY_SECONDS = 0.005


@dataclass
class _Grant:
    """Permits of one lease, usable until ``expires``."""

    expires: float
    epoch: int
    requests: int | None
    tokens: int | None
    probe: bool = False


@dataclass(frozen=True)
class Ticket:
    """One admitted attempt: hand it back to `EndpointLease.finish`."""

    epoch: int
    tokens: int
    probe: bool = False


# Report's fields that add up from one report to the next (the rest are merged by hand).
_COUNTS = (
    "unused_requests",
    "token_correction",
    "requests",
    "errors",
    "calls",
    "retries",
    "prompt_tokens",
    "completion_tokens",
    "cost",
)


@dataclass
class _Pending:
    """The report being built for the next renewal (Report's fields, mutable)."""

    outcomes: list[tuple[int, bool]]
    probe: tuple[int, bool | None] | None = None
    unused_requests: int = 0
    token_correction: int = 0
    retry_after: float | None = None
    requests: int = 0
    errors: int = 0
    calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0


class EndpointLease:
    """Admits one process's requests to one endpoint under leases from its ledger."""

    def __init__(
        self,
        renew: Renew,
        *,
        holder: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._renew_fn = renew
        self.holder = holder
        self._clock = clock
        self._sleep = sleep
        self._grants: list[_Grant] = []
        self._state: BreakerState = "closed"
        self._expires = float("-inf")  # of the newest lease: its state is current until then
        self._renewed_at = float("-inf")
        self._retry_at = float("-inf")  # an empty lease: ask again no sooner than this
        self._retry_after = 0.0
        self._slots: int | None = None
        self._paused_until = float("-inf")
        self._stale = False  # a counted failure: renew before the next request
        self.max_circuit_wait = DEFAULT_MAX_CIRCUIT_WAIT
        self.count_rate_limits = True  # whether a 429 counts against the breaker (the pool's)
        self.in_flight = 0
        self.waiting = 0
        self.waiting_for_circuit = 0
        self._pending = _Pending(outcomes=[])
        self._renewal: asyncio.Future[None] | None = None
        self._changed: asyncio.Event | None = None
        self._flush: asyncio.TimerHandle | None = None
        self._admitted = 0
        self._admitted_total = 0
        self._tokens_seen = 0
        self._tokens_waiting = 0
        self._rate = 0.0  # admissions per second, smoothed: sizes the next ask
        self._rate_since = clock()
        self.renewals = 0

    # --- the request side ----------------------------------------------------------

    async def admit(self, tokens: int = 0, *, wait_until: float | None = None) -> Ticket:
        """Wait for permission to send one request of about ``tokens`` tokens.

        ``wait_until`` None (interactive work): an open circuit raises
        `CircuitOpenError` at once. A time on this lease's clock (batch work):
        wait for the probe's outcome until then, then raise."""
        self.waiting += 1
        self._tokens_waiting += tokens
        try:
            while True:
                now = self._clock()
                if self._stale or now >= self._expires:
                    await self._renewed()  # first: a report of a 429 must reach the others
                    continue
                if self._paused_until > now:
                    await self._sleep(self._paused_until - now)
                    continue
                if self._state != "closed" and not self._probe_available():
                    await self._wait_for_circuit(now, wait_until)
                    continue
                ticket = self._take(now, tokens)
                if ticket is not None:
                    self._after_admit(now)
                    return ticket
                await self._wait_for_capacity(now)
        finally:
            self.waiting -= 1
            self._tokens_waiting -= tokens

    def finish(
        self,
        ticket: Ticket,
        *,
        failed: bool | None,
        actual_tokens: int | None = None,
        retry_after: float | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost: float | None = None,
        sent: bool = True,
    ) -> None:
        """An admitted attempt ended. ``failed``: whether the breaker counts it as a
        failure (None: no outcome, it was cancelled or never sent). ``sent=False``:
        nothing reached the provider (its permit is returned)."""
        self.in_flight -= 1
        p = self._pending
        if sent:
            p.calls += 1
            p.prompt_tokens += prompt_tokens
            p.completion_tokens += completion_tokens
            p.cost += cost or 0.0
        else:
            p.unused_requests += 1
        if actual_tokens is not None:
            p.token_correction += ticket.tokens - actual_tokens
        elif not sent:
            p.token_correction += ticket.tokens
        if ticket.probe:
            p.probe = (ticket.epoch, failed)
            self._stale = True  # the probe decides the circuit: learn it at once
        elif failed is not None:
            p.outcomes.append((ticket.epoch, failed))
            if failed:
                self._stale = True
        if retry_after:
            self._paused_until = max(self._paused_until, self._clock() + retry_after)
            p.retry_after = max(p.retry_after or 0.0, retry_after)
            self._stale = True
        self._wake()
        self._schedule_flush()

    def request_done(self, *, ok: bool, retries: int = 0) -> None:
        """A request (with all its attempts) ended: for the endpoint's stats."""
        p = self._pending
        if ok:
            p.requests += 1
        else:
            p.errors += 1
        p.retries += retries

    async def flush(self) -> None:
        """Deliver the report now (the pool's stats then count every finished request)."""
        if self._has_report() or self.waiting_for_circuit:
            await self._renewed()

    async def aclose(self) -> None:
        """Deliver the last report (best effort); the lease ends."""
        if self._flush is not None:
            self._flush.cancel()
        if self._has_report():
            with contextlib.suppress(Exception):
                await self._renewed()

    @property
    def state(self) -> BreakerState:
        return self._state

    # --- admission ---------------------------------------------------------------------

    def _probe_available(self) -> bool:
        return any(g.probe and g.requests for g in self._grants)

    def _take(self, now: float, tokens: int) -> Ticket | None:
        if self._slots is not None and self.in_flight >= self._slots:
            return None
        self._drop_expired(now)
        for grant in self._grants:  # oldest first: spend what expires soonest
            if grant.requests is not None and grant.requests <= 0:
                continue
            if grant.tokens is not None and grant.tokens < tokens:
                continue
            if grant.requests is not None:
                grant.requests -= 1
            if grant.tokens is not None:
                grant.tokens -= tokens
            self.in_flight += 1
            self._tokens_seen += tokens
            return Ticket(grant.epoch, tokens, grant.probe)
        return None

    def _after_admit(self, now: float) -> None:
        self._admitted += 1
        self._admitted_total += 1
        self._schedule_flush()
        renewing = self._renewal is not None and not self._renewal.done()
        if now - self._renewed_at > self._ttl() / 2 and not renewing:
            self._start_renewal()  # ahead of time: steady traffic never waits for a lease

    async def _wait_for_circuit(self, now: float, wait_until: float | None) -> None:
        retry_after = self._retry_after
        if wait_until is None:
            raise CircuitOpenError(
                f"the circuit to this endpoint is {self._state} (the provider failed too "
                f"often); retry in {retry_after:.1f}s",
                retry_after=retry_after,
            )
        left = wait_until - now
        if left <= 0 or retry_after > left:
            raise CircuitOpenError(
                f"the circuit to this endpoint stayed {self._state}: the next probe is due in "
                f"{retry_after:.1f}s, past this request's wait",
                retry_after=retry_after,
            )
        # Ask again within a lease period: the probe may decide long before retry_after.
        self.waiting_for_circuit += 1
        try:
            await self._sleep(max(MIN_RETRY_SECONDS, min(retry_after, left, self._ttl())))
        finally:
            self.waiting_for_circuit -= 1
        self._stale = True

    async def _wait_for_capacity(self, now: float) -> None:
        """Out of permits or slots: wait for a finish here, or ask for more."""
        if self._slots is not None and self.in_flight >= self._slots:
            # Slots free up when requests here finish, or when other holders give theirs
            # back: wait for the first, ask again after a lease period for the second.
            if not await self._changed_within(self._ttl()):
                self._stale = True
            return
        if now < self._retry_at:
            await self._changed_within(self._retry_at - now)
            return
        await self._renewed()

    async def _changed_within(self, seconds: float) -> bool:
        changed = self._event()
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), max(MIN_RETRY_SECONDS, seconds))
        except asyncio.TimeoutError:
            return False
        return True

    # --- renewal ---------------------------------------------------------------------

    async def _renewed(self) -> None:
        """Wait for a renewal: the one in flight, or a new one."""
        # A finished renewal whose done-callback has not run yet is over too: awaiting it
        # would not yield, and a caller looping on it would spin without the loop running.
        if self._renewal is None or self._renewal.done():
            self._start_renewal()
        assert self._renewal is not None
        await asyncio.shield(self._renewal)

    def _start_renewal(self) -> None:
        future = asyncio.ensure_future(self._renew())
        self._renewal = future

        def done(f: asyncio.Future[None]) -> None:
            if self._renewal is f:
                self._renewal = None
            if not f.cancelled():
                f.exception()  # retrieved: the waiters re-raise it

        future.add_done_callback(done)

    async def _renew(self) -> None:
        now = self._clock()
        self._stale = False
        report = self._take_report(now)
        ask = LeaseAsk(
            holder=self.holder,
            requests=self._requests_wanted(now),
            tokens=0,
            slots=self.in_flight + max(self.waiting, 1) + self._headroom(),
            in_flight=self.in_flight,
            waiting_for_circuit=self.waiting_for_circuit,
            report=report,
        )
        ask = replace(ask, tokens=self._tokens_wanted(ask.requests))
        try:
            lease = await self._renew_fn(ask)
        except BaseException:
            self._restore(report)
            self._stale = True
            raise
        self.renewals += 1
        self._apply(self._clock(), lease)

    def _apply(self, now: float, lease: Lease) -> None:
        self._renewed_at = now
        self._expires = now + lease.ttl
        self._state = lease.state
        self._retry_after = lease.retry_after
        self._slots = lease.slots
        self.max_circuit_wait = lease.max_circuit_wait or self.max_circuit_wait
        self.count_rate_limits = lease.count_rate_limits
        if lease.state != "closed" and not lease.probe:
            # The circuit opened: permits of earlier leases must not be used.
            self._return_all()
        granted = lease.requests is None or lease.requests > 0
        if granted:
            self._grants.append(
                _Grant(now + lease.ttl, lease.epoch, lease.requests, lease.tokens, lease.probe)
            )
            self._retry_at = float("-inf")
        else:
            self._retry_at = now + max(MIN_RETRY_SECONDS, lease.retry_after)
        self._wake()

    def _take_report(self, now: float) -> Report:
        self._drop_expired(now)
        p = self._pending
        self._pending = _Pending(outcomes=[])
        return Report(
            outcomes=tuple(p.outcomes),
            probe=p.probe,
            retry_after=p.retry_after,
            in_flight=self.in_flight,
            **{name: getattr(p, name) for name in _COUNTS},
        )

    def _restore(self, report: Report) -> None:
        """A renewal failed: its report goes back, to travel with the next one."""
        p = self._pending
        p.outcomes[:0] = list(report.outcomes)
        p.probe = p.probe or report.probe
        if report.retry_after:
            p.retry_after = max(p.retry_after or 0.0, report.retry_after)
        for name in _COUNTS:
            setattr(p, name, getattr(p, name) + getattr(report, name))

    def _drop_expired(self, now: float) -> None:
        if not self._grants or self._grants[0].expires > now:
            return
        kept: list[_Grant] = []
        for grant in self._grants:
            if grant.expires > now:
                kept.append(grant)
            else:
                self._give_back(grant)
        self._grants = kept

    def _return_all(self) -> None:
        for grant in self._grants:
            self._give_back(grant)
        self._grants = []

    def _give_back(self, grant: _Grant) -> None:
        if grant.requests:
            self._pending.unused_requests += grant.requests
        if grant.tokens:
            self._pending.token_correction += grant.tokens
        if grant.probe and grant.requests:
            self._pending.probe = (grant.epoch, None)  # never sent: the next holder probes

    def _requests_wanted(self, now: float) -> int:
        # Enough for the requests waiting plus what this process sent per lease period
        # lately; permits it does not use go back with the next report.
        elapsed = now - self._rate_since
        if elapsed > 0:
            instant = self._admitted / elapsed
            self._rate = instant if self._rate == 0 else 0.5 * self._rate + 0.5 * instant
        self._admitted, self._rate_since = 0, now
        held = sum(g.requests or 0 for g in self._grants)
        expected = round(self._rate * self._ttl())
        return max(self.waiting + expected - held, 1 if self.waiting else 0)

    def _tokens_wanted(self, requests: int) -> int:
        # The requests waiting need their own estimates; the rest are sized by the
        # average estimate of the requests admitted so far.
        if requests <= 0:
            return 0
        typical = self._tokens_seen // max(1, self._admitted_total)
        return self._tokens_waiting + max(0, requests - self.waiting) * typical

    def _headroom(self) -> int:
        return max(1, round(self._rate * self._ttl()))

    def _ttl(self) -> float:
        return max(0.0, self._expires - self._renewed_at) or 0.2

    def _has_report(self) -> bool:
        p = self._pending
        return bool(
            p.outcomes or p.probe or p.unused_requests or p.token_correction or p.requests
            or p.errors or p.calls or any(g.requests for g in self._grants)
        )

    def _schedule_flush(self) -> None:
        # Once quiet for a lease period, deliver the last report (stats, returned permits).
        if self._flush is not None:
            return
        loop = asyncio.get_running_loop()
        self._flush = loop.call_later(self._ttl(), self._flush_now)

    def _flush_now(self) -> None:
        self._flush = None
        renewing = self._renewal is not None and not self._renewal.done()
        if self.in_flight or self.waiting:
            # Busy: keep reporting while a slot is held, or the ledger takes this holder for
            # gone after a few lease periods and gives its slots to others (a request may
            # well take longer than that).
            stale = self._clock() - self._renewed_at >= self._ttl()
            if self._slots is not None and not renewing and stale:
                self._start_renewal()
            self._schedule_flush()
            return
        if not renewing and self._has_report():
            self._start_renewal()

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()


__all__ = ["EndpointLease", "Renew", "Ticket"]
