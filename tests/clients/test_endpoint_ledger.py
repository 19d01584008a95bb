"""The endpoint ledger on a fake clock: rate limits, breaker and slots granted as leases."""

from __future__ import annotations

from dspex.clients.breaker_state import BreakerPolicy, CircuitLogic
from dspex.clients.endpoint_ledger import EndpointLedger, LeaseAsk, Report
from dspex.clients.limiter import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ledger(
    clock: Clock,
    *,
    rpm: float | None = None,
    tpm: float | None = None,
    max_concurrency: int | None = None,
    fail_max: int | None = 3,
    reset_timeout: float = 5.0,
) -> EndpointLedger:
    policy = BreakerPolicy(fail_max=fail_max, reset_timeout=reset_timeout, minimum_calls=50)
    return EndpointLedger(
        circuit=CircuitLogic(policy),
        limiter=RateLimiter(rpm=rpm, tpm=tpm, clock=clock),
        max_concurrency=max_concurrency,
        lease_seconds=0.2,
        max_circuit_wait=60.0,
    )


def test_without_limits_a_lease_is_unlimited_and_closed() -> None:
    clock = Clock()
    lease, transitions = ledger(clock).lease(clock(), LeaseAsk("a", requests=5))
    assert (lease.requests, lease.tokens, lease.slots, lease.state) == (None, None, None, "closed")
    assert lease.ttl == 0.2 and lease.max_circuit_wait == 60.0 and transitions == ()


def test_permits_never_exceed_the_rate_however_many_holders_ask() -> None:
    clock = Clock()
    book = ledger(clock, rpm=600)  # 10 per second, one second's quota at once
    granted = 0
    for _ in range(200):  # 20 seconds, three holders asking for 50 each every 0.1 s
        clock.now += 0.1
        for holder in ("a", "b", "c"):
            lease, _ = book.lease(clock(), LeaseAsk(holder, requests=50))
            granted += lease.requests or 0
    assert 200 <= granted <= 10 * 20 + 10  # the rate over 20 s, plus the first burst
    assert book.lease(clock(), LeaseAsk("a", requests=50))[0].retry_after > 0


def test_unused_permits_come_back_for_others() -> None:
    clock = Clock()
    book = ledger(clock, rpm=600)
    first, _ = book.lease(clock(), LeaseAsk("a", requests=10))
    assert first.requests == 10
    assert book.lease(clock(), LeaseAsk("b", requests=10))[0].requests == 0
    book.lease(clock(), LeaseAsk("a", report=Report(unused_requests=6)))
    assert book.lease(clock(), LeaseAsk("b", requests=10))[0].requests == 6


def test_token_permits_follow_the_tpm_bucket_and_a_big_request_may_go_into_debt() -> None:
    clock = Clock()
    book = ledger(clock, tpm=6000)  # 100 tokens per second
    lease, _ = book.lease(clock(), LeaseAsk("a", requests=1, tokens=250))
    assert lease.tokens == 250  # bigger than the bucket: allowed once it is full
    later, _ = book.lease(clock(), LeaseAsk("a", requests=1, tokens=50))
    assert later.requests == 0 and later.retry_after > 1.0  # the debt is paid off first


def test_reported_failures_open_the_circuit_for_every_holder() -> None:
    clock = Clock()
    book = ledger(clock, fail_max=3)
    lease, _ = book.lease(clock(), LeaseAsk("a", requests=1))
    failures = Report(outcomes=((lease.epoch, True),) * 3, calls=3)
    opened, transitions = book.lease(clock(), LeaseAsk("a", requests=1, report=failures))
    assert transitions == (("closed", "open"),)
    assert opened.state == "open" and opened.requests == 0 and opened.retry_after == 5.0
    other, _ = book.lease(clock(), LeaseAsk("b", requests=1))
    assert other.state == "open" and other.requests == 0


def test_stale_outcomes_do_not_count() -> None:
    clock = Clock()
    book = ledger(clock, fail_max=1)
    old_epoch = book.circuit.epoch
    book.lease(clock(), LeaseAsk("a", report=Report(outcomes=((old_epoch, True),))))
    clock.now += 6  # half-open, then the probe succeeds: a new closed epoch
    probe, _ = book.lease(clock(), LeaseAsk("a", requests=1))
    book.lease(clock(), LeaseAsk("a", report=Report(probe=(probe.epoch, False))))
    late = Report(outcomes=((old_epoch, True),))  # a slow request from before the outage
    lease, transitions = book.lease(clock(), LeaseAsk("b", requests=1, report=late))
    assert lease.state == "closed" and transitions == ()


