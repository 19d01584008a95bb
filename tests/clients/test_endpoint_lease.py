"""A process's lease on an endpoint, renewed from a real ledger in the same process."""

from __future__ import annotations

import asyncio
import time

import pytest

from dspex.clients.breaker_state import BreakerPolicy, CircuitLogic
from dspex.clients.endpoint_lease import EndpointLease
from dspex.clients.endpoint_ledger import EndpointLedger, Lease, LeaseAsk
from dspex.clients.limiter import RateLimiter
from dspex.errors import CircuitOpenError


class Book:
    """A ledger behind a renew function that counts the asks (as the pool actor would)."""

    def __init__(self, **limits: object) -> None:
        fail_max = limits.pop("fail_max", 3)
        reset_timeout = limits.pop("reset_timeout", 0.3)
        policy = BreakerPolicy(fail_max=fail_max, reset_timeout=reset_timeout, minimum_calls=50)  # type: ignore[arg-type]
        self.ledger = EndpointLedger(
            circuit=CircuitLogic(policy),
            limiter=RateLimiter(rpm=limits.get("rpm"), tpm=limits.get("tpm")),  # type: ignore[arg-type]
            max_concurrency=limits.get("max_concurrency"),  # type: ignore[arg-type]
            lease_seconds=0.2,
            max_circuit_wait=5.0,
        )
        self.asks: list[LeaseAsk] = []

    async def renew(self, ask: LeaseAsk) -> Lease:
        self.asks.append(ask)
        await asyncio.sleep(0)  # an actor call is never synchronous
        lease, _ = self.ledger.lease(time.monotonic(), ask)
        return lease


async def test_many_requests_share_few_renewals() -> None:
    book = Book()
    holder = EndpointLease(book.renew, holder="p1")

    async def one() -> None:
        ticket = await holder.admit(10)
        await asyncio.sleep(0.001)
        holder.finish(ticket, failed=False, actual_tokens=8)
        holder.request_done(ok=True)

    await asyncio.gather(*(one() for _ in range(500)))
    assert len(book.asks) <= 5  # one to start, a few ahead of time: never one per request
    await holder.aclose()
    assert book.ledger.totals.calls == 500 and book.ledger.totals.requests == 500


async def test_a_counted_failure_is_reported_before_the_next_request_goes() -> None:
    book = Book(fail_max=2)
    holder = EndpointLease(book.renew, holder="p1")
    for _ in range(2):
        ticket = await holder.admit()
        holder.finish(ticket, failed=True)
    # The pool now knows of two failures in a row: the circuit is open for everyone.
    with pytest.raises(CircuitOpenError) as info:
        await holder.admit()
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 0.3 + 1e-6
    other = EndpointLease(book.renew, holder="p2")
    with pytest.raises(CircuitOpenError):
        await other.admit()


async def test_batch_work_waits_for_the_probe_and_goes_on_after_it() -> None:
    book = Book(fail_max=1, reset_timeout=0.3)
    a = EndpointLease(book.renew, holder="a")
    b = EndpointLease(book.renew, holder="b")
    ticket = await a.admit()
    a.finish(ticket, failed=True)
    with pytest.raises(CircuitOpenError):
        await a.admit()  # interactive: fails fast
    started = time.monotonic()
    probe = await a.admit(wait_until=time.monotonic() + 5)  # batch: waits for the probe
    assert probe.probe and time.monotonic() - started >= 0.1
    waiting = asyncio.ensure_future(b.admit(wait_until=time.monotonic() + 5))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # one probe only
    a.finish(probe, failed=False)
    await a.admit()  # a learns the circuit closed at once (the probe marks its lease stale)
    ticket_b = await asyncio.wait_for(waiting, 2)
    assert not ticket_b.probe


async def test_a_batch_request_gives_up_when_the_probe_is_due_after_its_wait() -> None:
    book = Book(fail_max=1, reset_timeout=30.0)
    holder = EndpointLease(book.renew, holder="a")
    holder.finish(await holder.admit(), failed=True)
    started = time.monotonic()
    with pytest.raises(CircuitOpenError):
        await holder.admit(wait_until=time.monotonic() + 1.0)
    assert time.monotonic() - started < 0.5  # it did not sleep out a wait it cannot use


