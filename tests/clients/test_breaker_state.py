"""The circuit's window logic, pure: every decision is asked at a time the test chooses.

No asyncio and no sleeping: `CircuitLogic` takes ``now`` on every call.
"""

from __future__ import annotations

import random

import pytest

from dspex.clients.breaker_state import (
    BreakerPolicy,
    CircuitLogic,
    FailureWindow,
)
from dspex.errors import ConfigurationError


def logic(**policy: object) -> CircuitLogic:
    return CircuitLogic(BreakerPolicy(**policy))  # type: ignore[arg-type]


def feed(circuit: CircuitLogic, outcomes: str, now: float = 0.0, step: float = 0.0) -> list:
    """Admit and record one call per character: "x" failed, "." succeeded."""
    transitions = []
    for i, mark in enumerate(outcomes):
        at = now + i * step
        admission = circuit.admit(at)
        assert admission.admitted, f"call {i} was not admitted"
        transitions += circuit.record(at, admission.epoch, mark == "x")
    return transitions


def test_runs_of_failures_in_a_mostly_healthy_stream_do_not_open() -> None:
    # 20% failures, arriving five in a row: what random errors under concurrency
    # produce now and then, and what opened the old consecutive-failure breaker.
    circuit = logic()
    assert feed(circuit, ("." * 20 + "x" * 5) * 40) == []
    assert circuit.state(0.0) == "closed"
    assert circuit.window_counts(0.0) == (100, 20)  # the last 100 calls, 20 of them failed


@pytest.mark.parametrize("rate", [0.2, 0.3])
def test_random_failures_at_a_flaky_provider_s_rates_do_not_open(rate: float) -> None:
    draw = random.Random(7)
    circuit = logic()
    outcomes = "".join("x" if draw.random() < rate else "." for _ in range(3000))
    assert feed(circuit, outcomes) == []
    assert circuit.state(0.0) == "closed"


def test_opens_once_the_failure_rate_reaches_the_threshold_over_enough_calls() -> None:
    circuit = logic(failure_rate_threshold=0.5, window=20, minimum_calls=10, fail_max=None)
    assert feed(circuit, "x.x.x.x.") == []  # 50%, but only 8 calls: too few to judge
    assert feed(circuit, ".") == []  # 9 calls, 4 failed
    assert feed(circuit, "x") == [("closed", "open")]  # 10 calls, 5 failed: 50%
    assert "5 of the last 10 calls failed" in circuit.opened_because
    assert circuit.state(0.0) == "open"


def test_a_rate_below_the_threshold_never_opens() -> None:
    circuit = logic(failure_rate_threshold=0.5, window=20, minimum_calls=10, fail_max=None)
    assert feed(circuit, "x.x.." * 40) == []  # 40% failures
    assert circuit.state(0.0) == "closed"


def test_the_window_slides_by_count() -> None:
    circuit = logic(failure_rate_threshold=0.5, window=10, minimum_calls=10, fail_max=None)
    assert feed(circuit, "xxxx" + "......") == []
    assert circuit.window_counts(0.0) == (10, 4)
    assert feed(circuit, "....") == []  # the four failures slid out
    assert circuit.window_counts(0.0) == (10, 0)
    assert feed(circuit, "xxxx") == []  # 4 of 10
    assert feed(circuit, "x") == [("closed", "open")]  # 5 of 10


def test_the_window_forgets_calls_older_than_window_seconds() -> None:
    circuit = logic(
        failure_rate_threshold=0.5, window=100, window_seconds=10.0, minimum_calls=6, fail_max=None
    )
    assert feed(circuit, "xxxxx", now=0.0) == []  # 5 failures: too few calls to judge
    # Eleven seconds later those failures say nothing about the provider now.
    assert feed(circuit, ".....", now=11.0) == []
    assert circuit.window_counts(11.0) == (5, 0)
    assert feed(circuit, "x", now=11.0) == []  # 1 of 6
    # Yet failures inside the window do count: 4 more make 5 of 10.
    assert feed(circuit, "xxx", now=12.0) == []
    assert feed(circuit, "x", now=12.0) == [("closed", "open")]


def test_fail_max_in_a_row_opens_whatever_the_rate_and_none_turns_it_off() -> None:
    floor = logic(fail_max=5, minimum_calls=50)
    assert feed(floor, "." * 60 + "xxxx") == []
    assert feed(floor, "x") == [("closed", "open")]  # 5 in a row, 5 of 65 overall
    assert floor.opened_because == "5 failures in a row"

    rate_only = logic(fail_max=None, minimum_calls=50, window=100)
    assert feed(rate_only, "." * 60 + "x" * 30) == []  # 30 in a row, 30 of 90: closed
    assert feed(rate_only, "x" * 20) == [("closed", "open")]  # now 50 of the last 100