def test_half_open_grants_one_probe_to_one_holder_and_its_outcome_decides() -> None:
    clock = Clock()
    book = ledger(clock, fail_max=1, reset_timeout=5.0)
    lease, _ = book.lease(clock(), LeaseAsk("a", requests=1))
    book.lease(clock(), LeaseAsk("a", report=Report(outcomes=((lease.epoch, True),))))
    clock.now += 5.0
    probe, transitions = book.lease(clock(), LeaseAsk("a", requests=10))
    assert probe.probe and probe.requests == 1 and probe.state == "half_open"
    assert transitions == (("open", "half_open"),)
    other, _ = book.lease(clock(), LeaseAsk("b", requests=10))
    assert not other.probe and other.requests == 0
    # The probe failed: open again for another reset timeout.
    reopened, _ = book.lease(clock(), LeaseAsk("a", report=Report(probe=(probe.epoch, True))))
    assert reopened.state == "open"
    clock.now += 5.0
    probe2, _ = book.lease(clock(), LeaseAsk("b", requests=1))
    assert probe2.probe
    closed, transitions = book.lease(clock(), LeaseAsk("b", report=Report(probe=(probe2.epoch, False))))
    assert closed.state == "closed" and closed.requests is None
    assert transitions == (("half_open", "closed"),)


def test_a_probe_never_sent_frees_the_probe_for_the_next_holder() -> None:
    clock = Clock()
    book = ledger(clock, fail_max=1, reset_timeout=1.0)
    lease, _ = book.lease(clock(), LeaseAsk("a", requests=1))
    book.lease(clock(), LeaseAsk("a", report=Report(outcomes=((lease.epoch, True),))))
    clock.now += 1.0
    probe, _ = book.lease(clock(), LeaseAsk("a", requests=1))
    assert not book.lease(clock(), LeaseAsk("b", requests=1))[0].probe
    book.lease(clock(), LeaseAsk("a", report=Report(probe=(probe.epoch, None))))
    assert book.lease(clock(), LeaseAsk("b", requests=1))[0].probe


def test_a_429_pauses_the_endpoint_for_everyone() -> None:
    clock = Clock()
    book = ledger(clock)
    book.lease(clock(), LeaseAsk("a", report=Report(retry_after=2.0)))
    paused, _ = book.lease(clock(), LeaseAsk("b", requests=3))
    assert paused.requests == 0 and paused.retry_after == 2.0
    clock.now += 2.0
    assert book.lease(clock(), LeaseAsk("b", requests=3))[0].requests is None


def test_concurrency_slots_are_shared_and_a_silent_holder_loses_its_own() -> None:
    clock = Clock()
    book = ledger(clock, max_concurrency=10)
    assert book.lease(clock(), LeaseAsk("a", slots=8))[0].slots == 8
    assert book.lease(clock(), LeaseAsk("b", slots=8))[0].slots == 2
    # a keeps only what it has in flight and wants: b may grow into the rest.
    assert book.lease(clock(), LeaseAsk("a", slots=3, in_flight=3))[0].slots == 3
    assert book.lease(clock(), LeaseAsk("b", slots=8))[0].slots == 7
    # A holder never gets fewer slots than it has in flight.
    assert book.lease(clock(), LeaseAsk("a", slots=1, in_flight=3))[0].slots == 3
    clock.now += 1.01  # a is silent for five lease periods: gone
    assert book.lease(clock(), LeaseAsk("b", slots=10))[0].slots == 10
    assert book.holders() == 1


def test_reports_add_up_in_the_totals() -> None:
    clock = Clock()
    book = ledger(clock)
    report = Report(requests=3, errors=1, calls=5, retries=2, prompt_tokens=30, completion_tokens=9, cost=0.5)
    book.lease(clock(), LeaseAsk("a", report=report))
    book.lease(clock(), LeaseAsk("b", report=report, in_flight=4))
    t = book.totals
    assert (t.requests, t.errors, t.calls, t.retries, t.leases) == (6, 2, 10, 4, 2)
    assert (t.prompt_tokens, t.completion_tokens, t.cost) == (60, 18, 1.0)
    assert book.in_flight() == 4