async def test_requests_in_flight_stay_within_the_granted_slots() -> None:
    book = Book(max_concurrency=3)
    holder = EndpointLease(book.renew, holder="a")
    peak = 0
    release = asyncio.Event()

    async def one() -> None:
        nonlocal peak
        ticket = await holder.admit()
        peak = max(peak, holder.in_flight)
        await release.wait()
        holder.finish(ticket, failed=False)

    tasks = [asyncio.ensure_future(one()) for _ in range(10)]
    deadline = time.monotonic() + 5
    while holder.in_flight < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert holder.in_flight == 3 and holder.waiting == 7
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert peak == 3


async def test_the_rate_limit_holds_across_two_holders() -> None:
    book = Book(rpm=1200)  # 20 per second
    holders = [EndpointLease(book.renew, holder=f"h{i}") for i in range(2)]
    sent = 0
    stop = time.monotonic() + 1.5

    async def loop(holder: EndpointLease) -> None:
        nonlocal sent
        while time.monotonic() < stop:
            ticket = await holder.admit()
            if time.monotonic() >= stop:
                holder.finish(ticket, failed=None, sent=False)
                return
            sent += 1
            holder.finish(ticket, failed=False)

    await asyncio.gather(*(loop(h) for h in holders for _ in range(5)))
    # 1.5 s at 20/s plus the first second's burst of 20.
    assert sent <= 20 * 1.5 + 20 + 1


async def test_a_retry_after_pauses_this_process_at_once_and_others_at_renewal() -> None:
    book = Book()
    a = EndpointLease(book.renew, holder="a")
    b = EndpointLease(book.renew, holder="b")
    a.finish(await a.admit(), failed=False, retry_after=0.3)
    a_waits = asyncio.ensure_future(a.admit())  # renews first: the report goes out now
    deadline = time.monotonic() + 5
    while book.ledger.limiter.paused_for() == 0:
        assert time.monotonic() < deadline, "a's report never reached the ledger"
        await asyncio.sleep(0.005)
    started = time.monotonic()
    await b.admit()
    assert time.monotonic() - started >= 0.2  # b's first lease came with the pause
    await a_waits


async def test_a_failed_renewal_keeps_the_report_for_the_next_one() -> None:
    book = Book()
    fail = [True]

    async def flaky(ask: LeaseAsk) -> Lease:
        if fail[0]:
            fail[0] = False
            raise ConnectionError("pool restarting")
        return await book.renew(ask)

    holder = EndpointLease(flaky, holder="a")
    with pytest.raises(ConnectionError):
        await holder.admit()
    holder.request_done(ok=False)
    ticket = await holder.admit()
    holder.finish(ticket, failed=False)
    holder.request_done(ok=True)
    await holder.aclose()
    assert book.ledger.totals.errors == 1 and book.ledger.totals.requests == 1


async def test_a_holder_with_long_requests_keeps_its_slots_past_the_holder_expiry() -> None:
    # Requests often take longer than the ledger's holder expiry (5 lease periods): a busy
    # holder reports in the meantime, so its slots are not handed to another holder.
    book = Book(max_concurrency=2)
    a = EndpointLease(book.renew, holder="a")
    b = EndpointLease(book.renew, holder="b")
    held = [await a.admit(), await a.admit()]
    blocked = asyncio.ensure_future(b.admit())
    deadline = time.monotonic() + 1.6  # past 5 x 0.2 s
    while time.monotonic() < deadline:
        assert not blocked.done(), "b got a slot a still uses: the cap no longer holds"
        await asyncio.sleep(0.05)
    for ticket in held:
        a.finish(ticket, failed=False)
    ticket = await asyncio.wait_for(blocked, 3.0)  # a's slots come back once it reports
    assert not ticket.probe


async def test_a_pool_that_does_not_count_rate_limits_says_so_in_its_leases() -> None:
    book = Book()
    book.ledger.count_rate_limits = False
    holder = EndpointLease(book.renew, holder="a")
    holder.finish(await holder.admit(), failed=False)
    assert holder.count_rate_limits is False