def test_a_success_resets_the_run_of_failures() -> None:
    circuit = logic(fail_max=3)
    assert feed(circuit, "xx.xx.xx.") == []
    assert circuit.consecutive_failures == 0


def test_open_admits_nothing_until_reset_timeout_then_one_probe() -> None:
    circuit = logic(fail_max=1, reset_timeout=5.0)
    feed(circuit, "x", now=100.0)
    refused = circuit.admit(103.0)
    assert not refused.admitted and refused.retry_after == pytest.approx(2.0)
    assert circuit.state(104.9) == "open" and circuit.state(105.0) == "half_open"

    probe = circuit.admit(105.0)
    assert probe.admitted and probe.probe
    assert probe.transitions == (("open", "half_open"),)
    other = circuit.admit(105.0)
    assert not other.admitted and other.retry_after == 5.0  # at worst the probe fails
    assert not circuit.would_admit(105.0)


def test_a_successful_probe_closes_with_an_empty_window() -> None:
    circuit = logic(failure_rate_threshold=0.5, window=10, minimum_calls=4, fail_max=None)
    feed(circuit, "xxxx")
    probe = circuit.admit(30.0)
    assert circuit.record(30.0, probe.epoch, False) == (("half_open", "closed"),)
    assert circuit.window_counts(30.0) == (0, 0)
    assert feed(circuit, "xxx", now=30.0) == []  # judged afresh: 3 calls are too few


def test_a_failed_probe_reopens_for_a_fresh_timeout() -> None:
    circuit = logic(fail_max=1, reset_timeout=5.0)
    feed(circuit, "x", now=0.0)
    probe = circuit.admit(7.0)
    assert circuit.record(7.0, probe.epoch, True) == (("half_open", "open"),)
    assert circuit.opened_because == "the half-open probe failed"
    assert circuit.retry_after(8.0) == pytest.approx(4.0)  # from the probe's failure
    assert circuit.admit(12.0).probe


def test_outcomes_of_calls_admitted_before_a_transition_are_ignored() -> None:
    circuit = logic(fail_max=2)
    slow = circuit.admit(0.0)
    feed(circuit, "xx")
    assert circuit.state(0.0) == "open"
    assert circuit.record(0.0, slow.epoch, False) == ()  # a late success: still open
    assert circuit.state(0.0) == "open"


def test_a_probe_released_without_an_outcome_frees_the_slot() -> None:
    circuit = logic(fail_max=1, reset_timeout=1.0)
    feed(circuit, "x")
    probe = circuit.admit(1.0)
    assert not circuit.would_admit(1.0)
    assert circuit.release_probe(probe.epoch)
    assert circuit.would_admit(1.0)
    assert not circuit.release_probe(probe.epoch)  # only once
    assert circuit.admit(1.0).probe


def test_reset_closes_and_forgets() -> None:
    circuit = logic(fail_max=2)
    feed(circuit, "x")
    assert circuit.reset(0.0) == ()  # already closed: no transition, but forgets
    assert circuit.consecutive_failures == 0 and circuit.window_counts(0.0) == (0, 0)
    feed(circuit, "xx")
    assert circuit.reset(1.0) == (("open", "closed"),)
    assert circuit.admit(1.0).admitted


def test_failure_window_counts() -> None:
    window = FailureWindow(3, max_age=None)
    for failed in (True, True, False, False):
        window.add(0.0, failed)
    assert window.counts(1e9) == (3, 1)
    window.clear()
    assert window.counts(0.0) == (0, 0)


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("failure_rate_threshold", 0.0, "failure_rate_threshold must be in (0, 1]"),
        ("failure_rate_threshold", 1.5, "failure_rate_threshold must be in (0, 1]"),
        ("window", 0, "window must be a whole number of calls"),
        ("window_seconds", 0.0, "window_seconds must be > 0"),
        ("minimum_calls", 0, "minimum_calls must be between 1 and window"),
        ("minimum_calls", 101, "minimum_calls must be between 1 and window (100)"),
        ("fail_max", 0, "fail_max (consecutive failures that open the circuit)"),
        ("reset_timeout", -1.0, "reset_timeout must be >= 0"),
    ],
)
def test_bad_settings_are_configuration_errors(setting: str, value: object, says: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        BreakerPolicy(**{setting: value})  # type: ignore[arg-type]
    assert says in str(info.value) and repr(value) in str(info.value)
